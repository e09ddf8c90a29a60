"""Telemetry: typed events for what a node drops and for what happens to it.

Every drop a node counts in ``statistics().drops`` is also published as one
event (:class:`Dropped`, or a subclass that says more for some causes), so
the counters and the events agree. Notable outcomes are published too:
outgoing connections that failed (:class:`ConnectFailed`), registry
conflicts, every RPC's outcome and latency (:class:`RpcCompleted`,
:class:`RpcTimedOut`), discovery results, and the membership
(``MemberUp`` ...) and election (``LeaderChanged``) events themselves.

Two ways to receive them, both without ever blocking the node:

* ``async with node.telemetry.subscribe() as events:`` a bounded channel
  (``buffer`` events, default :data:`DEFAULT_BUFFER`); a subscriber that
  falls that far behind loses the newer events, counted in
  ``statistics().drops["telemetry_overflow"]`` (the one drop that has no
  event of its own: it would land in the same full channel).
* ``node.telemetry.add_sink(fn)``: ``fn(event)`` is called synchronously for
  every event and must not block; an exception it raises is logged (at most
  once a second) and counted as ``telemetry_sink_failed``.

``node.telemetry.counts`` holds how many events of each type were published
since the node started, subscribers or not (the metrics export them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._ids import Pid
from ._ratelimit import LogLimiter

if TYPE_CHECKING:
    from .cluster.membership import Membership
    from .election.raft_lite import Election
    from .transport import Transport

__all__ = [
    "DEFAULT_BUFFER",
    "AuthenticationFailed",
    "ConnectFailed",
    "ConnectionRefused",
    "DiscoveryFailed",
    "DiscoveryJoined",
    "Dropped",
    "MailboxOverflow",
    "RegistryConflict",
    "RpcCompleted",
    "RpcTimedOut",
    "Telemetry",
]

logger = logging.getLogger("trio_distribute.telemetry")

#: Events a ``subscribe()`` channel holds before newer ones are dropped.
DEFAULT_BUFFER: Final = 1024

#: Drop causes of an incoming connection refused before its handshake.
_REFUSAL_CAUSES: Final = frozenset(
    {
        "handshake_refused_stopping",
        "handshake_refused_per_host",
        "handshake_refused_full",
        "handshake_evicted",
    }
)
_MAILBOX_CAUSES: Final = frozenset({"mailbox_full", "mailbox_bytes"})


@attrs.frozen
class Dropped:
    """Something was dropped and counted under ``cause`` in
    ``statistics().drops`` (one event per count)."""

    cause: str


@attrs.frozen
class AuthenticationFailed(Dropped):
    """An incoming connection from ``source`` failed the cookie check
    (cause ``auth_failed``)."""

    source: str | None = None


@attrs.frozen
class ConnectionRefused(Dropped):
    """An incoming connection from ``source`` was refused (or shed) before
    its handshake; ``cause`` says why (``handshake_refused_per_host``,
    ``handshake_refused_full``, ``handshake_evicted``,
    ``handshake_refused_stopping``)."""

    source: str | None = None


@attrs.frozen
class MailboxOverflow(Dropped):
    """A message to ``pid`` was dropped because its mailbox was full
    (cause ``mailbox_full``, or ``mailbox_bytes`` for the byte limit)."""

    pid: Pid | None = None


@attrs.frozen
class ConnectFailed:
    """This node could not connect to ``target``: ``reason`` says why
    (refused, unreachable, timed out)."""

    target: str
    reason: str


@attrs.frozen
class RegistryConflict:
    """Two processes held the global name ``name`` (partitions healed):
    ``winner`` kept it, ``loser`` was told with a ``NameConflict``."""

    name: str
    winner: Pid
    loser: Pid


@attrs.frozen
class RpcCompleted:
    """An RPC made by this node ended: ``outcome`` is ``ok``, ``raised``,
    ``bad_rpc``, ``node_down`` or ``timeout``; ``seconds`` is its latency."""

    node: str
    function: str
    seconds: float
    outcome: str


@attrs.frozen
class RpcTimedOut:
    """An RPC made by this node got no answer within ``timeout`` seconds."""

    node: str
    function: str
    timeout: float


@attrs.frozen
class DiscoveryJoined:
    """Discovery ``source`` found ``address`` and this node connected to the
    node ``node`` there (and so joined its cluster)."""

    source: str
    address: str
    node: str


@attrs.frozen
class DiscoveryFailed:
    """Discovery ``source`` failed (it is retried): ``error`` says how."""

    source: str
    error: str


Sink = Callable[[object], None]

#: The event type of each drop cause that has its own (the rest: Dropped).
_DROP_KINDS: Final = {
    "auth_failed": "AuthenticationFailed",
    **dict.fromkeys(_REFUSAL_CAUSES, "ConnectionRefused"),
    **dict.fromkeys(_MAILBOX_CAUSES, "MailboxOverflow"),
}


@attrs.define(eq=False, kw_only=True)
class Telemetry:
    """A node's telemetry: ``node.telemetry``."""

    transport: Transport
    #: Events published since the node started, by event type name.
    counts: dict[str, int] = attrs.field(factory=dict)
    _channels: set[MemoryObjectSendStream[object]] = attrs.field(factory=set)
    _sinks: list[Sink] = attrs.field(factory=list)
    _log_limiter: LogLimiter = attrs.field(factory=lambda: LogLimiter(logger))

    def __attrs_post_init__(self) -> None:
        self.transport.on_drop = self.dropped
        self.transport.on_event = self.publish

    # ----------------------------------------------------------- receiving

    @asynccontextmanager
    async def subscribe(
        self, buffer: int = DEFAULT_BUFFER
    ) -> AsyncIterator[MemoryObjectReceiveStream[object]]:
        """A channel of the events published while the block runs.

        Raises:
            ValueError: ``buffer`` is below 1.
        """
        if type(buffer) is not int or buffer < 1:
            raise ValueError(f"buffer must be an int of at least 1, got {buffer!r}")
        send, receive = anyio.create_memory_object_stream[object](buffer)
        self._channels.add(send)
        try:
            yield receive
        finally:
            self._channels.discard(send)
            send.close()
            receive.close()

    def add_sink(self, sink: Sink) -> None:
        """Call ``sink(event)`` for every event from now on (it must not block)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        """Stop calling ``sink``; does nothing if it is not installed."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    # ---------------------------------------------------------- publishing

    def publish(self, event: object) -> None:
        """Hand ``event`` to every sink and subscriber without waiting."""
        kind = type(event).__name__
        self.counts[kind] = self.counts.get(kind, 0) + 1
        drops = self.transport.drops
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception as exc:
                # Counted straight into the table: a drop event about a
                # failing sink would go to that same sink.
                drops["telemetry_sink_failed"] = drops.get("telemetry_sink_failed", 0) + 1
                self._log_limiter.warning(
                    "telemetry_sink_failed", "a telemetry sink raised %r on %r", exc, event
                )
        for channel in list(self._channels):
            try:
                channel.send_nowait(event)
            except anyio.WouldBlock:
                drops["telemetry_overflow"] = drops.get("telemetry_overflow", 0) + 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._channels.discard(channel)

    def dropped(self, cause: str, detail: object) -> None:
        """Publish the event for one counted drop (the transport's hook)."""
        if not self._sinks and not self._channels:
            # Nobody listens: count it without building the event (a peer
            # flooding dead pids makes this the per-frame cost).
            kind = _DROP_KINDS.get(cause, "Dropped")
            self.counts[kind] = self.counts.get(kind, 0) + 1
            return
        event: Dropped
        if cause == "auth_failed":
            event = AuthenticationFailed(cause, _text(detail))
        elif cause in _REFUSAL_CAUSES:
            event = ConnectionRefused(cause, _text(detail))
        elif cause in _MAILBOX_CAUSES:
            event = MailboxOverflow(cause, detail if isinstance(detail, Pid) else None)
        else:
            event = Dropped(cause)
        self.publish(event)

    # ------------------------------------------------------------- running

    async def start(
        self, task_group: anyio.abc.TaskGroup, membership: Membership, election: Election
    ) -> None:
        """Forward membership and leader-change events from now on."""
        if membership.enabled:
            await task_group.start(self._forward, membership.subscribe)
        if election.enabled:
            await task_group.start(self._forward, election.subscribe)

    async def _forward(
        self,
        subscribe: Callable[[], Any],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with subscribe() as events:
            task_status.started()
            async for event in events:
                self.publish(event)


def _text(detail: object) -> str | None:
    return None if detail is None else str(detail)
