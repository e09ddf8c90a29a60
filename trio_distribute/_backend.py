"""The running backend's cheapest scheduling primitives, looked up once.

anyio's ``checkpoint_if_cancelled`` finds the running event loop on every
call; on the send and receive paths, which run once per message, that
lookup costs more than the check itself. A node binds these at start.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["Checkpoints", "Parker", "checkpoints", "new_parker", "running_on_trio"]

Checkpoints = tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]


def running_on_trio() -> bool:
    """True inside ``trio.run`` (whether or not through anyio)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def checkpoints() -> Checkpoints:
    """``(checkpoint, checkpoint_if_cancelled)`` for the running backend."""
    if running_on_trio():
        import trio

        return trio.lowlevel.checkpoint, trio.lowlevel.checkpoint_if_cancelled
    return anyio.lowlevel.checkpoint, anyio.lowlevel.checkpoint_if_cancelled


class Parker:
    """Tasks waiting for something; ``unpark_all`` wakes every one of them.

    The portable version parks on an ``anyio.Event``; on trio,
    :class:`_TrioParker` parks the task itself, which saves creating an
    event per wait on the message path.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    async def park(self) -> None:
        """Wait until the next ``unpark_all`` (or cancellation)."""
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def unpark_all(self) -> None:
        """Wake every parked task."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()


class _TrioParker(Parker):
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        super().__init__()
        self._tasks: list[Any] = []

    async def park(self) -> None:
        import trio

        task = trio.lowlevel.current_task()
        self._tasks.append(task)

        def abort(_: object) -> Any:
            if task in self._tasks:
                self._tasks.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def unpark_all(self) -> None:
        if self._tasks:
            import trio

            tasks, self._tasks = self._tasks, []
            for task in tasks:
                trio.lowlevel.reschedule(task)


def new_parker(on_trio: bool) -> Parker:
    """A :class:`Parker` suited to the running backend."""
    return _TrioParker() if on_trio else Parker()
