"""CPU per received frame: the head read by hand against the full decode.

Usage, from the repository root::

    python -m benchmarks.frame_cost [--count 5000] [--rounds 8]

Two nodes in one process. For each kind of frame whose head a node reads
by hand (SEND to a local process, CALL, REPLY), the frames are built ahead
and then handed, one at a time, to the receiving connection's frame
delivery (what its reader does after a read), first with the hand-read
handler in place and then without it (every frame decoded in full and
given to its ordinary handler), alternating for ``--rounds`` rounds. The
collector is run before and held off during each timed loop, so that one
side does not pay for the other's garbage. Reported: the median CPU
microseconds per frame of each path, and their ratio.

What is timed is the receiving side's work for one frame, up to the
message in a mailbox or the reply handed to its waiting call; the
socket, the scheduler and the sending side are not in it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

import trio_distribute as td
from trio_distribute._calls import _Pending
from trio_distribute._ids import Ref, unchecked_id

__all__ = ["main"]

COOKIE = "frame-cost-benchmark-2c7e9d41b8a6f350"
MESSAGE = {"seq": 1, "body": b"x" * 16}
_FIRST_REF = 10_000_000


def _timed(conn: Any, frames: list[bytes]) -> float:
    """CPU µs per frame for ``conn`` to deliver each of ``frames``."""
    deliver = conn._deliver_small
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for payload in frames:
            deliver([payload])
        return (time.process_time() - start) / len(frames) * 1e6
    finally:
        gc.enable()


async def run(count: int, rounds: int) -> dict[str, dict[str, float]]:
    config = td.NodeConfig.local(max_monitors_per_peer=10 * count)
    results: dict[str, dict[str, list[float]]] = {}
    async with (
        td.open_node("a@127.0.0.1", cookie=COOKIE, config=config) as a,
        td.open_node("b@127.0.0.1", cookie=COOKIE, config=config) as b,
    ):
        await a.connect(f"b@127.0.0.1:{b.address[1]}")
        at_a = a.transport.connections[b.name]  # what a reads from b
        at_b = b.transport.connections[a.name]  # what b reads from a

        async def sink(proc: td.Process) -> None:
            await anyio.sleep_forever()

        target = await b.spawn(sink)
        process = b._processes.local(target.id)
        assert process is not None
        next_ref = _FIRST_REF

        def empty_mailbox() -> None:
            process._mailbox._queue = None
            process._mailbox._bytes = 0

        async with a.open_process() as me:

            def send_frames() -> list[bytes]:
                frame = a.transport.encode_frame([10, target, MESSAGE])[4:]
                return [frame] * count

            def call_frames() -> list[bytes]:
                nonlocal next_ref
                refs = range(next_ref, next_ref + count)
                next_ref += count
                return [
                    a._calls._call_frame(
                        unchecked_id(Ref, a.name, i, a.creation), me.pid, target, MESSAGE
                    )[4:]
                    for i in refs
                ]

            def reply_frames() -> list[bytes]:
                nonlocal next_ref
                frames = []
                for i in range(next_ref, next_ref + count):
                    ref = unchecked_id(Ref, a.name, i, a.creation)
                    a._calls._pending[ref.id] = _Pending(me.pid, target, b.name)
                    frames.append(b._calls._reply_frame(me.pid, ref, MESSAGE)[4:])
                next_ref += count
                return frames

            def forget_calls() -> None:
                empty_mailbox()
                for calls in (a._calls, b._calls):
                    calls._pending.clear()
                    calls._serving.clear()
                    calls._serving_by_pid.clear()
                    calls._serving_by_node.clear()

            kinds: dict[str, tuple[Any, int, Callable[[], list[bytes]]]] = {
                "SEND": (at_b, 0x83, send_frames),
                "CALL": (at_b, 0x85, call_frames),
                "REPLY": (at_a, 0x84, reply_frames),
            }
            for kind, (conn, head, build) in kinds.items():
                handlers = conn.transport.direct_handlers
                by_hand = handlers[head]
                times: dict[str, list[float]] = {"by hand": [], "full decode": []}
                for _ in range(rounds):
                    for path in times:
                        frames = build()
                        if path == "full decode":
                            del handlers[head]
                        try:
                            times[path].append(_timed(conn, frames))
                        finally:
                            handlers[head] = by_hand
                            forget_calls()
                results[kind] = times
    return {
        kind: {path: statistics.median(values) for path, values in times.items()}
        for kind, times in results.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frame_cost")
    parser.add_argument("--count", type=int, default=5000, help="frames per timed loop")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds (median)")
    args = parser.parse_args(argv)
    results = anyio.run(run, args.count, args.rounds, backend="trio")
    for kind, paths in results.items():
        by_hand, full = paths["by hand"], paths["full decode"]
        print(
            f"{kind:>5}: {by_hand:6.2f} µs read by hand, {full:6.2f} µs decoded in full "
            f"({by_hand / full:.2f}x)"
        )
    print("RESULT " + json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
