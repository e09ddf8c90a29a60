"""Big messages between nodes: payloads written from the sender's own buffer
(scatter-gather), big frames read straight into one buffer of their size,
and the frame encoder's table-driven fast path giving the codec's bytes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hostile_peer import hostile_peer

import trio_distribute as td
from trio_distribute import _connection, codec
from trio_distribute._proto.kinds import Kind
from trio_distribute.testing import open_cluster, wait_until

pytestmark = pytest.mark.anyio

KiB = 1024
MiB = 1024 * KiB


def local(**overrides: Any) -> td.NodeConfig:
    return td.NodeConfig.local(tick_timeout=120.0, **overrides)


async def test_big_messages_arrive_whole_and_in_order_between_small_ones() -> None:
    # Over BULK_READ_ABOVE, so the receiver reads them with its bulk path;
    # a bytes message and one with big bytes inside (encoded, then written
    # in parts), each between small messages whose order must hold.
    big = bytes(range(256)) * (3 * MiB // 256)
    inside = {"name": "blob", "data": big[: 2 * MiB], "n": 7}
    assert len(big) > _connection.BULK_READ_ABOVE
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        async with b.open_process(name="sink") as sink:
            sent = ["first", big, "middle", inside, "last"]
            for message in sent:
                await a.send(("sink", b.name), message)
            received = [await sink.receive(timeout=30) for _ in sent]
    assert received == sent
    # No message was dropped. (A mesh dial that crossed the cluster's own
    # connect may be abandoned before its hello, which the other side counts
    # as handshake_failed: that is about connecting, not about this data.)
    for node in (a, b):
        assert set(node.statistics().drops) <= {"handshake_failed"}, node.statistics().drops


async def test_a_big_bytes_message_is_sent_without_encoding_the_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: codec.encode copied the 2 MiB into a new frame (and the frame
    # was joined once more). Now only the frame's head is encoded.
    big = b"\x01" * (2 * MiB)
    async with open_cluster(["a", "b"], config=local()) as (a, b):
        async with b.open_process() as sink:
            encoded: list[int] = []
            real = codec.encode

            def spy(value: object) -> bytes:
                data = real(value)
                encoded.append(len(data))
                return data

            monkeypatch.setattr(codec, "encode", spy)
            await a.send(sink.pid, big)
            assert await sink.receive(timeout=30) == big
            assert all(size < 64 * KiB for size in encoded)


async def test_a_big_frame_draws_its_whole_size_from_the_budget_before_its_body_arrives() -> None:
    # The bulk reader allocates a buffer of the announced size, so the
    # announced size is drawn from max_frame_buffers at once (before: only
    # what had arrived was drawn, so a frame that could never fit was held
    # until its body came). A frame that fits is read and delivered.
    config = local(
        max_message_size=8 * MiB, frame_buffer_reserve=64 * KiB, max_frame_buffers=2 * MiB
    )
    async with open_cluster(["a"], config=config) as (a,):
        node_transport = a._transport
        async with hostile_peer(a.address) as peer:
            # Announce 4 MiB (over the budget), send only 100 KiB of it.
            length = 4 * MiB
            await peer.send_raw(length.to_bytes(4, "big") + b"\x5a" * (100 * KiB))
            with anyio.fail_after(20):
                await wait_until(lambda: node_transport.drops.get("frame_buffers_full", 0) == 1)
        async with a.open_process(name="sink") as sink, hostile_peer(a.address) as peer:
            payload = b"\x07" * (int(1.5 * MiB))
            await peer.send([Kind.SEND_NAMED, "sink", payload])
            assert await sink.receive(timeout=30) == payload
            assert node_transport.drops.get("frame_buffers_full", 0) == 1


def test_advance_drops_sent_bytes_without_copying() -> None:
    parts: list[bytes | memoryview] = [b"head", b"0123456789"]
    assert _connection._advance(parts, 0) is parts
    assert [bytes(p) for p in _connection._advance(parts, 2)] == [b"ad", b"0123456789"]
    assert [bytes(p) for p in _connection._advance(parts, 4)] == [b"0123456789"]
    rest = _connection._advance(parts, 7)
    assert [bytes(p) for p in rest] == [b"3456789"]
    assert isinstance(rest[0], memoryview) and rest[0].obj is parts[1]
    assert _connection._advance(parts, 14) == []


@pytest.mark.parametrize(
    "items",
    [
        [Kind.CALL, td.Ref("b@h", 9, 3), td.Pid("a@h", 5, 7), "responder", {"seq": 1}],
        [int(Kind.REPLY), td.Pid("a@h", 5, 7), td.Ref("b@h", 2**40, 1), [1, (2, 3), None]],
        [int(Kind.CALL_DOWN), td.Ref("b@h", 1, 1), td.Pid("a@h", 1, 1), "noproc", ""],
        [Kind.RPC_REPLY, 300, -1, True, False, None, 1.5, "é" * 30, {1: 2}, b"x"],
        [int(Kind.CALL_DONE), td.Ref("b@h", 1, 1)],
        list(range(30)),
        [],
    ],
)
def test_encode_items_gives_the_codecs_bytes(items: list[Any]) -> None:
    assert b"".join(codec.encode_items(items)) == codec.encode(items)


def test_encode_items_refuses_what_the_codec_refuses() -> None:
    with pytest.raises(td.EncodeError):
        codec.encode_items([int(Kind.REPLY), td.Pid("a@h", 1, 1), object()])
    with pytest.raises(td.EncodeError):
        codec.encode_items([int(Kind.REPLY), td.Pid("a@h", 1, 1), 2**70])
