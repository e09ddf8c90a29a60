"""The latency benchmarks (docs/internals/latency.rst) still run end to end
and report every condition (nothing here judges a number)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# The benchmarks live beside the package, not in it: import them from the
# checkout (the suite runs against the installed package).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import frame_cost, instructions, latency_cpu, send_scale  # noqa: E402


def _result(out: str) -> dict[str, object]:
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    data: dict[str, object] = json.loads(line[len("RESULT ") :])
    return data


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_latency_cpu_reports_each_workload(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    latency_cpu.main(["--count", "20", "--runs", "1", "--backend", backend])
    data = _result(capsys.readouterr().out)
    assert data["backend"] == backend
    for workload in latency_cpu.WORKLOADS:
        entry = data[workload]
        assert isinstance(entry, dict) and entry["cpu_us"] > 0 and entry["wall_p50_us"] > 0


def test_send_scale_reports_every_condition(capsys: pytest.CaptureFixture[str]) -> None:
    send_scale.main(["--count", "50", "--rounds", "20"])
    data = _result(capsys.readouterr().out)
    for condition in ("fixed10", "random", "random_gc_off", "random_gc_frozen"):
        value = data[condition]
        assert isinstance(value, float) and value > 0
    collections = data["gc_collections"]
    assert isinstance(collections, list) and len(collections) == 8


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_latency_cpu_runs_the_raw_baseline_and_bulk_when_named(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = "raw,bulk" if backend == "trio" else "bulk"
    latency_cpu.main(["--count", "2", "--runs", "1", "--backend", backend, "--workloads", names])
    data = _result(capsys.readouterr().out)
    for workload in names.split(","):
        entry = data[workload]
        assert isinstance(entry, dict) and entry["cpu_us"] > 0 and entry["wall_p50_us"] > 0


def test_frame_cost_reports_both_paths_for_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    frame_cost.main(["--count", "50", "--rounds", "1"])
    data = _result(capsys.readouterr().out)
    assert set(data) == {"SEND", "CALL", "REPLY"}
    for paths in data.values():
        assert isinstance(paths, dict) and set(paths) == {"by hand", "full decode"}
        assert all(value > 0 for value in paths.values())


def test_instructions_per_round_trip_is_the_difference_over_the_extra_round_trips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = {200: 1_000_000 + 200 * 450_000, 1200: 1_000_000 + 1200 * 450_000}
    monkeypatch.setattr(instructions, "count_instructions", lambda tree, w, n: counts[n])
    assert instructions.per_round_trip(ROOT, "w2", (200, 1200)) == 450_000


def test_instructions_says_so_where_valgrind_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(SystemExit):
        instructions.main(["--workloads", "w2"])
    assert "valgrind is not installed" in capsys.readouterr().err
