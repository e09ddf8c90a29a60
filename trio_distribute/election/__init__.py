"""Leader election: raft-lite (terms, votes, heartbeats; no log)."""
