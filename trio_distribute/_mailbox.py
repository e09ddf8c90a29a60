"""A process mailbox: a queue and one wake-up.

A burst of messages costs the receiving task one wake-up, and selective
receive scans the queue in place; a memory channel per message could do
neither (DESIGN 3a). The mailbox is bounded: when it is full a new message
is refused (the caller counts and logs the drop), so a slow process never
blocks the connection reader that feeds it, and messages to other processes
on the same connection keep flowing.

It is bounded twice: in messages, and in bytes. A message counts the size
of the frame that carried it (its encoded size, which the reader knows for
free; a local send encodes the message too, and counts the frame it would
have had); the node's own notifications (``ProcessDown`` and the like)
count 0 bytes. The byte total needs each message's size again when it is
taken, so each message's size rides right behind it in the queue.

A node may hold a million idle processes, so an idle mailbox is kept
small: the queue (a deque, 760 bytes even when empty) exists only while
messages wait, the limits and the backend's primitives live in one
:class:`MailboxSettings` per node, and a waiting task is remembered in a
slot instead of a parker object of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._backend import Checkpoints, running_on_trio
from ._correlation import Traced, correlation_id
from ._socket_wait import SocketWait

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Mailbox", "MailboxSettings"]

_current_id = correlation_id.get


def unwrap_received(message: Any) -> Any:
    """Unwrap a traced message, making its correlation id current; any
    other message clears the current id (as Erlang's ``seq_trace`` does),
    so a server loop never logs one request under another's id."""
    if type(message) is Traced:
        correlation_id.set(message.correlation_id)
        return message.message
    if _current_id() is not None:
        correlation_id.set(None)
    return message


def _inner(message: Any) -> Any:
    return message.message if type(message) is Traced else message


#: Messages taken without waiting before ``take`` yields to the scheduler
#: once, so a busy receiver cannot starve other tasks but does not pay a
#: scheduler pass per message either. It is larger than the number of
#: messages the connection reader delivers per turn (two socket reads of
#: 64 KiB of small frames, ~3,600), so a process keeps up with the reader
#: that fills its mailbox.
TAKE_YIELD_EVERY = 4096


class MailboxSettings:
    """What every mailbox of a node shares: its limits and the running
    backend's scheduling primitives (looked up once, at node start)."""

    __slots__ = (
        "byte_limit",
        "checkpoint",
        "checkpoint_if_cancelled",
        "current_task",
        "lent",
        "limit",
        "on_trio",
        "reschedule",
        "wait_task_rescheduled",
    )

    def __init__(
        self,
        limit: int,
        checkpoints: Checkpoints,
        byte_limit: int = 2**63,
        on_trio: bool | None = None,
    ) -> None:
        self.limit = limit
        self.byte_limit = byte_limit
        self.checkpoint, self.checkpoint_if_cancelled = checkpoints
        self.on_trio = running_on_trio() if on_trio is None else on_trio
        #: (trio) The connection whose socket each mailbox's process may
        #: wait on while its mailbox is empty (``Connection.borrow``).
        self.lent: dict[Mailbox, Connection] = {}
        if self.on_trio:
            import trio

            self.current_task: Callable[[], Any] = trio.lowlevel.current_task
            self.reschedule: Callable[[Any], None] = trio.lowlevel.reschedule
            self.wait_task_rescheduled: Callable[[Any], Any] = trio.lowlevel.wait_task_rescheduled


_SUCCEEDED: Any = None


def _abort_succeeded() -> Any:
    global _SUCCEEDED
    if _SUCCEEDED is None:
        import trio

        _SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
    return _SUCCEEDED


class Mailbox:
    """Messages queued for one process, oldest first."""

    __slots__ = (
        "_bytes",
        "_closed",
        "_others",
        "_queue",
        "_settings",
        "_since_yield",
        "_waiter",
        "refusal",
    )

    def __init__(self, settings: MailboxSettings) -> None:
        self._settings = settings
        # message, size, message, size, ... (None while empty: see above).
        self._queue: deque[Any] | None = None
        self._bytes = 0
        self._since_yield = 0
        self._closed = False
        # On trio the task waiting in take (the usual one waiter); on
        # asyncio the event every waiter waits on.
        self._waiter: Any = None
        # On trio, further tasks waiting at the same time (rare: two tasks
        # of one process receiving at once).
        self._others: list[Any] | None = None
        #: Why the last refused ``put`` was refused (a drop cause).
        self.refusal = "mailbox_full"

    def __len__(self) -> int:
        queue = self._queue
        return 0 if queue is None else len(queue) >> 1

    @property
    def queued_bytes(self) -> int:
        """Encoded bytes of the queued messages from other nodes."""
        return self._bytes

    def put(self, message: Any, size: int = 0) -> bool:
        """Queue ``message`` of ``size`` encoded bytes (0 for a notification);
        ``False`` if the mailbox is full, in messages or bytes, or closed
        (the cause is then in :attr:`refusal`).

        A message is refused for bytes only while the mailbox holds some:
        any single message fits an empty one, so a byte limit below
        ``max_message_size`` cannot make a message undeliverable for ever.
        """
        queue = self._queue
        if queue is None:
            if self._closed:
                self.refusal = "mailbox_full"
                return False
            queue = self._queue = deque()
        elif len(queue) >= self._settings.limit << 1:
            self.refusal = "mailbox_full"
            return False
        if size:
            held = self._bytes
            if held and held + size > self._settings.byte_limit:
                self.refusal = "mailbox_bytes"
                return False
            self._bytes = held + size
        queue.append(message)
        queue.append(size)
        if self._waiter is not None:
            self._wake()
        return True

    def _wake(self) -> None:
        """Wake every task waiting in ``take``."""
        waiter = self._waiter
        self._waiter = None
        settings = self._settings
        if not settings.on_trio:
            waiter.set()
            return
        reschedule = settings.reschedule
        if type(waiter) is SocketWait:
            waiter.kick()  # the process waits on a lent socket
        else:
            reschedule(waiter)
        others = self._others
        if others is not None:
            self._others = None
            for task in others:
                reschedule(task)

    def close(self) -> None:
        """Refuse further messages (the process has exited)."""
        self._closed = True
        self._queue = None
        self._bytes = 0

    def _remove(self, index: int) -> Any:
        """Remove and return the message at ``index`` (selective receive)."""
        queue = self._queue
        assert queue is not None
        at = index << 1
        message = queue[at]
        del queue[at]
        self._bytes -= queue[at]
        del queue[at]
        if not queue:
            self._queue = None
        return message

    def take_nowait(self, match: Callable[[Any], bool] | None = None) -> Any:
        """Remove and return the oldest (matching) message.

        Raises:
            anyio.WouldBlock: nothing (matching) is queued.
        """
        queue = self._queue
        if queue is None:
            raise anyio.WouldBlock
        if match is None:
            message = queue.popleft()
            self._bytes -= queue.popleft()
            if not queue:
                self._queue = None
            return unwrap_received(message)
        for index in range(len(queue) >> 1):
            if match(_inner(queue[index << 1])):
                return unwrap_received(self._remove(index))
        raise anyio.WouldBlock

    async def take(self, match: Callable[[Any], bool] | None = None) -> Any:
        """Wait for, remove and return the oldest (matching) message.

        Non-matching messages stay queued in their order. Cancellation
        leaves the mailbox untouched. (``Process.receive`` has this loop
        written out, so that an idle process waits one frame shallower.)
        """
        settings = self._settings
        self._since_yield += 1
        if self._since_yield >= TAKE_YIELD_EVERY:
            self._since_yield = 0
            await settings.checkpoint()
        else:
            await settings.checkpoint_if_cancelled()
        scanned = 0
        while True:
            queue = self._queue
            if queue is not None:
                if match is None:
                    message = queue.popleft()
                    self._bytes -= queue.popleft()
                    if not queue:
                        self._queue = None
                    if type(message) is Traced or _current_id() is not None:
                        return unwrap_received(message)
                    return message
                # Only messages that arrived since the last scan can match.
                for index in range(scanned, len(queue) >> 1):
                    if match(_inner(queue[index << 1])):
                        return unwrap_received(self._remove(index))
                scanned = len(queue) >> 1
            if settings.on_trio:
                lender = self.lender()
                if lender is not None:
                    await lender.borrow(self)
                else:
                    await settings.wait_task_rescheduled(self.park_task())
            else:
                await self.event().wait()
            self._since_yield = 0

    # Waiting, in two halves so that a caller can await in its own frame.

    def hold(self, wait: SocketWait) -> None:
        """(trio) The process waits on a lent socket: a ``put`` kicks
        ``wait`` (see ``Connection.borrow``)."""
        self._waiter = wait

    def release(self, wait: SocketWait) -> None:
        """(trio) That wait ended."""
        if self._waiter is wait:
            self._promote()

    def lender(self) -> Connection | None:
        """(trio) The connection whose socket this mailbox's process may
        wait on now instead of parking (``Connection.borrow``), if any."""
        lent = self._settings.lent
        if not lent:
            return None
        conn = lent.get(self)
        if conn is None or self._waiter is not None or not conn.lent_to(self):
            return None
        return conn

    def park_task(self) -> Callable[[Any], Any]:
        """(trio) Register the running task as waiting; returns the abort
        function to pass to ``trio.lowlevel.wait_task_rescheduled``."""
        task = self._settings.current_task()
        if self._waiter is None:
            self._waiter = task
            return self  # see __call__
        others = self._others
        if others is None:
            others = self._others = []
        others.append(task)

        def abort(_: object) -> Any:
            if self._waiter is task:  # promoted by __call__
                self._promote()
            elif self._others is not None and task in self._others:
                self._others.remove(task)
            return _abort_succeeded()

        return abort

    def __call__(self, _: object) -> Any:
        """(trio) The abort function of the task in the waiter slot: the
        mailbox itself, so that the usual single waiter costs no function
        object (a closure or a bound method) while it waits."""
        self._promote()
        return _abort_succeeded()

    def _promote(self) -> None:
        # The waiter slot is what ``put`` looks at: another waiting task
        # takes it.
        others = self._others
        if others:
            self._waiter = others.pop(0)
            if not others:
                self._others = None
        else:
            self._waiter = None
            self._others = None

    def event(self) -> anyio.Event:
        """(asyncio) The event the next ``put`` sets."""
        event = self._waiter
        if event is None:
            event = self._waiter = anyio.Event()
        return event  # type: ignore[no-any-return]
