"""Cluster services: SWIM membership, its authenticated gossip channel, and health."""
