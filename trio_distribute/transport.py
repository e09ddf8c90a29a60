"""Connections between nodes: dialling, accepting, and which to keep.

One connection per peer. This module listens and dials (through the node's
network), admits incoming connections into a bounded table of pending
handshakes, drives the sans-IO handshake
(:mod:`trio_distribute._proto.handshake`) with TLS around it when
configured, resolves simultaneous connects, keeps the address book and the
table of connections, routes each decoded frame to a handler chosen by its
kind, and sends ticks so that a silent peer is noticed. The connection
itself -- framing, the write and read loops, backpressure and the bulk
path -- is :mod:`trio_distribute._connection`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from . import _tls as tls
from . import codec
from ._addresses import parse_target
from ._backend import running_on_trio
from ._connection import GATHER_ABOVE, Connection, DirectHandler, FrameHandler
from ._network import REAL_NETWORK, NodeNetwork
from ._node_events import NodeEventBus, PeerAddress, PeerDown, PeerUp
from ._proto.frames import MAX_PREAUTH_FRAME, FrameDecoder, frame
from ._proto.handshake import (
    HandshakeCompleted,
    HandshakeEvent,
    HandshakeFailed,
    HandshakeMachine,
    HandshakeState,
    PeerAuthenticated,
    Role,
)
from ._proto.kinds import Kind
from ._ratelimit import LogLimiter
from ._sliced_decode import decode_sliced
from .config import NodeConfig
from .errors import (
    AuthenticationError,
    ConnectError,
    DecodeError,
    HandshakeError,
    MessageTooLargeError,
    NodeDownError,
)
from .monitor import NodeDownReason
from .telemetry import ConnectFailed

# Connection and GATHER_ABOVE are re-exported: the services know them from here.
__all__ = ["GATHER_ABOVE", "Connection", "Kind", "Transport"]

#: Reasons a peer may give in its goodbye frame.
_BYE_REASONS = frozenset(
    {
        NodeDownReason.DISCONNECT,
        NodeDownReason.SHUTDOWN,
        NodeDownReason.MEMBER_DEAD,
        NodeDownReason.MEMBER_LEFT,
    }
)

logger = logging.getLogger("trio_distribute.transport")

PROTOCOL_VERSIONS = (2,)

_LENGTH = struct.Struct(">I")
#: Pause after the listener fails to accept (e.g. out of file descriptors),
#: so a persistent error does not spin.
ACCEPT_RETRY_DELAY = 0.1
#: Connections accepted in one go before yielding. Accepting (and shedding)
#: in batches drains a flooded accept queue quickly, so a real peer queued
#: behind an attacker's sockets is reached in time.
ACCEPT_BATCH = 256


class _LostTieBreak(Exception):
    """Our connection attempt lost a simultaneous-connect tie-break."""


class _AlreadyConnected(Exception):
    """A dial by address reached a node we are already connected to (or
    dialling by name): that connection is the one to use, and completing
    this one would replace it, a node-down and node-up for nothing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@attrs.define(eq=False)
class _PendingHandshake:
    """An accepted connection that has not authenticated yet."""

    host: str
    scope: anyio.CancelScope


@attrs.define(eq=False)
class _DialAttempt:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    superseded: bool = False
    #: The user's own ``connect`` (it may end a disconnect).
    explicit: bool = False
    #: The peer's name, once the handshake told it (a dial by address).
    peer: str | None = None


@attrs.define(eq=False, kw_only=True)
class Transport:
    """All connections of one node, and the listener that accepts them."""

    name: str
    creation: int
    cookie: bytes = attrs.field(repr=False)
    config: NodeConfig
    ssl_context: ssl.SSLContext | None = None
    client_ssl_context: ssl.SSLContext | None = None
    #: Where peers coming up, going down and telling their address are
    #: published for the node's services.
    events: NodeEventBus
    #: Where listening, dialling and datagrams go (the operating system's
    #: TCP/UDP unless a simulated network is given).
    network: NodeNetwork = REAL_NETWORK

    address: tuple[str, int] = ("", 0)
    connections: dict[str, Connection] = attrs.field(factory=dict)
    addresses: dict[str, tuple[str, int]] = attrs.field(factory=dict)
    drops: dict[str, int] = attrs.field(factory=dict)
    closed_totals: list[int] = attrs.field(factory=lambda: [0, 0, 0, 0])

    _handlers: dict[int, FrameHandler] = attrs.field(factory=dict)
    _dialing: dict[str, _DialAttempt] = attrs.field(factory=dict)
    _up_events: dict[str, anyio.Event] = attrs.field(factory=dict)
    #: Unauthenticated incoming connections, oldest first.
    _pending: OrderedDict[object, _PendingHandshake] = attrs.field(factory=OrderedDict)
    _pending_by_host: dict[str, int] = attrs.field(factory=dict)
    #: Peers the user disconnected (``{name: creation}``), on either side:
    #: nothing but the user's own ``connect`` or the peer's restart (a new
    #: creation) connects them again.
    disconnected: dict[str, int] = attrs.field(factory=dict)
    #: Log lines a remote party can trigger: at most one per cause per second.
    log_limiter: LogLimiter = attrs.field(factory=lambda: LogLimiter(logger))
    #: Peers this node refuses to connect with (see :meth:`block`).
    blocked: set[str] = attrs.field(factory=set)
    #: Told of every counted drop, with what is known of it (telemetry).
    on_drop: Callable[[str, object], None] | None = None
    #: Publishes a notable outcome (telemetry; a no-op until installed).
    on_event: Callable[[object], None] = lambda event: None
    _task_group: anyio.abc.TaskGroup | None = None
    _listener: anyio.abc.Listener[Any] | None = None
    _fast_path: bool = False
    stopping: bool = False
    #: The backend's own socket waits (bound at start, used by the fast path).
    wait_readable: Callable[[socket.socket], Awaitable[None]] = anyio.wait_readable

    def __repr__(self) -> str:
        host, port = self.address
        return f"<Transport {self.name} on {host}:{port}: {len(self.connections)} connected>"

    wait_writable: Callable[[socket.socket], Awaitable[None]] = anyio.wait_writable
    checkpoint: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint
    #: See :meth:`add_direct_dispatch` (empty: every frame is decoded).
    direct_handlers: dict[int, tuple[bytes, DirectHandler]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self._handlers[Kind.INFO] = self._handle_info
        self._handlers[Kind.BYE] = self._handle_bye

    # ---------------------------------------------------------------- set-up

    def add_direct_dispatch(self, prefix: bytes, handler: DirectHandler) -> None:
        """Offer every frame whose payload starts with ``prefix`` to
        ``handler`` before decoding it (the readers call it in place of
        :meth:`dispatch`); a handler that returns ``False`` leaves the frame
        to :meth:`dispatch`. For the commonest frames (a SEND to a local
        process, a call's request and its reply), whose heads the handlers
        read by hand.

        The prefixes are told apart by their first byte, the frame's array
        head (one lookup per frame): frames of one length share a handler.

        Raises:
            ValueError: a prefix with that first byte is taken.
        """
        if not prefix:
            raise ValueError("a direct-dispatch prefix must not be empty")
        if prefix[0] in self.direct_handlers:
            raise ValueError(f"a direct-dispatch prefix starting with {prefix[:1]!r} is taken")
        self.direct_handlers[prefix[0]] = (prefix, handler)

    def add_handler(self, kind: int, handler: FrameHandler) -> None:
        """Route frames whose first element is ``kind`` to ``handler``.

        Handlers run in the connection's reader task and must not block.
        """
        if kind in self._handlers:
            raise ValueError(f"a handler for frame kind {kind} is already installed")
        self._handlers[kind] = handler

    async def start(self, task_group: anyio.abc.TaskGroup, host: str, port: int) -> None:
        """Bind the listener and start accepting and ticking."""
        self._task_group = task_group
        if self.ssl_context is not None and not self.network.supports_tls:
            raise ValueError(f"TLS (ssl_context) is not supported on {self.network!r}")
        self._fast_path = running_on_trio() and self.ssl_context is None
        if self._fast_path:
            import trio

            self.wait_readable = trio.lowlevel.wait_readable
            self.wait_writable = trio.lowlevel.wait_writable
            self.checkpoint = trio.lowlevel.checkpoint
        try:
            listener = await self.network.listen(host, port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        self.address = (str(sockname[0]), int(sockname[1]))
        self._listener = listener
        raw_sockets = [
            sub.extra(anyio.abc.SocketAttribute.raw_socket, None)
            for sub in getattr(listener, "listeners", [listener])
        ]
        if all(isinstance(r, socket.socket) for r in raw_sockets):
            task_group.start_soon(self._serve_raw, listener, raw_sockets)
        else:
            task_group.start_soon(self._serve, listener)
        task_group.start_soon(self._ticker)

    @property
    def pending_handshakes(self) -> int:
        """Incoming connections not authenticated yet."""
        return len(self._pending)

    async def _serve_raw(
        self, listener: anyio.abc.Listener[Any], raw_sockets: list[socket.socket]
    ) -> None:
        """Accept on the listening sockets directly, in batches, deciding
        each connection's admission before any task is spawned for it."""
        async with listener, anyio.create_task_group() as tg:
            for raw in raw_sockets:
                tg.start_soon(self._accept_loop, raw)

    async def _accept_loop(self, raw: socket.socket) -> None:
        assert self._task_group is not None
        while True:
            await anyio.wait_readable(raw)
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, remote = raw.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    # EMFILE, ENOBUFS, ECONNABORTED...: the listener itself
                    # is fine, and a node must not end because accept failed.
                    if self.stopping:
                        return
                    self.count_drop("accept_failed")
                    self.log_limiter.warning("accept_failed", "accept failed: %r", exc)
                    await anyio.sleep(ACCEPT_RETRY_DELAY)
                    break
                key = self._admit(str(remote[0]) if isinstance(remote, tuple) else str(remote))
                if key is None:
                    sock.close()
                    continue
                self._task_group.start_soon(self._handle_accepted, sock, key)

    async def _handle_accepted(self, sock: socket.socket, key: object) -> None:
        try:
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = await anyio.abc.SocketStream.from_socket(sock)
        except BaseException:
            self._forget_pending(key)
            sock.close()
            raise
        await self._handle_incoming(stream, key)

    async def _serve(self, listener: anyio.abc.Listener[Any]) -> None:
        async with listener:
            while True:
                failure: BaseException | None = None
                try:
                    await listener.serve(self._handle_incoming, task_group=self._task_group)
                except* (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as group:
                    # EMFILE, ENOBUFS, ECONNABORTED...: the listener itself
                    # is fine, and a node must not end because accept failed
                    # (a listener of several sockets reports it in a group).
                    failure = group.exceptions[0]
                if self.stopping:
                    return
                self.count_drop("accept_failed")
                self.log_limiter.warning("accept_failed", "accept failed: %r", failure)
                await anyio.sleep(ACCEPT_RETRY_DELAY)

    async def stop(self) -> None:
        """Say goodbye to every peer, flush for at most ``shutdown_timeout``
        seconds (even if cancelled), and close everything."""
        self.stopping = True
        connections = list(self.connections.values())
        for conn in connections:
            if not conn.closed:
                with contextlib.suppress(NodeDownError):
                    conn.write(self.encode_frame([Kind.BYE, NodeDownReason.SHUTDOWN]))
        with anyio.move_on_after(self.config.shutdown_timeout, shield=True):
            for conn in connections:
                await conn.drain()
        for conn in [*connections, *self.connections.values()]:
            conn.close(NodeDownReason.SHUTDOWN)
        for pending in self._pending.values():
            pending.scope.cancel()

    # ----------------------------------------------------------------- frames

    def encode_frame(self, item: list[Any]) -> bytes:
        """Encode ``item`` as one length-prefixed frame.

        Raises:
            EncodeError: a value in ``item`` cannot travel.
            MessageTooLargeError: the frame is over ``max_message_size``.
        """
        payload = codec.encode(item)
        codec.encoded_size_ok(payload, self.config.max_message_size)
        return frame(payload)

    def encode_id_frame(self, item: list[Any]) -> bytes:
        """:meth:`encode_frame` for a frame that starts with pids and refs
        (calls, replies): the same bytes, with those taken from caches
        (see :func:`trio_distribute.codec.encode_items`).

        Raises:
            EncodeError: a value in ``item`` cannot travel.
            MessageTooLargeError: the frame is over ``max_message_size``.
        """
        parts = codec.encode_items(item)
        size = sum(map(len, parts))
        limit = self.config.max_message_size
        if size > limit:
            raise MessageTooLargeError(size, limit)
        return b"".join((_LENGTH.pack(size), *parts))

    def dispatch(self, conn: Connection, payload: bytes | bytearray) -> None:
        """Decode one frame and run its handler (in the reader task)."""
        try:
            item = codec.decode(payload)
        except DecodeError as exc:
            self._undecodable(conn, exc)
            return
        # The checks of _handle_item, inline: this runs once per message.
        if not isinstance(item, list) or not item or type(item[0]) is not int:
            self._protocol_violation(conn, f"frame is not [kind, ...]: {type(item).__name__}")
            return
        handler = self._handlers.get(item[0])
        if handler is None:
            self._protocol_violation(conn, f"unknown frame kind {item[0]}")
            return
        try:
            handler(conn, item)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            self._protocol_violation(conn, f"malformed frame of kind {item[0]}: {exc!r}")

    async def dispatch_sliced(self, conn: Connection, payload: bytes | bytearray) -> None:
        """:meth:`dispatch` for a big frame, decoded in slices that yield."""
        try:
            item = await decode_sliced(payload)
        except DecodeError as exc:
            self._undecodable(conn, exc)
            return
        if not conn.closed:
            self._handle_item(conn, item)

    def _undecodable(self, conn: Connection, exc: DecodeError) -> None:
        # The framing is intact, so only this frame is lost.
        self.count_drop("decode_error")
        self.log_limiter.warning(
            "decode_error", "dropped an undecodable frame from %s: %s", conn.peer, exc
        )

    def _handle_item(self, conn: Connection, item: object) -> None:
        if not isinstance(item, list) or not item or type(item[0]) is not int:
            self._protocol_violation(conn, f"frame is not [kind, ...]: {type(item).__name__}")
            return
        handler = self._handlers.get(item[0])
        if handler is None:
            self._protocol_violation(conn, f"unknown frame kind {item[0]}")
            return
        try:
            handler(conn, item)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            self._protocol_violation(conn, f"malformed frame of kind {item[0]}: {exc!r}")

    def _protocol_violation(self, conn: Connection, detail: str) -> None:
        self.count_drop("protocol_error")
        self.log_limiter.warning(
            "protocol_error", "closing connection to %s: %s", conn.peer, detail
        )
        conn.close(NodeDownReason.PROTOCOL_ERROR)

    def count_drop(self, cause: str, detail: object = None) -> None:
        """Count one dropped frame, message or connection by cause;
        ``detail`` (a source address, a pid) goes to the telemetry event."""
        self.drops[cause] = self.drops.get(cause, 0) + 1
        if self.on_drop is not None:
            self.on_drop(cause, detail)

    def _handle_info(self, conn: Connection, item: list[Any]) -> None:
        info = item[1]
        host, port = info["host"], info["port"]
        if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
            raise ValueError("INFO needs a str host and a port number")
        self.addresses[conn.peer] = (host, port)
        self.events.publish(PeerAddress(conn.peer))

    def _handle_bye(self, conn: Connection, item: list[Any]) -> None:
        reason = item[1]
        if reason not in _BYE_REASONS:
            raise ValueError(f"unknown goodbye reason {reason!r}")
        conn.peer_bye = reason
        if reason == NodeDownReason.DISCONNECT:
            # The peer's user disconnected us: it sticks on this side too.
            self.disconnected[conn.peer] = conn.peer_creation
        # Acted on as it is read: nothing the socket does next (a reset, a
        # failed write) can turn a goodbye into a "connection_closed".
        conn.close(reason)

    # --------------------------------------------------------------- liveness

    async def _ticker(self) -> None:
        # Erlang's scheme: four intervals per tick_timeout; a connection
        # that received nothing for four intervals in a row is down, and
        # one that sent nothing in an interval gets a tick.
        interval = self.config.tick_timeout / 4
        while True:
            await anyio.sleep(interval)
            for conn in list(self.connections.values()):
                conn.tick(interval)

    # ------------------------------------------------------------ connecting

    async def connect(self, target: str, *, explicit: bool = False) -> str:
        """Connect to ``target`` (see :meth:`Node.connect`); return its name.

        ``explicit`` is the user's own ``connect``: it lifts a disconnect.
        Every other caller (membership, a send, a ping) is refused with
        ``ConnectError`` for a peer the user disconnected.
        """
        name, host, port = parse_target(target)
        if name == self.name:
            return self.name
        if name in self.blocked:
            raise ConnectError(f"connections with {name} are blocked")
        if name is not None and name in self.connections:
            return name
        if name is not None and name in self.disconnected:
            if not explicit:
                raise ConnectError(f"{name} was disconnected on purpose; connect to it again")
            del self.disconnected[name]
        if host is None or port is None:
            assert name is not None
            known = self.addresses.get(name)
            if known is None:
                raise ConnectError(f"no address known for node {name!r}; use 'name@host:port'")
            host, port = known
        if name is not None and name in self._dialing:
            # Someone is already dialling it: share that attempt's outcome.
            await self._dialing[name].done.wait()
            if name in self.connections:
                return name
        attempt = _DialAttempt(explicit=explicit)
        if name is not None:
            self._dialing[name] = attempt
        try:
            with anyio.fail_after(self.config.handshake_timeout):
                try:
                    with attempt.scope:
                        return await self._dial(host, port, name, attempt)
                except _AlreadyConnected as exc:
                    other = self._dialing.get(exc.name)
                    if other is not None and other is not attempt:
                        await other.done.wait()
                    if exc.name in self.connections:
                        return exc.name
                    raise ConnectError(f"{target}: another attempt to reach it failed") from None
                except _LostTieBreak as exc:
                    if name is None and attempt.peer is None:
                        raise HandshakeError(
                            f"{target} refused the connection: it is connecting to us"
                        ) from exc
                # Our attempt lost a simultaneous-connect tie-break, or was
                # superseded by the peer's: its connection is the one to use.
                # A dial by address learned the name mid-handshake.
                peer = name or attempt.peer
                if peer is None:
                    raise ConnectError(f"connecting to {target} was abandoned")
                await self._wait_up(peer)
                return peer
        except TimeoutError:
            self.on_event(ConnectFailed(target, "timed out"))
            raise ConnectError(
                f"connecting to {target} timed out after {self.config.handshake_timeout}s"
            ) from None
        finally:
            attempt.done.set()
            # By name, or under the name learned mid-handshake (a dial by
            # address): a stale entry would make every later connection from
            # that peer look like a crossing attempt and be refused.
            for peer in [peer for peer, other in self._dialing.items() if other is attempt]:
                del self._dialing[peer]

    async def _wait_up(self, name: str) -> None:
        while name not in self.connections:
            event = self._up_events.setdefault(name, anyio.Event())
            await event.wait()

    async def _dial(self, host: str, port: int, expected: str | None, attempt: _DialAttempt) -> str:
        try:
            stream: anyio.abc.ByteStream = await self.network.dial(
                host, port, local_host=self.address[0]
            )
            if self.ssl_context is not None:
                stream = await tls.client_side(
                    stream, hostname=host, context=self.client_ssl_context or self.ssl_context
                )
        except (OSError, anyio.BrokenResourceError) as exc:
            self.on_event(ConnectFailed(f"{host}:{port}", str(exc)))
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        machine = HandshakeMachine(
            role=Role.INITIATOR,
            local_name=self.name,
            creation=self.creation,
            cookie=self.cookie,
            versions=PROTOCOL_VERSIONS,
            expected_peer=expected,
        )
        machine.initiate()
        try:
            done, leftover = await self._handshake(stream, machine, attempt)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        if done.name in self.blocked:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise ConnectError(f"connections with {done.name} are blocked")
        if self.stopping:
            # Completed after stop() said goodbye: nothing would close it.
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise ConnectError("this node is stopping")
        conn = self._new_connection(stream, done, leftover, initiated_by_me=True)
        self._register(conn)
        return conn.peer

    async def _handle_incoming(self, stream: anyio.abc.ByteStream, key: object = None) -> None:
        try:
            try:
                await self._serve_incoming(stream, key)
            finally:
                self._forget_pending(key)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            # A socket error before the connection was registered (its own
            # run() handles them after): this one socket is lost, not the node.
            self.count_drop("handshake_socket_error")
            self.log_limiter.log(
                logging.INFO, "handshake_socket_error", "an incoming handshake failed: %r", exc
            )
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
        except BaseException:
            # Cancelled mid-handshake (the node is stopping) or failed: the
            # accepted socket must not outlive its task.
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
            raise

    def _admit(self, host: str) -> object | None:
        """Take a pending-handshake slot for a connection from ``host``.

        Returns the slot's key, or ``None`` if the connection must be closed
        at once: the node is stopping, or ``host`` already holds
        ``max_pending_handshakes_per_host`` slots (counted as
        ``handshake_refused_per_host``). When the whole table is full, a
        connection from an address that would still hold fewer slots than
        the address holding the most takes the oldest of those
        (``handshake_evicted``); any other is refused
        (``handshake_refused_full``). An attacker holding sockets open, or
        reopening them as fast as they close, then only ever sheds its own
        (cheaply: a refusal costs no task), while a real peer, which holds
        one slot for a round trip or two, gets through -- unless the
        attacker has as many addresses as the table has slots.
        """
        if self.stopping:
            self.count_drop("handshake_refused_stopping", host)
            return None
        if self._pending_by_host.get(host, 0) >= self.config.max_pending_handshakes_per_host:
            self.count_drop("handshake_refused_per_host", host)
            self.log_limiter.log(
                logging.INFO,
                "handshake_refused_per_host",
                "refused a connection from %s: too many pending handshakes from there",
                host,
            )
            return None
        if len(self._pending) >= self.config.max_pending_handshakes:
            # Many sockets from one place are the attack, a lone one a peer.
            most = max(self._pending_by_host.values())
            if self._pending_by_host.get(host, 0) + 1 >= most:
                self.count_drop("handshake_refused_full", host)
                self.log_limiter.log(
                    logging.INFO,
                    "handshake_refused_full",
                    "refused a connection from %s: too many pending handshakes",
                    host,
                )
                return None
            oldest = next(
                p for p in self._pending.values() if self._pending_by_host[p.host] == most
            )
            self._evict(oldest, "handshake_evicted")
        key = object()
        self._pending[key] = _PendingHandshake(host=host, scope=anyio.CancelScope())
        self._pending_by_host[host] = self._pending_by_host.get(host, 0) + 1
        return key

    def _evict(self, pending: _PendingHandshake, cause: str) -> None:
        for key, value in self._pending.items():
            if value is pending:
                self._forget_pending(key)
                break
        pending.scope.cancel()
        self.count_drop(cause, pending.host)
        self.log_limiter.log(logging.INFO, cause, "shed a pending handshake (%s)", cause)

    def _forget_pending(self, key: object) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        left = self._pending_by_host[pending.host] - 1
        if left:
            self._pending_by_host[pending.host] = left
        else:
            del self._pending_by_host[pending.host]

    async def _serve_incoming(self, stream: anyio.abc.ByteStream, key: object) -> None:
        if key is None:  # accepted through a listener: admit it now
            remote = stream.extra(anyio.abc.SocketAttribute.remote_address, None)
            key = self._admit(str(remote[0]) if isinstance(remote, tuple) else str(remote))
            if key is None:
                await stream.aclose()
                return
        pending = self._pending.get(key)
        if pending is None:  # evicted before this task started
            await anyio.aclose_forcefully(stream)
            return
        scope, source = pending.scope, pending.host
        del pending
        machine = HandshakeMachine(
            role=Role.ACCEPTOR,
            local_name=self.name,
            creation=self.creation,
            cookie=self.cookie,
            versions=PROTOCOL_VERSIONS,
        )
        done: HandshakeCompleted | None = None
        plain = stream
        try:
            with scope, anyio.fail_after(self.config.handshake_timeout):
                if self.ssl_context is not None:
                    # TLS inside the slot and the deadline: a socket that
                    # never completes TLS holds a slot like any other.
                    stream = await tls.server_side(plain, context=self.ssl_context)
                done, _ = await self._handshake(stream, machine, None)
        except tls.TLS_HANDSHAKE_ERRORS as exc:
            self.count_drop("tls_handshake_failed")
            self.log_limiter.log(
                logging.INFO, "tls_handshake_failed", "an incoming TLS handshake failed: %r", exc
            )
        except TimeoutError:
            self.count_drop("handshake_timeout")
            self.log_limiter.log(
                logging.INFO, "handshake_timeout", "an incoming handshake timed out"
            )
        except HandshakeError as exc:
            cause = "auth_failed" if isinstance(exc, AuthenticationError) else "handshake_failed"
            self.count_drop(cause, source)
            self.log_limiter.warning(
                cause,
                "rejected an incoming connection from %s: %s: %s",
                source,
                type(exc).__name__,
                exc,
            )
        finally:
            self._forget_pending(key)
        if done is None:
            # Timed out, refused or evicted (the scope was cancelled).
            await anyio.aclose_forcefully(plain)
            return
        conn = self.connections.get(done.name)
        if conn is None or conn.stream is not stream:
            await stream.aclose()
            return
        await conn.run()

    async def _handshake(
        self,
        stream: anyio.abc.ByteStream,
        machine: HandshakeMachine,
        attempt: _DialAttempt | None,
    ) -> tuple[HandshakeCompleted, bytes]:
        """Run ``machine`` over ``stream`` until it completes or fails."""
        while True:
            events: list[HandshakeEvent] = []
            peer = machine.peer_name
            if attempt is not None and peer and peer != self.name:
                # Checked before our proof goes out, so the peer never
                # accepts a connection we then drop. A dial by address that
                # reached a node we are connected to (or dialling by name)
                # stops here.
                if peer in self.disconnected:
                    # A dial by address that turned out to reach a node the
                    # user disconnected: only the user's own connect may.
                    if not attempt.explicit:
                        raise ConnectError(f"{peer} was disconnected on purpose")
                    del self.disconnected[peer]
                other = self._dialing.get(peer)
                if peer in self.connections or (other is not None and other is not attempt):
                    raise _AlreadyConnected(peer)
                # Register the attempt by name as soon as we learn it, so a
                # crossing attempt from that peer is tie-broken correctly.
                self._dialing[peer] = attempt
                attempt.peer = peer
            outgoing = machine.data_to_send()
            if outgoing:
                try:
                    await stream.send(outgoing)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    events = machine.receive_data(b"")
            if not events:
                try:
                    data = await stream.receive(MAX_PREAUTH_FRAME * 2)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    data = b""
                events = machine.receive_data(data)
            if not events and machine.state is HandshakeState.FAILED:
                raise HandshakeError("the handshake failed")
            for event in events:
                if isinstance(event, PeerAuthenticated):
                    reason = self._acceptor_decision(event)
                    if reason is None:
                        accepted = machine.accept()
                        if not accepted or not isinstance(accepted[0], HandshakeCompleted):
                            raise HandshakeError(f"{event.name} hung up during the handshake")
                        done = accepted[0]
                        conn = self._new_connection(
                            stream, done, machine.leftover(), initiated_by_me=False
                        )
                        # The ack goes through the connection's ordered write
                        # path, so it precedes every frame sent after it; and
                        # there is no await between the decision and the
                        # table update.
                        conn.write(machine.data_to_send())
                        conn.frames_out -= 1
                        self._register(conn)
                        return done, b""
                    machine.reject(reason)
                    await self._flush_quietly(stream, machine)
                    raise HandshakeError(f"refused a connection from {event.name}: {reason}")
                elif isinstance(event, HandshakeCompleted):
                    return event, machine.leftover()
                elif isinstance(event, HandshakeFailed):
                    await self._flush_quietly(stream, machine)
                    if event.reason == "simultaneous":
                        raise _LostTieBreak from event.error
                    raise event.error

    async def _flush_quietly(self, stream: anyio.abc.ByteStream, machine: HandshakeMachine) -> None:
        """Best effort: send the machine's last words (a reject) before closing."""
        outgoing = machine.data_to_send()
        if outgoing:
            with (
                anyio.move_on_after(0.5),
                contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError),
            ):
                await stream.send(outgoing)

    def _acceptor_decision(self, hello: PeerAuthenticated) -> str | None:
        """Decide whether an authenticated incoming connection may stay.

        Returns ``None`` to accept, or the reject reason. Both nodes apply
        the same rule, so exactly one of two crossing connections survives:
        the one started by the node with the greater name (as Erlang does).
        """
        name = hello.name
        if self.stopping:
            return "shutting down"
        if name in self.blocked:
            return "blocked"
        known = self.disconnected.get(name)
        if known is not None:
            # Only the peer's user dials a node it disconnected (its own
            # membership does not), or the peer restarted: either way the
            # disconnect is over.
            del self.disconnected[name]
        existing = self.connections.get(name)
        if existing is not None:
            if existing.peer_creation != hello.creation:
                return None  # the peer restarted: replace the stale connection
            if existing.initiated_by_me and self.name > name:
                return "simultaneous"  # ours won a crossing; this one lost
            return None  # the peer gave up on the old connection
        attempt = self._dialing.get(name)
        if attempt is not None:
            if self.name > name:
                return "simultaneous"
            attempt.superseded = True
            attempt.scope.cancel()
        return None

    def _new_connection(
        self,
        stream: anyio.abc.ByteStream,
        done: HandshakeCompleted,
        leftover: bytes,
        *,
        initiated_by_me: bool,
    ) -> Connection:
        sock: socket.socket | None = None
        if self._fast_path:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
            if isinstance(raw, socket.socket):
                sock = raw
        return Connection(
            peer=done.name,
            peer_creation=done.creation,
            initiated_by_me=initiated_by_me,
            version=done.version,
            transport=self,
            stream=stream,
            sock=sock,
            decoder=FrameDecoder(self.config.max_message_size),
            initial_data=leftover,
        )

    def _register(self, conn: Connection) -> None:
        old = self.connections.get(conn.peer)
        if old is not None:
            # Erlang's order: the old connection's node-down comes before
            # the new connection's node-up.
            reason = (
                NodeDownReason.REPLACED
                if old.peer_creation != conn.peer_creation
                else NodeDownReason.CONNECTION_CLOSED
            )
            logger.debug(
                "%s: a new connection to %s (initiated by %s) replaces one initiated by %s",
                self.name,
                conn.peer,
                "us" if conn.initiated_by_me else "it",
                "us" if old.initiated_by_me else "it",
            )
            old.close(reason)
        self.connections[conn.peer] = conn
        conn.write(
            self.encode_frame([Kind.INFO, {"host": self.address[0], "port": self.address[1]}])
        )
        if conn.initiated_by_me:
            assert self._task_group is not None
            self._task_group.start_soon(conn.run)
        event = self._up_events.pop(conn.peer, None)
        if event is not None:
            event.set()
        self.events.publish(PeerUp(conn.peer))

    def frame_buffers_drawn(self, *, besides: Connection) -> int:
        """Bytes of incomplete frames (and bulk buffers kept for reuse) the
        open connections other than ``besides`` hold from the node's budget
        (``max_frame_buffers``)."""
        return sum(
            conn.frame_buffer_drawn + conn.bulk_buffer_held
            for conn in self.connections.values()
            if conn is not besides and not conn.closed
        )

    def release_bulk_buffers(self) -> None:
        """Let every connection drop the bulk buffer it keeps for reuse
        (a frame needs the room in ``max_frame_buffers``)."""
        for conn in self.connections.values():
            conn.release_bulk_buffer()

    def connection_closed(self, conn: Connection, reason: str) -> None:
        """Called once by a connection as it closes."""
        totals = self.closed_totals
        totals[0] += conn.bytes_in
        totals[1] += conn.bytes_out
        totals[2] += conn.frames_in
        totals[3] += conn.frames_out
        if self.connections.get(conn.peer) is conn:
            del self.connections[conn.peer]
            self.events.publish(PeerDown(conn.peer, reason))

    async def block(self, name: str) -> None:
        """Refuse every connection with ``name`` (dialled or accepted) and
        drop the current one, until :meth:`unblock`. For partition tests:
        an in-process stand-in for a firewall rule."""
        self.blocked.add(name)
        conn = self.connections.get(name)
        if conn is not None:
            conn.close(NodeDownReason.CONNECTION_CLOSED)

    def unblock(self, name: str) -> None:
        """Allow connections with ``name`` again (nothing reconnects by itself)."""
        self.blocked.discard(name)

    async def disconnect(self, name: str) -> None:
        """Close the connection to ``name`` with a goodbye (both sides see
        ``disconnect``), and keep it closed: nothing but an explicit
        ``connect`` (or the peer's restart) connects the two again."""
        conn = self.connections.get(name)
        if conn is not None:
            self.disconnected[name] = conn.peer_creation
            await conn.close_gracefully(
                NodeDownReason.DISCONNECT, timeout=self.config.shutdown_timeout
            )
        else:
            known = self.disconnected.get(name)
            self.disconnected[name] = 0 if known is None else known

    async def close_peer(self, name: str, reason: str) -> None:
        """Close the connection to ``name`` with a goodbye giving ``reason``
        (membership: ``member_dead``, ``member_left``); not sticky."""
        conn = self.connections.get(name)
        if conn is not None:
            await conn.close_gracefully(reason, timeout=self.config.shutdown_timeout)

    def forget(self, name: str) -> None:
        """Forget that ``name`` was disconnected (``membership.remove``)."""
        self.disconnected.pop(name, None)

    # ------------------------------------------- what the node's services use

    def connection(self, name: str) -> Connection | None:
        """The connection to ``name`` if there is one now."""
        return self.connections.get(name)

    def is_connected(self, name: str) -> bool:
        """Whether a connection to ``name`` is up now."""
        return name in self.connections

    def peers(self) -> list[str]:
        """The names of the nodes connected now, sorted."""
        return sorted(self.connections)

    def all_connections(self) -> list[Connection]:
        """The connections up now, sorted by peer name (statistics)."""
        return [self.connections[name] for name in sorted(self.connections)]

    def send(self, name: str, data: bytes) -> bool:
        """Queue an encoded frame to ``name``; ``False`` if not connected
        (nothing is dialled: callers that need the peer use
        :meth:`connection_for`)."""
        conn = self.connections.get(name)
        if conn is None:
            return False
        conn.write(data)
        return True

    def broadcast(self, data: bytes) -> int:
        """Queue an encoded frame to every connected node; how many."""
        conns = list(self.connections.values())
        for conn in conns:
            conn.write(data)
        return len(conns)

    def knows_address(self, name: str) -> bool:
        """Whether ``name`` has told us (or membership learned) where it listens."""
        return name in self.addresses

    def address_of(self, name: str) -> tuple[str, int] | None:
        """Where ``name`` listens, if known."""
        return self.addresses.get(name)

    def name_listening_at(self, host: str, port: int) -> str | None:
        """The node known to listen at ``host:port``, if any."""
        for name, known in self.addresses.items():
            if known == (host, port):
                return name
        return None

    def learn_address(self, name: str, host: str, port: int) -> None:
        """Remember where ``name`` listens (membership hears it in gossip)."""
        self.addresses[name] = (host, port)

    def was_disconnected(self, name: str) -> bool:
        """Whether the user disconnected ``name`` (nothing redials it)."""
        return name in self.disconnected

    def is_blocked(self, name: str) -> bool:
        """Whether connections with ``name`` are refused (:meth:`block`)."""
        return name in self.blocked

    async def connection_for(self, name: str) -> Connection:
        """The connection to ``name``, dialling it if its address is known.

        The one place a node connects on demand (a send, a link, a call, a
        ping, a monitor). A peer the user disconnected is not dialled.

        Raises:
            NodeDownError: not connected and cannot be reached.
        """
        conn = self.connections.get(name)
        if conn is not None:
            return conn
        if name not in self.addresses:
            raise NodeDownError(name, "not connected and no address known")
        try:
            await self.connect(name)
        except ConnectError as exc:
            raise NodeDownError(name, f"cannot connect: {exc}") from exc
        conn = self.connections.get(name)
        if conn is None:
            raise NodeDownError(name, "went down while connecting")
        return conn

    @property
    def started(self) -> bool:
        """Whether the node runs (it has a task group to start tasks in)."""
        return self._task_group is not None

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        """Run ``fn(*args)`` in the node's task group (it lives as long as
        the node)."""
        assert self._task_group is not None, "the node is not running"
        self._task_group.start_soon(fn, *args)
