"""The timeouts of a node's waiting calls, in one heap served by one task.

``Process.call`` and ``rpc.call`` wait with a timeout. A cancel scope per
call (``move_on_after``) is the obvious way, and the most expensive part of
a call after the network: entering and leaving a scope with a deadline
registers and unregisters that deadline with the event loop, every time.
Here a call only pushes ``(deadline, seq, entry)`` onto a heap: one task
sleeps until the earliest deadline and expires what is due, waking the
waiting caller exactly as its reply would (the caller then raises its
timeout error). An entry that finished before its deadline is left in the
heap and skipped (lazy deletion); the heap is compacted when stale entries
outnumber live ones, so it holds at most about twice the calls waiting.

The task starts with the first timed call and ends once the heap is
empty (every deadline, stale ones included, has passed), so an idle node
runs no timer task and its task count comes back to what it was before
the calls; the next timed call starts it again. It is woken only when a
call's deadline is earlier than the one it sleeps until: calls with equal
timeouts made one after another never wake it (each deadline is later
than the last).

The user-visible behaviour is a cancel scope's: a call times out no
earlier than its timeout, on the event loop's clock (``trio.testing``'s
``MockClock`` included), and a caller cancelled from outside is cancelled
as before (its wait is an ordinary checkpoint).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio

from ._backend import running_on_trio
from ._socket_wait import SocketWait

__all__ = ["COMPACT_SLACK", "Deadlines", "Expiring", "Waiter", "bind_trio", "loop_clock"]

#: Stale entries tolerated beyond the number of live ones before the heap
#: is compacted (so a heap with few live entries is not rebuilt often).
COMPACT_SLACK = 64


class Expiring(Protocol):
    """A waiting call, as the heap sees it."""

    #: True once it needs its deadline no more (replied, failed, expired).
    finished: bool

    def expire(self) -> None:
        """The deadline passed while it was still waiting."""


_ABORT_SUCCEEDED: Any = None  # trio.lowlevel.Abort.SUCCEEDED, once on trio
_reschedule: Callable[[Any], None] | None = None  # trio.lowlevel.reschedule


def bind_trio() -> None:
    """Look up trio's primitives that :class:`Waiter` uses (on trio only)."""
    global _ABORT_SUCCEEDED, _reschedule
    import trio

    _ABORT_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
    _reschedule = trio.lowlevel.reschedule


class Waiter:
    """One task waiting for one outcome (a call's reply).

    It parks its task itself, on trio the task (it is its own abort
    function, so a wait makes no closure), on asyncio an ``anyio.Event``:
    a call makes this one object for its wait. On asyncio it waits on a
    bare future of the running loop (an ``anyio.Event`` wraps an
    ``asyncio.Event``, which wraps such a future). The waiting loop is
    written out where it runs (one await layer less)::

        while not waiter.finished:            # trio
            waiter.task = current_task()
            await wait_task_rescheduled(waiter)

        while not waiter.finished:            # asyncio
            future = waiter.event = create_future()
            await future
    """

    __slots__ = ("event", "finished", "task")

    def __init__(self) -> None:
        #: True once the outcome is in (or the deadline passed).
        self.finished = False
        self.task: Any = None
        self.event: asyncio.Future[None] | None = None

    def expire(self) -> None:
        """The deadline passed (see :class:`Deadlines`)."""
        self.wake()

    def wake(self) -> None:
        """Finish waiting: reschedule the task (once)."""
        if self.finished:
            return
        self.finished = True
        task = self.task
        if task is not None:
            self.task = None
            if type(task) is SocketWait:
                task.kick()  # the task waits on a lent socket
            else:
                assert _reschedule is not None
                _reschedule(task)
        elif self.event is not None and not self.event.done():
            self.event.set_result(None)

    def hold(self, wait: SocketWait) -> None:
        """(trio) The task waits on a lent socket: :meth:`wake` kicks
        ``wait`` (see ``Connection.borrow``)."""
        self.task = wait

    def release(self, wait: SocketWait) -> None:
        """(trio) That wait ended."""
        if self.task is wait:
            self.task = None

    def __call__(self, _: object) -> Any:
        # trio's abort function: the task was cancelled while parked.
        self.task = None
        return _ABORT_SUCCEEDED


class Deadlines:
    """One node's call deadlines (see the module's docstring)."""

    __slots__ = ("_heap", "_live", "_next", "_now", "_seq", "_start_soon", "_started", "_wake")

    def __init__(
        self,
        start_soon: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
        now: Callable[[], float],
    ) -> None:
        self._start_soon = start_soon
        self._now = now
        self._heap: list[tuple[float, int, Expiring]] = []
        self._seq = itertools.count()
        # Entries added and not yet done(): the calls waiting with a deadline.
        self._live = 0
        # The deadline the task sleeps until (inf: none, or not started).
        self._next = math.inf
        self._wake: anyio.Event | None = None
        self._started = False

    def __len__(self) -> int:
        """Entries in the heap, stale ones included (for leak checks)."""
        return len(self._heap)

    @property
    def waiting(self) -> int:
        """Calls waiting with a deadline."""
        return self._live

    def add(self, timeout: float, entry: Expiring) -> None:
        """Expire ``entry`` ``timeout`` seconds from now unless it finishes
        first; call :meth:`done` once it stops waiting, whatever the cause."""
        deadline = self._now() + timeout
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._seq), entry))
        self._live += 1
        if deadline < self._next:
            self._next = deadline
            if not self._started:
                self._started = True
                self._start_soon(self._run)
            elif self._wake is not None:
                self._wake.set()
        elif len(heap) > 2 * self._live + COMPACT_SLACK:
            self._compact()

    def done(self) -> None:
        """One entry stopped waiting (its heap slot is reclaimed lazily)."""
        self._live -= 1

    def _compact(self) -> None:
        heap = [item for item in self._heap if not item[2].finished]
        heapq.heapify(heap)
        self._heap = heap

    async def _run(self) -> None:
        while True:
            heap = self._heap
            now = self._now()
            while heap and (heap[0][0] <= now or heap[0][2].finished):
                entry = heapq.heappop(heap)[2]
                if not entry.finished:
                    entry.expire()
                heap = self._heap  # expire() may have compacted it
            if not heap:
                # Nothing left to expire: end, and let the next timed call
                # start a new task (add() sees _started false).
                self._next = math.inf
                self._started = False
                return
            self._next = heap[0][0]
            wake = self._wake = anyio.Event()
            # The loop's clock, as the deadlines are (``now`` is that clock).
            with anyio.CancelScope(deadline=self._next):
                await wake.wait()
            self._wake = None


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock, as its cancel scopes read it
    (``trio.current_time`` honours a ``MockClock``), looked up once."""
    if running_on_trio():
        import trio

        return trio.current_time
    return asyncio.get_running_loop().time
