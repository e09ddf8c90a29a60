"""The distribution handshake as a sans-IO state machine.

Two nodes that connect must agree on a protocol version, learn each other's
name and *creation* (which run of the node this is), and prove to each other
that they know the shared cookie, without the cookie ever crossing the wire.
This module does exactly that and nothing else: it turns received bytes into
events and queues the bytes to send, in the style of h11 and wsproto. The
async driver owns the socket, the deadline and the decision whether to keep
the connection (simultaneous connects, replacing a stale connection).

Wire sequence (every message is a CBOR map inside one frame from
:mod:`.frames`, capped at :data:`~.frames.MAX_PREAUTH_FRAME` bytes)::

    initiator                                           acceptor
    hello {versions, name, creation, nonce}   ----->
                  <-----   challenge {version, name, creation, nonce}
                           (or reject {reason, detail})
    proof {proof}                              ----->
                                                        verifies the proof,
                                                        emits PeerAuthenticated
                                                        and waits for the driver
                  <-----   ack {proof}   (accept())
                           or reject {reason, detail}   (reject())

    proof = HMAC-SHA256(handshake_key, label + transcript)
    handshake_key = derived from the cookie with scrypt (trio_distribute._cookie)
    transcript = CBOR [initiator_name, acceptor_name, initiator_creation,
                       acceptor_creation, initiator_nonce, acceptor_nonce,
                       version]

The cookie itself never keys the HMAC: an observer of one handshake could
otherwise test cookie guesses offline at the speed of SHA-256; with scrypt
in front, each guess costs 16 MiB and tens of milliseconds. (The keys
changed with protocol version 2; version 1 keyed the HMAC with the cookie.)

The label is ``b"trio_distribute-handshake initiator"`` for the initiator's
proof and ``b"trio_distribute-handshake acceptor"`` for the acceptor's. The
initiator proves first, so an acceptor never computes anything for a peer
that has not shown it knows the cookie.

Everything received is untrusted: no input can make :meth:`HandshakeMachine.
receive_data` raise; a malformed, oversized, out-of-order or late message
produces exactly one :class:`HandshakeFailed` event (a ``reject`` is sent when
the peer is waiting for us to speak), after which the machine ignores all
input.

Differences from the first sketch of this API, and why:

* :meth:`HandshakeMachine.accept` and :meth:`HandshakeMachine.reject` return
  the event they cause (``[HandshakeCompleted]`` / ``[HandshakeFailed]``), so
  the driver handles every outcome the same way it handles
  :meth:`~HandshakeMachine.receive_data`'s result. If the connection already
  failed while the driver was deciding (the peer hung up), they return ``[]``:
  that failure was already reported.
* Calling :meth:`~HandshakeMachine.receive_data` after the handshake
  completed raises :class:`LocalProtocolError`: those bytes belong to the
  established phase's decoder, and silently swallowing them would lose data.
* A peer may answer any of our messages with ``reject``, not only the
  acceptor: the initiator rejects a challenge from the wrong node
  (``"unexpected peer"``) or a malformed one, so the acceptor can log why.
* ``hello`` and ``reject`` may carry unknown extra keys (a newer peer may
  add fields before the version is agreed); the other messages belong to the
  agreed version and must have exactly their keys.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Final, TypeAlias

import attrs
import cbor2

from trio_distribute._ids import validate_cookie, validate_node_name
from trio_distribute._proto._cbor import TagTable, decode_one
from trio_distribute._proto.cookie_keys import cookie_keys
from trio_distribute._proto.frames import MAX_PREAUTH_FRAME, FrameDecoder, frame
from trio_distribute.errors import (
    AuthenticationError,
    DecodeError,
    HandshakeError,
    ProtocolError,
    VersionMismatchError,
)

__all__ = [
    "MAX_CREATION",
    "MAX_VERSIONS",
    "NONCE_SIZE",
    "PROOF_SIZE",
    "HandshakeCompleted",
    "HandshakeEvent",
    "HandshakeFailed",
    "HandshakeMachine",
    "HandshakeState",
    "LocalProtocolError",
    "PeerAuthenticated",
    "Role",
]

NONCE_SIZE: Final = 32
"""Bytes of fresh randomness each side contributes to the transcript."""

PROOF_SIZE: Final = 32
"""Bytes in an HMAC-SHA256 proof."""

MAX_VERSIONS: Final = 16
"""Most protocol versions a hello may offer (bounds the work per hello)."""

MAX_CREATION: Final = 2**63
"""Creations are non-negative ints below this (they fit an int64)."""

MAX_REASON_LENGTH: Final = 64
"""Longest reject reason code, in characters."""

MAX_DETAIL_BYTES: Final = 256
"""Our reject details are cut to this many UTF-8 bytes so the frame stays
under the pre-authentication limit whatever the driver passes."""

_INITIATOR_LABEL: Final = b"trio_distribute-handshake initiator"
_ACCEPTOR_LABEL: Final = b"trio_distribute-handshake acceptor"

_CBOR_MAX_DEPTH: Final = 8

# Every tag is refused (a handshake message is plain data), by the kernel's
# restricted decoder: see trio_distribute._proto._cbor.
_NO_TAGS: Final = TagTable(context="the handshake")


class LocalProtocolError(RuntimeError):
    """The driver used the machine wrongly (a bug in our code, never the peer's)."""


class Role(enum.Enum):
    """Which end of the connection we are."""

    INITIATOR = "initiator"
    """We dialled out; we send ``hello`` and prove first."""
    ACCEPTOR = "acceptor"
    """We accepted the connection; we answer ``hello`` with a ``challenge``."""


class HandshakeState(enum.Enum):
    """Where the handshake stands; named after what the machine waits for."""

    IDLE = enum.auto()
    """Initiator only: created, :meth:`HandshakeMachine.initiate` not called yet."""
    AWAITING_HELLO = enum.auto()
    """Acceptor: waiting for the initiator's ``hello``."""
    AWAITING_CHALLENGE = enum.auto()
    """Initiator: ``hello`` sent, waiting for ``challenge``."""
    AWAITING_PROOF = enum.auto()
    """Acceptor: ``challenge`` sent, waiting for the initiator's proof."""
    AWAITING_DECISION = enum.auto()
    """Acceptor: the peer is authenticated; waiting for ``accept()``/``reject()``."""
    AWAITING_ACK = enum.auto()
    """Initiator: proof sent, waiting for the acceptor's ``ack``."""
    ESTABLISHED = enum.auto()
    """Both sides proved the cookie; the connection carries normal frames now."""
    FAILED = enum.auto()
    """The handshake failed; all further input is ignored."""


@attrs.frozen
class PeerAuthenticated:
    """Acceptor only: the initiator proved the cookie.

    The driver now decides whether to keep this connection (it may already
    have one to this node, or be dialling it at the same moment) and calls
    :meth:`HandshakeMachine.accept` or :meth:`HandshakeMachine.reject`.
    """

    name: str
    creation: int
    version: int


@attrs.frozen
class HandshakeCompleted:
    """Both sides proved the cookie; normal traffic may flow."""

    name: str
    creation: int
    version: int


@attrs.frozen
class HandshakeFailed:
    """The handshake is over without a connection.

    ``reason`` is a short code: ``"authentication"``, ``"version"``,
    ``"protocol"``, ``"closed"``, ``"unexpected peer"``, or the reason the
    peer (or our own driver, via :meth:`HandshakeMachine.reject`) gave, such
    as ``"simultaneous"``. ``error`` is the exception the driver should raise
    or log.
    """

    error: HandshakeError
    reason: str


HandshakeEvent: TypeAlias = PeerAuthenticated | HandshakeCompleted | HandshakeFailed


class _Violation(Exception):
    """Internal: the peer broke the handshake; unwinds to :meth:`receive_data`."""

    def __init__(
        self, message: str, reason: str = "protocol", error: type[HandshakeError] = HandshakeError
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.error = error(message)


def _default_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def _short(value: object, limit: int = 60) -> str:
    """A bounded repr of peer-supplied data, safe to put in an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(payload: bytes) -> dict[str, object]:
    """Decode one handshake message, refusing anything but plain data."""
    try:
        value = decode_one(payload, tags=_NO_TAGS, max_depth=_CBOR_MAX_DEPTH)
    except DecodeError as exc:
        raise _Violation(f"undecodable handshake message: {exc}") from None
    if not isinstance(value, dict):
        raise _Violation(f"a handshake message must be a CBOR map, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _Violation(f"handshake message keys must be text, got {_short(key)}")
    return value


def _encode(message: dict[str, object]) -> bytes:
    payload = cbor2.dumps(message)
    # Every field we send is validated and bounded, so this cannot fire; it
    # guards against a future field silently breaking the peer's limit.
    assert len(payload) <= MAX_PREAUTH_FRAME, "handshake message over the pre-auth limit"
    return frame(payload)


def _check_keys(message: dict[str, object], required: frozenset[str], *, exact: bool) -> None:
    missing = required - message.keys()
    if missing:
        raise _Violation(f"{message['m']!r} message lacks {', '.join(sorted(missing))}")
    if exact and len(message) != len(required):
        extra = sorted(message.keys() - required)
        raise _Violation(f"{message['m']!r} message has unexpected keys {_short(extra)}")


def _get_str(message: dict[str, object], key: str) -> str:
    value = message[key]
    if not isinstance(value, str):
        raise _Violation(f"{key!r} must be text, got {type(value).__name__}")
    return value


def _get_name(message: dict[str, object], key: str) -> str:
    try:
        return validate_node_name(message[key])
    except ValueError as exc:
        # The message quotes the name, which the peer chose: keep it bounded.
        text = str(exc)
        text = text if len(text) <= 300 else text[:297] + "..."
        raise _Violation(f"invalid node name: {text}") from None


def _get_creation(message: dict[str, object]) -> int:
    value = message["creation"]
    if type(value) is not int or not 0 <= value < MAX_CREATION:
        raise _Violation(f"'creation' must be an int in [0, 2**63), got {_short(value)}")
    return value


def _get_bytes(message: dict[str, object], key: str, size: int) -> bytes:
    value = message[key]
    if type(value) is not bytes or len(value) != size:
        raise _Violation(f"{key!r} must be exactly {size} bytes, got {_short(value)}")
    return value


def _get_versions(message: dict[str, object]) -> list[int]:
    value = message["versions"]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_VERSIONS:
        raise _Violation(f"'versions' must be a list of 1 to {MAX_VERSIONS} ints")
    for item in value:
        if type(item) is not int:
            raise _Violation(f"'versions' must hold ints only, got {_short(item)}")
    return value


def _valid_reason(reason: object) -> bool:
    """Reasons are short codes the driver matches on, so keep them plain."""
    return (
        isinstance(reason, str)
        and 1 <= len(reason) <= MAX_REASON_LENGTH
        and reason.isascii()
        and reason.isprintable()
    )


def _error_for_reason(reason: str) -> type[HandshakeError]:
    if reason == "authentication":
        return AuthenticationError
    if reason == "version":
        return VersionMismatchError
    return HandshakeError


_HELLO_KEYS: Final = frozenset({"m", "versions", "name", "creation", "nonce"})
_CHALLENGE_KEYS: Final = frozenset({"m", "version", "name", "creation", "nonce"})
_PROOF_KEYS: Final = frozenset({"m", "proof"})
_REJECT_KEYS: Final = frozenset({"m", "reason"})

# What each state waits for. A "reject" is accepted wherever a message is.
_EXPECTED: Final = {
    HandshakeState.AWAITING_HELLO: "hello",
    HandshakeState.AWAITING_CHALLENGE: "challenge",
    HandshakeState.AWAITING_PROOF: "proof",
    HandshakeState.AWAITING_ACK: "ack",
}

# States in which the peer is waiting for us to speak, so a failure is worth
# explaining with a reject. The initiator waiting for "ack" sends nothing: a
# well-behaved acceptor is established by then and would read a reject as a
# garbage frame.
_PEER_WAITS_FOR_US: Final = frozenset(
    {
        HandshakeState.AWAITING_HELLO,
        HandshakeState.AWAITING_CHALLENGE,
        HandshakeState.AWAITING_PROOF,
        HandshakeState.AWAITING_DECISION,
    }
)


class HandshakeMachine:
    """One side of the handshake on one connection.

    Drive it like h11: :meth:`initiate` (initiator), then repeatedly write
    :meth:`data_to_send` to the socket and pass what the socket returns to
    :meth:`receive_data` (``b""`` at end of file), acting on the events. On
    :class:`PeerAuthenticated` (acceptor) call :meth:`accept` or
    :meth:`reject`. After :class:`HandshakeCompleted`, flush
    :meth:`data_to_send` and hand :meth:`leftover` to the established phase.

    The machine enforces no deadline; the driver wraps it in a cancel scope.
    """

    def __init__(
        self,
        *,
        role: Role,
        local_name: str,
        creation: int,
        cookie: bytes,
        versions: tuple[int, ...] = (
            2,
        ),  # the current protocol version (transport.PROTOCOL_VERSIONS)
        expected_peer: str | None = None,
        nonce_factory: Callable[[], bytes] = _default_nonce,
    ) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be a Role, got {role!r}")
        validate_node_name(local_name)
        if type(creation) is not int or not 0 <= creation < MAX_CREATION:
            raise ValueError(f"creation must be an int in [0, 2**63), got {creation!r}")
        if (
            not isinstance(versions, tuple)
            or not 1 <= len(versions) <= MAX_VERSIONS
            or any(type(v) is not int or not 1 <= v < 2**32 for v in versions)
            or len(set(versions)) != len(versions)
        ):
            raise ValueError(
                f"versions must be a tuple of 1 to {MAX_VERSIONS} distinct ints "
                f"in [1, 2**32), got {versions!r}"
            )
        if expected_peer is not None:
            validate_node_name(expected_peer)
            if role is not Role.INITIATOR:
                raise ValueError("expected_peer only applies to the initiator")
        nonce = nonce_factory()
        if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce_factory must return exactly {NONCE_SIZE} bytes")

        self._role = role
        self._local_name = local_name
        self._creation = creation
        self._key = cookie_keys(validate_cookie(cookie)).handshake
        self._versions = versions
        self._expected_peer = expected_peer
        self._nonce = nonce

        self._state = (
            HandshakeState.IDLE if role is Role.INITIATOR else HandshakeState.AWAITING_HELLO
        )
        self._decoder = FrameDecoder(MAX_PREAUTH_FRAME)
        self._outbox = bytearray()
        # Bytes that arrive while the acceptor's driver decides; not parsed,
        # they go to the established phase with the rest of the leftover.
        self._held = bytearray()
        self._leftover = b""
        self._authenticated = False

        self._peer_name: str | None = None
        self._peer_creation: int | None = None
        self._peer_nonce: bytes | None = None
        self._version: int | None = None

    def __repr__(self) -> str:
        peer = self._peer_name or "?"
        return (
            f"<HandshakeMachine {self._role.value} {self._local_name} "
            f"peer={peer} state={self._state.name}>"
        )

    # -- introspection ----------------------------------------------------

    @property
    def role(self) -> Role:
        """Which end we are."""
        return self._role

    @property
    def state(self) -> HandshakeState:
        """Where the handshake stands."""
        return self._state

    @property
    def peer_name(self) -> str | None:
        """The name the peer *claims*, once received.

        Only trustworthy after :class:`PeerAuthenticated` (acceptor) or
        :class:`HandshakeCompleted` (initiator).
        """
        return self._peer_name

    @property
    def peer_creation(self) -> int | None:
        """The peer's creation, once received (same caveat as :attr:`peer_name`)."""
        return self._peer_creation

    @property
    def version(self) -> int | None:
        """The agreed protocol version, once known."""
        return self._version

    # -- driver API -------------------------------------------------------

    def initiate(self) -> None:
        """Queue the ``hello``. Initiator only, once, before anything else."""
        if self._role is not Role.INITIATOR or self._state is not HandshakeState.IDLE:
            raise LocalProtocolError(
                f"initiate() is for a fresh initiator; this is the {self._role.value} "
                f"in state {self._state.name}"
            )
        self._send(
            {
                "m": "hello",
                "versions": list(self._versions),
                "name": self._local_name,
                "creation": self._creation,
                "nonce": self._nonce,
            }
        )
        self._state = HandshakeState.AWAITING_CHALLENGE

    def receive_data(self, data: bytes) -> list[HandshakeEvent]:
        """Process bytes from the peer (``b""`` means end of file).

        Returns at most one event. Never raises because of what ``data``
        contains; raises :class:`LocalProtocolError` only if called after
        the handshake completed.
        """
        state = self._state
        if state is HandshakeState.FAILED:
            return []
        if state is HandshakeState.ESTABLISHED:
            raise LocalProtocolError(
                "the handshake is complete: feed further bytes to the established-phase "
                "decoder (after leftover())"
            )
        if not data:
            where = state.name.lower().replace("_", " ")
            return [
                self._fail(
                    HandshakeError(
                        f"the peer closed the connection during the handshake ({where})"
                    ),
                    "closed",
                    reply=False,
                )
            ]
        try:
            if state is HandshakeState.AWAITING_DECISION:
                # The initiator must wait for "ack" before it sends anything.
                # Keep what arrives anyway (bounded) for the established
                # phase to judge, but do not parse it: the driver is about
                # to decide on the connection.
                self._held += data
                pending = len(self._held) + self._decoder.buffered
                if pending > MAX_PREAUTH_FRAME:
                    raise _Violation(f"the peer sent {pending} bytes before the handshake ended")
                return []
            payload = self._decoder.next_frame(data)
            while payload is not None:
                event = self._dispatch(_decode(payload))
                if event is not None:
                    return [event]
                payload = self._decoder.next_frame()
            return []
        except ProtocolError as exc:
            return [self._fail(HandshakeError(str(exc)), "protocol", reply=True)]
        except _Violation as violation:
            return [self._fail(violation.error, violation.reason, reply=True)]

    def accept(self) -> list[HandshakeEvent]:
        """Keep the connection: send ``ack`` with our proof.

        Acceptor only, after :class:`PeerAuthenticated`. Returns
        ``[HandshakeCompleted]``, or ``[]`` if the connection failed while
        the driver was deciding.
        """
        if self._check_decision("accept"):
            return []
        self._send({"m": "ack", "proof": self._proof(_ACCEPTOR_LABEL)})
        self._state = HandshakeState.ESTABLISHED
        self._leftover = self._decoder.take_buffered() + bytes(self._held)
        self._held.clear()
        return [HandshakeCompleted(*self._peer_identity())]

    def reject(self, reason: str, detail: str = "") -> list[HandshakeEvent]:
        """Refuse the authenticated peer, telling it ``reason``.

        Acceptor only, after :class:`PeerAuthenticated`. ``reason`` is a
        short code the initiator's driver can act on (``"simultaneous"``
        when the other connection of a simultaneous connect wins). Returns
        ``[HandshakeFailed]``, or ``[]`` if the connection had already failed.
        """
        if not _valid_reason(reason):
            raise ValueError(
                f"reason must be 1 to {MAX_REASON_LENGTH} printable ASCII characters, "
                f"got {reason!r}"
            )
        if not isinstance(detail, str):
            raise TypeError(f"detail must be a str, got {type(detail).__name__}")
        if self._check_decision("reject"):
            return []
        message = f"rejected {self._peer_name!r}: {reason}"
        if detail:
            message += f" ({detail})"
        return [self._fail(HandshakeError(message), reason, reply=True, detail=detail)]

    def data_to_send(self) -> bytes:
        """Return and forget every byte queued for the peer."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def leftover(self) -> bytes:
        """Bytes received after the handshake's last frame.

        The peer may pipeline normal frames right behind ``ack``; once the
        machine is :attr:`~HandshakeState.ESTABLISHED` the driver feeds these
        to the established-phase decoder. Empty in every other state.
        """
        return self._leftover

    # -- internals --------------------------------------------------------

    def _check_decision(self, what: str) -> bool:
        """Guard accept()/reject(); True means "already failed, do nothing"."""
        if self._role is Role.ACCEPTOR:
            if self._state is HandshakeState.AWAITING_DECISION:
                return False
            if self._state is HandshakeState.FAILED and self._authenticated:
                return True
        raise LocalProtocolError(
            f"{what}() is for the acceptor after PeerAuthenticated; this is the "
            f"{self._role.value} in state {self._state.name}"
        )

    def _send(self, message: dict[str, object]) -> None:
        self._outbox += _encode(message)

    def _fail(
        self, error: HandshakeError, reason: str, *, reply: bool, detail: str | None = None
    ) -> HandshakeFailed:
        """Enter FAILED; if ``reply`` and the peer is waiting for us, tell it why.

        ``detail`` (default: the error's message) is cut to
        :data:`MAX_DETAIL_BYTES` so the reject always fits a pre-auth frame.
        """
        if reply and self._state in _PEER_WAITS_FOR_US:
            text = str(error) if detail is None else detail
            text = text.encode("utf-8", "replace")[:MAX_DETAIL_BYTES].decode("utf-8", "ignore")
            self._send({"m": "reject", "reason": reason, "detail": text})
        self._state = HandshakeState.FAILED
        # Free what the peer sent; nothing will read it again.
        self._decoder = FrameDecoder(MAX_PREAUTH_FRAME)
        self._held.clear()
        return HandshakeFailed(error, reason)

    def _dispatch(self, message: dict[str, object]) -> HandshakeEvent | None:
        kind = message.get("m")
        if not isinstance(kind, str):
            raise _Violation(f"handshake message type 'm' must be text, got {_short(kind)}")
        expected = _EXPECTED.get(self._state)
        if expected is None:
            raise _Violation(f"unexpected {_short(kind)} message in state {self._state.name}")
        if kind == "reject":
            return self._on_reject(message)
        if kind != expected:
            raise _Violation(f"expected a {expected!r} message, got {_short(kind)}")
        if kind == "hello":
            self._on_hello(message)
            return None
        if kind == "challenge":
            self._on_challenge(message)
            return None
        if kind == "proof":
            return self._on_proof(message)
        return self._on_ack(message)

    def _on_reject(self, message: dict[str, object]) -> HandshakeFailed:
        _check_keys(message, _REJECT_KEYS, exact=False)
        reason = _get_str(message, "reason")
        if not _valid_reason(reason):
            raise _Violation(
                f"a reject reason must be 1 to {MAX_REASON_LENGTH} printable ASCII "
                f"characters, got {_short(reason)}"
            )
        detail = _get_str(message, "detail") if "detail" in message else ""
        peer = self._peer_name or "the peer"
        text = f"{peer} rejected the handshake: {reason}"
        if detail:
            text += f" ({_short(detail, limit=200)})"
        # Never answer a reject with a reject.
        return self._fail(_error_for_reason(reason)(text), reason, reply=False)

    def _on_hello(self, message: dict[str, object]) -> None:
        # Extra keys are allowed: a newer initiator may add fields to the
        # message that negotiates the version.
        _check_keys(message, _HELLO_KEYS, exact=False)
        versions = _get_versions(message)
        name = _get_name(message, "name")
        creation = _get_creation(message)
        nonce = _get_bytes(message, "nonce", NONCE_SIZE)
        if name == self._local_name:
            raise _Violation(f"the peer claims our own name {name!r}")
        if nonce == self._nonce:
            raise _Violation("the peer's nonce equals ours (reflected)")
        self._peer_name = name
        self._peer_creation = creation
        self._peer_nonce = nonce
        common = set(self._versions).intersection(versions)
        if not common:
            raise _Violation(
                f"no common protocol version: we speak {sorted(self._versions)}, "
                f"{name} speaks {sorted(versions)[:MAX_VERSIONS]}",
                reason="version",
                error=VersionMismatchError,
            )
        self._version = max(common)
        self._send(
            {
                "m": "challenge",
                "version": self._version,
                "name": self._local_name,
                "creation": self._creation,
                "nonce": self._nonce,
            }
        )
        self._state = HandshakeState.AWAITING_PROOF

    def _on_challenge(self, message: dict[str, object]) -> None:
        _check_keys(message, _CHALLENGE_KEYS, exact=True)
        version = message["version"]
        if type(version) is not int or version not in self._versions:
            raise _Violation(
                f"the acceptor chose version {_short(version)}, which we did not offer"
            )
        name = _get_name(message, "name")
        creation = _get_creation(message)
        nonce = _get_bytes(message, "nonce", NONCE_SIZE)
        if self._expected_peer is not None and name != self._expected_peer:
            raise _Violation(
                f"dialled {self._expected_peer!r} but reached {name!r}",
                reason="unexpected peer",
            )
        if name == self._local_name:
            raise _Violation(f"the peer claims our own name {name!r}")
        if nonce == self._nonce:
            raise _Violation("the peer's nonce equals ours (reflected)")
        self._peer_name = name
        self._peer_creation = creation
        self._peer_nonce = nonce
        self._version = version
        self._send({"m": "proof", "proof": self._proof(_INITIATOR_LABEL)})
        self._state = HandshakeState.AWAITING_ACK

    def _on_proof(self, message: dict[str, object]) -> PeerAuthenticated:
        _check_keys(message, _PROOF_KEYS, exact=True)
        proof = _get_bytes(message, "proof", PROOF_SIZE)
        if not hmac.compare_digest(proof, self._proof(_INITIATOR_LABEL)):
            raise _Violation(
                f"{self._peer_name} did not prove the cookie",
                reason="authentication",
                error=AuthenticationError,
            )
        self._authenticated = True
        self._state = HandshakeState.AWAITING_DECISION
        return PeerAuthenticated(*self._peer_identity())

    def _on_ack(self, message: dict[str, object]) -> HandshakeCompleted:
        _check_keys(message, _PROOF_KEYS, exact=True)
        proof = _get_bytes(message, "proof", PROOF_SIZE)
        if not hmac.compare_digest(proof, self._proof(_ACCEPTOR_LABEL)):
            raise _Violation(
                "peer did not prove the cookie", reason="authentication", error=AuthenticationError
            )
        self._state = HandshakeState.ESTABLISHED
        # Everything after "ack" is the established phase's, unparsed: it is
        # judged by that phase's frame limit, not the pre-auth one.
        self._leftover = self._decoder.take_buffered()
        return HandshakeCompleted(*self._peer_identity())

    def _peer_identity(self) -> tuple[str, int, int]:
        """Name, creation and version of the peer; known once hello/challenge passed."""
        name, creation, version = self._peer_name, self._peer_creation, self._version
        if name is None or creation is None or version is None:  # pragma: no cover
            raise LocalProtocolError("the peer's identity is not known yet")
        return name, creation, version

    def _proof(self, label: bytes) -> bytes:
        """HMAC-SHA256 of ``label + transcript`` under the handshake key.

        Why the transcript binds so much: a proof is only useful to an
        attacker who can present it somewhere else, and each bound item
        closes one such place.

        * Both nonces: each side's fresh nonce makes the proof it receives
          unique to this connection, so recorded proofs cannot be replayed.
        * The role label: an attacker who dials us while we dial it (or who
          relays our own hello back to us) could otherwise bounce our proof
          off our other half. With the label, an acceptor's proof never
          verifies as an initiator's, and vice versa.
        * Both names: relaying our hello to another connection of ours with
          the roles swapped still names the nodes in a different order, so
          the proof does not verify, and a proof made for a connection to
          node X cannot be presented by someone claiming to be node Y.
        * Creations and version: the peer cannot splice in a different run
          of a node or downgrade the agreed version without detection.
        """
        name, creation, version = self._peer_identity()
        nonce = self._peer_nonce
        if nonce is None:  # pragma: no cover
            raise LocalProtocolError("the peer's nonce is not known yet")
        ours = (self._local_name, self._creation, self._nonce)
        theirs = (name, creation, nonce)
        initiator, acceptor = (ours, theirs) if self._role is Role.INITIATOR else (theirs, ours)
        transcript = cbor2.dumps(
            [
                initiator[0],
                acceptor[0],
                initiator[1],
                acceptor[1],
                initiator[2],
                acceptor[2],
                version,
            ]
        )
        return hmac.new(self._key, label + transcript, hashlib.sha256).digest()
