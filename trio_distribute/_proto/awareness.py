"""Lifeguard's local health multiplier (LHA-Probe).

A member that misses acks it should have had, or has to refute suspicions
about itself, is more likely the slow one than its peers. It then probes
less often (its probe interval is scaled by ``score + 1``), so a starved
node stops flooding the cluster with false accusations until it recovers.
"""

from __future__ import annotations

import attrs

__all__ = ["LocalHealth"]


@attrs.define(eq=False, kw_only=True)
class LocalHealth:
    """A saturating score in ``[0, max_multiplier - 1]``."""

    max_multiplier: int = 8
    score: int = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, interval: float) -> float:
        return interval * (self.score + 1)
