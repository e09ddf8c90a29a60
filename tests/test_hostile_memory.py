"""Memory a peer that holds the cookie can make a node hold is bounded by
configuration: bytes queued for a peer that does not read, RPC tasks, mailbox
bytes and incomplete frames. Each test drives a misbehaving peer through the
public wire format (``tests/hostile_peer.py``) and checks, with the node's own
byte counters, that the bound holds while a legitimate peer keeps being served.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from hostile_peer import HostilePeer, hostile_peer

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._proto.frames import frame
from trio_distribute._proto.kinds import Kind
from trio_distribute.testing import open_cluster, wait_until
from trio_distribute.transport import Connection

pytestmark = pytest.mark.anyio

KiB = 1024
MALLORY = "mallory@127.0.0.1"


def local(**overrides: Any) -> td.NodeConfig:
    """The test profile, with a tick timeout longer than any test: hostile
    peers send no ticks, and only the bound under test may close them."""
    return td.NodeConfig.local(tick_timeout=120.0, **overrides)


def echo(value: object) -> object:
    return value


async def nap(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "rested"


def queued(conn: Connection) -> int:
    """Bytes the node holds for ``conn`` and has not handed to the kernel:
    frames waiting, and the batch being written."""
    return conn._out_bytes + getattr(conn, "_in_flight", 0)


async def connection_of(node: td.Node, peer: str) -> Connection:
    with anyio.fail_after(10):
        await wait_until(lambda: peer in node._transport.connections)
    return node._transport.connections[peer]


def shrink_kernel_buffer(conn: Connection) -> None:
    """Make the node's kernel send buffer for ``conn`` tiny, so that a peer
    that does not read fills the node's own queue after a few KiB instead of
    the 4 MiB the kernel would otherwise absorb (keeps the tests short)."""
    raw = conn.stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def send_quietly(peer: HostilePeer, data: bytes) -> None:
    """Send, tolerating the node hanging up on us (which is the point)."""
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await peer.send_raw(data)


class Peak:
    """Samples a byte count after every scheduler pass, keeping the largest."""

    def __init__(self) -> None:
        self.value = 0

    async def watch(self, measure: Any) -> None:
        while True:
            self.value = max(self.value, measure())
            await anyio.lowlevel.checkpoint()


# ------------------------------------------------------------ slow consumer

SLOW_CONFIG = local(send_buffer_size=16 * KiB, max_message_size=64 * KiB, max_send_queue=256 * KiB)


@pytest.mark.parametrize("request_kind", ["rpc_call", "ping"])
async def test_a_peer_that_never_reads_its_answers_is_dropped_as_a_slow_consumer(
    request_kind: str,
) -> None:
    """Before: every reply or pong was queued for the socket without limit
    (1.43 M unread RPC replies held 1.5 GB). Now the queue stops at
    ``max_send_queue`` and the peer is disconnected, counted."""
    async with open_cluster(["a", "b"], config=SLOW_CONFIG) as (a, b):
        b.rpc.export(echo)
        async with hostile_peer(b.address) as mallory:
            conn = await connection_of(b, MALLORY)
            shrink_kernel_buffer(conn)
            if request_kind == "rpc_call":
                one = frame(codec.encode([Kind.RPC_CALL, 1, "echo", [b"x" * 1000], {}, None]))
                count = 3_000  # ~3 MB of replies
            else:
                one = frame(codec.encode([Kind.PING, 1]))
                count = 300_000  # ~2 MB of pongs
            peak = Peak()
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(peak.watch, lambda: queued(conn))
                    for _ in range(count // 1000):
                        await send_quietly(mallory, one * 1000)
                        if conn.closed:
                            break
                    await wait_until(lambda: conn.closed)
                    tg.cancel_scope.cancel()
            limit = SLOW_CONFIG.max_send_queue
            assert b.statistics().drops.get("slow_consumer") == 1
            # The queue never held more than the cap plus the frame that crossed it.
            assert peak.value <= limit + 2 * KiB
            assert queued(conn) == 0 or conn.closed
            # The honest peer is still served.
            assert await a.rpc.call(b.name, "echo", 5) == 5
            assert await a.ping(b.name) >= 0


async def test_an_honest_reader_of_large_messages_is_not_a_slow_consumer() -> None:
    """Pins the floor of the cap: a sender streaming messages of the maximum
    size to a peer that reads (slowly) waits for space and is never cut off."""
    config = local(send_buffer_size=16 * KiB, max_message_size=256 * KiB)
    assert config.max_send_queue >= 2 * (16 * KiB + 256 * KiB)
    with pytest.raises(ValueError, match="max_send_queue"):
        local(send_buffer_size=16 * KiB, max_message_size=256 * KiB, max_send_queue=256 * KiB)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        got = []
        async with b.open_process() as sink:
            for i in range(40):
                await a.send(sink.pid, bytes([i]) * (250 * KiB))
            for _ in range(40):
                got.append((await sink.receive(timeout=30))[0])
        assert got == list(range(40))
        assert "slow_consumer" not in a.statistics().drops


# ----------------------------------------------------------- rpc concurrency


async def test_rpc_executions_per_peer_are_capped_and_the_excess_is_refused_busy() -> None:
    """Before: 100,000 calls to a sleeping export made 67,744 tasks. Now at
    most ``max_rpc_concurrency`` run per peer; the rest get a BAD "busy" reply
    (casts: dropped), counted, and other peers are served."""
    config = local(max_rpc_concurrency=20)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        b.rpc.export(nap)
        async with hostile_peer(b.address) as mallory:
            calls = b"".join(
                frame(codec.encode([Kind.RPC_CALL, req, "nap", [3600], {}, None]))
                for req in range(1, 501)
            )
            casts = frame(codec.encode([Kind.RPC_CAST, "nap", [3600], {}, None])) * 100
            await mallory.send_raw(calls + casts)
            busy = 0
            with anyio.fail_after(30):
                while busy < 480:
                    reply = await mallory.receive()
                    assert isinstance(reply, list)
                    if reply[0] == Kind.RPC_REPLY:
                        assert reply[2:] == [2, "busy"], reply  # BAD, "busy"
                        busy += 1
                await wait_until(lambda: b.statistics().drops.get("rpc_busy", 0) >= 580)
            assert b.rpc.statistics().serving == 20
            assert b.statistics().drops["rpc_busy"] == 580
            # The honest peer has its own allowance.
            assert await a.rpc.call(b.name, "nap", 0) == "rested"
        # The hostile peer's tasks end with its connection.
        with anyio.fail_after(10):
            await wait_until(lambda: b.rpc.statistics().serving == 0)


async def test_a_peer_that_reconnects_gets_no_fresh_rpc_allowance() -> None:
    """Casts run to completion after their connection drops, so the cap is
    per peer name: reconnecting does not buy another ``max_rpc_concurrency``."""
    config = local(max_rpc_concurrency=20)
    async with open_cluster(["b"], config=config) as (b,):
        b.rpc.export(nap)
        cast = frame(codec.encode([Kind.RPC_CAST, "nap", [3600], {}, None]))
        async with hostile_peer(b.address) as mallory:
            await mallory.send_raw(cast * 20)
            with anyio.fail_after(30):
                await wait_until(lambda: b.rpc.statistics().casts_served == 20)
        with anyio.fail_after(30):
            await wait_until(lambda: MALLORY not in b._transport.connections)
        async with hostile_peer(b.address, creation=8) as mallory:
            await mallory.send([Kind.RPC_CALL, 1, "nap", [0], {}, None])
            with anyio.fail_after(30):
                while True:
                    reply = await mallory.receive()
                    assert isinstance(reply, list)
                    if reply[0] == Kind.RPC_REPLY:
                        break
            assert reply[1:] == [1, 2, "busy"]
        assert b.statistics().drops["rpc_busy"] == 1


async def nap_with(payload: bytes, seconds: float) -> int:
    await anyio.sleep(seconds)
    return len(payload)


async def test_rpc_arguments_held_per_peer_are_capped_in_bytes() -> None:
    """Few calls with large arguments are bounded too: at most
    ``max_rpc_bytes`` of one peer's requests are held by running tasks."""
    config = local(max_rpc_bytes=1024 * KiB, max_message_size=512 * KiB)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        b.rpc.export(nap_with)
        async with hostile_peer(b.address) as mallory:
            body = b"r" * (300 * KiB)
            calls = b"".join(
                frame(codec.encode([Kind.RPC_CALL, req, "nap_with", [body, 3600], {}, None]))
                for req in range(1, 21)
            )
            await mallory.send_raw(calls)
            busy = 0
            with anyio.fail_after(30):
                while busy < 17:
                    reply = await mallory.receive()
                    assert isinstance(reply, list)
                    if reply[0] == Kind.RPC_REPLY:
                        assert reply[2:] == [2, "busy"], reply
                        busy += 1
            assert b.rpc.statistics().serving == 3  # 3 x 300 KiB fit in 1 MiB
            assert b.statistics().drops["rpc_busy"] == 17
            # The honest peer has its own allowance.
            assert await a.rpc.call(b.name, "nap_with", b"x" * (500 * KiB), 0) == 500 * KiB


async def test_a_caller_over_the_concurrency_cap_gets_a_typed_busy_error() -> None:
    config = local(max_rpc_concurrency=2)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        b.rpc.export(nap)
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(lambda: a.rpc.call(b.name, "nap", 3600, timeout=None))
            with anyio.fail_after(10):
                await wait_until(lambda: b.rpc.statistics().serving == 2)
            with pytest.raises(td.BadRpcError) as info:
                await a.rpc.call(b.name, "nap", 0)
            assert info.value.reason == "busy"
            assert b.statistics().drops["rpc_busy"] == 1
            tg.cancel_scope.cancel()
        # Cancelled calls free their slots.
        with anyio.fail_after(10):
            await wait_until(lambda: b.rpc.statistics().serving == 0)
        assert await a.rpc.call(b.name, "nap", 0) == "rested"


# ------------------------------------------------------------ mailbox bytes


async def test_a_mailbox_is_bounded_in_bytes_as_well_as_messages() -> None:
    """Before: 1,500 messages of 1 MiB to a process that does not read held
    1.5 GB (the cap counted messages). Now a mailbox holds at most
    ``max_mailbox_bytes`` of remote messages; the rest are dropped, counted."""
    config = local(max_mailbox_bytes=1024 * KiB)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        async with b.open_process() as idle, b.open_process() as busy:
            async with hostile_peer(b.address) as mallory:
                body = b"m" * (64 * KiB)
                await mallory.send_raw(
                    frame(codec.encode([Kind.SEND, idle.pid, body])) * 200  # 12.8 MB
                )
                with anyio.fail_after(30):
                    await wait_until(
                        lambda: idle.pending() + b.statistics().drops.get("mailbox_bytes", 0) >= 200
                    )
                held = idle.pending() * len(body)
                assert held <= config.max_mailbox_bytes
                assert idle.pending() >= 15  # the bound is bytes, not a token count
                assert b.statistics().drops["mailbox_bytes"] == 200 - idle.pending()
                # Another process, fed by an honest peer, is unaffected.
                await a.send(busy.pid, body)
                assert await busy.receive(timeout=10) == body
                # Taking messages frees their bytes.
                for _ in range(idle.pending()):
                    idle.receive_nowait()
                await a.send(idle.pid, body)
                assert await idle.receive(timeout=10) == body


async def test_a_message_to_an_empty_mailbox_is_always_taken() -> None:
    config = local(max_mailbox_bytes=1024, max_message_size=64 * KiB)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        async with b.open_process() as proc:
            await a.send(proc.pid, b"z" * 4000)  # over the byte cap, but the mailbox is empty
            await a.send(proc.pid, b"y" * 4000)  # over the byte cap: dropped
            await a.send(proc.pid, "small")  # also refused: bytes are held
            with anyio.fail_after(10):
                await wait_until(lambda: b.statistics().drops.get("mailbox_bytes", 0) == 2)
            assert proc.pending() == 1
            await b.send(proc.pid, b"local" * 1000)  # counted like a remote send: dropped
            assert b.statistics().drops["mailbox_bytes"] == 3
            assert await proc.receive(timeout=10) == b"z" * 4000
            await b.send(proc.pid, b"local" * 1000)  # empty again: taken
            assert await proc.receive(timeout=10) == b"local" * 1000
            await a.send(proc.pid, b"x" * 4000)  # empty again
            assert await proc.receive(timeout=10) == b"x" * 4000


async def test_every_way_of_taking_a_message_gives_its_bytes_back() -> None:
    config = local(max_mailbox_bytes=1024)
    async with open_cluster(["a", "b"], config=config) as (a, b):
        async with b.open_process() as proc:
            takes = ("receive", "selective", "nowait", "selective_nowait", "iterate")
            for round, take in enumerate(takes, 1):
                await a.send(proc.pid, [take, b"p" * 1000])
                await a.send(proc.pid, "filler")  # refused while 1000 bytes are held
                with anyio.fail_after(10):
                    await wait_until(lambda: b.statistics().drops.get("mailbox_bytes") == round)  # noqa: B023
                    assert proc.pending() == 1
                    if take == "receive":
                        message = await proc.receive()
                    elif take == "selective":
                        message = await proc.receive(match=lambda m: isinstance(m, list))
                    elif take == "nowait":
                        message = proc.receive_nowait()
                    elif take == "selective_nowait":
                        message = proc.receive_nowait(match=lambda m: isinstance(m, list))
                    else:
                        message = await proc.__anext__()
                assert message[0] == take
                assert proc._mailbox.queued_bytes == 0
            assert b.statistics().drops["mailbox_bytes"] == 5


# ---------------------------------------------------------- partial frames


@asynccontextmanager
async def hostile_peers(address: tuple[str, int], n: int) -> AsyncIterator[list[HostilePeer]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(hostile_peer(address, name=f"m{i}@127.0.0.1"))
            for i in range(n)
        ]


async def test_incomplete_frames_draw_on_a_node_wide_budget() -> None:
    """Before: 94 connections each holding most of a 16 MiB frame pinned
    1.5 GB. Now an incomplete frame beyond ``frame_buffer_reserve`` draws on
    ``max_frame_buffers`` shared by all connections; a connection that needs
    more than is left is closed, counted, and small frames keep flowing."""
    config = local(
        max_message_size=1024 * KiB,
        frame_buffer_reserve=64 * KiB,
        max_frame_buffers=2048 * KiB,
    )
    async with open_cluster(["a", "b"], config=config) as (a, b):
        b.rpc.export(echo)
        transport = b._transport
        n = 8
        async with hostile_peers(b.address, n) as peers:
            conns = [await connection_of(b, f"m{i}@127.0.0.1") for i in range(n)]
            length = 1024 * KiB - 16
            for peer in peers:  # announce a 1 MiB frame, send all but 1 byte
                await send_quietly(peer, length.to_bytes(4, "big") + b"\xa0" * (length - 1))

            def held() -> int:
                return sum(conn.decoder.buffered for conn in conns if not conn.closed)

            with anyio.fail_after(30):
                await wait_until(
                    lambda: all(
                        conn.closed or conn.decoder.buffered >= length - 1 + 4 for conn in conns
                    )
                )
            closed = sum(conn.closed for conn in conns)
            assert held() <= n * config.frame_buffer_reserve + config.max_frame_buffers
            assert closed >= n - 2
            assert transport.drops["frame_buffers_full"] == closed
            # An honest peer's ordinary traffic is unaffected.
            assert await a.rpc.call(b.name, "echo", b"q" * (32 * KiB)) == b"q" * (32 * KiB)
        # Connections that close give their share back: a large frame fits again.
        with anyio.fail_after(10):
            await wait_until(lambda: len(transport.connections) == 1)
        big = b"B" * (900 * KiB)
        assert await a.rpc.call(b.name, "echo", big, timeout=30) == big
        assert "frame_buffers_full" not in a.statistics().drops
        assert transport.drops["frame_buffers_full"] == closed


async def test_many_senders_to_a_peer_that_does_not_read_wait_instead_of_piling_up() -> None:
    """Senders check for space before writing, so fifty senders blocked by a
    peer that stopped reading hold one send buffer, not fifty messages: an
    honest application never trips ``max_send_queue`` by itself."""
    config = local(send_buffer_size=16 * KiB, max_message_size=64 * KiB)
    floor = 2 * (16 * KiB + 64 * KiB)
    async with open_cluster(["b"], config=config) as (b,):
        async with hostile_peer(b.address) as mallory:
            conn = await connection_of(b, MALLORY)
            shrink_kernel_buffer(conn)
            target = td.Pid(MALLORY, 1, mallory.done.creation)
            body = b"s" * (32 * KiB)
            sent = 0

            async def sender() -> None:
                nonlocal sent
                while True:
                    await b.send(target, body)
                    sent += 1

            peak = Peak()
            async with anyio.create_task_group() as tg:
                tg.start_soon(peak.watch, lambda: queued(conn))
                for _ in range(50):
                    tg.start_soon(sender)
                await anyio.sleep(1.0)  # every sender has had its turn, many times over
                tg.cancel_scope.cancel()
            # What the kernel buffers took plus a send buffer or two; senders
            # that wrote before waiting would have written 50 at least.
            assert 1 <= sent < 25
            assert not conn.closed
            assert "slow_consumer" not in b.statistics().drops
            assert peak.value <= floor


def test_the_memory_bounds_have_the_documented_defaults() -> None:
    config = td.NodeConfig()
    MiB = 1024 * KiB
    assert config.max_send_queue == 64 * MiB
    assert config.max_mailbox == 100_000
    assert config.max_mailbox_bytes == 64 * MiB
    assert config.max_rpc_concurrency == 256
    assert config.max_rpc_bytes == 64 * MiB
    assert config.frame_buffer_reserve == 256 * KiB
    assert config.max_frame_buffers == 64 * MiB
    # The floor of the send-queue cap follows the message size.
    assert td.NodeConfig(max_message_size=48 * MiB).max_send_queue == 2 * (256 * KiB + 48 * MiB)


async def test_a_reused_request_id_of_a_running_call_closes_the_connection() -> None:
    """A second RPC_CALL with the id of a running one would orphan the first
    task (nothing could cancel it any more): the peer is cut off instead,
    and every task it started ends with its connection."""
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        b.rpc.export(nap)
        async with hostile_peer(b.address) as mallory:
            call = frame(codec.encode([Kind.RPC_CALL, 7, "nap", [3600], {}, None]))
            await mallory.send_raw(call)
            with anyio.fail_after(10):
                await wait_until(lambda: b.rpc.statistics().serving == 1)
            await send_quietly(mallory, call)
            with anyio.fail_after(10):
                await wait_until(
                    lambda: mallory.name not in b.nodes() and "mallory@127.0.0.1" not in b.nodes()
                )
                await wait_until(lambda: b.rpc.statistics().serving == 0)
            assert b.statistics().drops["protocol_error"] >= 1
            assert await a.rpc.call(b.name, "nap", 0) == "rested"


async def test_monitors_one_peer_may_hold_are_capped() -> None:
    """Before: a peer could place any number of monitors on a live pid (each
    an entry this node holds). Past ``max_monitors_per_peer`` the peer is cut
    off, counted, and everything it held is released."""
    async with open_cluster(["a", "b"], config=local(max_monitors_per_peer=50)) as (a, b):
        async with b.open_process() as target:
            async with hostile_peer(b.address) as mallory:
                sent = b"".join(
                    frame(codec.encode([Kind.MONITOR, td.Ref(mallory_name, i, 7), target.pid]))
                    for i in range(1, 61)
                )
                await send_quietly(mallory, sent)
                with anyio.fail_after(10):
                    await wait_until(lambda: mallory_name not in b.nodes())
            assert b.statistics().drops["monitor_limit"] == 1
            assert b.statistics().monitors == 0
            # An honest peer still monitors.
            async with a.monitor(target.pid):
                await wait_until(lambda: b.statistics().monitors == 1)


mallory_name = "mallory@127.0.0.1"
