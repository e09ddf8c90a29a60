"""SWIM messages and their encoding.

Every message is a CBOR array whose first element is a small int kind,
followed by plain ints, strings and byte strings. A datagram is a CBOR array
of messages (a *compound*: one probe message plus piggybacked gossip), built
by concatenating separately encoded messages behind an array header, so a
broadcast is encoded once and its size is known before it is packed. A
stream carries exactly one message.

Decoding is total: any input either yields validated messages or raises
:class:`SwimDecodeError`; nothing else escapes, and nothing is returned
until the whole payload validated (so a bad datagram changes no state).

Datagram messages::

    [0, seq, target]                      ping (target: the name we expect to answer)
    [1, seq]                              ack
    [2, seq]                              nack (an indirect helper could not reach the target)
    [3, seq, target, target_address]      ping-req
    [4, name, address, incarnation, metadata]   alive
    [5, name, incarnation, source]        suspect (source: who suspects)
    [6, name, incarnation, source]        dead
    [7, name, incarnation]                left (graceful leave)

Stream messages::

    [16, seq, target, reply_name, reply_address]   fallback ping over a stream
    [17, seq]                                      its ack
    [18, reply, name, address, [[name, address, incarnation, status, metadata], ...]]
                                                   push-pull full state (reply: 0 or 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import attrs
import cbor2

from ..errors import DecodeError
from ._cbor import TagTable, payload_decoder

__all__ = [
    "MAX_INCARNATION",
    "MAX_METADATA",
    "MAX_NAME",
    "Ack",
    "Alive",
    "DatagramMessage",
    "Dead",
    "Left",
    "MemberState",
    "Nack",
    "Ping",
    "PingReq",
    "PushPull",
    "StreamAck",
    "StreamMessage",
    "StreamPing",
    "Suspect",
    "SwimDecodeError",
    "decode_datagram",
    "decode_stream",
    "encode",
    "pack",
    "packed_size",
]

#: Incarnations are validated below this bound, so no peer can push a
#: member to a value where "refute with incarnation + 1" stops working.
MAX_INCARNATION: Final = 2**63
MAX_SEQ: Final = 2**64
MAX_NAME: Final = 255  # characters in a member name, address or source
MAX_METADATA: Final = 512
MAX_PARTS: Final = 255  # messages in one compound datagram
MAX_DATAGRAM: Final = 65_535
MAX_PUSH_PULL_MEMBERS: Final = 1_000_000

STATUS_ALIVE: Final = 0
STATUS_SUSPECT: Final = 1
STATUS_DEAD: Final = 2
STATUS_LEFT: Final = 3

PING: Final = 0
ACK: Final = 1
NACK: Final = 2
PING_REQ: Final = 3
ALIVE: Final = 4
SUSPECT: Final = 5
DEAD: Final = 6
LEFT: Final = 7
STREAM_PING: Final = 16
STREAM_ACK: Final = 17
PUSH_PULL: Final = 18


class SwimDecodeError(DecodeError, ValueError):
    """A SWIM datagram or stream payload is malformed; it was ignored whole."""


@attrs.frozen
class Ping:
    seq: int
    target: str


@attrs.frozen
class Ack:
    seq: int


@attrs.frozen
class Nack:
    seq: int


@attrs.frozen
class PingReq:
    seq: int
    target: str
    target_address: str


@attrs.frozen
class Alive:
    name: str
    address: str
    incarnation: int
    metadata: bytes


@attrs.frozen
class Suspect:
    name: str
    incarnation: int
    source: str


@attrs.frozen
class Dead:
    name: str
    incarnation: int
    source: str


@attrs.frozen
class Left:
    name: str
    incarnation: int


@attrs.frozen
class StreamPing:
    seq: int
    target: str
    reply_name: str
    reply_address: str


@attrs.frozen
class StreamAck:
    seq: int


@attrs.frozen
class MemberState:
    name: str
    address: str
    incarnation: int
    status: int  # STATUS_* code
    metadata: bytes


@attrs.frozen
class PushPull:
    reply: bool
    name: str
    address: str
    members: tuple[MemberState, ...]


DatagramMessage = Ping | Ack | Nack | PingReq | Alive | Suspect | Dead | Left
StreamMessage = StreamPing | StreamAck | PushPull


# -- encoding -----------------------------------------------------------------


def _fields(message: DatagramMessage | StreamMessage) -> list[Any]:
    match message:
        case Ping(seq, target):
            return [PING, seq, target]
        case Ack(seq):
            return [ACK, seq]
        case Nack(seq):
            return [NACK, seq]
        case PingReq(seq, target, target_address):
            return [PING_REQ, seq, target, target_address]
        case Alive(name, address, incarnation, metadata):
            return [ALIVE, name, address, incarnation, metadata]
        case Suspect(name, incarnation, source):
            return [SUSPECT, name, incarnation, source]
        case Dead(name, incarnation, source):
            return [DEAD, name, incarnation, source]
        case Left(name, incarnation):
            return [LEFT, name, incarnation]
        case StreamPing(seq, target, reply_name, reply_address):
            return [STREAM_PING, seq, target, reply_name, reply_address]
        case StreamAck(seq):
            return [STREAM_ACK, seq]
        case PushPull(reply, name, address, members):
            states = [[m.name, m.address, m.incarnation, m.status, m.metadata] for m in members]
            return [PUSH_PULL, int(reply), name, address, states]
    raise TypeError(f"not a SWIM message: {message!r}")


def encode(message: DatagramMessage | StreamMessage) -> bytes:
    """One message as CBOR: a datagram part (see :func:`pack`) or a stream payload."""
    return bytes(cbor2.dumps(_fields(message)))


def _array_header(count: int) -> bytes:
    if count < 24:
        return bytes((0x80 | count,))
    if count < 256:
        return bytes((0x98, count))
    raise ValueError(f"a compound datagram holds at most {MAX_PARTS} messages, got {count}")


def packed_size(part_sizes: int, count: int) -> int:
    """Size of :func:`pack` over ``count`` parts totalling ``part_sizes`` bytes."""
    return part_sizes + (1 if count < 24 else 2)


def pack(parts: Sequence[bytes]) -> bytes:
    """A datagram: the CBOR array of already encoded messages."""
    return _array_header(len(parts)) + b"".join(parts)


# -- decoding -----------------------------------------------------------------


# SWIM messages carry no tags: the kernel's restricted decoder refuses every
# tag at its head (see trio_distribute._proto._cbor).
_restricted_decode: Final = payload_decoder(TagTable(context="a SWIM message"), default_max_depth=4)


def _load(payload: bytes, what: str) -> object:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise SwimDecodeError(f"{what} must be bytes, got {type(payload).__name__}")
    try:
        return _restricted_decode(payload)
    except DecodeError as exc:
        raise SwimDecodeError(f"bad {what}: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # The restricted decoder promises DecodeError; stay total anyway.
        raise SwimDecodeError(f"bad {what}: {exc}") from None


def _text(value: object, what: str) -> str:
    if type(value) is not str or len(value) > MAX_NAME:
        raise SwimDecodeError(f"{what} must be a string of at most {MAX_NAME} characters")
    return value


def _name(value: object, what: str) -> str:
    text = _text(value, what)
    if not text:
        raise SwimDecodeError(f"{what} must not be empty")
    return text


def _uint(value: object, bound: int, what: str) -> int:
    if type(value) is not int or not 0 <= value < bound:
        raise SwimDecodeError(f"{what} must be an int in [0, {bound})")
    return value


def _metadata(value: object) -> bytes:
    if type(value) is not bytes or len(value) > MAX_METADATA:
        raise SwimDecodeError(f"metadata must be bytes of at most {MAX_METADATA} bytes")
    return value


def _shape(item: object, kind_lengths: dict[int, int]) -> list[Any]:
    if type(item) is not list or not item:
        raise SwimDecodeError("a message must be a non-empty array")
    kind = item[0]
    expected = kind_lengths.get(kind) if type(kind) is int else None
    if expected is None:
        raise SwimDecodeError(f"unknown message kind {kind!r}")
    if len(item) != expected:
        raise SwimDecodeError(f"message kind {kind} needs {expected} fields, got {len(item)}")
    return item


_DATAGRAM_LENGTHS: Final = {
    PING: 3,
    ACK: 2,
    NACK: 2,
    PING_REQ: 4,
    ALIVE: 5,
    SUSPECT: 4,
    DEAD: 4,
    LEFT: 3,
}
_STREAM_LENGTHS: Final = {STREAM_PING: 5, STREAM_ACK: 2, PUSH_PULL: 5}


def _datagram_message(item: object) -> DatagramMessage:
    fields = _shape(item, _DATAGRAM_LENGTHS)
    kind = fields[0]
    if kind == PING:
        return Ping(_uint(fields[1], MAX_SEQ, "seq"), _name(fields[2], "target"))
    if kind == ACK:
        return Ack(_uint(fields[1], MAX_SEQ, "seq"))
    if kind == NACK:
        return Nack(_uint(fields[1], MAX_SEQ, "seq"))
    if kind == PING_REQ:
        return PingReq(
            _uint(fields[1], MAX_SEQ, "seq"),
            _name(fields[2], "target"),
            _name(fields[3], "target address"),
        )
    if kind == ALIVE:
        return Alive(
            _name(fields[1], "name"),
            _name(fields[2], "address"),
            _uint(fields[3], MAX_INCARNATION, "incarnation"),
            _metadata(fields[4]),
        )
    if kind == SUSPECT:
        return Suspect(
            _name(fields[1], "name"),
            _uint(fields[2], MAX_INCARNATION, "incarnation"),
            _text(fields[3], "source"),
        )
    if kind == DEAD:
        return Dead(
            _name(fields[1], "name"),
            _uint(fields[2], MAX_INCARNATION, "incarnation"),
            _text(fields[3], "source"),
        )
    return Left(_name(fields[1], "name"), _uint(fields[2], MAX_INCARNATION, "incarnation"))


def decode_datagram(payload: bytes) -> list[DatagramMessage]:
    """Every message of a compound datagram, or :class:`SwimDecodeError`."""
    if isinstance(payload, bytes | bytearray | memoryview) and len(payload) > MAX_DATAGRAM:
        raise SwimDecodeError(f"datagram larger than {MAX_DATAGRAM} bytes")
    items = _load(payload, "datagram")
    if type(items) is not list or not items or len(items) > MAX_PARTS:
        raise SwimDecodeError(f"a datagram must be an array of 1 to {MAX_PARTS} messages")
    return [_datagram_message(item) for item in items]


def _member_state(item: object) -> MemberState:
    if type(item) is not list or len(item) != 5:
        raise SwimDecodeError("a member state must be an array of 5 fields")
    status = item[3]
    if type(status) is not int or not STATUS_ALIVE <= status <= STATUS_LEFT:
        raise SwimDecodeError(f"unknown member status {status!r}")
    return MemberState(
        _name(item[0], "name"),
        _name(item[1], "address"),
        _uint(item[2], MAX_INCARNATION, "incarnation"),
        status,
        _metadata(item[4]),
    )


def decode_stream(payload: bytes) -> StreamMessage:
    """The one message of a stream payload, or :class:`SwimDecodeError`."""
    fields = _shape(_load(payload, "stream message"), _STREAM_LENGTHS)
    kind = fields[0]
    if kind == STREAM_PING:
        return StreamPing(
            _uint(fields[1], MAX_SEQ, "seq"),
            _name(fields[2], "target"),
            _name(fields[3], "reply name"),
            _name(fields[4], "reply address"),
        )
    if kind == STREAM_ACK:
        return StreamAck(_uint(fields[1], MAX_SEQ, "seq"))
    reply = fields[1]
    if reply not in (0, 1) or type(reply) is not int:
        raise SwimDecodeError("push-pull reply flag must be 0 or 1")
    states = fields[4]
    if type(states) is not list or len(states) > MAX_PUSH_PULL_MEMBERS:
        raise SwimDecodeError(f"push-pull state must list at most {MAX_PUSH_PULL_MEMBERS} members")
    return PushPull(
        bool(reply),
        _name(fields[2], "name"),
        _name(fields[3], "address"),
        tuple(_member_state(state) for state in states),
    )
