"""Tests of the restricted CBOR codec (trio_distribute.codec).

The registry of @message classes is module-global, so every class here uses
a tag starting with ``test_codec.`` that no other test module uses, and
classes registered inside a test get a tag unique to that test.
"""

from __future__ import annotations

import array
import collections
import contextlib
import datetime
import decimal
import email.mime.text
import enum
import fractions
import ipaddress
import math
import os
import pathlib
import re
import string
import struct
import subprocess
import sys
import textwrap
import threading
import types
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import cbor2
import pytest
from codec_helpers import DictSubclass, ListSubclass, nest
from hash_collisions import colliding_floats, colliding_int_pairs, colliding_ints
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from property_examples import examples

from trio_distribute import codec
from trio_distribute._ids import Pid, Ref
from trio_distribute.codec import (
    DEFAULT_MAX_DEPTH,
    FROZEN_TAG,
    KEYED_MAP_TAG,
    MAX_EQUAL_HASH_KEYS,
    MAX_INT,
    MESSAGE_TAG,
    MIN_INT,
    PID_TAG,
    REF_TAG,
    decode,
    encode,
    encode_frame,
    encoded_size_ok,
    message,
    registered_messages,
)
from trio_distribute.errors import DecodeError, EncodeError, MessageTooLargeError

PID = Pid("b@127.0.0.1", 7, 3)
REF = Ref("a@host.example", 123456789, 2**40)
PID_BYTES = cbor2.dumps(cbor2.CBORTag(62625, ["b@127.0.0.1", 7, 3]))


def roundtrip(value: object) -> object:
    return decode(encode(value))


def tagged(tag: int, content: object) -> bytes:
    """Hand-built CBOR: a tag around plain content, bypassing our encoder."""
    return cbor2.dumps(cbor2.CBORTag(tag, content))


def message_bytes(tag: str, version: int, fields: object) -> bytes:
    return tagged(MESSAGE_TAG, [tag, version, fields])


def encode_keyed(pairs: list[tuple[object, object]], *, freeze: bool = False) -> bytes:
    """Hand-built keyed map (tag 62628); ``freeze`` wraps each key in 62629."""
    flat: list[object] = []
    for key, value in pairs:
        flat.append(cbor2.CBORTag(FROZEN_TAG, list(key)) if freeze else key)  # type: ignore[call-overload]
        flat.append(value)
    return tagged(KEYED_MAP_TAG, flat)


def same(a: object, b: object) -> bool:
    """Structural equality that also compares types (``1 == 1.0 == True``
    and ``0.0 == -0.0`` are not good enough to prove a round trip)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        if len(a) != len(b):
            return False
        for key, value in a.items():
            matches = [k for k in b if same(k, key)]
            if len(matches) != 1 or not same(value, b[matches[0]]):
                return False
        return True
    return a == b


# ---------------------------------------------------------------------------
# Message classes used by the tests
# ---------------------------------------------------------------------------


@message("test_codec.point")
@attrs.frozen
class Point:
    x: int
    y: int


@message("test_codec.envelope", version=3, accepts={2, 3})
@attrs.define
class Envelope:
    sender: Pid
    body: object
    points: list[Point] = attrs.field(factory=list)
    note: str = ""  # added in version 3; version 2 senders leave it out


@message("test_codec.positive")
@attrs.frozen
class Positive:
    n: int = attrs.field(validator=attrs.validators.gt(0))


@message("test_codec.private")
@attrs.define
class Private:
    _secret: str
    derived: int = attrs.field(init=False, default=0)


def _explode(value: object) -> object:
    raise RuntimeError("converter exploded")


@message("test_codec.exploding")
@attrs.define
class Exploding:
    value: object = attrs.field(converter=_explode)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

PRIMITIVES: list[object] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    23,
    24,
    0xC0,
    0xDB,
    0xF7,
    255,
    256,
    -257,
    2**32,
    MAX_INT,
    MIN_INT,
    0.0,
    -0.0,
    1.5,
    0.1,
    1e300,
    -1e-300,
    math.inf,
    -math.inf,
    "",
    "plain",
    "é",
    "日本語",
    "emoji \U0001f389",
    b"",
    b"\x00\xff\xf7\xc2\xd9\xf4\xa1",
    bytes(range(256)),
    [],
    {},
]


@pytest.mark.parametrize("value", PRIMITIVES, ids=repr)
def test_primitives_round_trip(value: object) -> None:
    assert same(roundtrip(value), value)


def test_nan_round_trips() -> None:
    result = roundtrip(math.nan)
    assert isinstance(result, float)
    assert math.isnan(result)


def test_nested_values_with_pids_and_refs_round_trip() -> None:
    value = {
        "pids": [PID, Pid("c@10.0.0.1", 0, 0), [REF, {"deep": [PID]}]],
        PID: "pid as key",
        REF: [1.5, None, b"\xf7\xf8", "ünïcode"],
        (1, PID, ("nested", REF)): {"tuple keys stay tuples": True},
        -5: {b"bytes key": [[[[]]]]},
        None: False,
        2.5: MAX_INT,
    }
    result = roundtrip(value)
    assert same(result, value)


def test_pid_and_ref_wire_format() -> None:
    # tag(62625, ["b@127.0.0.1", 7, 3]), bit for bit.
    assert encode(PID) == (b"\xd9\xf4\xa1\x83\x6bb@127.0.0.1\x07\x03")
    assert encode(PID) == tagged(PID_TAG, [PID.node, PID.id, PID.creation])
    assert encode(REF) == tagged(REF_TAG, [REF.node, REF.id, REF.creation])
    assert decode(tagged(PID_TAG, ["b@127.0.0.1", 7, 3])) == PID


def test_pids_written_by_the_hook_keep_their_place_in_big_outputs() -> None:
    # Our hook writes pre-encoded pid bytes into cbor2's output buffer; make
    # sure they land in order even around cbor2's internal buffer flushes.
    value = [b"a" * 5000, PID, "x" * 10000, REF, [PID] * 3, {"k": PID}, "tail"]
    plain = [
        b"a" * 5000,
        cbor2.CBORTag(PID_TAG, [PID.node, PID.id, PID.creation]),
        "x" * 10000,
        cbor2.CBORTag(REF_TAG, [REF.node, REF.id, REF.creation]),
        [cbor2.CBORTag(PID_TAG, [PID.node, PID.id, PID.creation])] * 3,
        {"k": cbor2.CBORTag(PID_TAG, [PID.node, PID.id, PID.creation])},
        "tail",
    ]
    assert encode(value) == cbor2.dumps(plain)
    assert roundtrip(value) == value


def test_tuples_arrive_as_lists() -> None:
    value = (1, (2, 3), [4, (5,)])
    assert encode(value) == encode([1, [2, 3], [4, [5]]])
    result = roundtrip(value)
    assert same(result, [1, [2, 3], [4, [5]]])


def test_tuple_keys_arrive_as_tuples() -> None:
    # A map key must be hashable, so an array in key position decodes as a
    # tuple: tuple keys round-trip exactly.
    value = {(1, (2, "x")): "a", (): "empty"}
    assert same(roundtrip(value), value)


def test_subclasses_of_allowed_builtins_travel_as_the_base_type() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(enum.StrEnum):
        ALICE = "alice"

    pair = collections.namedtuple("pair", "a b")
    value = [
        Color.RED,
        Name.ALICE,
        pair(1, 2),
        collections.OrderedDict(a=1),
        collections.defaultdict(int, b=2),
    ]
    assert same(roundtrip(value), [1, "alice", [1, 2], {"a": 1}, {"b": 2}])


def test_message_round_trip() -> None:
    env = Envelope(sender=PID, body={"text": "hi", "to": [REF]}, points=[Point(1, 2)], note="n")
    result = roundtrip(env)
    assert isinstance(result, Envelope)
    assert result == env
    assert isinstance(result.points[0], Point)


def test_message_wire_format_uses_field_names() -> None:
    data = encode(Point(3, -4))
    assert data == message_bytes("test_codec.point", 1, {"x": 3, "y": -4})
    tag = cbor2.loads(data)  # plain cbor2 keeps unknown tags, content immutable
    assert tag.tag == MESSAGE_TAG
    assert tag.value[:2] == ("test_codec.point", 1)
    assert dict(tag.value[2]) == {"x": 3, "y": -4}


def test_messages_nest_inside_messages_and_containers() -> None:
    inner = Envelope(sender=PID, body=Point(0, 0))
    outer = Envelope(sender=Pid("z@h", 1, 1), body=[inner, {"p": Point(5, 6)}], points=[])
    assert roundtrip([outer, {"k": outer}]) == [outer, {"k": outer}]


def test_hashable_message_as_dict_key() -> None:
    value = {Point(1, 2): "a", (Point(3, 4), PID): "b"}
    assert roundtrip(value) == value
    # In a key, a message's fields decode immutably: a tuple stays a tuple.
    keyed = roundtrip({Point((1, 2), 3): "c"})  # type: ignore[arg-type]
    assert isinstance(keyed, dict)
    (key,) = keyed
    assert isinstance(key, Point)
    assert same(key.x, (1, 2))


def test_older_accepted_version_uses_defaults_for_new_fields() -> None:
    # What a version-2 sender produces: no "note" field (nor "points").
    data = cbor2.dumps(
        cbor2.CBORTag(
            MESSAGE_TAG,
            [
                "test_codec.envelope",
                2,
                {"sender": cbor2.CBORTag(PID_TAG, ["b@127.0.0.1", 7, 3]), "body": None},
            ],
        )
    )
    result = decode(data)
    assert result == Envelope(sender=PID, body=None, points=[], note="")


def test_private_attribute_fields_travel_by_name() -> None:
    value = Private("s3cret")
    data = encode(value)
    # Fields travel by attrs name; init=False fields stay home.
    content = cbor2.loads(data).value
    assert content[:2] == ("test_codec.private", 1)
    assert dict(content[2]) == {"_secret": "s3cret"}
    result = decode(data)
    assert isinstance(result, Private)
    assert result._secret == "s3cret"


def test_decoded_pids_are_cached_and_cache_is_bounded() -> None:
    data = encode(Pid("cache@test", 1, 1))
    first = decode(data)
    assert decode(data) is first
    for i in range(codec._CACHE_SIZE + 10):
        decode(encode(Pid("cache@test", i, 2)))
    assert len(codec._PID_CACHE) <= codec._CACHE_SIZE
    assert len(codec._PID_BYTES) <= codec._CACHE_SIZE


def test_memoryview_and_bytearray_input() -> None:
    data = encode([PID, {"a": 1}])
    assert decode(memoryview(data)) == [PID, {"a": 1}]
    assert decode(bytearray(data)) == [PID, {"a": 1}]
    assert decode(memoryview(b"xx" + data + b"yy")[2:-2]) == [PID, {"a": 1}]


@pytest.mark.parametrize(
    "value",
    [
        [1.1, 2.2, -3.3e-7],  # float bytes often look like tag heads
        [0xC2, 0xD9F4, 0xF7F7F7F7, MAX_INT - 0x3F],
        ["Ünïcödé and 日本 and \U0001f600"],
        [bytes([0xC2, 0x49, 0xD9, 0x01, 0x02, 0xF7, 0xE0, 0xFF]) * 10],
        {"pid": Pid("n@h", 0xD9D9, 0xF7F8F9)},
    ],
)
def test_values_whose_bytes_look_like_cbor_heads_round_trip(value: object) -> None:
    # Payload bytes that would be tag, simple value or break heads if they
    # started an item must not confuse either side.
    assert same(roundtrip(value), value)


# ---------------------------------------------------------------------------
# Encode refusals
# ---------------------------------------------------------------------------


class _Plain:
    pass


@attrs.define
class _Undecorated:
    a: int = 1


class _PlainEnum(enum.Enum):
    A = 1


class _SubPoint(Point):
    pass


def _generator() -> Any:
    yield 1


REFUSED: list[tuple[object, str]] = [
    ({1, 2}, "set"),
    (frozenset({1}), "frozenset"),
    (datetime.datetime.now(datetime.UTC), "datetime.datetime"),
    (datetime.datetime(2024, 1, 1), "datetime.datetime"),  # naive: cbor2 fails differently
    (datetime.date(2024, 1, 1), "datetime.date"),
    (datetime.time(1, 2), "datetime.time"),
    (datetime.timedelta(1), "datetime.timedelta"),
    (decimal.Decimal("1.5"), "decimal.Decimal"),
    (fractions.Fraction(1, 3), "fractions.Fraction"),
    (uuid.UUID(int=5), "uuid.UUID"),
    (re.compile("a+"), "re.Pattern"),
    (re.compile(b"a+"), "re.Pattern"),
    (ipaddress.ip_address("10.0.0.1"), "ipaddress.IPv4Address"),
    (ipaddress.ip_address("::1"), "ipaddress.IPv6Address"),
    (ipaddress.ip_network("10.0.0.0/8"), "ipaddress.IPv4Network"),
    (ipaddress.ip_network("::/64"), "ipaddress.IPv6Network"),
    (ipaddress.ip_interface("10.0.0.1/8"), "ipaddress.IPv4Interface"),
    (ipaddress.ip_interface("::1/64"), "ipaddress.IPv6Interface"),
    (email.mime.text.MIMEText("hi"), "email.mime.text.MIMEText"),
    (cbor2.CBORTag(1234, "x"), "CBORTag"),
    (cbor2.CBORTag(258, [1]), "CBORTag"),
    (cbor2.CBORSimpleValue(5), "CBORSimpleValue"),
    (cbor2.undefined, "UndefinedType"),
    (1 + 2j, "complex"),
    (_Plain(), "_Plain"),
    (_Undecorated(), "_Undecorated"),
    (_PlainEnum.A, "_PlainEnum"),
    (_SubPoint(1, 2), "_SubPoint"),
    (_Plain, "type"),
    (len, "builtin_function_or_method"),
    (_generator(), "generator"),
    ({}.keys(), "dict_keys"),
    (..., "ellipsis"),
    (bytearray(b"x"), "bytearray"),
    (memoryview(b"x"), "memoryview"),
    (collections.deque([1]), "collections.deque"),
    (range(3), "range"),
    (collections.UserDict(a=1), "collections.UserDict"),
    (collections.UserList([1]), "collections.UserList"),
    (collections.UserString("s"), "collections.UserString"),  # crashes cbor2 6.3
    (collections.ChainMap({"a": 1}), "collections.ChainMap"),
    (types.MappingProxyType({"a": 1}), "mappingproxy"),
    (cbor2.frozendict({"a": 1}), "frozendict"),
    (array.array("i", [1]), "array.array"),
]


@pytest.mark.parametrize(("value", "type_name"), REFUSED, ids=lambda v: type(v).__name__)
def test_encode_refuses_type(value: object, type_name: str) -> None:
    for wrapped in (value, [1, value], {"k": [value]}, Envelope(sender=PID, body=value)):
        with pytest.raises(EncodeError, match=rf"cannot encode value of type \S*{type_name}"):
            encode(wrapped)


def test_encode_refuses_refused_types_as_dict_keys() -> None:
    with pytest.raises(EncodeError, match="of type frozenset"):
        encode({frozenset({1}): 1})
    with pytest.raises(EncodeError, match=r"of type uuid\.UUID"):
        encode({(1, uuid.UUID(int=1)): 1})


def test_undecorated_attrs_class_hint() -> None:
    with pytest.raises(EncodeError, match=r"@trio_distribute\.message"):
        encode(_Undecorated())


@pytest.mark.parametrize("value", [MAX_INT + 1, MIN_INT - 1, 2**100, -(2**200)])
def test_encode_refuses_ints_outside_64_bits(value: int) -> None:
    for wrapped in (value, [value], {value: 1}, {"k": Point(value, 1)}):
        with pytest.raises(EncodeError, match="integers must be within"):
            encode(wrapped)


def test_encode_refuses_big_int_enum() -> None:
    class Big(enum.IntEnum):
        HUGE = 2**70

    with pytest.raises(EncodeError, match="integers must be within"):
        encode([Big.HUGE])


def test_encode_refuses_cycles() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(EncodeError):
        encode(cyclic)
    env = Envelope(sender=PID, body=None)
    env.body = env
    with pytest.raises(EncodeError):
        encode(env)


def nested_lists(levels: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def test_encode_depth_limit_matches_decode() -> None:
    for leaf, cost in ((1, 0), (PID, 2), (Point(1, 2), 3)):
        fits = nested_lists(DEFAULT_MAX_DEPTH - cost, leaf)
        assert decode(encode(fits)) == fits
        too_deep = nested_lists(DEFAULT_MAX_DEPTH - cost + 1, leaf)
        with pytest.raises(EncodeError, match=f"nested deeper than {DEFAULT_MAX_DEPTH}"):
            encode(too_deep)
        # ... and the decoder agrees.
        plain = cbor2.dumps(nested_lists(DEFAULT_MAX_DEPTH - cost + 1, 1))
        if cost == 0:
            with pytest.raises(DecodeError, match="max_depth"):
                decode(plain)


def test_encode_depth_counts_dicts_keys_and_message_fields() -> None:
    deep_key: object = ()
    for _ in range(DEFAULT_MAX_DEPTH):
        deep_key = (deep_key,)
    with pytest.raises(EncodeError, match="nested deeper"):
        encode({deep_key: 1})
    with pytest.raises(EncodeError, match="nested deeper"):
        encode(Envelope(sender=PID, body=nested_lists(DEFAULT_MAX_DEPTH - 2)))
    # Tag, array and field map, then the body: exactly the limit.
    fits = Envelope(sender=PID, body=nested_lists(DEFAULT_MAX_DEPTH - 3))
    assert roundtrip(fits) == fits


def test_very_deep_values_are_refused_not_crashing() -> None:
    # cbor2 6.3's encoder would overflow the C stack on these.
    with pytest.raises(EncodeError, match="nested deeper"):
        encode(nested_lists(100_000))
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(EncodeError, match="nested deeper"):
        encode(deep)


def test_encode_wraps_cbor2_failures() -> None:
    with pytest.raises(EncodeError, match="surrogates not allowed"):
        encode(["ok", "\ud800"])
    assert decode(encode(["ok"])) == ["ok"]  # the encoder is still usable


def test_encode_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode({1})


def test_a_failed_encode_leaves_no_state_behind() -> None:
    with pytest.raises(EncodeError):
        encode([PID, PID, object()])
    with pytest.raises(EncodeError, match="of type set"):
        encode([{1}])
    assert decode(encode([PID, "x" * 5000])) == [PID, "x" * 5000]


def test_encode_is_thread_safe() -> None:
    def work(i: int) -> bool:
        good = [Pid("t@h", i, 1), {"i": i}, REF]
        assert decode(encode(good)) == good
        with pytest.raises(EncodeError):
            encode([Pid("t@h", i, 1), {i}])
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(2000)))


# ---------------------------------------------------------------------------
# Decode refusals
# ---------------------------------------------------------------------------

# A valid content for each tag cbor2 6.3 decodes natively, so the refusal is
# about the tag itself.
BUILTIN_TAG_CONTENT: dict[int, object] = {
    0: "2024-01-01T00:00:00Z",
    1: 0,
    2: b"\x01\x00",
    3: b"\x01\x00",
    4: [-1, 15],
    5: [-1, 3],
    25: 0,
    28: [1],
    29: 0,
    30: [1, 3],
    35: "a+",
    36: "Content-Type: text/plain\n\nhi",
    37: bytes(16),
    52: b"\x0a\x00\x00\x01",
    54: bytes(16),
    100: 0,
    256: ["a", "a"],
    258: [1, 2],
    260: b"\x0a\x00\x00\x01",
    261: {8: b"\x0a"},
    1004: "2024-01-01",
    43000: [1.0, 2.0],
    55799: 1,
}


@pytest.mark.parametrize("tag", sorted(BUILTIN_TAG_CONTENT))
def test_decode_refuses_builtin_tags(tag: int) -> None:
    data = tagged(tag, BUILTIN_TAG_CONTENT[tag])
    # Sanity: plain cbor2 would turn these into Python objects (or try to).
    plain: object
    try:
        plain = cbor2.loads(data)
    except cbor2.CBORDecodeError:
        plain = None
    assert not isinstance(plain, cbor2.CBORTag)
    for wrapped in (data, b"\x82\x01" + data, b"\xa1\x61k" + data, b"\xa1" + data + b"\x01"):
        with pytest.raises(DecodeError, match=rf"CBOR tag {tag} \(.*\) is not allowed"):
            decode(wrapped)


def test_decode_refuses_every_tag_but_ours() -> None:
    numbers = [*range(1200), 43000, 55799, 55800, 55801, 62624, 62630, 65535, 2**32 - 1, 2**64 - 1]
    for number in numbers:
        with pytest.raises(DecodeError, match=f"tag {number}"):
            decode(tagged(number, 0))


def test_decode_refuses_unknown_tag() -> None:
    with pytest.raises(DecodeError, match="unknown CBOR tag 1234"):
        decode(tagged(1234, [1, 2]))


def test_bignums_are_refused_on_decode() -> None:
    with pytest.raises(DecodeError, match="bignum"):
        decode(tagged(2, (2**64).to_bytes(9, "big")))
    with pytest.raises(DecodeError, match="bignum"):
        decode(tagged(3, (2**64).to_bytes(9, "big")))
    assert decode(b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff") == MAX_INT
    assert decode(b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff") == MIN_INT


def test_unknown_message_tag() -> None:
    with pytest.raises(DecodeError, match=r"unknown message tag 'test_codec\.nope'"):
        decode(message_bytes("test_codec.nope", 1, {}))


@pytest.mark.parametrize("version", [1, 4, -1, "3", 3.0, True, None])
def test_message_version_not_accepted(version: object) -> None:
    data = cbor2.dumps(cbor2.CBORTag(MESSAGE_TAG, ["test_codec.envelope", version, {}]))
    with pytest.raises(
        DecodeError, match=r"version .* is not accepted \(this node accepts \[2, 3\]\)"
    ):
        decode(data)


def test_message_validator_rejects_fields() -> None:
    assert decode(message_bytes("test_codec.positive", 1, {"n": 5})) == Positive(5)
    with pytest.raises(DecodeError, match=r"test_codec\.positive.*ValueError"):
        decode(message_bytes("test_codec.positive", 1, {"n": -5}))


def test_message_constructor_failures_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match="RuntimeError: converter exploded"):
        decode(message_bytes("test_codec.exploding", 1, {"value": 1}))
    with pytest.raises(DecodeError, match="TypeError"):
        decode(message_bytes("test_codec.point", 1, {"x": 1}))  # missing field
    with pytest.raises(DecodeError, match="TypeError"):
        decode(message_bytes("test_codec.point", 1, {"x": 1, "y": 2, "z": 3}))
    with pytest.raises(DecodeError, match="map key must be a text string"):
        decode(message_bytes("test_codec.point", 1, {1: 1, "y": 2}))
    with pytest.raises(DecodeError, match="unknown fields 'nope'"):
        decode(message_bytes("test_codec.private", 1, {"_secret": "s", "nope": 1}))


@pytest.mark.parametrize(
    "content",
    [
        "test_codec.point",
        ["test_codec.point", 1],
        ["test_codec.point", 1, {}, 4],
        [1, 1, {}],
        ["test_codec.point", 1, [1, 2]],
        None,
    ],
    ids=repr,
)
def test_malformed_message_content(content: object) -> None:
    with pytest.raises(DecodeError):
        decode(tagged(MESSAGE_TAG, content))


@pytest.mark.parametrize(
    "content",
    [
        ["b@127.0.0.1", 7],
        ["b@127.0.0.1", 7, 3, 4],
        "b@1",
        7,
        None,
        [b"b@127.0.0.1", 7, 3],
        ["b@127.0.0.1", -7, 3],
        ["b@127.0.0.1", 7, -3],
        ["b@127.0.0.1", 7.0, 3],
        ["b@127.0.0.1", True, 3],
        ["no-at-sign", 7, 3],
        ["b@127.0.0.1:4370", 7, 3],
        ["", 7, 3],
        [["b@127.0.0.1"], 7, 3],
    ],
    ids=repr,
)
@pytest.mark.parametrize("tag", [PID_TAG, REF_TAG])
def test_bad_pid_and_ref_contents(tag: int, content: object) -> None:
    with pytest.raises(DecodeError, match=r"invalid (Pid|Ref)"):
        decode(tagged(tag, content))


def test_cached_pid_does_not_make_lookalike_contents_valid() -> None:
    good = Pid("look@alike", 1, 1)
    assert decode(encode(good)) == good  # now cached
    for lookalike in (["look@alike", True, 1], ["look@alike", 1.0, 1], ["look@alike", 1, True]):
        with pytest.raises(DecodeError, match="invalid Pid"):
            decode(tagged(PID_TAG, lookalike))


def test_depth_limit() -> None:
    ok = b"\x81" * DEFAULT_MAX_DEPTH + b"\x01"
    assert decode(ok) is not None
    with pytest.raises(DecodeError, match=f"max_depth={DEFAULT_MAX_DEPTH}"):
        decode(b"\x81" * (DEFAULT_MAX_DEPTH + 1) + b"\x01")
    assert decode(b"\x81" * 5 + b"\x01", max_depth=5) == [[[[[1]]]]]
    with pytest.raises(DecodeError, match="max_depth=5"):
        decode(b"\x81" * 6 + b"\x01", max_depth=5)
    # Beyond the small-payload shortcut: a long payload, shallow and deep.
    assert decode(encode([b"x" * 1000]), max_depth=1) == [b"x" * 1000]
    with pytest.raises(DecodeError, match="max_depth=1"):
        decode(encode([[b"x" * 1000]]), max_depth=1)


@pytest.mark.parametrize("max_depth", [0, -1, 1.5, "64"])
def test_max_depth_must_be_a_positive_int(max_depth: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode(encode([b"x" * 300]), max_depth=max_depth)


def test_depth_counts_maps_and_tags() -> None:
    # A message costs three levels: its tag, its array, its field map.
    point = encode(Point(1, 2))
    assert decode(point, max_depth=3) == Point(1, 2)
    with pytest.raises(DecodeError, match="max_depth=2"):
        decode(point, max_depth=2)
    assert decode(encode({"a": {"b": 1}}), max_depth=2) == {"a": {"b": 1}}
    with pytest.raises(DecodeError, match="max_depth=1"):
        decode(encode({"a": {"b": 1}}), max_depth=1)


def calls_to_refuse(data: bytes) -> int:
    """How many function calls (Python and built-in) ``decode(data)`` makes
    before it raises ``DecodeError``: a measure of work that a loaded
    machine cannot change, unlike a time bound."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        decode(data)
    except DecodeError:
        pass
    else:
        raise AssertionError("decoded without an error")
    finally:
        sys.setprofile(None)
    return calls


#: Refusing a bomb is a constant amount of work (17 calls today), however
#: large the input or the length it declares; per-element work on a
#: megabyte bomb would be hundreds of thousands.
REFUSAL_CALLS = 100


def test_depth_bomb_fails_fast() -> None:
    for bomb in (
        b"\x81" * 1_000_000 + b"\x01",
        b"\xa1\x01" * 500_000 + b"\x01",
        b"\xd9\xf4\xa2" * 100_000,
    ):
        with pytest.raises(DecodeError):
            decode(bomb)
        assert calls_to_refuse(bomb) <= REFUSAL_CALLS


def _length_bombs() -> dict[str, bytes]:
    bombs: dict[str, bytes] = {}
    for head, kind in ((0x9B, "array"), (0x5B, "bytes"), (0x7B, "str"), (0xBB, "map")):
        for length in (2**31, 2**40, 2**63, 2**64 - 1):
            bombs[f"{kind} of {length}"] = bytes([head]) + length.to_bytes(8, "big")
    bombs["bytes of 2**40 in an array"] = b"\x82\x01\x5b" + (2**40).to_bytes(8, "big")
    bombs["array of 2**32-1 in a pid"] = b"\xd9\xf4\xa1\x9a\xff\xff\xff\xff"
    bombs["bytes of 2**26 with 1000 bytes"] = b"\x5a" + (2**26).to_bytes(4, "big") + b"x" * 1000
    bombs["map of 2**30 as a key"] = b"\xa1\xba" + (2**30).to_bytes(4, "big")
    return bombs


@pytest.mark.parametrize(("name", "bomb"), sorted(_length_bombs().items()))
def test_length_bombs_fail_fast(name: str, bomb: bytes) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode(bomb)
    assert calls_to_refuse(bomb) <= REFUSAL_CALLS, name


def test_length_bombs_do_not_allocate() -> None:
    # In a child process whose address space is capped at 64 MiB above what
    # it already uses, any attempt to honour a declared length would raise
    # MemoryError (which decode lets through) instead of DecodeError.
    if sys.platform != "linux":
        pytest.skip("needs /proc and RLIMIT_AS")
    script = textwrap.dedent(
        """
        import resource, sys
        from trio_distribute.codec import decode
        from trio_distribute.errors import DecodeError

        def vm_size():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmSize:"):
                        return int(line.split()[1]) * 1024
            raise RuntimeError("no VmSize")

        resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (64 << 20), resource.RLIM_INFINITY))
        for bomb in sys.argv[1:]:
            try:
                decode(bytes.fromhex(bomb))
            except DecodeError:
                pass
            else:
                raise SystemExit(f"{bomb}: decoded")
        try:
            bytearray(256 << 20)
        except MemoryError:
            print("capped")
        """
    )
    root = str(pathlib.Path(codec.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    bombs = [bomb.hex() for bomb in _length_bombs().values()]
    result = subprocess.run(
        [sys.executable, "-c", script, *bombs],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "capped"


@pytest.mark.parametrize(
    "data",
    [
        b"\x9f\x01\xff",
        b"\x9f\xff",
        b"\xbf\x61a\x01\xff",
        b"\x5f\x41a\xff",
        b"\x7f\x61a\xff",
        b"\x82\x01\x9f\xff",
        b"\xa1\x61a\x5f\xff",
        b"\xd9\xf4\xa1\x9f\x6bb@127.0.0.1\x07\x03\xff",
    ],
    ids=bytes.hex,
)
def test_indefinite_lengths_are_refused(data: bytes) -> None:
    with pytest.raises(DecodeError, match="indefinite-length"):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x82\x01",
        b"\x63ab",
        b"\x19\x01",
        b"\x1b\x00",
        b"\xd9\xf4\xa1",
        b"\xa1\x61a",
        b"\xfb\x00",
    ],
    ids=bytes.hex,
)
def test_truncated_input(data: bytes) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode(data)


@pytest.mark.parametrize(
    "suffix",
    [b"\x00", b"\x01\x02", b"\xf7", b"\xf7\x01", b"\xf6", b"\xff", b"\x82", b"\xf7\xf7"],
    ids=bytes.hex,
)
@pytest.mark.parametrize("value", [1, [PID, {"a": b"x"}], Point(1, 2)], ids=repr)
def test_trailing_bytes_are_refused(value: object, suffix: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(encode(value) + suffix)


def test_concatenated_payloads_are_refused() -> None:
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(encode({"a": 1}) + encode({"a": 1}))


def test_simple_values_decode_as_cbor2_objects() -> None:
    # Documented gap: encode never produces simple values or undefined, and
    # refusing them from a foreign encoder would need a walk of every
    # decoded value.
    assert decode(b"\x82\xe5\xf7") == [cbor2.CBORSimpleValue(5), cbor2.undefined]


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\xfc",
        b"\xfd",
        b"\xfe",
        b"\x1c",
        b"\x3e",
        b"\xf8\x05",
        b"\x62\xff\xfe",
        b"\x81\xff",
    ],
    ids=bytes.hex,
)
def test_malformed_cbor(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_raw_maps_with_keys_other_than_text_or_bytes_are_refused() -> None:
    # Only text and byte-string keys (hashed with the per-process random
    # key) may be inserted by cbor2's C decoder: any other key could be
    # chosen to collide. A map as a key (formerly a frozendict), an int, a
    # float, an array (tuple), a Pid or a message in key position: refused.
    for key in ("a1010203", "01", "fb3ff8000000000000", "820102", PID_BYTES.hex(), "f5", "f6"):
        with pytest.raises(DecodeError, match="map key must be a text string or byte string"):
            decode(bytes.fromhex("a1" + key + "00"))
    assert decode(bytes.fromhex("a2616100410100")) == {"a": 0, b"\x01": 0}


def test_duplicate_keys_are_refused() -> None:
    # Two values for one key: the kernel's decoder refuses the map, plain
    # or keyed, at any depth, on the fast path and past _FAST_DEPTH_BYTES.
    with pytest.raises(DecodeError, match="duplicate key"):
        decode(b"\xa2\x61a\x02\x61a\x03")
    with pytest.raises(DecodeError, match="duplicate key"):
        decode(b"\x81\xa2\x61a\x02\x61a\x03")
    with pytest.raises(DecodeError, match="duplicate key"):
        decode(encode_keyed([(1, 2), (1, 3)]))
    long = b"\xa3\x61a\x02\x61b\x59\x01\x2c" + b"x" * 300 + b"\x61a\x03"
    with pytest.raises(DecodeError, match="duplicate key"):
        decode(long)
    assert decode(b"\xa2\x61a\x02\x61b\x03") == {"a": 2, "b": 3}
    assert decode(encode_keyed([(1, 2), (2, 3)])) == {1: 2, 2: 3}


def test_decode_error_is_a_protocol_error() -> None:
    from trio_distribute.errors import ProtocolError

    with pytest.raises(ProtocolError):
        decode(b"\xff")


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


def test_registered_messages_snapshot() -> None:
    messages = registered_messages()
    info = messages["test_codec.envelope"]
    assert info.cls is Envelope
    assert info.version == 3
    assert info.accepts == frozenset({2, 3})
    assert info.fields == ("sender", "body", "points", "note")
    assert messages["test_codec.private"].fields == ("_secret",)
    messages.clear()  # a copy: the registry is untouched
    assert "test_codec.point" in registered_messages()


def test_message_requires_an_attrs_class() -> None:
    class NotAttrs:
        pass

    with pytest.raises(TypeError, match="attrs class"):
        message("test_codec.not_attrs")(NotAttrs)
    assert "test_codec.not_attrs" not in registered_messages()


def test_message_decorator_order_matters() -> None:
    with pytest.raises(TypeError, match="put @message above"):

        @attrs.define
        @message("test_codec.wrong_order")
        class WrongOrder:
            a: int


def test_duplicate_tag_for_another_class() -> None:
    @attrs.frozen
    class Other:
        x: int

    with pytest.raises(ValueError, match=r"already registered for .*Point"):
        message("test_codec.point")(Other)
    assert registered_messages()["test_codec.point"].cls is Point


def test_registering_the_same_class_again_is_allowed_but_not_under_a_new_tag() -> None:
    assert message("test_codec.point")(Point) is Point
    with pytest.raises(ValueError, match=r"already registered as message 'test_codec\.point'"):
        message("test_codec.point_again")(Point)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: message(""), ValueError),
        (lambda: message(1), TypeError),  # type: ignore[arg-type]
        (lambda: message("test_codec.x", version=-1), TypeError),
        (lambda: message("test_codec.x", version=True), TypeError),
        (lambda: message("test_codec.x", version=2, accepts=[1]), ValueError),
        (lambda: message("test_codec.x", accepts=["1"]), TypeError),  # type: ignore[list-item]
    ],
)
def test_message_argument_checks(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_accepts_defaults_to_version() -> None:
    @message("test_codec.v5", version=5)
    @attrs.frozen
    class V5:
        pass

    assert registered_messages()["test_codec.v5"].accepts == frozenset({5})
    assert decode(encode(V5())) == V5()
    with pytest.raises(DecodeError, match="version 4 is not accepted"):
        decode(message_bytes("test_codec.v5", 4, {}))


def test_message_class_is_returned_unchanged() -> None:
    @message("test_codec.unchanged")
    @attrs.frozen
    class Unchanged:
        a: int

    assert Unchanged(1).a == 1
    assert attrs.has(Unchanged)  # last: it narrows the type for mypy


# ---------------------------------------------------------------------------
# Size check
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [
        (1, PID, {"seq": 1, "body": b"x"}),
        (0, REF, None),
        (23, "name", [PID]),
        (24, ("name", "n@h"), Point(1, 2)),
        (-1, 2**64 - 1, {PID: REF}),
        (True, 1.5, b""),
    ],
    ids=repr,
)
def test_encode_frame_matches_encode(items: tuple[object, object, object]) -> None:
    data = encode_frame(*items)
    assert data == encode(list(items))
    assert same(decode(data), roundtrip(list(items)))


def test_encode_frame_refuses_like_encode() -> None:
    with pytest.raises(EncodeError, match="of type set"):
        encode_frame(1, PID, {"a": {1}})
    with pytest.raises(EncodeError, match="of type object"):
        encode_frame(object(), PID, None)
    with pytest.raises(EncodeError, match="integers must be within"):
        encode_frame(1, 2**64, None)
    fits = nested_lists(DEFAULT_MAX_DEPTH - 1)
    assert decode(encode_frame(1, PID, fits)) == [1, PID, fits]
    with pytest.raises(EncodeError, match="nested deeper"):
        encode_frame(1, PID, [fits])


def test_encoded_size_ok() -> None:
    encoded_size_ok(b"x" * 10, 10)
    with pytest.raises(MessageTooLargeError) as info:
        encoded_size_ok(b"x" * 11, 10)
    assert info.value.size == 11
    assert info.value.limit == 10
    assert "11 bytes" in str(info.value)


def test_tag_numbers() -> None:
    assert (PID_TAG, REF_TAG, MESSAGE_TAG) == (62625, 62626, 62627)
    assert (KEYED_MAP_TAG, FROZEN_TAG) == (62628, 62629)


# ---------------------------------------------------------------------------
# Hash flooding
# ---------------------------------------------------------------------------


def test_text_keyed_dicts_stay_plain_cbor_maps() -> None:
    assert encode({"a": 1, b"b": 2}) == cbor2.dumps({"a": 1, b"b": 2})


def test_dicts_with_other_keys_travel_as_keyed_maps() -> None:
    assert encode({1: "a"}) == tagged(KEYED_MAP_TAG, [1, "a"])
    assert encode({"x": 0, None: 1}) == tagged(KEYED_MAP_TAG, ["x", 0, None, 1])
    # A tuple key is frozen (decoded immutably, so it is hashable again).
    assert encode({(1, (2,)): 0}) == tagged(KEYED_MAP_TAG, [cbor2.CBORTag(FROZEN_TAG, [1, [2]]), 0])
    # Nested inside text-keyed maps, lists and message fields too.
    assert roundtrip({"a": [{1: {2: 3}}]}) == {"a": [{1: {2: 3}}]}
    assert encode_frame(10, PID, {1: 2}) == encode([10, PID, {1: 2}])


def test_keyed_maps_count_their_tag_and_array_in_depth() -> None:
    value: object = 0
    for _ in range(DEFAULT_MAX_DEPTH // 2):
        value = {1: value}
    decode(encode(value))  # 32 keyed maps: 64 levels
    with pytest.raises(EncodeError, match="nested deeper"):
        encode({1: value})
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(tagged(KEYED_MAP_TAG, [1, cbor2.loads(encode(value))]))


def test_a_raw_map_of_colliding_keys_is_refused_at_its_first_key() -> None:
    # cbor2 only inserts text and byte-string keys itself (hashed with the
    # per-process random key); 20,000 colliding tuple keys took 8 s before.
    pairs = colliding_int_pairs(20_000)
    data = (
        b"\xb9"
        + len(pairs).to_bytes(2, "big")
        + b"".join(cbor2.dumps(list(pair)) + b"\x00" for pair in pairs)
    )
    with pytest.raises(DecodeError, match="map key must be a text string"):
        decode(data)


@pytest.mark.parametrize("count", [20_000, 2_000, MAX_EQUAL_HASH_KEYS + 2])
def test_a_keyed_map_of_colliding_keys_is_refused_before_insertion(count: int) -> None:
    pairs = colliding_int_pairs(count)
    with pytest.raises(DecodeError, match="distinct hash values"):
        decode(encode_keyed([(pair, 0) for pair in pairs], freeze=True))
    # What decode refuses, encode refuses too. (At most 2,000 keys: the
    # test itself must build the dict, and 20,000 colliding keys cost it
    # n**2 / 2 comparisons, half a minute on a loaded machine.)
    with pytest.raises(EncodeError, match="distinct hash values"):
        encode(dict.fromkeys(pairs[:2000], 0))


def test_the_collision_limit_is_exact() -> None:
    assert MAX_EQUAL_HASH_KEYS == 8
    allowed = colliding_ints(MAX_EQUAL_HASH_KEYS + 1)  # 8 keys share the first one's hash
    assert decode(encode(dict.fromkeys(allowed, 0))) == dict.fromkeys(allowed, 0)
    too_many = colliding_ints(MAX_EQUAL_HASH_KEYS + 2)
    with pytest.raises(DecodeError, match="only 1 distinct hash values"):
        decode(encode_keyed([(key, 0) for key in too_many]))
    # Many small maps, each within the limit, are fine (the cost per key
    # stays bounded by the limit).
    many = [dict.fromkeys(allowed, i) for i in range(1000)]
    assert decode(encode(many)) == many


def test_colliding_float_keys_are_refused() -> None:
    floats = colliding_floats()
    with pytest.raises(DecodeError, match="distinct hash values"):
        decode(encode_keyed([(key, 0) for key in floats]))


def test_keyed_map_shape_is_checked() -> None:
    with pytest.raises(DecodeError, match="even number"):
        decode(tagged(KEYED_MAP_TAG, [1, 2, 3]))
    with pytest.raises(DecodeError, match="even number"):
        decode(tagged(KEYED_MAP_TAG, {"a": 1}))
    with pytest.raises(DecodeError, match="unhashable key"):
        decode(tagged(KEYED_MAP_TAG, [[1, 2], 0]))  # an unfrozen array
    with pytest.raises(DecodeError, match="unhashable key"):
        decode(tagged(KEYED_MAP_TAG, [tagged_value(KEYED_MAP_TAG, [1, 2]), 0]))
    with pytest.raises(DecodeError, match="frozen key"):
        decode(tagged(FROZEN_TAG, 5))
    assert decode(tagged(FROZEN_TAG, [1, [2]])) == (1, (2,))


def tagged_value(tag: int, content: object) -> cbor2.CBORTag:
    return cbor2.CBORTag(tag, content)


# ---------------------------------------------------------------------------
# Hypothesis
# ---------------------------------------------------------------------------

# The strings of r"[A-Za-z0-9_-]{1,12}@[A-Za-z0-9._-]{1,20}", built from two
# texts: drawing them through st.from_regex took a third of the property
# tests' time.
_NAME_CHARS = string.ascii_letters + string.digits + "_-"
node_names = st.builds(
    "{}@{}".format,
    st.text(_NAME_CHARS, min_size=1, max_size=12),
    st.text(_NAME_CHARS + ".", min_size=1, max_size=20),
)
uints = st.integers(0, MAX_INT)
pids = st.builds(Pid, node_names, uints, uints)
refs = st.builds(Ref, node_names, uints, uints)
ints = st.integers(MIN_INT, MAX_INT)
floats = st.floats(allow_nan=False)
hashable_leaves = st.one_of(
    st.none(), st.booleans(), ints, floats, st.text(), st.binary(), pids, refs
)
keys = st.one_of(
    hashable_leaves,
    st.tuples(hashable_leaves, hashable_leaves),
    st.builds(Point, ints, ints),
)
values = st.recursive(
    hashable_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(keys, children, max_size=6),
        st.builds(Point, ints, ints),
    ),
    max_leaves=40,
)


@settings(max_examples=examples(400), deadline=None)
@given(values)
def test_allowed_values_round_trip_exactly(value: object) -> None:
    assert same(roundtrip(value), value)


@settings(max_examples=examples(200), deadline=None)
@given(values, st.one_of(pids, refs, values), values)
def test_encode_frame_is_encode_of_a_list(kind: object, dest: object, payload: object) -> None:
    assert encode_frame(kind, dest, payload) == encode([kind, dest, payload])


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(data: bytes, position: int, byte: int, cut: int, extra: bytes) -> bytes:
        if not data:
            return extra
        position %= len(data)
        mutated = data[:position] + bytes([byte]) + data[position + 1 :]
        return mutated[: len(mutated) - cut % 3] + extra

    return st.builds(
        mutate,
        values.map(encode),
        st.integers(0, 10_000),
        st.integers(0, 255),
        st.integers(0, 10),
        st.binary(max_size=3),
    )


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), _mutations()))
def test_garbage_decodes_or_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


def test_every_single_byte_input() -> None:
    for byte in range(256):
        with contextlib.suppress(DecodeError):
            decode(bytes([byte]))


def test_threads_decoding_messages() -> None:
    data = encode(Envelope(sender=PID, body=[Point(1, 2)]))
    results: list[object] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            value = decode(data)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 800
    assert all(r == results[0] for r in results)


# ---------------------------------------------------------------------------
# Each rule at its exact boundary (pinned so that deleting or loosening it
# fails a test; see docs/mutation.rst)
# ---------------------------------------------------------------------------


def test_default_max_depth_is_64() -> None:
    assert DEFAULT_MAX_DEPTH == 64
    ok = encode(nest(64, lambda v: [v]))
    assert decode(ok) == nest(64, lambda v: [v])
    with pytest.raises(DecodeError, match="max_depth=64"):
        decode(b"\x81" + ok)
    with pytest.raises(EncodeError, match="deeper than 64"):
        encode(nest(65, lambda v: [v]))


@pytest.mark.parametrize(
    "make",
    [
        lambda v: {"k": v},
        lambda v: [v],
        lambda v: (v,),
        lambda v: DictSubclass(k=v),
        lambda v: ListSubclass([v]),
        lambda v: collections.OrderedDict(k=v),
        lambda v: {1: v},
    ],
    ids=["dict", "list", "tuple", "dict-subclass", "list-subclass", "ordereddict", "keyed-map"],
)
def test_encode_depth_limit_is_exact_for_every_container(make: Callable[[Any], Any]) -> None:
    # A keyed map costs two levels (tag and array), everything else one.
    cost = 2 if isinstance(make(1), dict) and 1 in make(1) else 1
    levels = 64 // cost
    decode(encode(nest(levels, make)))
    with pytest.raises(EncodeError, match="deeper than"):
        encode(nest(levels + 1, make))


def test_pid_and_message_depth_costs_are_exact() -> None:
    pid = Pid("a@h", 1, 1)
    decode(encode(nest(62, lambda v: [v], pid)))
    with pytest.raises(EncodeError, match="deeper than"):
        encode(nest(63, lambda v: [v], pid))


@pytest.mark.parametrize(
    "make", [lambda v: DictSubclass(k=v), lambda v: ListSubclass([v])], ids=["dict", "list"]
)
def test_subclass_contents_are_checked(make: Callable[[Any], Any]) -> None:
    # A dict or list subclass travels as its base type, and what it holds
    # is checked like anything else: int range, types.
    with pytest.raises(EncodeError, match="integers must be within"):
        encode(make(MAX_INT + 1))
    with pytest.raises(EncodeError, match="integers must be within"):
        encode(make(MIN_INT - 1))
    with pytest.raises(EncodeError, match="set"):
        encode(make({1}))
    assert decode(encode(make(MAX_INT))) == make(MAX_INT)


def test_int_subclass_range_is_checked() -> None:
    class Big(int):
        pass

    assert decode(encode(Big(MAX_INT))) == MAX_INT
    assert decode(encode(Big(MIN_INT))) == MIN_INT
    for bad in (Big(MAX_INT + 1), Big(MIN_INT - 1)):
        with pytest.raises(EncodeError, match="integers must be within"):
            encode(bad)


@pytest.mark.parametrize("trailer", [b"\x41x", b"\x40", b"\x4f" + bytes(15), b"\x00"])
def test_byte_string_trailers_are_refused(trailer: bytes) -> None:
    for value in (1, {"k": "v" * 300}):
        with pytest.raises(DecodeError, match="trailing bytes"):
            decode(encode(value) + trailer)


@pytest.mark.parametrize(
    "item", [b"\x9f\x01\xff", b"\xbf\x61a\x01\xff", b"\x5f\x41a\xff", b"\x7f\x61a\xff"]
)
def test_indefinite_lengths_refused_on_long_payloads(item: bytes) -> None:
    pad = encode("p" * 200)
    for data in (item, b"\x82" + item + pad, b"\x82" + pad + item):
        with pytest.raises(DecodeError, match="indefinite"):
            decode(data)


def test_long_payloads_decode_on_every_path() -> None:
    pid = Pid("a@h", 7, 3)
    value = {"pid": pid, "ref": Ref("a@h", 8, 3), "blob": b"x" * 5000, 1: [pid] * 50}
    assert decode(encode(value)) == value
    # keyed-map tag, its array, the list, a pid's tag and its array: 5
    assert decode(encode(value), max_depth=5) == value
    with pytest.raises(DecodeError, match="max_depth=4"):
        decode(encode(value), max_depth=4)


# ------------------------------------------------------- Ctrl-C inside cbor2

_interrupt_now = [False]


def _interrupt_if_asked(instance: Any, attribute: Any, value: Any) -> None:
    if _interrupt_now[0]:
        raise KeyboardInterrupt


@message("test_codec.interruptible")
@attrs.frozen
class Interruptible:
    x: int = attrs.field(validator=_interrupt_if_asked)


def _decode_in_slices(data: bytes) -> object:
    steps = codec.decode_steps(data, slice_bytes=256)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize("sliced", [False, True], ids=["decode", "decode_steps"])
def test_a_keyboard_interrupt_inside_a_tag_decoder_is_not_a_bad_frame(sliced: bool) -> None:
    """A signal can raise KeyboardInterrupt in any Python code, the message
    constructor cbor2 calls included; cbor2 wraps it, and the decoder must
    raise it again, not turn Ctrl-C into a dropped frame. (In slices, the
    message fits one window, so cbor2 is the one calling its constructor.)"""
    value = [Interruptible(1), "x" * 1000]
    data = encode(value)
    run = _decode_in_slices if sliced else decode
    _interrupt_now[0] = True
    try:
        with pytest.raises(KeyboardInterrupt):
            run(data)
    finally:
        _interrupt_now[0] = False
    assert run(data) == value


# ------------------------------------------------------- heads read by hand


@pytest.mark.parametrize("n", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_read_uint_reads_what_encode_wrote_and_says_where_it_ends(n: int) -> None:
    data = b"\x01" + cbor2.dumps(n) + b"\xff"
    assert codec.read_uint(data, 1) == (n, len(data) - 1)


@pytest.mark.parametrize("value", [-1, "x", b"x", [1], 1.5, None])
def test_read_uint_refuses_anything_but_an_unsigned_integer(value: object) -> None:
    with pytest.raises(ValueError, match="not a CBOR unsigned integer"):
        codec.read_uint(cbor2.dumps(value), 0)


@pytest.mark.parametrize("n", [24, 256, 65536, 2**32])
def test_read_uint_refuses_an_integer_cut_short(n: int) -> None:
    with pytest.raises(IndexError):
        codec.read_uint(cbor2.dumps(n)[:-1], 0)


def test_id_head_is_how_every_pid_and_ref_of_a_node_starts() -> None:
    for kind in (Pid, Ref):
        made = kind("a@h", 2**33, 7)
        encoded = codec.encode(made)
        head = codec.id_head(kind, "a@h")
        assert encoded.startswith(head)
        assert encoded.startswith(codec.id_head(kind))
        assert head.startswith(codec.id_head(kind))
        ident, end = codec.read_uint(encoded, len(head))
        assert (ident, codec.read_uint(encoded, end)) == (2**33, (7, len(encoded)))
    assert codec.id_head(Pid, "a@h") != codec.id_head(Ref, "a@h")
