"""Applying big control frames from peers without stalling the event loop.

Frame handlers run in a connection's reader task and must not block, yet a
single frame within ``max_message_size`` can carry hundreds of thousands of
names or memberships. The registry and the groups therefore express the work
for a frame as a generator that does one bounded slice per step.
:class:`PeerWork` runs the first slice at once (so small frames cost no task
hop) and the rest in a task that yields between slices. Frames from one
connection are applied strictly in arrival order: while earlier work from a
peer is unfinished, later frames wait behind it.

The node-up exchange goes the other way: :func:`frames_for` splits a table
into frames that each fit the frame limit, so no honest table is ever too
big to send.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._ratelimit import LogLimiter
from .errors import MessageTooLargeError, NodeDownError
from .monitor import NodeDownReason

if TYPE_CHECKING:
    from .transport import Connection, Transport

__all__ = ["OrderedSender", "PeerWork", "Work", "frames_for"]

logger = logging.getLogger("trio_distribute.transport")
_log = LogLimiter(logger)

#: One frame's work: each ``next()`` does a bounded slice; it raises
#: TypeError/ValueError (a malformed or forged frame) to close the connection.
Work = Iterator[None]

T = TypeVar("T")


@attrs.define(eq=False, kw_only=True)
class PeerWork:
    """Per-connection ordered queues of sliced work."""

    transport: Transport
    #: Drop cause counted when a peer's backlog overflows.
    backlog_cause: str
    #: Entries that may wait per connection (a function: the limit comes
    #: from the node's config, read when needed).
    max_backlog: Callable[[], int]
    _queues: dict[Connection, collections.deque[tuple[Work, int]]] = attrs.field(factory=dict)
    _backlog: dict[Connection, int] = attrs.field(factory=dict)

    def submit(self, conn: Connection, work: Work, size: int) -> None:
        """Apply ``work`` (``size`` entries) after everything queued before
        it from ``conn``. Runs its first slice now if nothing is queued;
        exceptions from that slice propagate to the frame dispatcher."""
        queue = self._queues.get(conn)
        if queue is None:
            try:
                next(work)
            except StopIteration:
                return
            if not self.transport.started:  # a unit test: finish now
                for _ in work:
                    pass
                return
            queue = self._queues[conn] = collections.deque()
            self._backlog[conn] = 0
            self.transport.start_soon(self._drain, conn, queue)
        elif self._backlog[conn] + size > self.max_backlog():
            # The peer sends faster than its frames can be applied: like a
            # slow consumer in reverse. Dropping a frame would leave our view
            # of it wrong for good, so the connection goes (and a reconnect
            # resyncs).
            self.transport.count_drop(self.backlog_cause)
            _log.warning(
                self.backlog_cause, "closing connection to %s: too much work queued", conn.peer
            )
            conn.close(NodeDownReason.PROTOCOL_ERROR)
            return
        queue.append((work, size))
        self._backlog[conn] += size

    def call(self, conn: Connection, action: Callable[[], None]) -> None:
        """Run ``action`` (one small change) in order with ``conn``'s other
        frames: now if nothing from it is waiting."""
        if conn in self._queues:
            self.submit(conn, _once(action), 1)
        else:
            action()

    def pending(self, conn: Connection) -> int:
        """Entries from ``conn`` still waiting to be applied."""
        return self._backlog.get(conn, 0)

    async def _drain(self, conn: Connection, queue: collections.deque[tuple[Work, int]]) -> None:
        try:
            while queue:
                # Yield before every slice: this is what keeps the loop
                # responsive while a big frame is applied.
                await anyio.lowlevel.checkpoint()
                if conn.closed:
                    break
                work, size = queue[0]
                try:
                    next(work)
                except StopIteration:
                    queue.popleft()
                    self._backlog[conn] -= size
                except (TypeError, ValueError, IndexError, KeyError) as exc:
                    self.transport.count_drop("protocol_error")
                    _log.warning("protocol_error", "closing connection to %s: %r", conn.peer, exc)
                    conn.close(NodeDownReason.PROTOCOL_ERROR)
                except Exception:
                    # A bug here must not take the node down with it (this
                    # task lives in the node's task group): drop the peer.
                    logger.exception("applying a frame from %s failed", conn.peer)
                    conn.close(NodeDownReason.PROTOCOL_ERROR)
        finally:
            # A closed connection's leftover work is dropped: its peer's
            # state was purged by the node-down and must not come back.
            queue.clear()
            del self._queues[conn]
            del self._backlog[conn]


def _once(action: Callable[[], None]) -> Work:
    action()
    yield


def frames_for(
    entries: Sequence[T],
    chunk: int,
    encode: Callable[[Sequence[T]], bytes],
    on_oversize: Callable[[], None],
) -> Iterator[bytes]:
    """Encode ``entries`` as frames of at most ``chunk`` entries each, split
    further wherever ``encode`` finds a frame over the size limit. An entry
    that does not fit a frame even alone is skipped (``on_oversize``)."""
    for start in range(0, len(entries), chunk):
        yield from _fit(entries[start : start + chunk], encode, on_oversize)


def _fit(
    part: Sequence[T], encode: Callable[[Sequence[T]], bytes], on_oversize: Callable[[], None]
) -> Iterator[bytes]:
    try:
        yield encode(part)
    except MessageTooLargeError:
        if len(part) <= 1:
            on_oversize()
            return
        half = len(part) // 2
        yield from _fit(part[:half], encode, on_oversize)
        yield from _fit(part[half:], encode, on_oversize)


@attrs.define(eq=False, kw_only=True)
class OrderedSender:
    """Writes a service's frames to peers. While the node-up table is being
    streamed to a peer, later frames for that peer wait behind it, so the
    peer sees (for example) a leave after the membership it removes."""

    transport: Transport
    _held: dict[Connection, list[bytes]] = attrs.field(factory=dict)
    _streamed: dict[Connection, anyio.Event] = attrs.field(factory=dict)

    async def wait_streamed(self, conn: Connection) -> None:
        """Wait until the table being sent to ``conn`` (if any) is out."""
        event = self._streamed.get(conn)
        if event is not None:
            await event.wait()

    def write(self, conn: Connection, data: bytes) -> None:
        """Write ``data`` to ``conn`` now, or after its table if one is
        being sent. Raises NodeDownError if ``conn`` is closed."""
        held = self._held.get(conn)
        if held is None:
            conn.write(data)
        elif conn.closed:
            conn.write(data)  # raises NodeDownError, as a direct write would
        else:
            held.append(data)

    def broadcast(self, data: bytes) -> None:
        """Write ``data`` to every open connection."""
        for name in self.transport.peers():
            conn = self.transport.connection(name)
            if conn is not None and not conn.closed:
                self.write(conn, data)

    def stream(self, conn: Connection, frames: Iterator[bytes]) -> None:
        """Send ``frames`` (encoded lazily, one at a time) to ``conn`` from a
        task that waits for socket space and yields between frames."""
        if not self.transport.started:  # a unit test: send now
            for data in frames:
                conn.write(data)
            return
        self._held[conn] = []
        self._streamed[conn] = anyio.Event()
        self.transport.start_soon(self._stream, conn, frames)

    async def _stream(self, conn: Connection, frames: Iterator[bytes]) -> None:
        held = self._held[conn]
        try:
            for data in frames:
                if conn.closed:
                    return
                conn.write(data)
                if conn.is_congested():
                    await conn.wait_for_space()
                else:
                    await anyio.lowlevel.checkpoint()
            # Done: what was sent meanwhile follows the table, in order, with
            # no await in between so nothing can slip past.
            del self._held[conn]
            for data in held:
                conn.write(data)
        except NodeDownError:
            return
        finally:
            self._held.pop(conn, None)
            self._streamed.pop(conn).set()
