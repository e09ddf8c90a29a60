"""Every bound of the SWIM wire decoder, on both sides of its edge.

Each rule guards what an unauthenticated-by-content (but HMAC-tagged) peer
sends: names, sources, incarnations, sequence numbers, metadata, counts and
sizes are fed at exactly the bound (accepted) and one past it (refused),
with non-ASCII text where the bound counts characters.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.swim_wire import SwimDecodeError

EMOJI = "\N{GRINNING FACE}"


def dumps(value: object) -> bytes:
    return bytes(cbor2.dumps(value))


def datagram(*messages: list[Any]) -> list[wire.DatagramMessage]:
    return wire.decode_datagram(dumps(list(messages)))


def refused(match: str, decode: Any, value: object) -> None:
    with pytest.raises(SwimDecodeError, match=match):
        decode(dumps(value))


# (template, may be empty, is a stream message)
TEXT_FIELDS: list[tuple[list[Any], bool, bool]] = [
    ([0, 1, "NAME"], False, False),  # ping target
    ([3, 1, "NAME", "addr"], False, False),  # ping-req target
    ([3, 1, "t", "NAME"], False, False),  # ping-req target address
    ([4, "NAME", "addr", 1, b""], False, False),  # alive name
    ([4, "n", "NAME", 1, b""], False, False),  # alive address
    ([5, "NAME", 1, "src"], False, False),  # suspect name
    ([5, "n", 1, "NAME"], True, False),  # suspect source
    ([6, "NAME", 1, "src"], False, False),  # dead name
    ([6, "n", 1, "NAME"], True, False),  # dead source
    ([7, "NAME", 1], False, False),  # left name
    ([16, 1, "NAME", "r", "ra"], False, True),  # stream ping target
    ([16, 1, "t", "NAME", "ra"], False, True),  # stream ping reply name
    ([16, 1, "t", "r", "NAME"], False, True),  # stream ping reply address
    ([18, 0, "NAME", "a", []], False, True),  # push-pull name
    ([18, 0, "n", "NAME", []], False, True),  # push-pull address
    ([18, 0, "n", "a", [["NAME", "a", 1, 0, b""]]], False, True),  # member name
    ([18, 0, "n", "a", [["n", "NAME", 1, 0, b""]]], False, True),  # member address
]


def _nested(template: list[Any], value: object) -> list[Any]:
    out: list[Any] = []
    for part in template:
        if part == "NAME":
            out.append(value)
        elif type(part) is list:
            out.append(_nested(part, value))
        else:
            out.append(part)
    return out


def _decode(template: list[Any], value: object, stream: bool) -> object:
    message = _nested(template, value)
    if stream:
        return wire.decode_stream(dumps(message))
    return wire.decode_datagram(dumps([message]))


@pytest.mark.parametrize(("template", "may_be_empty", "stream"), TEXT_FIELDS)
def test_name_bound_is_255_characters_not_bytes(
    template: list[Any], may_be_empty: bool, stream: bool
) -> None:
    for text in ("a" * wire.MAX_NAME, EMOJI * wire.MAX_NAME):
        assert text in repr(_decode(template, text, stream))
    for bad in ("a" * (wire.MAX_NAME + 1), EMOJI * (wire.MAX_NAME + 1), b"bytes", 1):
        with pytest.raises(SwimDecodeError, match="at most 255 characters"):
            _decode(template, bad, stream)
    if may_be_empty:
        _decode(template, "", stream)
    else:
        with pytest.raises(SwimDecodeError, match="must not be empty"):
            _decode(template, "", stream)


# (template with "N" for the number, bound)
NUMBER_FIELDS: list[tuple[list[Any], int, bool]] = [
    ([0, "NAME", "t"], wire.MAX_SEQ, False),
    ([1, "NAME"], wire.MAX_SEQ, False),
    ([2, "NAME"], wire.MAX_SEQ, False),
    ([3, "NAME", "t", "a"], wire.MAX_SEQ, False),
    ([4, "n", "a", "NAME", b""], wire.MAX_INCARNATION, False),
    ([5, "n", "NAME", "s"], wire.MAX_INCARNATION, False),
    ([6, "n", "NAME", "s"], wire.MAX_INCARNATION, False),
    ([7, "n", "NAME"], wire.MAX_INCARNATION, False),
    ([16, "NAME", "t", "r", "a"], wire.MAX_SEQ, True),
    ([17, "NAME"], wire.MAX_SEQ, True),
    ([18, 0, "n", "a", [["n", "a", "NAME", 0, b""]]], wire.MAX_INCARNATION, True),
]


@pytest.mark.parametrize(("template", "bound", "stream"), NUMBER_FIELDS)
def test_numbers_are_ints_in_zero_to_bound(template: list[Any], bound: int, stream: bool) -> None:
    assert bound in (2**64, 2**63)
    for good in (0, 1, bound - 1):
        _decode(template, good, stream)
    # 2**64 itself is not a CBOR integer (it would be a refused bignum tag).
    for bad in (-1, True, 1.0, "1", *([bound] if bound < 2**64 else [])):
        with pytest.raises(SwimDecodeError, match=r"must be an int in \[0, "):
            _decode(template, bad, stream)


@pytest.mark.parametrize(
    "template",
    [[4, "n", "a", 1, "NAME"], [18, 0, "n", "a", [["n", "a", 1, 0, "NAME"]]]],
)
def test_metadata_bound_is_512_bytes(template: list[Any]) -> None:
    stream = template[0] == 18
    assert wire.MAX_METADATA == 512
    for good in (b"", b"\xff" * 512):
        _decode(template, good, stream)
    for bad in (b"\xff" * 513, "text", [1]):
        with pytest.raises(SwimDecodeError, match="metadata must be bytes of at most 512"):
            _decode(template, bad, stream)


def test_parts_bound_is_1_to_255() -> None:
    assert wire.MAX_PARTS == 255
    for count in (1, 23, 24, 255):
        assert len(datagram(*[[1, i] for i in range(count)])) == count
    for count in (0, 256):
        refused("1 to 255 messages", wire.decode_datagram, [[1, i] for i in range(count)])
    refused("1 to 255 messages", wire.decode_datagram, {"a": 1})


def test_every_kind_has_its_exact_field_count() -> None:
    good: list[list[Any]] = [
        [0, 1, "t"],
        [1, 1],
        [2, 1],
        [3, 1, "t", "a"],
        [4, "n", "a", 1, b""],
        [5, "n", 1, "s"],
        [6, "n", 1, "s"],
        [7, "n", 1],
    ]
    for message in good:
        datagram(message)
        for bad in (message[:-1], [*message, 0]):
            refused(f"needs {len(message)} fields", wire.decode_datagram, [bad])
    assert [type(m).__name__ for m in datagram(*good)] == [
        "Ping",
        "Ack",
        "Nack",
        "PingReq",
        "Alive",
        "Suspect",
        "Dead",
        "Left",
    ]
    for kind in (True, 8, 16, -1, "0", None):
        refused("unknown message kind", wire.decode_datagram, [[kind, 1]])
    refused("non-empty array", wire.decode_datagram, [[]])
    refused("non-empty array", wire.decode_datagram, [{"a": 1}])


def test_stream_kinds_and_field_counts() -> None:
    good: list[list[Any]] = [[16, 1, "t", "r", "a"], [17, 1], [18, 1, "n", "a", []]]
    names = ["StreamPing", "StreamAck", "PushPull"]
    for message, name in zip(good, names, strict=True):
        assert type(wire.decode_stream(dumps(message))).__name__ == name
        for bad in (message[:-1], [*message, 0]):
            refused(f"needs {len(message)} fields", wire.decode_stream, bad)
    for kind in (0, 1, 4, 19, True):
        refused("unknown message kind", wire.decode_stream, [kind, 1])


def test_push_pull_reply_flag_is_0_or_1() -> None:
    for flag, expected in ((0, False), (1, True)):
        message = wire.decode_stream(dumps([18, flag, "n", "a", []]))
        assert isinstance(message, wire.PushPull)
        assert message.reply is expected
    for bad_flag in (2, -1, True, False, 1.0, None):
        refused("reply flag must be 0 or 1", wire.decode_stream, [18, bad_flag, "n", "a", []])


def test_member_status_is_0_to_3() -> None:
    for status in (0, 1, 2, 3):
        message = wire.decode_stream(dumps([18, 0, "n", "a", [["m", "b", 1, status, b""]]]))
        assert isinstance(message, wire.PushPull)
        assert message.members[0].status == status
    for bad_status in (-1, 4, True, "0"):
        refused(
            "unknown member status",
            wire.decode_stream,
            [18, 0, "n", "a", [["m", "b", 1, bad_status, b""]]],
        )


def test_member_state_is_an_array_of_five() -> None:
    for bad in (["m", "b", 1, 0], ["m", "b", 1, 0, b"", 0], ("m",), "m"):
        refused("array of 5 fields", wire.decode_stream, [18, 0, "n", "a", [bad]])


def test_push_pull_member_bound_is_exact() -> None:
    # A million entries are counted before any is looked at: one past the
    # bound is refused for its length, the bound itself reaches the entries.
    bound = wire.MAX_PUSH_PULL_MEMBERS
    assert bound == 1_000_000
    refused("at most 1000000 members", wire.decode_stream, [18, 0, "n", "a", [0] * (bound + 1)])
    refused("array of 5 fields", wire.decode_stream, [18, 0, "n", "a", [0] * bound])
    refused("at most 1000000 members", wire.decode_stream, [18, 0, "n", "a", "x"])


def _alive_of_size(size: int) -> bytes | None:
    for meta in range(wire.MAX_METADATA + 1):
        for name in ("n", "nn"):
            part = wire.encode(wire.Alive(name, "a", 1, b"\x00" * meta))
            if len(part) == size:
                return part
    return None


def _datagram_of_size(size: int) -> bytes:
    # Alive messages padded with metadata, the last two sized so that the
    # datagram (more than 24 parts: a 2-byte head) is exactly ``size`` bytes.
    full = wire.encode(wire.Alive("n", "a", 1, b"\x00" * 500))
    parts = [full] * ((size - 2) // len(full) - 1)
    rest = size - 2 - len(full) * len(parts)
    for split in range(rest // 2, rest):
        first, second = _alive_of_size(split), _alive_of_size(rest - split)
        if first is not None and second is not None:
            data = wire.pack([*parts, first, second])
            assert len(data) == size
            return data
    raise AssertionError(f"no datagram of {size} bytes")


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_datagram_size_bound_is_65535_bytes(kind: type) -> None:
    assert wire.MAX_DATAGRAM == 65_535
    assert len(wire.decode_datagram(kind(_datagram_of_size(65_535)))) > 100
    with pytest.raises(SwimDecodeError, match="larger than 65535 bytes"):
        wire.decode_datagram(kind(_datagram_of_size(65_536)))


def test_other_inputs_are_refused_by_type() -> None:
    for decode in (wire.decode_datagram, wire.decode_stream):
        with pytest.raises(SwimDecodeError, match="must be bytes, got str"):
            decode("x" * 70_000)  # type: ignore[arg-type]


def test_decoder_depth_is_four() -> None:
    # A push-pull is three levels deep; four are allowed, five are not.
    refused("unknown message kind", wire.decode_datagram, [[[[1]]]])
    refused("max_depth=4", wire.decode_datagram, [[[[[1]]]]])


@pytest.mark.parametrize("count", [0, 1, 23, 24, 255])
def test_pack_and_packed_size_agree(count: int) -> None:
    parts = [wire.encode(wire.Ack(i)) for i in range(count)]
    data = wire.pack(parts)
    assert len(data) == wire.packed_size(sum(map(len, parts)), count)
    assert data == dumps([[1, i] for i in range(count)])


def test_pack_refuses_256_parts() -> None:
    with pytest.raises(ValueError, match="at most 255 messages, got 256"):
        wire.pack([wire.encode(wire.Ack(1))] * 256)


def test_decode_errors_are_typed_for_what_cbor2_raises() -> None:
    # Malformed, truncated and trailing input: the typed error, naming what.
    for data in (b"", b"\x81", b"\x81\x82\x01\x01\x00", b"\xff"):
        with pytest.raises(SwimDecodeError, match="bad datagram"):
            wire.decode_datagram(data)
        with pytest.raises(SwimDecodeError, match="bad stream message"):
            wire.decode_stream(data)


def test_member_status_wire_values_are_fixed() -> None:
    # Part of the wire format: nodes of different versions must agree.
    assert (wire.STATUS_ALIVE, wire.STATUS_SUSPECT, wire.STATUS_DEAD, wire.STATUS_LEFT) == (
        0,
        1,
        2,
        3,
    )


def test_encode_refuses_what_is_not_a_swim_message() -> None:
    for bad in (object(), None, [1, 2], wire.MemberState("n", "a", 1, 0, b"")):
        with pytest.raises(TypeError, match="not a SWIM message"):
            wire.encode(bad)  # type: ignore[arg-type]
