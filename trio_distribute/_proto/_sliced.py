"""Decoding a big payload in slices, as a generator that pauses between them.

cbor2 decodes a payload in one call that never lets the event loop run: a
16 MiB payload of small items takes a second or more. :class:`SlicedDecoder`
gives the same result as the one-call decoder of :mod:`._cbor` (same tags,
same rules) but never hands cbor2 more than ``slice_bytes`` of input at a
time, and yields between slices; the caller (a thin async driver) lets other
tasks run whenever enough time has passed.

* An item is first tried whole from a window of ``slice_bytes`` bytes; most
  items fit, and cbor2 decodes them at full speed.
* An item that does not fit is walked: an array or map is decoded in runs
  of children, each run wrapped in a made-up array or map head of ``k``
  children and decoded from a window (``k`` adapts to the items' size); a
  tag's content is walked and then finished by the function the tag table
  would call; a long text or byte string is one copy, decoded whole.

One limit is added: a tag whose content is decoded immutably (a dict key
that is a tuple or a message) may not be bigger than the window, since it
cannot be walked without building it twice; no honest key comes near it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final

import cbor2

from trio_distribute.errors import DecodeError

from ._cbor import TagTable, _reason, raise_interrupt

__all__ = ["SLICED_ABOVE", "SLICE_BYTES", "Finisher", "SlicedDecoder", "Steps"]

SLICED_ABOVE: Final = 128 * 1024
"""Payloads larger than this many bytes are decoded in slices. Below it, one
cbor2 call costs at most about 30 ms on a busy 2-core machine (the slowest
honest content, maps of short strings, decodes at about 4-5 MB/s there)."""

SLICE_BYTES: Final = 32 * 1024
"""Most input bytes one cbor2 call of a sliced decode may read."""

Steps = Generator[None, None, Any]
"""A decode in progress: ``next()`` runs one slice; the value comes with
``StopIteration``."""

Finisher = Callable[[Any], Steps]
"""Turns a tag's decoded content into its value, in slices if it is big."""

_BYTES: Final = 2
_TEXT: Final = 3
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
        # cbor2 chains an error raised inside it as the cause; the context
        # would be whatever was being handled, not what went wrong here.
        cause = cause.__cause__
    return False


class SlicedDecoder:
    """The sliced twin of a payload decoder built by :func:`._cbor.payload_decoder`.

    ``finishers`` maps each tag to walk into (when its content is bigger
    than a window) to the function that turns its content into its value;
    ``immutable_tags`` are refused when bigger than a window.
    """

    def __init__(
        self,
        tags: TagTable,
        finishers: Mapping[int, Finisher],
        *,
        immutable_tags: frozenset[int] = frozenset(),
        default_max_depth: int,
        map_key_hint: str = "",
    ) -> None:
        self.tags = tags
        self.finishers = dict(finishers)
        self.immutable_tags = immutable_tags
        self.default_max_depth = default_max_depth
        self.map_key_hint = map_key_hint

    def steps(
        self,
        data: bytes | bytearray,
        *,
        max_depth: int | None = None,
        slice_bytes: int = SLICE_BYTES,
    ) -> Steps:
        """Decode ``data`` (exactly one item), pausing after every slice.

        A ``bytearray`` is read in place, not copied: the caller must not
        change it until the decode is over.

        Raises (from ``next``):
            DecodeError: as the one-call decoder.
        """
        depth = self.default_max_depth if max_depth is None else max_depth
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)
        walk = _Walk(self, data, depth, slice_bytes)
        try:
            value, end = yield from walk.item(0, 0)
        except DecodeError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise_interrupt(exc)
            raise DecodeError(_reason(exc, depth, self.map_key_hint)) from exc
        if end != len(data):
            raise DecodeError("trailing bytes after the CBOR item")
        return value


class _Walk:
    """One sliced decode: the payload and the position bookkeeping."""

    def __init__(
        self, decoder: SlicedDecoder, data: bytes | bytearray, max_depth: int, window: int
    ) -> None:
        self.decoder = decoder
        self.data = data
        self.max_depth = max_depth
        self.window = window
        self.options: dict[str, Any] = {
            "semantic_decoders": decoder.tags,
            "allow_indefinite": False,
            "allow_duplicate_keys": False,
            "strict_hashable_types": True,
        }

    def _refusal(self, exc: Exception) -> DecodeError:
        return DecodeError(_reason(exc, self.max_depth, self.decoder.map_key_hint))

    def _loads(self, buf: bytes, depth_left: int) -> tuple[object, int]:
        """Decode the first item of ``buf``; return it and its length.

        Raises:
            _Truncated: ``buf`` ends inside the item.
        """
        # depth_left is never negative (the walk refuses a container at
        # the limit before reading its children). At 0 cbor2 takes a
        # scalar or an empty array or map and refuses anything it would
        # descend into, as the one-call decoder does one level past
        # max_depth: the same limit, whatever the window.
        stream = io.BytesIO(buf)
        try:
            value = cbor2.CBORDecoder(stream, max_depth=depth_left, **self.options).decode()
        except MemoryError:
            raise
        except Exception as exc:
            raise_interrupt(exc)
            if _is_truncation(exc):
                raise _Truncated from None
            if isinstance(exc, DecodeError):
                raise
            raise self._refusal(exc) from exc
        return value, stream.tell()

    def _window(self, pos: int, prefix: bytes = b"") -> tuple[bytes, bool]:
        """``prefix`` and the next window of the payload from ``pos``, and
        whether that window reaches the payload's end."""
        end = pos + self.window
        return prefix + bytes(self.data[pos:end]), end >= len(self.data)

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

    def item(self, pos: int, depth: int) -> Generator[None, None, tuple[Any, int]]:
        """Decode the item at ``pos`` (inside ``depth`` containers)."""
        buf, whole = self._window(pos)
        try:
            value, used = self._loads(buf, self.max_depth - depth)
        except _Truncated:
            if whole:
                raise DecodeError("truncated CBOR: premature end of stream") from None
        else:
            yield
            return value, pos + used
        return (yield from self._walk(pos, depth))

    def _walk(self, pos: int, depth: int) -> Generator[None, None, tuple[Any, int]]:
        """Decode the item at ``pos``, known to be bigger than the window."""
        major, arg, start = self._parse_head(pos)
        if depth >= self.max_depth and (major == _TAG or (major in (_ARRAY, _MAP) and arg)):
            # cbor2 counts a level when it descends into children, so an
            # empty array or map may sit one level past max_depth, as in
            # the one-call decoder (a walked one has a padded head).
            raise DecodeError(f"CBOR nested deeper than max_depth={self.max_depth}")
        if major in (_ARRAY, _MAP):
            return (yield from self._run(start, depth + 1, major, arg))
        if major == _TAG:
            return (yield from self._tagged(pos, start, depth, arg))
        # A long text or byte string (nothing else outgrows a window): cut
        # straight out of the payload, one copy, linear in its length.
        if major not in (_BYTES, _TEXT):
            # A scalar (at most 9 bytes) over a tiny test window.
            try:
                scalar, used = self._loads(bytes(self.data[pos : pos + 9]), 1)
            except _Truncated:
                raise DecodeError("truncated CBOR: premature end of stream") from None
            yield
            return scalar, pos + used
        end = start + arg
        if end > len(self.data):
            raise DecodeError("truncated CBOR: premature end of stream")
        with memoryview(self.data) as view:
            if major == _BYTES:
                value: Any = bytes(view[start:end])
            else:
                try:
                    value = str(view[start:end], "utf-8")
                except UnicodeDecodeError as exc:
                    reason = f"malformed CBOR: invalid UTF-8 in a text string: {exc}"
                    raise DecodeError(reason) from None
        yield
        return value, end

    def _run(
        self, pos: int, depth: int, major: int, count: int
    ) -> Generator[None, None, tuple[Any, int]]:
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
                chunk = None
            if chunk is None:
                # One child bigger than the window: walk it, outside the
                # handler above, so that an error inside the child is not
                # chained to this truncation and taken for one.
                if major == _ARRAY:
                    value, pos = yield from self._walk(pos, depth)
                    result.append(value)
                else:
                    key, pos = yield from self._key(pos, depth)
                    if key in result:
                        raise DecodeError(f"duplicate key in a CBOR map ({key!r:.100})")
                    result[key], pos = yield from self.item(pos, depth)
                left -= 1
                guess = 1
                continue
            pos += used - len(_head(major, k))
            if type(chunk) is list:
                result.extend(chunk)
            elif type(chunk) is dict:
                if not result.keys().isdisjoint(chunk):
                    repeated = next(key for key in chunk if key in result)
                    raise DecodeError(f"duplicate key in a CBOR map ({repeated!r:.100})")
                result.update(chunk)
            left -= k
            # Aim the next run at three quarters of a window.
            guess = max(1, k * (self.window * 3 // 4) // max(used, 1))
            yield
        return result, pos

    def _key(self, pos: int, depth: int) -> Generator[None, None, tuple[Any, int]]:
        """A plain map's key: a text or byte string, as cbor2 requires."""
        major, _, _ = self._parse_head(pos)
        if major not in (2, 3):
            raise DecodeError(
                f"map key must be a text string or byte string{self.decoder.map_key_hint}"
            )
        return (yield from self.item(pos, depth))

    def _tagged(
        self, pos: int, start: int, depth: int, tag: int
    ) -> Generator[None, None, tuple[Any, int]]:
        finish = self.decoder.finishers.get(tag)
        if finish is None:
            if tag in self.decoder.immutable_tags:
                raise DecodeError(
                    f"a dict key over {self.window} bytes is not accepted in a frame "
                    f"over {SLICED_ABOVE} bytes"
                )
            # Every other tag is refused at its head: let cbor2 say so. The
            # head alone (a null for content), not a window: a window that
            # held the head would have been refused by item() already.
            self._loads(bytes(self.data[pos:start]) + b"\xf6", self.max_depth - depth)
            raise DecodeError(f"unknown CBOR tag {tag}")  # not reached
        content, end = yield from self.item(start, depth + 1)
        value = yield from finish(content)
        return value, end
