"""The restricted CBOR codec: what may travel between nodes, and how.

Every payload that crosses a connection goes through :func:`encode` and
:func:`decode`. Only these values travel:

* ``None``, ``bool``, ``int`` in CBOR's native range ``[-2**64, 2**64 - 1]``,
  ``float``, ``str``, ``bytes``;
* ``list`` and ``dict``; a ``tuple`` is encoded as a CBOR array and
  **arrives as a list** (CBOR, like JSON, has one array type), except inside
  a dict key, where it arrives as a tuple (see below);
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
Plain CBOR (RFC 8949) plus five tags of our own, from the
first-come-first-served range (not IANA-registered as far as we can tell;
every other tag is refused on both sides):

=====================  ======  =================================================
:data:`PID_TAG`        62625   ``[node: str, id: uint, creation: uint]``
:data:`REF_TAG`        62626   ``[node: str, id: uint, creation: uint]``
:data:`MESSAGE_TAG`    62627   ``[tag: str, version: uint, {field_name: value}]``
:data:`KEYED_MAP_TAG`  62628   ``[key, value, key, value, ...]``: a dict with a
                               key that is not a text or byte string
:data:`FROZEN_TAG`     62629   a tuple or message key of a keyed map, decoded
                               immutably (arrays as tuples)
=====================  ======  =================================================

A message carries its fields by attrs name (not position), so a later version
of a class can add optional fields: bump ``version`` and list the old one in
``accepts``. Fields declared with ``init=False`` do not travel.

Decisions
---------
* **Integers** are limited to CBOR's native range. cbor2 would encode a
  larger int as a bignum tag (2/3); both sides refuse it, so an ``int`` that
  leaves a node is exactly the ``int`` that arrives.
* **Subclasses** of the allowed builtins are instances of allowed types and
  travel as their base type: an ``IntEnum`` member arrives as an ``int``, a
  ``namedtuple`` as a ``list``, an ``OrderedDict`` as a ``dict``. Other
  containers (``set``, ``deque``, ``bytearray``, ``memoryview``,
  ``UserDict``, ``MappingProxyType``...) are refused like any other type.
* **Dict keys** may be ``None``, ``bool``, ``int``, ``float``, ``str``,
  ``bytes``, ``Pid``, ``Ref``, tuples of those, and hashable ``@message``
  instances: whatever Python can hash and :func:`encode` accepts as a value
  (keys are checked exactly like values, so no key the decoder would refuse
  gets out). A CBOR decoder must produce hashable keys, so an array in key
  position decodes as a ``tuple`` and a message in key position is rebuilt
  from immutable field values; every key :func:`encode` accepts therefore
  round-trips exactly. A received map with a duplicate key is refused
  (plain or keyed), as in every decoder of the protocol.
* **Hash flooding.** CPython hashes ints, floats and tuples without a
  secret (``hash(n) == hash(n + k * (2**61 - 1))``, and tuples of ints can
  be solved for any hash value), so a peer could send a map whose keys all
  collide and make its insertion quadratic: a 1.8 MB frame cost 19.5 s.
  So only text and byte-string keys, which the interpreter hashes with a
  random per-process key, travel as plain CBOR maps, and cbor2 inserts no
  other key (``strict_hashable_types``). A dict with any other key travels
  as a keyed map (:data:`KEYED_MAP_TAG`): its keys are decoded as array
  items, their distinct hash values counted in a set of ints (an int's hash
  is itself: no collisions there), and the map is refused if more than
  :data:`MAX_EQUAL_HASH_KEYS` keys share a hash value with an earlier key,
  before a single insertion. :func:`encode` refuses such a dict too. The
  cost of any frame is then linear in its size.
* **Depth**: arrays, maps and tags each count one level (a Pid or Ref costs
  two, its tag and its array; a message costs three plus its fields).
  :func:`decode` refuses input nested deeper than ``max_depth`` (default
  :data:`DEFAULT_MAX_DEPTH` = 64) and :func:`encode` refuses values nested
  deeper than that default, so what one node sends another accepts. This
  also turns a cyclic value into an :class:`EncodeError`, and keeps cbor2
  6.3's encoder, which recurses on the C stack and crashes the interpreter
  on values nested a few thousand levels deep, out of harm's way.
* **Known gaps**, reachable only by a peer that does not use this codec
  (refusing them would need a Python-level walk of every decoded value,
  which costs more than the decoding itself): a CBOR simple value or
  ``undefined`` decodes as ``cbor2.CBORSimpleValue`` / ``cbor2.undefined``,
  and inside a frozen key a map decodes as ``cbor2.frozendict`` (with text
  keys only).

How it stays fast
-----------------
The hot path (DESIGN 3a) is one cbor2 call per frame each way; every check
is arranged around cbor2 6.3's costs, measured on this machine. Decoding is
the protocol kernel's restricted decoder (``trio_distribute._proto._cbor``,
shared with the handshake, raft and SWIM), given this module's tag table:

* Passing ``encoders=`` to cbor2 doubles the cost of every call (even with
  an empty mapping), so it is not used. One Python walk over the value
  (:func:`_check`) checks types, int range and depth before the C encoder
  runs; leaves are checked inline, so only containers cost a function call.
  Checking the *output* bytes for tag heads instead was tried: cheaper for
  tiny ASCII messages, but 2-30x slower with floats or binary payloads.
* ``cbor2.dumps`` builds an encoder per call; a per-thread reusable
  encoder's ``encode_to_bytes`` is about 90 ns cheaper.
* Objects the C encoder does not know reach the ``default`` hook only after
  a chain of isinstance checks (several hundred ns per Pid); the hook then
  writes the Pid's cached bytes. :func:`encode_frame` skips all that for the
  frame's destination pid.
* Every keyword argument costs ``cbor2.loads`` about 30 ns, and a tag
  decoder without a ``_cbor2_name`` attribute about 300 ns (see
  :class:`_TagStart`). :func:`decode` passes one mapping that overrides
  every built-in semantic decoder (they refuse before reading the content)
  and refuses unknown tags through its ``__missing__``.
* ``cbor2.loads`` silently ignores bytes after the first item, so the
  payload is decoded as the first item of ``[payload, sentinel]``, where the
  sentinel is a 15-byte string drawn at random per process: garbage after
  the payload becomes the second item, and no peer can know the sentinel to
  fake it.
* A payload of n bytes cannot nest deeper than n levels, so ``max_depth``
  is only passed to cbor2 for payloads longer than the limit.
* cbor2 does not allocate ahead of the data: a 9-byte header declaring 2**64
  elements or bytes fails at once as truncated (tested under a memory cap).
* Decoded Pids and Refs are cached in bounded dicts keyed by the raw
  ``(node, id, creation)`` triple, so a pid seen before is not revalidated
  (its node-name regex is the expensive part).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NoReturn, TypeVar

import attrs
import cbor2

from ._ids import Pid, Ref, unchecked_id
from ._proto._cbor import FinalDecodeError, PayloadDecode, TagTable, payload_decoder
from ._proto._sliced import SLICE_BYTES, SlicedDecoder, Steps
from .errors import DecodeError, EncodeError, MessageTooLargeError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "FROZEN_TAG",
    "KEYED_MAP_TAG",
    "MAX_EQUAL_HASH_KEYS",
    "MAX_INT",
    "MESSAGE_TAG",
    "MIN_INT",
    "PID_TAG",
    "REF_TAG",
    "MessageType",
    "decode",
    "decode_element",
    "encode",
    "encode_element",
    "encode_frame",
    "encode_id",
    "encode_items",
    "encoded_size_ok",
    "id_head",
    "message",
    "read_uint",
    "registered_messages",
]

PID_TAG: Final = 62625
"""CBOR tag number of a :class:`~trio_distribute.Pid`."""
REF_TAG: Final = 62626
"""CBOR tag number of a :class:`~trio_distribute.Ref`."""
MESSAGE_TAG: Final = 62627
"""CBOR tag number of a :func:`message` instance."""
KEYED_MAP_TAG: Final = 62628
"""CBOR tag number of a dict whose keys are not all text or byte strings:
``[key, value, key, value, ...]``."""
FROZEN_TAG: Final = 62629
"""CBOR tag number of an immutable map key (a tuple or a message) inside a
keyed map: its content decodes immutably (arrays as tuples)."""

MAX_EQUAL_HASH_KEYS: Final = 8
"""Most keys of one received keyed map that may share a hash value with an
earlier key of the same map (beyond that the map is refused: see
"Hash flooding" in the module documentation)."""

MAX_INT: Final = 2**64 - 1
"""Largest int that travels (CBOR's native unsigned range)."""
MIN_INT: Final = -(2**64)
"""Smallest int that travels (CBOR's native negative range)."""

DEFAULT_MAX_DEPTH: Final = 64
"""Nesting limit of :func:`encode`, and default one of :func:`decode`."""

_CACHE_SIZE: Final = 4096
"""Entries kept per pid/ref cache before it is cleared (bounded memory)."""

_T = TypeVar("_T")
_C = TypeVar("_C", bound=type[Any])


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
) -> Callable[[_C], _C]:
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
    :class:`~trio_distribute.errors.DecodeError`, never a silent dict),
    checks that ``version`` is in ``accepts`` and builds the instance with
    the class's ``__init__``, so converters and validators run on received
    data too.

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

    def register(cls: _C) -> _C:
        target: object = cls
        if not isinstance(target, type) or not attrs.has(target):
            raise TypeError(
                f"@message({tag!r}) needs an attrs class, got {cls!r}; "
                "put @message above @attrs.define / @attrs.frozen"
            )
        init_fields = [f for f in attrs.fields(target) if f.init]
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

_SCALARS: Final = frozenset({str, bytes, float, bool, type(None)})


def _check(value: object, budget: int) -> None:
    """Raise EncodeError unless ``value`` may travel and fits in ``budget``
    levels of nesting.

    This is the only Python-level pass over an outgoing value, so the common
    cases are tested inline in the loops, in order of frequency, and only
    containers and unusual values cost a function call.
    """
    cls = type(value)
    if cls is dict:
        if budget < 1:
            _too_deep()
        budget -= 1
        for key, item in value.items():  # type: ignore[attr-defined]
            cls = type(key)
            if cls is not str and cls is not bytes:
                if not isinstance(key, (str, bytes)):
                    # Only text and byte-string keys travel as a CBOR map;
                    # any other key makes the dict a keyed map (see
                    # _rewrite), which the C encoder cannot produce alone.
                    raise _NeedsRewrite
                _check(key, budget)
            cls = type(item)
            if cls not in _SCALARS:
                if cls is int:
                    if not MIN_INT <= item <= MAX_INT:
                        raise EncodeError(_int_refusal(item))
                else:
                    _check(item, budget)
    elif cls is list or cls is tuple:
        if budget < 1:
            _too_deep()
        budget -= 1
        for item in value:  # type: ignore[attr-defined]
            cls = type(item)
            if cls not in _SCALARS:
                if cls is int:
                    if not MIN_INT <= item <= MAX_INT:
                        raise EncodeError(_int_refusal(item))
                else:
                    _check(item, budget)
    elif cls in _SCALARS:
        pass
    elif cls is int:
        if not MIN_INT <= value <= MAX_INT:  # type: ignore[operator]
            raise EncodeError(_int_refusal(value))  # type: ignore[arg-type]
    elif cls is Pid or cls is Ref:
        if budget < 2:  # a tag around an array
            _too_deep()
    else:
        _check_other(value, budget)


class _NeedsRewrite(Exception):
    """Raised by :func:`_check` when the value holds a dict with a key that
    is not a text or byte string: such a dict travels as a keyed map, which
    :func:`_rewrite` builds (the rare, slower path)."""


def _rewrite(value: object, budget: int) -> object:
    """Check ``value`` like :func:`_check` and return a copy the C encoder
    writes in our wire format: every dict with a key that is not a text or
    byte string becomes a :data:`KEYED_MAP_TAG` tag, and every message a
    :data:`MESSAGE_TAG` tag (its fields may hold such dicts, and the
    ``default`` hook would hand them to cbor2 as plain maps)."""
    if isinstance(value, dict):
        if budget < 1:
            _too_deep()
        if all(isinstance(key, (str, bytes)) for key in value):
            # A plain map (a str or bytes subclass travels as its base).
            return {key: _rewrite_leaf(item, budget - 1) for key, item in value.items()}
        if budget < 2:  # tag and array
            _too_deep()
        budget -= 2
        distinct = len(set(map(hash, value)))
        if len(value) - distinct > MAX_EQUAL_HASH_KEYS:
            raise EncodeError(_collision_refusal(len(value), distinct))
        flat: list[object] = []
        append = flat.append
        for key, item in value.items():
            cls = type(key)
            if (cls is int and MIN_INT <= key <= MAX_INT) or cls in _SCALARS:
                append(key)
            else:
                append(_rewrite_key(key, budget))
            append(_rewrite_leaf(item, budget))
        return cbor2.CBORTag(KEYED_MAP_TAG, flat)
    if isinstance(value, (list, tuple)):
        if budget < 1:
            _too_deep()
        return [_rewrite_leaf(item, budget - 1) for item in value]
    entry = _BY_CLASS.get(type(value))
    if entry is not None:
        if budget < 3:  # tag, array, field map
            _too_deep()
        info = entry.info
        fields = {name: _rewrite_leaf(getattr(value, name), budget - 3) for name in info.fields}
        return cbor2.CBORTag(MESSAGE_TAG, [info.tag, info.version, fields])
    _check(value, budget)  # a leaf: scalars, ints, Pids, Refs, or a refusal
    return value


def _rewrite_leaf(value: object, budget: int) -> object:
    """:func:`_rewrite`, with the common leaves passed through inline."""
    cls = type(value)
    if cls in _SCALARS or (cls is int and MIN_INT <= value <= MAX_INT):  # type: ignore[operator]
        return value
    return _rewrite(value, budget)


def _rewrite_key(key: object, budget: int) -> object:
    """A keyed map's key: a tuple or message is wrapped in
    :data:`FROZEN_TAG` so that it decodes immutably (hashable) again.
    (The tag's level needs no check of its own: the tuple or message inside
    costs at least one more, which :func:`_rewrite` checks.)"""
    if isinstance(key, tuple) or type(key) in _BY_CLASS:
        return cbor2.CBORTag(FROZEN_TAG, _rewrite(key, budget - 1))
    return _rewrite(key, budget)


def _collision_refusal(keys: int, hashes: int) -> str:
    return (
        f"map of {keys} keys with only {hashes} distinct hash values: at most "
        f"{MAX_EQUAL_HASH_KEYS} keys may share a hash value with another key "
        "(a map built to make dict insertion quadratic)"
    )


def _check_other(value: object, budget: int) -> None:
    """The rare cases of :func:`_check`: messages, subclasses of allowed
    builtins (travelling as their base type), and refusals."""
    entry = _BY_CLASS.get(type(value))
    if entry is not None:
        if budget < 3:  # tag, array, field map
            _too_deep()
        for name in entry.info.fields:
            _check(getattr(value, name), budget - 3)
    elif isinstance(value, int):  # IntEnum and friends; bool is exact
        if not MIN_INT <= value <= MAX_INT:
            raise EncodeError(_int_refusal(value))
    elif isinstance(value, (str, bytes, float)):
        pass
    elif isinstance(value, dict):
        _check(dict(value), budget)
    elif isinstance(value, (list, tuple)):
        _check(list(value), budget)
    else:
        raise EncodeError(_refusal(value))


def _too_deep() -> NoReturn:
    raise EncodeError(
        f"cannot encode value: nested deeper than {DEFAULT_MAX_DEPTH} levels (lists, "
        "dicts and tuples count one, a Pid or Ref two, a message three), or it "
        "contains itself; the receiver would refuse it"
    )


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


# Encoded Pids and Refs by (node, id, creation): a process sends to the same
# few pids over and over, and writing cached bytes is the cheapest thing the
# default hook can do.
_PID_BYTES: dict[tuple[str, int, int], bytes] = {}
_REF_BYTES: dict[tuple[str, int, int], bytes] = {}
_PID_HEAD: Final = b"\xd9" + PID_TAG.to_bytes(2, "big")
_REF_HEAD: Final = b"\xd9" + REF_TAG.to_bytes(2, "big")


def _id_bytes(head: bytes, cache: dict[tuple[str, int, int], bytes], value: Pid | Ref) -> bytes:
    key = (value.node, value.id, value.creation)
    data = cache.get(key)
    if data is None:
        data = head + cbor2.dumps([value.node, value.id, value.creation])
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[key] = data
        # The decode cache too: what goes out (a call's ref) often comes
        # back (in its reply), and is then not validated again.
        decoded: dict[Any, Any] = _PID_CACHE if cache is _PID_BYTES else _REF_CACHE
        if len(decoded) >= _CACHE_SIZE:
            decoded.clear()
        decoded[key] = value
    return data


def _encode_extension(encoder: cbor2.CBOREncoder, value: object) -> None:
    """cbor2's ``default`` hook, called for each object its C encoder does
    not know: our Pids, Refs and messages (``_check`` refused the rest)."""
    cls = type(value)
    if cls is Pid:
        encoder.write(_id_bytes(_PID_HEAD, _PID_BYTES, value))  # type: ignore[arg-type]
    elif cls is Ref:
        encoder.write(_id_bytes(_REF_HEAD, _REF_BYTES, value))  # type: ignore[arg-type]
    else:
        entry = _BY_CLASS.get(cls)
        if entry is None:
            raise EncodeError(_refusal(value))
        info = entry.info
        encoder.encode_semantic(
            MESSAGE_TAG,
            [info.tag, info.version, {name: getattr(value, name) for name in info.fields}],
        )


def _new_encoder() -> Callable[[object], bytes]:
    return cbor2.CBOREncoder(io.BytesIO(), default=_encode_extension).encode_to_bytes


class _ThreadEncoder(threading.local):
    """One reusable cbor2 encoder per thread.

    ``encoder.encode_to_bytes`` skips the encoder construction that every
    ``cbor2.dumps`` call pays (about 90 ns); an encoder is not safe to share
    between threads, hence one per thread.
    """

    def __init__(self) -> None:
        self.encode = _new_encoder()


_encoder = _ThreadEncoder()


def encode(obj: object) -> bytes:
    """Encode one value as CBOR bytes.

    Raises:
        EncodeError: the value contains something that cannot travel (the
            message names its type), an int outside 64 bits, or it is
            nested deeper than :data:`DEFAULT_MAX_DEPTH` levels.
    """
    try:
        _check(obj, DEFAULT_MAX_DEPTH)
    except _NeedsRewrite:
        obj = _rewrite(obj, DEFAULT_MAX_DEPTH)
    return _encode_checked(obj)


def _encode_checked(obj: object) -> bytes:
    """Encode a value :func:`_check` accepted."""
    try:
        return _encoder.encode(obj)
    except BaseException as exc:
        # Whatever went wrong, don't reuse an encoder that stopped midway.
        _encoder.encode = _new_encoder()
        if isinstance(exc, Exception) and not isinstance(exc, (EncodeError, MemoryError)):
            # e.g. a str with lone surrogates
            raise EncodeError(f"cannot encode value: {type(exc).__name__}: {exc}") from exc
        raise


#: CBOR uints 0-255 (one byte below 24, two from 24), for frame kinds and
#: other small numbers written without cbor2.
_UINT_BYTES: Final = tuple(cbor2.dumps(n) for n in range(256))
_ARRAY_HEADS: Final = tuple(bytes((0x80 + n,)) for n in range(24))
_TEXT_HEADS: Final = tuple(bytes((0x60 + n,)) for n in range(24))


def encode_items(items: list[Any] | tuple[Any, ...]) -> list[bytes]:
    """The encoding of the array ``items`` as pieces to join: the same bytes
    as ``encode(list(items))``, faster for frames that start with pids or
    refs (cbor2 reaches our hook for them only after a chain of isinstance
    checks): the leading items (a kind number, pids, refs, short strings,
    small ints) are written from tables and caches, and from the first
    other item on, the rest goes through cbor2 in one call. For frames of
    numbers and strings only, :func:`encode` is as fast.

    Raises:
        EncodeError: as :func:`encode`.
    """
    n = len(items)
    if n >= 24:
        return [encode(list(items))]
    parts = [_ARRAY_HEADS[n]]
    append = parts.append
    for index, item in enumerate(items):
        cls = type(item)
        if cls is Pid:
            append(_id_bytes(_PID_HEAD, _PID_BYTES, item))
        elif cls is Ref:
            append(_id_bytes(_REF_HEAD, _REF_BYTES, item))
        elif (cls is int or (cls is not bool and isinstance(item, int))) and 0 <= item < 256:
            # Plain ints, and frame kinds (an IntEnum travels as its int).
            append(_UINT_BYTES[item])
        elif cls is str and len(item) < 24 and item.isascii():
            append(_TEXT_HEADS[len(item)] + item.encode())
        elif item is None:
            append(b"\xf6")
        else:
            # CBOR items concatenate: the rest as an array, minus its head
            # (one byte: fewer than 24 items), is the rest of this array.
            append(encode(list(items[index:]))[1:])
            break
    return parts


def encode_frame(kind: object, dest: object, payload: object) -> bytes:
    """Encode ``[kind, dest, payload]``: the same bytes as
    ``encode([kind, dest, payload])``, about 40% faster when ``dest`` is a
    Pid.

    Meant for the frames of the wire protocol. A Pid costs cbor2 several
    hundred ns on its way to our ``default`` hook (cbor2 first tries a chain
    of isinstance checks); here its cached bytes are pasted in directly, and
    only the payload goes through cbor2.

    Raises:
        EncodeError: as :func:`encode`.
    """
    return b"".join((b"\x83", _frame_item(kind), _frame_item(dest), _frame_item(payload)))


def _frame_item(item: object) -> bytes:
    cls = type(item)
    if cls is Pid:
        return _id_bytes(_PID_HEAD, _PID_BYTES, item)  # type: ignore[arg-type]
    if cls is Ref:
        return _id_bytes(_REF_HEAD, _REF_BYTES, item)  # type: ignore[arg-type]
    if cls is int and 0 <= item < 24:  # type: ignore[operator]
        return _UINT_BYTES[item]  # type: ignore[call-overload,no-any-return]
    try:
        _check(item, DEFAULT_MAX_DEPTH - 1)  # one level is the frame's array
    except _NeedsRewrite:
        item = _rewrite(item, DEFAULT_MAX_DEPTH - 1)
    return _encode_checked(item)


def encode_id(value: Pid | Ref) -> bytes:
    """The encoding of a Pid or Ref, from the caches (as ``encode`` gives
    it); a frame built by hand from pieces pastes it in."""
    if type(value) is Pid:
        return _id_bytes(_PID_HEAD, _PID_BYTES, value)
    return _id_bytes(_REF_HEAD, _REF_BYTES, value)


def id_head(kind: type[Pid] | type[Ref], node: str | None = None) -> bytes:
    """The bytes every encoded Pid (or Ref) of ``node`` starts with: its
    tag, its array head and the node's name (of any Pid or Ref: the tag and
    array head). Its id and creation follow, each a CBOR unsigned integer
    (see :func:`read_uint`)."""
    head = (_PID_HEAD if kind is Pid else _REF_HEAD) + b"\x83"
    return head if node is None else head + cbor2.dumps(node)


def read_uint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """The CBOR unsigned integer at ``pos`` in ``data``, and where it ends:
    for a frame's head read by hand (ids and creations).

    Raises:
        ValueError: what starts at ``pos`` is not an unsigned integer.
        IndexError: ``data`` ends before it does.
    """
    first = data[pos]
    if first < 24:
        return first, pos + 1
    if first == 24:
        return data[pos + 1], pos + 2
    if 25 <= first <= 27:
        end = pos + 1 + (1 << (first - 24))
        if end > len(data):
            raise IndexError("data ends inside an unsigned integer")
        return int.from_bytes(data[pos + 1 : end], "big"), end
    raise ValueError(f"not a CBOR unsigned integer: initial byte {first:#x}")


def encode_element(item: object) -> bytes:
    """The encoding of ``item`` as an element of a frame's array: the bytes
    ``encode`` gives for it, with one level of the depth limit spent on the
    array (so a frame built by hand from pieces is refused exactly where
    ``encode`` of the whole frame would be).

    Raises:
        EncodeError: as :func:`encode`.
    """
    return _frame_item(item)


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
# Node names that passed validation (bounded like the caches above).
_VALID_NODES: set[str] = set()


def _make_id(kind: type[_T], cache: dict[tuple[str, int, int], _T], value: Any) -> _T:
    """Validate a Pid/Ref's tag content, build it and cache it."""
    try:
        node, id_, creation = value
    except (TypeError, ValueError):
        raise DecodeError(
            f"invalid {kind.__name__}: expected [node, id, creation], got {value!r:.100}"
        ) from None
    if not (type(node) is str and type(id_) is int and type(creation) is int):
        raise DecodeError(f"invalid {kind.__name__}: expected [str, int, int], got {value!r:.100}")
    if node in _VALID_NODES and id_ >= 0 and creation >= 0:
        # A node name seen valid before: a fresh ref (one per call) or pid
        # of a known node skips the name's regular expressions.
        made = unchecked_id(kind, node, id_, creation)  # type: ignore[type-var]
    else:
        try:
            made = kind(node, id_, creation)  # type: ignore[call-arg]
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"invalid {kind.__name__}: {exc}") from None
        if len(_VALID_NODES) >= _CACHE_SIZE:
            _VALID_NODES.clear()
        _VALID_NODES.add(node)
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[(node, id_, creation)] = made
    return made


def _id_finisher(kind: type[_T], cache: dict[tuple[str, int, int], _T]) -> Callable[[Any], _T]:
    """The tag decoder for Pid or Ref content ``[node, id, creation]``.

    The hot path: every frame carries a destination pid, and the same pids
    come back again and again. A cached one is returned without
    revalidation; the exact type checks keep ``True`` or ``1.0`` (equal to
    1 as dict keys) from matching a cached ``1``.
    """

    def finish(value: Any) -> _T:
        try:
            node, id_, creation = value
        except (TypeError, ValueError):
            return _make_id(kind, cache, value)
        if type(node) is str and type(id_) is int and type(creation) is int:
            found = cache.get((node, id_, creation))
            if found is not None:
                return found
        return _make_id(kind, cache, value)

    return finish


_finish_pid = _id_finisher(Pid, _PID_CACHE)
_finish_ref = _id_finisher(Ref, _REF_CACHE)


def _finish_message(value: Any) -> object:
    """Rebuild a @message instance from ``[tag, version, {field: value}]``.

    In a map key cbor2 decodes the content immutably (tuples, frozendict),
    which is what a hashable message was made of anyway.
    """
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


class _TagStart(dict[bool, tuple[None, Callable[[Any], object]]]):
    """How one of our tags is decoded, in the form cbor2 calls fastest.

    cbor2 6.3 looks up the attribute ``_cbor2_name`` on every tag decoder;
    a plain function lacks it, and the failed lookup (an AttributeError
    raised and cleared) costs about 300 ns per tag. With the attribute the
    decoder is "shareable": cbor2 calls it with the ``immutable`` flag when
    the tag starts and expects ``(container, finish)``, then calls
    ``finish(content)``. Making ``__call__`` the C-level ``dict.get`` of a
    ``{False: ..., True: ...}`` mapping answers the first call without
    running any Python code, so a pid costs one Python call (``finish``).
    """

    __call__ = dict.get
    _cbor2_name = None
    _cbor2_immutable = False


def _tag_start(finish: Callable[[Any], object]) -> _TagStart:
    return _TagStart({False: (None, finish), True: (None, finish)})


class _FrozenTagStart(_TagStart):
    """Like :class:`_TagStart`, but cbor2 decodes the content immutably
    (arrays as tuples, a message's fields as tuples) wherever the tag is,
    as it would in a map key."""

    _cbor2_immutable = True


def _finish_keyed_map(value: Any) -> dict[Any, Any]:
    """Build a dict from a keyed map's ``[key, value, key, value, ...]``.

    The keys were decoded as array items, so no dict was built yet: count
    the distinct hash values first (a set of ints, each its own hash: no
    collisions possible there) and refuse a map whose keys share too many,
    before a single insertion could go quadratic.
    """
    if type(value) is not list or len(value) % 2:
        raise DecodeError(
            f"invalid keyed map: expected [key, value, ...] with an even number "
            f"of items, got {value!r:.100}"
        )
    keys = value[0::2]
    try:
        hashes = set(map(hash, keys))
    except TypeError:
        raise DecodeError(
            f"invalid keyed map: unhashable key {next(k for k in keys if not _hashable(k))!r:.100}"
        ) from None
    if len(keys) - len(hashes) > MAX_EQUAL_HASH_KEYS:
        raise _CollidingKeys(_collision_refusal(len(keys), len(hashes)))
    result = dict(zip(keys, value[1::2], strict=True))  # lengths checked above
    if len(result) != len(keys):
        # Two values for one key: refused like a duplicate in a plain map.
        raise DecodeError(f"duplicate key in a keyed map ({len(keys) - len(result)} repeated)")
    return result


class _CollidingKeys(FinalDecodeError):
    """A keyed map refused for sharing too many hash values."""


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _finish_frozen(value: Any) -> object:
    """A keyed map's immutable key: a tuple or a message."""
    if type(value) is tuple or type(value) in _BY_CLASS:
        return value
    raise DecodeError(f"invalid frozen key: expected an array or a message, got {value!r:.100}")


_SEMANTIC: Final = TagTable(
    {
        PID_TAG: _tag_start(_finish_pid),
        REF_TAG: _tag_start(_finish_ref),
        MESSAGE_TAG: _tag_start(_finish_message),
        KEYED_MAP_TAG: _tag_start(_finish_keyed_map),
        FROZEN_TAG: _FrozenTagStart({False: (None, _finish_frozen), True: (None, _finish_frozen)}),
    }
)


_MAP_KEY_HINT: Final = (
    f": a CBOR map may only have text or byte-string keys (a dict "
    f"with other keys travels as tag {KEYED_MAP_TAG})"
)

decode: Final[PayloadDecode] = payload_decoder(
    _SEMANTIC, default_max_depth=DEFAULT_MAX_DEPTH, map_key_hint=_MAP_KEY_HINT
)

#: :func:`decode` for the encoding of one element of a frame's array (the
#: rest of a frame whose head was read by hand): one level of the depth
#: limit is spent on the frame's array, so an element is refused exactly
#: where decoding the whole frame would refuse it (the counterpart of
#: :func:`encode_element`).
decode_element: Final[PayloadDecode] = payload_decoder(
    _SEMANTIC, default_max_depth=DEFAULT_MAX_DEPTH - 1, map_key_hint=_MAP_KEY_HINT
)


def _finished(finish: Callable[[Any], object]) -> Callable[[Any], Steps]:
    """A tag finisher as a sliced decode step (it runs in one go)."""

    def steps(content: Any) -> Steps:
        value = finish(content)
        yield  # one pause after a tag is finished, like after any slice
        return value

    return steps


def _finish_keyed_map_in_slices(value: Any) -> Steps:
    """:func:`_finish_keyed_map` for a big keyed map (millions of keys):
    the keys are hashed, and the dict built, a slice at a time."""
    if type(value) is not list or len(value) % 2 or len(value) < 2 * _KEY_SLICE:
        return _finish_keyed_map(value)  # small, or refused with its reason
    keys, values = value[0::2], value[1::2]
    hashes: set[int] = set()
    for start in range(0, len(keys), _KEY_SLICE):
        try:
            hashes.update(map(hash, keys[start : start + _KEY_SLICE]))
        except TypeError:
            return _finish_keyed_map(value)  # refused: an unhashable key
        yield
    if len(keys) - len(hashes) > MAX_EQUAL_HASH_KEYS:
        raise _CollidingKeys(_collision_refusal(len(keys), len(hashes)))
    result: dict[Any, Any] = {}
    for start in range(0, len(keys), _KEY_SLICE):
        part = slice(start, start + _KEY_SLICE)
        result.update(zip(keys[part], values[part], strict=True))
        yield
    if len(result) != len(keys):
        raise DecodeError(f"duplicate key in a keyed map ({len(keys) - len(result)} repeated)")
    return result


_KEY_SLICE: Final = 16384

_SLICED: Final = SlicedDecoder(
    _SEMANTIC,
    {
        PID_TAG: _finished(_finish_pid),
        REF_TAG: _finished(_finish_ref),
        MESSAGE_TAG: _finished(_finish_message),
        KEYED_MAP_TAG: _finish_keyed_map_in_slices,
    },
    immutable_tags=frozenset({FROZEN_TAG}),
    default_max_depth=DEFAULT_MAX_DEPTH,
    map_key_hint=_MAP_KEY_HINT,
)


def decode_steps(
    data: bytes | bytearray, *, max_depth: int = DEFAULT_MAX_DEPTH, slice_bytes: int = SLICE_BYTES
) -> Steps:
    """:func:`decode` for a big payload, as a generator: each ``next()``
    decodes at most ``slice_bytes`` of input, and the value comes with
    ``StopIteration``. The result and the refusals are those of
    :func:`decode`, except that a tuple or message dict key bigger than
    ``slice_bytes`` is refused. ``trio_distribute`` drives it for frames
    over ``SLICED_ABOVE`` bytes, letting other tasks run between slices.

    Raises (from ``next``):
        DecodeError: as :func:`decode`.
    """
    return _SLICED.steps(data, max_depth=max_depth, slice_bytes=slice_bytes)


# The kernel's decoder is a closure; present it as this module's function.
decode.__module__ = __name__
decode.__qualname__ = decode.__name__ = "decode"  # type: ignore[attr-defined]
decode.__doc__ = """Decode one CBOR payload produced by :func:`encode`.

    Args:
        data: exactly one encoded item.
        max_depth: the nesting limit (positive); arrays, maps and tags each
            count one level.

    Raises:
        DecodeError: the payload is malformed or truncated, has trailing
            bytes, uses a refused tag or an indefinite length, has a
            duplicate map key, is nested deeper than ``max_depth``, names an
            unknown message tag or version, or a message constructor
            rejected its fields.
        ValueError: ``max_depth`` is not a positive int.
    """
