"""The kernel's restricted CBOR decoder (trio_distribute._proto._cbor).

Each rule is fed the input it exists for, through both entry points
(:func:`decode_one` and a :func:`payload_decoder`) and, for the fast
decoder, on both of its paths: payloads no longer than ``max_depth`` (no
depth limit passed to cbor2) and longer ones.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from trio_distribute._proto import _cbor
from trio_distribute._proto._cbor import (
    BUILTIN_TAGS,
    FinalDecodeError,
    TagTable,
    decode_one,
    payload_decoder,
)
from trio_distribute.errors import DecodeError

PLAIN = TagTable(context="a test message")
fast = payload_decoder(PLAIN, default_max_depth=8, map_key_hint="!")

Decode = Callable[[bytes], object]


def via_one(data: bytes) -> object:
    return decode_one(data, tags=PLAIN, max_depth=8, map_key_hint="!")


def via_fast(data: bytes) -> object:
    return fast(data)


DECODERS = [via_one, via_fast]
PAD = b"\x78\x80" + b"p" * 128  # a 130-byte text string: makes a payload long


def long(item_head: bytes, *items: bytes) -> bytes:
    """An array holding ``items`` plus padding, over 8 bytes (the slow path)."""
    return item_head + b"".join(items) + PAD


@pytest.mark.parametrize("decode", DECODERS)
def test_duplicate_keys_are_refused(decode: Decode) -> None:
    dup = b"\xa2\x61a\x01\x61a\x02"
    for data in (dup, b"\x82" + dup + PAD, b"\xa2\x41a\x01\x41a\x02"):
        with pytest.raises(DecodeError, match=r"^duplicate key in a CBOR map \("):
            decode(data)
    assert decode(b"\xa2\x61a\x01\x61b\x02") == {"a": 1, "b": 2}
    assert decode(b"\xa2\x61a\x01\x41a\x02") == {"a": 1, b"a": 2}  # text and bytes differ


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "item",
    [b"\x9f\x01\xff", b"\xbf\x61a\x01\xff", b"\x5f\x41a\xff", b"\x7f\x61a\xff"],
    ids=["array", "map", "bytes", "text"],
)
def test_indefinite_lengths_are_refused(decode: Decode, item: bytes) -> None:
    for data in (item, b"\x82" + item + PAD):
        with pytest.raises(DecodeError, match=r"^indefinite-length CBOR items are not allowed"):
            decode(data)


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "key", [b"\x01", b"\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00", b"\x82\x01\x02", b"\xf6"]
)
def test_only_text_and_byte_string_map_keys(decode: Decode, key: bytes) -> None:
    for data in (b"\xa1" + key + b"\x00", b"\x82\xa1" + key + b"\x00" + PAD):
        with pytest.raises(DecodeError, match=r"^error decoding map: map key must be .*!$"):
            decode(data)


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("tag", [*BUILTIN_TAGS, 6, 9999, 2**32, 2**64 - 1])
def test_every_tag_outside_the_table_is_refused(decode: Decode, tag: int) -> None:
    # Around a value cbor2 would happily decode (tag 28 around a plain
    # integer, 55799 around anything): refused for the tag itself.
    tagged = cbor2.dumps(cbor2.CBORTag(tag, 1))
    for data in (tagged, b"\x82" + tagged + PAD):
        with pytest.raises(DecodeError, match=f"CBOR tag {tag}.* in a test message"):
            decode(data)


# The tags cbor2 6.3 decodes natively, pinned here by number: each is
# overridden with a refuser that names it (none falls to "unknown").
NATIVE_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100,
    256, 258, 260, 261, 1004, 43000, 55799,
)  # fmt: skip


def test_every_native_tag_is_named_in_its_refusal() -> None:
    assert sorted(BUILTIN_TAGS) == list(NATIVE_TAGS)
    for tag in NATIVE_TAGS:
        with pytest.raises(DecodeError, match=rf"^CBOR tag {tag} \(.+\) is not allowed in a"):
            via_fast(cbor2.dumps(cbor2.CBORTag(tag, 1)))


def test_tags_are_refused_before_their_content_is_read() -> None:
    # A tag whose content is truncated: the refusal names the tag, which
    # it can only do if it came before reading the content.
    with pytest.raises(DecodeError, match="CBOR tag 258"):
        via_one(b"\xd9\x01\x02\x9a\xff\xff\xff\xff")
    with pytest.raises(DecodeError, match="unknown CBOR tag 9999"):
        via_fast(b"\xd9\x27\x0f\x5b" + b"\xff" * 8)


def test_shared_references_are_refused() -> None:
    # Tags 28/29 build shared (cyclic) structures in cbor2.
    shared = b"\xd8\x1c\x81\xd8\x1d\x00"  # a list containing itself
    for decode in DECODERS:
        with pytest.raises(DecodeError, match="CBOR tag 28"):
            decode(shared)


def test_table_tags_decode() -> None:
    seen: list[object] = []

    def finish(value: object) -> object:
        seen.append(value)
        return ("tagged", value)

    table = TagTable({7000: cbor2.shareable_decoder(lambda immutable: (None, finish))})
    decode = payload_decoder(table, default_max_depth=8)
    data = cbor2.dumps(cbor2.CBORTag(7000, [1, 2]))
    assert decode(data) == ("tagged", [1, 2])
    assert decode_one(data, tags=table, max_depth=8) == ("tagged", [1, 2])
    assert table.context == ""
    with pytest.raises(DecodeError, match=r"^unknown CBOR tag 7001$"):
        decode(cbor2.dumps(cbor2.CBORTag(7001, 1)))
    with pytest.raises(DecodeError, match=r"^CBOR tag 1 \(epoch date/time\) is not allowed$"):
        decode(cbor2.dumps(cbor2.CBORTag(1, 1)))


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "trailer", [b"\x00", b"\x41x", b"\x40", b"\x4f" + b"\x00" * 15, b"\x60", b"\xa0", b"\x80"]
)
def test_trailing_bytes_are_refused(decode: Decode, trailer: bytes) -> None:
    # Byte-string trailers included: the fast path appends a 15-byte
    # string of its own and must tell a peer's from it.
    for data in (b"\x01", b"\x82\x01" + PAD):
        with pytest.raises(DecodeError, match="trailing bytes"):
            decode(data + trailer)


def test_the_sentinel_is_random_per_process() -> None:
    code = "from trio_distribute._proto import _cbor; print(_cbor._SECRET.hex())"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(runs) == 2 and all(len(bytes.fromhex(r)) == 15 for r in runs)
    assert _cbor._SENTINEL == b"\x4f" + _cbor._SECRET


def nested(depth: int, pad: bool = False) -> bytes:
    """``depth`` nested arrays around an int (optionally a long string)."""
    inner = PAD if pad else b"\x01"
    return b"\x81" * depth + inner


@pytest.mark.parametrize("pad", [False, True], ids=["short", "long"])
def test_depth_limit_exact_on_both_sides(pad: bool) -> None:
    for max_depth in (1, 2, 5, 8):
        data = nested(max_depth, pad)
        assert fast(data, max_depth=max_depth) is not None
        assert decode_one(data, tags=PLAIN, max_depth=max_depth) is not None
        with pytest.raises(DecodeError, match=f"deeper than max_depth={max_depth}"):
            fast(nested(max_depth + 1, pad), max_depth=max_depth)
        with pytest.raises(DecodeError, match=f"deeper than max_depth={max_depth}"):
            decode_one(nested(max_depth + 1, pad), tags=PLAIN, max_depth=max_depth)


def test_default_max_depth_applies() -> None:
    fast(nested(8, pad=True))
    with pytest.raises(DecodeError, match="max_depth=8"):
        fast(nested(9, pad=True))


def test_depth_beyond_cbor2s_own_default_is_honoured() -> None:
    # cbor2 refuses nesting beyond 400 unless told otherwise: a caller's
    # larger limit must reach it, even for payloads shorter than the limit
    # (only payloads up to _FAST_DEPTH_BYTES skip passing it).
    deep = nested(500)
    assert fast(deep, max_depth=1000) is not None
    assert fast(nested(_cbor._FAST_DEPTH_BYTES - 1), max_depth=_cbor._FAST_DEPTH_BYTES) is not None
    with pytest.raises(DecodeError):
        fast(nested(401), max_depth=400)


@pytest.mark.parametrize("max_depth", [0, -1, -(2**70)])
def test_max_depth_must_be_a_positive_int(max_depth: Any) -> None:
    with pytest.raises(ValueError, match="max_depth must be a positive int"):
        fast(PAD, max_depth=max_depth)
    with pytest.raises(ValueError, match="max_depth must be a positive int"):
        fast(b"\x01", max_depth=max_depth)


def test_max_depth_one_is_allowed() -> None:
    assert fast(b"\x01", max_depth=1) == 1
    assert fast(PAD, max_depth=1) == "p" * 128


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x82\x01", "^truncated CBOR: "),
        (b"\x5b" + b"\xff" * 8, "^truncated CBOR: "),
        (b"\xff", "^malformed CBOR: "),
        (b"\x1c", "^malformed CBOR: "),
    ],
)
def test_malformed_input_is_a_decode_error(decode: Decode, data: bytes, reason: str) -> None:
    for payload in (data, b"\x82" + PAD + data):
        with pytest.raises(DecodeError, match=reason):
            decode(payload)


def _duplicate_text(key_length: int) -> str:
    key = cbor2.dumps("k" * key_length)
    try:
        cbor2.loads(b"\xa2" + key + b"\x01" + key + b"\x02", allow_duplicate_keys=False)
    except cbor2.CBORDecodeError as exc:
        return str(exc)
    raise AssertionError("no error")


def test_malformed_reason_quotes_cbor2_exactly() -> None:
    expected = "malformed CBOR: break code encountered where a data item was expected"
    for decode in DECODERS:
        with pytest.raises(DecodeError) as info:
            decode(b"\xff")
        assert str(info.value) == expected


def test_reasons_quoting_peer_data_are_bounded_exactly() -> None:
    # cbor2's message quotes the key: cut to 300 characters (297 + "...").
    prefix = len(_duplicate_text(0))
    at, over = 300 - prefix, 301 - prefix
    assert len(_duplicate_text(at)) == 300
    for decode in DECODERS:
        for length, expected in (
            (at, _duplicate_text(at)),
            (over, _duplicate_text(over)[:297] + "..."),
        ):
            key = cbor2.dumps("k" * length)
            with pytest.raises(DecodeError) as info:
                decode(b"\xa2" + key + b"\x01" + key + b"\x02")
            assert str(info.value) == f"duplicate key in a CBOR map ({expected})"


def test_other_buffers_decode() -> None:
    data = cbor2.dumps({"a": [1, 2]})
    for buffer in (bytearray(data), memoryview(data)):
        assert fast(buffer) == {"a": [1, 2]}
        assert decode_one(buffer, tags=PLAIN, max_depth=8) == {"a": [1, 2]}


def test_a_final_refusal_is_not_decoded_twice() -> None:
    calls: list[object] = []

    def finish(value: object) -> object:
        calls.append(value)
        raise FinalDecodeError("refused for good")

    table = TagTable({7000: cbor2.shareable_decoder(lambda immutable: (None, finish))})
    decode = payload_decoder(table, default_max_depth=8)
    with pytest.raises(DecodeError, match=r"^refused for good$"):
        decode(cbor2.dumps(cbor2.CBORTag(7000, 1)))
    assert calls == [1]
    # A plain DecodeError from a tag decoder is explained by a second pass.
    again: list[object] = []

    def plain(value: object) -> object:
        again.append(value)
        raise DecodeError("refused")

    table = TagTable({7000: cbor2.shareable_decoder(lambda immutable: (None, plain))})
    with pytest.raises(DecodeError, match=r"^refused$"):
        payload_decoder(table, default_max_depth=8)(cbor2.dumps(cbor2.CBORTag(7000, 1)))
    assert again == [1, 1]


def test_the_decoders_never_raise_anything_else() -> None:
    # A handful of hostile shapes; each is a DecodeError, nothing else.
    for data in (b"", b"\x1f", b"\xf8\x00", b"\xc0\xc0\xc0", b"\xa1\xa0\x01", b"\xfc"):
        for decode in DECODERS:
            with pytest.raises(DecodeError):
                decode(data)


class _Stop(BaseException):
    """Not an Exception, like KeyboardInterrupt and trio's Cancelled."""


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, _Stop])
@pytest.mark.parametrize("pad", [False, True], ids=["short", "long"])
def test_an_interrupt_inside_a_tag_decoder_is_raised_again(
    interrupt: type[BaseException], pad: bool
) -> None:
    # cbor2 wraps whatever a tag decoder raises in a CBORDecodeError; a
    # signal's KeyboardInterrupt must come out as itself (not as a refused
    # payload), from every entry point and on both paths of the fast one.
    def finish(value: object) -> object:
        raise interrupt

    table = TagTable({7000: cbor2.shareable_decoder(lambda immutable: (None, finish))})
    data = cbor2.dumps(cbor2.CBORTag(7000, 1))
    if pad:
        data = b"\x82" + data + PAD
    for decode in (
        payload_decoder(table, default_max_depth=8),
        lambda d: decode_one(d, tags=table, max_depth=8),
    ):
        with pytest.raises(interrupt):
            decode(data)


@pytest.mark.parametrize("pad", [False, True], ids=["short", "long"])
def test_a_one_shot_interrupt_is_raised_from_the_first_decode(pad: bool) -> None:
    # A signal arrives once: the decoder must raise it from the decode it
    # interrupted, not count on the second pass that explains a refusal to
    # meet it again (that pass would find a clean payload).
    calls = []

    def finish(value: object) -> object:
        calls.append(value)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return value

    table = TagTable({7000: cbor2.shareable_decoder(lambda immutable: (None, finish))})
    data = cbor2.dumps(cbor2.CBORTag(7000, 1))
    if pad:
        data = b"\x82" + data + PAD
    with pytest.raises(KeyboardInterrupt):
        payload_decoder(table, default_max_depth=8)(data)
    assert len(calls) == 1


def test_raise_interrupt_finds_an_interrupt_anywhere_in_the_cause_chain() -> None:
    def chain(*excs: BaseException) -> BaseException:
        for outer, inner in itertools.pairwise(excs):
            outer.__cause__ = inner
        return excs[0]

    _cbor.raise_interrupt(chain(ValueError(), TypeError(), DecodeError("x")))  # none: returns
    stop = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        _cbor.raise_interrupt(chain(ValueError(), TypeError(), stop))
    assert info.value is stop
    with pytest.raises(_Stop):
        _cbor.raise_interrupt(_Stop())
