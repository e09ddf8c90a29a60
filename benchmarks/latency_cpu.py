"""CPU per round trip: W2, W2-call and W3a with both nodes in one process.

Usage, from the repository root::

    python -m benchmarks.latency_cpu [--count 3000] [--runs 3]
        [--backend trio|asyncio] [--workloads w2,w2call,w3a] [--profile PATH]

Two nodes (``a`` and ``b``) run in one event loop and talk over loopback
TCP, so a round trip's wall time is the CPU both sides spend on it plus
the kernel's loopback hop: on a machine shared with other work this is a
far steadier measure of what a change on the message path buys than the
two-process harness (``benchmarks.run``), whose wall-clock latencies
swing with whatever else the two CPUs are doing. Reported per workload:
the median over runs of the CPU microseconds (``time.process_time``) per
round trip, and the wall-clock p50.

* ``w2``: ``node.send`` to an echo process on ``a`` that sends the message
  back, then ``receive``.
* ``w2call``: ``proc.call`` to a responder on ``a`` that replies with the
  request.
* ``w3a``: ``node.rpc.call(a, "add", i, 1)``, one at a time.

Two more workloads run only when named in ``--workloads``:

* ``raw`` (trio only): the raw trio + cbor2 W2 round trip of
  ``benchmarks/raw_trio.py`` (``send_all`` of a length-prefixed frame, the
  echo decoding and re-encoding it), client and server in this process:
  the baseline the ``w2`` CPU is compared with in the same run.
* ``bulk``: one 16 MiB ``bytes`` message from ``b`` to a process on ``a``
  that answers with its length; CPU milliseconds per message (reported in
  the same ``cpu_us`` field, in µs) and the wall p50.

The message is the W2 message (``{"seq": i, "body": 16 bytes}``).
``--profile PATH`` runs each workload once more under cProfile and writes
the statistics (sorted by internal time) to ``PATH.<workload>.txt``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import trio_distribute as td

from ._common import BODY, BULK_SIZE

__all__ = ["main"]

COOKIE = "latency-cpu-benchmark-4d1f0e9a7c3b2856"
WORKLOADS = ("w2", "w2call", "w3a")
#: Run only when named: the raw trio baseline and the 16 MiB message.
EXTRA_WORKLOADS = ("raw", "bulk")


def add(a: int, b: int) -> int:
    return a + b


async def _echo(proc: td.Process, node: td.Node) -> None:
    async for message in proc:
        peer, payload = message
        await node.send(peer, payload)


async def _responder(proc: td.Process) -> None:
    reply = proc.reply
    async for call in proc:
        await reply(call, call.request)


async def _bulk(proc: td.Process, node: td.Node) -> None:
    peer = await proc.receive()  # who to answer; then bare bytes messages
    async for payload in proc:
        await node.send(peer, len(payload))


async def _raw_trio_pair() -> tuple[Any, Any]:
    """A raw trio + cbor2 echo server (a system task) and a connected
    client stream: ``raw_trio.py``'s W2, in this process."""
    import trio

    from .raw_trio import FrameReader, encode_frame

    async def handle(stream: trio.SocketStream) -> None:
        reader = FrameReader()
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for message in reader.feed(data):
                    await stream.send_all(encode_frame(message))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve() -> None:
        async with listeners[0]:
            stream = await listeners[0].accept()
        await handle(stream)

    trio.lowlevel.spawn_system_task(serve)
    client = await trio.open_tcp_stream("127.0.0.1", port)
    return client, FrameReader()


async def _measure(step: Callable[[int], Awaitable[None]], count: int) -> tuple[float, float]:
    """(CPU µs per round trip, wall p50 µs) over ``count`` steps."""
    for seq in range(min(count, 100)):  # warm the caches
        await step(seq)
    samples: list[int] = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    for seq in range(count):
        t0 = clock()
        await step(seq)
        samples.append(clock() - t0)
    cpu = time.process_time() - cpu0
    samples.sort()
    return cpu / count * 1e6, samples[len(samples) // 2] / 1000


async def run(workloads: list[str], count: int, runs: int, profile: str | None) -> dict[str, Any]:
    # Room for the bulk message and its frame's head (as td_bench).
    config = td.NodeConfig.local(max_message_size=32 * 1024 * 1024)
    results: dict[str, Any] = {}
    async with (
        td.open_node("a@127.0.0.1", cookie=COOKIE, config=config) as a,
        td.open_node("b@127.0.0.1", cookie=COOKIE, config=config) as b,
    ):
        a.rpc.export(add)
        await b.connect(f"a@127.0.0.1:{a.address[1]}")
        echo = await a.spawn(_echo, a)
        responder = await a.spawn(_responder)
        bulk_pid = await a.spawn(_bulk, a)
        raw: tuple[Any, Any] | None = None
        if "raw" in workloads:
            raw = await _raw_trio_pair()
        bulk_data = b"\xab" * BULK_SIZE
        async with b.open_process() as me:
            body = BODY

            async def w2(seq: int) -> None:
                await b.send(echo, (me.pid, {"seq": seq, "body": body}))
                reply = await me.receive()
                assert reply["seq"] == seq

            async def w2call(seq: int) -> None:
                reply = await me.call(responder, {"seq": seq, "body": body})
                assert reply["seq"] == seq

            async def w3a(seq: int) -> None:
                assert await b.rpc.call("a@127.0.0.1", "add", seq, 1) == seq + 1

            async def raw_w2(seq: int) -> None:
                from .raw_trio import _receive_one, encode_frame

                assert raw is not None
                stream, reader = raw
                await stream.send_all(encode_frame({"seq": seq, "body": body}))
                reply = await _receive_one(stream, reader)
                assert reply["seq"] == seq

            async def bulk(seq: int) -> None:
                await b.send(bulk_pid, bulk_data)
                assert await me.receive() == BULK_SIZE

            if "bulk" in workloads:
                await b.send(bulk_pid, me.pid)
            steps = {"w2": w2, "w2call": w2call, "w3a": w3a, "raw": raw_w2, "bulk": bulk}
            for name in workloads:
                cpus, p50s = [], []
                for _ in range(runs):
                    cpu, p50 = await _measure(steps[name], count)
                    cpus.append(cpu)
                    p50s.append(p50)
                results[name] = {
                    "cpu_us": statistics.median(cpus),
                    "cpu_us_runs": [round(c, 1) for c in cpus],
                    "wall_p50_us": statistics.median(p50s),
                }
                if profile is not None:
                    profiler = cProfile.Profile()
                    profiler.enable()
                    await _measure(steps[name], count)
                    profiler.disable()
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(45)
                    Path(f"{profile}.{name}.txt").write_text(out.getvalue())  # noqa: ASYNC240
        if raw is not None:
            # The raw server sees the end of its stream and closes its side.
            await raw[0].aclose()
            await anyio.sleep(0.05)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_cpu")
    parser.add_argument("--count", type=int, default=3000, help="round trips per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--profile", default=None, help="write cProfile stats to PATH.<w>.txt")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    for name in workloads:
        if name not in WORKLOADS + EXTRA_WORKLOADS:
            choices = ", ".join(WORKLOADS + EXTRA_WORKLOADS)
            parser.error(f"unknown workload {name!r}; choose from {choices}")
    if "raw" in workloads and args.backend != "trio":
        parser.error("the raw workload is raw trio: run it with --backend trio")
    results = anyio.run(run, workloads, args.count, args.runs, args.profile, backend=args.backend)
    w2 = results.get("w2", {}).get("cpu_us")
    for name, result in results.items():
        ratio = f"  ({result['cpu_us'] / w2:.2f}x w2)" if w2 else ""
        print(
            f"{name:>7}: {result['cpu_us']:7.1f} µs CPU per round trip{ratio}, "
            f"wall p50 {result['wall_p50_us']:.1f} µs  runs {result['cpu_us_runs']}"
        )
    print("RESULT " + json.dumps({"backend": args.backend, **results}, sort_keys=True))


if __name__ == "__main__":
    main()
