"""SEND frames delivered straight from the connection reader: the head of a
SEND to a live local process is read by hand and only the message is
decoded. Every frame that path leaves (a dead pid, a head in another form,
a message that does not decode) must fare exactly as it did before, and
frames of both kinds from one sender must keep their order."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hostile_peer import hostile_peer

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._proto.frames import frame
from trio_distribute._proto.kinds import Kind
from trio_distribute.errors import DecodeError
from trio_distribute.testing import open_cluster, wait_until
from trio_distribute.transport import Transport

pytestmark = pytest.mark.anyio


def local(**overrides: Any) -> td.NodeConfig:
    return td.NodeConfig.local(tick_timeout=120.0, **overrides)


def send_frame(pid: td.Pid, message: object, *, id_head: bytes | None = None) -> bytes:
    """A SEND frame to ``pid``, its id written with ``id_head`` if given
    (a longer CBOR form of the same number than the codec writes)."""
    payload = codec.encode([Kind.SEND, pid, message])
    if id_head is not None:
        short = cbor2.dumps(pid.id)
        pid_bytes = codec.encode(pid)
        assert pid_bytes.count(short + cbor2.dumps(pid.creation)) == 1
        payload = payload.replace(
            short + cbor2.dumps(pid.creation), id_head + cbor2.dumps(pid.creation), 1
        )
    return frame(payload)


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_a_send_to_a_live_process_is_not_decoded_as_a_whole_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        async with b.open_process() as sink:
            handled: list[object] = []
            handlers = b._transport._handlers
            real = handlers[Kind.SEND]

            def spy(conn: object, item: list[Any]) -> None:
                handled.append(item)
                real(conn, item)  # type: ignore[arg-type]

            monkeypatch.setitem(handlers, Kind.SEND, spy)
            sent = [{"seq": n, "pid": sink.pid, "t": (1, "x", b"y")} for n in range(20)]
            for message in sent:
                await a.send(sink.pid, message)
            received = [await sink.receive(timeout=10) for _ in sent]
    # What the full decode would have given (tuples arrive as lists).
    assert received == [codec.decode(codec.encode(m)) for m in sent]
    assert handled == []  # every one went straight to the mailbox


async def test_frames_the_direct_path_leaves_fare_as_before() -> None:
    async with open_cluster(["a"], config=local()) as (a,):
        async with a.open_process() as sink, hostile_peer(a.address) as peer:
            pid = sink.pid
            dead = td.Pid(pid.node, pid.id + 1000, pid.creation)
            old = td.Pid(pid.node, pid.id, pid.creation + 1)
            drops = a._transport.drops
            # Interleaved with frames the direct path takes: one sender's
            # order holds across both paths.
            await peer.send_raw(send_frame(pid, 1))
            await peer.send_raw(send_frame(pid, 2, id_head=b"\x18" + bytes([pid.id])))
            await peer.send_raw(send_frame(pid, 3))
            await peer.send_raw(send_frame(pid, 4, id_head=b"\x1a" + pid.id.to_bytes(4, "big")))
            await peer.send_raw(send_frame(dead, "lost"))
            await peer.send_raw(send_frame(old, "lost"))
            await peer.send_raw(send_frame(pid, 5))
            assert [await sink.receive(timeout=10) for _ in range(5)] == [1, 2, 3, 4, 5]
            await wait_until(lambda: drops.get("dead_pid", 0) == 2)

            # A message as deep as a frame may carry arrives; one level
            # deeper is refused as the full decode refuses it.
            head = b"\x83" + codec.encode(int(Kind.SEND)) + codec.encode(pid)
            deepest = nested(codec.DEFAULT_MAX_DEPTH - 1)
            too_deep = nested(codec.DEFAULT_MAX_DEPTH)
            codec.decode(head + cbor2.dumps(deepest))
            with pytest.raises(DecodeError):
                codec.decode(head + cbor2.dumps(too_deep))  # cbor2: past the encoder's check
            await peer.send_raw(frame(head + cbor2.dumps(too_deep)))
            await peer.send_raw(send_frame(pid, deepest))
            assert await sink.receive(timeout=10) == deepest
            assert drops.get("decode_error") == 1
            assert sink.pending() == 0

            # A message that does not decode: the frame is dropped and
            # counted, the connection stays.
            await peer.send_raw(frame(head + b"\xff"))
            await peer.send_raw(send_frame(pid, "after"))
            assert await sink.receive(timeout=10) == "after"
            assert drops.get("decode_error") == 2

            # Frames cut off inside the pid, or right after the part every
            # SEND to this node shares: undecodable, as before.
            await peer.send_raw(frame(head[: -len(cbor2.dumps(pid.creation))]))
            await peer.send_raw(frame(head[: head.index(pid.node.encode()) + len(pid.node)]))
            await peer.send_raw(send_frame(pid, "still here"))
            assert await sink.receive(timeout=10) == "still here"
            assert drops.get("decode_error") == 4
            assert set(drops) == {"dead_pid", "decode_error"}


# ------------------------------------------------------------------ bulk data

KiB = 1024
MiB = 1024 * KiB


def only_connection(node: td.Node) -> Any:
    (conn,) = node._transport.connections.values()
    return conn


async def test_a_big_bytes_message_is_cut_out_of_its_frame_without_a_sliced_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = local(max_message_size=8 * MiB)
    async with open_cluster(["a"], config=config) as (a,):
        transport = a._transport
        sliced: list[int] = []
        real = Transport.dispatch_sliced

        async def spy(self: Transport, conn: Any, payload: bytes | bytearray) -> None:
            sliced.append(len(payload))
            await real(self, conn, payload)

        monkeypatch.setattr(Transport, "dispatch_sliced", spy)
        async with a.open_process() as sink, hostile_peer(a.address) as peer:
            head = b"\x83" + codec.encode(int(Kind.SEND)) + codec.encode(sink.pid)
            # Read in chunks (under BULK_READ_ABOVE) and read in one buffer.
            for size in (300 * KiB, 3 * MiB):
                data = bytes(range(256)) * (size // 256)
                await peer.send_raw(send_frame(sink.pid, data))
                assert await sink.receive(timeout=30) == data
            assert sliced == []
            # Anything else in a big frame still takes the sliced decode,
            # which refuses what it refused before: bytes that do not end
            # the frame, and a big message that is not bytes arrives.
            trailing = frame(head + cbor2.dumps(b"\x01" * (2 * MiB))[:-1])
            await peer.send_raw(trailing)
            big_list = [b"\x02" * KiB] * 2048
            await peer.send_raw(send_frame(sink.pid, big_list))
            assert await sink.receive(timeout=30) == big_list
            assert len(sliced) == 2
            assert transport.drops == {"decode_error": 1}


async def test_a_stream_of_big_messages_reuses_one_receive_buffer() -> None:
    size = 2 * MiB
    async with open_cluster(["a", "b"], config=local(max_message_size=8 * MiB)) as (a, b):
        async with b.open_process() as sink:
            conn = only_connection(b)
            buffers = []
            for n in range(3):
                data = bytes([n]) * size
                await a.send(sink.pid, data)
                assert await sink.receive(timeout=30) == data
                buffers.append(conn._bulk_buffer)
                # Its whole size is drawn from the node's budget.
                assert conn.bulk_buffer_held == len(conn._bulk_buffer) > size
            assert buffers[0] is buffers[1] is buffers[2]
            # A big message of another size gets a buffer of its own.
            await a.send(sink.pid, b"\x09" * (size + 1))
            assert await sink.receive(timeout=30) == b"\x09" * (size + 1)
            assert conn._bulk_buffer is not buffers[0]
            # Let go of at the second tick without a big frame.
            conn.tick(1.0)
            assert conn.bulk_buffer_held > 0
            conn.tick(1.0)
            assert conn._bulk_buffer is None and conn.bulk_buffer_held == 0


async def test_a_kept_buffer_never_costs_a_frame_its_room_in_the_budget() -> None:
    # Budget 3 MiB: one kept 2 MiB buffer and a 2 MiB frame on another
    # connection do not fit together; the frame wins and is delivered.
    config = local(
        max_message_size=8 * MiB, frame_buffer_reserve=64 * KiB, max_frame_buffers=3 * MiB
    )
    async with open_cluster(["a", "b"], config=config) as (a, b):
        async with b.open_process() as sink:
            conn = only_connection(b)
            await a.send(sink.pid, b"\x01" * (2 * MiB))
            assert await sink.receive(timeout=30) == b"\x01" * (2 * MiB)
            assert conn.bulk_buffer_held > 2 * MiB
            async with hostile_peer(b.address) as peer:
                await peer.send_raw(send_frame(sink.pid, b"\x02" * (2 * MiB)))
                assert await sink.receive(timeout=30) == b"\x02" * (2 * MiB)
            assert conn.bulk_buffer_held == 0
            assert "frame_buffers_full" not in b._transport.drops


async def test_a_buffer_is_kept_only_if_the_budget_has_room_for_it() -> None:
    # The 2 MiB frame fits (its size beyond the reserve is drawn); keeping
    # its whole buffer afterwards would not.
    config = local(
        max_message_size=8 * MiB, frame_buffer_reserve=512 * KiB, max_frame_buffers=2 * MiB
    )
    async with open_cluster(["a", "b"], config=config) as (a, b):
        async with b.open_process() as sink:
            conn = only_connection(b)
            await a.send(sink.pid, b"\x01" * (2 * MiB))
            assert await sink.receive(timeout=30) == b"\x01" * (2 * MiB)
            assert conn._bulk_buffer is None and conn.bulk_buffer_held == 0
            assert b._transport.drops == {}


async def test_direct_dispatch_prefixes_are_told_apart_by_their_first_byte() -> None:
    async with open_cluster(["a"], config=local()) as (a,):
        transport = a._transport
        # SEND, REPLY and CALL frames: three, four and five elements.
        assert sorted(transport.direct_handlers) == [0x83, 0x84, 0x85]

        def never(conn: object, payload: bytes | bytearray) -> bool:
            return False

        with pytest.raises(ValueError, match="is taken"):
            transport.add_direct_dispatch(b"\x83\x00", never)
        with pytest.raises(ValueError, match="must not be empty"):
            transport.add_direct_dispatch(b"", never)
        transport.add_direct_dispatch(b"\x86\x00", never)
        assert transport.direct_handlers[0x86] == (b"\x86\x00", never)
