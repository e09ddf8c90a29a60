"""The exception hierarchy.

Every error a user can hit is one of these, with a message that says what
went wrong. They share the base :class:`DistributionError` so an application
can catch "anything this library raised" in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .monitor import ExitReason

__all__ = [
    "AlreadyRepliedError",
    "AuthenticationError",
    "BadRpcError",
    "CallTimeoutError",
    "ConnectError",
    "DecodeError",
    "DistributionError",
    "EncodeError",
    "HandshakeError",
    "MessageTooLargeError",
    "NameNotFoundError",
    "NameTakenError",
    "NodeDownError",
    "ProcessDownError",
    "ProcessExitError",
    "ProtocolError",
    "RemoteError",
    "RpcError",
    "RpcTimeoutError",
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


class RpcError(DistributionError):
    """Base class of the errors an RPC call raises on top of ``NodeDownError``."""


class RpcTimeoutError(RpcError, TimeoutError):
    """No answer within the call's timeout; the remote task was told to stop."""

    def __init__(self, node: str, function: str, timeout: float) -> None:
        super().__init__(f"rpc {function!r} on {node!r} timed out after {timeout}s")
        self.node = node
        self.function = function
        self.timeout = timeout


class BadRpcError(RpcError):
    """The call could not be made: no such exported function on that node,
    or arguments that do not fit its signature."""

    def __init__(self, node: str, function: str, reason: str) -> None:
        super().__init__(f"bad rpc {function!r} on {node!r}: {reason}")
        self.node = node
        self.function = function
        self.reason = reason


class RemoteError(RpcError):
    """The remote function raised.

    Attributes:
        node: where it ran.
        function: the exported name that was called.
        type_name: the remote exception's qualified type name.
        message: ``str()`` of the remote exception.
        remote_traceback: the remote traceback, formatted.
    """

    def __init__(
        self, node: str, function: str, type_name: str, message: str, remote_traceback: str
    ) -> None:
        super().__init__(f"rpc {function!r} on {node!r} raised {type_name}: {message}")
        self.node = node
        self.function = function
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


class CallTimeoutError(DistributionError, TimeoutError):
    """``Process.call`` got no reply within its timeout. A reply that comes
    later is dropped (counted as ``late_reply``), never queued."""

    def __init__(self, dest: object, timeout: float | None) -> None:
        super().__init__(f"call to {dest} got no reply within {timeout}s")
        self.dest = dest
        self.timeout = timeout


class ProcessDownError(DistributionError):
    """The process a ``Process.call`` was waiting on ended, was not there
    (``noproc``), or its node went down (``noconnection``) before replying.

    Attributes:
        reason: the :class:`~trio_distribute.ExitReason` its monitor reported.
        dest: what was called.
    """

    def __init__(self, reason: ExitReason, dest: object = None) -> None:
        text = f"call to {dest} failed: the process is down ({reason})"
        super().__init__(text if dest is not None else f"the process is down ({reason})")
        self.reason = reason
        self.dest = dest


class AlreadyRepliedError(DistributionError, ValueError):
    """``Process.reply`` was called a second time for the same call."""

    def __init__(self, ref: object) -> None:
        super().__init__(f"the call {ref} was already replied to")
        self.ref = ref


class ProcessExitError(DistributionError):
    """An exit signal ended the process of an ``open_process`` block (a linked
    process ended abnormally, or ``Node.exit``): the block raises this as it
    ends, so the code after it does not run as if the body had finished.

    Attributes:
        pid: the process that was ended.
        reason: its :class:`~trio_distribute.ExitReason` (kind ``exit`` or ``killed``).
    """

    def __init__(self, pid: object, reason: ExitReason) -> None:
        super().__init__(f"process {pid} was ended by an exit signal: {reason}")
        self.pid = pid
        self.reason = reason
