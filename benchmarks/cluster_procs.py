"""100 nodes as 10 OS processes x 10 nodes: time to full mesh and stability,
before/after in one sitting.

Usage, from the repository root::

    python -m benchmarks.cluster_procs --base /tmp/base-worktree --runs 3
    python -m benchmarks.cluster_procs --stability 600      # this tree only

Each run starts ``--procs`` OS processes at the same wall-clock moment, each
with ``--nodes / --procs`` nodes on real loopback sockets (LAN timers, full
mesh, election on), through :mod:`benchmarks.cluster_scale`'s harness (every
node binds its own ``127.0.X.Y``; node ``i`` joins through node ``i mod 3``).
With ``--base DIR`` the runs alternate between this tree and the
``trio_distribute`` package in ``DIR`` (a worktree of another commit), so
both are measured on the same machine under the same load; the ratios are
the point, the absolute numbers depend on the load (printed).

Reported per run, and as the median per side:

* **time to full mesh**: seconds from the common start until every node
  has a connection to each of the others (``mesh``), the same from when
  the last child was ready (``mesh_after_ready``: on a loaded machine the
  imports and the cookie's key stretching can make children late), and
  until every node also sees every member alive and the same leader
  (``convergence``);
* **false suspicions**: suspicions raised by the nodes' own failed probes
  and suspect/down events (no node fails, so every one is false), over the
  whole run and in the steady window;
* **CPU per node** (% of one core) and **datagrams/s per node** (sent,
  received) over the steady window;
* **connections**: their sum (a full mesh of 100 is 9,900 connection ends).

``--stability SECONDS`` makes one long run of this tree (10 minutes is the
target: zero false suspicions throughout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
RESULTS = HERE.parent / "results"

#: The figures compared, with how to print them.
FIGURES: list[tuple[str, str]] = [
    ("children_late_s", ".1f"),
    ("mesh_s", ".2f"),
    ("mesh_after_ready_s", ".2f"),
    ("convergence_s", ".2f"),
    ("false_suspicions_raised", "d"),
    ("suspect_events", "d"),
    ("down_events", "d"),
    ("raised_in_window", "d"),
    ("cpu_pct_per_node", ".3f"),
    ("datagrams_sent_per_node_s", ".2f"),
    ("datagrams_received_per_node_s", ".2f"),
    ("connections_total", "d"),
    ("connections_at_5s", "d"),
    ("connections_at_10s", "d"),
    ("dials", "d"),
    ("handshake_timeout", "d"),
    ("handshake_failed", "d"),
    ("mesh_redial_failed", "d"),
    ("handshake_refused", "d"),
]

#: Drop causes of a handshake that was refused or shed for want of a slot.
REFUSED = ("handshake_refused_full", "handshake_refused_per_host", "handshake_evicted")


def one_run(args: argparse.Namespace, td_path: str, label: str) -> dict[str, Any]:
    """One run of the cluster_scale harness; its summary, trimmed."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "out.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.cluster_scale",
            "--nodes",
            str(args.nodes),
            "--procs",
            str(args.procs),
            "--timers",
            "lan",
            "--warmup",
            str(args.warmup),
            "--duration",
            str(args.duration),
            "--label",
            label,
            "--output",
            str(output),
        ]
        if td_path:
            command += ["--td-path", td_path]
        if args.go_when_ready:
            command.append("--go-when-ready")
        if args.profile_child >= 0:
            command += ["--profile-child", str(args.profile_child), "--profile-phase", "warmup"]
        started = time.time()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if args.verbose:
            print(proc.stdout, proc.stderr[-3000:], sep="\n", file=sys.stderr)
        try:
            summary = json.loads(output.read_text())[label]
        except (OSError, KeyError, ValueError):
            return {"label": label, "error": proc.stderr[-2000:], "wall_s": time.time() - started}
    return {
        "label": label,
        "td_path": td_path or str(ROOT),
        "mesh_s": summary["convergence_parts_s"]["mesh"],
        # On a loaded machine the children can be ready (imports, the
        # cookie's key stretching) well after the common start: this is
        # the time to full mesh from when the last of them was.
        "mesh_after_ready_s": None
        if summary["convergence_parts_s"]["mesh"] is None
        else summary["convergence_parts_s"]["mesh"] - max(0.0, summary["children_late_s"] or 0.0),
        "convergence_s": summary["convergence_s"],
        "converged": summary["converged"],
        "false_suspicions_raised": summary["false_suspicions_raised"],
        "suspect_events": summary["suspect_events"],
        "down_events": summary["down_events"],
        "raised_in_window": summary["false_suspicions_raised_in_window"],
        "cpu_pct_per_node": summary["cpu_pct_per_node"],
        "datagrams_sent_per_node_s": summary["datagrams_sent_per_node_s"],
        "datagrams_received_per_node_s": summary["datagrams_received_per_node_s"],
        "connections_total": summary["connections_total"],
        "children_late_s": summary["children_late_s"],
        "dials": summary.get("dials_total"),
        "handshake_timeout": summary["drops"].get("handshake_timeout", 0),
        "handshake_failed": summary["drops"].get("handshake_failed", 0),
        "mesh_redial_failed": summary["drops"].get("mesh_redial_failed", 0),
        "handshake_refused": sum(summary["drops"].get(cause, 0) for cause in REFUSED),
        "timeline": summary.get("timeline"),
        "connections_at_5s": _at(summary.get("timeline"), 5.0),
        "connections_at_10s": _at(summary.get("timeline"), 10.0),
        "drops": summary["drops"],
        "failures": summary["failures"],
        "loadavg": summary["loadavg"],
    }


def _at(timeline: list[list[float]] | None, seconds: float) -> int | None:
    """Connection ends summed over the nodes ``seconds`` after the start."""
    seen = [int(c) for t, c, _ in timeline or [] if t <= seconds]
    return seen[-1] if seen else None


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "d":
        return str(int(value))
    return format(value, spec)


def report(runs: list[dict[str, Any]]) -> str:
    sides: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        sides.setdefault(run["label"].rsplit("-", 1)[0], []).append(run)
    lines = []
    for run in runs:
        if "error" in run:
            lines.append(f"{run['label']}: FAILED {run['error'][-300:]}")
            continue
        cells = " ".join(f"{name}={_fmt(run[name], spec)}" for name, spec in FIGURES)
        load = " ".join(f"{x:.1f}" for x in run["loadavg"])
        lines.append(f"{run['label']}: {cells} load={load}")
    lines.append("")
    lines.append("median per side:")
    medians: dict[str, dict[str, float | None]] = {}
    for side, side_runs in sides.items():
        ok = [r for r in side_runs if "error" not in r]
        medians[side] = {}
        for name, _ in FIGURES:
            values = [r[name] for r in ok if r[name] is not None]
            medians[side][name] = statistics.median(values) if values else None
        cells = " ".join(f"{name}={_fmt(medians[side][name], spec)}" for name, spec in FIGURES)
        missing = sum(1 for r in ok if r["mesh_s"] is None)
        lines.append(f"  {side}: {cells} (runs {len(ok)}/{len(side_runs)}, no mesh in {missing})")
    if "base" in medians and "branch" in medians:
        lines.append("branch / base:")
        for name, spec in FIGURES:
            b, a = medians["base"][name], medians["branch"][name]
            ratio = "-" if not a or not b else f"{a / b:.2f}x"
            lines.append(f"  {name}: {_fmt(b, spec)} -> {_fmt(a, spec)} ({ratio})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--procs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="runs per side")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the window")
    parser.add_argument("--duration", type=float, default=30.0, help="steady window (s)")
    parser.add_argument("--base", default="", help="worktree of the base commit")
    parser.add_argument(
        "--stability", type=float, default=0.0, help="one run of this tree, this many seconds"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--go-when-ready",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the nodes 1 s after the last child is ready (imports, key stretching)",
    )
    parser.add_argument(
        "--profile-child",
        type=int,
        default=-1,
        help="cProfile child I from the start to the window (benchmarks/results/)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "cluster_procs.json")
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    if args.stability:
        args.duration = args.stability
        runs.append(one_run(args, "", "branch-stability"))
    else:
        for i in range(args.runs):
            if args.base:
                runs.append(one_run(args, str(Path(args.base).resolve()), f"base-{i}"))
            runs.append(one_run(args, "", f"branch-{i}"))
            print(report(runs).split("\n\nmedian")[0].splitlines()[-1], file=sys.stderr)
    text = report(runs)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"runs": runs, "loadavg_end": os.getloadavg()}, indent=2) + "\n"
    )
    ok = all("error" not in r and r["converged"] for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
