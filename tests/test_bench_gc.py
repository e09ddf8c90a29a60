"""The benchmarks' garbage-collector helper: the setting it applies and
the pauses it records."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The benchmarks live beside the package, not in it: import them from the
# checkout (the suite runs against the installed package).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._gc import GcPauses, apply_policy_from_environment  # noqa: E402


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    enabled = gc.isenabled()
    yield
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("restored_gc")
def test_the_policies_set_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.set_threshold(700, 10, 10)
    monkeypatch.delenv("BENCH_GC", raising=False)
    assert apply_policy_from_environment() == "default"
    assert gc.get_threshold() == (700, 10, 10) and gc.isenabled()

    monkeypatch.setenv("BENCH_GC", "held")
    assert apply_policy_from_environment() == "held"
    assert gc.get_threshold() == (700, 10, 1000) and gc.isenabled()

    monkeypatch.setenv("BENCH_GC", "off")
    assert apply_policy_from_environment() == "off"
    assert not gc.isenabled()

    monkeypatch.setenv("BENCH_GC", "sometimes")
    with pytest.raises(SystemExit, match="BENCH_GC must be one of"):
        apply_policy_from_environment()


@pytest.mark.usefixtures("restored_gc")
def test_pauses_count_the_collectors_own_collections_only() -> None:
    gc.enable()
    with GcPauses() as pauses:
        pauses.collect()  # asked for: not a pause
        assert pauses.summary() == {"gc_s": 0.0, "gc_full_s": 0.0, "gc_full_collections": 0}
        # A heap that grows by more than a quarter: the collector runs on
        # its own, full collections included.
        gc.set_threshold(100, 1, 1)
        kept: list[list[object]] = [[] for _ in range(len(gc.get_objects()))]
        gc.set_threshold(700, 10, 10)
        del kept
    summary = pauses.summary()
    assert summary["gc_full_collections"] >= 1
    assert summary["gc_s"] >= summary["gc_full_s"] >= 0.0
    assert sum(pauses.collections) > summary["gc_full_collections"]
    # Stopped: later collections are not recorded.
    before = list(pauses.collections)
    gc.collect()
    assert pauses.collections == before
