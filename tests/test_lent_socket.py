"""A connection lends its socket to the process it just woke (trio, plain
TCP): that process, back in ``receive`` with an empty mailbox, waits on the
socket itself and reads and delivers what comes, so a reply leaves with no
task switch. What must hold whatever the lending does: every message
arrives once and in order, a message from any other path wakes the
borrowing process, the socket is never left unwatched when the process does
something else, and a closed connection or a cancelled wait leaves nothing
behind."""

from __future__ import annotations

import collections
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.abc
import pytest
import trio
from hostile_peer import HostilePeer, hostile_peer

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._connection import Connection
from trio_distribute._proto.frames import frame
from trio_distribute._proto.kinds import Kind
from trio_distribute._socket_wait import SocketWait
from trio_distribute.testing import open_cluster, wait_until

pytestmark = pytest.mark.anyio

#: Lending exists only where the reader waits on the socket itself.
trio_only = pytest.mark.parametrize("anyio_backend", ["trio"])


def local() -> td.NodeConfig:
    return td.NodeConfig.local(tick_timeout=120.0)


def conn(node: td.Node, peer: td.Node) -> Connection:
    found = node._transport.connection(peer.name)
    assert found is not None
    return found


@pytest.fixture
def borrowed_reads(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Borrowed reads that found bytes, by the reading node's name."""
    counts: collections.Counter[str] = collections.Counter()
    real = Connection._borrowed_read

    def counting(self: Connection) -> None:
        before = self.bytes_in
        real(self)
        if self.bytes_in > before:
            counts[self.transport.name] += 1

    monkeypatch.setattr(Connection, "_borrowed_read", counting)
    return counts


async def arrives(sender: td.Node, proc: td.Process, message: object) -> None:
    """``sender`` sends ``message`` to ``proc``, which receives it next."""
    await sender.send(proc.pid, message)
    with trio.fail_after(10):
        assert await proc.receive() == message


async def echo(proc: td.Process, node: td.Node) -> None:
    while True:
        message = await proc.receive()
        if message == "stop":
            return
        await node.send(message["from"], message)


async def echo_round_trips(
    count: int, receive: Callable[[td.Process, int], Awaitable[Any]]
) -> tuple[str, str]:
    """``count`` round trips from a process of node ``a`` to an echo process
    of node ``b``, each reply taken with ``receive(me, seq)`` and checked;
    returns the two nodes' names."""
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        async with trio.open_nursery() as nursery:
            server = await b.spawn(echo, b)
            async with a.open_process() as me:
                for seq in range(count):
                    await a.send(server, {"from": me.pid, "seq": seq})
                    reply = await receive(me, seq)
                    assert reply == {"from": me.pid, "seq": seq}
                await a.send(server, "stop")
            nursery.cancel_scope.cancel()
    return a.name, b.name


@trio_only
async def test_round_trips_go_through_the_borrowing_process_in_order(
    borrowed_reads: collections.Counter[str],
) -> None:
    async def next_message(me: td.Process, seq: int) -> Any:
        with trio.fail_after(10):
            return await me.receive()

    a, b = await echo_round_trips(200, next_message)
    # Both sides read nearly every message themselves (the first of each
    # side went through the reader, which then lent the socket).
    assert borrowed_reads[b] >= 190
    assert borrowed_reads[a] >= 190


@trio_only
async def test_a_selective_receive_with_a_timeout_borrows_too(
    borrowed_reads: collections.Counter[str],
) -> None:
    async def the_reply(me: td.Process, seq: int) -> Any:
        def is_reply(message: Any) -> bool:
            return bool(message["seq"] == seq)

        return await me.receive(match=is_reply, timeout=10)

    a, _ = await echo_round_trips(100, the_reply)
    assert borrowed_reads[a] >= 95


@trio_only
async def test_a_local_send_wakes_a_process_waiting_on_a_lent_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kicks: list[SocketWait] = []
    real_kick = SocketWait.kick

    def kick(self: SocketWait) -> None:
        kicks.append(self)
        real_kick(self)

    monkeypatch.setattr(SocketWait, "kick", kick)
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        async with b.open_process() as me, trio.open_nursery() as nursery:
            await arrives(a, me, "from a")

            async def local_sender() -> None:
                with trio.fail_after(10):
                    await wait_until(lambda: link._borrower is not None)
                await b.send(me.pid, "from b")

            nursery.start_soon(local_sender)
            with trio.fail_after(10):
                assert await me.receive() == "from b"
            # Woken by the send itself, not by the next frame on the socket
            # (the election's heartbeats come every 50 ms).
            assert kicks == [link._socket_wait]
            # The socket is still lent: the next remote message comes the
            # borrowed way too.
            await arrives(a, me, "again from a")


@trio_only
async def test_a_borrower_delivers_what_the_socket_brings_for_other_processes() -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        async with b.open_process() as me, trio.open_nursery() as nursery:
            other_got: list[Any] = []

            async def other_process() -> None:
                async with b.open_process() as proc:
                    other_pid.append(proc.pid)
                    other_got.append(await proc.receive())

            other_pid: list[td.Pid] = []
            nursery.start_soon(other_process)
            with trio.fail_after(10):
                await wait_until(lambda: bool(other_pid))
            await arrives(a, me, "first")

            async def remote_sends() -> None:
                with trio.fail_after(10):
                    await wait_until(lambda: link._borrower is not None)
                for n in range(5):
                    await a.send(other_pid[0], n)
                await a.send(me.pid, "last")

            nursery.start_soon(remote_sends)
            with trio.fail_after(10):
                assert await me.receive() == "last"
                await wait_until(lambda: bool(other_got))
            assert other_got == [0]


@trio_only
async def test_a_process_busy_elsewhere_does_not_hold_the_socket() -> None:
    """The process that was lent the socket waits on something else: the
    reader takes the socket back, and frames for other processes and the
    peer's pings still get through."""
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        others_done = trio.Event()
        async with b.open_process() as me, b.open_process() as other:
            await arrives(a, me, "first")
            assert link._lent_to is not None  # lent to this process

            async def other_receives() -> None:
                with trio.fail_after(10):
                    assert await other.receive() == "for other"
                    await a.ping(b.name)
                others_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(other_receives)
                await a.send(other.pid, "for other")
                # This process waits on the event, not on its mailbox: if
                # the socket stayed lent to it, nothing would read it.
                with trio.fail_after(10):
                    await others_done.wait()
            assert link._lent_to is None


@trio_only
async def test_a_cancelled_borrower_hands_the_socket_back() -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        async with b.open_process() as me, b.open_process() as other:
            await arrives(a, me, "first")
            with trio.CancelScope() as scope:

                async def cancel_when_borrowing() -> None:
                    with trio.fail_after(10):
                        await wait_until(lambda: link._borrower is not None)
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_when_borrowing)
                    await me.receive()
            assert scope.cancelled_caught
            assert link._borrower is None
            await arrives(a, other, "for other")
            await arrives(a, me, "second")


@trio_only
async def test_a_connection_lost_under_a_borrower_leaves_the_process_receiving() -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        async with b.open_process() as me, trio.open_nursery() as nursery:
            await arrives(a, me, "first")

            async def drop_the_connection() -> None:
                with trio.fail_after(10):
                    await wait_until(lambda: link._borrower is not None)
                await b.disconnect(a.name)
                with trio.fail_after(10):
                    await wait_until(lambda: link.closed)
                await b.send(me.pid, "after")

            nursery.start_soon(drop_the_connection)
            with trio.fail_after(10):
                assert await me.receive() == "after"
            assert link._borrower is None and link._lent_to is None


@trio_only
@pytest.mark.parametrize(
    "big",
    [list(range(60_000)), b"\x07" * (2 * 1024 * 1024)],
    ids=["decoded-in-slices", "bulk-bytes"],
)
async def test_a_big_frame_during_a_borrowed_read_is_left_to_the_reader(
    big: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk_reads: list[Connection] = []
    real_receive_bulk = Connection._receive_bulk

    async def receive_bulk(self: Connection) -> bytearray | None:
        bulk_reads.append(self)
        return await real_receive_bulk(self)

    monkeypatch.setattr(Connection, "_receive_bulk", receive_bulk)
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        async with b.open_process() as me:
            await arrives(a, me, "first")

            async def send_big() -> None:
                with trio.fail_after(10):
                    await wait_until(lambda: link._borrower is not None)
                await a.send(me.pid, big)
                await a.send(me.pid, "after big")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_big)
                with trio.fail_after(20):
                    assert await me.receive() == big
                    assert await me.receive() == "after big"
    # A big frame's body is read into a buffer of its size by the reader,
    # not in 64 KiB reads by the borrower.
    assert (link in bulk_reads) == isinstance(big, bytes)


@trio_only
async def test_a_failing_frame_handler_closes_the_connection_not_the_borrower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)

        def broken(conn: Connection, item: list[Any]) -> None:
            raise RuntimeError("a bug in a handler")

        async with b.open_process() as me, trio.open_nursery() as nursery:
            await arrives(a, me, "first")

            async def break_and_ping() -> None:
                with trio.fail_after(10):
                    await wait_until(lambda: link._borrower is not None)
                monkeypatch.setitem(b._transport._handlers, Kind.PING, broken)
                with pytest.raises(td.NodeDownError):
                    await a.ping(b.name)
                assert link.closed
                await b.send(me.pid, "still receiving")

            nursery.start_soon(break_and_ping)
            with trio.fail_after(10):
                assert await me.receive() == "still receiving"
            assert b.statistics().drops.get("connection_failed") == 1
            assert link.down_reason == td.NodeDownReason.CONNECTION_CLOSED


def add(x: int, y: int) -> int:
    return x + y


async def sleep_for(seconds: float) -> None:
    await trio.sleep(seconds)


@trio_only
async def test_sequential_calls_wait_for_their_replies_on_the_socket(
    borrowed_reads: collections.Counter[str],
) -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        b.rpc.export(add)
        for n in range(100):
            assert await a.rpc.call(b.name, "add", n, 1) == n + 1
    assert borrowed_reads[a.name] >= 95


@trio_only
async def test_a_call_that_times_out_while_borrowing_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    borrows: list[object] = []
    real_borrow = Connection.borrow

    async def spy(self: Connection, waiter: Any) -> None:
        borrows.append(waiter)
        await real_borrow(self, waiter)

    monkeypatch.setattr(Connection, "borrow", spy)
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        b.rpc.export(add)
        b.rpc.export(sleep_for)
        assert await a.rpc.call(b.name, "add", 1, 1) == 2
        with pytest.raises(td.RpcTimeoutError):
            await a.rpc.call(b.name, "sleep_for", 30, timeout=0.2)
        # The timed-out call waited on the socket (more than once if other
        # frames came meanwhile).
        assert borrows and all(waiter is borrows[0] for waiter in borrows)
        link = conn(a, b)
        assert link._borrower is None
        # The socket is watched again: the next call is answered.
        with trio.fail_after(10):
            assert await a.rpc.call(b.name, "add", 2, 2) == 4


async def responder(proc: td.Process) -> None:
    while True:
        call = await proc.receive()
        await proc.reply(call, call.request)


@trio_only
async def test_sequential_process_calls_wait_for_their_replies_on_the_socket(
    borrowed_reads: collections.Counter[str],
) -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        server = await b.spawn(responder)
        async with a.open_process() as me:
            for n in range(100):
                assert await me.call(server, n, timeout=10) == n
        await b.exit(server, "done")
    assert borrowed_reads[a.name] >= 95
    assert borrowed_reads[b.name] >= 95


def served_in_a_process() -> bool:
    return td.current_process() is not None


@trio_only
async def test_frames_read_by_a_borrower_are_handled_as_by_the_reader() -> None:
    """A plain function served by RPC runs in whichever task reads its
    request: read by a borrowing process, it still runs outside any
    process, as it does in the reader."""
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        b.rpc.export(served_in_a_process)
        link = conn(b, a)
        assert await a.rpc.call(b.name, "served_in_a_process") is False
        async with b.open_process() as me, trio.open_nursery() as nursery:
            await arrives(a, me, "first")
            answers: list[bool] = []

            async def call_while_borrowed() -> None:
                with trio.fail_after(10):
                    await wait_until(lambda: link._borrower is not None)
                answers.append(await a.rpc.call(b.name, "served_in_a_process"))
                await a.send(me.pid, "done")

            nursery.start_soon(call_while_borrowed)
            with trio.fail_after(10):
                assert await me.receive() == "done"
        assert answers == [False]


@trio_only
async def test_many_waiters_on_one_connection_all_get_their_answers() -> None:
    """Processes and callers of one node, all waiting on the same
    connection at once: whoever reads, each answer reaches its waiter."""
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        b.rpc.export(add)
        server = await b.spawn(echo, b)
        responder_pid = await b.spawn(responder)
        done: list[str] = []

        async def messages(name: str) -> None:
            async with a.open_process() as me:
                for seq in range(30):
                    await a.send(server, {"from": me.pid, "seq": seq, "name": name})
                    reply = await me.receive()
                    assert reply == {"from": me.pid, "seq": seq, "name": name}
            done.append(name)

        async def calls(name: str) -> None:
            async with a.open_process() as me:
                for seq in range(30):
                    assert await me.call(responder_pid, [name, seq], timeout=10) == [name, seq]
            done.append(name)

        async def rpcs(name: str, start: int) -> None:
            for n in range(start, start + 30):
                assert await a.rpc.call(b.name, "add", n, 1) == n + 1
            done.append(name)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for k in range(4):
                    nursery.start_soon(messages, f"m{k}")
                    nursery.start_soon(calls, f"c{k}")
                    nursery.start_soon(rpcs, f"r{k}", 100 * k)
        assert len(done) == 12
        await a.send(server, "stop")
        await b.exit(responder_pid, "done")


@trio_only
async def test_without_a_socket_wait_the_socket_stays_the_readers(
    monkeypatch: pytest.MonkeyPatch, borrowed_reads: collections.Counter[str]
) -> None:
    """Where the wait cannot be made (no epoll or eventfd, no descriptors
    left), nothing is lent and every message still arrives."""
    from trio_distribute import _connection

    tries: list[object] = []

    def cannot(sock: object) -> None:
        tries.append(sock)

    monkeypatch.setattr(_connection, "socket_wait_for", cannot)
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        server = await b.spawn(echo, b)
        async with a.open_process() as me:
            for seq in range(50):
                await a.send(server, {"from": me.pid, "seq": seq})
                with trio.fail_after(10):
                    assert await me.receive() == {"from": me.pid, "seq": seq}
        await a.send(server, "stop")
    assert borrowed_reads == {}
    assert len(tries) == 2  # one try per connection end, not one per message


async def peer_misbehaves_after_a_lend(
    misbehave: Callable[[HostilePeer, td.Node], Awaitable[None]], *, borrowed: bool = True
) -> tuple[td.Node, Connection]:
    """A raw peer sends a message to a waiting process (the read that
    delivers it lends the socket to the process), then, once the process
    waits on the socket (or, with ``borrowed`` false, once it has not come
    back and the reader has the socket again), does ``misbehave``; the
    connection must close and the process go on receiving. Returns the
    node (stopped) and the connection."""
    async with open_cluster(["a"], config=local()) as (a,):
        async with a.open_process() as sink, hostile_peer(a.address) as peer:
            link = a._transport.connection("mallory@127.0.0.1")
            assert link is not None
            got_first = trio.Event()

            async def peer_sends() -> None:
                # Once the process waits: the read that delivers it lends.
                await wait_until(lambda: sink._mailbox._waiter is not None)
                await peer.send_raw(frame(codec.encode([int(Kind.SEND), sink.pid, "first"])))
                await got_first.wait()
                with trio.fail_after(10):
                    if borrowed:
                        await wait_until(lambda: link._borrower is not None)
                    else:
                        await wait_until(lambda: link._lent_to is None)
                await misbehave(peer, a)
                with trio.fail_after(10):
                    await wait_until(lambda: link.closed)
                await a.send(sink.pid, "after")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_sends)
                with trio.fail_after(10):
                    assert await sink.receive() == "first"
                    got_first.set()
                    if not borrowed:  # does not come back to the socket
                        await wait_until(lambda: link.closed)
                    assert await sink.receive() == "after"
    return a, link


@pytest.mark.parametrize("borrowed", [False, True], ids=["reader", "borrower"])
@trio_only
async def test_a_frame_too_big_to_accept_closes_the_connection_once(borrowed: bool) -> None:
    """A header announcing more than ``max_message_size`` is a protocol
    error whoever reads it: the connection closes, counted once."""

    async def announce_too_much(peer: HostilePeer, node: td.Node) -> None:
        too_big = node.config.max_message_size + 1
        await peer.send_raw(too_big.to_bytes(4, "big") + b"\x00" * 16)

    a, _ = await peer_misbehaves_after_a_lend(announce_too_much, borrowed=borrowed)
    assert dict(a.statistics().drops) == {"protocol_error": 1}


@trio_only
async def test_nothing_is_left_lent_once_the_processes_are_gone() -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        server = await b.spawn(echo, b)
        settings = b._processes._mailbox_settings
        assert settings is not None
        server_lent = settings.lent
        async with a.open_process() as me:
            lent = me._mailbox._settings.lent
            for seq in range(20):
                await a.send(server, {"from": me.pid, "seq": seq})
                with trio.fail_after(10):
                    await me.receive()
            assert list(lent) == [me._mailbox]  # lent to this process now
        await a.send(server, "stop")
        # Once nobody comes back for the sockets, both readers have them.
        with trio.fail_after(10):
            await wait_until(lambda: not lent and not server_lent)


@trio_only
async def test_a_reset_under_a_borrower_is_a_failed_read() -> None:
    async def reset(peer: HostilePeer, node: td.Node) -> None:
        raw = peer.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        # Linger 0: close sends a reset, not a goodbye.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.stream.aclose()

    a, link = await peer_misbehaves_after_a_lend(reset)
    assert dict(a.statistics().drops) == {"socket_read_failed": 1}
    assert link.down_reason == td.NodeDownReason.CONNECTION_CLOSED


@trio_only
async def test_a_lent_socket_is_taken_back_after_two_batches_without_a_borrower() -> None:
    """The bound on an unwatched socket: when the process it was lent to
    does not come back to wait on it, the reader takes it back in the
    second scheduler batch after the last read (it waits that long for the
    process, and no longer), after its own read and a borrowed one alike.
    The process counts from the batch it runs in: the one after the
    reader's read, or the borrowed read's own."""
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        link = conn(b, a)
        after_reader: list[int] = []
        after_borrower: list[int] = []

        async def batches_until_taken_back() -> int:
            batches = 0
            while link._lent_to is not None:
                await trio.lowlevel.checkpoint()  # one batch
                batches += 1
            return batches

        async with b.open_process() as me:
            for _ in range(50):
                await a.send(me.pid, "read by the reader")
                with trio.fail_after(10):
                    await me.receive()
                after_reader.append(await batches_until_taken_back())
                await a.send(me.pid, "first")
                await me.receive()  # lent again
                await arrives(a, me, "read by the borrower")
                after_borrower.append(await batches_until_taken_back())
    assert max(after_reader) == 2
    assert max(after_borrower) == 3


@trio_only
async def test_the_peer_closing_under_a_borrower_closes_the_connection() -> None:
    async def end_of_stream(peer: HostilePeer, node: td.Node) -> None:
        # No goodbye: the end of the stream (a FIN, not a reset).
        raw = peer.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.shutdown(socket.SHUT_WR)

    a, link = await peer_misbehaves_after_a_lend(end_of_stream)
    assert link.down_reason == td.NodeDownReason.CONNECTION_CLOSED
    assert dict(a.statistics().drops) == {}
