"""Connections between nodes.

One TCP connection per peer. This module dials and accepts, drives the
sans-IO handshake (:mod:`trio_distribute._proto.handshake`), resolves
simultaneous connects, writes frames through a coalescing writer, reads
frames in bulk and hands each decoded frame to a handler chosen by its kind,
and sends ticks so that a silent peer is noticed.

The write path is where throughput is won (DESIGN 3a). A frame is written
straight to the socket, synchronously, when nothing else is queued: no task
hop and no scheduler pass for a lone message. A frame that follows another
direct write within ``DIRECT_WRITE_GAP`` (50 µs) is queued instead, so a
burst of sends made before the sender yields is joined into one write by the
writer task. While a write is pending, frames queue in a list; senders wait
(backpressure) only when that queue is over ``send_buffer_size`` bytes.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.tls import TLSListener, TLSStream

from . import codec
from ._backend import running_on_trio
from ._proto.frames import MAX_PREAUTH_FRAME, TICK, FrameDecoder, frame
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
from .config import NodeConfig
from .errors import (
    AuthenticationError,
    ConnectError,
    DecodeError,
    HandshakeError,
    NodeDownError,
    ProtocolError,
)
from .monitor import NodeDownReason

__all__ = ["Connection", "Kind", "Transport", "parse_target"]

logger = logging.getLogger("trio_distribute.transport")

PROTOCOL_VERSIONS = (2,)

#: A frame is written straight to the socket only if no other frame was in
#: the last this-many seconds; closer frames are coalesced by the writer.
DIRECT_WRITE_GAP = 50e-6
_monotonic = time.monotonic
_RECEIVE_SIZE = 65536


FrameHandler = Callable[["Connection", list[Any]], None]


def parse_target(target: str) -> tuple[str | None, str | None, int | None]:
    """Split ``"name@host:port"``, ``"host:port"`` or ``"name@host"``.

    Returns ``(name, host, port)`` with ``None`` for the parts not given.

    Raises:
        ValueError: the target has none of these forms.
    """
    from ._ids import validate_node_name

    if not isinstance(target, str) or not target:
        raise ValueError(f"connect target must be a non-empty str, got {target!r}")
    name: str | None = None
    rest = target
    if "@" in target:
        short, _, hostport = target.partition("@")
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            return validate_node_name(target), None, None
        name = validate_node_name(f"{short}@{host}")
        rest = hostport
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(
            f"connect target {target!r} must be 'name@host:port', 'host:port' or a known node name"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"connect target {target!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"connect target {target!r}: port {port} is out of range")
    return name, host, port


@attrs.define(eq=False, kw_only=True)
class Connection:
    """An authenticated connection to one peer node."""

    peer: str
    peer_creation: int
    initiated_by_me: bool
    version: int
    transport: Transport
    stream: anyio.abc.ByteStream
    #: The raw socket when frames may be written to it synchronously (trio,
    #: plain TCP); ``None`` means every write goes through ``stream.send``.
    sock: socket.socket | None
    decoder: FrameDecoder
    initial_data: bytes = b""

    closed: bool = False
    down_reason: str | None = None
    peer_bye: str | None = None
    # Liveness, checked by the transport's ticker (Erlang's net_ticktime).
    sent_since_tick: bool = False
    received_since_tick: bool = True
    silent_ticks: int = 0
    # Counters for statistics().
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0

    _out: list[bytes] = attrs.field(factory=list)
    _out_bytes: int = 0
    _writing: bool = False
    _last_direct: float = -1.0
    _writer_wake: anyio.Event = attrs.field(factory=anyio.Event)
    _wake_pending: bool = False
    _space: anyio.Event | None = None
    _drained: anyio.Event | None = None
    _cancel_scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)

    # ------------------------------------------------------------------ write

    def write(self, data: bytes) -> None:
        """Send one encoded frame without blocking.

        The frame is written at once if nothing is queued and no frame was
        written directly in the last ``DIRECT_WRITE_GAP`` seconds; otherwise
        it is queued, and the writer task sends everything queued in one
        write as soon as the sender yields. Frames keep their order.

        Raises:
            NodeDownError: the connection is closed.
        """
        if self.closed:
            raise NodeDownError(self.peer, self.down_reason or "connection closed")
        self.sent_since_tick = True
        self.frames_out += 1
        self.bytes_out += len(data)
        if not self._out and not self._writing and self.sock is not None:
            now = _monotonic()
            # A lone frame (a request, a reply) goes out now, with no task
            # hop; frames following it closely are batched instead of
            # paying a system call each.
            if now - self._last_direct >= DIRECT_WRITE_GAP:
                self._last_direct = now
                try:
                    sent = self.sock.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    logger.debug("write to %s failed: %r", self.peer, exc)
                    self.close(NodeDownReason.CONNECTION_CLOSED)
                    return
                if sent == len(data):
                    return
                data = data[sent:]
        self._out.append(data)
        self._out_bytes += len(data)
        self._wake_writer()

    def is_congested(self) -> bool:
        """True while more than ``send_buffer_size`` bytes wait to be written."""
        return self._out_bytes >= self.transport.config.send_buffer_size

    async def wait_for_space(self) -> None:
        """Wait until the outgoing queue is below its limit (backpressure).

        Raises:
            NodeDownError: the connection closed while waiting.
        """
        while self.is_congested() and not self.closed:
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()
        if self.closed:
            raise NodeDownError(self.peer, self.down_reason or "connection closed")

    async def drain(self) -> None:
        """Wait until every queued frame has been handed to the kernel."""
        while (self._out or self._writing) and not self.closed:
            if self._drained is None:
                self._drained = anyio.Event()
            await self._drained.wait()

    def _wake_writer(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self._writer_wake.set()

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            logger.debug("write to %s failed: %r", self.peer, exc)
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)

    async def _write_loop(self) -> None:
        while True:
            await self._writer_wake.wait()
            self._writer_wake = anyio.Event()
            self._wake_pending = False
            self._writing = True
            while self._out:
                data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                self._out_bytes = 0
                self._notify_space()
                await self._send_all(data)
            # Everything written: the next lone frame may go out directly.
            self._writing = False
            self._notify_space()
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    def _notify_space(self) -> None:
        if self._space is not None:
            self._space.set()
            self._space = None

    async def _send_all(self, data: bytes) -> None:
        if self.sock is None:
            await self.stream.send(data)
            return
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                sent = 0
            view = view[sent:]
            if view:
                await self.transport.wait_writable(self.sock)

    # ------------------------------------------------------------------- read

    async def _reader(self) -> None:
        dispatch = self.transport.dispatch
        decoder = self.decoder
        data = self.initial_data
        while True:
            payloads: list[bytes] = []
            if data:
                self.received_since_tick = True
                self.bytes_in += len(data)
                try:
                    payloads = decoder.feed(data)
                except ProtocolError as exc:
                    logger.warning("closing connection to %s: %s", self.peer, exc)
                    self.transport.count_drop("protocol_error")
                    self.close(NodeDownReason.PROTOCOL_ERROR)
                    return
                self.frames_in += len(payloads)
                for payload in payloads:
                    dispatch(self, payload)
                    if self.closed:
                        return
            try:
                if self.sock is not None:
                    data = await self._receive_raw(
                        self.sock, bool(payloads), len(data) < _RECEIVE_SIZE
                    )
                else:
                    data = await self.stream.receive(_RECEIVE_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
                return

    async def _receive_raw(self, sock: socket.socket, delivered: bool, drained: bool) -> bytes:
        """Read from the socket, waiting only if nothing is there.

        If the last read did not fill the buffer, the socket is (almost
        surely) empty: wait for it to become readable instead of spending a
        system call to find nothing; the wait is level-triggered, so bytes
        that came meanwhile end it at once. Otherwise, when the last read
        delivered frames, yield once first: the processes those frames woke
        run now, so a reply goes out before this task reads again. (trio's
        own ``receive`` yields after every read and tries the socket first.)
        """
        if drained:
            await self.transport.wait_readable(sock)
        elif delivered:
            await self.transport.checkpoint()
        while True:
            try:
                data = sock.recv(_RECEIVE_SIZE)
            except BlockingIOError:
                await self.transport.wait_readable(sock)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    # --------------------------------------------------------------- lifetime

    async def run(self) -> None:
        """Read and write until the connection closes; then clean up."""
        try:
            with self._cancel_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._writer)
                    await self._reader()
                    tg.cancel_scope.cancel()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            logger.debug("connection to %s broke: %r", self.peer, exc)
        except Exception:
            # A bug in a frame handler must not take the node down with it.
            logger.exception("connection to %s failed unexpectedly", self.peer)
        finally:
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    def close(self, reason: str) -> None:
        """Close now (without a goodbye) and report the node down once."""
        if self.closed:
            return
        self.closed = True
        self.down_reason = reason
        self._cancel_scope.cancel()
        self._notify_space()
        if self._drained is not None:
            self._drained.set()
        self.transport.connection_closed(self, reason)

    async def close_gracefully(self, reason: str, *, timeout: float = 1.0) -> None:
        """Tell the peer why we are closing, flush, then close."""
        if self.closed:
            return
        self.write(self.transport.encode_frame([Kind.BYE, reason]))
        with anyio.move_on_after(timeout):
            await self.drain()
        self.close(reason)


async def _open_tcp(host: str, port: int, bound: str) -> anyio.abc.SocketStream:
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


class _LostTieBreak(Exception):
    """Our connection attempt lost a simultaneous-connect tie-break."""


@attrs.define(eq=False)
class _DialAttempt:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    superseded: bool = False


@attrs.define(eq=False, kw_only=True)
class Transport:
    """All connections of one node, and the listener that accepts them."""

    name: str
    creation: int
    cookie: bytes
    config: NodeConfig
    ssl_context: ssl.SSLContext | None = None
    client_ssl_context: ssl.SSLContext | None = None
    on_node_up: Callable[[str], None]
    on_node_down: Callable[[str, str], None]

    address: tuple[str, int] = ("", 0)
    connections: dict[str, Connection] = attrs.field(factory=dict)
    addresses: dict[str, tuple[str, int]] = attrs.field(factory=dict)
    drops: dict[str, int] = attrs.field(factory=dict)
    closed_totals: list[int] = attrs.field(factory=lambda: [0, 0, 0, 0])

    _handlers: dict[int, FrameHandler] = attrs.field(factory=dict)
    _dialing: dict[str, _DialAttempt] = attrs.field(factory=dict)
    _up_events: dict[str, anyio.Event] = attrs.field(factory=dict)
    _pending_handshakes: int = 0
    #: Called with a peer's name when it tells us where it listens.
    address_hooks: list[Callable[[str], None]] = attrs.field(factory=list)
    #: Peers this node refuses to connect with (see :meth:`block`).
    blocked: set[str] = attrs.field(factory=set)
    _task_group: anyio.abc.TaskGroup | None = None
    _listener: anyio.abc.Listener[Any] | None = None
    _fast_path: bool = False
    stopping: bool = False
    #: The backend's own socket waits (bound at start, used by the fast path).
    wait_readable: Callable[[socket.socket], Awaitable[None]] = anyio.wait_readable
    wait_writable: Callable[[socket.socket], Awaitable[None]] = anyio.wait_writable
    checkpoint: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint

    def __attrs_post_init__(self) -> None:
        self._handlers[Kind.INFO] = self._handle_info
        self._handlers[Kind.BYE] = self._handle_bye

    # ---------------------------------------------------------------- set-up

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
        self._fast_path = running_on_trio() and self.ssl_context is None
        if self._fast_path:
            import trio

            self.wait_readable = trio.lowlevel.wait_readable
            self.wait_writable = trio.lowlevel.wait_writable
            self.checkpoint = trio.lowlevel.checkpoint
        try:
            listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(
                local_host=host, local_port=port, reuse_port=False
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        self.address = (str(sockname[0]), int(sockname[1]))
        if self.ssl_context is not None:
            listener = TLSListener(
                listener,
                self.ssl_context,
                standard_compatible=False,
                handshake_timeout=self.config.handshake_timeout,
            )
        self._listener = listener
        task_group.start_soon(self._serve, listener)
        task_group.start_soon(self._ticker)

    async def _serve(self, listener: anyio.abc.Listener[Any]) -> None:
        async with listener:
            await listener.serve(self._handle_incoming, task_group=self._task_group)

    async def stop(self) -> None:
        """Say goodbye to every peer, flush briefly, and close everything."""
        self.stopping = True
        connections = list(self.connections.values())
        for conn in connections:
            if not conn.closed:
                conn.write(self.encode_frame([Kind.BYE, NodeDownReason.SHUTDOWN]))
        with anyio.move_on_after(1.0, shield=True):
            for conn in connections:
                await conn.drain()
        for conn in connections:
            conn.close(NodeDownReason.SHUTDOWN)

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

    def dispatch(self, conn: Connection, payload: bytes) -> None:
        """Decode one frame and run its handler (in the reader task)."""
        try:
            item = codec.decode(payload)
        except DecodeError as exc:
            # The framing is intact, so only this frame is lost.
            self.count_drop("decode_error")
            logger.warning("dropped an undecodable frame from %s: %s", conn.peer, exc)
            return
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
        logger.warning("closing connection to %s: %s", conn.peer, detail)
        conn.close(NodeDownReason.PROTOCOL_ERROR)

    def count_drop(self, cause: str) -> None:
        """Count one dropped frame, message or connection by cause."""
        self.drops[cause] = self.drops.get(cause, 0) + 1

    def _handle_info(self, conn: Connection, item: list[Any]) -> None:
        info = item[1]
        host, port = info["host"], info["port"]
        if not isinstance(host, str) or type(port) is not int or not 0 < port < 65536:
            raise ValueError("INFO needs a str host and a port number")
        self.addresses[conn.peer] = (host, port)
        for hook in self.address_hooks:
            hook(conn.peer)

    def _handle_bye(self, conn: Connection, item: list[Any]) -> None:
        reason = item[1]
        if reason not in (NodeDownReason.DISCONNECT, NodeDownReason.SHUTDOWN):
            raise ValueError(f"unknown goodbye reason {reason!r}")
        conn.peer_bye = reason

    # --------------------------------------------------------------- liveness

    async def _ticker(self) -> None:
        # Erlang's scheme: four intervals per tick_timeout; a connection
        # that received nothing for four intervals in a row is down, and
        # one that sent nothing in an interval gets a tick.
        interval = self.config.tick_timeout / 4
        while True:
            await anyio.sleep(interval)
            for conn in list(self.connections.values()):
                if conn.received_since_tick:
                    conn.received_since_tick = False
                    conn.silent_ticks = 0
                else:
                    conn.silent_ticks += 1
                    if conn.silent_ticks >= 4:
                        logger.info("%s did not answer for %.1fs", conn.peer, interval * 4)
                        conn.close(NodeDownReason.TICK_TIMEOUT)
                        continue
                if not conn.sent_since_tick:
                    conn.write(TICK)
                    conn.frames_out -= 1  # a tick is not a frame the user sent
                conn.sent_since_tick = False

    # ------------------------------------------------------------ connecting

    async def connect(self, target: str) -> str:
        """Connect to ``target`` (see :meth:`Node.connect`); return its name."""
        name, host, port = parse_target(target)
        if name == self.name:
            return self.name
        if name in self.blocked:
            raise ConnectError(f"connections with {name} are blocked")
        if name is not None and name in self.connections:
            return name
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
        attempt = _DialAttempt()
        if name is not None:
            self._dialing[name] = attempt
        try:
            with anyio.fail_after(self.config.handshake_timeout):
                try:
                    with attempt.scope:
                        return await self._dial(host, port, name, attempt)
                except _LostTieBreak as exc:
                    if name is None:
                        raise HandshakeError(
                            f"{target} refused the connection: it is connecting to us"
                        ) from exc
                # Our attempt lost a simultaneous-connect tie-break, or was
                # superseded by the peer's: its connection is the one to use.
                assert name is not None
                await self._wait_up(name)
                return name
        except TimeoutError:
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
            stream: anyio.abc.ByteStream = await _open_tcp(host, port, self.address[0])
            if self.ssl_context is not None:
                plain = stream
                try:
                    stream = await TLSStream.wrap(
                        plain,
                        server_side=False,
                        hostname=host,
                        ssl_context=self.client_ssl_context or self.ssl_context,
                        standard_compatible=False,
                    )
                except BaseException:
                    await anyio.aclose_forcefully(plain)
                    raise
        except OSError as exc:
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
        conn = self._new_connection(stream, done, leftover, initiated_by_me=True)
        self._register(conn)
        return conn.peer

    async def _handle_incoming(self, stream: anyio.abc.ByteStream) -> None:
        try:
            await self._serve_incoming(stream)
        except BaseException:
            # Cancelled mid-handshake (the node is stopping) or failed: the
            # accepted socket must not outlive its task.
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(stream)
            raise

    async def _serve_incoming(self, stream: anyio.abc.ByteStream) -> None:
        if self.stopping or self._pending_handshakes >= self.config.max_pending_handshakes:
            self.count_drop("handshake_limit")
            await stream.aclose()
            return
        self._pending_handshakes += 1
        machine = HandshakeMachine(
            role=Role.ACCEPTOR,
            local_name=self.name,
            creation=self.creation,
            cookie=self.cookie,
            versions=PROTOCOL_VERSIONS,
        )
        try:
            with anyio.fail_after(self.config.handshake_timeout):
                done, _ = await self._handshake(stream, machine, None)
        except TimeoutError:
            self.count_drop("handshake_timeout")
            logger.info("an incoming handshake timed out")
            await stream.aclose()
            return
        except HandshakeError as exc:
            cause = "auth_failed" if isinstance(exc, AuthenticationError) else "handshake_failed"
            self.count_drop(cause)
            logger.warning("rejected an incoming connection: %s: %s", type(exc).__name__, exc)
            await stream.aclose()
            return
        finally:
            self._pending_handshakes -= 1
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
            outgoing = machine.data_to_send()
            if outgoing:
                try:
                    await stream.send(outgoing)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    events = machine.receive_data(b"")
            if attempt is not None and machine.peer_name and machine.peer_name != self.name:
                # Register the attempt by name as soon as we learn it, so a
                # crossing attempt from that peer is tie-broken correctly.
                self._dialing.setdefault(machine.peer_name, attempt)
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
        self.on_node_up(conn.peer)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        """Called once by a connection as it closes."""
        totals = self.closed_totals
        totals[0] += conn.bytes_in
        totals[1] += conn.bytes_out
        totals[2] += conn.frames_in
        totals[3] += conn.frames_out
        if self.connections.get(conn.peer) is conn:
            del self.connections[conn.peer]
            self.on_node_down(conn.peer, reason)

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
        ``disconnect``). Does nothing if not connected."""
        conn = self.connections.get(name)
        if conn is not None:
            await conn.close_gracefully(NodeDownReason.DISCONNECT)
