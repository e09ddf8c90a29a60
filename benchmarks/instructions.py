"""Instructions per round trip, counted by valgrind: a measure no
neighbour's load can move.

Usage, from the repository root::

    python -m benchmarks.instructions [--workloads raw,w2,w2call,w3a]
        [--counts 200,1200] [--td-path DIR]

Runs ``benchmarks.latency_cpu`` (both nodes in one process, over loopback
TCP) under ``valgrind --tool=callgrind`` twice per workload, with
``--counts`` round trips each, and reports the difference of the two
instruction counts divided by the difference of the round trips: the user-
space instructions one round trip costs, start-up and warm-up cancelled
out. The kernel's work (the same ``send``, ``recv`` and ``epoll`` calls for
every workload here) is not counted.

Wall-clock and CPU-time benchmarks on a shared machine swing by tens of
per cent between runs. This count does not depend on the machine's load,
but it is far from exact: what a round trip does still depends on timing
(whether a reply's bytes are already there when the socket is read, which
writes are batched, whether the socket is lent), and under valgrind every
program runs some 50 times slower, which moves all of these. Runs of one
commit spread by up to 15 %: it separates changes of 20 % and more
(``--td-path`` runs the children on another checkout; run each side
several times). It is a proxy: a change that saves instructions but misses
caches more would look better here than on the clock. Needs ``valgrind``
on the ``PATH``; each workload takes a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
_COLLECTED = re.compile(rb"Collected : (\d+)")


def count_instructions(tree: Path, workload: str, round_trips: int) -> int:
    """User-space instructions of one ``latency_cpu`` run of ``workload``."""
    # A fixed hash seed: the same dict and set layouts on every run.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.latency_cpu",
            "--runs",
            "1",
            "--count",
            str(round_trips),
            "--workloads",
            workload,
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        check=True,
    )
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no count:\n{done.stderr.decode()[-2000:]}")
    return int(found.group(1))


def per_round_trip(tree: Path, workload: str, counts: tuple[int, int]) -> float:
    low, high = counts
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda n: count_instructions(tree, workload, n), (low, high))
    return (b - a) / (high - low)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--workloads", default="raw,w2,w2call,w3a")
    parser.add_argument("--counts", default="200,1200", help="two round-trip counts")
    parser.add_argument("--td-path", type=Path, default=ROOT, help="the checkout to measure")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    low, high = (int(n) for n in args.counts.split(","))
    if not 0 < low < high:
        parser.error("--counts needs two round-trip counts, the smaller first")
    results: dict[str, float] = {}
    for workload in (w for w in args.workloads.split(",") if w):
        results[workload] = per_round_trip(args.td_path.resolve(), workload, (low, high))
    base_name = "raw" if "raw" in results else "w2"
    base = results.get(base_name)
    for workload, instructions in results.items():
        ratio = "" if base is None else f"  ({instructions / base:.3f}x {base_name})"
        print(f"{workload:>7}: {instructions / 1000:8.1f} k instructions per round trip{ratio}")
    print("RESULT " + json.dumps({"instructions_per_round_trip": results}, sort_keys=True))


if __name__ == "__main__":
    main()
