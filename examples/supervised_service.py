"""A supervised key-value service across OS processes: a cluster singleton
with a pool of workers, that survives a worker crash and the SIGKILL of the
node it runs on.

Run the whole story (three server processes, and a client in this one)::

    python examples/supervised_service.py          # or: ... both [base_port]

or run the servers yourself, in separate terminals, and then the client::

    python examples/supervised_service.py node kv0 4400 0
    python examples/supervised_service.py node kv1 4401 4400
    python examples/supervised_service.py node kv2 4402 4400
    python examples/supervised_service.py client 4400 4401 4402

Every server node runs, under a supervisor, a *replica* (registered locally
as ``kv_replica``) and its part of the singleton ``kv``: on the elected
leader only, ``kv_server`` runs (registered globally as ``kv``, restarted by
a supervisor if it crashes) with the leader's term. It loads the data from
its node's replica and opens a pool of three workers (``kv_worker_1..3``,
its own supervisor, so the tree is singleton supervisor -> server -> pool
supervisor -> workers). Reads are answered by the server; a write goes to
the worker that owns the key (``pool.pick(key)``: per-key order), which
sends it, with the term, to every node's replica and replies. A replica
refuses writes of an older term than it has seen: the term is the fencing
token, so a deposed server cannot overwrite what its successor wrote.
Replication is asynchronous (sent, not acknowledged, before the reply): a
write acknowledged in the instant before a SIGKILL can be lost with it.

Requests are ``proc.call(dest, request)`` and answered with
``proc.reply(call, value)``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import trio

import trio_distribute as td

COOKIE = "supervised-service-example"
HOST = "127.0.0.1"
BASE_PORT = 4400
SHORTS = ("kv0", "kv1", "kv2")
WORKERS = 3


# ------------------------------------------------------------------ server


async def replica(proc: td.Process, node: td.Node) -> None:
    """This node's copy of the data; writes of a stale term are refused."""
    data: dict[str, Any] = {}
    term_seen = 0
    async for message in proc:
        if isinstance(message, td.Call):
            # ["snapshot"]: the data and the highest term seen.
            await proc.reply(message, [term_seen, data])
            continue
        _, term, key, value = message  # ["write", term, key, value]
        if term < term_seen:
            print(f"FENCED write of {key!r} from term {term} < {term_seen}", flush=True)
            continue
        term_seen = term
        data[key] = value


async def kv_worker(proc: td.Process, node: td.Node, term: int) -> None:
    """Owns the writes of the keys that hash to it: replicates, replies."""
    async for call in proc:
        if call == "crash":
            raise RuntimeError("asked to crash")
        _, key, value = call.request  # ["put", key, value]
        # Every server node this one is connected to (a node that went
        # down without being declared dead yet is not waited for).
        servers = set(node.membership.alive()) & {node.name, *node.nodes()}
        for member in sorted(servers):
            await node.send(("kv_replica", member), ["write", term, key, value])
        await proc.reply(call, "ok")


async def kv_server(proc: td.Process, term: int, node: td.Node) -> None:
    """The singleton: serves reads, hands writes to the key's worker."""
    term_seen, data = await proc.call("kv_replica", ["snapshot"])
    async with td.open_pool(node, "kv_worker", WORKERS, kv_worker, node, term) as pool:
        print(f"SERVING term {term} with {len(data)} keys (replica term {term_seen})", flush=True)
        async for call in proc:
            request = call.request
            if request[0] == "get":
                await proc.reply(call, data.get(request[1]))
            elif request[0] == "put":
                data[request[1]] = request[2]
                await node.send(pool.pick(request[1]), call)  # the worker replies
            elif request[0] == "crash_worker":
                slot = f"kv_worker_{request[1]}"
                worker = node.registry.whereis(slot)
                assert worker is not None
                await node.send(worker, "crash")
                await proc.reply(call, str(worker))
            elif request[0] == "workers":
                await proc.reply(call, [str(p) for p in pool.workers()])
            elif request[0] == "term":
                await proc.reply(call, term)


async def serve(short: str, port: int, seed_port: int | None) -> None:
    config = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=3))
    seeds = [f"{HOST}:{seed_port}"] if seed_port else []
    async with (
        td.open_node(
            f"{short}@{HOST}", cookie=COOKIE, port=port, config=config, seeds=seeds
        ) as node,
        td.open_supervisor(node) as sup,
    ):
        await sup.start_child(td.ChildSpec("replica", replica, (node,), name="kv_replica"))
        print(f"READY {node.name}", flush=True)
        async with td.open_singleton(node, "kv", kv_server, node):
            await trio.sleep_forever()


# ------------------------------------------------------------------ client


async def request(node: td.Node, proc: td.Process, message: list[Any]) -> Any:
    """Call the service wherever it runs, retrying while it moves."""
    with trio.fail_after(30):
        while True:
            pid = node.registry.whereis("kv")
            if pid is not None:
                try:
                    return await proc.call(pid, message, timeout=2.0)
                except (td.ProcessDownError, td.CallTimeoutError, td.NodeDownError):
                    pass  # it moved or its node went: ask again
            await trio.sleep(0.05)


async def client(ports: list[int], kill: Any = None) -> None:
    """Write, crash a worker, read; then (with ``kill``) SIGKILL the node
    the service runs on and read everything back from its successor."""
    config = td.NodeConfig(
        membership=td.MembershipConfig(enabled=False),
        election=td.ElectionConfig(enabled=False),
    )
    async with (
        td.open_node(f"client@{HOST}", cookie=COOKIE, config=config) as node,
        node.open_process() as me,
    ):
        for short, port in zip(SHORTS, ports, strict=True):
            await node.connect(f"{short}@{HOST}:{port}")
        term = await request(node, me, ["term"])
        home = node.registry.whereis("kv")
        assert home is not None
        print(f"[client] kv runs on {home.node} in term {term}", flush=True)
        for i in range(10):
            assert await request(node, me, ["put", f"k{i}", i]) == "ok"
        print("[client] wrote k0..k9", flush=True)

        workers = await request(node, me, ["workers"])
        crashed = await request(node, me, ["crash_worker", 2])
        with trio.fail_after(10):
            while (now := await request(node, me, ["workers"]))[1] in (crashed, "None"):
                await trio.sleep(0.05)
        assert now[0] == workers[0] and now[2] == workers[2]
        print(f"[client] worker 2 crashed and was restarted: {crashed} -> {now[1]}", flush=True)
        for i in range(10, 20):
            assert await request(node, me, ["put", f"k{i}", i]) == "ok"
        values = [await request(node, me, ["get", f"k{i}"]) for i in range(20)]
        assert values == list(range(20)), values
        print("[client] wrote k10..k19 after the crash; all 20 read back", flush=True)

        if kill is None:
            return
        kill(home.node.split("@")[0])
        started = time.monotonic()
        print(f"[client] SIGKILLed {home.node}, where kv ran", flush=True)
        with trio.fail_after(30):
            while (pid := node.registry.whereis("kv")) is None or pid.node == home.node:
                await trio.sleep(0.05)
        new_term = await request(node, me, ["term"])
        assert new_term > term, (new_term, term)
        values = [await request(node, me, ["get", f"k{i}"]) for i in range(20)]
        assert values == list(range(20)), values
        elapsed = time.monotonic() - started
        print(
            f"[client] kv moved to {pid.node} in term {new_term} ({elapsed:.2f}s after the kill);"
            " all 20 keys read back",
            flush=True,
        )
        assert await request(node, me, ["put", "after", "move"]) == "ok"
        assert await request(node, me, ["get", "after"]) == "move"
        print("[client] writes work on the new leader", flush=True)


# ------------------------------------------------------------ orchestration


class Server:
    """One server node as an OS process."""

    def __init__(self, short: str, port: int, seed_port: int | None) -> None:
        command = [sys.executable, __file__, "node", short, str(port), str(seed_port or 0)]
        self.short = short
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self) -> None:
        """Print what the server prints, tagged with its name."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            print(f"[{self.short}] {line.strip()}", flush=True)
            if line.startswith("READY"):
                self.ready.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self.ready.wait(timeout):
            raise TimeoutError(f"{self.short} did not start within {timeout}s")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def orchestrate(base_port: int) -> None:
    ports = [base_port + i for i in range(len(SHORTS))]
    servers = {
        short: Server(short, port, None if i == 0 else ports[0])
        for i, (short, port) in enumerate(zip(SHORTS, ports, strict=True))
    }
    try:
        for server in servers.values():
            server.wait_ready()
        print("[main] three server nodes are up", flush=True)
        trio.run(client, ports, lambda short: servers[short].kill())
        print("[main] done", flush=True)
    finally:
        for server in servers.values():
            server.kill()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    if mode == "node":
        short, port = sys.argv[2], int(sys.argv[3])
        seed_port = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "0" else None
        trio.run(serve, short, port, seed_port)
    elif mode == "client":
        trio.run(client, [int(p) for p in sys.argv[2:5]])
    elif mode == "both":
        orchestrate(int(sys.argv[2]) if len(sys.argv) > 2 else BASE_PORT)
    else:
        sys.exit(
            f"usage: {sys.argv[0]} [both [base_port] | node SHORT PORT SEED | client P0 P1 P2]"
        )


if __name__ == "__main__":
    main()
