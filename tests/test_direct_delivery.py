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
