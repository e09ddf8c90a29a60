"""SWIM membership targets (M1-M12) measured in the deterministic simulator.

Usage, from the repository root::

    python -m benchmarks.sim_swim [--full] [--seed N] [--output PATH]

Prints a markdown table "target | criterion | measured | pass" and writes it
to ``benchmarks/results/sim_swim.md`` (``sim_swim_full.md`` with ``--full``).
The CI-sized run uses N = 8, 32, 128 and a few trials; ``--full`` adds
N = 1000 and the trial counts of ``reference/swim-raft-targets.md`` and
takes much longer. M4 (suspicion-timer vectors) and M8 (local health) are
exact unit tests in ``tests/proto``; see the footer of the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trio_distribute.testing.swim_sim import run_all, table

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size runs (slow)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run_all(full=args.full, seed=args.seed)
    elapsed = time.perf_counter() - started
    mode = "full" if args.full else "CI-sized"
    text = "\n".join(
        [
            f"# SWIM simulation targets ({mode}, seed {args.seed})",
            "",
            "LAN knobs (probe interval T = 1 s, timeout 0.5 s, k = 3, suspicion mult 4, "
            "max-timeout mult 6, retransmit mult 4, gossip 200 ms x 3), Lifeguard on unless "
            "stated; latency 0.5-2 ms; virtual time.",
            "",
            table(results),
            "",
            "M4 (memberlist suspicion-timer and dogpile vectors) and M8 (local health "
            "saturates at 7, back to 0 within 8 good probes) are exact unit tests: "
            "tests/proto/test_suspicion.py, tests/proto/test_swim.py.",
            "",
            f"Wall time: {elapsed:.0f} s.",
            "",
        ]
    )
    print(text)
    output = args.output or RESULTS / ("sim_swim_full.md" if args.full else "sim_swim.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    # Like sim_election: a missed target is a failure, not just a table row.
    return 0 if all(result.passed is not False for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
