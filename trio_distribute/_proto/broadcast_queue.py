"""The transmit-limited broadcast queue behind infection-style dissemination.

Each queued broadcast is the latest news about one member (so queuing news
about a member replaces whatever was queued about it before). Broadcasts go
out least-transmitted first; among equals the larger one first (small ones
fill the gaps that are left) and then the newest. Each one is sent
``retransmit_limit(n)`` times and then dropped: with SWIM's epidemic that is
enough to reach everyone with high probability, and push-pull repairs the
rest.

Internally there is one sorted list per transmit count, keyed by
``(size, id)``; the best broadcast that fits the remaining space is found by
bisection instead of a scan, so a queue of thousands (a cluster starting up)
stays cheap to draw from.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort

import attrs

__all__ = ["BroadcastQueue", "retransmit_limit"]


def retransmit_limit(retransmit_mult: int, cluster_size: int) -> int:
    """How many times each broadcast is sent: ``mult * ceil(log10(n + 1))``."""
    return retransmit_mult * max(1, math.ceil(math.log10(cluster_size + 1)))


# Key of a queued broadcast inside its transmit bucket.
_Key = tuple[int, int]  # (size, id)


@attrs.define(eq=False, kw_only=True)
class BroadcastQueue:
    """Broadcasts keyed by member name, each sent a limited number of times."""

    max_depth: int = 4096
    _buckets: list[list[_Key]] = attrs.field(init=False, factory=list)
    _payload: dict[int, bytes] = attrs.field(init=False, factory=dict)
    _name_of: dict[int, str] = attrs.field(init=False, factory=dict)
    _where: dict[str, tuple[int, _Key]] = attrs.field(init=False, factory=dict)
    _next_id: int = attrs.field(init=False, default=0)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def transmits(self, name: str) -> int | None:
        """How often the broadcast about ``name`` went out, or None if none is queued."""
        where = self._where.get(name)
        return None if where is None else where[0]

    def queue(self, name: str, payload: bytes) -> None:
        """Queue ``payload`` as the news about ``name``, replacing older news."""
        self.invalidate(name)
        self._next_id += 1
        ident = self._next_id
        key = (len(payload), ident)
        if not self._buckets:
            self._buckets.append([])
        insort(self._buckets[0], key)
        self._payload[ident] = payload
        self._name_of[ident] = name
        self._where[name] = (0, key)
        if len(self._where) > self.max_depth:
            self._drop_most_transmitted()

    def invalidate(self, name: str) -> None:
        """Forget the queued news about ``name``, if any."""
        where = self._where.pop(name, None)
        if where is None:
            return
        transmits, key = where
        bucket = self._buckets[transmits]
        index = bisect_right(bucket, key) - 1
        del bucket[index]
        del self._payload[key[1]]
        del self._name_of[key[1]]

    def take(
        self, space: int, limit: int, *, overhead: int = 0, max_count: int = 255
    ) -> list[bytes]:
        """Broadcasts totalling at most ``space`` bytes (each costing
        ``overhead`` more), counting one transmission for each; those sent
        ``limit`` times are dropped."""
        if len(self._buckets) > limit:
            self.prune(limit)  # the cluster shrank: those were sent often enough
        taken: list[bytes] = []
        moved: list[tuple[int, _Key]] = []
        for transmits, bucket in enumerate(self._buckets):
            while bucket and len(taken) < max_count:
                room = space - overhead
                if room <= 0:
                    break
                # Largest size that fits, newest among equals.
                index = bisect_right(bucket, (room, 1 << 62)) - 1
                if index < 0:
                    break
                key = bucket.pop(index)
                ident = key[1]
                taken.append(self._payload[ident])
                space -= key[0] + overhead
                moved.append((transmits + 1, key))
            if len(taken) >= max_count or space - overhead <= 0:
                break
        for transmits, key in moved:
            ident = key[1]
            name = self._name_of[ident]
            if transmits >= limit:
                del self._where[name]
                del self._payload[ident]
                del self._name_of[ident]
                continue
            while len(self._buckets) <= transmits:
                self._buckets.append([])
            insort(self._buckets[transmits], key)
            self._where[name] = (transmits, key)
        return taken

    def prune(self, limit: int) -> None:
        """Drop broadcasts already sent ``limit`` times or more (the cluster shrank)."""
        for transmits in range(limit, len(self._buckets)):
            for key in self._buckets[transmits]:
                ident = key[1]
                del self._where[self._name_of.pop(ident)]
                del self._payload[ident]
            self._buckets[transmits] = []

    def _drop_most_transmitted(self) -> None:
        for transmits in range(len(self._buckets) - 1, -1, -1):
            bucket = self._buckets[transmits]
            if bucket:
                # The oldest of the most-sent: the least useful news we hold.
                oldest = min(range(len(bucket)), key=lambda i: bucket[i][1])
                self.invalidate(self._name_of[bucket[oldest][1]])
                return
