"""Lifeguard's dynamic suspicion timer (LHA-Suspicion).

A suspicion starts with the longest timeout and shrinks, on a log scale, as
independent members confirm it: a lone, possibly overloaded accuser cannot
kill a member quickly, while a suspicion that many agree on converges on
the nominal timeout. The arithmetic matches memberlist's suspicion timer
(same inputs give the same remaining time, truncated to whole milliseconds),
so its published test vectors apply.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["Suspicion", "remaining_suspicion_time", "suspicion_bounds"]


def suspicion_bounds(
    *, suspicion_mult: int, max_timeout_mult: int, probe_interval: float, cluster_size: int
) -> tuple[float, float]:
    """The (minimum, maximum) suspicion timeouts for a cluster of ``cluster_size``.

    ``minimum = suspicion_mult * max(1, log10(n)) * probe_interval``: larger
    clusters spread the news more slowly, so give the accused longer.
    """
    scale = max(1.0, math.log10(max(1, cluster_size)))
    minimum = suspicion_mult * scale * probe_interval
    return minimum, max_timeout_mult * minimum


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, minimum: float, maximum: float
) -> float:
    """Seconds left before a suspicion started ``elapsed`` ago fires.

    The total timeout falls from ``maximum`` towards ``minimum`` as
    ``log(confirmations + 1) / log(k + 1)`` and never below ``minimum``;
    the result is negative when the timer is already overdue.
    """
    if k < 1:
        timeout = minimum
    else:
        fraction = math.log(confirmations + 1.0) / math.log(k + 1.0)
        raw = maximum - fraction * (maximum - minimum)
        # Whole milliseconds, as memberlist computes it, so its vectors hold exactly.
        timeout = max(minimum, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed


@attrs.define(eq=False, kw_only=True)
class Suspicion:
    """The timer for one suspected member.

    ``k`` is how many independent confirmations drive the timeout down to
    ``minimum``; the member that raised the suspicion (``source``) and
    repeated confirmations from the same member do not count.
    """

    source: str
    k: int
    minimum: float
    maximum: float
    started: float
    _confirmed_by: set[str] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        # memberlist: with k < 1 the timer simply runs for the minimum.
        if self.k < 1:
            self.maximum = self.minimum
        self._confirmed_by.add(self.source)

    @property
    def confirmations(self) -> int:
        return len(self._confirmed_by) - 1

    def confirm(self, source: str) -> bool:
        """Record a confirmation; True if it came from a new member (news worth
        re-gossiping, since it may shorten other members' timers too)."""
        if self.confirmations >= self.k or source in self._confirmed_by:
            return False
        self._confirmed_by.add(source)
        return True

    def deadline(self) -> float:
        """When the suspicion turns into a death declaration."""
        return self.started + remaining_suspicion_time(
            self.confirmations, self.k, 0.0, self.minimum, self.maximum
        )
