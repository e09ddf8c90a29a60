"""The mesh under faults, in one process over real loopback sockets: socket
errors that must not end a node, a bounded leave whatever peers do, a mesh
that heals itself, a disconnect that sticks, honest node-down reasons and
handshake slots that cannot be hoarded. (Kernel-made faults: test_netns.py;
several OS processes: test_multiprocess.py.)
"""

from __future__ import annotations

import errno
import itertools
import os
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from hostile_peer import hostile_peer
from virtual import anyio_backend, fake_network, open_cluster, open_node, start_node

import trio_distribute as td
from trio_distribute._ids import Pid
from trio_distribute._network import NodeNetwork
from trio_distribute._proto.kinds import Kind
from trio_distribute.cluster.membership import MemberStatus
from trio_distribute.testing import FakeNetwork, partition, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "trio-distribute-test"
FAST = td.NodeConfig.local()


def target(node: td.Node) -> str:
    return f"{node.name}:{node.address[1]}"


def full_mesh(nodes: Sequence[td.Node]) -> bool:
    names = sorted(n.name for n in nodes)
    return all(sorted([*n.nodes(), n.name]) == names for n in nodes)


@asynccontextmanager
async def nodes_on(
    hosts: Sequence[str], config: td.NodeConfig = FAST
) -> AsyncIterator[list[td.Node]]:
    """One node per loopback address (``x@127.0.0.N``), unconnected."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_node(f"n{i}@{host}", cookie=COOKIE, config=config))
            for i, host in enumerate(hosts)
        ]


# ------------------------------------------------------------ socket errors


class _Refusing:
    """Wraps a socket method: the first ``times`` calls raise ``error()``."""

    def __init__(self, real: Callable[..., Any], error: Callable[[], BaseException], times: int):
        self.real, self.error, self.left, self.raised = real, error, times, 0

    async def __call__(self, *args: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            self.raised += 1
            raise self.error()
        return await self.real(*args)


@pytest.mark.parametrize(
    "error",
    [
        anyio.BrokenResourceError,  # what anyio raises for EPERM on trio
        lambda: PermissionError(errno.EPERM, "Operation not permitted"),
        lambda: OSError(errno.ENETUNREACH, "Network is unreachable"),
    ],
)
async def test_a_refused_membership_send_does_not_end_the_node(
    error: Callable[[], BaseException],
) -> None:
    with anyio.fail_after(20):
        async with open_cluster(2) as (a, b):
            socket_ = a.membership._socket
            assert socket_ is not None
            refusing = _Refusing(socket_.sendto, error, times=20)
            socket_.sendto = refusing  # type: ignore[method-assign,assignment]
            await wait_until(lambda: refusing.left == 0)
            # Still a working node: it answers, and its drops say why.
            await a.ping(b.name)
            assert a.statistics().drops["membership_send_failed"] >= 20
            await wait_until(lambda: b.name in a.membership.alive())


async def test_a_failing_membership_receive_does_not_end_the_node() -> None:
    with anyio.fail_after(20):
        async with open_cluster(2) as (a, b):
            socket_ = a.membership._socket
            assert socket_ is not None
            refusing = _Refusing(socket_.receive, anyio.BrokenResourceError, times=5)
            socket_.receive = refusing  # type: ignore[method-assign]
            await wait_until(lambda: refusing.left == 0)
            await a.ping(b.name)
            assert a.statistics().drops["membership_receive_failed"] >= 5


@pytest.mark.real_network  # kernel file descriptors and a raw socket
async def test_running_out_of_file_descriptors_on_accept_does_not_end_the_node() -> None:
    with anyio.fail_after(20):
        async with open_cluster(2, connect=False) as (a, b):
            # Connections the kernel completes while the process has no file
            # descriptor left: accept() fails with EMFILE until one is free.
            clients = [socket.create_connection(a.address) for _ in range(3)]
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))
            try:
                await wait_until(lambda: a.statistics().drops.get("accept_failed", 0) >= 1)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for client in clients:
                client.close()
            await b.connect(target(a))
            await b.ping(a.name)


class _BrokenStream:
    """A stream whose sends fail the way a reset socket's do."""

    def __init__(self, real: anyio.abc.ByteStream) -> None:
        self.real = real

    async def send(self, data: bytes) -> None:
        raise anyio.BrokenResourceError

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_failing_connection_write_closes_only_that_connection() -> None:
    with anyio.fail_after(20):
        async with open_cluster(3) as (a, b, c):
            async with a.monitor_nodes() as events:
                conn = a.transport.connections[b.name]
                conn.sock = None  # every write through the stream's send
                conn._send_now = None
                conn.stream = _BrokenStream(conn.stream)  # type: ignore[assignment]
                conn.write(a.transport.encode_frame([Kind.PING, 1]))
                event = await events.receive()
                assert event == td.NodeDown(b.name, "connection_closed")
            assert a.statistics().drops["socket_write_failed"] >= 1
            await a.ping(c.name)


# ----------------------------------------------------------- leaving bounded


#: How far past a bound a virtual-time test may see it end: the close
#: itself and the network's latency (on the order of a millisecond), far
#: below any bound it checks.
VIRTUAL_SLACK = 0.05


def mallory(network: FakeNetwork | None) -> NodeNetwork:
    """The hostile peer's view of the test's network."""
    assert network is not None, "a test on the fake network"
    return network.attach("mallory@127.0.0.1")


async def _fill(node: td.Node, peer: str) -> None:
    """Write to ``peer`` far more than the network buffers for a stream: a
    peer that never reads leaves the rest waiting in the connection, and
    nothing written after it gets through."""
    conn = node.transport.connections[peer]
    chunk = node.transport.encode_frame([Kind.PING, 0, b"x" * 60_000])
    for _ in range(200):  # ~12 MB
        conn.write(chunk)
    # The network took what its buffer holds (4 MiB); the writer waits for
    # room to send the rest, as over a socket whose buffers are full.
    await anyio.sleep(0.01)
    assert conn.queued_bytes > 4 * 1024 * 1024 and not conn.closed


@pytest.mark.parametrize("how", ["return", "cancel", "error"])
@pytest.mark.parametrize("shutdown_timeout", [0.2, 1.5])
async def test_leaving_is_bounded_by_shutdown_timeout_with_a_peer_that_never_reads(
    shutdown_timeout: float, how: str, fake_network: FakeNetwork
) -> None:
    config = td.NodeConfig.local(shutdown_timeout=shutdown_timeout)
    leave = anyio.Event()
    left = anyio.Event()
    errors: list[BaseException] = []
    scope = anyio.CancelScope()

    async def run(*, task_status: anyio.abc.TaskStatus[td.Node]) -> None:
        try:
            with scope:
                await serve(task_status)
        except RuntimeError as exc:
            errors.append(exc)
        finally:
            left.set()

    async def serve(task_status: anyio.abc.TaskStatus[td.Node]) -> None:
        async with open_node("a@127.0.0.1", cookie=COOKIE, config=config) as node:
            task_status.started(node)
            await leave.wait()
            if how == "error":
                raise RuntimeError("the user's own error")
            if how == "cancel":
                await anyio.sleep_forever()

    with anyio.fail_after(shutdown_timeout + 10):
        async with anyio.create_task_group() as tg:
            node = await tg.start(run)
            # Never reads: once the network's buffer for the stream is
            # full, nothing the node writes gets out.
            async with hostile_peer(node.address, network=mallory(fake_network)):
                await wait_until(lambda: bool(node.nodes()))
                await _fill(node, "mallory@127.0.0.1")
                started = anyio.current_time()
                leave.set()
                if how == "cancel":
                    scope.cancel()
                await left.wait()
                took = anyio.current_time() - started
    print(f"{how}, shutdown_timeout={shutdown_timeout}: left in {took:.3f}s (virtual)")
    assert [str(e) for e in errors] == (["the user's own error"] if how == "error" else [])
    # It waited for the goodbye flush (a peer that reads would have ended it
    # sooner) for exactly its bound: the time is virtual, so nothing but the
    # bound itself can end the wait early or let it run late.
    assert shutdown_timeout <= took <= shutdown_timeout + VIRTUAL_SLACK


async def test_cancelled_disconnect_is_bounded_with_a_peer_that_never_reads(
    fake_network: FakeNetwork,
) -> None:
    config = td.NodeConfig.local(shutdown_timeout=0.3)
    with anyio.fail_after(10):
        async with open_node("a@127.0.0.1", cookie=COOKIE, config=config) as node:
            async with hostile_peer(node.address, network=mallory(fake_network)):
                await wait_until(lambda: bool(node.nodes()))
                await _fill(node, "mallory@127.0.0.1")
                started = anyio.current_time()
                with anyio.move_on_after(0.05):
                    await node.disconnect("mallory@127.0.0.1")
                # The caller gave up; the goodbye's flush goes on, shielded,
                # for shutdown_timeout and no longer (virtual time: exact).
                await wait_until(lambda: not node.nodes(), poll=0.001)
                took = anyio.current_time() - started
                assert 0.3 <= took <= 0.3 + VIRTUAL_SLACK


# ---------------------------------------------------------- self-healing mesh


async def _heal_time(nodes: list[td.Node], hold: float | Callable[[], bool]) -> float:
    a, b, c, d = nodes
    async with partition([a, b], [c, d]):
        if callable(hold):
            await wait_until(hold, poll=0.05)
        else:
            await anyio.sleep(hold)
        assert a.nodes() == [b.name]
    healed_at = anyio.current_time()
    await wait_until(lambda: full_mesh(nodes), poll=0.01)
    return anyio.current_time() - healed_at


@pytest.mark.parametrize("hold", [0.05, 0.2, "dead"])
async def test_the_mesh_heals_itself_after_a_partition(hold: float | str) -> None:
    with anyio.fail_after(60):
        async with open_cluster(4) as nodes:
            a, _b, c, d = nodes
            await wait_until(lambda: all(len(n.membership.alive()) == 4 for n in nodes))

            def declared_dead() -> bool:
                member = a.membership.member(c.name)
                return member is not None and member.status is MemberStatus.DEAD

            with anyio.fail_after(20):  # the 2 s bound, with room for a loaded machine
                took = await _heal_time(nodes, declared_dead if hold == "dead" else float(hold))
            print(f"partition held {hold}: full mesh {took:.3f}s after the heal")
            # Everything that relies on the mesh works across the old cut.
            async with a.open_process() as proc:
                await d.ping(a.name)
                await a.registry.register("after-heal", proc.pid)
                await wait_until(lambda: d.registry.whereis("after-heal") == proc.pid)


async def test_redial_backoff_doubles_up_to_its_cap() -> None:
    config = td.NodeConfig.local()
    with anyio.fail_after(30):
        async with open_cluster(2, config=config) as (a, b):
            await wait_until(lambda: b.name in a.membership.alive())
            # b refuses every connection (as a node that is stopping does)
            # but stays a live member: a redials it, backing off.
            b.transport.stopping = True
            a.transport.connections[b.name].close("connection_closed")
            failures: list[float] = []
            with anyio.move_on_after(3):
                while True:
                    count = a.statistics().drops.get("mesh_redial_failed", 0)
                    if count > len(failures):
                        failures.extend([anyio.current_time()] * (count - len(failures)))
                    await anyio.sleep(0.005)
            gaps = [y - x for x, y in itertools.pairwise(failures)]
            low, high = config.membership.redial_min_interval, config.membership.redial_max_interval
            assert len(failures) >= 5
            # The waits grow from redial_min_interval (doubling) ...
            assert gaps[0] < gaps[3]
            # ... and stop at redial_max_interval (+ 25 % jitter + one poll).
            assert max(gaps) <= high * 1.25 + low + 0.1
            assert gaps[-1] >= high * 0.9
            b.transport.stopping = False
            await wait_until(lambda: a.nodes() == [b.name])


# ------------------------------------------------------------ sticky disconnect


async def test_a_disconnect_sticks_until_an_explicit_connect() -> None:
    with anyio.fail_after(30):
        async with open_cluster(3) as (a, b, c):
            await wait_until(lambda: full_mesh([a, b, c]))
            await a.disconnect(b.name)
            await anyio.sleep(1.0)  # many redial intervals
            assert a.nodes() == [c.name] and b.nodes() == [c.name]
            with pytest.raises(td.NodeDownError):
                await a.ping(b.name)
            with pytest.raises(td.NodeDownError):
                await b.ping(a.name)
            with pytest.raises(td.NodeDownError):
                await a.send(("anyone", b.name), "hello")
            # Membership still sees b alive: it is not the network.
            assert b.name in a.membership.alive()
            # A dial by address (as a membership join makes) is refused too.
            with pytest.raises(td.ConnectError):
                await a.transport.connect(f"127.0.0.1:{b.address[1]}")
            assert a.nodes() == [c.name]
            # The user's own connect, by address, ends it.
            await a.connect(f"127.0.0.1:{b.address[1]}")
            await a.ping(b.name)
            await wait_until(lambda: full_mesh([a, b, c]))
            assert not a.transport.disconnected and not b.transport.disconnected


async def test_a_disconnected_peer_that_restarts_is_connected_again() -> None:
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            a = await start_node(tg, "a@127.0.0.1")
            seeds = [target(a)]
            async with anyio.create_task_group() as b_group:
                b = await start_node(b_group, "b@127.0.0.1", seeds=seeds)
                await wait_until(lambda: a.nodes() == [b.name])
                await a.disconnect(b.name)
                b_group.cancel_scope.cancel()
            b2 = await start_node(tg, "b@127.0.0.1", seeds=seeds)
            await wait_until(lambda: a.nodes() == [b2.name])
            await a.ping(b2.name)
            tg.cancel_scope.cancel()


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_ping_raises_node_down_when_the_connection_drops_while_it_waits() -> None:
    with anyio.fail_after(10):
        async with open_node("a@127.0.0.1", cookie=COOKIE, config=FAST) as node:
            async with hostile_peer(node.address) as peer:  # never answers pings
                await wait_until(lambda: bool(node.nodes()))

                async def drop_soon() -> None:
                    await anyio.sleep(0.1)
                    await peer.aclose()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(drop_soon)
                    with pytest.raises(td.NodeDownError):
                        await node.ping("mallory@127.0.0.1", timeout=5)


# ------------------------------------------------------------ node-down reasons


async def test_a_member_swim_declares_dead_is_reported_as_member_dead() -> None:
    with anyio.fail_after(30):
        async with open_cluster(3) as (a, b, c):
            await wait_until(lambda: all(len(n.membership.alive()) == 3 for n in (a, b, c)))
            async with a.monitor_nodes() as a_events, c.monitor_nodes() as c_events:
                # c's membership falls silent (it sends no datagram and
                # ignores membership streams), while every TCP connection
                # stays up and ticks: only SWIM can take c down.
                socket_ = c.membership._socket
                assert socket_ is not None

                async def swallow(*args: object) -> None:
                    pass

                socket_.sendto = swallow  # type: ignore[method-assign,assignment]
                c.transport._handlers[Kind.MEMBER_STREAM] = lambda conn, item: None
                event = await a_events.receive()
                assert event == td.NodeDown(c.name, "member_dead")
                seen_by_c = {await c_events.receive(), await c_events.receive()}
                assert seen_by_c == {
                    td.NodeDown(a.name, "member_dead"),
                    td.NodeDown(b.name, "member_dead"),
                }


async def test_a_member_that_leaves_the_cluster_is_reported_as_member_left() -> None:
    with anyio.fail_after(30):
        async with open_cluster(3) as (a, b, c):
            await wait_until(lambda: all(len(n.membership.alive()) == 3 for n in (a, b, c)))
            async with a.monitor_nodes() as events:
                await c.membership.leave()
                assert await events.receive() == td.NodeDown(c.name, "member_left")
            await wait_until(lambda: a.nodes() == [b.name] and b.nodes() == [a.name])
            # Nobody redials a member that left.
            await anyio.sleep(0.5)
            assert a.nodes() == [b.name] and b.nodes() == [a.name]


@pytest.mark.real_network  # writes racing a closing kernel socket
async def test_a_graceful_leave_is_always_shutdown_even_under_traffic() -> None:
    with anyio.fail_after(120):
        async with open_node("a@127.0.0.1", cookie=COOKIE, config=FAST) as a:
            reasons: list[str] = []
            async with a.monitor_nodes() as events:
                for _ in range(20):
                    async with open_node("b@127.0.0.1", cookie=COOKIE, config=FAST) as b:
                        await b.connect(target(a))
                        assert await events.receive() == td.NodeUp(b.name)

                        async def chatter(src: td.Node, dst: str) -> None:
                            # Both directions busy as b leaves: writes into a
                            # closing socket race the goodbye.
                            pid = Pid(dst, 1, 1)
                            while True:
                                try:
                                    await src.send(pid, b"x" * 1000)
                                except td.NodeDownError:
                                    return
                                await anyio.lowlevel.checkpoint()

                        async with anyio.create_task_group() as tg:
                            tg.start_soon(chatter, a, b.name)
                            tg.start_soon(chatter, b, a.name)
                            await anyio.sleep(0.02)
                            tg.cancel_scope.cancel()
                    event = await events.receive()
                    assert isinstance(event, td.NodeDown)
                    reasons.append(event.reason)
            assert reasons == ["shutdown"] * 20


@pytest.mark.parametrize("how", ["cancel", "error"])
async def test_a_node_left_by_cancellation_or_error_is_seen_as_shutdown(how: str) -> None:
    with anyio.fail_after(30):
        async with open_node("a@127.0.0.1", cookie=COOKIE, config=FAST) as a:
            async with a.monitor_nodes() as events:
                for _ in range(5):
                    with anyio.CancelScope() as scope:
                        try:
                            async with open_node("b@127.0.0.1", cookie=COOKIE, config=FAST) as b:
                                await b.connect(target(a))
                                assert await events.receive() == td.NodeUp(b.name)
                                if how == "cancel":
                                    scope.cancel()
                                    await anyio.sleep_forever()
                                raise LookupError("the user's own error")
                        except LookupError:
                            pass
                    assert await events.receive() == td.NodeDown("b@127.0.0.1", "shutdown")


# -------------------------------------------------------------- handshake slots


HOARDER = Path(__file__).resolve().parent / "slot_hoarder.py"


@pytest.mark.real_network  # attackers in another process
@pytest.mark.parametrize("attackers", [1, 10])
async def test_hoarded_handshake_slots_do_not_lock_a_peer_out(attackers: int) -> None:
    """1,000 sockets that never authenticate (silent or a byte a second),
    reopened as fast as they are closed, from ``attackers`` addresses (10
    addresses can fill more than the whole table): a real peer still
    connects, and what was shed is counted."""
    sources = ",".join(f"127.0.0.{10 + i}" for i in range(attackers))
    with anyio.fail_after(90):
        async with nodes_on(["127.0.0.1", "127.0.0.2"]) as (target_node, legit):
            host, port = target_node.address
            async with await anyio.open_process(
                [sys.executable, str(HOARDER), host, str(port), sources, "1000"]
            ) as hoarder:
                try:
                    cap = target_node.config.max_pending_handshakes
                    per_host = target_node.config.max_pending_handshakes_per_host
                    await wait_until(
                        lambda: (
                            target_node.statistics().pending_handshakes
                            >= min(per_host * attackers, cap)
                        )
                    )
                    await anyio.sleep(1.0)  # the attacker at full churn
                    started = time.perf_counter()
                    await legit.connect(target(target_node))
                    took = time.perf_counter() - started
                    await legit.ping(target_node.name)
                    stats = target_node.statistics()
                finally:
                    hoarder.kill()
    shed = sum(
        stats.drops.get(cause, 0)
        for cause in ("handshake_evicted", "handshake_refused_per_host", "handshake_refused_full")
    )
    print(f"{attackers} attacker address(es): legit connect {took:.3f}s, shed {shed}")
    assert shed > 0
    assert stats.pending_handshakes <= cap


def test_loopback_aliases_exist() -> None:
    # The slot tests dial from 127.0.0.x: Linux routes all of 127/8 to lo.
    with socket.socket() as s:
        s.bind(("127.0.0.10", 0))


@pytest.mark.real_network  # raw sockets from loopback aliases
async def test_one_address_holds_at_most_its_share_of_pending_handshakes() -> None:
    config = td.NodeConfig.local(max_pending_handshakes_per_host=2, handshake_timeout=5.0)
    with anyio.fail_after(20):
        async with nodes_on(["127.0.0.1"], config=config) as (node,):
            host, port = node.address
            streams = [
                await anyio.connect_tcp(host, port, local_host="127.0.0.20") for _ in range(4)
            ]
            await wait_until(
                lambda: node.statistics().drops.get("handshake_refused_per_host", 0) == 2
            )
            assert node.statistics().pending_handshakes == 2
            # Another address is not affected.
            other = await anyio.connect_tcp(host, port, local_host="127.0.0.21")
            await wait_until(lambda: node.statistics().pending_handshakes == 3)
            for stream in [*streams, other]:
                await stream.aclose()
            await wait_until(lambda: node.statistics().pending_handshakes == 0)
