"""Soak: a churning workload across OS processes, then every table back to baseline.

``python tests/soak/soak.py --duration 180`` (what ``nox -s soak`` runs)
starts ``--nodes`` worker nodes, each in its own OS process on loopback,
plus a control node in this process. Each worker spawns ``--rate``
short-lived processes a second; each of them

* monitors a long-lived process on another node and one on its own node
  (``Process.monitor``) and usually exits without demonitoring,
* sends a message to the remote long-lived process and waits for the echo,
* makes an RPC call to another node, and every fifth one an RPC call that
  times out (so the remote task is cancelled),
* every third one registers a global name, every one joins a group,
* every fourth one watches a brief process on another node with
  ``Node.monitor`` until it ends, every twentieth one pings a node,
* links to the remote long-lived process (which traps exits) and calls it
  (``Process.call``), every seventh one with a call that times out.

After ``--duration`` seconds the workload stops; once the short-lived
processes are gone, every table keyed by a process, a peer or a request
(monitors both ways, pending and served calls, cancels awaiting an
acknowledgement, pings, registry names, locks and requests, group
memberships, subscriptions, tasks) must equal its value before the
workload, on every node, and each worker's resident memory must have grown
by less than ``--max-rss-growth`` (10 %) between the end of the warm-up and
the end of the run. The script prints a table and exits 1 if anything is
off.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import trio_distribute as td  # noqa: E402

COOKIE = "soak-cookie-0123456789abcdef"
#: Short-lived processes a worker lets run at once; beyond it a spawn is
#: skipped (and counted) so an overloaded machine slows the soak down
#: rather than piling up processes.
MAX_ALIVE = 1000
#: Keys of ``tables()`` that are measurements, not tables.
INFO_KEYS = frozenset(
    {"rss_kb", "gc_objects", "running", "spawned", "skipped", "counts", "extra_names"}
)


#: The longest timeout of a call or RPC the workload makes (see Worker.body).
LONGEST_CALL_TIMEOUT = 5.0


def rss_kb() -> int:
    """Resident set size of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def count_tasks() -> int:
    """Live trio tasks of this process."""
    todo = [trio.lowlevel.current_root_task()]
    seen = 0
    while todo:
        task = todo.pop()
        if task is None:
            continue
        seen += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return seen


def tables(node: td.Node) -> dict[str, int]:
    """The size of every table of ``node`` keyed by a process, a peer or a
    request (read from the services' internals: this is a test)."""
    stats = node.statistics()
    monitors = node._monitors
    registry = node.registry
    groups = node.groups
    rpc = node.rpc
    transport = node.transport
    return {
        "processes": stats.processes,
        "monitors": stats.monitors,
        "monitors.watched_pids": len(monitors._watchers),
        "monitors.watches": sum(len(w) for w in monitors._watchers.values()),
        "monitors.targets": len(monitors._targets),
        "monitors.served": sum(len(refs) for refs in monitors._served_by_node.values()),
        "monitors.remote": len(monitors._remote),
        "monitors.remote_by_node": sum(len(refs) for refs in monitors._remote_by_node.values()),
        "mailbox_messages": sum(stats.mailbox_depths.values()),
        "links": stats.links,
        **{f"links.{key}": value for key, value in node._links.sizes().items()},
        "calls": stats.calls,
        **{f"calls.{key}": value for key, value in node._calls.sizes().items()},
        "rpc.in_flight": rpc.statistics().in_flight,
        "rpc.serving": rpc.statistics().serving,
        "rpc.awaiting_ack": len(rpc._awaiting_ack),
        "pings": len(node._pings),
        "registry.names": len(registry._names),
        "registry.owned": len(registry._owned),
        "registry.locks": len(registry._locks),
        "registry.pending": len(registry._pending),
        "registry.abandoned": len(registry._abandoned),
        "registry.local_busy": len(registry._local_busy),
        "groups.local": sum(len(pids) for pids in groups._local.values()),
        "groups.groups_of": len(groups._groups_of),
        "groups.remote": sum(
            len(pids) for by_group in groups._remote.values() for pids in by_group.values()
        ),
        "groups.remote_counts": sum(groups._remote_counts.values()),
        "groups.subscribers": sum(len(s) for s in groups._subscribers.values()),
        "node_subscribers": len(node._node_monitors._channels),
        "connections": len(transport.connections),
        "transport.dialing": len(transport._dialing),
        "transport.up_events": len(transport._up_events),
        "tasks": count_tasks(),
        "rss_kb": rss_kb(),
    }


def soak_config() -> td.NodeConfig:
    """Production timers, not ``NodeConfig.local()``: with 0.1 s probe
    timeouts a loaded machine gets live loopback nodes declared dead."""
    return td.NodeConfig()


# ---------------------------------------------------------------- worker


class Worker:
    """One worker node's workload (runs in its own OS process)."""

    def __init__(self, node: td.Node) -> None:
        self.node = node
        self.rng = random.Random(os.getpid())
        self.counts: Counter[str] = Counter()
        self.alive = 0
        self.running = False
        self.previous: td.Pid | None = None
        self.stop_at = 0.0
        self.peers: list[str] = []
        self.start_event = trio.Event()
        self.rate = 0.0

    # RPC exports -------------------------------------------------------

    def start(self, duration: float, rate: float, peers: list[str]) -> bool:
        self.stop_at = trio.current_time() + duration
        self.rate = rate
        self.peers = [peer for peer in peers if peer != self.node.name]
        self.running = True
        self.start_event.set()
        return True

    def stop(self) -> bool:
        self.stop_at = 0.0
        return True

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(tables(self.node))
        # Global names other than the long-lived servers', for diagnosis.
        out["extra_names"] = {
            name: str(pid)
            for name, pid in self.node.registry._names.items()
            if not name.startswith("srv.")
        }
        out["running"] = int(self.running)
        out["spawned"] = self.counts["spawned"]
        out["skipped"] = self.counts["skipped"]
        out["counts"] = dict(self.counts)
        return out

    def gc_objects(self) -> int:
        import gc

        gc.collect()
        return len(gc.get_objects())

    async def spawn_brief(self) -> td.Pid:
        return await self.node.spawn(brief, self.rng.uniform(0.005, 0.05))

    # the workload --------------------------------------------------------

    async def run(self) -> None:
        await self.start_event.wait()
        interval = 1.0 / self.rate
        next_at = trio.current_time()
        for i in itertools.count():
            now = trio.current_time()
            if now >= self.stop_at:
                break
            if self.alive >= MAX_ALIVE:
                self.counts["skipped"] += 1
            else:
                self.alive += 1
                self.counts["spawned"] += 1
                pid = await self.node.spawn(self.short_lived, i)
                self.previous = pid
            next_at += interval
            await trio.sleep(max(0.0, next_at - trio.current_time()))
        while self.alive:
            await trio.sleep(0.05)
        self.running = False

    async def watch_nodes(self) -> None:
        """Count node-down events by reason: on loopback there should be none."""
        async with self.node.monitor_nodes() as events:
            async for event in events:
                if isinstance(event, td.NodeDown):
                    self.counts[f"node_down.{event.reason}"] += 1
                    if self.running:  # not the controller's goodbye at the end
                        print(f"{self.node.name}: {event}", file=sys.stderr, flush=True)

    async def short_lived(self, proc: td.Process, i: int) -> None:
        try:
            await self.body(proc, i)
        except (
            td.NodeDownError,
            td.RpcTimeoutError,
            td.CallTimeoutError,
            td.ProcessDownError,
        ) as exc:
            # Only after a node-down (counted above) or on an overloaded machine.
            self.counts[f"failed.{type(exc).__name__}"] += 1
        except Exception as exc:  # counted: the report shows any surprise
            self.counts[f"error.{type(exc).__name__}"] += 1
        finally:
            self.alive -= 1
        if i % 10 == 0:
            # Some end with an exception (their monitors see kind "exception").
            self.counts["crashed"] += 1
            raise ValueError("a process that crashes")

    async def body(self, proc: td.Process, i: int) -> None:
        node = self.node
        rng = self.rng
        peer = rng.choice(self.peers)
        server = node.registry.whereis(f"srv.{peer}")
        local_server = node.registry.whereis(f"srv.{node.name}")
        if server is None or local_server is None:
            self.counts["no_server"] += 1
            return
        # Monitors this process never removes itself: its exit must.
        proc.monitor(server)
        proc.monitor(local_server)
        if self.previous is not None and self.previous != proc.pid:
            proc.monitor(self.previous)  # usually fires: a sibling that ends soon
        # A message round trip.
        await node.send(server, ["echo", proc.pid, i])
        try:
            await proc.receive(timeout=5, match=lambda m: m == ["echoed", i])
        except TimeoutError:
            self.counts["echo_timeout"] += 1
        # A link its end removes on both nodes (the server traps exits, so a
        # crashing process does not take it along), and calls, one of them
        # abandoned (its node must forget it).
        await proc.link(server)
        if await proc.call(server, ["call", i], timeout=5) != i:
            self.counts["call_mismatch"] += 1
        if i % 7 == 0:
            try:
                await proc.call(server, "ignore", timeout=0.01)
            except td.CallTimeoutError:
                self.counts["call_abandoned"] += 1
        # RPC, and one the caller abandons (the remote task is cancelled).
        await node.rpc.call(peer, "soak.echo", i, timeout=5)
        if i % 5 == 0:
            try:
                await node.rpc.call(peer, "soak.nap", 0.2, timeout=0.005)
            except td.RpcTimeoutError:
                self.counts["rpc_abandoned"] += 1
        if i % 3 == 0:
            try:
                await node.registry.register(f"p.{node.name}.{i}", proc.pid)
            except (td.NameTakenError, TimeoutError) as exc:
                self.counts[f"register.{type(exc).__name__}"] += 1
        await node.groups.join(f"g{i % 8}", proc.pid)
        if i % 4 == 0:
            brief_pid = await node.rpc.call(peer, "soak.spawn_brief", timeout=5)
            async with node.monitor(brief_pid) as down:
                with trio.move_on_after(5):
                    await down.receive()
        if i % 20 == 0:
            try:
                await node.ping(peer, timeout=5)
            except td.NodeDownError:
                self.counts["ping_failed"] += 1
        await trio.sleep(rng.uniform(0.0, 0.05))


async def brief(proc: td.Process, seconds: float) -> None:
    await trio.sleep(seconds)


async def echo_server(proc: td.Process, node: td.Node) -> None:
    proc.trap_exits = True  # linked to by every short-lived process
    async for message in proc:
        if isinstance(message, td.Call):
            if message.request != "ignore":
                await proc.reply(message, message.request[1])
        elif isinstance(message, list) and len(message) == 3 and message[0] == "echo":
            await node.send(message[1], ["echoed", message[2]])


async def nap(seconds: float) -> bool:
    await trio.sleep(seconds)
    return True


def echo(value: Any) -> Any:
    return value


async def worker_main(name: str) -> None:
    config = soak_config()
    async with td.open_node(name, cookie=COOKIE, config=config) as node:
        worker = Worker(node)
        node.rpc.export(worker.start, name="soak.start")
        node.rpc.export(worker.stop, name="soak.stop")
        node.rpc.export(worker.report, name="soak.report")
        node.rpc.export(worker.gc_objects, name="soak.gc_objects")
        node.rpc.export(worker.spawn_brief, name="soak.spawn_brief")
        node.rpc.export(nap, name="soak.nap")
        node.rpc.export(echo, name="soak.echo")
        server = await node.spawn(echo_server, node)
        await node.registry.register(f"srv.{node.name}", server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.watch_nodes)
            print("READY", node.address[0], node.address[1], flush=True)
            await worker.run()
            # Stay up until the controller is done with us (stdin closes).
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------ controller


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {
        key: (before[key], after.get(key))
        for key in before
        if key not in INFO_KEYS and before[key] != after.get(key)
    }


async def controller(
    args: argparse.Namespace, names: list[str], procs: list[subprocess.Popen[str]]
) -> int:
    addresses = []
    for proc, name in zip(procs, names, strict=True):
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        if not line.startswith("READY"):
            print(f"{name} did not start: {line!r}")
            return 1
        port = line.split()[2]
        addresses.append(f"{name}:{port}")
    config = soak_config()
    async with td.open_node("ctl@127.0.0.1", cookie=COOKIE, config=config) as ctl:
        return await control(ctl, args, names, addresses)


async def reports(ctl: td.Node, names: list[str]) -> dict[str, dict[str, Any]]:
    out = {name: await ctl.rpc.call(name, "soak.report", timeout=30) for name in names}
    out[ctl.name] = dict(tables(ctl))
    return out


async def settled(ctl: td.Node, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Reports once nothing is running and two reports a second apart agree."""
    deadline = trio.current_time() + timeout
    last = await reports(ctl, names)
    while trio.current_time() < deadline:
        await trio.sleep(1.0)
        now = await reports(ctl, names)
        quiet = all(not now[n].get("running") for n in names)
        if quiet and all(not changed(last[n], now[n]) for n in now):
            return now
        last = now
    return last


async def control(
    ctl: td.Node, args: argparse.Namespace, names: list[str], addresses: list[str]
) -> int:
    with trio.fail_after(60):
        for address in addresses:
            await ctl.connect(address)
        expected = set(names) | {ctl.name}
        while True:
            views = [await ctl.rpc.call(n, "soak.report", timeout=10) for n in names]
            full = all(v["connections"] == len(expected) - 1 for v in views)
            named = all(v["registry.names"] == len(names) for v in views)
            if full and named:
                break
            await trio.sleep(0.2)
    before = await settled(ctl, names, 30)
    started = time.monotonic()
    for name in names:
        await ctl.rpc.call(name, "soak.start", args.duration, args.rate, names, timeout=10)
    # Bounded caches (encoded and decoded pids, frame heads: 4,096 entries
    # each) take about 100 s to fill at 90 spawns/s: the RSS baseline is
    # taken half-way, so the check sees the trend rather than the fill.
    warmup = min(args.duration / 2, 90.0)
    await trio.sleep(warmup)
    warm = await reports(ctl, names)
    samples: list[tuple[float, dict[str, int]]] = []
    while time.monotonic() - started < args.duration:
        await trio.sleep(min(15.0, max(0.1, args.duration - (time.monotonic() - started))))
        now = await reports(ctl, names)
        samples.append((time.monotonic() - started, {n: now[n]["rss_kb"] for n in names}))
        print(
            f"t={samples[-1][0]:6.0f}s "
            + " ".join(
                f"{n.split('@')[0]}: rss={now[n]['rss_kb'] / 1024:.1f}MB "
                f"mon={now[n]['monitors']} procs={now[n]['processes']} "
                f"spawned={now[n]['spawned']}"
                for n in names
            ),
            flush=True,
        )
    for name in names:
        await ctl.rpc.call(name, "soak.stop", timeout=10)
    # A node keeps one timer task while a call's deadline is pending (it
    # ends once the last one has passed): wait out the workload's longest
    # call timeout, so the task count is compared after its timers are due.
    await trio.sleep(LONGEST_CALL_TIMEOUT + 1.0)
    after = await settled(ctl, names, args.settle)
    return verdict(args, names, before, warm, after)


def verdict(
    args: argparse.Namespace,
    names: list[str],
    before: dict[str, dict[str, Any]],
    warm: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
) -> int:
    failures = []
    print(f"\nsoak: {args.nodes} worker nodes, {args.rate}/s each, {args.duration:.0f}s")
    keys = [k for k in before[names[0]] if k not in INFO_KEYS]
    header = f"{'table':26}" + "".join(f"{n.split('@')[0]:>16}" for n in before)
    print(header)
    for key in keys:
        cells = []
        for node in before:
            b, a = before[node].get(key), after[node].get(key)
            cells.append(f"{b}->{a}" if b != a else f"{b}")
            if b != a:
                failures.append(f"{node}: {key} {b} -> {a}")
        print(f"{key:26}" + "".join(f"{c:>16}" for c in cells))
    for name in names:
        start_kb, warm_kb, end_kb = (r[name]["rss_kb"] for r in (before, warm, after))
        growth = (end_kb - warm_kb) / warm_kb
        print(
            f"{name}: rss {start_kb / 1024:.1f} MB before, {warm_kb / 1024:.1f} MB after "
            f"warm-up, {end_kb / 1024:.1f} MB at the end ({growth:+.1%} since warm-up, "
            f"{(end_kb - start_kb) / start_kb:+.1%} since start); "
            f"spawned {after[name]['spawned']}, skipped {after[name]['skipped']}"
        )
        print(f"  counts: {json.dumps(after[name]['counts'], sort_keys=True)}")
        if after[name]["extra_names"]:
            print(f"  global names left: {after[name]['extra_names']}")
        if growth >= args.max_rss_growth:
            failures.append(f"{name}: rss grew {growth:.1%} (limit {args.max_rss_growth:.0%})")
        if after[name]["spawned"] < 0.5 * args.rate * args.duration:
            failures.append(f"{name}: spawned only {after[name]['spawned']}: the workload stalled")
        errors = {k: v for k, v in after[name]["counts"].items() if k.startswith("error.")}
        if errors:
            failures.append(f"{name}: unexpected errors {errors}")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK: every table is back to its baseline")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of workload")
    parser.add_argument("--rate", type=float, default=90.0, help="spawns per second per node")
    parser.add_argument("--nodes", type=int, default=3, help="worker OS processes")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait for calm")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        trio.run(worker_main, args.worker)
        return
    names = [f"w{i}@127.0.0.1" for i in range(args.nodes)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        status = trio.run(controller, args, names, procs)
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    sys.exit(status)


if __name__ == "__main__":
    main()
