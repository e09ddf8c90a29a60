"""Event fan-out: subscribers each get a bounded channel of events.

Node events, membership events and leader changes all work this way: a
publisher never blocks, and a subscriber that falls ``buffer`` events
behind loses the newer ones, counted under the publisher's cause.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Subscribers"]

Event = TypeVar("Event")


class Subscribers(Generic[Event]):
    """The channels of everyone subscribed to one kind of event."""

    __slots__ = ("_buffer", "_channels", "_on_overflow")

    def __init__(self, buffer: int, on_overflow: Callable[[], None]) -> None:
        self._buffer = buffer
        self._on_overflow = on_overflow
        self._channels: set[MemoryObjectSendStream[Event]] = set()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[Event]]:
        """A channel of the events published while the block runs."""
        send, receive = anyio.create_memory_object_stream[Event](self._buffer)
        self._channels.add(send)
        try:
            yield receive
        finally:
            self._channels.discard(send)
            send.close()
            receive.close()

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber without waiting."""
        for channel in list(self._channels):
            try:
                channel.send_nowait(event)
            except anyio.WouldBlock:
                self._on_overflow()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._channels.discard(channel)
