"""Codec rules that mutation testing showed unpinned, each fed the input
it exists for at its exact bound."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs
import cbor2
import pytest
from codec_helpers import DictSubclass, ListSubclass, nest

from trio_distribute import Pid, Ref, codec
from trio_distribute.errors import DecodeError, EncodeError


@pytest.mark.parametrize(
    ("kind", "decoded", "encoded"),
    [("pid", "_PID_CACHE", "_PID_BYTES"), ("ref", "_REF_CACHE", "_REF_BYTES")],
)
def test_id_caches_hold_4096_entries_then_start_over(kind: str, decoded: str, encoded: str) -> None:
    # A peer can send any number of distinct pids: each cache keeps at most
    # 4096 (its bound, exactly) and then starts over.
    make = Pid if kind == "pid" else Ref
    for name in (decoded, encoded):
        cache = getattr(codec, name)
        cache.clear()
    for i in range(4096):
        codec.decode(codec.encode(make("cache@rules", i, 7)))
    assert len(getattr(codec, decoded)) == 4096
    assert len(getattr(codec, encoded)) == 4096
    codec.decode(codec.encode(make("cache@rules", 4096, 7)))
    assert len(getattr(codec, decoded)) == 1
    assert len(getattr(codec, encoded)) == 1


def test_message_version_zero_is_allowed_negative_is_not() -> None:
    @codec.message("rules.version-zero", version=0, accepts=[0, 1])
    @attrs.frozen
    class VersionZero:
        x: int

    assert codec.decode(codec.encode(VersionZero(5))) == VersionZero(5)
    for version, accepts in ((-1, None), (1, [1, -1]), (True, None)):
        with pytest.raises(TypeError, match="non-negative int"):
            codec.message("rules.version-negative", version=version, accepts=accepts)


@pytest.mark.parametrize(
    "make",
    [
        lambda v: {"k": v},
        lambda v: [v],
        lambda v: (v,),
        lambda v: DictSubclass(k=v),
        lambda v: ListSubclass([v]),
        lambda v: {_Str("k"): v},
    ],
    ids=["dict", "list", "tuple", "dict-subclass", "list-subclass", "str-subclass-key"],
)
def test_encode_depth_limit_is_exact_on_the_rewrite_path(make: Callable[[Any], Any]) -> None:
    # A keyed map anywhere in the value sends all of it down the slower
    # rewriting path, which must count depth exactly like the fast one:
    # the outer list is one level, so 63 more fit and 64 do not.
    for leaf in (1, "text", None):
        value = [{1: 1}, nest(63, make, leaf)]
        assert codec.decode(codec.encode(value)) == [{1: 1}, nest(63, _plain(make), leaf)]
        with pytest.raises(EncodeError, match="deeper than"):
            codec.encode([{1: 1}, nest(64, make, leaf)])


class _Str(str):
    pass


def _plain(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    # What each container decodes as: its base type (tuples as lists).
    sample = make(0)
    if isinstance(sample, dict):
        return lambda v: {"k": v}
    return lambda v: [v]


def _sliced(data: bytes, window: int) -> object:
    steps = codec.decode_steps(data, slice_bytes=window)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize(
    "content",
    [
        # Distinct non-ASCII characters, as many as the sliced finisher's
        # own threshold (two key slices) and fewer.
        "".join(chr(0x100 + i) for i in range(2000)),
        "".join(chr(0x100 + i) for i in range(2 * 16384)),
        bytes(range(256)),
        {f"k{i}": i for i in range(100)},
        list(range(2001)),  # an odd number of items
    ],
    ids=["text", "long-text", "bytes", "map", "odd-array"],
)
def test_a_keyed_map_is_an_even_array_on_the_sliced_path_too(content: object) -> None:
    # Big enough to be walked (bigger than the window), so the sliced
    # finisher sees it; a string must not be read as key, value, key, ...
    data = cbor2.dumps(cbor2.CBORTag(codec.KEYED_MAP_TAG, content))
    assert len(data) > 256
    for decode in (codec.decode, lambda d: _sliced(d, 64)):
        with pytest.raises(DecodeError, match="invalid keyed map"):
            decode(data)


def test_a_small_keyed_map_on_the_sliced_path_decodes_like_decode() -> None:
    value = {i: str(i) for i in range(300)}
    data = codec.encode(value)
    assert _sliced(data, 64) == codec.decode(data) == value


# A keyed map of at least two key slices (2 * 16384 keys) is hashed and
# built a slice at a time on the sliced path: each rule of the one-call
# finisher must hold there too, in any slice.
_BIG = 2 * 16384 + 5


def _raw_keyed_map(keys: list[object]) -> bytes:
    content: list[object] = []
    for key in keys:
        content += [key, 0]
    return cbor2.dumps(cbor2.CBORTag(codec.KEYED_MAP_TAG, content))


def _both(data: bytes) -> list[object]:
    return [codec.decode(data), _sliced(data, 4096)]


def test_a_big_keyed_map_decodes_in_slices_like_in_one_call() -> None:
    for count in (_BIG, 16384, 16383):
        value = {i: -i for i in range(count)}
        decoded = _both(codec.encode(value))
        assert decoded == [value, value]
        assert all(list(d) == list(value) for d in decoded)  # type: ignore[call-overload]


def test_a_repeated_key_is_refused_in_any_slice_of_a_big_keyed_map() -> None:
    for repeated in (0, 16384, _BIG - 1):
        data = _raw_keyed_map([*range(_BIG), repeated])
        for decode in (codec.decode, lambda d: _sliced(d, 4096)):
            with pytest.raises(DecodeError, match=r"duplicate key in a keyed map \(1 repeated\)"):
                decode(data)


def test_colliding_keys_bound_is_exact_in_a_big_keyed_map() -> None:
    # In CPython (2**61 - 1) * i + 5 hashes to 5, like the key 5 already
    # there, and its negation to -5: 7 + 1 collisions are allowed, 7 + 2 not.
    assert codec.MAX_EQUAL_HASH_KEYS == 8
    fives = [(2**61 - 1) * i + 5 for i in range(1, 8)]
    minus_fives = [-((2**61 - 1) * i + 5) for i in range(3)]
    assert {hash(k) for k in fives} == {5} and {hash(k) for k in minus_fives} == {-5}
    value = _both(_raw_keyed_map([*range(_BIG), *fives, *minus_fives[:2]]))
    assert all(len(v) == _BIG + 9 for v in value)  # type: ignore[arg-type]
    data = _raw_keyed_map([*range(_BIG), *fives, *minus_fives])
    for decode in (codec.decode, lambda d: _sliced(d, 4096)):
        with pytest.raises(DecodeError, match="distinct hash values"):
            decode(data)


def test_an_unhashable_key_is_refused_in_any_slice_of_a_big_keyed_map() -> None:
    for where in (0, 16384, _BIG):
        keys: list[object] = list(range(_BIG))
        keys.insert(where, [1, 2])
        data = _raw_keyed_map(keys)
        for decode in (codec.decode, lambda d: _sliced(d, 4096)):
            with pytest.raises(DecodeError, match=r"unhashable key \[1, 2\]"):
                decode(data)


class _Small(enum.IntEnum):
    SEVEN = 7
    BIG = 300


_ITEM = Pid("items@rules", 5, 7)
# The values encode_items writes itself (from tables and caches) and those
# just past each table's end, which must go through cbor2 instead.
_PROBES: list[object] = [
    None,
    True,
    False,
    0,
    1,
    23,
    24,
    255,
    256,
    -1,
    2**64 - 1,
    _Small.SEVEN,
    _Small.BIG,
    "",
    "x" * 23,
    "x" * 24,
    "é",
    "\x7f",
    b"b",
    1.5,
    _ITEM,
    Ref("items@rules", 6, 7),
    [1],
]


@pytest.mark.parametrize("probe", _PROBES, ids=repr)
def test_encode_items_writes_what_encode_writes_on_both_sides_of_each_table(
    probe: object,
) -> None:
    # The probe first (read by the table path if it fits a table), then
    # items that the table path writes, which must still come after it.
    for items in ([probe], [probe, _ITEM, "tail", 3], [_ITEM, probe, None]):
        data = b"".join(codec.encode_items(items))
        assert data == codec.encode(items), (items, data.hex())
        assert codec.decode(data) == [int(v) if isinstance(v, enum.IntEnum) else v for v in items]


@pytest.mark.parametrize("count", [0, 1, 23, 24, 25])
def test_encode_items_writes_any_length_of_array(count: int) -> None:
    # Up to 23 items the array head is one byte; from 24 on it is two.
    items = [_ITEM] * count
    assert b"".join(codec.encode_items(items)) == codec.encode(items)


def test_a_sent_pid_is_never_received_as_a_ref_with_the_same_fields() -> None:
    # What goes out is put in the decode cache too (a reply carries it
    # back): a Pid in the Pid cache, a Ref in the Ref cache, never crossed.
    for sent, other in ((Pid, Ref), (Ref, Pid)):
        fields = (f"twin-{sent.__name__}@rules", 11, 2)
        codec.encode(sent(*fields))
        tag = codec.PID_TAG if other is Pid else codec.REF_TAG
        received = codec.decode(cbor2.dumps(cbor2.CBORTag(tag, list(fields))))
        assert type(received) is other and received == other(*fields)
        received = codec.decode(cbor2.dumps(cbor2.CBORTag(tag ^ 3, list(fields))))
        assert type(received) is sent


@codec.message("rules.pair")
@attrs.frozen
class _Pair:
    a: Any
    b: Any = None


# Leaves of every kind, each with its own depth cost: scalars, plain and
# subclassed containers, keyed maps (tag and array), frozen keys (one more
# tag), pids (tag and array) and messages (tag, array, field map).
_DEPTH_LEAVES: list[object] = [
    1,
    "s",
    [1],
    (1,),
    {"k": 1},
    {_Str("k"): 1},
    DictSubclass(k=1),
    ListSubclass([1]),
    {1: 1},
    {1: [1]},
    {(1, 2): 1},
    {(1, (2,)): 1},
    {_Pair(1, (2,)): 1},
    Pid("depth@rules", 1, 1),
    Ref("depth@rules", 1, 1),
    _Pair(1),
    _Pair([1]),
    _Pair({1: 1}),
    _Pair(Pid("depth@rules", 1, 1)),
]


_FRAME_DEST = Pid("frame@rules", 1, 1)


@pytest.mark.parametrize("leaf", _DEPTH_LEAVES, ids=repr)
@pytest.mark.parametrize("how", ["alone", "beside-a-keyed-map", "in-a-frame"])
def test_encode_refuses_exactly_the_depths_decode_refuses(leaf: object, how: str) -> None:
    # Wrapped in n lists, the leaf is encodable exactly when its bytes,
    # wrapped in n array heads, are decodable: what one node sends, the
    # other accepts, and nothing deeper goes out. A keyed map beside it
    # sends the value down the rewriting path, which must agree too, and
    # so must encode_frame (whose array is one level of the payload's).
    body = codec.encode(leaf)
    sibling = None if how == "alone" else {1: 1}
    prefix = b"\x82" + codec.encode(sibling)
    if how == "in-a-frame":
        prefix = b"\x83\x01" + codec.encode(_FRAME_DEST)
    verdicts = []
    for n in range(55, 66):
        value = [sibling, nest(n, lambda v: [v], leaf)]
        data = prefix + b"\x81" * n + body
        try:
            codec.decode(data)
        except DecodeError:
            decodable = False
        else:
            decodable = True
        try:
            if how == "in-a-frame":
                encoded = codec.encode_frame(1, _FRAME_DEST, value[1])
            else:
                encoded = codec.encode(value)
        except EncodeError:
            encodable = False
        else:
            encodable = True
            assert encoded == data
        assert encodable == decodable, (n, encodable)
        verdicts.append(encodable)
    assert verdicts[0] and not verdicts[-1]


@attrs.frozen
class _Holder:
    x: Any


codec.message("rules.int-holder")(_Holder)

_INT_PLACES: list[Callable[[int], object]] = [
    lambda n: n,
    lambda n: [n],
    lambda n: (n,),
    lambda n: {"k": n},
    lambda n: {1: n},
    lambda n: {n: "v"},
    lambda n: {(n,): "v"},
    lambda n: _Holder(n),
    lambda n: [_Holder([n])],
]


@pytest.mark.parametrize("place", range(len(_INT_PLACES)))
def test_the_int_range_is_exact_wherever_an_int_sits(place: int) -> None:
    """[-2**64, 2**64 - 1] is CBOR's native range: both ends travel in every
    place a value can sit (each place is checked by its own code), one past
    either end is refused there."""
    make = _INT_PLACES[place]
    for n in (codec.MIN_INT, codec.MAX_INT):
        value = make(n)
        assert codec.decode(codec.encode(value)) == ([n] if isinstance(value, tuple) else value)
        assert b"".join(codec.encode_items([value])) == codec.encode([value])
    for n in (codec.MIN_INT - 1, codec.MAX_INT + 1):
        with pytest.raises(EncodeError, match="integers must be within"):
            codec.encode(make(n))
        with pytest.raises(EncodeError, match="integers must be within"):
            codec.encode_frame(1, None, make(n))


@pytest.mark.parametrize("make", [Pid, Ref])
@pytest.mark.parametrize("fields", [(-1, 1), (1, -1), (-1, -1)])
def test_a_negative_id_or_creation_is_refused_for_a_known_node(
    make: type[Pid] | type[Ref], fields: tuple[int, int]
) -> None:
    """A node name seen valid before skips the name's checks, never the
    numbers': a negative id or creation is refused, the node known or not."""
    tag = codec.PID_TAG if make is Pid else codec.REF_TAG
    for node in ("known@rules", "unknown@rules"):
        if node == "known@rules":
            # Decoded, not from the caches encode fills: the name is checked.
            codec._PID_CACHE.clear()
            codec._REF_CACHE.clear()
            assert codec.decode(cbor2.dumps(cbor2.CBORTag(tag, [node, 0, 0]))) == make(node, 0, 0)
            assert node in codec._VALID_NODES
        data = cbor2.dumps(cbor2.CBORTag(tag, [node, *fields]))
        with pytest.raises(DecodeError, match=f"invalid {make.__name__}"):
            codec.decode(data)


@pytest.mark.parametrize("make", [Pid, Ref])
def test_decoded_ids_and_node_names_hold_4096_then_start_over(make: type[Pid] | type[Ref]) -> None:
    """A peer can send any number of distinct pids and refs, of any number
    of nodes: pids and refs decoded (not first sent by this node, which
    fills the cache on its own path) are kept at most 4096, and so are the
    node names kept as checked; then each starts over."""
    tag = codec.PID_TAG if make is Pid else codec.REF_TAG
    cache = codec._PID_CACHE if make is Pid else codec._REF_CACHE
    cache.clear()
    codec._VALID_NODES.clear()

    def decode_id(i: int) -> None:
        data = cbor2.dumps(cbor2.CBORTag(tag, [f"n{i}@names.rules", i, 1]))
        assert codec.decode(data) == make(f"n{i}@names.rules", i, 1)

    for i in range(4096):
        decode_id(i)
    assert len(cache) == 4096
    assert len(codec._VALID_NODES) == 4096
    decode_id(4096)
    assert list(cache) == [("n4096@names.rules", 4096, 1)]
    assert sorted(codec._VALID_NODES) == ["n4096@names.rules"]


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ValueError("odd value"), EncodeError),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), EncodeError),
        (EncodeError("ours"), EncodeError),
        (MemoryError(), MemoryError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=lambda x: type(x).__name__,
)
def test_an_encoder_failure_is_an_encode_error_except_memory_and_interrupts(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, expected: type[BaseException]
) -> None:
    # cbor2 failing midway is reported as EncodeError (what the caller
    # handles); running out of memory and interrupts pass through as they
    # are. Either way the encoder that stopped midway is replaced.
    def failing(value: object) -> bytes:
        raise raised

    monkeypatch.setattr(codec._encoder, "encode", failing)
    with pytest.raises(expected) as caught:
        codec.encode(["x", 1])
    if expected is EncodeError and not isinstance(raised, EncodeError):
        assert caught.value.__cause__ is raised
    else:
        assert caught.value is raised
    assert codec._encoder.encode is not failing
    assert codec.encode(["x", 1]) == cbor2.dumps(["x", 1])


@pytest.mark.parametrize("value", [Pid("id@rules", 7, 2), Ref("id@rules", 7, 2)], ids=repr)
def test_encode_id_gives_what_encode_gives(value: Pid | Ref) -> None:
    # Frames built by hand paste these bytes in: a pid must not come out
    # with a ref's tag, or the other way round.
    assert codec.encode_id(value) == codec.encode(value)
    assert codec.decode(codec.encode_id(value)) == value


def test_a_frozen_key_inside_a_frozen_key_decodes_as_nested_tuples() -> None:
    # Our encoder wraps only the outer key, but a peer may send the tag
    # again inside it, where cbor2 already decodes immutably.
    inner = cbor2.CBORTag(codec.FROZEN_TAG, [1, 2])
    key = cbor2.CBORTag(codec.FROZEN_TAG, [inner, 3])
    data = cbor2.dumps(cbor2.CBORTag(codec.KEYED_MAP_TAG, [key, "v"]))
    assert codec.decode(data) == {((1, 2), 3): "v"}


def test_decode_element_refuses_exactly_where_decoding_the_whole_frame_would() -> None:
    head = b"\x83\x01" + codec.encode(Pid("frame@rules", 1, 1))
    verdicts = []
    for n in range(codec.DEFAULT_MAX_DEPTH - 3, codec.DEFAULT_MAX_DEPTH + 2):
        element = b"\x81" * n + b"\x01"
        outcomes = []
        for decode, data in ((codec.decode, head + element), (codec.decode_element, element)):
            try:
                decode(data)
            except DecodeError:
                outcomes.append(False)
            else:
                outcomes.append(True)
        assert outcomes[0] == outcomes[1], n
        verdicts.append(outcomes[0])
    assert verdicts[0] and not verdicts[-1]


def test_decode_element_explains_a_bad_map_key_as_decode_does() -> None:
    bad = cbor2.dumps({1: 2})  # a plain CBOR map with an int key
    with pytest.raises(DecodeError) as whole:
        codec.decode(bad)
    with pytest.raises(DecodeError) as element:
        codec.decode_element(bad)
    assert f"travels as tag {codec.KEYED_MAP_TAG}" in str(whole.value)
    assert str(element.value) == str(whole.value)
