"""A process mailbox: a deque and one wake-up.

A burst of messages costs the receiving task one wake-up, and selective
receive scans the deque in place; a memory channel per message could do
neither (DESIGN 3a). The mailbox is bounded: when it is full a new message
is refused (the caller counts and logs the drop), so a slow process never
blocks the connection reader that feeds it, and messages to other processes
on the same connection keep flowing.

It is bounded twice: in messages, and in bytes. A message counts the size
of the frame that carried it (its encoded size, which the reader knows for
free; a local send encodes the message too, and counts the frame it would
have had); the node's own notifications (``ProcessDown`` and the like)
count 0 bytes. The byte total needs each message's size again when it is
taken, so sizes ride in a deque parallel to the messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from ._backend import Checkpoints, Parker
from ._correlation import Traced, correlation_id

__all__ = ["Mailbox"]

_current_id = correlation_id.get


def _received(message: Any) -> Any:
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
_YIELD_EVERY = 4096


class Mailbox:
    """Messages queued for one process, oldest first."""

    __slots__ = (
        "_byte_limit",
        "_bytes",
        "_checkpoint",
        "_checkpoint_if_cancelled",
        "_closed",
        "_limit",
        "_messages",
        "_parker",
        "_since_yield",
        "_sizes",
        "refusal",
    )

    def __init__(
        self,
        limit: int,
        checkpoints: Checkpoints,
        parker: Parker,
        byte_limit: int = 2**63,
    ) -> None:
        self._checkpoint, self._checkpoint_if_cancelled = checkpoints
        self._parker = parker
        self._messages: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self._limit = limit
        self._byte_limit = byte_limit
        self._bytes = 0
        self._since_yield = 0
        self._closed = False
        #: Why the last refused ``put`` was refused (a drop cause).
        self.refusal = "mailbox_full"

    def __len__(self) -> int:
        return len(self._messages)

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
        if self._closed or len(self._messages) >= self._limit:
            self.refusal = "mailbox_full"
            return False
        if size:
            held = self._bytes
            if held and held + size > self._byte_limit:
                self.refusal = "mailbox_bytes"
                return False
            self._bytes = held + size
        self._messages.append(message)
        self._sizes.append(size)
        self._parker.unpark_all()
        return True

    def close(self) -> None:
        """Refuse further messages (the process has exited)."""
        self._closed = True
        self._messages.clear()
        self._sizes.clear()
        self._bytes = 0

    def _remove(self, index: int) -> Any:
        """Remove and return the message at ``index`` (selective receive)."""
        message = self._messages[index]
        del self._messages[index]
        self._bytes -= self._sizes[index]
        del self._sizes[index]
        return message

    def take_nowait(self, match: Callable[[Any], bool] | None = None) -> Any:
        """Remove and return the oldest (matching) message.

        Raises:
            anyio.WouldBlock: nothing (matching) is queued.
        """
        messages = self._messages
        if match is None:
            if messages:
                self._bytes -= self._sizes.popleft()
                return _received(messages.popleft())
            raise anyio.WouldBlock
        for index, message in enumerate(messages):
            if match(_inner(message)):
                return _received(self._remove(index))
        raise anyio.WouldBlock

    async def take(self, match: Callable[[Any], bool] | None = None) -> Any:
        """Wait for, remove and return the oldest (matching) message.

        Non-matching messages stay queued in their order. Cancellation
        leaves the mailbox untouched.
        """
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await self._checkpoint()
        else:
            await self._checkpoint_if_cancelled()
        messages = self._messages
        scanned = 0
        while True:
            if match is None:
                if messages:
                    message = messages.popleft()
                    self._bytes -= self._sizes.popleft()
                    if type(message) is Traced or _current_id() is not None:
                        return _received(message)
                    return message
            else:
                # Only messages that arrived since the last scan can match.
                for index in range(scanned, len(messages)):
                    if match(_inner(messages[index])):
                        return _received(self._remove(index))
                scanned = len(messages)
            await self._parker.park()
            self._since_yield = 0
