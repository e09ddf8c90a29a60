"""RPC between two nodes in two OS processes, with a timeout that cancels
the remote task and a correlation id that follows the call.

Run it in two terminals::

    python examples/rpc.py server            # node a@127.0.0.1 on port 4370
    python examples/rpc.py client            # node b@127.0.0.1 calls it

or let one command start the server as a child process and run the client::

    python examples/rpc.py both

The server exports ``math.add`` (a plain function), ``inventory.reserve``
(an ``async`` function that logs with the caller's correlation id),
``reports.build`` (slow: the client's timeout cancels it on the server)
and ``fragile`` (raises). The server stops when the client's node leaves.
"""

from __future__ import annotations

import subprocess
import sys

import trio

import trio_distribute as td
from trio_distribute import log

COOKIE = "rpc-example"
SERVER = "a@127.0.0.1"
PORT = 4370


def add(a: int, b: int) -> int:
    return a + b


async def reserve(item: str, count: int) -> dict[str, object]:
    await trio.sleep(0.01)  # pretend to ask a database
    log.info("reserved", {"item": item, "count": count})
    return {"item": item, "count": count, "correlation_id": log.current_correlation_id()}


async def build_report(pages: int) -> str:
    try:
        await trio.sleep(pages)  # far longer than the client waits
    except trio.Cancelled:
        print(f"[server] reports.build({pages}) was cancelled by its caller", flush=True)
        raise
    return f"{pages} pages"


def fragile() -> None:
    raise RuntimeError("disk on fire")


async def server(port: int) -> None:
    log.set_backend("console")  # print log records with their correlation ids
    config = td.NodeConfig.local()
    async with (
        td.open_node(SERVER, cookie=COOKIE, port=port, config=config) as node,
        node.monitor_nodes() as events,
    ):
        node.rpc.export(add, name="math.add")
        node.rpc.export(reserve, name="inventory.reserve")
        node.rpc.export(build_report, name="reports.build")
        node.rpc.export(fragile)
        print(f"[server] {node.name} exports {node.rpc.exported()}", flush=True)
        async for event in events:
            if isinstance(event, td.NodeDown):
                break
        stats = node.rpc.statistics()
        print(f"[server] served {stats.calls_served} calls; done", flush=True)


async def client(port: int) -> None:
    config = td.NodeConfig.local()
    async with td.open_node("b@127.0.0.1", cookie=COOKIE, config=config) as node:
        with trio.fail_after(10):
            while True:
                try:
                    await node.connect(f"{SERVER}:{port}")
                    break
                except td.ConnectError:
                    await trio.sleep(0.1)  # the server may still be starting
        rpc = node.rpc
        print(f"[client] 2 + 3 = {await rpc.call(SERVER, 'math.add', 2, 3)}", flush=True)

        with log.correlation() as cid:
            reply = await rpc.call(SERVER, "inventory.reserve", "widget", count=3)
        same = reply["correlation_id"] == cid
        print(f"[client] reserved {reply['count']} {reply['item']}; same id: {same}", flush=True)

        try:
            await rpc.call(SERVER, "reports.build", 60, timeout=0.5)
        except td.RpcTimeoutError as exc:
            print(f"[client] {exc}", flush=True)
        with trio.fail_after(5):
            while rpc.statistics().cancel_acks < 1:
                await trio.sleep(0.01)
        print("[client] the server acknowledged the cancellation", flush=True)

        try:
            await rpc.call(SERVER, "fragile")
        except td.RemoteError as exc:
            where = [line.strip() for line in exc.remote_traceback.splitlines() if "File" in line]
            print(f"[client] remote {exc.type_name}: {exc.message} at {where[-1]}", flush=True)
        try:
            await rpc.call(SERVER, "os.system", "true")
        except td.BadRpcError as exc:
            print(f"[client] refused: {exc.reason}", flush=True)

        results = await rpc.multicall([SERVER, "nobody@127.0.0.1"], "math.add", 1, 1)
        print(f"[client] multicall: {[type(r).__name__ for r in results]}", flush=True)

        async def one(i: int) -> None:
            assert await rpc.call(SERVER, "math.add", i, i) == 2 * i

        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(one, i)
        print("[client] 64 concurrent calls answered; leaving", flush=True)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else PORT
    if mode == "server":
        trio.run(server, port)
    elif mode == "client":
        trio.run(client, port)
    elif mode == "both":
        child = subprocess.Popen([sys.executable, __file__, "server", str(port)])
        try:
            trio.run(client, port)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
        sys.exit(child.returncode)
    else:
        sys.exit(f"usage: {sys.argv[0]} server|client|both [port]")


if __name__ == "__main__":
    main()
