"""The running backend's cheapest scheduling primitives, looked up once.

anyio's ``checkpoint_if_cancelled`` finds the running event loop on every
call; on the send and receive paths, which run once per message, that
lookup costs more than the check itself. A node binds these at start.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

__all__ = ["Checkpoints", "checkpoints", "running_on_trio"]

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
