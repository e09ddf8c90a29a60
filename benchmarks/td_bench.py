"""The same workloads on trio_distribute: two nodes in two OS processes.

Usage (the orchestrator ``benchmarks.run`` starts these)::

    python -m benchmarks.td_bench server PORT          # node a; prints READY <port>
    python -m benchmarks.td_bench client PORT w1 --duration 2.5
    python -m benchmarks.td_bench client PORT w2 --count 5000 --warmup 300
    python -m benchmarks.td_bench client PORT ping --count 5000 --warmup 300
    python -m benchmarks.td_bench client PORT w2call --count 5000 --warmup 300
    python -m benchmarks.td_bench client PORT w2callpid --count 5000 --warmup 300

The server (node ``a@127.0.0.1``) spawns two named processes, ``sink`` and
``echo``, and exits when the client's node goes down. A client (node
``b@127.0.0.1``) finds them by name: it sends ``{"hello": its_pid}`` to
``("sink", "a@127.0.0.1")`` (or ``"echo"``) and the process answers with
``{"pid": its_own_pid}``; from then on every message goes to that pid.

* W1: the client sends ``{"seq": i, "body": b"x"*16}`` with
  ``await node.send(sink_pid, msg)`` in a tight loop, then ``"done"``; the
  sink replies with its count and the time from first to last message.
* W2: sequential round trips: ``node.send`` to the echo process, then
  ``await me.receive()`` for its reply (the same message, sent back).
* W2-ping: sequential ``await node.ping(peer)``, frame level, no processes.
* W2-call: sequential ``await me.call(("responder", a), msg)``: the W2 round
  trip through ``Process.call`` / ``Process.reply`` (the callee monitored
  for each call, the reply matched by ref), with the W2 message. W2-call-pid:
  the same calls to the responder's pid (asked for once), as W2 sends to a
  pid.
* Bulk: ``node.send`` of a 16 MiB ``bytes`` to the ``bulk`` process, which
  answers with its length once it has it; one message at a time.
* W3a: sequential ``await node.rpc.call(a, "add", i, 1)`` (``add`` is a
  plain function exported by the server). W3b: the same from 64 tasks, so
  64 calls are in flight on the one connection.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import anyio

import trio_distribute as td

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
from .raw_trio import W3B_IN_FLIGHT, run_calls

__all__ = ["main"]

COOKIE = "benchmark-4f9c1e7a2b6d8053c1e9a7f4b2d6c8e0"  # strong enough not to be warned about
SERVER_NODE = f"a@{HOST}"
CLIENT_NODE = f"b@{HOST}"
_SETUP_TIMEOUT = 10.0
#: Room for the bulk workload's 16 MiB payload plus its frame's head.
CONFIG = td.NodeConfig(max_message_size=32 * 1024 * 1024)
#: W1: how many times the client says "done", and how long it waits each time.
DONE_ATTEMPTS = 5
DONE_WAIT = 2.0


# ------------------------------------------------------------------ server


async def _wait_hello(proc: td.Process) -> td.Pid:
    """The pid in the next ``{"hello": pid}``; anything else (such as a
    repeated ``"done"``) is ignored."""
    while True:
        hello = await proc.receive()
        if isinstance(hello, dict) and isinstance(hello.get("hello"), td.Pid):
            pid: td.Pid = hello["hello"]
            return pid


async def sink(proc: td.Process, node: td.Node) -> None:
    """Count W1 messages; after ``"done"`` report to the sender."""
    while True:
        peer = await _wait_hello(proc)
        await node.send(peer, {"pid": proc.pid})
        count = 0
        t_first = t_last = 0.0
        cpu_first = 0.0
        clock = time.perf_counter
        receive = proc.receive
        while True:
            message = await receive()
            if message == "done":
                break
            if count == 0:
                t_first = clock()
                cpu_first = time.process_time()
            count += 1
            t_last = clock()
        await node.send(
            peer,
            {
                "count": count,
                "elapsed": t_last - t_first,
                "cpu": time.process_time() - cpu_first,
                "drops": dict(node.statistics().drops),
                "creation": node.creation,
            },
        )


async def echo(proc: td.Process, node: td.Node) -> None:
    """Send every message back to whoever said hello last."""
    while True:
        peer = await _wait_hello(proc)
        await node.send(peer, {"pid": proc.pid})
        while True:
            message = await proc.receive()
            if message == "done":
                break
            await node.send(peer, message)


async def bulk(proc: td.Process, node: td.Node) -> None:
    """Answer every bytes message with its length."""
    while True:
        peer = await _wait_hello(proc)
        await node.send(peer, {"pid": proc.pid})
        while True:
            message = await proc.receive()
            if message == "done":
                break
            await node.send(peer, len(message))


async def responder(proc: td.Process) -> None:
    """Answer every call with its request (the W2-call server); the request
    ``"pid"`` with this process's pid."""
    reply = proc.reply
    async for call in proc:
        if isinstance(call, td.Call):
            await reply(call, proc.pid if call.request == "pid" else call.request)


def add(a: int, b: int) -> int:
    """The W3 function."""
    return a + b


async def serve(port: int, timeout: float) -> None:
    """Run node a until the client's node has come and gone."""
    with anyio.fail_after(timeout):
        async with (
            td.open_node(SERVER_NODE, cookie=COOKIE, port=port, config=CONFIG) as node,
            node.monitor_nodes() as events,
        ):
            node.rpc.export(add)
            await node.spawn(sink, node, name="sink")
            await node.spawn(echo, node, name="echo")
            await node.spawn(responder, name="responder")
            await node.spawn(bulk, node, name="bulk")
            emit_ready(node.address[1])
            try:
                async for event in events:
                    if isinstance(event, td.NodeDown) and event.node == CLIENT_NODE:
                        break
            finally:
                stats = node.statistics()
                if stats.drops:
                    # Lands in the server log the orchestrator keeps and reports.
                    print(f"server drops={dict(stats.drops)}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ client


async def _hello(node: td.Node, me: td.Process, name: str) -> td.Pid:
    await node.send((name, SERVER_NODE), {"hello": me.pid})
    reply = await me.receive(timeout=_SETUP_TIMEOUT)
    pid = reply["pid"]
    if not isinstance(pid, td.Pid):
        raise RuntimeError(f"{name} answered {reply!r}, not its pid")
    return pid


async def client_w1(node: td.Node, duration: float) -> dict[str, Any]:
    """Send W1 messages to the sink for ``duration`` seconds."""
    async with node.open_process() as me:
        sink_pid = await _hello(node, me, "sink")
        send = node.send
        body = BODY
        seq = 0
        cpu0 = time.process_time()
        start = time.perf_counter()
        deadline = start + duration
        while True:
            await send(sink_pid, {"seq": seq, "body": body})
            seq += 1
            if not seq & 255 and time.perf_counter() >= deadline:
                break
        send_elapsed = time.perf_counter() - start
        send_cpu = time.process_time() - cpu0
        # The sink's mailbox is bounded and drops what does not fit, so the
        # "done" marker itself may be lost: say it again until it is heard.
        reply: Any = None
        for _ in range(DONE_ATTEMPTS):
            await send(sink_pid, "done")
            with anyio.move_on_after(DONE_WAIT):
                reply = await me.receive()
            if reply is not None:
                break
        else:
            raise RuntimeError(
                f"the sink did not answer {DONE_ATTEMPTS} 'done' markers after {seq} messages"
            )
    return {
        **w1_result(seq, reply, send_elapsed, send_cpu),
        "server_drops": reply["drops"],
        "server_creation": reply["creation"],
    }


async def client_w2(node: td.Node, count: int, warmup: int) -> dict[str, Any]:
    """Sequential round trips through the echo process."""
    samples: list[int] = []
    async with node.open_process() as me:
        echo_pid = await _hello(node, me, "echo")
        send = node.send
        receive = me.receive
        body = BODY
        clock = time.perf_counter_ns
        for seq in range(warmup + count):
            t0 = clock()
            await send(echo_pid, {"seq": seq, "body": body})
            reply = await receive()
            t1 = clock()
            if reply["seq"] != seq:
                raise RuntimeError(f"echo out of order: sent {seq}, got {reply['seq']}")
            if seq >= warmup:
                samples.append(t1 - t0)
        await send(echo_pid, "done")
    return {"workload": "w2", **latency_summary(samples)}


async def client_bulk(node: td.Node, count: int, warmup: int) -> dict[str, Any]:
    """16 MiB ``bytes`` messages, one at a time, each acknowledged."""
    samples: list[int] = []
    data = b"\xab" * BULK_SIZE
    async with node.open_process() as me:
        bulk_pid = await _hello(node, me, "bulk")
        clock = time.perf_counter_ns
        for index in range(warmup + count):
            t0 = clock()
            await node.send(bulk_pid, data)
            ack = await me.receive()
            t1 = clock()
            if ack != BULK_SIZE:
                raise RuntimeError(f"the bulk process received {ack!r} bytes, not {BULK_SIZE}")
            if index >= warmup:
                samples.append(t1 - t0)
        await node.send(bulk_pid, "done")
    return bulk_result(BULK_SIZE, samples)


async def client_w2call(
    node: td.Node, count: int, warmup: int, *, by_pid: bool = False
) -> dict[str, Any]:
    """Sequential ``Process.call`` round trips to the responder, by name (as
    Erlang's ``gen_server:call({responder, Node}, ...)``) or by its pid (as
    W2 sends)."""
    samples: list[int] = []
    dest: td.Pid | tuple[str, str] = ("responder", SERVER_NODE)
    async with node.open_process() as me:
        call = me.call
        if by_pid:
            dest = await call(dest, "pid")
        body = BODY
        clock = time.perf_counter_ns
        for seq in range(warmup + count):
            t0 = clock()
            reply = await call(dest, {"seq": seq, "body": body})
            t1 = clock()
            if reply["seq"] != seq:
                raise RuntimeError(f"call answered out of order: sent {seq}, got {reply['seq']}")
            if seq >= warmup:
                samples.append(t1 - t0)
    return {"workload": "w2callpid" if by_pid else "w2call", **latency_summary(samples)}


async def client_ping(node: td.Node, peer: str, count: int, warmup: int) -> dict[str, Any]:
    """Sequential ``node.ping`` round trips."""
    samples: list[int] = []
    reported: list[int] = []
    clock = time.perf_counter_ns
    for index in range(warmup + count):
        t0 = clock()
        rtt = await node.ping(peer)
        t1 = clock()
        if index >= warmup:
            samples.append(t1 - t0)
            reported.append(int(rtt * 1e9))
    summary = latency_summary(samples)
    reported_summary = latency_summary(reported)
    return {
        "workload": "ping",
        **summary,
        "reported_p50_us": reported_summary["p50_us"],
        "reported_p99_us": reported_summary["p99_us"],
    }


async def client_w3(node: td.Node, count: int, warmup: int, in_flight: int) -> dict[str, Any]:
    """``add`` RPCs, ``in_flight`` at a time; calls per second."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    rpc_call = node.rpc.call

    async def add_call(seq: int) -> None:
        t0 = clock()
        result = await rpc_call(SERVER_NODE, "add", seq, 1)
        if result != seq + 1:
            raise RuntimeError(f"add({seq}, 1) answered {result!r}")
        samples.append(clock() - t0)

    for seq in range(warmup):
        await add_call(seq)
    samples.clear()
    return await run_calls(add_call, warmup, count, in_flight, samples)


async def run_client(args: argparse.Namespace) -> dict[str, Any]:
    with anyio.fail_after(args.timeout):
        async with td.open_node(CLIENT_NODE, cookie=COOKIE, port=0, config=CONFIG) as node:
            peer = await node.connect(f"{SERVER_NODE}:{args.port}")
            if args.workload == "w1":
                result = await client_w1(node, args.duration)
            elif args.workload == "w2":
                result = await client_w2(node, args.count, args.warmup)
            elif args.workload == "bulk":
                result = await client_bulk(node, args.count, args.warmup)
            elif args.workload in ("w2call", "w2callpid"):
                by_pid = args.workload == "w2callpid"
                result = await client_w2call(node, args.count, args.warmup, by_pid=by_pid)
            elif args.workload in ("w3a", "w3b"):
                in_flight = 1 if args.workload == "w3a" else W3B_IN_FLIGHT
                result = await client_w3(node, args.count, args.warmup, in_flight)
            else:
                result = await client_ping(node, peer, args.count, args.warmup)
            stats = node.statistics()
            result["client_drops"] = dict(stats.drops)
            return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.td_bench")
    parser.add_argument("--timeout", type=float, default=60.0, help="hard limit, seconds")
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("port", type=int, help="0 picks a free port")
    client = sub.add_parser("client")
    client.add_argument("port", type=int)
    client.add_argument(
        "workload", choices=["w1", "w2", "ping", "w2call", "w2callpid", "w3a", "w3b", "bulk"]
    )
    client.add_argument("--duration", type=float, default=2.5, help="W1 seconds")
    client.add_argument("--count", type=int, default=5000, help="W2/ping/call round trips")
    client.add_argument("--warmup", type=int, default=300, help="W2/ping unrecorded round trips")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if args.role == "server":
        anyio.run(serve, args.port, args.timeout, backend=args.backend)
    else:
        result = anyio.run(run_client, args, backend=args.backend)
        system = "trio_distribute" if args.backend == "trio" else "td_asyncio"
        emit_result({"system": system, **result})


if __name__ == "__main__":
    main()
