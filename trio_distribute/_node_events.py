"""The node's one internal event path.

A node's services hear about each other's news here and nowhere else: the
transport publishes peers coming up, going down and telling where they
listen; the process table publishes processes ending; membership publishes
member changes. The bus is created before anything else, so every service
is built with it and subscribes while it is built: no service holds a hook
list, and none is wired to another after construction.

Handlers run synchronously, in the order they subscribed, inside the
publisher's own step. That order is the node's: monitors fire before links,
links before calls, and the public :class:`~trio_distribute.NodeDown`
event comes last, as in Erlang. A handler must not block; one that needs
to do I/O starts a task. An exception in a handler propagates to the
publisher, as a bug should.

This is internal plumbing. Users see node events as channels
(:meth:`Node.monitor_nodes`, :meth:`Membership.events`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._ids import Pid

if TYPE_CHECKING:
    from ._proto.swim import MemberChange
    from .monitor import ExitReason

__all__ = [
    "MembersChanged",
    "NodeEventBus",
    "PeerAddress",
    "PeerDown",
    "PeerUp",
    "ProcessExited",
]


@attrs.frozen(slots=True)
class PeerUp:
    """A connection to ``name`` is up (after the handshake)."""

    name: str


@attrs.frozen(slots=True)
class PeerDown:
    """The connection to ``name`` is gone, for ``reason``."""

    name: str
    reason: str


@attrs.frozen(slots=True)
class PeerAddress:
    """``name`` told us the address it listens on."""

    name: str


@attrs.frozen(slots=True)
class ProcessExited:
    """A local process ended with ``reason``."""

    pid: Pid
    reason: ExitReason


@attrs.frozen(slots=True)
class MembersChanged:
    """A member's status changed (``change``), or a member was removed
    (``change`` is ``None``)."""

    change: MemberChange | None


NodeEvent = PeerUp | PeerDown | PeerAddress | ProcessExited | MembersChanged
Event = TypeVar("Event", PeerUp, PeerDown, PeerAddress, ProcessExited, MembersChanged)


class NodeEventBus:
    """The handlers of one node's internal events, by event type."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind.__name__}: {len(hs)}" for kind, hs in self._handlers.items())
        return f"<NodeEventBus {counts}>"

    def subscribe(self, kind: type[Event], handler: Callable[[Event], None]) -> None:
        """Call ``handler`` with every ``kind`` event from now on, after the
        handlers that subscribed before it."""
        self._handlers.setdefault(kind, []).append(handler)

    def publish(
        self, event: PeerUp | PeerDown | PeerAddress | ProcessExited | MembersChanged
    ) -> None:
        """Hand ``event`` to each of its handlers in turn."""
        for handler in self._handlers.get(type(event), ()):
            handler(event)
