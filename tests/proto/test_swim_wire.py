"""SWIM message encoding (trio_distribute._proto.swim_wire)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from property_examples import examples

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.swim_wire import SwimDecodeError
from trio_distribute.errors import DecodeError

names = st.text(min_size=1, max_size=40)
sources = st.text(max_size=40)
seqs = st.integers(0, 2**64 - 1)
incarnations = st.integers(0, 2**63 - 1)
metadata = st.binary(max_size=512)

datagram_messages: st.SearchStrategy[wire.DatagramMessage] = st.one_of(
    st.builds(wire.Ping, seqs, names),
    st.builds(wire.Ack, seqs),
    st.builds(wire.Nack, seqs),
    st.builds(wire.PingReq, seqs, names, names),
    st.builds(wire.Alive, names, names, incarnations, metadata),
    st.builds(wire.Suspect, names, incarnations, sources),
    st.builds(wire.Dead, names, incarnations, sources),
    st.builds(wire.Left, names, incarnations),
)
member_states = st.builds(wire.MemberState, names, names, incarnations, st.integers(0, 3), metadata)
stream_messages: st.SearchStrategy[wire.StreamMessage] = st.one_of(
    st.builds(wire.StreamPing, seqs, names, names, names),
    st.builds(wire.StreamAck, seqs),
    st.builds(
        wire.PushPull, st.booleans(), names, names, st.lists(member_states, max_size=5).map(tuple)
    ),
)


@settings(max_examples=examples(300))
@given(st.lists(datagram_messages, min_size=1, max_size=30))
def test_datagram_round_trip_and_size(messages: list[wire.DatagramMessage]) -> None:
    parts = [wire.encode(m) for m in messages]
    payload = wire.pack(parts)
    assert len(payload) == wire.packed_size(sum(map(len, parts)), len(parts))
    assert wire.decode_datagram(payload) == messages


@settings(max_examples=examples(200))
@given(stream_messages)
def test_stream_round_trip(message: wire.StreamMessage) -> None:
    assert wire.decode_stream(wire.encode(message)) == message


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_raises_only_the_typed_error(data: bytes) -> None:
    for decode in (wire.decode_datagram, wire.decode_stream):
        with contextlib.suppress(SwimDecodeError):
            decode(data)


@settings(max_examples=300)
@given(st.lists(datagram_messages, min_size=1, max_size=5), st.data())
def test_mutated_datagrams_raise_only_the_typed_error(
    messages: list[wire.DatagramMessage], data: st.DataObject
) -> None:
    payload = bytearray(wire.pack([wire.encode(m) for m in messages]))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(payload)))
    try:
        decoded = wire.decode_datagram(bytes(payload[:cut]))
    except SwimDecodeError:
        return
    assert all(isinstance(m, wire.DatagramMessage) for m in decoded)


def test_error_is_a_value_error_and_a_decode_error() -> None:
    assert issubclass(SwimDecodeError, ValueError)
    assert issubclass(SwimDecodeError, DecodeError)


def dumps(value: object) -> bytes:
    return bytes(cbor2.dumps(value))


@pytest.mark.parametrize(
    "value",
    [
        [],  # no messages
        [[]],  # empty message
        [[99, 1]],  # unknown kind
        [[0, 1]],  # ping missing its target
        [[0, -1, "a"]],  # negative seq
        [[0, 2**64, "a"]],  # seq too large
        [[0, True, "a"]],  # a bool is not an int
        [[0, 1, ""]],  # empty target
        [[0, 1, "a" * 256]],  # name too long
        [[4, "a", "addr", 2**63, b""]],  # incarnation beyond 2**63 - 1
        [[4, "a", "addr", 1, b"x" * 513]],  # metadata too large
        [[4, "a", "addr", 1, "text"]],  # metadata must be bytes
        [[5, "a", 1.5, "b"]],  # float incarnation
        [[1, 1]] * 256,  # too many parts
        {"not": "a list"},
        "text",
    ],
)
def test_invalid_datagrams(value: object) -> None:
    with pytest.raises(SwimDecodeError):
        wire.decode_datagram(dumps(value))


def test_trailing_bytes_and_tags_are_refused() -> None:
    good = wire.pack([wire.encode(wire.Ack(1))])
    with pytest.raises(SwimDecodeError):
        wire.decode_datagram(good + b"\x00")
    with pytest.raises(SwimDecodeError):
        wire.decode_datagram(dumps([[1, cbor2.CBORTag(2, b"\x01")]]))  # bignum tag


@pytest.mark.parametrize(
    "value",
    [
        [16, 1, "a", "b"],
        [17],
        [18, 2, "a", "b", []],
        [18, 0, "a", "b", [["a", "b", 1, 4, b""]]],  # unknown status
        [18, 0, "a", "b", [["a", "b", 1, 0]]],  # short member state
        [18, 0, "a", "b", "x"],
        [0, 1, "a"],  # a datagram message is not a stream message
    ],
)
def test_invalid_stream_messages(value: object) -> None:
    with pytest.raises(SwimDecodeError):
        wire.decode_stream(dumps(value))


def test_non_bytes_input() -> None:
    with pytest.raises(SwimDecodeError):
        wire.decode_datagram("text")  # type: ignore[arg-type]
