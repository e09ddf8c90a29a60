"""The exception hierarchy.

Every error a user can hit is one of these, with a message that says what
went wrong. They share the base :class:`DistributionError` so an application
can catch "anything this library raised" in one place.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConnectError",
    "DecodeError",
    "DistributionError",
    "EncodeError",
    "HandshakeError",
    "MessageTooLargeError",
    "NameNotFoundError",
    "NameTakenError",
    "NodeDownError",
    "ProtocolError",
    "VersionMismatchError",
]


class DistributionError(Exception):
    """Base class of every exception raised by trio_distribute."""


class ProtocolError(DistributionError):
    """A peer sent bytes that break the wire protocol.

    Only the connection that carried them is closed; the node keeps serving
    everyone else.
    """


class DecodeError(ProtocolError):
    """A payload could not be decoded: bad CBOR, a refused tag, an unknown
    message tag or version, or a nesting/size limit was exceeded."""


class EncodeError(DistributionError, TypeError):
    """A value cannot travel: its type is not one the codec accepts."""


class MessageTooLargeError(DistributionError, ValueError):
    """An encoded message is larger than the configured ``max_message_size``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds max_message_size={limit}")
        self.size = size
        self.limit = limit


class ConnectError(DistributionError, ConnectionError):
    """A connection to another node could not be made (refused, timed out,
    unreachable, or rejected by the peer)."""


class HandshakeError(ConnectError):
    """The distribution handshake failed (malformed, out of order, timed out,
    or rejected by the peer)."""


class AuthenticationError(HandshakeError):
    """The peer does not share our cookie (checked in both directions)."""


class VersionMismatchError(HandshakeError):
    """The two nodes share no protocol version."""


class NodeDownError(DistributionError):
    """The node is not connected and cannot be reached, or went down while
    the operation was in progress."""

    def __init__(self, node: str, reason: str = "not connected") -> None:
        super().__init__(f"node {node!r} is down: {reason}")
        self.node = node
        self.reason = reason


class NameNotFoundError(DistributionError, LookupError):
    """No process is registered under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no process is registered as {name!r}")
        self.name = name


class NameTakenError(DistributionError):
    """The name is already registered (or the pid already has a name)."""

    def __init__(self, name: str, detail: str = "") -> None:
        text = f"the name {name!r} is already registered"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.name = name
