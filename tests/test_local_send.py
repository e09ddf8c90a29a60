"""A local send behaves like a remote one, and ``receive(timeout=0)``
takes what is already queued."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from property_examples import examples

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._correlation import correlation_id
from trio_distribute.messaging import _PLAIN_DEPTH, _plain_copy, _Unusual
from trio_distribute.testing import open_cluster

COOKIE = "test-cookie"
FAST = td.NodeConfig.local()


@td.message("test.local_send.point", version=1)
@attrs.frozen
class Point:
    x: int
    tags: list[str]


def samples(pid: td.Pid) -> list[Any]:
    return [
        (1, 2, (3, "four")),
        {"nested": [1, (2, 3)], b"k": None, 7: 1.5},
        [pid, td.Pid("z@127.0.0.1", 9, 1)],
        Point(3, ["a", "b"]),
        "é" * 300,
        b"x" * 1000,
        2**64 - 1,
        -(2**64),
        True,
        None,
        2.5,
        "short",
        b"short",
        pid,
    ]


async def test_local_receiver_gets_what_a_remote_one_gets() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a", "b"], cookie=COOKIE, config=FAST) as (a, b):
            async with b.open_process() as remote, a.open_process(name="here") as local:
                for message in samples(local.pid):
                    await b.send(local.pid, message)
                    over_the_wire = await local.receive()
                    await a.send(local.pid, message)
                    by_pid = await local.receive()
                    await a.send("here", message)
                    by_name = await local.receive()
                    await a.send(("here", a.name), message)
                    by_tuple = await local.receive()
                    for got in (by_pid, by_name, by_tuple):
                        assert got == over_the_wire
                        assert type(got) is type(over_the_wire)
                        assert repr(got) == repr(over_the_wire)
                assert remote.pending() == 0
                # The tuple arrived as a list, as it does over the wire.
                await a.send(local.pid, (1, 2))
                assert await local.receive() == [1, 2]


async def test_local_receiver_never_shares_the_senders_objects() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a"], cookie=COOKIE, config=FAST) as (a,):
            async with a.open_process() as proc:
                sent = {"items": [1, 2]}
                await a.send(proc.pid, sent)
                sent["items"].append(3)
                got = await proc.receive()
                assert got == {"items": [1, 2]}
                assert got is not sent
                point = Point(1, ["x"])
                await a.send(proc.pid, point)
                received = await proc.receive()
                assert received == point and received.tags is not point.tags


async def test_what_cannot_travel_raises_at_a_local_sender_too() -> None:
    with anyio.fail_after(10):
        config = td.NodeConfig.local(max_message_size=1024)
        async with open_cluster(["a", "b"], cookie=COOKIE, config=config) as (a, b):
            async with a.open_process(name="here") as proc:
                for dest in (proc.pid, "here", ("here", a.name), ("nobody", a.name)):
                    with pytest.raises(td.EncodeError) as remote:
                        await b.send(proc.pid, object())
                    with pytest.raises(td.EncodeError) as local:
                        await a.send(dest, object())
                    assert str(local.value) == str(remote.value)
                    with pytest.raises(td.EncodeError):
                        await a.send(dest, [2**64])
                    with pytest.raises(td.EncodeError):
                        await a.send(dest, "lone \udc80 surrogate")
                    with pytest.raises(td.MessageTooLargeError):
                        await b.send(proc.pid, b"x" * 2000)
                    with pytest.raises(td.MessageTooLargeError):
                        await a.send(dest, b"x" * 2000)
                assert proc.pending() == 0


async def test_traced_local_sends_are_copied_too() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a"], cookie=COOKIE, config=FAST) as (a,):
            async with a.open_process(name="here") as proc:
                token = correlation_id.set("trace-1")
                try:
                    await a.send(proc.pid, (1, 2))
                    await a.send("here", (3,))
                    with pytest.raises(td.EncodeError):
                        await a.send(proc.pid, object())
                finally:
                    correlation_id.reset(token)
                assert await proc.receive() == [1, 2]
                assert correlation_id.get() == "trace-1"
                assert await proc.receive() == [3]


@pytest.mark.parametrize("timeout", [0, 1e-9, -1])
async def test_receive_with_no_time_left_takes_what_is_queued(timeout: float) -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a"], cookie=COOKIE, config=FAST) as (a,):
            async with a.open_process() as proc:
                with pytest.raises(TimeoutError):
                    await proc.receive(timeout=timeout)
                await a.send(proc.pid, "first")
                await a.send(proc.pid, "second")
                assert await proc.receive(timeout=timeout) == "first"
                # Selective: the matching one, even behind another.
                second = await proc.receive(timeout=timeout, match=lambda m: m == "second")
                assert second == "second"
                await a.send(proc.pid, "other")
                with pytest.raises(TimeoutError):
                    await proc.receive(timeout=timeout, match=lambda m: m == "missing")
                assert proc.pending() == 1


def plain_data() -> st.SearchStrategy[Any]:
    pid = st.builds(
        td.Pid,
        st.sampled_from(["a@127.0.0.1", "b@h"]),
        st.integers(0, 2**40),
        st.integers(0, 2**32),
    )
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**65), 2**65)
        | st.sampled_from(
            [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -(2**64)]
        )
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text()
        | st.binary()
        | pid
    )
    keys = st.text(max_size=30) | st.binary(max_size=30) | st.integers(-5, 5)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=30)
            | st.tuples(inner, inner)
            | st.dictionaries(keys, inner, max_size=8)
        ),
        max_leaves=60,
    )


@settings(max_examples=examples(200), deadline=None)
@given(plain_data())
def test_the_fast_copy_is_the_codec_round_trip(value: Any) -> None:
    try:
        encoded = codec.encode(value)
    except td.EncodeError:
        encoded = None
    try:
        copy, size = _plain_copy(value, _PLAIN_DEPTH)
    except (_Unusual, UnicodeEncodeError):
        return  # left to the codec (which then raises or round-trips itself)
    assert encoded is not None, "the fast copy accepted what the codec refuses"
    assert size == len(encoded)
    decoded = codec.decode(encoded)
    assert repr(copy) == repr(decoded)  # values and types (tuple vs list), NaN included
