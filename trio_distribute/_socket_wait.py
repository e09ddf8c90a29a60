"""A wait on a socket that another task can end cheaply (trio, Linux).

A task waiting in ``trio.lowlevel.wait_readable`` can be woken early only by
cancelling it, and a cancel scope per wait costs more than the wait itself
(about 50 Python calls to enter and leave). A process that waits on a lent
socket (see ``Connection.borrow``) must be woken at once when a message
reaches it by another path, so it waits instead on a small epoll set that
holds the socket and an eventfd: whoever has something for it writes the
eventfd (:meth:`SocketWait.kick`), which makes the set readable. The set is
level-triggered, so bytes that came before the wait end it at once.

It costs two file descriptors, made on the first wait and closed with the
connection; where epoll or eventfd is missing (not Linux), or making them
fails, the socket is simply not lent.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any

__all__ = ["SocketWait", "socket_wait_for"]

_SUPPORTED = hasattr(select, "epoll") and hasattr(os, "eventfd")
# trio's, looked up when the first wait is made (only trio lends sockets).
_wait_readable: Any = None
_notify_closing: Any = None


class SocketWait:
    """Wait until ``sock`` is readable or :meth:`kick` is called."""

    __slots__ = ("_kick_fd", "_kicked", "_set", "closed")

    def __init__(self, sock: socket.socket) -> None:
        global _wait_readable, _notify_closing
        if _wait_readable is None:
            import trio

            _wait_readable = trio.lowlevel.wait_readable
            _notify_closing = trio.lowlevel.notify_closing
        self._set = select.epoll()
        try:
            self._kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            self._set.close()
            raise
        self._set.register(sock.fileno(), select.EPOLLIN)
        self._set.register(self._kick_fd, select.EPOLLIN)
        self._kicked = False
        self.closed = False

    async def wait(self) -> None:
        """Return when the socket is readable (or has an error, or the
        peer closed it) or after a kick; at once if either happened
        already.

        Raises:
            trio.ClosedResourceError: :meth:`close` was called meanwhile.
        """
        await _wait_readable(self._set)
        if self._kicked and not self.closed:
            self._kicked = False
            os.eventfd_read(self._kick_fd)

    def kick(self) -> None:
        """End the current (or next) :meth:`wait`."""
        if not self._kicked and not self.closed:
            self._kicked = True
            os.eventfd_write(self._kick_fd, 1)

    def close(self) -> None:
        """Free the descriptors; a task still waiting gets
        ``trio.ClosedResourceError``."""
        if self.closed:
            return
        self.closed = True
        _notify_closing(self._set)  # before the descriptor can be reused
        self._set.close()
        os.close(self._kick_fd)


def socket_wait_for(sock: socket.socket) -> SocketWait | None:
    """A :class:`SocketWait` on ``sock``, or ``None`` where there cannot be
    one (no epoll or eventfd here, or no descriptors left)."""
    if not _SUPPORTED:
        return None
    try:
        return SocketWait(sock)
    except OSError:
        return None
