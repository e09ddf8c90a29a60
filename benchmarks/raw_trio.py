"""The baseline: trio streams + cbor2, no library in between.

As ``raw_trio`` in ``reference/performance-anchors.md``: each frame is a
4-byte big-endian length and a CBOR payload, written with ONE ``send_all``;
the receiver reads with ``receive_some`` and splits frames itself.

Usage (the orchestrator ``benchmarks.run`` starts these)::

    python -m benchmarks.raw_trio server PORT          # prints READY <port>
    python -m benchmarks.raw_trio client PORT w1 --duration 2.5
    python -m benchmarks.raw_trio client PORT w2 --count 5000 --warmup 300

The first frame a client sends names the workload (``"w1"``, ``"w2"`` or
``"w3"``). W1: the server counts ``{"seq", "body"}`` frames until a
``"done"`` frame and replies with the count and the time from first to last
message. W2: the server decodes every frame and sends it back, re-encoded.
W3 (the RPC baseline): the server answers ``[seq, a, b]`` with
``[seq, a + b]``; W3a makes the calls one at a time, W3b from 64 tasks that
share the stream under a ``trio.Lock`` held for each request and its reply
(as ``reference/performance-anchors.md`` measured it). Bulk: the client
sends CBOR byte strings of 16 MiB (the length prefix and the payload in two
``send_all`` calls, so the payload is not copied to join them); the server
collects each frame in a ``bytearray`` from reads of up to 1 MiB, decodes
it and answers with its length.
"""

from __future__ import annotations

import argparse
import functools
import struct
import time
from typing import Any

import anyio
import cbor2
import trio

from ._common import (
    BODY,
    BULK_SIZE,
    HOST,
    bulk_result,
    emit_ready,
    emit_result,
    latency_summary,
    w1_result,
)

__all__ = ["W3B_IN_FLIGHT", "FrameReader", "encode_frame", "main", "run_calls"]

_HEADER = struct.Struct(">I")
_RECEIVE_SIZE = 65536
#: W3b: calls outstanding at once.
W3B_IN_FLIGHT = 64


def encode_frame(message: Any) -> bytes:
    """One frame: length prefix + CBOR payload, ready for a single ``send_all``."""
    payload: bytes = cbor2.dumps(message)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Splits received bytes into decoded CBOR messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return every message it completes, in order."""
        buf = self._buf + data if self._buf else data
        out: list[Any] = []
        pos = 0
        end = len(buf)
        unpack = _HEADER.unpack_from
        loads = cbor2.loads
        while end - pos >= 4:
            (size,) = unpack(buf, pos)
            stop = pos + 4 + size
            if stop > end:
                break
            out.append(loads(buf[pos + 4 : stop]))
            pos = stop
        self._buf = buf[pos:]
        return out


class BulkReader:
    """:class:`FrameReader` for big frames: bytes collect in a bytearray
    (appending is amortised linear, where ``bytes + bytes`` is quadratic)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            stop = pos + 4 + size
            if stop > len(buf):
                break
            with memoryview(buf) as view:
                out.append(cbor2.loads(view[pos + 4 : stop]))
            pos = stop
        if pos:
            del buf[:pos]
        return out


_BULK_RECEIVE_SIZE = 1024 * 1024


async def _serve_bulk(stream: trio.SocketStream, reader: FrameReader) -> None:
    bulk = BulkReader()
    data = reader._buf  # what came after the mode frame
    while True:
        for message in bulk.feed(data):
            await stream.send_all(encode_frame(len(message)))
        data = await stream.receive_some(_BULK_RECEIVE_SIZE)
        if not data:
            return


async def _receive_one(stream: trio.SocketStream, reader: FrameReader) -> Any:
    while True:
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            raise EOFError("the peer closed the connection")
        messages = reader.feed(data)
        if messages:
            if len(messages) != 1:
                raise RuntimeError(f"expected one reply, got {len(messages)}")
            return messages[0]


# ------------------------------------------------------------------ server


async def _handle(stream: trio.SocketStream) -> None:
    reader = FrameReader()
    mode: str | None = None
    count = 0
    t_first = t_last = 0.0
    cpu_first = 0.0
    async with stream:
        while True:
            data = await stream.receive_some(_RECEIVE_SIZE)
            if not data:
                return
            for message in reader.feed(data):
                if mode is None:
                    mode = str(message)
                    if mode == "bulk":
                        await _serve_bulk(stream, reader)
                        return
                elif mode == "w2":
                    await stream.send_all(encode_frame(message))
                elif mode == "w3":
                    seq, a, b = message
                    await stream.send_all(encode_frame([seq, a + b]))
                elif message == "done":
                    await stream.send_all(
                        encode_frame(
                            {
                                "count": count,
                                "elapsed": t_last - t_first,
                                "cpu": time.process_time() - cpu_first,
                            }
                        )
                    )
                else:
                    if count == 0:
                        t_first = time.perf_counter()
                        cpu_first = time.process_time()
                    count += 1
            if count:
                t_last = time.perf_counter()


async def serve(port: int, timeout: float) -> None:
    """Serve one client connection, then exit."""
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:

            async def handle_then_stop(stream: trio.SocketStream) -> None:
                try:
                    await _handle(stream)
                finally:
                    nursery.cancel_scope.cancel()

            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handle_then_stop, port, host=HOST)
            )
            emit_ready(int(listeners[0].socket.getsockname()[1]))


# ------------------------------------------------------------------ client


async def client_w1(port: int, duration: float) -> dict[str, Any]:
    """Send W1 messages for ``duration`` seconds; return both sides' view."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(encode_frame("w1"))
        body = BODY
        seq = 0
        cpu0 = time.process_time()
        start = time.perf_counter()
        deadline = start + duration
        while True:
            payload: bytes = cbor2.dumps({"seq": seq, "body": body})
            await stream.send_all(_HEADER.pack(len(payload)) + payload)
            seq += 1
            if not seq & 255 and time.perf_counter() >= deadline:
                break
        send_elapsed = time.perf_counter() - start
        send_cpu = time.process_time() - cpu0
        await stream.send_all(encode_frame("done"))
        reply = await _receive_one(stream, FrameReader())
    return w1_result(seq, reply, send_elapsed, send_cpu)


async def client_w2(port: int, count: int, warmup: int) -> dict[str, Any]:
    """``warmup`` + ``count`` sequential round trips; return latency stats."""
    stream = await trio.open_tcp_stream(HOST, port)
    samples: list[int] = []
    async with stream:
        await stream.send_all(encode_frame("w2"))
        reader = FrameReader()
        body = BODY
        clock = time.perf_counter_ns
        for seq in range(warmup + count):
            t0 = clock()
            await stream.send_all(encode_frame({"seq": seq, "body": body}))
            reply = await _receive_one(stream, reader)
            t1 = clock()
            if reply["seq"] != seq:
                raise RuntimeError(f"echo out of order: sent {seq}, got {reply['seq']}")
            if seq >= warmup:
                samples.append(t1 - t0)
    return {"workload": "w2", **latency_summary(samples)}


async def client_bulk(port: int, count: int, warmup: int) -> dict[str, Any]:
    """Send ``warmup`` + ``count`` 16 MiB byte strings, one at a time, each
    acknowledged by the server once decoded."""
    stream = await trio.open_tcp_stream(HOST, port)
    samples: list[int] = []
    data = b"\xab" * BULK_SIZE
    clock = time.perf_counter_ns
    async with stream:
        await stream.send_all(encode_frame("bulk"))
        reader = FrameReader()
        for index in range(warmup + count):
            t0 = clock()
            payload: bytes = cbor2.dumps(data)
            await stream.send_all(_HEADER.pack(len(payload)))
            await stream.send_all(payload)
            ack = await _receive_one(stream, reader)
            t1 = clock()
            if ack != BULK_SIZE:
                raise RuntimeError(f"the server received {ack!r} bytes, not {BULK_SIZE}")
            if index >= warmup:
                samples.append(t1 - t0)
    return bulk_result(BULK_SIZE, samples)


async def client_w3(port: int, count: int, warmup: int, in_flight: int) -> dict[str, Any]:
    """``add`` requests from ``in_flight`` tasks sharing one stream under a
    lock; calls per second over ``count`` calls after ``warmup``."""
    stream = await trio.open_tcp_stream(HOST, port)
    lock = trio.Lock()
    reader = FrameReader()
    samples: list[int] = []
    clock = time.perf_counter_ns

    async def add(seq: int) -> None:
        t0 = clock()
        async with lock:
            await stream.send_all(encode_frame([seq, seq, 1]))
            reply = await _receive_one(stream, reader)
        if reply != [seq, seq + 1]:
            raise RuntimeError(f"add({seq}, 1) answered {reply!r}")
        samples.append(clock() - t0)

    async with stream:
        await stream.send_all(encode_frame("w3"))
        for seq in range(warmup):
            await add(seq)
        samples.clear()
        return await run_calls(add, warmup, count, in_flight, samples)


async def run_calls(
    call: Any, first: int, count: int, in_flight: int, samples: list[int]
) -> dict[str, Any]:
    """Make ``count`` calls numbered from ``first`` with ``in_flight`` of them
    outstanding at a time; the W3 result record (shared with td_bench)."""
    numbers = iter(range(first, first + count))

    async def worker() -> None:
        for seq in numbers:
            await call(seq)

    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:  # trio or asyncio
        for _ in range(in_flight):
            tasks.start_soon(worker)
    elapsed = time.perf_counter() - start
    return {
        "workload": "w3a" if in_flight == 1 else "w3b",
        "calls": count,
        "in_flight": in_flight,
        "calls_per_s": count / elapsed,
        **latency_summary(samples),
    }


async def run_client(args: argparse.Namespace) -> dict[str, Any]:
    with trio.fail_after(args.timeout):
        if args.workload == "w1":
            return await client_w1(args.port, args.duration)
        if args.workload == "w3a":
            return await client_w3(args.port, args.count, args.warmup, 1)
        if args.workload == "w3b":
            return await client_w3(args.port, args.count, args.warmup, W3B_IN_FLIGHT)
        if args.workload == "bulk":
            return await client_bulk(args.port, args.count, args.warmup)
        return await client_w2(args.port, args.count, args.warmup)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw_trio")
    parser.add_argument("--timeout", type=float, default=60.0, help="hard limit, seconds")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("port", type=int, help="0 picks a free port")
    client = sub.add_parser("client")
    client.add_argument("port", type=int)
    client.add_argument("workload", choices=["w1", "w2", "w3a", "w3b", "bulk"])
    client.add_argument("--duration", type=float, default=2.5, help="W1 seconds")
    client.add_argument("--count", type=int, default=5000, help="W2 round trips")
    client.add_argument("--warmup", type=int, default=300, help="W2 unrecorded round trips")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "server":
        trio.run(serve, args.port, args.timeout)
    else:
        result = trio.run(run_client, args)
        emit_result({"system": "raw_trio", **result})


if __name__ == "__main__":
    main()
