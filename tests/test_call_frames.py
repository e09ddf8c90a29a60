"""CALL and REPLY frames whose heads the node reads by hand.

A call's request and its reply are read without decoding the frame's head
(the pids and the ref are matched byte for byte); anything that head
reading does not take is decoded in full and handled as any frame. These
tests send, from a peer that completed the real handshake, frames that
each take one way out of the hand-read path, and check that the node
answers, refuses or counts each as the full decode does.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from hostile_peer import HostilePeer
from process_helpers import cluster, drops_at
from virtual import anyio_backend, fake_network, hostile_member

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._calls import _NAMES_KEPT
from trio_distribute._proto._sliced import SLICED_ABOVE
from trio_distribute._proto.frames import frame
from trio_distribute._proto.kinds import Kind
from trio_distribute.testing import wait_until
from trio_distribute.transport import Transport

__all__ = ["anyio_backend", "fake_network"]  # fixtures

MALLORY = "mallory@127.0.0.1"
CREATION = 7
CALLER = td.Pid(MALLORY, 1, CREATION)

#: A CBOR tag no node knows: a value that does not decode.
UNKNOWN_TAG = b"\xd9\xff\xf0\x01"


async def silent(proc: td.Process) -> None:
    await proc.receive()


async def keeper(proc: td.Process) -> None:
    """Keeps every call it receives, unanswered."""
    while True:
        await proc.receive()


def mallory(node: td.Node) -> AbstractAsyncContextManager[HostilePeer]:
    return hostile_member(node, name=MALLORY, creation=CREATION)


async def next_of(peer: HostilePeer, kind: int) -> list[Any]:
    while True:
        item = await peer.receive()
        if isinstance(item, list) and item[0] == kind:
            return item


def _kind(payload: bytes | bytearray) -> int:
    item = codec.decode(payload)
    assert isinstance(item, list)
    kind: int = item[0]
    return kind


def raw_frame(*parts: bytes) -> bytes:
    """A frame built from encoded parts: the array head is the caller's."""
    return frame(b"".join(parts))


async def test_a_reply_reaches_its_call_only_with_its_ref_and_caller() -> None:
    with anyio.fail_after(30):
        async with cluster("a") as (a,), mallory(a) as peer, a.open_process() as me:
            async with anyio.create_task_group() as tg:
                result: list[Any] = []

                async def call() -> None:
                    result.append(await me.call(td.Pid(MALLORY, 9, CREATION), "q", timeout=None))

                tg.start_soon(call)
                _, ref, caller, _, request = await next_of(peer, Kind.CALL)
                assert (caller, request) == (me.pid, "q")
                other = td.Pid(a.name, caller.id + 1000, a.creation)
                # Another pid of this node as the caller: a late reply, counted.
                await peer.send([Kind.REPLY, other, ref, "not yours"])
                await wait_until(drops_at(a, "late_reply", 1))
                # The caller's pid, but of an earlier run: the same.
                stale = td.Pid(a.name, caller.id, a.creation ^ 1)
                await peer.send([Kind.REPLY, stale, ref, "not yours either"])
                await wait_until(drops_at(a, "late_reply", 2))
                # A value that does not decode: that frame alone is lost.
                head = codec.encode([Kind.REPLY, caller, ref, 0])[:-1]
                await peer.send_raw(raw_frame(head, UNKNOWN_TAG))
                await wait_until(drops_at(a, "decode_error", 1))
                assert not result
                await peer.send([Kind.REPLY, caller, ref, {"answer": [1, (2, 3)]}])
                await wait_until(lambda: bool(result))
            assert result == [{"answer": [1, [2, 3]]}]
            assert a.statistics().drops.get("protocol_error") is None
            assert MALLORY in a.nodes()


@pytest.mark.parametrize("whose", ["an earlier run", "another node"])
async def test_a_reply_for_a_ref_this_node_never_made_closes_the_connection(whose: str) -> None:
    with anyio.fail_after(30):
        async with cluster("a") as (a,), mallory(a) as peer, a.open_process() as me:
            async with anyio.create_task_group() as tg:
                failed: list[td.ProcessDownError] = []

                async def call() -> None:
                    try:
                        await me.call(td.Pid(MALLORY, 9, CREATION), "q", timeout=None)
                    except td.ProcessDownError as exc:
                        failed.append(exc)

                tg.start_soon(call)
                _, ref, caller, _, _ = await next_of(peer, Kind.CALL)
                if whose == "an earlier run":
                    stale = td.Ref(ref.node, ref.id, ref.creation ^ 1)
                else:  # a name as long as ours, the same id and creation
                    stale = td.Ref(ref.node.replace("a@", "b@"), ref.id, ref.creation)
                await peer.send([Kind.REPLY, caller, stale, "x"])
                await wait_until(drops_at(a, "protocol_error", 1))
                await wait_until(lambda: bool(failed))
            assert failed[0].reason.kind == "noconnection"


async def test_calls_the_head_reading_does_not_take_are_served_as_any_frame() -> None:
    with anyio.fail_after(30):
        async with cluster("a") as (a,), mallory(a) as peer:
            pid = await a.spawn(keeper)
            # A pid of this node's earlier run: answered noproc.
            ref1 = td.Ref(MALLORY, 1, CREATION)
            stale = td.Pid(a.name, pid.id, a.creation ^ 1)
            await peer.send([Kind.CALL, ref1, CALLER, stale, "q"])
            assert await next_of(peer, Kind.CALL_DOWN) == [
                Kind.CALL_DOWN,
                ref1,
                CALLER,
                "noproc",
                "",
            ]
            # A request that does not decode: that frame alone is lost.
            ref2 = td.Ref(MALLORY, 2, CREATION)
            head = codec.encode([Kind.CALL, ref2, CALLER, pid, 0])[:-1]
            await peer.send_raw(raw_frame(head, UNKNOWN_TAG))
            await wait_until(drops_at(a, "decode_error", 1))
            assert a.statistics().calls == 0
            # Served, with a ref and a caller of a creation other than the
            # connection's (any creation of the peer's name is the peer's).
            ref3 = td.Ref(MALLORY, 3, CREATION + 1)
            caller3 = td.Pid(MALLORY, 2**40, CREATION + 1)
            await peer.send([Kind.CALL, ref3, caller3, pid, "q"])
            await wait_until(lambda: a.statistics().calls == 1)
            # The same ref again while it is served: a protocol error.
            await peer.send([Kind.CALL, ref3, caller3, pid, "again"])
            await wait_until(drops_at(a, "protocol_error", 1))
            await wait_until(lambda: MALLORY not in a.nodes())


#: A name as long as the peer's: a head that differs from the peer's in the
#: name alone still lines up byte for byte after it.
LOOKALIKE = "mallorz@127.0.0.1"


@pytest.mark.parametrize(
    "what",
    ["ref of another node", "caller of another node", "caller a ref", "callee of another node"],
)
async def test_a_call_whose_ids_are_not_the_peers_and_ours_closes_the_connection(
    what: str,
) -> None:
    with anyio.fail_after(30):
        async with cluster("a") as (a,):
            pid = await a.spawn(keeper)
            ref: object = td.Ref(MALLORY, 1, CREATION)
            caller: object = CALLER
            callee: object = pid
            if what == "ref of another node":
                ref = td.Ref(LOOKALIKE, 1, CREATION)
            elif what == "caller of another node":
                caller = td.Pid(LOOKALIKE, 1, CREATION)
            elif what == "caller a ref":
                caller = td.Ref(MALLORY, 1, CREATION)
            else:
                callee = td.Pid(a.name.replace("a@", "b@"), pid.id, a.creation)
            async with mallory(a) as peer:
                await peer.send([Kind.CALL, ref, caller, callee, "q"])
                await wait_until(drops_at(a, "protocol_error", 1))
            assert a.statistics().calls == 0


async def test_every_call_a_process_ends_with_gets_its_call_down() -> None:
    async def ends_on_third(proc: td.Process) -> None:
        for _ in range(3):
            await proc.receive()

    with anyio.fail_after(30):
        async with cluster("a") as (a,), mallory(a) as peer:
            pid = await a.spawn(ends_on_third)
            refs = [td.Ref(MALLORY, i, CREATION) for i in (1, 2, 3)]
            for ref in refs:
                await peer.send([Kind.CALL, ref, CALLER, pid, "q"])
            # The third call ends the process with the first two unanswered.
            downs = [await next_of(peer, Kind.CALL_DOWN) for _ in range(3)]
            assert sorted(down[1].id for down in downs) == [1, 2, 3]
            assert {down[3] for down in downs} == {"normal"}
            await wait_until(lambda: a.statistics().calls == 0)


async def test_an_honest_call_and_its_reply_are_read_without_a_full_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def doubler(proc: td.Process) -> None:
        async for call in proc:
            await proc.reply(call, call.request * 2)

    decoded: list[int] = []
    full = Transport.dispatch

    def spy(self: Transport, conn: Any, payload: bytes | bytearray) -> None:
        decoded.append(_kind(payload))
        full(self, conn, payload)

    monkeypatch.setattr(Transport, "dispatch", spy)
    with anyio.fail_after(30):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(doubler)
            async with a.open_process() as me:
                for i in range(5):
                    assert await me.call(pid, i) == 2 * i
    assert decoded  # the spy saw the frames that are decoded in full
    assert Kind.CALL not in decoded and Kind.REPLY not in decoded
    # An answered call is forgotten by both sides without a CALL_DONE.
    assert Kind.CALL_DONE not in decoded


async def test_a_big_request_and_its_big_reply_are_decoded_in_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def echo(proc: td.Process) -> None:
        async for call in proc:
            await proc.reply(call, call.request)

    sliced: list[int] = []
    in_slices = Transport.dispatch_sliced

    async def spy(self: Transport, conn: Any, payload: bytes | bytearray) -> None:
        sliced.append(_kind(payload))
        await in_slices(self, conn, payload)

    monkeypatch.setattr(Transport, "dispatch_sliced", spy)
    big = b"\xab" * (SLICED_ABOVE + 1)
    with anyio.fail_after(30):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(echo)
            async with a.open_process() as me:
                assert await me.call(pid, [big, 1], timeout=10) == [big, 1]
    # Not decoded in one go: the loop runs between the slices.
    assert sliced == [Kind.CALL, Kind.REPLY]


async def test_heads_cut_short_or_malformed_are_refused_by_the_full_decode() -> None:
    with anyio.fail_after(30):
        async with cluster("a") as (a,), mallory(a) as peer:
            call_start = b"\x85" + codec.encode(Kind.CALL) + codec.id_head(td.Ref, MALLORY)
            reply_start = b"\x84" + codec.encode(Kind.REPLY) + codec.id_head(td.Pid, a.name)
            bad = [
                raw_frame(call_start),  # ends where the ref's id starts
                raw_frame(call_start, b"\x61x", b"\x07"),  # a text id
                raw_frame(reply_start),  # ends where the caller's id starts
                raw_frame(reply_start, b"\x20"),  # a negative id
            ]
            for n, data in enumerate(bad, start=1):
                await peer.send_raw(data)
                await wait_until(drops_at(a, "decode_error", n))
            assert MALLORY in a.nodes()


async def test_a_peers_count_of_calls_waiting_follows_each_call() -> None:
    config = td.NodeConfig.local(max_monitors_per_peer=2)
    with anyio.fail_after(30):
        async with cluster("a", config=config) as (a,), mallory(a) as peer:
            pid = await a.spawn(keeper)

            def ref(i: int) -> td.Ref:
                return td.Ref(MALLORY, i, CREATION)

            async def served(n: int) -> None:
                await wait_until(lambda: a.statistics().calls == n)
                # The count the limit is checked against.
                assert a._calls.sizes()["serving_by_node"] == n

            for i in (1, 2):
                await peer.send([Kind.CALL, ref(i), CALLER, pid, i])
            await served(2)
            # The caller gave up on one: room for one more.
            await peer.send([Kind.CALL_DONE, ref(1)])
            await served(1)
            await peer.send([Kind.CALL, ref(3), CALLER, pid, 3])
            await served(2)
            for i in (2, 3):
                await peer.send([Kind.CALL_DONE, ref(i)])
            await served(0)
            assert MALLORY not in a._calls._serving_by_node
            assert MALLORY in a.nodes()


async def test_the_names_kept_for_reading_calls_are_bounded() -> None:
    async with cluster("a") as (a,):
        calls = a._calls
        names = [f"n{i}@127.0.0.1" for i in range(_NAMES_KEPT + 1)]
        for name in names:
            assert calls._name_bytes(name) == codec.encode(name)
            assert len(calls._names) <= _NAMES_KEPT
        assert names[-1] in calls._names
