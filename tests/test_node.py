"""Nodes in one process over real loopback TCP: connect, list, ping,
disconnect, node events, cookies, simultaneous connects, liveness and
hostile input. Every test is bounded by ``fail_after`` so a hang fails fast.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.abc
import pytest
from virtual import anyio_backend, fake_network, open_node

import trio_distribute as td
from trio_distribute._proto.frames import frame
from trio_distribute._proto.handshake import HandshakeCompleted, HandshakeMachine, Role
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "test-cookie"
FAST = td.NodeConfig.local(handshake_timeout=1.0)


@asynccontextmanager
async def started(
    *names: str, cookie: str = COOKIE, config: td.NodeConfig = FAST
) -> AsyncIterator[list[td.Node]]:
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_node(f"{n}@127.0.0.1", cookie=cookie, config=config)
            )
            for n in names
        ]
        yield nodes


def target(node: td.Node) -> str:
    return f"{node.name}:{node.address[1]}"


async def next_event(events: anyio.abc.ObjectReceiveStream[td.NodeUp | td.NodeDown]) -> object:
    with anyio.fail_after(5):
        return await events.receive()


async def test_two_nodes_connect_list_ping_disconnect() -> None:
    with anyio.fail_after(10):
        async with started("a", "b") as (a, b), a.monitor_nodes() as a_events:
            async with b.monitor_nodes() as b_events:
                assert await a.connect(target(b)) == "b@127.0.0.1"
                assert await next_event(a_events) == td.NodeUp("b@127.0.0.1")
                assert await next_event(b_events) == td.NodeUp("a@127.0.0.1")
                assert a.nodes() == ["b@127.0.0.1"]
                assert b.nodes() == ["a@127.0.0.1"]
                # Connecting again returns at once, with no second NodeUp.
                assert await a.connect(target(b)) == "b@127.0.0.1"
                assert await a.connect("b@127.0.0.1") == "b@127.0.0.1"
                rtt = await a.ping("b@127.0.0.1")
                assert rtt > 0
                assert await b.ping("a@127.0.0.1") > 0
                await a.disconnect("b@127.0.0.1")
                assert await next_event(a_events) == td.NodeDown("b@127.0.0.1", "disconnect")
                assert await next_event(b_events) == td.NodeDown("a@127.0.0.1", "disconnect")
                assert a.nodes() == [] and b.nodes() == []
                with pytest.raises(td.NodeDownError):
                    await a.ping("c@127.0.0.1")


async def test_three_nodes_and_reconnect_by_name() -> None:
    with anyio.fail_after(10):
        async with started("a", "b", "c") as (a, b, c):
            await a.connect(target(b))
            await a.connect(f"127.0.0.1:{c.address[1]}")  # name learned in the handshake
            assert a.nodes() == ["b@127.0.0.1", "c@127.0.0.1"]
            await b.connect(target(c))
            for node in (a, b, c):
                # Membership may be connecting b and c at the same moment.
                await wait_until(lambda n=node: len(n.nodes()) == 2)  # type: ignore[misc]
            await a.disconnect("b@127.0.0.1")
            # The address was learned, so the name alone is enough now.
            assert await a.connect("b@127.0.0.1") == "b@127.0.0.1"
            assert await a.ping("b@127.0.0.1") > 0


async def test_node_stop_is_seen_as_shutdown() -> None:
    with anyio.fail_after(10):
        async with started("a") as (a,), a.monitor_nodes() as events:
            async with open_node("b@127.0.0.1", cookie=COOKIE, config=FAST) as b:
                await b.connect(target(a))
                assert await next_event(events) == td.NodeUp("b@127.0.0.1")
            assert await next_event(events) == td.NodeDown("b@127.0.0.1", "shutdown")
            assert a.nodes() == []


async def test_wrong_cookie_is_rejected_on_both_sides() -> None:
    with anyio.fail_after(10):
        async with started("a") as (a,), started("b", cookie="other") as (b,):
            async with a.monitor_nodes() as a_events, b.monitor_nodes() as b_events:
                with pytest.raises(td.AuthenticationError):
                    await b.connect(target(a))
                with pytest.raises(td.AuthenticationError):
                    await a.connect(target(b))
                # The acceptor side refused it too: counted, and no NodeUp.
                assert a.statistics().drops.get("auth_failed") == 1
                assert b.statistics().drops.get("auth_failed") == 1
                assert a.nodes() == [] and b.nodes() == []
                for events in (a_events, b_events):
                    with pytest.raises(anyio.WouldBlock):
                        events.receive_nowait()


@pytest.mark.real_network  # dials a closed port on real loopback
async def test_connect_errors_are_typed() -> None:
    with anyio.fail_after(10):
        async with started("a") as (a,):
            # Nothing listens on this port (we bind it and close it).
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            await listener.aclose()
            with pytest.raises(td.ConnectError, match="cannot connect"):
                await a.connect(f"z@127.0.0.1:{port}")
            with pytest.raises(td.ConnectError, match="no address known"):
                await a.connect("nobody@127.0.0.1")
            with pytest.raises(ValueError, match="port"):
                await a.connect("b@127.0.0.1:notaport")
            async with started("b") as (b,):
                with pytest.raises(td.HandshakeError, match="but reached"):
                    await a.connect(f"x@127.0.0.1:{b.address[1]}")


async def test_invalid_names_and_cookies() -> None:
    for bad in ("noat", "a@", "@host", "a b@host", "a@host:1", 5):
        with pytest.raises(ValueError, match="node name"):
            async with open_node(bad, cookie=COOKIE):  # type: ignore[arg-type]
                pass
    with pytest.raises(ValueError, match="cookie"):
        async with open_node("a@127.0.0.1", cookie=""):
            pass


async def test_simultaneous_connects_leave_exactly_one_connection() -> None:
    with anyio.fail_after(60):
        async with started("a", "b") as (a, b):
            async with a.monitor_nodes() as a_events, b.monitor_nodes() as b_events:
                for _ in range(100):
                    results: list[str] = []

                    async def dial(src: td.Node, dst: td.Node, out: list[str]) -> None:
                        out.append(await src.connect(target(dst)))

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(dial, a, b, results)
                        tg.start_soon(dial, b, a, results)
                    assert sorted(results) == ["a@127.0.0.1", "b@127.0.0.1"]
                    assert await next_event(a_events) == td.NodeUp("b@127.0.0.1")
                    assert await next_event(b_events) == td.NodeUp("a@127.0.0.1")
                    assert a.nodes() == ["b@127.0.0.1"] and b.nodes() == ["a@127.0.0.1"]
                    assert a.transport.connections["b@127.0.0.1"].initiated_by_me != (
                        b.transport.connections["a@127.0.0.1"].initiated_by_me
                    )
                    await a.ping("b@127.0.0.1")
                    await a.disconnect("b@127.0.0.1")
                    assert await next_event(a_events) == td.NodeDown("b@127.0.0.1", "disconnect")
                    assert await next_event(b_events) == td.NodeDown("a@127.0.0.1", "disconnect")
                # No duplicate or stray event was left behind.
                for events in (a_events, b_events):
                    with pytest.raises(anyio.WouldBlock):
                        events.receive_nowait()


async def handshake_as(
    name: str, node: td.Node, *, creation: int = 7
) -> tuple[anyio.abc.SocketStream, HandshakeCompleted]:
    """Open a raw socket to ``node`` and authenticate as ``name`` by hand."""
    stream = await anyio.connect_tcp("127.0.0.1", node.address[1])
    machine = HandshakeMachine(
        role=Role.INITIATOR,
        local_name=name,
        creation=creation,
        cookie=COOKIE.encode(),
    )
    machine.initiate()
    while True:
        await stream.send(machine.data_to_send())
        for event in machine.receive_data(await stream.receive()):
            if isinstance(event, HandshakeCompleted):
                return stream, event
            raise AssertionError(f"handshake failed: {event}")


@pytest.mark.real_network  # raw sockets or kernel buffers
async def test_silent_peer_is_declared_down_after_tick_timeout() -> None:
    config = td.NodeConfig.local(tick_timeout=0.4)
    with anyio.fail_after(10):
        async with started("a", config=config) as (a,), a.monitor_nodes() as events:
            stream, done = await handshake_as("silent@127.0.0.1", a)
            assert done.name == "a@127.0.0.1"
            assert await next_event(events) == td.NodeUp("silent@127.0.0.1")
            started_at = anyio.current_time()
            # Socket open, nothing sent: down after about tick_timeout.
            assert await next_event(events) == td.NodeDown("silent@127.0.0.1", "tick_timeout")
            silent_for = anyio.current_time() - started_at
            # Never before the detection window opens (3 of 4 tick intervals);
            # how late it comes is left to fail_after, not asserted.
            assert silent_for >= 0.3 - 0.1
            await stream.aclose()


async def test_a_peer_that_ticks_stays_up() -> None:
    config = td.NodeConfig.local(tick_timeout=0.4)
    with anyio.fail_after(10):
        async with started("a", "b", config=config) as (a, b), a.monitor_nodes() as events:
            await a.connect(target(b))
            assert await next_event(events) == td.NodeUp("b@127.0.0.1")
            await anyio.sleep(1.5)  # several tick timeouts with no traffic at all
            assert a.nodes() == ["b@127.0.0.1"]
            with pytest.raises(anyio.WouldBlock):
                events.receive_nowait()


@pytest.mark.real_network  # raw sockets or kernel buffers
async def test_unauthenticated_silence_times_out_and_handshakes_are_capped() -> None:
    config = td.NodeConfig.local(handshake_timeout=0.3, max_pending_handshakes=3)
    with anyio.fail_after(10):
        async with started("a", config=config) as (a,):
            streams = [await anyio.connect_tcp("127.0.0.1", a.address[1]) for _ in range(5)]
            # The cap holds: all five come from one address, which already
            # holds every slot, so the two over the cap are refused at once.
            closed = 0
            for stream in streams[3:]:
                with anyio.move_on_after(0.2):
                    try:
                        await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        closed += 1
            assert closed == 2
            assert a.statistics().pending_handshakes <= 3
            await anyio.sleep(0.5)
            drops = a.statistics().drops
            assert drops.get("handshake_refused_full") == 2
            assert drops.get("handshake_timeout") == 3
            assert a.statistics().pending_handshakes == 0
            for stream in streams:
                await stream.aclose()


@pytest.mark.real_network  # raw sockets or kernel buffers
async def test_hostile_input_never_disturbs_an_established_connection() -> None:
    rng = random.Random(1234)
    with anyio.fail_after(20):
        async with started("a", "b") as (a, b), a.monitor_nodes() as events:
            await b.connect(target(a))
            assert await next_event(events) == td.NodeUp("b@127.0.0.1")
            attacks: list[bytes] = [
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000))) for _ in range(20)
            ]
            attacks.append(b"\xff\xff\xff\xff" + b"x" * 100)  # oversized length prefix
            attacks.append(b"\x00\x00\x04\x01" + b"x" * 1025)  # just over the pre-auth cap
            attacks.append(frame(b"\xa1\x61m\x65hello"))  # a truncated hello
            # A half handshake: a valid hello, then nothing.
            half = HandshakeMachine(
                role=Role.INITIATOR, local_name="h@127.0.0.1", creation=1, cookie=b"x"
            )
            half.initiate()
            attacks.append(half.data_to_send())
            for payload in attacks:
                stream = await anyio.connect_tcp("127.0.0.1", a.address[1])
                await stream.send(payload)
                with (
                    anyio.move_on_after(0.05),
                    contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError),
                ):
                    await stream.receive()
                await stream.aclose()
                # The real connection is untouched.
                assert await b.ping("a@127.0.0.1") > 0
            assert a.nodes() == ["b@127.0.0.1"]
            with pytest.raises(anyio.WouldBlock):
                events.receive_nowait()
            assert sum(a.statistics().drops.values()) >= len(attacks) - 2


@pytest.mark.real_network  # raw sockets or kernel buffers
async def test_garbage_after_authentication_closes_only_that_connection() -> None:
    with anyio.fail_after(10):
        async with started("a", "b") as (a, b), a.monitor_nodes() as events:
            await b.connect(target(a))
            assert await next_event(events) == td.NodeUp("b@127.0.0.1")
            stream, _ = await handshake_as("rogue@127.0.0.1", a)
            assert await next_event(events) == td.NodeUp("rogue@127.0.0.1")
            await stream.send(frame(b"\x82\x19\x03\xe7\x00"))  # [999, 0]: unknown kind
            assert await next_event(events) == td.NodeDown("rogue@127.0.0.1", "protocol_error")
            await stream.aclose()
            assert a.nodes() == ["b@127.0.0.1"]
            assert await b.ping("a@127.0.0.1") > 0


@pytest.mark.real_network  # raw sockets or kernel buffers
async def test_restarted_peer_replaces_its_stale_connection() -> None:
    with anyio.fail_after(10):
        async with started("a") as (a,), a.monitor_nodes() as events:
            old, _ = await handshake_as("p@127.0.0.1", a, creation=1)
            assert await next_event(events) == td.NodeUp("p@127.0.0.1")
            new, _ = await handshake_as("p@127.0.0.1", a, creation=2)
            # The old connection's node-down comes before the new one's node-up.
            assert await next_event(events) == td.NodeDown("p@127.0.0.1", "replaced")
            assert await next_event(events) == td.NodeUp("p@127.0.0.1")
            assert a.transport.connections["p@127.0.0.1"].peer_creation == 2
            await old.aclose()
            await new.aclose()


async def test_statistics_count_traffic() -> None:
    with anyio.fail_after(10):
        async with started("a", "b") as (a, b):
            await a.connect(target(b))
            before = a.statistics()
            for _ in range(10):
                await a.ping("b@127.0.0.1")
            after = a.statistics()
            assert after.connections == 1
            assert after.messages_out - before.messages_out >= 10
            assert after.bytes_out > before.bytes_out
            assert after.bytes_in > before.bytes_in


@pytest.mark.real_network  # raw sockets or kernel buffers
async def test_a_peer_that_stops_reading_makes_senders_wait() -> None:
    config = td.NodeConfig.local(send_buffer_size=64 * 1024, tick_timeout=30.0)
    with anyio.fail_after(10):
        async with started("a", config=config) as (a,):
            stream, _ = await handshake_as("stuck@127.0.0.1", a)
            dest = td.Pid("stuck@127.0.0.1", 1, 7)
            conn = a.transport.connections["stuck@127.0.0.1"]
            chunk = b"x" * 4096
            sent = 0
            with anyio.move_on_after(1.0) as scope:
                for _ in range(100_000):  # ~400 MiB if nothing pushed back
                    await a.send(dest, chunk)
                    sent += 1
            assert scope.cancelled_caught  # the sender was made to wait
            # Kernel buffers took some; our queue stayed near its limit.
            assert conn._out_bytes <= config.send_buffer_size + len(chunk) + 64
            assert sent * len(chunk) < 64 * 1024 * 1024
            # Other work on the node goes on while that sender waits.
            async with a.open_process() as proc:
                await a.send(proc.pid, "local still works")
                assert await proc.receive() == "local still works"
            await stream.aclose()


async def test_a_dial_by_address_leaves_no_attempt_behind() -> None:
    # Regression: a dial by "host:port" registered its attempt under the
    # name learned in the handshake and never removed it, so the greater
    # node refused every later connection from that peer as "simultaneous".
    config = td.NodeConfig.local(membership=td.MembershipConfig(enabled=False))
    with anyio.fail_after(10):
        async with started("z", "a", config=config) as (z, a):
            assert await z.connect(f"127.0.0.1:{a.address[1]}") == a.name
            assert z.transport._dialing == {}
            await z.disconnect(a.name)
            await wait_until(lambda: a.nodes() == [] and z.nodes() == [])
            assert await a.connect(target(z)) == z.name


async def test_a_dial_by_address_superseded_by_the_peers_dial_returns_its_name() -> None:
    """a dials b by address while b dials a by name. When b's connection wins
    (a's name is the smaller), a's attempt is cancelled after it learned b's
    name: connect() must return that name (it used to fail an assertion,
    which ended the node when it happened while joining seeds)."""
    with anyio.fail_after(120):
        async with started("a", "b") as (a, b):
            for _ in range(100):
                results: list[str] = []

                async def dial(src: td.Node, where: str, out: list[str]) -> None:
                    out.append(await src.connect(where))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(dial, a, f"127.0.0.1:{b.address[1]}", results)
                    tg.start_soon(dial, b, target(a), results)
                assert sorted(results) == ["a@127.0.0.1", "b@127.0.0.1"]
                assert a.nodes() == ["b@127.0.0.1"] and b.nodes() == ["a@127.0.0.1"]
                await a.disconnect("b@127.0.0.1")
                await wait_until(lambda: not a.nodes() and not b.nodes())
