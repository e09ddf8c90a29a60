"""Every performance target, before and after, from one sitting's results.

Usage, from the repository root, after running the benchmarks it reads::

    python -m benchmarks.scorecard --dir benchmarks/results/scorecard [--rst]

It reads, from ``--dir``, whichever of these exist (each written by the
benchmark named, with ``--output``; "before" runs are another checkout's
``trio_distribute`` measured with this checkout's ``benchmarks/``):

``wire-after-N.json``, ``wire-before-N.json``
    ``python -m benchmarks.run`` (round N; the two sides of a round are
    run one after the other). Erlang runs in the "after" invocations only:
    a "before" ratio to Erlang uses the Erlang figure of the same round.
``processes.json``
    ``python -m benchmarks.processes --compare BEFORE`` (raw tasks, the
    "before" checkout as ``base``, this one as ``td``).
``clusters.json``
    ``python -m benchmarks.cluster_procs --base BEFORE`` (runs labelled
    ``base-N`` and ``branch-N``).
``scale-before.json``, ``scale-after.json``
    ``python -m benchmarks.cluster_scale --nodes 1000 ... --label before``
    (or ``after``).

and prints one row per target: the figure in each run of each side, the
target, and whether the median of the "after" runs meets it. Nothing is
measured here, and a target without results says so.
"""

from __future__ import annotations

import argparse
import json
import operator
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Row", "main", "rows"]

Results = dict[str, Any]
Figure = Callable[[Results], float | None]


@attrs.frozen
class Row:
    """One target: which results it reads (``source``), how to read its
    figure from one run, and its bound."""

    name: str
    source: str
    figure: Figure
    bound: float
    compare: Callable[[float, float], bool]
    unit: str = "x"

    @property
    def target(self) -> str:
        sign = "≤" if self.compare is operator.le else "≥"
        return f"{sign} {self.bound:g}{self.unit}"

    def met(self, values: Sequence[float]) -> bool | None:
        if not values:
            return None
        return bool(self.compare(statistics.median(values), self.bound))


def _median(run: Results, system: str, metric: str) -> float | None:
    value = run.get("median", {}).get(system, {}).get(metric)
    return None if value is None else float(value)


def _ratio(
    run: Results, num: tuple[str, str], den: tuple[str, str], *, erlang: Results | None = None
) -> float | None:
    top = _median(run, *num)
    bottom = _median(erlang if den[0] == "erlang" and erlang is not None else run, *den)
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def _wire(num: tuple[str, str], den: tuple[str, str]) -> Figure:
    # "before" invocations carry their round's Erlang figures under "_erlang".
    return lambda run: _ratio(run, num, den, erlang=run.get("_erlang"))


def _process_figure(metric: str, count: int, over_count: int | None = None) -> Figure:
    """The side's ``metric`` at ``count`` processes over raw tasks' (or, with
    ``over_count``, over the side's own at ``over_count`` processes). The
    side ("base" or "td") is the run's ``_side``."""

    def figure(results: Results) -> float | None:
        table = results.get("results", {})
        side = results["_side"]
        mine = table.get(f"{side}/trio/{count}", {}).get(metric)
        key = f"raw/trio/{count}" if over_count is None else f"{side}/trio/{over_count}"
        theirs = table.get(key, {}).get(metric)
        if mine is None or not theirs:
            return None
        return float(mine) / float(theirs)

    return figure


def _peak_gb(count: int) -> Figure:
    """The side's peak RSS with ``count`` idle processes, in GB."""

    def figure(results: Results) -> float | None:
        entry = results.get("results", {}).get(f"{results['_side']}/trio/{count}")
        return None if entry is None else float(entry["peak_rss_mb"]) / 1024

    return figure


def _field(name: str) -> Figure:
    def figure(run: Results) -> float | None:
        value = run.get(name)
        return None if value is None else float(value)

    return figure


TD = "trio_distribute"

rows: list[Row] = [
    Row(
        "W2 p50, td / raw trio",
        "wire",
        _wire((TD, "w2_p50_us"), ("raw_trio", "w2_p50_us")),
        1.0,
        operator.le,
    ),
    Row(
        "W3a calls/s, td / raw trio",
        "wire",
        _wire((TD, "w3a_calls_per_s"), ("raw_trio", "w3a_calls_per_s")),
        1.0,
        operator.ge,
    ),
    Row(
        "W1 msg/s, td / Erlang",
        "wire",
        _wire((TD, "w1_msgs_per_s"), ("erlang", "w1_msgs_per_s")),
        2.0,
        operator.ge,
    ),
    Row(
        "W3b calls/s, td / Erlang",
        "wire",
        _wire((TD, "w3b_calls_per_s"), ("erlang", "w3b_calls_per_s")),
        1.0,
        operator.ge,
    ),
    Row(
        "16 MiB message, GB/s",
        "wire",
        lambda run: _median(run, TD, "bulk_gb_per_s"),
        1.0,
        operator.ge,
        " GB/s",
    ),
    Row(
        "call by pid p50 / W2 p50",
        "wire",
        _wire((TD, "call_pid_p50_us"), (TD, "w2_p50_us")),
        1.1,
        operator.le,
    ),
    Row(
        "idle process RSS / raw task",
        "processes",
        _process_figure("rss_per_unit", 100_000),
        1.5,
        operator.le,
    ),
    Row("spawn 100,000 / raw", "processes", _process_figure("spawn_s", 100_000), 2.0, operator.le),
    Row("stop 100,000 / raw", "processes", _process_figure("stop_s", 100_000), 2.0, operator.le),
    Row(
        "1,000,000 idle processes: peak RSS, GB (this machine: 24)",
        "processes",
        _peak_gb(1_000_000),
        24.0,
        operator.le,
        " GB",
    ),
    Row(
        "send rtt p50, one of 1,000,000 / one of 10",
        "processes",
        _process_figure("rtt_p50_us", 1_000_000, over_count=10),
        1.0,
        operator.le,
    ),
    Row(
        "one-way send, one of 1,000,000 / one of 10",
        "processes",
        _process_figure("send_us", 1_000_000, over_count=10),
        1.0,
        operator.le,
    ),
    Row(
        "100 nodes in 10 processes: full mesh, s",
        "clusters",
        _field("mesh_s"),
        5.0,
        operator.le,
        " s",
    ),
    Row(
        "100 nodes: false suspicions raised",
        "clusters",
        _field("false_suspicions_raised"),
        0.0,
        operator.le,
        "",
    ),
    Row(
        "1,000 nodes (no full mesh): converged (1: yes)",
        "scale",
        lambda run: 1.0 if run.get("converged") else 0.0,
        1.0,
        operator.ge,
        "",
    ),
    Row(
        "1,000 nodes: false suspicions in the window",
        "scale",
        _field("false_suspicions_raised_in_window"),
        0.0,
        operator.le,
        "",
    ),
    Row(
        "1,000 nodes: CPU per node, % of a core",
        "scale",
        _field("cpu_pct_per_node"),
        0.05,
        operator.le,
        " %",
    ),
]


def _load(path: Path) -> Results | None:
    return json.loads(path.read_text()) if path.exists() else None


def _sides(directory: Path, source: str) -> dict[str, list[Results]]:
    """The runs of each side ("before", "after") for one kind of source."""
    if source == "wire":
        after = [r for r in map(_load, sorted(directory.glob("wire-after-*.json"))) if r]
        before = []
        for path in sorted(directory.glob("wire-before-*.json")):
            run = _load(path)
            partner = _load(path.with_name(path.name.replace("before", "after")))
            if run is not None:
                run["_erlang"] = partner
                before.append(run)
        return {"before": before, "after": after}
    if source == "processes":
        found = _load(directory / "processes.json")
        return (
            {}
            if found is None
            else {"before": [dict(found, _side="base")], "after": [dict(found, _side="td")]}
        )
    if source == "clusters":
        found = _load(directory / "clusters.json")
        runs = [] if found is None else found.get("runs", [])
        return {
            "before": [r for r in runs if r.get("label", "").startswith("base")],
            "after": [r for r in runs if r.get("label", "").startswith("branch")],
        }
    sides: dict[str, list[Results]] = {}
    for side in ("before", "after"):
        found = _load(directory / f"scale-{side}.json")
        sides[side] = [] if found is None else list(found.values())
    return sides


def table(directory: Path) -> list[tuple[str, str, str, str, str]]:
    """(target, before, after, bound, verdict) for every row."""
    out = []
    cache: dict[str, dict[str, list[Results]]] = {}
    for row in rows:
        if row.source not in cache:
            cache[row.source] = _sides(directory, row.source)
        sides = cache[row.source]
        cells = []
        values: dict[str, list[float]] = {}
        for side in ("before", "after"):
            got = [row.figure(run) for run in sides.get(side, [])]
            values[side] = [v for v in got if v is not None]
            cells.append(", ".join("-" if v is None else f"{v:.4g}" for v in got) or "no run")
        verdict = row.met(values["after"])
        word = "no result" if verdict is None else ("met" if verdict else "missed")
        out.append((row.name, cells[0], cells[1], row.target, word))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("benchmarks/results/scorecard"))
    parser.add_argument("--rst", action="store_true", help="an RST list-table")
    args = parser.parse_args(argv)
    lines = [("target", "before", "after", "bound", "after meets it"), *table(args.dir)]
    if args.rst:
        print(".. list-table::\n   :header-rows: 1\n")
        for cells in lines:
            print("   * - " + "\n     - ".join(cells))
        return
    widths = [max(len(cells[i]) for cells in lines) for i in range(5)]
    for cells in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )


if __name__ == "__main__":
    main()
