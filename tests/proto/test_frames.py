"""Tests for the length-prefixed framing (trio_distribute._proto.frames)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_distribute._proto.frames import (
    MAX_PREAUTH_FRAME,
    TICK,
    FrameDecoder,
    frame,
)
from trio_distribute.errors import ProtocolError


def header(length: int) -> bytes:
    return length.to_bytes(4, "big")


def random_payloads(rng: random.Random, count: int, max_size: int = 300) -> list[bytes]:
    return [rng.randbytes(rng.randint(1, max_size)) for _ in range(count)]


def random_chunks(data: bytes, rng: random.Random) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 2, 3, 4, 5, 7, 64, 1000, rng.randint(1, 5000)))
        yield data[pos : pos + step]
        pos += step


def feed_all(decoder: FrameDecoder, chunks: Iterator[bytes] | list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def reference_parse(data: bytes, limit: int) -> tuple[list[bytes], bool]:
    """The obvious, slow parser: (payloads, whether an oversized header appears)."""
    payloads: list[bytes] = []
    pos = 0
    while len(data) - pos >= 4:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if length > limit:
            return payloads, True
        if len(data) - pos - 4 < length:
            break
        if length:
            payloads.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return payloads, False


# -- frame() ---------------------------------------------------------------


def test_frame_prefixes_big_endian_length() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"x" * 0x010203) == b"\x00\x01\x02\x03" + b"x" * 0x010203


def test_frame_refuses_empty_payload() -> None:
    with pytest.raises(ValueError, match="tick"):
        frame(b"")


def test_tick_is_a_zero_length_header() -> None:
    assert header(0) == TICK
    assert MAX_PREAUTH_FRAME == 1024


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_whole_stream(seed: int) -> None:
    rng = random.Random(seed)
    payloads = random_payloads(rng, 200)
    decoder = FrameDecoder(1000)
    assert decoder.feed(b"".join(map(frame, payloads))) == payloads
    assert decoder.buffered == 0


def test_round_trip_byte_by_byte() -> None:
    rng = random.Random(42)
    payloads = random_payloads(rng, 50)
    stream = b"".join(map(frame, payloads))
    decoder = FrameDecoder(1000)
    got = feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))])
    assert got == payloads
    assert decoder.buffered == 0


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_random_splits_with_ticks(seed: int) -> None:
    rng = random.Random(seed)
    payloads = random_payloads(rng, 300, max_size=rng.choice((10, 300, 3000)))
    parts: list[bytes] = []
    for payload in payloads:
        parts.extend([TICK] * rng.choice((0, 0, 0, 1, 3)))
        parts.append(frame(payload))
    stream = b"".join(parts)
    decoder = FrameDecoder(4000)
    assert feed_all(decoder, random_chunks(stream, rng)) == payloads
    assert decoder.buffered == 0


def test_feed_returns_bytes_objects() -> None:
    decoder = FrameDecoder(100)
    payloads = decoder.feed(frame(b"one") + frame(b"two")[:5])
    payloads += decoder.feed(frame(b"two")[5:])
    assert payloads == [b"one", b"two"]
    assert all(type(p) is bytes for p in payloads)


def test_ticks_are_skipped() -> None:
    decoder = FrameDecoder(10)
    assert decoder.feed(TICK * 3) == []
    assert decoder.buffered == 0
    assert decoder.feed(TICK + frame(b"a") + TICK + TICK[:2]) == [b"a"]
    assert decoder.buffered == 2
    assert decoder.feed(TICK[2:] + frame(b"b")) == [b"b"]
    assert decoder.buffered == 0


def test_partial_frame_is_buffered() -> None:
    decoder = FrameDecoder(100)
    data = frame(b"hello world")
    assert decoder.feed(data[:2]) == []
    assert decoder.buffered == 2
    assert decoder.feed(data[2:9]) == []
    assert decoder.buffered == 9
    assert decoder.feed(data[9:] + data[:1]) == [b"hello world"]
    assert decoder.buffered == 1


def test_large_frame_in_small_chunks() -> None:
    payload = random.Random(3).randbytes(1 << 20)
    data = frame(payload)
    decoder = FrameDecoder(1 << 20)
    out: list[bytes] = []
    for pos in range(0, len(data), 1000):
        out.extend(decoder.feed(data[pos : pos + 1000]))
        if pos + 1000 < len(data):
            assert decoder.buffered == pos + 1000
    assert out == [payload]
    assert decoder.buffered == 0


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(5)
    assert decoder.feed(frame(b"12345")) == [b"12345"]


# -- limits ------------------------------------------------------------------


def test_oversized_header_rejected_before_body_arrives() -> None:
    decoder = FrameDecoder(MAX_PREAUTH_FRAME)
    announced = header(MAX_PREAUTH_FRAME + 1)
    # Nothing is judged until the header is complete...
    assert decoder.feed(announced[:3]) == []
    # ...and the last header byte is enough: no body byte is ever sent.
    with pytest.raises(ProtocolError, match=r"1025 bytes.*limit of 1024"):
        decoder.feed(announced[3:])
    assert decoder.broken
    assert decoder.buffered == 0


def test_oversized_header_after_good_frames_in_same_chunk() -> None:
    decoder = FrameDecoder(10)
    with pytest.raises(ProtocolError, match="4294967295"):
        decoder.feed(frame(b"ok") + header(2**32 - 1))


def test_decoder_stays_broken() -> None:
    decoder = FrameDecoder(10)
    with pytest.raises(ProtocolError):
        decoder.feed(header(11))
    with pytest.raises(ProtocolError, match="11 bytes"):
        decoder.feed(frame(b"fine"))
    with pytest.raises(ProtocolError):
        decoder.feed(b"")
    with pytest.raises(ProtocolError):
        decoder.next_frame(frame(b"fine"))


def test_raising_the_limit_mid_stream() -> None:
    big = b"x" * 5000
    decoder = FrameDecoder(MAX_PREAUTH_FRAME)
    assert decoder.feed(frame(b"hello")) == [b"hello"]
    decoder.max_frame_size = 1 << 20
    assert decoder.max_frame_size == 1 << 20
    data = frame(big)
    assert decoder.feed(data[:100]) == []
    assert decoder.feed(data[100:] + frame(b"after")) == [big, b"after"]


def test_raising_the_limit_while_a_header_is_buffered() -> None:
    decoder = FrameDecoder(10)
    assert decoder.feed(header(50)[:2]) == []
    decoder.max_frame_size = 100
    assert decoder.feed(header(50)[2:] + b"y" * 50) == [b"y" * 50]


def test_lowering_the_limit_applies_to_an_accepted_header() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(header(50) + b"y" * 10) == []
    decoder.max_frame_size = 20
    with pytest.raises(ProtocolError, match="50 bytes"):
        decoder.feed(b"y")


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_invalid_limit_value(bad: int) -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(bad)
    decoder = FrameDecoder(10)
    with pytest.raises(ValueError, match="max_frame_size"):
        decoder.max_frame_size = bad


def test_invalid_limit_type() -> None:
    with pytest.raises(TypeError, match="max_frame_size"):
        FrameDecoder(True)
    with pytest.raises(TypeError, match="max_frame_size"):
        FrameDecoder(10.0)  # type: ignore[arg-type]


# -- next_frame / take_buffered ----------------------------------------------


def test_next_frame_returns_one_payload_and_leaves_the_rest_unparsed() -> None:
    decoder = FrameDecoder(10)
    # The third frame is over this decoder's limit; it must not be judged.
    rest = frame(b"b" * 50)
    assert decoder.next_frame(TICK + frame(b"one") + frame(b"two") + rest) == b"one"
    assert decoder.next_frame() == b"two"
    assert decoder.take_buffered() == rest
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_next_frame_incremental_and_limit() -> None:
    decoder = FrameDecoder(10)
    data = frame(b"abc")
    assert decoder.next_frame(data[:3]) is None
    assert decoder.next_frame(data[3:5]) is None
    assert decoder.next_frame(data[5:]) == b"abc"
    assert decoder.next_frame(TICK) is None
    with pytest.raises(ProtocolError, match="11 bytes"):
        decoder.next_frame(header(11))


def test_next_frame_then_feed() -> None:
    decoder = FrameDecoder(100)
    stream = frame(b"first") + frame(b"second") + frame(b"third")
    assert decoder.next_frame(stream[:15]) == b"first"
    assert decoder.feed(stream[15:]) == [b"second", b"third"]
    assert decoder.buffered == 0


# -- properties ----------------------------------------------------------------


@given(
    data=st.binary(max_size=2000),
    limit=st.integers(min_value=1, max_value=300),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_arbitrary_bytes_parse_or_raise_protocol_error(data: bytes, limit: int, seed: int) -> None:
    expected, oversized = reference_parse(data, limit)
    decoder = FrameDecoder(limit)
    try:
        got = feed_all(decoder, random_chunks(data, random.Random(seed)))
    except ProtocolError:
        assert oversized
    else:
        assert not oversized
        assert got == expected


@given(
    payloads=st.lists(st.binary(min_size=1, max_size=100), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
)
def test_any_split_yields_the_same_payloads(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) + TICK for p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    decoder = FrameDecoder(100)
    assert feed_all(decoder, chunks) == payloads
    assert decoder.buffered == 0


def test_feed_accepts_other_buffers() -> None:
    # The driver may hand over a bytearray or memoryview; payloads are bytes.
    decoder = FrameDecoder(100)
    assert decoder.feed(bytearray(frame(b"ab"))) == [b"ab"]  # type: ignore[arg-type]
    assert decoder.feed(memoryview(frame(b"cd"))) == [b"cd"]  # type: ignore[arg-type]


# -- each rule pinned at its exact boundary -----------------------------------


class _Sized:
    """Stands in for a payload of ``size`` bytes without allocating it."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __radd__(self, header: bytes) -> bytes:
        return header + b"<payload>"


def test_frame_length_fits_four_bytes_exactly() -> None:
    assert frame(_Sized(2**32 - 1)) == b"\xff\xff\xff\xff<payload>"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not fit"):
        frame(_Sized(2**32))  # type: ignore[arg-type]


def test_max_frame_size_accepts_the_largest_header_value() -> None:
    decoder = FrameDecoder(2**32 - 1)
    assert decoder.max_frame_size == 2**32 - 1
    assert decoder.feed(header(2**32 - 1) + b"x") == []  # announced, waiting
    decoder.max_frame_size = 1
    assert decoder.max_frame_size == 1


def test_next_frame_limit_is_inclusive() -> None:
    # next_frame (the handshake's reader) applies the limit exactly like
    # feed(): a frame of the limit passes, one byte more is refused.
    decoder = FrameDecoder(5)
    assert decoder.next_frame(frame(b"12345")) == b"12345"
    with pytest.raises(ProtocolError, match="6 bytes"):
        decoder.next_frame(header(6))
    assert decoder.broken
    with pytest.raises(ProtocolError):
        decoder.next_frame(b"")


def test_feed_returns_bytes_for_any_buffer() -> None:
    # Payloads are bytes whatever buffer type the driver passes (a
    # memoryview slice would pin the receive buffer and mutate under us).
    for convert in (bytearray, memoryview):
        decoder = FrameDecoder(100)
        payloads = decoder.feed(convert(frame(b"abc") + frame(b"de")))  # type: ignore[arg-type]
        assert payloads == [b"abc", b"de"]
        assert all(type(p) is bytes for p in payloads)


def test_mixing_feed_and_next_frame_loses_no_frame() -> None:
    # feed() remembers how many bytes the pending frame needs; next_frame()
    # must reset that, or a complete frame left behind would wait for more.
    decoder = FrameDecoder(100)
    first = frame(b"0123456789")
    assert decoder.feed(first[:9]) == []
    assert decoder.next_frame(first[9:] + frame(b"ab")) == b"0123456789"
    assert decoder.feed(b"") == [b"ab"]


def test_trickled_frame_is_parsed_once() -> None:
    # A peer sending a large frame one byte at a time must cost linear
    # work: while the pending frame is incomplete, feed() only appends.
    from trio_distribute._proto import frames as frames_module

    calls = 0
    real = frames_module._HEADER

    class Counting:
        def unpack_from(self, data: bytes, offset: int = 0) -> tuple[int, ...]:
            nonlocal calls
            calls += 1
            return real.unpack_from(data, offset)

    data = frame(b"x" * 5000)
    decoder = FrameDecoder(10_000)
    original = frames_module._HEADER
    frames_module._HEADER = Counting()  # type: ignore[assignment]
    try:
        out: list[bytes] = []
        for i in range(len(data)):
            out += decoder.feed(data[i : i + 1])
    finally:
        frames_module._HEADER = original
    assert out == [b"x" * 5000]
    assert calls <= 8  # header bytes, then once when complete


def test_frame_decoder_has_no_instance_dict() -> None:
    # One per connection: slots keep it small and catch misspelt fields.
    decoder = FrameDecoder(10)
    with pytest.raises(AttributeError):
        decoder.extra = 1  # type: ignore[attr-defined]


def test_discard_drops_every_held_byte() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(frame(b"0123456789")[:8]) == []
    assert decoder.buffered == 8
    decoder.discard()
    assert decoder.buffered == 0
    assert decoder.take_buffered() == b""
    assert decoder.feed(frame(b"ok")) == [b"ok"]


def test_an_oversized_header_frees_what_was_held() -> None:
    # The connection is failing: nothing will read those bytes again.
    decoder = FrameDecoder(10)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00\x0b" + b"x" * 5)
    assert decoder.buffered == 0
    decoder = FrameDecoder(10)
    with pytest.raises(ProtocolError):
        decoder.next_frame(b"\x00\x00\x00\x0b" + b"x" * 5)
    assert decoder.buffered == 0


def test_pending_frame_is_the_incomplete_frame_whose_header_was_read() -> None:
    # A driver reads a big frame's body itself once pending_frame says how
    # big it is: 0 while no header is complete, header + payload after, 0
    # again once the frame is out (or the buffer handed over or dropped).
    decoder = FrameDecoder(1000)
    assert decoder.pending_frame == 0
    assert decoder.feed(b"\x00\x00") == []  # half a header
    assert decoder.pending_frame == 0
    assert decoder.feed(b"\x00\x0a" + b"x" * 3) == []
    assert decoder.pending_frame == 14
    assert decoder.feed(b"y" * 7) == [b"xxxyyyyyyy"]
    assert decoder.pending_frame == 0
    assert decoder.feed(header(1)) == []  # a whole header, no payload yet
    assert decoder.pending_frame == 5
    assert decoder.feed(b"z" + TICK + header(3)[:3]) == [b"z"]
    assert decoder.pending_frame == 0  # only part of the next header
    assert decoder.feed(header(3)[3:] + b"ab") == []
    assert decoder.pending_frame == 7
    assert decoder.take_buffered() == header(3) + b"ab"
    assert decoder.pending_frame == 0
    assert decoder.feed(header(2)) == []
    decoder.discard()
    assert decoder.pending_frame == 0


def test_a_header_completed_across_chunks_yields_no_empty_payload() -> None:
    # A pending header (4 bytes needed) is not a frame to cut out.
    decoder = FrameDecoder(100)
    for cut in range(1, 4):
        assert decoder.feed(header(2)[:cut]) == []
        assert decoder.feed(header(2)[cut:]) == []
        assert decoder.feed(b"ok" + header(1)[:cut]) == [b"ok"]
        assert decoder.feed(header(1)[cut:] + b"!") == [b"!"]
        assert decoder.buffered == 0
