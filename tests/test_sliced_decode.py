"""Big frames are decoded in slices that yield to the event loop.

The sliced decoder must give exactly what ``codec.decode`` gives (values,
types, refusals): a differential test runs both on generated payloads,
valid and damaged, with the slice window forced down to a few bytes so
that every path of the walk runs. Then a node receiving 16 MiB frames of
the slowest kinds keeps its event loop responsive (a lag probe), and a
frame's messages still arrive whole and in order.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from property_examples import examples

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._sliced_decode import SLICED_ABOVE, decode_sliced
from trio_distribute.errors import DecodeError
from trio_distribute.testing import open_cluster

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


@codec.message("test_sliced.box")
@attrs.frozen
class Box:
    label: str
    items: list[Any]


@codec.message("test_sliced.key")
@attrs.frozen
class Key:
    a: int
    b: str


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (and NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, Box):
        return a.label == b.label and _same(a.items, b.items)
    return bool(a == b)


_pids = st.builds(td.Pid, st.sampled_from(["a@h", "b@h"]), st.integers(0, 2**40), st.integers(0, 3))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
    _pids,
)
_keys = st.one_of(
    st.integers(-5, 5),
    st.tuples(st.integers(0, 3), st.text(max_size=3)),
    st.builds(Key, st.integers(0, 3), st.text(max_size=3)),
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=12),
        st.dictionaries(st.text(max_size=6), children, max_size=8),
        st.dictionaries(_keys, children, max_size=6),
        st.builds(Box, st.text(max_size=5), st.lists(children, max_size=6)),
    )


_values = st.recursive(_scalars, _extend, max_leaves=60)


FROZEN_HEAD = b"\xd9" + codec.FROZEN_TAG.to_bytes(2, "big")


async def _both(data: bytes, window: int, max_depth: int = codec.DEFAULT_MAX_DEPTH) -> None:
    try:
        expected: object = codec.decode(data, max_depth=max_depth)
    except DecodeError:
        expected = DecodeError
    try:
        got: object = await decode_sliced(data, max_depth=max_depth, slice_bytes=window)
    except DecodeError as exc:
        if "dict key over" in str(exc):
            # The one added limit (a tuple or message key bigger than the
            # window); the tiny windows here make every such key too big.
            assert FROZEN_HEAD in data
            return
        got = DecodeError
    if expected is DecodeError or got is DecodeError:
        assert expected is got, (data.hex(), expected, got)
    else:
        assert _same(expected, got), (data.hex(), expected, got)


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, window=st.sampled_from([1, 2, 3, 5, 8, 13, 40, 1000]))
def test_sliced_decode_gives_what_decode_gives(value: Any, window: int) -> None:
    anyio.run(_both, codec.encode(value), window)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=_values,
    window=st.sampled_from([1, 2, 4, 9, 30]),
    cut=st.integers(0, 10_000),
    flip=st.integers(0, 255),
    where=st.integers(0, 10_000),
    extra=st.binary(max_size=3),
)
def test_sliced_decode_refuses_what_decode_refuses(
    value: Any, window: int, cut: int, flip: int, where: int, extra: bytes
) -> None:
    data = bytearray(codec.encode(value))
    data[where % len(data)] ^= flip
    damaged = bytes(data[: len(data) - cut % (len(data) + 1)]) + extra
    anyio.run(_both, damaged, window)


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("window", [1, 3, 64])
def test_sliced_decode_keeps_the_depth_limit_exact(depth: int, window: int) -> None:
    """Nesting of exactly ``max_depth`` passes, one more is refused, on
    every path (arrays, maps, tags)."""
    for wrap in (lambda v: [v, 1], lambda v: {"k": v, "j": 2}, lambda v: Box("x", [v])):
        for levels in range(depth + 2):
            value: object = 7
            for _ in range(levels):
                value = wrap(value)
            anyio.run(_both, codec.encode(value), window, depth)


def test_a_dict_key_bigger_than_the_window_is_refused() -> None:
    """A tuple key cannot be walked; one over the window is refused (no
    honest key is 32 KiB)."""
    data = codec.encode({tuple(range(40)): 1})
    with pytest.raises(DecodeError, match="dict key over 16 bytes"):
        anyio.run(lambda: decode_sliced(data, slice_bytes=16))
    assert anyio.run(lambda: decode_sliced(data, slice_bytes=4096)) == {tuple(range(40)): 1}


def test_colliding_keys_are_refused_in_a_sliced_keyed_map() -> None:
    data = codec.encode({i: i for i in range(50)})
    assert anyio.run(lambda: decode_sliced(data, slice_bytes=8)) == {i: i for i in range(50)}
    # In CPython, i * (2**61 - 1) + 5 hashes to 5 and its negation to -5:
    # 18 keys with two hash values.
    keys = [(2**61 - 1) * i + 5 for i in range(9)]
    data = _keyed_map(keys + [-k for k in keys])
    with pytest.raises(DecodeError, match="distinct hash values"):
        codec.decode(data)
    with pytest.raises(DecodeError, match="distinct hash values"):
        anyio.run(lambda: decode_sliced(data, slice_bytes=8))


def _keyed_map(keys: list[int]) -> bytes:
    """A keyed map with these int keys, built by hand (``encode`` refuses
    colliding keys)."""
    import cbor2

    content: list[object] = []
    for key in keys:
        content += [key, 0]
    return cbor2.dumps(cbor2.CBORTag(codec.KEYED_MAP_TAG, content))


# ---------------------------------------------------------------- a live node

_SIXTEEN_MIB = 16 * 1024 * 1024


def _big_frames() -> dict[str, object]:
    """The slowest honest payloads per byte that fit ``max_message_size``."""
    budget = _SIXTEEN_MIB - 4096
    return {
        "small ints": list(range(24)) * (budget // 24),
        "records": [{"id": i, "name": f"user{i}", "ok": True} for i in range(budget // 32)],
        "pids": [td.Pid("a@127.0.0.1", i, 1) for i in range(budget // 48)],
    }


async def test_a_big_frame_arrives_whole_and_in_order() -> None:
    payload = [{"i": i, "s": "x" * 10} for i in range(SLICED_ABOVE // 8)]
    async with open_cluster(2) as (a, b):
        async with b.open_process("sink") as sink:
            async with a.open_process() as src:
                del src
                await a.send(("sink", b.name), "before")
                await a.send(("sink", b.name), payload)
                await a.send(("sink", b.name), "after")
                with anyio.fail_after(30):
                    assert await sink.receive() == "before"
                    got = await sink.receive()
                    assert await sink.receive() == "after"
    assert got == payload


def test_no_cbor2_call_reads_more_than_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule that bounds a stall: every cbor2 call of a sliced decode
    gets at most a window of input (plus a made-up head), except a single
    text or byte string, which is one copy."""
    import io

    import cbor2

    seen: list[tuple[int, object]] = []
    real = cbor2.CBORDecoder

    class Spy:
        def __init__(self, stream: io.BytesIO, **options: Any) -> None:
            self.stream = stream
            self.decoder = real(stream, **options)

        def decode(self) -> object:
            available = len(self.stream.getbuffer()) - self.stream.tell()
            value = self.decoder.decode()
            seen.append((available, value))
            return value

    monkeypatch.setattr(cbor2, "CBORDecoder", Spy)
    payload = [
        list(range(3000)),
        {f"k{i}": [i, "v" * (i % 50)] for i in range(2000)},
        Box("b", [td.Pid("a@h", i, 1) for i in range(500)]),
        {i: str(i) for i in range(1000)},
        "t" * 9000,
        b"b" * 9000,
    ]
    window = 1024
    assert anyio.run(lambda: decode_sliced(codec.encode(payload), slice_bytes=window)) == payload
    assert len(seen) > 100
    for available, value in seen:
        assert available <= window + 9 or type(value) in (str, bytes), (available, value)


async def test_big_frames_take_the_sliced_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_distribute import transport

    sizes: list[int] = []
    real = decode_sliced

    async def spy(data: bytes, **options: Any) -> object:
        sizes.append(len(data))
        return await real(data, **options)

    monkeypatch.setattr(transport, "decode_sliced", spy)
    async with open_cluster(2) as (a, b):
        async with b.open_process("sink") as sink:
            await a.send(("sink", b.name), "x" * (SLICED_ABOVE // 2))
            await a.send(("sink", b.name), "y" * (SLICED_ABOVE + 1))
            with anyio.fail_after(30):
                assert await sink.receive() == "x" * (SLICED_ABOVE // 2)
                assert await sink.receive() == "y" * (SLICED_ABOVE + 1)
    assert len(sizes) == 1 and sizes[0] > SLICED_ABOVE


async def test_a_sliced_decode_lets_other_tasks_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the yield interval at zero, another task runs between slices:
    the decode is interleaved, not one step."""
    from trio_distribute import _sliced_decode

    monkeypatch.setattr(_sliced_decode, "YIELD_AFTER", 0.0)
    ticks = 0
    done = anyio.Event()

    async def other() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.lowlevel.checkpoint()

    data = codec.encode([list(range(500)) for _ in range(40)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        await anyio.lowlevel.checkpoint()
        before = ticks
        value = await decode_sliced(data, slice_bytes=256)
        during = ticks - before
        done.set()
    assert value == [list(range(500)) for _ in range(40)]
    assert during >= len(data) // 256 // 2


def test_the_documented_slicing_bounds() -> None:
    """The numbers the limits page states: frames over 128 KiB are sliced,
    one cbor2 call reads at most 32 KiB, other tasks run every 4 ms."""
    from trio_distribute import _sliced_decode

    assert _sliced_decode.SLICED_ABOVE == 128 * 1024
    assert _sliced_decode.SLICE_BYTES == 32 * 1024
    assert _sliced_decode.YIELD_AFTER == 0.004


# ------------------------------------------------- rules of the walk, exactly


def _run_sliced(data: Any, window: int, max_depth: int = codec.DEFAULT_MAX_DEPTH) -> object:
    decode = functools.partial(decode_sliced, data, max_depth=max_depth, slice_bytes=window)
    return anyio.run(decode)


def _finish(steps: Any) -> object:
    """Run a sliced decode's remaining steps; its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize(
    "count", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
)
@pytest.mark.parametrize("major", [4, 5], ids=["array", "map"])
def test_a_run_head_is_the_head_cbor_writes_for_its_count(major: int, count: int) -> None:
    """A run of children is decoded behind a made-up head: it must be the
    (shortest) head CBOR itself writes, on both sides of every size step."""
    import cbor2

    from trio_distribute._proto._sliced import _head

    expected = bytearray(cbor2.dumps(count))  # a uint's head: major type 0
    expected[0] |= major << 5
    assert _head(major, count) == bytes(expected)


def test_a_walked_array_of_exactly_24_items_keeps_all_of_them() -> None:
    """24 is the first count with a one-byte argument after the head: an
    array of 24 one-byte items, one byte too big for the window, is walked
    as one run of 24."""
    data = codec.encode(list(range(24)))
    assert len(data) == 26
    assert _run_sliced(data, 25) == list(range(24))


_interrupting = [False]


def _interrupt_if_asked(instance: Any, attribute: Any, value: Any) -> None:
    if _interrupting[0]:
        raise KeyboardInterrupt


@codec.message("test_sliced.interruptible")
@attrs.frozen
class Interruptible:
    x: Any = attrs.field(validator=_interrupt_if_asked)


@pytest.mark.parametrize("window", [4096, 64, 8])
def test_an_interrupt_inside_a_tag_decoder_is_raised_again_in_a_sliced_decode(
    window: int,
) -> None:
    """cbor2 wraps what a tag decoder raises; a KeyboardInterrupt must come
    out of a sliced decode as itself, whether the message is decoded by a
    cbor2 call (small) or walked and finished (bigger than the window)."""
    for value in ([Interruptible(1), "x" * 100], [Interruptible("y" * 100)]):
        data = codec.encode(value)
        assert _run_sliced(data, window) == value
        _interrupting[0] = True
        try:
            with pytest.raises(KeyboardInterrupt):
                _run_sliced(data, window)
        finally:
            _interrupting[0] = False


# Each refused shape, as raw CBOR: the sliced decoder must refuse it with
# the same kind of reason as decode, whether it is read by a cbor2 call
# (fits a window) or walked (bigger than one).
_REFUSED_ITEMS = {
    "indefinite array": (b"\x9f\x01\xff", "indefinite"),
    "indefinite map": (b"\xbf\x61a\x01\xff", "indefinite"),
    "indefinite bytes": (b"\x5f\x41a\xff", "indefinite"),
    "indefinite text": (b"\x7f\x61a\xff", "indefinite"),
    "duplicate key": (b"\xa2\x61a\x01\x61a\x02", "duplicate key"),
    "int map key": (b"\xa1\x01\x00", "map key must be"),
    "unknown tag": (b"\xd9\x1b\x58\x01", "unknown CBOR tag"),
    "shared value": (b"\xd8\x1c\x81\x01", "CBOR tag 28"),
    "bignum": (b"\xc2\x49\x01" + bytes(8), "CBOR tag 2 "),
    "bad utf-8": (b"\x62\xc3\x28", "text string|UTF-8"),
    "long bad utf-8": (b"\x78\x28" + b"a" * 38 + b"\xc3\x28", "text string|UTF-8"),
    "reserved head": (b"\x1c", "invalid|malformed"),
}


@pytest.mark.parametrize("name", sorted(_REFUSED_ITEMS))
@pytest.mark.parametrize("window", [1, 2, 5, 9, 64, 4096])
def test_every_refusal_holds_on_every_path_of_a_sliced_decode(name: str, window: int) -> None:
    item, reason = _REFUSED_ITEMS[name]
    pad = codec.encode("p" * 100)
    for data in (
        item,
        b"\x82" + item + pad,  # first in a run
        b"\x82" + pad + item,  # after a walked string
        b"\xa1\x61k" + item,  # a map's value
        b"\x83\x01\x02" + item,  # inside a run of small items
    ):
        with pytest.raises(DecodeError, match=reason):
            codec.decode(data)
        # A window smaller than a tag's head (up to 9 bytes; tests only)
        # may word the refusal differently, but refuses all the same.
        with pytest.raises(DecodeError, match=reason if window >= 9 else None):
            _run_sliced(data, window)


@pytest.mark.parametrize("window", [1, 3, 64, 4096])
def test_any_buffer_is_decoded_as_its_bytes(window: int) -> None:
    """decode reads any buffer as its raw bytes; so does a sliced decode,
    whatever the buffer's item format."""
    import array

    value: list[object] = [{"k": "é" * 40, "b": b"\x00" * 30}, list(range(40)), "x" * 100]
    data = codec.encode(value)
    if len(data) % 2:
        value.append(None)
        data = codec.encode(value)
    for buffer in (
        data,
        bytearray(data),
        memoryview(data),
        memoryview(data).cast("H"),
        array.array("B", data),
    ):
        assert codec.decode(buffer) == value  # type: ignore[arg-type]
        assert _run_sliced(buffer, window) == value


@pytest.mark.parametrize("max_depth", [1, 2])
@pytest.mark.parametrize("content", ["abc", b"abc", "x" * 40])
def test_a_walked_tag_one_level_too_deep_is_refused_for_its_depth(
    max_depth: int, content: object
) -> None:
    """A tag bigger than the window is walked; one level too deep it is
    refused at its head, for its depth (as decode refuses it), before its
    content reaches the tag's finisher."""
    import cbor2

    data = b"\x81" * max_depth + cbor2.dumps(cbor2.CBORTag(codec.PID_TAG, content))
    # Windows that cut the tag's 3-byte head: the tag is walked.
    for window in (1, 2, 3, 5):
        with pytest.raises(DecodeError, match=f"nested deeper than max_depth={max_depth}"):
            codec.decode(data, max_depth=max_depth)
        with pytest.raises(DecodeError, match=f"nested deeper than max_depth={max_depth}"):
            _run_sliced(data, window, max_depth)


def test_a_bytearray_is_read_in_place_not_copied() -> None:
    """The transport reads a big frame's body into one bytearray; the
    sliced decode reads it there (a 16 MiB frame is not copied whole
    once more), and bytes as they are."""
    for data in (bytearray(codec.encode(["x" * 100] * 10)), codec.encode(["y" * 100] * 10)):
        steps: Any = codec.decode_steps(data, slice_bytes=64)
        next(steps)
        assert steps.gi_frame.f_locals["walk"].data is data
        assert _finish(steps) == codec.decode(data)


def test_a_memory_error_in_a_tag_finisher_is_not_a_bad_payload() -> None:
    """Running out of memory is the node's problem, not the peer's: a
    finisher of a walked tag that raises MemoryError lets it through, where
    anything else it raises is a refusal."""
    import cbor2

    from trio_distribute._proto._cbor import TagTable
    from trio_distribute._proto._sliced import SlicedDecoder

    raised: list[BaseException] = []

    def finish(content: Any) -> Any:
        if raised:  # always; a generator, like every finisher
            raise raised[0]
        yield

    table = TagTable({7000: cbor2.shareable_decoder(lambda immutable: (None, finish))})
    decoder = SlicedDecoder(table, {7000: finish}, default_max_depth=8)
    data = cbor2.dumps([cbor2.CBORTag(7000, "y" * 100)])
    for error, expected in ((MemoryError(), MemoryError), (ValueError("bad"), DecodeError)):
        raised[:] = [error]
        with pytest.raises(expected):
            for _ in decoder.steps(data, slice_bytes=8):
                pass


@pytest.mark.parametrize(
    "scalar",
    [
        b"\x1b" + bytes(3),
        b"\xfb" + bytes(4),
        b"\x19\x01",
        b"\x3a\x00",
        b"\x78\x64" + b"t" * 50,  # a text string of 100 bytes, 50 there
        b"\x58\x64" + b"b" * 99,  # a byte string one byte short
    ],
    ids=lambda b: b[:2].hex(),
)
@pytest.mark.parametrize("window", [1, 2, 16])
def test_a_truncated_scalar_or_string_is_refused_when_walked(scalar: bytes, window: int) -> None:
    for data in (scalar, b"\x81" + scalar, b"\x82\x01" + scalar):
        with pytest.raises(DecodeError, match="truncated"):
            codec.decode(data)
        with pytest.raises(DecodeError, match="truncated"):
            _run_sliced(data, window)


# An empty array or map: its shortest head, and heads padded to 1, 2, 4
# and 8 argument bytes (a padded head bigger than a tiny window is walked).
_EMPTIES = [
    bytes([major << 5 | info]) + bytes(size)
    for major in (4, 5)
    for info, size in ((0, 0), (24, 1), (25, 2), (26, 4), (27, 8))
]


def _at_depth(levels: int, item: bytes) -> list[bytes]:
    """``item`` inside ``levels`` containers, in each place a walk reads
    it from: a map's value, an array's first, middle and last item."""
    return [
        b"\xa1\x64kkkk" * levels + item,
        b"\x82" * levels + item + b"\x01" * levels,
        b"\x83\x01" * levels + item + b"\x02" * levels,
        b"\x82\x01" * levels + item,
    ]


@pytest.mark.parametrize("max_depth", [1, 2])
@pytest.mark.parametrize("window", [1, 2, 3, 5, 9])
def test_an_empty_container_one_level_past_max_depth_is_taken_on_every_path(
    max_depth: int, window: int
) -> None:
    """cbor2 counts a level when it descends into children, so decode takes
    an empty array or map one level past max_depth (where only a scalar
    could sit otherwise). A sliced decode must give the same, whether the
    empty container is read inside a run, on its own, or walked (a padded
    head bigger than the window); its result may not depend on the window."""
    for empty in _EMPTIES:
        for data in _at_depth(max_depth, empty):
            expected = codec.decode(data, max_depth=max_depth)
            assert _same(_run_sliced(data, window, max_depth), expected), (data.hex(), window)


@pytest.mark.parametrize("max_depth", [1, 2])
@pytest.mark.parametrize("window", [1, 2, 3, 5, 9])
def test_a_container_with_children_one_level_past_max_depth_is_refused_on_every_path(
    max_depth: int, window: int
) -> None:
    """One level past max_depth a container with children is refused, even
    when walked (bigger than the window) and its only child is a long
    string the walk cuts out without cbor2; a long string at exactly
    max_depth is taken."""
    text = codec.encode("x" * 40)
    for container in (b"\x81", b"\x82\x01", b"\xa1\x61a", b"\x98\x01", b"\xb8\x01\x61a"):
        for data in _at_depth(max_depth, container + text):
            with pytest.raises(DecodeError, match=f"nested deeper than max_depth={max_depth}"):
                codec.decode(data, max_depth=max_depth)
            with pytest.raises(DecodeError, match=f"nested deeper than max_depth={max_depth}"):
                _run_sliced(data, window, max_depth)
    for data in _at_depth(max_depth, text):
        assert _run_sliced(data, window, max_depth) == codec.decode(data, max_depth=max_depth)


@pytest.mark.parametrize(
    "data",
    [
        # A map whose last key repeats an earlier one, its value missing.
        b"\xa3\x61b\x01\x61a\x01\x61a",
        # An array that ends on the head of a tuple or message (a dict-key tag).
        b"\x86\x01\x02\x03\x04\x05" + FROZEN_HEAD,
    ],
    ids=["map ending on a repeated key", "array ending on a key tag's head"],
)
@pytest.mark.parametrize("window", [3, 5, 8])
def test_a_payload_that_ends_inside_a_walked_run_is_refused_as_truncated(
    data: bytes, window: int
) -> None:
    """A run's window that reaches the payload's end and still ends inside
    the run means the payload is cut short: it is refused there, as
    truncated (what decode says), not retried child by child until some
    other rule trips on the incomplete tail (a key whose value never came
    is no duplicate; a tag head with no content is no oversized key)."""
    with pytest.raises(DecodeError, match="truncated"):
        codec.decode(data)
    assert len(data) > window  # the item is walked, not read in one call
    with pytest.raises(DecodeError, match="truncated"):
        _run_sliced(data, window)


@pytest.mark.parametrize("window", [40, 64])
def test_a_small_tuple_or_message_key_in_a_walked_keyed_map_is_decoded(window: int) -> None:
    """A keyed map bigger than the window is decoded in runs of children;
    a run that overruns the window is retried shorter, not walked child by
    child: a tuple or message key that fits the window is decoded, never
    mistaken for one bigger than the window (which the walk refuses)."""
    many = {(i, str(i)): i for i in range(30)} | {Key(i, "k"): -i for i in range(30)}
    data = codec.encode(many)
    assert len(data) > 10 * window and FROZEN_HEAD in data
    assert _run_sliced(data, window) == many == codec.decode(data)
    # One pair, its value bigger than the window: the first run (key and
    # value) overruns, and is retried with the key alone.
    for key in ((1, "a"), Key(1, "a")):
        one = {key: "x" * 100}
        assert _run_sliced(codec.encode(one), window) == one


@pytest.mark.parametrize("window", [1, 3, 9])
def test_a_walked_byte_string_map_key_is_decoded(window: int) -> None:
    """A plain map's keys may be text or byte strings: a byte-string key
    bigger than the window is walked and taken like a text one, and any
    other key is refused (an int key must travel in a keyed map)."""
    value = {b"b" * 40: 1, "t" * 40: 2, b"": 3}
    data = codec.encode(value)
    assert _run_sliced(data, window) == value == codec.decode(data)
    for key in (b"\x1b" + bytes(8), b"\x3b" + bytes(8), b"\xf9\x00\x00"):
        data = b"\xa1" + key + b"\x01"
        with pytest.raises(DecodeError, match="map key must be"):
            codec.decode(data)
        with pytest.raises(DecodeError, match="map key must be"):
            _run_sliced(data, window)


@pytest.mark.parametrize("window", [2, 4096])
def test_a_map_key_refusal_says_how_such_a_dict_travels(window: int) -> None:
    """A plain CBOR map with an int key is refused, and the reason says
    what to send instead (a keyed map, tag 62628), on both decoders."""
    data = b"\xa2\x61a\x01\x01\x02"
    hint = f"dict with other keys travels as tag {codec.KEYED_MAP_TAG}"
    with pytest.raises(DecodeError, match=hint):
        codec.decode(data)
    with pytest.raises(DecodeError, match=hint):
        _run_sliced(data, window)


@pytest.mark.parametrize(
    ("tag", "reason"),
    [(28, "CBOR tag 28 "), (2, "CBOR tag 2 "), (7000, "unknown CBOR tag 7000")],
    ids=["shared value", "bignum", "unknown"],
)
@pytest.mark.parametrize("window", [1, 2, 16, 64])
def test_a_refused_tag_bigger_than_the_window_is_refused_for_its_tag(
    tag: int, reason: str, window: int
) -> None:
    """A tag with no finisher is refused at its head, with the reason decode
    gives, also when the tag is bigger than the window, and when the window
    is smaller than its head (tests only: then the tag is walked)."""
    import cbor2

    for content in (b"x" * 100, "y" * 100, list(range(100))):
        for data in (
            cbor2.dumps(cbor2.CBORTag(tag, content)),
            cbor2.dumps([1, cbor2.CBORTag(tag, content)]),
        ):
            with pytest.raises(DecodeError, match=reason):
                codec.decode(data)
            with pytest.raises(DecodeError, match=reason):
                _run_sliced(data, window)


@pytest.mark.parametrize("window", [16, 64])
def test_a_payload_that_ends_inside_an_item_the_window_holds_is_refused_as_truncated(
    window: int,
) -> None:
    """An item whose window reaches the payload's end and still does not
    end there is cut short: it is refused as truncated (what decode says),
    not walked as if it were bigger than the window (the walk would refuse
    a tuple key's tag for its size first)."""
    cut_key = FROZEN_HEAD + b"\x83\x01\x02"  # a 3-tuple key with 2 items
    long_key = codec.encode("k" * 40)  # walked: bigger than the windows
    for data in (cut_key, b"\xa1" + long_key + cut_key):
        with pytest.raises(DecodeError, match="truncated"):
            codec.decode(data)
        with pytest.raises(DecodeError, match="truncated"):
            _run_sliced(data, window)


@pytest.mark.parametrize("window", [8, 16, 32, 4096])
@pytest.mark.parametrize("inner", [["x" * 40, 5], {"y": "x" * 40, "z": 5}])
def test_a_malformed_item_in_a_walked_container_is_refused_as_malformed(
    inner: Any, window: int
) -> None:
    # The bad item sits in a child bigger than the window, which is walked
    # after a run of its parent fell short: the refusal must name the bad
    # item, as the one-call decoder does, not a truncation.
    data = bytearray(codec.encode(["a" * 10, {"k": inner}]))
    assert data[-1] == 5
    data[-1] = 0x1D  # an unsigned integer with a reserved length code
    with pytest.raises(DecodeError) as one_call:
        codec.decode(bytes(data))
    with pytest.raises(DecodeError) as sliced:
        anyio.run(lambda: decode_sliced(bytes(data), slice_bytes=window))
    assert "malformed" in str(sliced.value)
    assert str(sliced.value) == str(one_call.value)


def _loads_cbor(instance: object, attribute: object, value: bytes) -> None:
    cbor2.loads(value)


@codec.message("test_sliced.embedded")
@attrs.frozen
class Embedded:
    """A message whose validator decodes CBOR of its own: a bad field makes
    it raise cbor2's end-of-stream error, which is a refusal of the message,
    not a frame cut short."""

    blob: bytes = attrs.field(validator=_loads_cbor)


@pytest.mark.parametrize("window", [8, 16, 32, 4096])
def test_a_message_refused_by_its_validator_is_not_taken_for_a_truncation(window: int) -> None:
    with attrs.validators.disabled():
        value = ["a" * 40, Embedded(b"\x82\x01")]  # an array of two, one given
    data = codec.encode(value)
    with pytest.raises(DecodeError) as one_call:
        codec.decode(data)
    with pytest.raises(DecodeError) as sliced:
        anyio.run(lambda: decode_sliced(data, slice_bytes=window))
    assert "test_sliced.embedded" in str(one_call.value)
    assert str(sliced.value) == str(one_call.value)


def _head(data: bytes) -> tuple[int, int, int]:
    from trio_distribute._proto._sliced import _Walk

    return _Walk(codec._SLICED, data, codec.DEFAULT_MAX_DEPTH, 16)._parse_head(0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x17", (0, 23, 1)),  # the largest argument in the head's own bits
        (b"\x18\x18", (0, 24, 2)),  # the smallest with a 1-byte argument
        (b"\x59\x01\x00", (2, 256, 3)),
        (b"\x7a\x00\x01\x00\x00", (3, 65536, 5)),
        (b"\x9b" + (2**40).to_bytes(8, "big"), (4, 2**40, 9)),
    ],
)
def test_the_walks_head_parser_reads_every_argument_size(
    data: bytes, expected: tuple[int, int, int]
) -> None:
    assert _head(data) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),  # nothing left where an item should start
        (b"\x1c", "invalid additional information 28"),
        (b"\x5d", "invalid additional information 29"),
        (b"\x7e", "invalid additional information 30"),
        (b"\x9f", "indefinite-length"),
        (b"\x19\x01", "truncated"),  # a 2-byte argument cut short
        (b"\x9b" + bytes(7), "truncated"),
    ],
)
def test_the_walks_head_parser_refuses_what_is_not_a_head(data: bytes, reason: str) -> None:
    # Heads are checked by cbor2 before the walk reaches them; the walk's
    # own parser refuses the same, so a change of call path cannot let a
    # reserved or cut head through.
    with pytest.raises(DecodeError, match=reason):
        _head(data)


@pytest.mark.parametrize("window", [16, 64])
def test_a_key_repeated_in_a_later_run_of_a_big_map_is_refused_and_named(window: int) -> None:
    # The walk decodes a big map in runs of pairs; a key that comes back
    # in a later run is a duplicate as much as one within a run.
    pairs = [(f"k{i:03}", "v" * 8) for i in range(40)] + [("k005", "again")]
    data = bytes([0xB8, len(pairs)]) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in pairs)
    with pytest.raises(DecodeError, match="duplicate key"):
        codec.decode(data)
    with pytest.raises(DecodeError, match=r"duplicate key in a CBOR map \('k005'\)"):
        anyio.run(lambda: decode_sliced(data, slice_bytes=window))
