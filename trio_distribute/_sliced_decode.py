"""Decoding a big frame in slices, so that it never holds the event loop.

cbor2 decodes a payload in one call, without releasing the interpreter: a
16 MiB frame of small items takes a second or more, and the node's event
loop (ticks, heartbeats, every other connection) waits that long. Frames
above :data:`SLICED_ABOVE` are therefore decoded here, by a walk that
leaves all the real decoding to cbor2 but never hands it more than
:data:`SLICE_BYTES` of input at a time:

* An item is first tried whole from a window of ``SLICE_BYTES`` bytes; most
  items fit, and cbor2 decodes them at full speed.
* An item that does not fit is walked: an array or map is decoded in runs
  of children, each run wrapped in a made-up array or map head of ``k``
  children and decoded from a window (``k`` adapts to the items' size); a
  tag's content is walked and then finished by the same function cbor2
  would call; a long text or byte string is a single copy, decoded whole.
* Between slices the walk yields to the event loop once
  :data:`YIELD_AFTER` seconds of work have passed.

The result, and whether a payload is refused, are the same as
:func:`trio_distribute.codec.decode` (a differential test checks this with
the slice size forced down to a few bytes). One limit is added: an
immutable map key (a tuple or message key of a dict) may not be larger
than ``SLICE_BYTES`` in a sliced frame, because its content cannot be
walked without building it twice; no honest key comes near it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, Final

import cbor2

from . import codec
from ._backend import checkpoints
from .errors import DecodeError

__all__ = ["SLICED_ABOVE", "SLICE_BYTES", "YIELD_AFTER", "decode_sliced"]

SLICED_ABOVE: Final = 128 * 1024
"""Frames larger than this many bytes are decoded in slices. Below it, one
cbor2 call costs at most about 30 ms on a busy 2-core machine (the slowest
honest content, maps of short strings, decodes at about 4-5 MB/s there)."""

SLICE_BYTES: Final = 32 * 1024
"""Most input bytes one cbor2 call of a sliced decode may read."""

YIELD_AFTER: Final = 0.004
"""Seconds of decoding after which a sliced decode lets other tasks run."""

_OPTIONS: Final[dict[str, Any]] = {
    "semantic_decoders": codec._SEMANTIC,
    "allow_indefinite": False,
    "strict_hashable_types": True,
}

_FINISHERS: Final[dict[int, Callable[[Any], object]]] = {
    codec.PID_TAG: codec._finish_pid,
    codec.REF_TAG: codec._finish_ref,
    codec.MESSAGE_TAG: codec._finish_message,
}

_ARRAY: Final = 4
_MAP: Final = 5
_TAG: Final = 6


class _Truncated(Exception):
    """The window ended inside the item: it is bigger than the window."""


def _head(major: int, count: int) -> bytes:
    """The CBOR head of an array or map of ``count`` items."""
    first = major << 5
    if count < 24:
        return bytes((first | count,))
    for info, size in ((24, 1), (25, 2), (26, 4)):
        if count < 1 << (8 * size):
            return bytes((first | info,)) + count.to_bytes(size, "big")
    return bytes((first | 27,)) + count.to_bytes(8, "big")


def _is_truncation(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, cbor2.CBORDecodeEOF):
            return True
        if isinstance(cause, DecodeError):
            return False
        cause = cause.__cause__ or cause.__context__
    return False


async def decode_sliced(
    data: bytes, *, max_depth: int = codec.DEFAULT_MAX_DEPTH, slice_bytes: int = SLICE_BYTES
) -> object:
    """Decode one payload like :func:`trio_distribute.codec.decode`, letting
    other tasks run at least every :data:`YIELD_AFTER` seconds of work.

    ``slice_bytes`` (the window of one cbor2 call) is smaller in tests, to
    walk every path on small payloads.

    Raises:
        DecodeError: as :func:`trio_distribute.codec.decode`.
    """
    walk = _Walk(bytes(data), max_depth, slice_bytes)
    try:
        value, end = await walk.item(0, 0)
    except DecodeError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise DecodeError(codec._reason(exc, max_depth)) from exc
    if end != len(data):
        raise DecodeError("trailing bytes after the CBOR item")
    return value


class _Walk:
    """One sliced decode: the payload, the position bookkeeping, the clock."""

    def __init__(self, data: bytes, max_depth: int, window: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.window = window
        self.stream = io.BytesIO(data)  # shares ``data``'s memory
        self.checkpoint = checkpoints()[0]
        self.since = time.perf_counter()

    async def _pause(self) -> None:
        now = time.perf_counter()
        if now - self.since >= YIELD_AFTER:
            await self.checkpoint()
            self.since = time.perf_counter()

    def _loads(self, buf: bytes, depth_left: int) -> tuple[object, int]:
        """Decode the first item of ``buf``; return it and its length.

        Raises:
            _Truncated: ``buf`` ends inside the item.
        """
        if depth_left < 1:
            # Only a scalar may sit this deep; cbor2 counts containers only.
            if buf and buf[0] >> 5 in (_ARRAY, _MAP, _TAG):
                raise DecodeError(f"CBOR nested deeper than max_depth={self.max_depth}")
            depth_left = 1
        stream = io.BytesIO(buf)
        try:
            value = cbor2.CBORDecoder(stream, max_depth=depth_left, **_OPTIONS).decode()
        except MemoryError:
            raise
        except Exception as exc:
            if _is_truncation(exc):
                raise _Truncated from None
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(codec._reason(exc, self.max_depth)) from exc
        return value, stream.tell()

    def _window(self, pos: int, prefix: bytes = b"") -> tuple[bytes, bool]:
        """``prefix`` and the next window of the payload from ``pos``, and
        whether that window reaches the payload's end."""
        end = pos + self.window
        return prefix + self.data[pos:end], end >= len(self.data)

    def _parse_head(self, pos: int) -> tuple[int, int, int]:
        """Major type, argument and the position after the head at ``pos``."""
        data = self.data
        if pos >= len(data):
            raise DecodeError("truncated CBOR: premature end of stream")
        first = data[pos]
        major, info = first >> 5, first & 31
        if info < 24:
            return major, info, pos + 1
        if info > 27:
            if info == 31:
                raise DecodeError("indefinite-length CBOR items are not allowed")
            raise DecodeError(f"malformed CBOR: invalid additional information {info}")
        size = 1 << (info - 24)
        if pos + 1 + size > len(data):
            raise DecodeError("truncated CBOR: premature end of stream")
        return major, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size

    async def item(self, pos: int, depth: int) -> tuple[object, int]:
        """Decode the item at ``pos`` (inside ``depth`` containers)."""
        buf, whole = self._window(pos)
        try:
            value, used = self._loads(buf, self.max_depth - depth)
        except _Truncated:
            if whole:
                raise DecodeError("truncated CBOR: premature end of stream") from None
        else:
            await self._pause()
            return value, pos + used
        return await self._walk(pos, depth)

    async def _walk(self, pos: int, depth: int) -> tuple[object, int]:
        """Decode the item at ``pos``, known to be bigger than the window."""
        major, arg, start = self._parse_head(pos)
        if major in (_ARRAY, _MAP, _TAG) and depth >= self.max_depth:
            raise DecodeError(f"CBOR nested deeper than max_depth={self.max_depth}")
        if major == _ARRAY:
            items = await self._run(start, depth + 1, _ARRAY, arg)
            return items[0], items[1]
        if major == _MAP:
            return await self._map(start, depth + 1, arg)
        if major == _TAG:
            return await self._tagged(pos, start, depth, arg)
        # A long text or byte string: one copy, linear in its length.
        self.stream.seek(pos)
        try:
            value = cbor2.CBORDecoder(self.stream, **_OPTIONS).decode()
        except MemoryError:
            raise
        except Exception as exc:
            raise DecodeError(codec._reason(exc, self.max_depth)) from exc
        await self._pause()
        return value, self.stream.tell()

    async def _run(self, pos: int, depth: int, major: int, count: int) -> tuple[Any, int]:
        """Decode ``count`` children (array items, or map pairs) from ``pos``.

        Returns a list, or a dict for a map, and the position after them.
        """
        result: Any = [] if major == _ARRAY else {}
        left = count
        guess = 64
        while left:
            k = min(left, guess)
            buf, whole = self._window(pos, _head(major, k))
            try:
                chunk, used = self._loads(buf, self.max_depth - depth + 1)
            except _Truncated:
                if whole:
                    raise DecodeError("truncated CBOR: premature end of stream") from None
                if k > 1:
                    guess = max(1, k // 2)
                    continue
                # One child bigger than the window: walk it.
                if major == _ARRAY:
                    value, pos = await self._walk(pos, depth)
                    result.append(value)
                else:
                    key, pos = await self._key(pos, depth)
                    value, pos = await self.item(pos, depth)
                    result[key] = value
                left -= 1
                guess = 1
                continue
            pos += used - len(_head(major, k))
            if major == _ARRAY:
                result.extend(chunk)
            else:
                result.update(chunk)
            left -= k
            # Aim the next run at three quarters of a window.
            guess = max(1, k * (self.window * 3 // 4) // max(used, 1))
            await self._pause()
        return result, pos

    async def _map(self, pos: int, depth: int, count: int) -> tuple[object, int]:
        return await self._run(pos, depth, _MAP, count)

    async def _key(self, pos: int, depth: int) -> tuple[object, int]:
        """A plain map's key: a text or byte string, as cbor2 requires."""
        major, _, _ = self._parse_head(pos)
        if major not in (2, 3):
            raise DecodeError(
                f"map key must be a text string or byte string: a CBOR map may only "
                f"have text or byte-string keys (a dict with other keys travels as "
                f"tag {codec.KEYED_MAP_TAG})"
            )
        return await self.item(pos, depth)

    async def _tagged(self, pos: int, start: int, depth: int, tag: int) -> tuple[object, int]:
        if tag == codec.KEYED_MAP_TAG:
            content, end = await self._content(start, depth + 1)
            return await _finish_keyed_map(content, self._pause), end
        finish = _FINISHERS.get(tag)
        if finish is None:
            if tag == codec.FROZEN_TAG:
                raise DecodeError(
                    f"a dict key over {self.window} bytes is not accepted in a frame "
                    f"over {SLICED_ABOVE} bytes"
                )
            # Every other tag is refused at its head: let cbor2 say so.
            buf, _ = self._window(pos)
            self._loads(buf, self.max_depth - depth)
            raise DecodeError(f"unknown CBOR tag {tag}")  # not reached
        content, end = await self._content(start, depth + 1)
        return finish(content), end

    async def _content(self, pos: int, depth: int) -> tuple[object, int]:
        return await self.item(pos, depth)


async def _finish_keyed_map(value: Any, pause: Callable[[], Any]) -> dict[Any, Any]:
    """:func:`trio_distribute.codec._finish_keyed_map`, hashing the keys in
    slices (the content of a big keyed map holds up to millions of keys)."""
    if type(value) is not list or len(value) % 2:
        return codec._finish_keyed_map(value)  # raises, with codec's words
    keys = value[0::2]
    hashes: set[int] = set()
    step = 16384
    for start in range(0, len(keys), step):
        part = keys[start : start + step]
        try:
            hashes.update(map(hash, part))
        except TypeError:
            return codec._finish_keyed_map(value)  # raises: an unhashable key
        await pause()
    if len(keys) - len(hashes) > codec.MAX_EQUAL_HASH_KEYS:
        raise codec._CollidingKeys(codec._collision_refusal(len(keys), len(hashes)))
    result: dict[Any, Any] = {}
    values = value[1::2]
    for start in range(0, len(keys), step):
        result.update(zip(keys[start : start + step], values[start : start + step], strict=True))
        await pause()
    return result
