"""The scorecard (benchmarks/scorecard.py) reads each benchmark's results
the way they are written and judges each target by the median of the
"after" runs; these check it on small hand-made result files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scorecard  # noqa: E402


def _wire(td: dict[str, float], raw: dict[str, float], erlang: dict[str, float] | None) -> Any:
    median: dict[str, Any] = {"trio_distribute": td, "raw_trio": raw}
    if erlang is not None:
        median["erlang"] = erlang
    return {"median": median}


def _write(directory: Path, name: str, data: Any) -> None:
    (directory / name).write_text(json.dumps(data))


def _rows(directory: Path) -> dict[str, tuple[str, str, str, str]]:
    return {row[0]: row[1:] for row in scorecard.table(directory)}


def test_wire_rows_pair_each_before_round_with_its_own_erlang(tmp_path: Path) -> None:
    raw = {"w2_p50_us": 100.0, "w3a_calls_per_s": 1000.0}
    for round_no, (erlang_w1, td_w2) in enumerate([(100.0, 90.0), (200.0, 110.0), (400.0, 95.0)]):
        after = {"w2_p50_us": td_w2, "w1_msgs_per_s": 300.0, "w3a_calls_per_s": 900.0}
        _write(
            tmp_path, f"wire-after-{round_no}.json", _wire(after, raw, {"w1_msgs_per_s": erlang_w1})
        )
        before = {"w2_p50_us": 150.0, "w1_msgs_per_s": 100.0, "w3a_calls_per_s": 1100.0}
        _write(tmp_path, f"wire-before-{round_no}.json", _wire(before, raw, None))
    rows = _rows(tmp_path)
    # Before: 100 msg/s against each round's Erlang (100, 200, 400).
    # The median after is 1.5, though one round reached 3.
    assert rows["W1 msg/s, td / Erlang"] == ("1, 0.5, 0.25", "3, 1.5, 0.75", "≥ 2x", "missed")
    # The median of 0.9, 1.1 and 0.95 is 0.95: met, though one round is over.
    assert rows["W2 p50, td / raw trio"] == ("1.5, 1.5, 1.5", "0.9, 1.1, 0.95", "≤ 1x", "met")
    assert rows["W3a calls/s, td / raw trio"][2:] == ("≥ 1x", "missed")
    # A figure no run has (no bulk workload here) is a dash, and no verdict.
    assert rows["16 MiB message, GB/s"] == ("-, -, -", "-, -, -", "≥ 1 GB/s", "no result")


def test_process_rows_read_each_side_over_raw_and_over_its_own_small_run(
    tmp_path: Path,
) -> None:
    results = {
        "raw/trio/100000": {"rss_per_unit": 2000.0, "spawn_s": 10.0, "stop_s": 10.0},
        "base/trio/100000": {"rss_per_unit": 10000.0, "spawn_s": 100.0, "stop_s": 15.0},
        "td/trio/100000": {"rss_per_unit": 3000.0, "spawn_s": 21.0, "stop_s": 15.0},
        "base/trio/10": {"rtt_p50_us": 30.0},
        "td/trio/10": {"rtt_p50_us": 30.0},
        "td/trio/1000000": {"rtt_p50_us": 45.0, "peak_rss_mb": 3072.0},
    }
    _write(tmp_path, "processes.json", {"results": results})
    rows = _rows(tmp_path)
    assert rows["idle process RSS / raw task"] == ("5", "1.5", "≤ 1.5x", "met")
    assert rows["spawn 100,000 / raw"] == ("10", "2.1", "≤ 2x", "missed")
    assert rows["stop 100,000 / raw"] == ("1.5", "1.5", "≤ 2x", "met")
    # The base never runs a million processes.
    assert rows["1,000,000 idle processes: peak RSS, GB (this machine: 24)"] == (
        "-",
        "3",
        "≤ 24 GB",
        "met",
    )
    assert rows["send rtt p50, one of 1,000,000 / one of 10"] == ("-", "1.5", "≤ 1x", "missed")


def test_cluster_rows_split_the_runs_by_side_and_a_run_that_never_converged_misses(
    tmp_path: Path,
) -> None:
    runs = [
        {"label": "base-0", "mesh_s": None, "false_suspicions_raised": 3},
        {"label": "branch-0", "mesh_s": 4.0, "false_suspicions_raised": 0},
        {"label": "branch-1", "mesh_s": 7.0, "false_suspicions_raised": 0},
    ]
    _write(tmp_path, "clusters.json", {"runs": runs})
    scale = {"converged": False, "false_suspicions_raised_in_window": 0, "cpu_pct_per_node": 0.2}
    _write(tmp_path, "scale-after.json", {"after": scale})
    rows = _rows(tmp_path)
    assert rows["100 nodes in 10 processes: full mesh, s"] == ("-", "4, 7", "≤ 5 s", "missed")
    assert rows["100 nodes: false suspicions raised"] == ("3", "0, 0", "≤ 0", "met")
    assert rows["1,000 nodes (no full mesh): converged (1: yes)"] == (
        "no run",
        "0",
        "≥ 1",
        "missed",
    )
    assert rows["1,000 nodes: CPU per node, % of a core"][1:] == ("0.2", "≤ 0.05 %", "missed")


def test_the_rst_table_has_a_row_per_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scorecard.main(["--dir", str(tmp_path), "--rst"])
    out = capsys.readouterr().out
    assert out.startswith(".. list-table::")
    assert out.count("   * - ") == len(scorecard.rows) + 1  # and the header
