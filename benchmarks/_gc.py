"""CPython's cyclic garbage collector in a benchmark process: how long it
paused the process, and a way to hold its full collections back.

A full collection walks every container object in the process, so its
pause grows with the heap. CPython starts one when the objects promoted to
the oldest generation since the last one exceed a quarter of those that
survived it, and at least ``threshold2`` (10) collections of the middle
generation have run. A process that builds a big heap (100,000 processes,
or 100 nodes with a full mesh in one process) therefore runs full
collections over and over while it grows, and they find almost nothing
to free: this package's objects are freed by reference counting.

``BENCH_GC`` chooses the collector's setting for a benchmark process and
the children it starts (they inherit the environment):

* ``default`` (or unset): CPython's;
* ``held``: ``gc.set_threshold(700, 10, 1000)``: young collections as
  usual, a full collection at most once per thousand middle ones;
* ``off``: ``gc.disable()`` (no cyclic collection at all: a measure of
  the whole cost, not a setting to run with).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

__all__ = ["GcPauses", "apply_policy_from_environment"]

POLICIES = ("default", "held", "off")


def apply_policy_from_environment() -> str:
    """Apply ``BENCH_GC`` to this process; return the policy's name."""
    policy = os.environ.get("BENCH_GC", "") or "default"
    if policy not in POLICIES:
        raise SystemExit(f"BENCH_GC must be one of {', '.join(POLICIES)}, not {policy!r}")
    if policy == "held":
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1000)
    elif policy == "off":
        gc.disable()
    return policy


class GcPauses:
    """Wall time the collector spent, per generation, while recording.

    ``with GcPauses() as pauses: ...`` (or ``start()`` and ``stop()``), then
    ``pauses.summary()``; collections the program asks for itself are left
    out with ``pauses.collect()``.
    """

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0
        self._asked = False

    def collect(self) -> None:
        """``gc.collect()``, not counted as a pause."""
        self._asked = True
        try:
            gc.collect()
        finally:
            self._asked = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if self._asked:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = int(info["generation"])
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1

    def start(self) -> None:
        """Record from now on."""
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        """Stop recording (what was recorded stays)."""
        gc.callbacks.remove(self._callback)

    def __enter__(self) -> GcPauses:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """Seconds paused in all, in full collections, and their count."""
        return {
            "gc_s": round(sum(self.seconds), 3),
            "gc_full_s": round(self.seconds[2], 3),
            "gc_full_collections": self.collections[2],
        }
