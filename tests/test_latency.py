"""The message path's cheaper pieces (docs/internals/latency.rst): call
timeouts from one shared deadline heap, hand-built CALL/REPLY frames, refs
that cache their hash, ids decoded without re-running the name's regex for
known node names, and a local send's frame size counted, not encoded."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from process_helpers import cluster
from virtual import anyio_backend, fake_network

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._deadlines import COMPACT_SLACK, Deadlines
from trio_distribute._ids import unchecked_id
from trio_distribute._proto.kinds import Kind

__all__ = ["anyio_backend", "fake_network"]  # fixtures


async def silent(proc: td.Process) -> None:
    """Takes calls and never answers."""
    async for _ in proc:
        pass


async def echo(proc: td.Process) -> None:
    async for call in proc:
        await proc.reply(call, call.request)


def deadlines_of(node: td.Node) -> Deadlines:
    deadlines = node._calls.deadlines
    assert deadlines is not None
    return deadlines


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_call_times_out_after_its_timeout_not_before(remote: bool) -> None:
    with anyio.fail_after(100):
        async with cluster("a", "b") as (a, b):
            pid = await (b if remote else a).spawn(silent)
            async with a.open_process() as me:
                start = anyio.current_time()
                with pytest.raises(td.CallTimeoutError):
                    await me.call(pid, "q", timeout=7.5)
                assert 7.5 <= anyio.current_time() - start < 8.0
                assert deadlines_of(a).waiting == 0


async def test_a_shorter_timeout_is_kept_while_a_longer_one_waits() -> None:
    # The heap's task sleeps until the earliest deadline: a later call with
    # an earlier deadline must wake it, or it would wait as long as the
    # first call.
    with anyio.fail_after(1000):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(silent)
            async with a.open_process() as slow, a.open_process() as quick:
                ended: dict[str, float] = {}
                start = anyio.current_time()

                async def ask(me: td.Process, label: str, timeout: float) -> None:
                    with pytest.raises(td.CallTimeoutError):
                        await me.call(pid, label, timeout=timeout)
                    ended[label] = anyio.current_time() - start

                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask, slow, "slow", 12.0)
                    await anyio.sleep(1)
                    tg.start_soon(ask, quick, "quick", 2.0)
                assert 3.0 <= ended["quick"] < 3.5
                assert 12.0 <= ended["slow"] < 12.5


async def test_a_cancelled_call_leaves_no_deadline_behind() -> None:
    with anyio.fail_after(100):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(silent)
            async with a.open_process() as me:
                with anyio.move_on_after(1):
                    await me.call(pid, "q", timeout=5)
                assert deadlines_of(a).waiting == 0
                assert a._calls.sizes()["pending"] == 0
                # Its deadline passing later expires nothing and wakes no one.
                await anyio.sleep(5)
                assert deadlines_of(a).waiting == 0


async def test_timed_calls_one_after_another_keep_the_heap_small() -> None:
    # Finished calls leave their deadlines in the heap (lazy deletion); the
    # heap is compacted once stale entries outnumber live ones, so it never
    # holds more than twice the waiting calls plus COMPACT_SLACK.
    with anyio.fail_after(100):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(echo)
            async with a.open_process() as me:
                most = 0
                for i in range(3 * COMPACT_SLACK + 10):
                    assert await me.call(pid, i, timeout=3) == i
                    most = max(most, len(deadlines_of(a)))
                assert most <= 2 * 1 + COMPACT_SLACK  # one call waits at a time
                assert deadlines_of(a).waiting == 0
                # Once the deadlines have passed, the task empties the heap
                # and ends (the node's task count is back to its baseline).
                await anyio.sleep(3.5)
                assert len(deadlines_of(a)) == 0
                assert not deadlines_of(a)._started
                # The next timed call starts it again, and times out.
                slow = await b.spawn(silent)
                with pytest.raises(td.CallTimeoutError):
                    await me.call(slow, 0, timeout=0.5)


async def test_a_node_that_never_calls_with_a_timeout_runs_no_timer_task() -> None:
    with anyio.fail_after(100):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(echo)
            async with a.open_process() as me:
                assert await me.call(pid, 1, timeout=None) == 1
            assert not deadlines_of(a)._started
            async with a.open_process() as me:
                assert await me.call(pid, 1, timeout=5) == 1
            assert deadlines_of(a)._started


# ------------------------------------------------------------------ frames


@pytest.mark.parametrize(
    "request_",
    [None, 1, "s" * 30, {"seq": 1, "body": b"x" * 16}, [1, [2, [3]]], td.Pid("c@h", 9, 2)],
)
async def test_call_and_reply_frames_are_the_codecs_bytes(request_: Any) -> None:
    async with cluster("a") as (a,):
        calls = a._calls
        ref = a._monitors.new_ref()
        caller = td.Pid("b@h", 3, 1)
        for dest in (td.Pid("a@h", 4, 1), "name"):
            expected = a._transport.encode_frame([Kind.CALL, ref, caller, dest, request_])
            assert calls._call_frame(ref, caller, dest, request_) == expected
        expected = a._transport.encode_frame([Kind.REPLY, caller, ref, request_])
        assert calls._reply_frame(caller, ref, request_) == expected


async def test_call_frames_refuse_what_the_codec_refuses() -> None:
    async with cluster("a") as (a,):
        calls = a._calls
        ref = a._monitors.new_ref()
        caller = td.Pid("b@h", 3, 1)
        # The deepest request that encodes on its own: inside a frame's
        # array it is one level too deep, as for codec.encode of the frame.
        deep: Any = 1
        while True:
            try:
                codec.encode([deep])
            except td.EncodeError:
                break
            deep = [deep]
        codec.encode(deep)
        with pytest.raises(td.EncodeError):
            codec.encode([Kind.CALL, ref, caller, "name", deep])
        with pytest.raises(td.EncodeError):
            calls._call_frame(ref, caller, "name", deep)
        with pytest.raises(td.EncodeError):
            calls._reply_frame(caller, ref, object())
        big = b"x" * a._transport.config.max_message_size
        with pytest.raises(td.MessageTooLargeError):
            calls._call_frame(ref, caller, "name", big)
        with pytest.raises(td.MessageTooLargeError):
            calls._reply_frame(caller, ref, big)


# ---------------------------------------------------------------------- ids


def test_an_id_built_unchecked_equals_and_hashes_as_a_checked_one() -> None:
    pid = unchecked_id(td.Pid, "a@127.0.0.1", 7, 3)
    ref = unchecked_id(td.Ref, "a@127.0.0.1", 7, 3)
    for made, checked in ((pid, td.Pid("a@127.0.0.1", 7, 3)), (ref, td.Ref("a@127.0.0.1", 7, 3))):
        assert type(made) is type(checked)
        assert made == checked
        assert hash(made) == hash(checked) == hash(made)
        assert {made: 1}[checked] == 1


def test_ref_caches_its_hash() -> None:
    ref = td.Ref("a@127.0.0.1", 7, 3)
    first = hash(ref)
    # The cached value is what later hashes return (a frozen class may).
    object.__setattr__(ref, "_attrs_cached_hash", first + 1)
    assert hash(ref) == first + 1


@pytest.mark.parametrize("kind", [td.Pid, td.Ref])
def test_decoded_ids_of_a_known_node_are_still_checked(kind: type[td.Pid | td.Ref]) -> None:
    import cbor2

    tag = codec.PID_TAG if kind is td.Pid else codec.REF_TAG
    node = f"known-{kind.__name__}@127.0.0.1"
    # A decode that misses the cache validates the name and remembers it.
    fresh = codec.decode(cbor2.dumps(cbor2.CBORTag(tag, [node, 99, 1])))
    assert type(fresh) is kind and fresh == kind(node, 99, 1)
    assert hash(fresh) == hash(kind(node, 99, 1))
    assert node in codec._VALID_NODES
    # The known name skips the regex, not the checks of the id's numbers.
    for bad in ([node, -1, 1], [node, 1, -1], [node, True, 1], ["no at sign", 1, 1]):
        with pytest.raises(td.DecodeError):
            codec.decode(cbor2.dumps(cbor2.CBORTag(tag, bad)))
    another = codec.decode(cbor2.dumps(cbor2.CBORTag(tag, [node, 100, 1])))
    assert type(another) is kind and another == kind(node, 100, 1)


# -------------------------------------------------------------- local sends


@pytest.mark.parametrize("id_", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63])
@pytest.mark.parametrize("creation", [0, 1, 300, 2**40])
@pytest.mark.parametrize("node", ["a@h", "n" * 64 + "@" + "h" * 200])
def test_a_local_sends_counted_head_is_the_encoded_heads_size(
    id_: int, creation: int, node: str
) -> None:
    from trio_distribute.messaging import _ARRAY_OF_3, _pid_frame_head_size

    pid = td.Pid(node, id_, creation)
    for kind in (Kind.SEND, Kind.SEND_NAMED):
        encoded = _ARRAY_OF_3 + codec.encode(int(kind)) + codec.encode(pid)
        assert _pid_frame_head_size(pid) == len(encoded)
