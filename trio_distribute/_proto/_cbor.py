"""The one restricted CBOR decoder of the protocol kernel.

Every byte string a peer sends is parsed here: the payloads of established
connections (:mod:`trio_distribute.codec`), the handshake's messages, raft
messages and SWIM datagrams. Whatever the format, the same rules apply:

* **exactly one item**: bytes after it are refused;
* **no indefinite lengths** (a peer could otherwise stream a string or an
  array without saying how long it will be);
* **no duplicate map keys** (two values for one key make two readers of the
  same bytes disagree on what was said);
* **only text and byte-string keys** in a CBOR map: the interpreter hashes
  those with a per-process secret, so no peer can make insertions collide
  (``strict_hashable_types``);
* **depth** limited to the caller's ``max_depth`` (arrays, maps and tags
  each count one level);
* **tags**: only those in the caller's :class:`TagTable` decode; every other
  tag, including the ones cbor2 would decode natively (value sharing 28/29
  and string references 25/256 build cyclic or amplified structures), is
  refused when its head is read, before its content is.

A refusal is a :class:`~trio_distribute.errors.DecodeError` with the reason;
callers turn it into their own error type.

Two entry points: :func:`decode_one` (a decoder object over a stream; for
the handshake and raft, whose messages are few and small) and
:func:`payload_decoder`, which builds the fast function the message path
calls once per frame (one ``cbor2.loads`` call per payload; see there).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any, Final, Protocol

import cbor2

from trio_distribute.errors import DecodeError

__all__ = [
    "BUILTIN_TAGS",
    "FinalDecodeError",
    "PayloadDecode",
    "TagTable",
    "decode_one",
    "payload_decoder",
    "raise_interrupt",
]

# Descriptions of the tags cbor2 6.3 decodes natively (found by probing every
# tag number; see tests/test_codec.py::test_decode_refuses_builtin_tags).
# Each is overridden with a refuser, so cbor2's own decoder never runs.
BUILTIN_TAGS: Final[Mapping[int, str]] = {
    0: "date/time string",
    1: "epoch date/time",
    2: "positive bignum (integer beyond 64 bits)",
    3: "negative bignum (integer beyond 64 bits)",
    4: "decimal fraction",
    5: "bigfloat",
    25: "string reference",
    28: "shareable value",
    29: "shared reference",
    30: "rational number",
    35: "regular expression",
    36: "MIME message",
    37: "UUID",
    52: "IPv4 address",
    54: "IPv6 address",
    100: "epoch date",
    256: "string reference namespace",
    258: "set",
    260: "network address",
    261: "network prefix",
    1004: "date string",
    43000: "complex number",
    55799: "self-described CBOR",
}

# Reasons quote cbor2's messages, which may quote peer data (a duplicate
# key, say): keep them bounded.
_MAX_REASON: Final = 300


class FinalDecodeError(DecodeError):
    """A refusal raised by a tag decoder whose reason is already exact.

    The fast path re-decodes a failed payload alone to find the real reason
    (see :func:`payload_decoder`); for these it does not, so a big hostile
    frame refused by a tag decoder is not parsed twice."""


def _tag_refuser(tag: int, context: str) -> Any:
    """A decoder for ``tag`` that refuses it before its content is read.

    Decorated with ``cbor2.shareable_decoder``, cbor2 calls it when it sees
    the tag head, not after decoding (and allocating) the content.
    """
    what = BUILTIN_TAGS.get(tag)
    reason = (
        f"unknown CBOR tag {tag}" if what is None else f"CBOR tag {tag} ({what}) is not allowed"
    )
    if context:
        reason = f"{reason} in {context}"

    def refuse(immutable: bool) -> Any:
        raise DecodeError(reason)

    return cbor2.shareable_decoder(refuse)


class TagTable(dict[int, Any]):
    """``semantic_decoders`` for cbor2: the given tags decode, every other
    tag is refused at its head.

    cbor2 consults this mapping for every tag before its own built-in
    decoders; the built-in tags are listed with refusers and ``__missing__``
    catches every other number (cheaper than a ``tag_hook``, which costs one
    more keyword argument per call and only runs after the content was
    decoded). ``context`` ends each refusal's reason ("in a raft message").
    """

    def __init__(self, decoders: Mapping[int, Any] | None = None, *, context: str = "") -> None:
        super().__init__({tag: _tag_refuser(tag, context) for tag in BUILTIN_TAGS})
        if decoders:
            self.update(decoders)
        self.context: Final = context

    def __missing__(self, tag: int) -> Any:
        return _tag_refuser(tag, self.context)


def raise_interrupt(exc: BaseException) -> None:
    """Raise again a ``KeyboardInterrupt`` (or any other exception that is
    not an ``Exception``) found in ``exc``'s chain.

    cbor2 wraps whatever a tag decoder raises in a ``CBORDecodeError``, and
    a signal can raise ``KeyboardInterrupt`` in any Python code, a tag
    decoder included: without this, Ctrl-C would become "a bad frame".
    """
    cause: BaseException | None = exc
    while cause is not None:
        if not isinstance(cause, Exception):
            raise cause
        cause = cause.__cause__


def _reason(exc: BaseException, max_depth: int, map_key_hint: str) -> str:
    """The most specific message in an exception chain: ours if a tag
    decoder raised one, else cbor2's, reworded where it helps."""
    cause: BaseException | None = exc
    while cause is not None:  # cbor2 chains our errors as __cause__
        if isinstance(cause, DecodeError):
            return str(cause)
        cause = cause.__cause__
    text = str(exc) or type(exc).__name__
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    if "nesting depth" in text:
        return f"CBOR nested deeper than max_depth={max_depth}"
    if "map key must be" in text:
        return f"{text}{map_key_hint}"
    if "Duplicate map key" in text:
        return f"duplicate key in a CBOR map ({text})"
    if "indefinite length" in text:
        return f"indefinite-length CBOR items are not allowed ({text})"
    if isinstance(exc, cbor2.CBORDecodeEOF):
        return f"truncated CBOR: {text}"
    if isinstance(exc, cbor2.CBORDecodeError):
        return f"malformed CBOR: {text}"
    return f"malformed CBOR: {type(exc).__name__}: {text}"


def decode_one(
    data: bytes | bytearray | memoryview,
    *,
    tags: TagTable,
    max_depth: int,
    map_key_hint: str = "",
) -> object:
    """Decode exactly one CBOR item under every rule of this module.

    Raises:
        DecodeError: for any input that is not exactly one such item (and,
            for untrusted bytes, never any other exception but
            ``MemoryError``).
    """
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            semantic_decoders=tags,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        ).decode()
    except MemoryError:
        raise
    # The bytes are untrusted and cbor2 is a C extension: whatever it raises
    # on them (CBORDecodeError normally, wrapping our refusals) is the
    # peer's fault and becomes a DecodeError.
    except Exception as exc:
        raise_interrupt(exc)
        raise DecodeError(_reason(exc, max_depth, map_key_hint)) from exc
    if stream.tell() != len(data):
        raise DecodeError("trailing bytes after the CBOR item")
    return value


class PayloadDecode(Protocol):
    """The signature of a function made by :func:`payload_decoder`."""

    def __call__(self, data: bytes | bytearray | memoryview, *, max_depth: int = ...) -> object:
        """Decode one payload; see :func:`payload_decoder`."""


# The payload is decoded as the first item of [payload, sentinel]: bytes
# after the payload become the second item. The sentinel is a byte string
# drawn at random when the module loads, so no peer can append it on
# purpose (and nothing else decodes to it).
_OPEN: Final = b"\x82"
_SECRET: Final = os.urandom(15)
_SENTINEL: Final = b"\x4f" + _SECRET  # major type 2 (bytes), length 15
_WRAPPING: Final = len(_OPEN) + len(_SENTINEL)
_FAST_DEPTH_BYTES: Final = 256  # below cbor2's own default max_depth (400)
_loads: Final = cbor2.loads


def payload_decoder(
    tags: TagTable, *, default_max_depth: int, map_key_hint: str = ""
) -> PayloadDecode:
    """The message path's decoder: ``decode(data, *, max_depth=default)``.

    One ``cbor2.loads`` call per payload, arranged around cbor2 6.3's costs:

    * every keyword argument costs ``loads`` about 30 ns, so only the rules
      (and ``max_depth`` when it can matter) are passed;
    * ``cbor2.loads`` silently ignores bytes after the first item, so the
      payload is decoded as the first item of ``[payload, sentinel]``, where
      the sentinel is a 15-byte string drawn at random per process: garbage
      after the payload becomes the second item, and no peer can know the
      sentinel to fake it;
    * a payload of n bytes cannot nest deeper than n levels, so
      ``max_depth`` is only passed to cbor2 for payloads longer than the
      limit;
    * a failure is explained by decoding the payload alone with
      :func:`decode_one` (the wrapped decode's errors can mislead: a
      truncated payload swallows part of the sentinel; depth is off by
      one), unless a tag decoder raised a :class:`FinalDecodeError`.

    The returned function raises :class:`~trio_distribute.errors.DecodeError`
    for refused input and ``ValueError`` if ``max_depth`` is not a positive
    int.
    """

    def diagnose(data: bytes, max_depth: int) -> DecodeError:
        try:
            decode_one(data, tags=tags, max_depth=max_depth, map_key_hint=map_key_hint)
        except DecodeError as exc:
            return exc
        return DecodeError("trailing bytes after the CBOR item")

    def decode(
        data: bytes | bytearray | memoryview, *, max_depth: int = default_max_depth
    ) -> object:
        buf = b"".join((_OPEN, data, _SENTINEL))
        # n bytes cannot nest deeper than n levels: no limit to pass.
        shallow = len(buf) - _WRAPPING <= max_depth <= _FAST_DEPTH_BYTES
        if not shallow and (type(max_depth) is not int or max_depth < 1):
            raise ValueError(f"max_depth must be a positive int, got {max_depth!r}")
        try:
            if shallow:
                value, end = _loads(
                    buf,
                    semantic_decoders=tags,
                    allow_indefinite=False,
                    allow_duplicate_keys=False,
                    strict_hashable_types=True,
                )
            else:
                value, end = _loads(
                    buf,
                    semantic_decoders=tags,
                    allow_indefinite=False,
                    allow_duplicate_keys=False,
                    strict_hashable_types=True,
                    max_depth=max_depth + 1,
                )
        except MemoryError:
            raise
        except Exception as exc:
            raise_interrupt(exc)
            settled = _settled(exc)
            if settled is not None:
                raise DecodeError(str(settled)) from exc
            raise diagnose(bytes(data), max_depth) from exc
        if type(end) is not bytes or end != _SECRET:
            raise diagnose(bytes(data), max_depth)
        return value

    return decode


def _settled(exc: BaseException) -> FinalDecodeError | None:
    """The :class:`FinalDecodeError` in ``exc``'s chain, if any (which the
    random sentinel after the payload cannot realistically cause)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FinalDecodeError):
            return cause
        cause = cause.__cause__
    return None
