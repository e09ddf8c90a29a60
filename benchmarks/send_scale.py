"""Why a local send to one of N processes costs more at large N.

Usage, from the repository root::

    python -m benchmarks.send_scale [--count 100000] [--rounds 5000]
        [--backend trio|asyncio]

One node, ``count`` idle processes (each waiting in ``receive`` and
answering a pid with ``None``), then local round trips (``node.send`` of
the sender's pid, ``receive`` of the answer) measured as p50 in several
conditions, in the same process one after another:

* ``fixed10``: to one of 10 fixed processes (the caches stay warm);
* ``random``: to a random one of all ``count`` (each target cold);
* ``random_gc_frozen``: as ``random``, after ``gc.freeze()`` (the idle
  processes moved out of the collector's generations), which tells what
  the garbage collector's passes over a big heap cost;
* ``random_gc_off``: as ``random`` with the collector disabled.

The ``random`` / ``fixed10`` ratio is the cost the target's coldness adds;
comparing the gc rows tells how much of it the collector is
(``gc_collections``: the collector's passes per generation during each
condition, in the order above).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

import trio_distribute as td

__all__ = ["main"]


async def run(count: int, rounds: int, exit_early: bool = False) -> dict[str, Any]:
    Pid = td.Pid
    started = [0]
    config = td.NodeConfig(max_mailbox=1000)
    results: dict[str, Any] = {"count": count}
    async with td.open_node("scale@127.0.0.1", cookie="send-scale-bench", config=config) as node:

        async def idle(proc: td.Process) -> None:
            started[0] += 1
            while True:
                message = await proc.receive()
                if type(message) is Pid:
                    await node.send(message, None)

        t0 = time.perf_counter()
        pids = [await node.spawn(idle) for _ in range(count)]
        while started[0] < count:
            await anyio.lowlevel.checkpoint()
        results["spawn_s"] = time.perf_counter() - t0
        rng = random.Random(1)
        async with node.open_process() as me:
            send = node.send
            receive = me.receive
            mine = me.pid

            async def p50(targets: list[td.Pid]) -> float:
                for pid in targets[:200]:  # warm-up
                    await send(pid, mine)
                    await receive()
                samples = []
                clock = time.perf_counter_ns
                before = [g["collections"] for g in gc.get_stats()]
                for pid in targets:
                    t = clock()
                    await send(pid, mine)
                    await receive()
                    samples.append(clock() - t)
                after = [g["collections"] for g in gc.get_stats()]
                collections.append([a - b for a, b in zip(after, before, strict=True)])
                return statistics.median(samples) / 1000

            collections: list[list[int]] = []
            ten = pids[:10]
            conditions: dict[str, Callable[[], list[td.Pid]]] = {
                "fixed10": lambda: [rng.choice(ten) for _ in range(rounds)],
                "random": lambda: [rng.choice(pids) for _ in range(rounds)],
            }
            for label, targets in conditions.items():
                results[label] = await p50(targets())
            gc.disable()
            results["random_gc_off"] = await p50(conditions["random"]())
            results["fixed10_gc_off"] = await p50(conditions["fixed10"]())
            gc.enable()
            gc.collect()
            gc.freeze()
            results["random_gc_frozen"] = await p50(conditions["random"]())
            results["fixed10_gc_frozen"] = await p50(conditions["fixed10"]())
            gc.unfreeze()
            results["random_again"] = await p50(conditions["random"]())
            results["fixed10_again"] = await p50(conditions["fixed10"]())
            # Collections per generation during each condition, in order.
            results["gc_collections"] = collections
            if exit_early:
                report(results)
                os._exit(0)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.send_scale")
    parser.add_argument("--count", type=int, default=100_000, help="idle processes")
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per condition")
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    parser.add_argument(
        "--exit-early",
        action="store_true",
        help="exit the OS process once measured, without stopping the node "
        "(stopping a million processes takes minutes and measures nothing here)",
    )
    args = parser.parse_args(argv)
    results = anyio.run(run, args.count, args.rounds, args.exit_early, backend=args.backend)
    report(results)


def report(results: dict[str, Any]) -> None:
    for key, value in results.items():
        print(f"{key:>20}: {value:,.1f}" if isinstance(value, float) else f"{key:>20}: {value}")
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
