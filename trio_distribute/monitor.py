"""Events about nodes and processes going up and down, and exit reasons."""

from __future__ import annotations

from typing import Final

import attrs

from ._ids import Pid, Ref
from .codec import message

__all__ = [
    "ExitKind",
    "ExitReason",
    "NodeDown",
    "NodeDownReason",
    "NodeEvent",
    "NodeUp",
    "ProcessDown",
]


class NodeDownReason:
    """Why a connection to a node ended (the ``reason`` of :class:`NodeDown`).

    Plain strings, as in Erlang's ``nodedown_reason``, so they log and
    compare simply.
    """

    #: One side called :meth:`Node.disconnect`; both sides see this. The
    #: disconnect sticks: neither side redials the other on its own.
    DISCONNECT: Final = "disconnect"
    #: The connection closed without a goodbye (the peer crashed, was
    #: killed, or the network failed).
    CONNECTION_CLOSED: Final = "connection_closed"
    #: Nothing arrived for ``tick_timeout`` seconds.
    TICK_TIMEOUT: Final = "tick_timeout"
    #: The peer stopped (left its ``open_node`` block), or we did. Always
    #: this for a graceful stop: the goodbye is acted on as it is read,
    #: before the socket's end is.
    SHUTDOWN: Final = "shutdown"
    #: Membership (SWIM) declared the peer dead; both sides see this.
    MEMBER_DEAD: Final = "member_dead"
    #: A member left the cluster (``membership.leave``): the peer, or, as
    #: seen on the node that left, this node.
    MEMBER_LEFT: Final = "member_left"
    #: The peer broke the wire protocol after authenticating.
    PROTOCOL_ERROR: Final = "protocol_error"
    #: The peer restarted (new creation) and its new connection replaced
    #: the old one.
    REPLACED: Final = "replaced"


@attrs.frozen
class NodeUp:
    """A connection to ``node`` was authenticated and is ready."""

    node: str


@attrs.frozen
class NodeDown:
    """The connection to ``node`` ended for ``reason`` (see :class:`NodeDownReason`)."""

    node: str
    reason: str


NodeEvent = NodeUp | NodeDown


class ExitKind:
    """Why a process ended (the ``kind`` of :class:`ExitReason`)."""

    #: It returned, or its ``open_process`` block ended without an error.
    NORMAL: Final = "normal"
    #: An exception escaped it (or its task was cancelled from outside);
    #: ``detail`` holds the type and message.
    EXCEPTION: Final = "exception"
    #: It was already dead, or never existed, when the monitor was set up
    #: (pids of an earlier run of a node included).
    NOPROC: Final = "noproc"
    #: The connection to its node was lost or could not be made; the
    #: process may still be alive.
    NOCONNECTION: Final = "noconnection"
    #: Its node stopped.
    SHUTDOWN: Final = "shutdown"
    #: An exit signal ended it (a linked process ended abnormally, or
    #: ``Node.exit``); ``detail`` names the signal's origin and reason.
    EXIT: Final = "exit"
    #: ``Node.exit(pid, "kill")`` ended it: the one signal that cannot be
    #: trapped.
    KILLED: Final = "killed"


_EXIT_KINDS = frozenset(
    {
        ExitKind.NORMAL,
        ExitKind.EXCEPTION,
        ExitKind.NOPROC,
        ExitKind.NOCONNECTION,
        ExitKind.SHUTDOWN,
        ExitKind.EXIT,
        ExitKind.KILLED,
    }
)


def _exit_kind(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _EXIT_KINDS:
        raise ValueError(f"exit kind must be one of {sorted(_EXIT_KINDS)}, got {value!r}")


# Registered so that an ExitSignal (which carries one) can be forwarded.
@message("trio_distribute.ExitReason", version=1)
@attrs.frozen
class ExitReason:
    """Why a process ended: a ``kind`` (see :class:`ExitKind`) and a detail."""

    kind: str = attrs.field(validator=_exit_kind)
    detail: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    @classmethod
    def from_exception(cls, exc: BaseException) -> ExitReason:
        """The reason for a process that ``exc`` escaped from."""
        return cls(ExitKind.EXCEPTION, f"{type(exc).__name__}: {exc}")

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


@attrs.frozen
class ProcessDown:
    """The monitored process ``pid`` ended (or could not be watched).

    ``ref`` is the monitor reference returned by ``Process.monitor``, so a
    process can tell its monitors apart in its mailbox.
    """

    pid: Pid
    reason: ExitReason
    ref: Ref
