"""Local sends: one node, a sender and a receiver process on it.

Usage, from the repository root::

    python -m benchmarks.local_send [--count 200000] [--runs 5]

The sender sends ``count`` W1-shaped messages (``{"seq": i, "body":
b"x"*16}``) to a local pid with ``await node.send(pid, msg)``; the receiver
takes them with ``await proc.receive()``. Also measured: a plain int
payload (the cheapest message) and a 100-element list. The result line is
messages per second (the median over runs) for each payload; run it before
and after a change in the same sitting, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import trio

import trio_distribute as td

from ._common import BODY

__all__ = ["main"]

PAYLOADS: dict[str, Any] = {
    "w1_dict": lambda i: {"seq": i, "body": BODY},
    "int": lambda i: i,
    "list100": lambda i: list(range(100)),
}


async def _one_run(node: td.Node, make: Any, count: int) -> float:
    async with node.open_process() as receiver:
        messages = [make(i) for i in range(count)]

        async def sender() -> None:
            send = node.send
            pid = receiver.pid
            for message in messages:
                await send(pid, message)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            for _ in range(count):
                await receiver.receive()
        return count / (time.perf_counter() - start)


async def run(count: int, runs: int) -> dict[str, float]:
    config = td.NodeConfig.local(max_mailbox=count + 1)
    results: dict[str, float] = {}
    async with td.open_node("bench@127.0.0.1", cookie="local-bench", config=config) as node:
        for label, make in PAYLOADS.items():
            rates = [await _one_run(node, make, count) for _ in range(runs)]
            results[label] = statistics.median(rates)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_send")
    parser.add_argument("--count", type=int, default=200_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per payload (median)")
    args = parser.parse_args(argv)
    results = trio.run(run, args.count, args.runs)
    for label, rate in results.items():
        print(f"{label:>10}: {rate:12,.0f} msg/s")
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
