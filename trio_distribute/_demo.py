"""``python -m trio_distribute demo``: a narrated local cluster.

Each step prints what happens and checks that it really did, so the demo
fails loudly instead of telling a story that is not true.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import trio

from . import log
from .cluster.membership import MemberStatus
from .config import NodeConfig
from .election.raft_lite import Leader
from .errors import AuthenticationError, RpcTimeoutError
from .messaging import Process
from .monitor import NodeDown
from .node import Node, crash, open_node
from .remote_call import Ok
from .testing import start_node

COOKIE = "demo-cookie"


def _say(step: str, text: str) -> None:
    print(f"[{step:>7}] {text}", flush=True)


async def run(count: int = 3) -> None:
    """Start ``count`` nodes, connect, ping, run processes that message and
    monitor each other; one more node joins and stops, and the others see
    it go down."""
    config = NodeConfig.local()
    names = [f"{chr(ord('a') + i)}@127.0.0.1" for i in range(count + 1)]
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            nodes: list[Node] = []
            for name in names[:-1]:
                node = await stack.enter_async_context(
                    open_node(name, cookie=COOKIE, config=config)
                )
                nodes.append(node)
                _say("start", f"{node.name} listening on port {node.address[1]}")

            _say("auth", "an intruder with the wrong cookie tries to connect to a ...")
            async with open_node("intruder@127.0.0.1", cookie="guess", config=config) as bad:
                try:
                    await bad.connect(f"{nodes[0].name}:{nodes[0].address[1]}")
                except AuthenticationError as exc:
                    _say("auth", f"  rejected: {exc}")
                else:
                    raise AssertionError("a node with the wrong cookie was let in")
            _say("auth", f"  {nodes[0].name} counted it: {dict(nodes[0].statistics().drops)}")

            for i, node in enumerate(nodes):
                for other in nodes[i + 1 :]:
                    peer = await node.connect(f"{other.name}:{other.address[1]}")
                    _say("connect", f"{node.name} <-> {peer}: cookie proven both ways")
            for node in nodes:
                _say("nodes", f"{node.name} sees {', '.join(node.nodes())}")

            for node in nodes:
                for peer in node.nodes():
                    rtt = await node.ping(peer)
                    _say("ping", f"{node.name} -> {peer}: {rtt * 1e6:.0f} us")

            await _processes_demo(nodes)
            await _registry_and_groups_demo(nodes)
            await _rpc_demo(nodes)

            # The last node joins, is watched, and then leaves.
            watchers = [await stack.enter_async_context(n.monitor_nodes()) for n in nodes]
            async with open_node(names[-1], cookie=COOKIE, config=config) as last:
                _say("start", f"{last.name} listening on port {last.address[1]}")
                for node in nodes:
                    await last.connect(f"{node.name}:{node.address[1]}")
                _say("connect", f"{last.name} connected to {', '.join(last.nodes())}")
                _say("stop", f"stopping {last.name} ...")
            for node, events in zip(nodes, watchers, strict=True):
                while True:
                    event = await events.receive()
                    if isinstance(event, NodeDown) and event.node == names[-1]:
                        break
                _say("down", f"{node.name} saw {event.node} go down (reason: {event.reason})")
                assert last.name not in node.nodes()
            _say("done", "the cluster carries on: " + ", ".join(n.name for n in nodes))
    with trio.fail_after(60):
        await _membership_and_election_demo(config)


async def _worker(proc: Process, node: Node) -> None:
    """Answer {"from": pid, "n": int} with n * n; crash on "crash"."""
    async for message in proc:
        if message == "crash":
            raise RuntimeError("told to crash")
        await node.send(message["from"], {"square": message["n"] ** 2, "by": str(proc.pid)})


async def _processes_demo(nodes: list[Node]) -> None:
    first, second = nodes[0], nodes[1]
    worker = await second.spawn(_worker, second, name="squarer")
    _say("spawn", f"{second.name} spawned process {worker} registered as 'squarer'")
    async with first.open_process() as me:
        for n in range(1, 4):
            await first.send(("squarer", second.name), {"from": me.pid, "n": n})
            reply: Any = await me.receive(timeout=5)
            _say(
                "message", f"{me.pid} asked for {n}^2 and got {reply['square']} from {reply['by']}"
            )
        ref = me.monitor(worker)
        _say("monitor", f"{me.pid} monitors {worker}; now telling it to crash ...")
        await first.send(worker, "crash")
        down = await me.receive(timeout=5)
        assert down.ref == ref and down.reason.kind == "exception"
        _say("monitor", f"ProcessDown for {down.pid}: {down.reason}")
    assert second.whereis("squarer") is None
    _say(
        "monitor",
        f"{second.name} is still running: ping {await first.ping(second.name) * 1e6:.0f} us",
    )


async def _member(proc: Process, label: str, heard: list[str]) -> None:
    async for message in proc:
        heard.append(f"{label} heard {message!r}")


async def _registry_and_groups_demo(nodes: list[Node]) -> None:
    first, second = nodes[0], nodes[1]
    service = await second.spawn(_worker, second)
    await second.registry.register("squares", service)
    _say("global", f"{second.name} registered {service} globally as 'squares'")
    for node in nodes:
        while node.registry.whereis("squares") != service:
            await trio.sleep(0.01)
        _say("global", f"{node.name}: whereis('squares') -> {node.registry.whereis('squares')}")
    async with first.open_process() as me:
        await first.send_global("squares", {"from": me.pid, "n": 12})
        reply: Any = await me.receive(timeout=5)
        _say("global", f"{first.name} called 'squares' by name: 12^2 = {reply['square']}")

    heard: list[str] = []
    for node in nodes:
        pid = await node.spawn(_member, node.name, heard)
        await node.groups.join("everyone", pid)
    while any(len(node.groups.members("everyone")) < len(nodes) for node in nodes):
        await trio.sleep(0.01)
    _say(
        "group",
        f"'everyone' has {len(first.groups.members('everyone'))} members on {len(nodes)} nodes",
    )
    sent = await first.groups.broadcast("everyone", "hello, everyone")
    while len(heard) < sent:
        await trio.sleep(0.01)
    for line in sorted(heard):
        _say("group", line)


async def _rpc_demo(nodes: list[Node]) -> None:
    first, second = nodes[0], nodes[1]
    cancelled = trio.Event()

    def multiply(a: int, b: int) -> int:
        return a * b

    async def lookup(key: str) -> str:
        await trio.sleep(0.01)
        return f"{key} (handled under correlation id {log.current_correlation_id()})"

    async def slow_report() -> None:
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            cancelled.set()
            raise

    second.rpc.export(multiply, name="math.multiply")
    second.rpc.export(lookup)
    second.rpc.export(slow_report, name="reports.slow")
    product = await first.rpc.call(second.name, "math.multiply", 6, 7)
    _say("rpc", f"{first.name} called math.multiply(6, 7) on {second.name}: {product}")
    with log.correlation() as cid:
        _say("rpc", f"calling lookup under correlation id {cid} ...")
        _say("rpc", f"  {await first.rpc.call(second.name, 'lookup', 'user:42')}")
    try:
        await first.rpc.call(second.name, "reports.slow", timeout=0.3)
    except RpcTimeoutError as exc:
        _say("rpc", f"{exc}")
    with trio.fail_after(5):
        await cancelled.wait()
        while first.rpc.statistics().cancel_acks < 1:
            await trio.sleep(0.01)
    _say("rpc", f"  ... and {second.name} cancelled the remote task and acknowledged it")
    results = await first.rpc.multicall([n.name for n in nodes], "math.multiply", 3, 3)
    shown = ", ".join(
        f"{n.name}: "
        + (f"Ok({r.value})" if isinstance(r, Ok) else f"Err({type(r.error).__name__})")
        for n, r in zip(nodes, results, strict=True)
    )
    _say("rpc", f"multicall of math.multiply(3, 3), exported on {second.name} only -> {shown}")


def _table(node: Node) -> None:
    _say("members", f"as {node.name} sees it:")
    leader = node.election.leader
    for name, status, incarnation in node.membership.members_with_status():
        health = node.health.node(name)
        rtt = "-" if health.last_rtt is None else f"{health.last_rtt * 1e6:.0f} us"
        mark = "  <- leader" if isinstance(leader, Leader) and leader.name == name else ""
        _say(
            "members",
            f"  {name:<16} {status.value:<8} incarnation {incarnation:<3} rtt {rtt}{mark}",
        )


async def _wait_for(condition: Callable[[], bool]) -> None:
    # Replicas change on datagrams and frames, with no event to wait on.
    while not condition():
        await trio.sleep(0.01)


async def _membership_and_election_demo(config: NodeConfig) -> None:
    """A fresh cluster of three members: SWIM convergence, a leader, the
    leader killed, declared dead, and replaced."""
    names = [f"m{i}@127.0.0.1" for i in range(3)]
    async with anyio.create_task_group() as nursery:
        first = await start_node(nursery, names[0], cookie=COOKIE, config=config)
        seed = [f"127.0.0.1:{first.address[1]}"]
        nodes = [first]
        for name in names[1:]:
            nodes.append(await start_node(nursery, name, cookie=COOKIE, config=config, seeds=seed))
        _say("swim", f"started {', '.join(names)}; m1 and m2 know only m0's address")
        await _wait_for(lambda: all(len(n.membership.alive()) == 3 for n in nodes))
        _say("swim", "membership converged: everyone sees 3 alive members (and connects to them)")
        leader = await first.election.wait_for_leader(timeout=10)
        await _wait_for(lambda: all(n.election.leader == leader for n in nodes))
        _say("elect", f"{leader.name} elected in term {leader.term}; all three agree")
        await _wait_for(lambda: all(first.health.node(n).last_rtt for n in names[1:]))
        _table(first)

        victim = next(n for n in nodes if n.name == leader.name)
        survivors = [n for n in nodes if n is not victim]
        _say("kill", f"killing {victim.name} (the leader) without a goodbye ...")
        killed_at = trio.current_time()
        crash(victim)

        def replaced() -> bool:
            current = survivors[0].election.leader
            return (
                isinstance(current, Leader)
                and current.name != leader.name
                and all(n.election.leader == current for n in survivors)
            )

        await _wait_for(replaced)
        new = survivors[0].election.leader
        assert isinstance(new, Leader) and new.term > leader.term
        bound = 3 * config.election.election_timeout
        _say(
            "elect",
            f"{new.name} elected in term {new.term},"
            f" {trio.current_time() - killed_at:.2f}s after the kill (bound 3E = {bound:.2f}s)",
        )
        await _wait_for(
            lambda: all(
                n.membership.member(victim.name).status is MemberStatus.DEAD  # type: ignore[union-attr]
                for n in survivors
            )
        )
        dead_bound = config.membership.dead_bound(3)
        _say(
            "swim",
            f"{victim.name} declared dead by both survivors,"
            f" {trio.current_time() - killed_at:.2f}s after the kill (bound {dead_bound:.2f}s)",
        )
        health = survivors[0].health.cluster()
        _say(
            "health",
            f"alive {health.alive}, dead {health.dead}, quorum {health.has_quorum},"
            f" leader {health.leader}, term {health.term}",
        )
        _table(survivors[0])
        nursery.cancel_scope.cancel()
