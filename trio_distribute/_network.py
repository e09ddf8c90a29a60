"""The network seam: everything a node asks of the operating system.

A node reaches the outside world only through a :class:`NodeNetwork`, its
view of a :class:`Network`: a stream listener, stream dials, one datagram
endpoint, and a source of randomness (so a simulated network can make a
whole run reproducible). :data:`REAL_NETWORK` is the operating system's TCP
and UDP, exactly as the node used them before the seam existed: the
streams it returns still carry their raw sockets, so the transport's
synchronous write path and batched accept loop work on them unchanged and
no message pays for the indirection. :class:`trio_distribute.testing.FakeNetwork`
is the in-memory one.

Names are resolved by the network: the real one hands host names to the
system resolver (through ``anyio.connect_tcp``); the fake one treats a host
as an opaque label.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import random
import secrets
import socket
import sys
from types import TracebackType
from typing import Any, Protocol, Self

import anyio
import anyio.abc

from ._backend import running_on_trio

__all__ = [
    "DATAGRAM_RECEIVE_BUFFER",
    "REAL_NETWORK",
    "DatagramEndpoint",
    "Network",
    "NodeNetwork",
    "RealNetwork",
    "datagrams_dropped",
]

#: Bytes of kernel buffer asked for the membership socket's incoming
#: datagrams (as memberlist does). The default (about 208 KiB on Linux)
#: holds some 50-90 datagrams; a process whose event loop is busy for a
#: few seconds (many nodes starting on a loaded machine) overflowed it,
#: the kernel dropped acks and refutations, and the suspicions that
#: followed made more traffic: a storm that outlived its cause. The
#: kernel caps the request at ``net.core.rmem_max``. It is memory held only
#: while datagrams wait unread.
DATAGRAM_RECEIVE_BUFFER = 2 * 1024 * 1024


class DatagramEndpoint(Protocol):
    """One bound datagram socket (the shape of ``anyio.abc.UDPSocket``)."""

    async def sendto(self, data: bytes, host: str, port: int) -> None: ...

    async def receive(self) -> tuple[bytes, tuple[str, int]]: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...


class NodeNetwork(Protocol):
    """What one node sees of a network."""

    #: Whether streams may be wrapped in TLS (``ssl_context``).
    supports_tls: bool

    async def listen(self, host: str, port: int) -> anyio.abc.Listener[Any]:
        """Listen for streams on ``host:port`` (0: any free port). The
        listener's ``local_address`` attribute is the address bound.

        Raises:
            OSError: the address cannot be bound.
        """
        ...

    async def dial(self, host: str, port: int, *, local_host: str) -> anyio.abc.ByteStream:
        """Open a stream to ``host:port`` from ``local_host`` (the address
        this node listens on).

        Raises:
            OSError: refused or unreachable.
        """
        ...

    async def open_datagram(self, host: str, port: int) -> DatagramEndpoint:
        """Bind a datagram endpoint on ``host:port``.

        Raises:
            OSError: the address cannot be bound.
        """
        ...

    def random(self) -> random.Random:
        """A fresh random generator for this node's protocol decisions
        (jitter, probe order, creation numbers): unpredictable on a real
        network, derived from the seed on a simulated one."""
        ...


class Network(Protocol):
    """A network nodes can be attached to."""

    def attach(self, name: str) -> NodeNetwork:
        """The view of the network for the node called ``name`` (called once
        per start of a node)."""
        ...


class RealNetwork:
    """The operating system's TCP and UDP (the default)."""

    supports_tls = True

    def attach(self, name: str) -> RealNetwork:
        return self

    async def listen(self, host: str, port: int) -> anyio.abc.Listener[Any]:
        listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(
            local_host=host, local_port=port, reuse_port=False
        )
        return listener

    async def dial(self, host: str, port: int, *, local_host: str) -> anyio.abc.ByteStream:
        return await open_tcp(host, port, local_host)

    async def open_datagram(self, host: str, port: int) -> DatagramEndpoint:
        udp = await anyio.create_udp_socket(local_host=host, local_port=port)
        _ask_receive_buffer(udp.extra(anyio.abc.SocketAttribute.raw_socket))
        if running_on_trio():
            return QuickSendDatagram(udp)
        return udp

    def random(self) -> random.Random:
        return random.Random(secrets.randbits(64))


def _ask_receive_buffer(sock: Any) -> None:
    """Ask for :data:`DATAGRAM_RECEIVE_BUFFER` (never shrink the buffer:
    a system whose default is larger keeps it). ``sock`` is the kernel
    socket, or on asyncio the event loop's wrapper of it."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= DATAGRAM_RECEIVE_BUFFER:
        return
    with contextlib.suppress(OSError):  # not allowed here: the default stays
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DATAGRAM_RECEIVE_BUFFER)


# Linux's SO_MEMINFO: the socket's memory counters, the ninth of which
# (SK_MEMINFO_DROPS) counts what the kernel dropped for it.
_SO_MEMINFO = 55


def datagrams_dropped(endpoint: object) -> int:
    """Datagrams the kernel dropped on their way to ``endpoint`` because
    its receive buffer was full (Linux; 0 where the kernel does not say,
    and for a simulated network)."""
    if not isinstance(endpoint, QuickSendDatagram | anyio.abc.UDPSocket):
        return 0
    sock = endpoint.extra(anyio.abc.SocketAttribute.raw_socket)
    try:
        counters = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 64)
    except OSError:  # not Linux, or the socket is closed
        return 0
    if len(counters) < 36:
        return 0
    return int.from_bytes(counters[32:36], sys.byteorder)


#: The network every node uses unless given another.
REAL_NETWORK = RealNetwork()


class QuickSendDatagram:
    """anyio's UDP socket on trio, whose ``sendto`` to an IP address hands
    the datagram to the kernel at once, without a trip through the
    scheduler. A bound UDP socket's send does not block: it succeeds or
    fails at once (a full buffer, ``BlockingIOError``, is left to anyio's
    send, which waits). trio's socket send always yields once even when
    the kernel took the datagram: for an idle membership node, which sends
    two datagrams a second, that was a fifth of its task steps. A host
    name (which would need a resolver) and a closed socket go through
    anyio, so errors are the ones it raises."""

    __slots__ = ("_inner", "_literal", "_sock")

    def __init__(self, inner: anyio.abc.UDPSocket) -> None:
        self._inner = inner
        self._sock: socket.socket = inner.extra(anyio.abc.SocketAttribute.raw_socket)
        #: ``{host: whether it is an IP address of this socket's family}``.
        self._literal: dict[str, bool] = {}

    def _is_literal(self, host: str) -> bool:
        known = self._literal.get(host)
        if known is None:
            try:
                version = ipaddress.ip_address(host).version
            except ValueError:
                known = False
            else:
                known = (version == 6) == (self._sock.family == socket.AF_INET6)
            if len(self._literal) < 65536:  # a member's host, cached; bounded
                self._literal[host] = known
        return known

    async def sendto(self, data: bytes, host: str, port: int) -> None:
        if self._sock.fileno() != -1 and self._is_literal(host):
            try:
                self._sock.sendto(data, (host, port))
                return
            except (BlockingIOError, InterruptedError):
                pass  # anyio's send waits for room
        await self._inner.sendto(data, host, port)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await self._inner.receive()

    def extra(self, attribute: Any, *default: Any) -> Any:
        """anyio's typed attributes of the socket (its raw socket...)."""
        return self._inner.extra(attribute, *default)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self._inner.__aexit__(exc_type, exc_val, exc_tb)
        return None


async def open_tcp(host: str, port: int, bound: str) -> anyio.abc.SocketStream:
    """Connect from ``bound``, the address this node listens on, so every
    packet of a node carries its own address (multi-homed hosts, firewall
    rules). anyio's ``connect_tcp(local_host=...)`` leaks its socket when
    cancelled while binding, so the socket is made here."""
    try:
        remote = ipaddress.ip_address(host)
        local = ipaddress.ip_address(bound)
    except ValueError:
        return await anyio.connect_tcp(host, port)  # a host name, or no single address
    if local.is_unspecified or local.version != remote.version:
        return await anyio.connect_tcp(host, port)
    family = socket.AF_INET6 if remote.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((bound, 0))
        error = sock.connect_ex((host, port))
        if error == errno.EINPROGRESS:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        return await anyio.abc.SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise
