"""The current correlation id, and messages that carry one.

Kept apart from :mod:`trio_distribute.log` so the message path can import
it without importing logging helpers.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["Traced", "correlation_id"]

#: The correlation id of the work the current task is doing. Tasks inherit
#: it from the task that started them; RPC calls and messages carry it to
#: the node and process that handle them.
correlation_id: ContextVar[str | None] = ContextVar("trio_distribute_correlation_id", default=None)


class Traced:
    """A message in a mailbox together with its sender's correlation id.

    Receiving it makes the id current in the receiving task, the way a
    ``seq_trace`` token travels with Erlang messages.
    """

    __slots__ = ("correlation_id", "message")

    def __init__(self, message: Any, correlation_id: str) -> None:
        self.message = message
        self.correlation_id = correlation_id
