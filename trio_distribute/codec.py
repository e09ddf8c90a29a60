"""The restricted CBOR codec: what may travel between nodes, and how.

Every payload that crosses a connection goes through :func:`encode` and
:func:`decode`. Only these values travel:

* ``None``, ``bool``, ``int`` in CBOR's native range ``[-2**64, 2**64 - 1]``,
  ``float``, ``str``, ``bytes``;
* ``list`` and ``dict`` (a ``tuple`` is encoded as a CBOR array and
  **arrives as a list**, exactly like JSON; inside a dict key it arrives as a
  tuple, see below);
* :class:`~trio_distribute.Pid` and :class:`~trio_distribute.Ref`;
* instances of attrs classes declared with :func:`message`.

Anything else is refused: :func:`encode` raises
:class:`~trio_distribute.errors.EncodeError` naming the type, and
:func:`decode` raises :class:`~trio_distribute.errors.DecodeError` with the
reason. Peers are authenticated, but a bug (or another implementation) must
never put a ``datetime``, a ``re.Pattern`` or a ``cbor2.CBORTag`` into a
mailbox, and a malformed payload must close one connection, not kill a node.

Wire format
-----------
Plain CBOR (RFC 8949) plus three tags of our own, from the
first-come-first-served range (not IANA-registered as far as we can tell;
every other tag is refused on both sides):

=================  ======  =====================================================
:data:`PID_TAG`    62625   ``[node: str, id: uint, creation: uint]``
:data:`REF_TAG`    62626   ``[node: str, id: uint, creation: uint]``
:data:`MESSAGE_TAG` 62627  ``[tag: str, version: uint, {field_name: value}]``
=================  ======  =====================================================

A message carries its fields by attrs name (not position), so a later version
of a class can add optional fields: bump ``version`` and list the old one in
``accepts``.

Decisions
---------
* **Integers** are limited to CBOR's native range. cbor2 would encode a
  larger int as a bignum tag (2/3); both sides refuse it, so an ``int`` that
  leaves a node is exactly the ``int`` that arrives.
* **Tuples** become lists (CBOR has one array type). Subclasses of the
  allowed builtins travel as their base type (an ``IntEnum`` member arrives
  as an ``int``, a ``namedtuple`` as a ``list``, an ``OrderedDict`` as a
  ``dict``), because cbor2's C encoder handles them before any hook can see
  them; likewise other objects that cbor2 treats as a sequence or mapping
  (``deque``, ``range``, ``bytearray``, ``UserDict``...) arrive as ``list``,
  ``dict`` or ``bytes``. Refusing those would need a Python-level walk of
  every message, which would cost more than the encoding itself.
* **Dict keys** may be ``None``, ``bool``, ``int``, ``float``, ``str``,
  ``bytes``, ``Pid``, ``Ref``, tuples of those, and hashable ``@message``
  instances - i.e. whatever Python lets you hash and the codec can encode.
  CBOR decoders must produce hashable keys, so an array in key position is
  decoded as a ``tuple`` (and a message in key position is rebuilt from
  immutable field values); every key ``encode`` can produce therefore
  round-trips exactly. A CBOR map used as a map key (which ``encode`` never
  produces) decodes as ``cbor2.frozendict``; detecting that would need a
  walk of every decoded message, so it is documented rather than refused.
  Duplicate keys in a received map keep the last value.
* **Depth**: :func:`decode` refuses input nested deeper than ``max_depth``
  (default 64; arrays, maps and tags each count one level, so a message
  object costs three levels: the tag, its array and its field map).
  :func:`encode` does not check depth (that too would need a walk); the
  receiver refuses what is too deep. Note that cbor2 6.3's encoder recurses
  on the C stack and crashes the interpreter on values nested thousands of
  levels deep (and on ``collections.UserString``, which it treats as an
  infinitely nested sequence); don't send such values.

How it stays fast
-----------------
The hot path (DESIGN 3a) is one ``cbor2.dumps`` / ``cbor2.loads`` per frame.
Passing ``encoders=`` to cbor2 6.3 doubles the cost of every call, and every
keyword argument costs about 30 ns, so the restrictions are enforced by
looking at the bytes instead of at the objects:

* Encode: a value cbor2 encodes natively but we refuse (set, datetime,
  Decimal, bignum, CBORTag, simple value...) always produces a tag or simple
  value head byte (``0xc0-0xdb``, ``0xe0-0xf3``, ``0xf7``, ``0xf8``). One
  ``bytes.translate`` tells whether the output has any such byte besides the
  ones we wrote ourselves (our own tag heads); only then is the value walked
  in Python to find the culprit or prove the bytes were innocent payload.
  Objects cbor2 does not know reach the ``default`` hook, which encodes
  Pid/Ref/messages and refuses everything else.
* Decode: every tag goes through our ``semantic_decoders`` table (cbor2's
  built-in ones are overridden to refuse before their content is read, and a
  ``__missing__`` hook refuses unknown tags). Trailing bytes are detected by
  decoding ``[payload, sentinel]``. Simple values, ``undefined`` and
  indefinite-length items need a head byte (``0xe0-0xf3``, ``0xf7``,
  ``0xf8``, and the ``0xff`` break), so only payloads containing such a byte
  get the exact (slower) check. Payloads no longer than ``max_depth`` bytes
  cannot be nested deeper than ``max_depth``, so the depth argument is only
  passed for larger ones.
* Pid and Ref decoding is cached in bounded dicts keyed by the raw
  ``(node, id, creation)`` triple, so a pid seen before is not revalidated
  (its node-name regex is the expensive part); encoded pid bytes are cached
  the same way.
"""

from __future__ import annotations

import datetime
import decimal
import email.mime.text
import fractions
import io
import ipaddress
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import attrs
import cbor2

from ._ids import Pid, Ref
from .errors import DecodeError, EncodeError, MessageTooLargeError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_INT",
    "MESSAGE_TAG",
    "MIN_INT",
    "PID_TAG",
    "REF_TAG",
    "MessageType",
    "decode",
    "encode",
    "encoded_size_ok",
    "message",
    "registered_messages",
]

PID_TAG: Final = 62625
"""CBOR tag number of a :class:`~trio_distribute.Pid`."""
REF_TAG: Final = 62626
"""CBOR tag number of a :class:`~trio_distribute.Ref`."""
MESSAGE_TAG: Final = 62627
"""CBOR tag number of a :func:`message` instance."""

MAX_INT: Final = 2**64 - 1
"""Largest int that travels (CBOR's native unsigned range)."""
MIN_INT: Final = -(2**64)
"""Smallest int that travels (CBOR's native negative range)."""

DEFAULT_MAX_DEPTH: Final = 64
"""Default nesting limit of :func:`decode`."""

_CACHE_SIZE: Final = 4096
"""Entries kept per pid/ref cache before it is cleared (bounded memory)."""

_T = TypeVar("_T")

# The three bytes every one of our tags starts with: 0xd9 (tag, 16-bit
# number) and the number itself. The number bytes (0xf4, 0xa1-0xa3) are
# deliberately not "suspicious" (see _SUSPICIOUS_ON_ENCODE), so each of our
# tags contributes exactly one suspicious byte, the 0xd9.
_PID_HEAD: Final = b"\xd9" + PID_TAG.to_bytes(2, "big")
_REF_HEAD: Final = b"\xd9" + REF_TAG.to_bytes(2, "big")
_MESSAGE_HEAD: Final = b"\xd9" + MESSAGE_TAG.to_bytes(2, "big")


def _flag_table(flagged: Iterable[int]) -> bytes:
    """A ``bytes.translate`` table mapping flagged bytes to 0x80, others to 0."""
    marks = set(flagged)
    return bytes(0x80 if b in marks else 0 for b in range(256))


# Head bytes of every item cbor2 may emit for a value we refuse: tags
# (0xc0-0xdb: bignums, datetimes, sets, CBORTag...), simple values
# (0xe0-0xf3, 0xf8) and undefined (0xf7).
_SUSPICIOUS_ON_ENCODE: Final = (*range(0xC0, 0xDC), *range(0xE0, 0xF4), 0xF7, 0xF8)
_ENCODE_FLAGS: Final = _flag_table(_SUSPICIOUS_ON_ENCODE)

# Head bytes of the decoded items no semantic decoder can intercept: simple
# values (0xe0-0xf3, 0xf8), undefined (0xf7) and the break (0xff) that ends
# every indefinite-length item.
_DECODE_FLAGS: Final = _flag_table((*range(0xE0, 0xF4), 0xF7, 0xF8, 0xFF))

assert not any(_ENCODE_FLAGS[b] for b in (_PID_HEAD + _REF_HEAD + _MESSAGE_HEAD)[1:3])


# ---------------------------------------------------------------------------
# Message registry
# ---------------------------------------------------------------------------


@attrs.frozen
class MessageType:
    """What :func:`message` registered for one tag (see
    :func:`registered_messages`)."""

    tag: str
    """The tag string that identifies the class on the wire."""
    cls: type[Any]
    """The registered attrs class."""
    version: int
    """The version this node sends."""
    accepts: frozenset[int]
    """The versions this node decodes (always includes ``version``)."""
    fields: tuple[str, ...]
    """The attrs field names that travel (fields with ``init=False`` don't)."""


@attrs.frozen
class _Registration:
    """Internal registry entry: the public view plus what decoding needs."""

    info: MessageType
    # attrs field name -> __init__ keyword (differ for private fields
    # "_x" -> "x"); None when every name is its own keyword, so the decoded
    # field map can be passed to the constructor as it is.
    aliases: dict[str, str] | None


_BY_TAG: dict[str, _Registration] = {}
_BY_CLASS: dict[type[Any], _Registration] = {}
_REGISTRY_LOCK = threading.Lock()


def message(
    tag: str, *, version: int = 1, accepts: Iterable[int] | None = None
) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: let instances of an attrs class travel as messages.

    Put it above the attrs decorator::

        @td.message("chat.line", version=2, accepts={1, 2})
        @attrs.frozen
        class ChatLine:
            text: str
            sender: td.Pid
            color: str = "black"  # added in version 2

    On the wire an instance is ``tag(62627, [tag, version, {field: value}])``.
    The receiver looks the class up by ``tag`` (an unknown tag is a
    :class:`DecodeError`, never a silent dict), checks that ``version`` is in
    ``accepts`` and builds the instance with the class's ``__init__``, so
    converters and validators run on received data too.

    Args:
        tag: the name of the message on the wire; unique per process.
        version: the version this node sends.
        accepts: the versions this node decodes; defaults to ``{version}``
            and must include ``version``.

    Raises:
        TypeError: the class is not an attrs class (is the attrs decorator
            below this one?), or an argument has the wrong type.
        ValueError: the tag is empty or already registered for another
            class, the class is already registered under another tag, or
            ``accepts`` does not include ``version``.
    """
    if not isinstance(tag, str):
        raise TypeError(f"message tag must be a str, got {type(tag).__name__}")
    if not tag:
        raise ValueError("message tag must not be empty")
    if not _is_uint(version):
        raise TypeError(f"message version must be a non-negative int, got {version!r}")
    if accepts is None:
        accepted = frozenset({version})
    else:
        accepted = frozenset(accepts)
        for v in accepted:
            if not _is_uint(v):
                raise TypeError(f"accepted versions must be non-negative ints, got {v!r}")
        if version not in accepted:
            raise ValueError(
                f"message {tag!r}: accepts={sorted(accepted)} must include version={version}"
            )

    def register(cls: type[_T]) -> type[_T]:
        if not isinstance(cls, type) or not attrs.has(cls):
            raise TypeError(
                f"@message({tag!r}) needs an attrs class, got {cls!r}; "
                "put @message above @attrs.define / @attrs.frozen"
            )
        init_fields = [f for f in attrs.fields(cls) if f.init]
        names = tuple(f.name for f in init_fields)
        aliases = {f.name: f.alias for f in init_fields}
        info = MessageType(tag=tag, cls=cls, version=version, accepts=accepted, fields=names)
        entry = _Registration(
            info=info,
            aliases=None if all(k == v for k, v in aliases.items()) else aliases,
        )
        with _REGISTRY_LOCK:
            existing = _BY_TAG.get(tag)
            if existing is not None and existing.info.cls is not cls:
                raise ValueError(
                    f"message tag {tag!r} is already registered for "
                    f"{existing.info.cls.__module__}.{existing.info.cls.__qualname__}"
                )
            previous = _BY_CLASS.get(cls)
            if previous is not None and previous.info.tag != tag:
                raise ValueError(
                    f"{cls.__qualname__} is already registered as message {previous.info.tag!r}"
                )
            _BY_TAG[tag] = entry
            _BY_CLASS[cls] = entry
        return cls

    return register


def registered_messages() -> dict[str, MessageType]:
    """Return a snapshot of the registered message types, keyed by tag."""
    with _REGISTRY_LOCK:
        return {tag: entry.info for tag, entry in _BY_TAG.items()}


def _is_uint(value: object) -> bool:
    return type(value) is int and value >= 0


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


class _EncodeState(threading.local):
    """Per-thread count of suspicious bytes our own hook wrote.

    The ``default`` hook writes pid/ref/message heads, whose bytes must not
    be mistaken for a refused value. It adds up how many flagged bytes it
    wrote; :func:`encode` compares that with the flagged bytes in the output.
    Thread-local because ``encode`` may run in several threads at once.
    """

    extra: int = 0


_state = _EncodeState()

# (node, id, creation) -> (encoded bytes, number of flagged bytes in them)
_PID_BYTES: dict[tuple[str, int, int], tuple[bytes, int]] = {}
_REF_BYTES: dict[tuple[str, int, int], tuple[bytes, int]] = {}


def _id_chunk(
    head: bytes, cache: dict[tuple[str, int, int], tuple[bytes, int]], value: Pid | Ref
) -> tuple[bytes, int]:
    key = (value.node, value.id, value.creation)
    chunk = cache.get(key)
    if chunk is None:
        data = head + cbor2.dumps([value.node, value.id, value.creation])
        chunk = (data, data.translate(_ENCODE_FLAGS).count(0x80))
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = chunk
    return chunk


def _encode_extension(encoder: cbor2.CBOREncoder, value: object) -> None:
    """cbor2's ``default`` hook: called for every object cbor2 does not
    encode natively. Encodes our three kinds and refuses everything else."""
    cls = type(value)
    if cls is Pid:
        data, flagged = _id_chunk(_PID_HEAD, _PID_BYTES, value)  # type: ignore[arg-type]
        _state.extra += flagged
        encoder.write(data)
        return
    if cls is Ref:
        data, flagged = _id_chunk(_REF_HEAD, _REF_BYTES, value)  # type: ignore[arg-type]
        _state.extra += flagged
        encoder.write(data)
        return
    entry = _BY_CLASS.get(cls)
    if entry is None:
        raise EncodeError(_refusal(value))
    info = entry.info
    _state.extra += 1  # the 0xd9 of our tag head
    encoder.encode_semantic(
        MESSAGE_TAG,
        [info.tag, info.version, {name: getattr(value, name) for name in info.fields}],
    )


def encode(obj: object) -> bytes:
    """Encode one value as CBOR bytes.

    Raises:
        EncodeError: the value contains something that cannot travel; the
            message names its type.
    """
    try:
        out: bytes = cbor2.dumps(obj, default=_encode_extension)
    except EncodeError:
        _state.extra = 0
        raise
    except RecursionError as exc:
        _state.extra = 0
        raise EncodeError("cannot encode value: it is nested too deeply or refers to itself") from exc
    except Exception as exc:  # cbor2 errors, naive datetimes, cycles, ...
        _state.extra = 0
        raise EncodeError(_find_refused(obj) or f"cannot encode value: {exc}") from exc
    flags = out.translate(_ENCODE_FLAGS)
    if flags.isascii():
        return out
    ours = _state.extra
    _state.extra = 0
    if flags.count(0x80) != ours:
        # Some flagged byte was not written by our hook: either a refused
        # value was encoded natively, or it is innocent payload data (a
        # float, a large int, non-ASCII text, binary...). Find out.
        problem = _find_refused(obj)
        if problem is not None:
            raise EncodeError(problem)
    return out


# Types cbor2 6.3 encodes natively as a tag or simple value (found by probing
# its encoder; see tests/test_codec.py::test_encode_refuses_native_types).
_REFUSED_NATIVE: Final[tuple[type[Any], ...]] = (
    set,
    frozenset,
    complex,
    datetime.date,  # includes datetime.datetime
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    re.Pattern,
    ipaddress.IPv4Address,  # includes IPv4Interface
    ipaddress.IPv6Address,  # includes IPv6Interface
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    email.mime.text.MIMEText,
    cbor2.CBORTag,
    cbor2.CBORSimpleValue,
    type(cbor2.undefined),
)

_PLAIN_LEAVES: Final = frozenset({str, bytes, float, bool, type(None), Pid, Ref})


def _find_refused(obj: object) -> str | None:
    """Walk ``obj`` the way cbor2 does and describe the first value that
    cannot travel, or return None if everything is fine.

    Only used off the fast path: when the encoded bytes look suspicious, or
    to name the culprit after cbor2 failed. Iterative (no recursion limit)
    and cycle-safe.
    """
    stack: list[object] = [obj]
    seen: set[int] = set()
    while stack:
        value = stack.pop()
        cls = type(value)
        if cls in _PLAIN_LEAVES:
            continue
        if cls is int:
            if not MIN_INT <= value <= MAX_INT:  # type: ignore[operator]
                return _int_refusal(value)  # type: ignore[arg-type]
            continue
        if id(value) in seen:
            continue
        if cls is list or cls is tuple:
            seen.add(id(value))
            stack.extend(value)  # type: ignore[call-overload]
            continue
        if cls is dict:
            seen.add(id(value))
            stack.extend(value.keys())  # type: ignore[attr-defined]
            stack.extend(value.values())  # type: ignore[attr-defined]
            continue
        entry = _BY_CLASS.get(cls)
        if entry is not None:
            seen.add(id(value))
            stack.extend(getattr(value, name) for name in entry.info.fields)
            continue
        if isinstance(value, _REFUSED_NATIVE):
            return _refusal(value)
        if isinstance(value, int):  # IntEnum and other subclasses
            if not MIN_INT <= value <= MAX_INT:
                return _int_refusal(value)
        elif isinstance(value, (str, bytes, bytearray, float)):
            continue
        elif isinstance(value, Mapping):
            seen.add(id(value))
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, Iterable):
            seen.add(id(value))
            stack.extend(value)
        else:
            return _refusal(value)
    return None


def _int_refusal(value: int) -> str:
    return (
        f"cannot encode int {value}: integers must be within [-2**64, 2**64 - 1] "
        "(send larger numbers as str or bytes)"
    )


def _refusal(value: object) -> str:
    cls = type(value)
    name = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    hint = ""
    if attrs.has(cls):
        hint = "; declare the class with @trio_distribute.message(...) to send it"
    return f"cannot encode value of type {name}{hint}"


def encoded_size_ok(data: bytes, limit: int) -> None:
    """Check an encoded payload against the configured size limit.

    Raises:
        MessageTooLargeError: ``len(data) > limit``.
    """
    if len(data) > limit:
        raise MessageTooLargeError(len(data), limit)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

_PID_CACHE: dict[tuple[str, int, int], Pid] = {}
_REF_CACHE: dict[tuple[str, int, int], Ref] = {}


def _decode_id(
    kind: type[_T], cache: dict[tuple[str, int, int], _T], value: Any
) -> _T:
    """Build (or fetch from ``cache``) a Pid/Ref from its tag content."""
    try:
        node, id_, creation = value
    except (TypeError, ValueError):
        raise DecodeError(
            f"invalid {kind.__name__}: expected [node, id, creation], got {value!r:.100}"
        ) from None
    if type(node) is str and type(id_) is int and type(creation) is int:
        key = (node, id_, creation)
        found = cache.get(key)
        if found is not None:
            return found
        try:
            made = kind(node, id_, creation)  # type: ignore[call-arg]
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"invalid {kind.__name__}: {exc}") from None
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = made
        return made
    raise DecodeError(
        f"invalid {kind.__name__}: expected [str, int, int], got {value!r:.100}"
    )


def _decode_pid(value: Any, immutable: bool) -> Pid:
    # The hot path: every frame carries a destination pid. Inlined cache hit;
    # the exact type checks keep True/1.0 from matching a cached 1.
    try:
        node, id_, creation = value
    except (TypeError, ValueError):
        return _decode_id(Pid, _PID_CACHE, value)
    if type(node) is str and type(id_) is int and type(creation) is int:
        pid = _PID_CACHE.get((node, id_, creation))
        if pid is not None:
            return pid
    return _decode_id(Pid, _PID_CACHE, value)


def _decode_ref(value: Any, immutable: bool) -> Ref:
    return _decode_id(Ref, _REF_CACHE, value)


def _decode_message(value: Any, immutable: bool) -> object:
    """Rebuild a @message instance from ``[tag, version, {field: value}]``."""
    try:
        tag, version, fields = value
    except (TypeError, ValueError):
        raise DecodeError(
            f"invalid message: expected [tag, version, fields], got {value!r:.100}"
        ) from None
    if type(tag) is not str:
        raise DecodeError(f"invalid message: tag must be a str, got {tag!r:.100}")
    entry = _BY_TAG.get(tag)
    if entry is None:
        raise DecodeError(f"unknown message tag {tag!r}")
    info = entry.info
    if type(version) is not int or version not in info.accepts:
        raise DecodeError(
            f"message {tag!r}: version {version!r} is not accepted "
            f"(this node accepts {sorted(info.accepts)})"
        )
    if not isinstance(fields, Mapping):  # dict, or frozendict in a map key
        raise DecodeError(f"message {tag!r}: fields must be a map, got {type(fields).__name__}")
    aliases = entry.aliases
    if aliases is not None:
        try:
            fields = {aliases[name]: field for name, field in fields.items()}
        except (KeyError, TypeError):
            unknown = sorted(repr(k) for k in fields if k not in aliases)
            raise DecodeError(f"message {tag!r}: unknown fields {', '.join(unknown)}") from None
    try:
        return info.cls(**fields)
    except Exception as exc:  # validators and converters may raise anything
        raise DecodeError(
            f"message {tag!r} version {version}: {type(exc).__name__}: {exc}"
        ) from exc


# Descriptions of the tags cbor2 6.3 decodes natively (found by probing every
# tag number; see tests/test_codec.py::test_decode_refuses_builtin_tags).
_BUILTIN_TAGS: Final[dict[int, str]] = {
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


def _tag_refuser(tag: int) -> Callable[[bool], Any]:
    """A decoder for ``tag`` that refuses it before its content is read.

    Decorated with ``cbor2.shareable_decoder``, cbor2 calls it when it sees
    the tag head, not after decoding (and allocating) the content.
    """
    what = _BUILTIN_TAGS.get(tag)
    if what is None:
        reason = f"unknown CBOR tag {tag}"
    else:
        reason = f"CBOR tag {tag} ({what}) is not allowed"

    def refuse(immutable: bool) -> Any:
        raise DecodeError(reason)

    return cbor2.shareable_decoder(refuse)  # type: ignore[no-any-return]


class _TagTable(dict[int, Any]):
    """``semantic_decoders`` for cbor2: our tags decode, every other tag is
    refused. cbor2 consults this mapping for every tag before its own
    built-in decoders, and ``__missing__`` catches tag numbers not listed
    (cheaper than a ``tag_hook``, which costs one more keyword argument per
    call and only runs after the content was decoded)."""

    def __missing__(self, tag: int) -> Any:
        return _tag_refuser(tag)


_SEMANTIC: Final = _TagTable(
    {tag: _tag_refuser(tag) for tag in _BUILTIN_TAGS}
    | {PID_TAG: _decode_pid, REF_TAG: _decode_ref, MESSAGE_TAG: _decode_message}
)


def _ignore_tag(value: Any, immutable: bool) -> None:
    return None


class _AnyTag(dict[int, Any]):
    """``semantic_decoders`` for the structure-only re-check: tags were
    already vetted by the first pass, so every tag just decodes to None."""

    def __missing__(self, tag: int) -> Any:
        return _ignore_tag


_STRUCTURAL: Final = _AnyTag()

# The payload is decoded as the first item of [payload, undefined]: cbor2's
# loads ignores bytes after the first item, so this is how trailing bytes
# become visible without a second pass.
_OPEN: Final = b"\x82"
_SENTINEL: Final = b"\xf7"
_UNDEFINED: Final = cbor2.undefined
_FAST_DEPTH_BYTES: Final = 256  # below cbor2's own default max_depth (400)


def decode(data: bytes | bytearray | memoryview, *, max_depth: int = DEFAULT_MAX_DEPTH) -> object:
    """Decode one CBOR payload produced by :func:`encode`.

    Raises:
        DecodeError: the payload is malformed, truncated, has trailing bytes,
            uses a refused tag, simple value or indefinite length, is nested
            deeper than ``max_depth``, names an unknown message tag or
            version, or a message constructor rejected its fields.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    try:
        if size <= max_depth and size <= _FAST_DEPTH_BYTES:
            # n bytes cannot nest deeper than n levels: no limit to pass.
            pair = cbor2.loads(_OPEN + data + _SENTINEL, semantic_decoders=_SEMANTIC)
        else:
            pair = cbor2.loads(
                _OPEN + data + _SENTINEL, semantic_decoders=_SEMANTIC, max_depth=max_depth + 1
            )
    except Exception as exc:
        raise _diagnose(data, max_depth, exc) from exc
    # The sentinel came back unless there were trailing bytes; and without a
    # flagged byte there can be no simple value, undefined or indefinite item
    # (and no trailing garbage that starts like the sentinel).
    if pair[1] is not _UNDEFINED or not data.translate(_DECODE_FLAGS).isascii():
        _exact_checks(data, pair[0], max_depth)
    return pair[0]


def _diagnose(data: bytes, max_depth: int, exc: Exception) -> DecodeError:
    """Turn a failed decode into a DecodeError with the real reason.

    The first pass decoded ``[payload, sentinel]``, whose errors can be
    misleading (garbage after the payload, depth off by one). Decode the
    payload alone, strictly, to find out what is wrong with it.
    """
    try:
        cbor2.loads(
            data, semantic_decoders=_SEMANTIC, max_depth=max_depth, allow_indefinite=False
        )
    except Exception as strict_exc:
        return DecodeError(_reason(strict_exc, max_depth))
    return DecodeError(f"trailing bytes after the CBOR item ({_reason(exc, max_depth)})")


def _reason(exc: BaseException, max_depth: int) -> str:
    """The most specific message in an exception chain: ours if we raised
    one inside a tag decoder, else cbor2's, reworded where it helps."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DecodeError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if "nesting depth" in text:
        return f"CBOR nested deeper than max_depth={max_depth}"
    if "indefinite length" in text:
        return f"indefinite-length CBOR items are not allowed ({text})"
    if isinstance(exc, cbor2.CBORDecodeEOF):
        return f"truncated CBOR: {text}"
    if isinstance(exc, cbor2.CBORDecodeError):
        return f"malformed CBOR: {text}"
    return f"malformed CBOR: {type(exc).__name__}: {text}"


def _exact_checks(data: bytes, value: object, max_depth: int) -> None:
    """The slow path of :func:`decode`, for payloads with trailing bytes or a
    byte that may head a simple value, ``undefined`` or a break.

    Re-reads the structure from a file object, whose position after the item
    is exact, with indefinite lengths disallowed; then looks for simple
    values in the decoded value.
    """
    fp = io.BytesIO(data)
    try:
        cbor2.CBORDecoder(
            fp, semantic_decoders=_STRUCTURAL, allow_indefinite=False, max_depth=max_depth
        ).decode()
    except Exception as exc:
        raise DecodeError(_reason(exc, max_depth)) from exc
    if fp.tell() != len(data):
        raise DecodeError(f"{len(data) - fp.tell()} trailing bytes after the CBOR item")
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        cls = type(item)
        if cls is list or cls is tuple:
            stack.extend(item)  # type: ignore[call-overload]
        elif cls is dict or cls is cbor2.frozendict:
            stack.extend(item.keys())  # type: ignore[attr-defined]
            stack.extend(item.values())  # type: ignore[attr-defined]
        elif cls is cbor2.CBORSimpleValue:
            raise DecodeError(f"CBOR simple value {item.value} is not allowed")  # type: ignore[attr-defined]
        elif item is _UNDEFINED:
            raise DecodeError("CBOR undefined is not allowed")
        else:
            entry = _BY_CLASS.get(cls)
            if entry is not None:
                stack.extend(getattr(item, name) for name in entry.info.fields)
