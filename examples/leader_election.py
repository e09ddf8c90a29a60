"""Leader election across OS processes: three nodes elect a leader, the
leader's process is SIGKILLed, the other two elect a new one, and the old
node restarts (with its persisted term and vote) and follows.

Run the whole story (three child processes, orchestrated from this one)::

    python examples/leader_election.py          # or: ... both [base_port]

or run nodes yourself, in separate terminals, in any order::

    python examples/leader_election.py node e0 4390 0 /tmp/e0
    python examples/leader_election.py node e1 4391 4390 /tmp/e1
    python examples/leader_election.py node e2 4392 4390 /tmp/e2

As the README recommends, every node but the first names the first as its
seed (``open_node(seeds=...)`` keeps retrying until it answers) and all of
them expect three voters (``ElectionConfig(bootstrap_expect=3)``): no node
elects itself before the three know each other, so started together they
print one leader per term.

A node prints ``LEADER <name> <term>`` (or ``NOLEADER <term>``) whenever the
leader it knows changes. A leader would use the term as a fencing token:
every action it takes carries the term, and consumers refuse older terms.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import trio
from _children import Child

import trio_distribute as td

COOKIE = "election-example"
HOST = "127.0.0.1"
BASE_PORT = 4390


EXPECT = 3


async def voter(short: str, port: int, seed_port: int | None, state_dir: str) -> None:
    config = td.NodeConfig.local(
        state_dir=state_dir, election=td.ElectionConfig.local(bootstrap_expect=EXPECT)
    )
    name = f"{short}@{HOST}"
    seeds = [f"{HOST}:{seed_port}"] if seed_port else []
    async with (
        td.open_node(name, cookie=COOKIE, port=port, config=config, seeds=seeds) as node,
        node.election.subscribe() as changes,
    ):
        print(f"READY {node.name} term {node.election.term}", flush=True)
        # open_node joined through the seeds before it returned: a leader
        # may already be known (the changes start after this one).
        current = node.election.leader
        if isinstance(current, td.Leader):
            print(f"LEADER {current.name} {current.term}", flush=True)
        async for change in changes:
            if change.leader is None:
                print(f"NOLEADER {change.term}", flush=True)
            else:
                print(f"LEADER {change.leader} {change.term}", flush=True)


def orchestrate(base_port: int) -> None:
    shorts = ["e0", "e1", "e2"]
    ports = dict(zip(shorts, range(base_port, base_port + 3), strict=True))
    with tempfile.TemporaryDirectory(prefix="td-election-") as scratch:
        dirs = {short: str(Path(scratch) / short) for short in shorts}

        def start(short: str) -> Child:
            seed = None if short == "e0" else ports["e0"]
            return Child(__file__, short, ports[short], seed, dirs[short])

        children = {short: start(short) for short in shorts}
        try:
            # Everyone agrees on one leader in one term.
            views: dict[str, str | None] = dict.fromkeys(shorts)
            deadline = time.monotonic() + 20
            while len(set(views.values())) != 1 or views["e0"] is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no agreement on a leader: {views}")
                for short in shorts:
                    views[short] = children[short].latest("LEADER ", views[short])
            agreed = views["e0"]
            assert agreed is not None
            _, leader, term_text = agreed.split()
            term = int(term_text)
            print(f"[main] all three agree: {leader} leads in term {term}", flush=True)
            old_short = leader.split("@")[0]
            survivors = [s for s in shorts if s != old_short]
            started = time.monotonic()
            children[old_short].process.kill()  # SIGKILL the leader
            children[old_short].process.wait(timeout=10)
            print(f"[main] SIGKILLed the leader {leader}", flush=True)
            new_views = {}
            for short in survivors:
                while True:
                    line = children[short].wait_for("LEADER ")
                    if line.startswith("NOLEADER"):
                        continue
                    _, name, seen_term = line.split()
                    if name != leader:
                        new_views[short] = (name, int(seen_term))
                        break
            elapsed = time.monotonic() - started
            assert len(set(new_views.values())) == 1, new_views
            new_leader, new_term = next(iter(new_views.values()))
            assert new_term > term
            bound = 3 * td.NodeConfig.local().election.election_timeout
            print(
                f"[main] {new_leader} leads in term {new_term}, {elapsed:.2f}s after the kill"
                f" (election bound 3E = {bound:.2f}s, plus the time to notice)",
                flush=True,
            )
            children[old_short] = start(old_short)
            try:
                line = children[old_short].wait_for(f"LEADER {new_leader} {new_term}")
            except TimeoutError:
                print(f"[main] {old_short} printed: {children[old_short].seen}", flush=True)
                raise
            print(f"[main] {leader} restarted with its saved term and follows: {line}", flush=True)
            # Every LEADER line any node printed: one leader per term.
            claims: dict[int, set[str]] = {}
            for child in children.values():
                for seen in child.seen:
                    if seen.startswith("LEADER "):
                        _, name, seen_term = seen.split()
                        claims.setdefault(int(seen_term), set()).add(name)
            assert all(len(names) == 1 for names in claims.values()), claims
            print(f"[main] one leader per term: {dict(sorted(claims.items()))}", flush=True)
        finally:
            for child in children.values():
                child.stop()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    if mode == "node":
        short, port = sys.argv[2], int(sys.argv[3])
        seed_port = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "0" else None
        state_dir = sys.argv[5] if len(sys.argv) > 5 else f"/tmp/td-election-{short}"
        trio.run(voter, short, port, seed_port, state_dir)
    elif mode == "both":
        orchestrate(int(sys.argv[2]) if len(sys.argv) > 2 else BASE_PORT)
    else:
        sys.exit(f"usage: {sys.argv[0]} [both [base_port] | node SHORT PORT SEED_PORT STATE_DIR]")


if __name__ == "__main__":
    main()
