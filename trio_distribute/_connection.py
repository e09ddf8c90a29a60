"""The connection engine: one authenticated stream to a peer, framed.

A :class:`Connection` writes frames through a coalescing writer, reads
frames in bulk and hands each one to its transport's dispatch, and at each
beat of the transport's ticker (:meth:`Connection.tick`) sends a tick or
gives up on a silent peer. Dialling, accepting, TLS, the handshake and
which connection to keep are the transport's
(:mod:`trio_distribute.transport`); a connection only runs once it exists,
and sees the transport only as a :class:`ConnectionOwner`.

The write path is where throughput is won (DESIGN 3a). A frame is written
straight to the socket, synchronously, when nothing else is queued: no task
hop and no scheduler pass for a lone message. A frame that follows another
direct write within ``DIRECT_WRITE_GAP`` (50 µs) is queued instead, so a
burst of sends made before the sender yields is joined into one write by the
writer task. While a write is pending, frames queue in a list; senders wait
(backpressure) only when that queue is over ``send_buffer_size`` bytes.

Frames answered from the reader (RPC replies, pongs) cannot wait, so a peer
that sends requests and never reads could grow that queue without end. A
connection holding more than ``max_send_queue`` unwritten bytes is therefore
closed as a slow consumer (Erlang's busy distribution port, made final).
Incoming frames are bounded too: an incomplete frame beyond
``frame_buffer_reserve`` bytes draws on ``max_frame_buffers``, one budget for
all connections of the node.

On trio over plain TCP the reader lends its socket to the task its last read
woke (a process that was waiting in ``receive``, a caller waiting for a
reply): that task, coming back to wait, waits on the socket itself and reads
and delivers the next frames, so its own message reaches it with no task
switch and its answer leaves in the same scheduler batch (see "lending"
below for the rules that keep the socket watched).
"""

from __future__ import annotations

import contextvars
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs

from ._mailbox import Mailbox
from ._proto.frames import HEADER_SIZE, TICK, FrameDecoder
from ._proto.kinds import Kind
from ._ratelimit import LogLimiter
from ._sliced_decode import SLICED_ABOVE
from ._socket_wait import SocketWait, socket_wait_for
from .config import NodeConfig
from .errors import NodeDownError, ProtocolError
from .monitor import NodeDownReason

__all__ = [
    "BROKEN_WRITE_GRACE",
    "BULK_READ_ABOVE",
    "DIRECT_WRITE_GAP",
    "GATHER_ABOVE",
    "Connection",
    "ConnectionOwner",
    "FrameHandler",
]

# The connection's log lines are the transport's (one logger for the wire).
logger = logging.getLogger("trio_distribute.transport")
_limited = LogLimiter(logger)

#: A frame is written straight to the socket only if no other frame was in
#: the last this-many seconds; closer frames are coalesced by the writer.
DIRECT_WRITE_GAP = 50e-6
_monotonic = time.monotonic
_RECEIVE_SIZE = 65536
#: A frame whose body is at least this big is read straight into one buffer
#: of its size (``recv_into``), not in 64 KiB chunks joined afterwards: the
#: payload is copied once by the kernel and never again by the reader.
BULK_READ_ABOVE = 1024 * 1024
#: Most bytes one ``recv_into`` of a big frame asks for.
_BULK_CHUNK = 4 * 1024 * 1024
#: A frame part at least this big is written from the caller's buffer with
#: scatter-gather (``sendmsg``), never joined with the frames around it.
GATHER_ABOVE = 64 * 1024
#: Most buffers one ``sendmsg`` call is given (Linux's IOV_MAX is 1024).
_IOV_MAX = 512
#: Reading or writing a big frame lets other tasks run after this many
#: seconds of copying, as a sliced decode does.
_BULK_YIELD_AFTER = 0.004
#: Scheduler batches after the last read a lending reader waits for its
#: borrower to come back before it waits on the socket itself again.
_LEND_BATCHES = 2
#: After a write fails, the reader gets this long to read what the peer sent
#: before the failure (its goodbye, above all), so a peer's graceful stop is
#: reported as ``shutdown`` and not as a broken socket.
BROKEN_WRITE_GRACE = 0.5


FrameHandler = Callable[["Connection", list[Any]], None]
#: Takes a frame's payload undecoded; ``False``: decode it as any other.
DirectHandler = Callable[["Connection", bytes | bytearray], bool]

_trio_module: Any = None
#: A read woke more than one waiter: the socket is not lent.
_SEVERAL = object()


def _trio() -> Any:
    """trio, imported on first use: lending exists only on trio, and an
    asyncio node need not import it."""
    global _trio_module
    if _trio_module is None:
        import trio

        _trio_module = trio
    return _trio_module


class Borrower(Protocol):
    """Where a task waits while it borrows a connection's socket: it holds
    the socket's wait, which whoever brings what the task waits for kicks
    instead of rescheduling the task."""

    def hold(self, wait: SocketWait) -> None: ...

    def release(self, wait: SocketWait) -> None: ...


class ConnectionOwner(Protocol):
    """What a connection needs of the transport that made it: its limits,
    where decoded frames go, where drops are counted, the backend's socket
    waits, and word of its end. (The transport is the one implementation;
    the connection never sees its tables or its dial and accept policy.)"""

    #: This node's name (for ``repr``).
    name: str
    config: NodeConfig
    #: Log lines a remote party can trigger: at most one per cause per second.
    log_limiter: LogLimiter
    wait_readable: Callable[[socket.socket], Awaitable[None]]
    wait_writable: Callable[[socket.socket], Awaitable[None]]
    checkpoint: Callable[[], Awaitable[None]]

    def count_drop(self, cause: str, detail: object = None) -> None:
        """Count one dropped frame or connection under ``cause``."""
        ...

    def encode_frame(self, item: list[Any]) -> bytes:
        """``item`` as one length-prefixed frame."""
        ...

    #: By a frame's first byte, a prefix and its handler: a frame that starts
    #: with the prefix is offered to the handler first; ``False`` sends it
    #: on to :meth:`dispatch`.
    direct_handlers: dict[int, tuple[bytes, DirectHandler]]

    def dispatch(self, conn: Connection, payload: bytes | bytearray) -> None:
        """Decode one frame and run its handler (in the reader task)."""
        ...

    async def dispatch_sliced(self, conn: Connection, payload: bytes | bytearray) -> None:
        """:meth:`dispatch` for a big frame, decoded in slices that yield."""
        ...

    def frame_buffers_drawn(self, *, besides: Connection) -> int:
        """Bytes of incomplete frames (and kept bulk buffers) the node's
        other open connections hold from ``max_frame_buffers``."""
        ...

    def release_bulk_buffers(self) -> None:
        """Let every connection drop the bulk buffer it keeps for reuse."""
        ...

    def connection_closed(self, conn: Connection, reason: str) -> None:
        """Called once by a connection as it closes."""
        ...


def _advance(parts: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """``parts`` without their first ``sent`` bytes (no payload is copied)."""
    index = 0
    while sent:
        size = len(parts[index])
        if sent < size:
            rest = parts[index:]
            rest[0] = memoryview(rest[0])[sent:]
            return rest
        sent -= size
        index += 1
    return parts[index:] if index else parts


@attrs.define(eq=False, kw_only=True)
class Connection:
    """An authenticated connection to one peer node."""

    peer: str
    peer_creation: int
    initiated_by_me: bool
    version: int
    transport: ConnectionOwner
    stream: anyio.abc.ByteStream
    #: The raw socket when frames may be written to it synchronously (trio,
    #: plain TCP); ``None`` means every write goes through ``stream.send``.
    sock: socket.socket | None
    decoder: FrameDecoder
    initial_data: bytes = b""

    def __repr__(self) -> str:
        state = f"closed ({self.down_reason})" if self.closed else "open"
        return f"<Connection {self.transport.name} <-> {self.peer}: {state}>"

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
    #: Payload size of the frame being dispatched, for handlers that account
    #: memory by encoded size (mailboxes, RPC).
    frame_size: int = 0
    #: Bytes of an incomplete incoming frame drawn from the node-wide budget.
    frame_buffer_drawn: int = 0
    #: Bytes of the bulk buffer kept for the next big frame (see
    #: ``_keep_bulk_buffer``), drawn from the same budget.
    bulk_buffer_held: int = 0

    _out: list[bytes | memoryview] = attrs.field(factory=list)
    # The buffer the last big frame was read into, kept for the next one of
    # the same size, and whether a big frame was read since the last tick.
    _bulk_buffer: bytearray | None = None
    _bulk_since_tick: bool = False
    # A part of at least GATHER_ABOVE bytes is queued: write with sendmsg.
    _gather: bool = False
    _out_bytes: int = 0
    # The batch the writer is handing to the kernel: still held in memory.
    _in_flight: int = 0
    _queue_limit: int = attrs.field(init=False)
    _writing: bool = False
    _last_direct: float = -1.0
    _writer_wake: anyio.Event = attrs.field(factory=anyio.Event)
    _wake_pending: bool = False
    _space: anyio.Event | None = None
    _drained: anyio.Event | None = None
    # Shielded: a connection ends only through close(), never because the
    # node's task group is cancelled from outside (the user's cancel scope,
    # Ctrl-C). The node's exit path says goodbye first (Transport.stop, with
    # a deadline) and then closes it, so peers see "shutdown" however the
    # node was left.
    _cancel_scope: anyio.CancelScope = attrs.field(factory=lambda: anyio.CancelScope(shield=True))
    # Who the frames of the last read woke (see woke()).
    _woke: object = None
    # Lending: the mailbox (or task) that may borrow the socket, the wait a
    # borrower is in, the reader task while it waits for the borrower, the
    # frames a borrowed read left to the reader, and the wait borrowers use
    # (made on the first lend).
    _lent_to: object = None
    _borrower: SocketWait | None = None
    _socket_wait: SocketWait | None = None
    # The socket can be lent only where it is read directly (trio, plain
    # TCP), and once the wait for it could be made.
    _lendable: bool = False
    _lender: Any = None
    _backlog: Sequence[bytes | bytearray] | None = None
    _reader_context: contextvars.Context | None = None
    _send_now: Callable[[bytes], bool] | None = None

    def __attrs_post_init__(self) -> None:
        self._queue_limit = self.transport.config.max_send_queue
        self._lendable = self.sock is not None
        if self.sock is None:
            # A stream that can take bytes without waiting (the simulated
            # network's) is written to directly, as a socket is.
            self._send_now = getattr(self.stream, "send_nowait", None)

    # ------------------------------------------------------------------ write

    def write(self, data: bytes) -> None:
        """Send one encoded frame without blocking.

        The frame is written at once if nothing is queued and no frame was
        written directly in the last ``DIRECT_WRITE_GAP`` seconds (to a
        simulated stream: whenever nothing is queued and it has room);
        otherwise it is queued, and the writer task sends everything queued
        in one write as soon as the sender yields. Frames keep their order.

        Raises:
            NodeDownError: the connection is closed.
        """
        if self.closed:
            raise NodeDownError(self.peer, self.down_reason or "connection closed")
        self.sent_since_tick = True
        self.frames_out += 1
        self.bytes_out += len(data)
        if not self._out and not self._writing:
            if self.sock is not None:
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
                        # The writer retries it, fails the same way, and lets the
                        # reader read a goodbye first (see _writer).
                        logger.debug("write to %s failed: %r", self.peer, exc)
                        sent = 0
                    if sent == len(data):
                        return
                    # The rest waits for the writer, uncopied.
                    self._queue(memoryview(data)[sent:] if sent else data)
                    return
            elif self._send_now is not None and self._send_now(data):
                # An in-memory stream took it at once (a simulated network).
                return
        self._queue(data)

    def _queue(self, data: bytes | memoryview) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes + self._in_flight > self._queue_limit:
            self._slow_consumer()
            return
        self._wake_writer()

    def write_parts(self, head: bytes, body: bytes) -> None:
        """Send one frame made of ``head`` and then ``body`` (a big payload),
        without joining them: ``body`` goes to the kernel from the caller's
        own buffer (scatter-gather), so a big payload is never copied in
        this process. ``body`` must not change afterwards (it is ``bytes``).

        Raises:
            NodeDownError: the connection is closed.
        """
        if self.closed:
            raise NodeDownError(self.peer, self.down_reason or "connection closed")
        size = len(head) + len(body)
        self.sent_since_tick = True
        self.frames_out += 1
        self.bytes_out += size
        parts: list[bytes | memoryview] = [head, body]
        if not self._out and not self._writing and self.sock is not None:
            # No coalescing to win for a frame this big: write it now.
            self._last_direct = _monotonic()
            try:
                sent = self.sock.sendmsg(parts)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                logger.debug("write to %s failed: %r", self.peer, exc)
                sent = 0
            if sent == size:
                return
            parts = _advance(parts, sent)
        self._out += parts
        self._out_bytes += sum(len(p) for p in parts)
        self._gather = True
        if self._out_bytes + self._in_flight > self._queue_limit:
            self._slow_consumer()
            return
        self._wake_writer()

    @property
    def queued_bytes(self) -> int:
        """Bytes written to this connection and not yet handed to the kernel."""
        return self._out_bytes + self._in_flight

    def _slow_consumer(self) -> None:
        # Senders that can wait do (send_buffer_size), so only frames that
        # cannot — answers written by the reader, control frames — get here:
        # the peer asks faster than it reads, and holding its answers would
        # make its misbehaviour our memory.
        self.transport.count_drop("slow_consumer")
        _limited.warning(
            "slow_consumer",
            "closing connection to %s: more than %d bytes wait to be written "
            "(max_send_queue); the peer does not read",
            self.peer,
            self._queue_limit,
        )
        self.close(NodeDownReason.CONNECTION_CLOSED)

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
            self.transport.count_drop("socket_write_failed")
            # The peer may have said goodbye and closed: its BYE is read by
            # the reader, which then closes with the right reason (and
            # cancels this wait). Otherwise the socket is broken.
            await anyio.sleep(BROKEN_WRITE_GRACE)
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)

    async def _write_loop(self) -> None:
        while True:
            await self._writer_wake.wait()
            self._writer_wake = anyio.Event()
            self._wake_pending = False
            self._writing = True
            while self._out:
                if self._gather:
                    # A big payload is queued: hand the kernel the parts as
                    # they are (joining them would copy the payload).
                    parts, self._out = self._out, []
                    self._gather = False
                    self._in_flight = self._out_bytes
                    self._out_bytes = 0
                    self._notify_space()
                    await self._send_parts(parts)
                    self._in_flight = 0
                    continue
                data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                self._out_bytes = 0
                self._in_flight = len(data)
                self._notify_space()
                await self._send_all(data)
                self._in_flight = 0
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

    async def _send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Write ``parts`` in order; big ones straight from their buffers."""
        sock = self.sock
        if sock is None:
            small: list[bytes | memoryview] = []
            for part in parts:
                if len(part) < GATHER_ABOVE:
                    small.append(part)
                    continue
                if small:
                    await self.stream.send(b"".join(small))
                    small = []
                await self.stream.send(part)  # type: ignore[arg-type]
            if small:
                await self.stream.send(b"".join(small))
            return
        since = _monotonic()
        while parts:
            try:
                sent = sock.sendmsg(parts[:_IOV_MAX])
            except BlockingIOError:
                sent = 0
            parts = _advance(parts, sent)
            if parts:
                if sent:
                    now = _monotonic()
                    if now - since < _BULK_YIELD_AFTER:
                        continue
                    since = now
                await self.transport.wait_writable(sock)

    async def _send_all(self, data: bytes | memoryview) -> None:
        if self.sock is None:
            await self.stream.send(data if type(data) is bytes else bytes(data))
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
        decoder = self.decoder
        data = self.initial_data
        while True:
            payloads: list[bytes] = []
            if data:
                taken = self._take_in(data)
                if taken is None:
                    return
                payloads = taken
                await self._deliver(payloads)
                if self.closed:
                    return
            delivered = bool(payloads)
            drained = len(data) < _RECEIVE_SIZE
            woke = self._woke
            if woke is not None:
                self._woke = None
                if (
                    woke is not _SEVERAL
                    and self._lendable
                    and drained
                    and decoder.pending_frame < BULK_READ_ABOVE
                ):
                    backlog = await self._lend(woke)
                    if backlog is not None:
                        await self._deliver(backlog)
                    if self.closed:
                        return
                    # The borrower's last read may have left bytes behind:
                    # read before waiting.
                    delivered = drained = False
            try:
                if decoder.pending_frame >= BULK_READ_ABOVE:
                    # A big frame: its body is read straight into a buffer
                    # of its size, then decoded like any other big frame.
                    big = await self._receive_bulk()
                    if big is None:
                        return
                    self.frames_in += 1
                    self.frame_size = len(big)
                    await self._deliver((big,))
                    if self.closed:
                        return
                    # Every message was copied out of it: keep it for the next.
                    self._keep_bulk_buffer(big)
                    data = b""
                    continue
                if self.sock is not None:
                    data = await self._receive_raw(self.sock, delivered, drained)
                else:
                    data = await self.stream.receive(_RECEIVE_SIZE)
            except anyio.EndOfStream:
                self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                logger.debug("read from %s failed: %r", self.peer, exc)
                self.transport.count_drop("socket_read_failed")
                self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
                return

    def _take_in(self, data: bytes) -> list[bytes] | None:
        """Count ``data`` and split it into frames; ``None`` if the
        connection was closed over it (a protocol error, or the node's
        buffer budget for incomplete frames is spent)."""
        self.received_since_tick = True
        self.bytes_in += len(data)
        decoder = self.decoder
        try:
            payloads = decoder.feed(data)
        except ProtocolError as exc:
            self.transport.log_limiter.warning(
                "protocol_error", "closing connection to %s: %s", self.peer, exc
            )
            self.transport.count_drop("protocol_error")
            self.close(NodeDownReason.PROTOCOL_ERROR)
            return None
        held = decoder.buffered  # the incomplete frame left over
        if held > self.transport.config.frame_buffer_reserve:
            if not self._draw_frame_buffer(held):
                return None
        elif self.frame_buffer_drawn:
            self.frame_buffer_drawn = 0  # that frame completed
        self.frames_in += len(payloads)
        return payloads

    def _deliver_small(self, payloads: Sequence[bytes | bytearray], start: int = 0) -> int:
        """Hand frames to their handlers from ``start`` on, up to the first
        one that must be decoded in slices (it awaits); returns its index,
        or ``len(payloads)`` once every frame is delivered or the
        connection closed."""
        transport = self.transport
        direct = transport.direct_handlers.get
        dispatch = transport.dispatch
        end = len(payloads)
        for index in range(start, end):
            payload = payloads[index]
            self.frame_size = len(payload)
            # (Never empty: a zero length is a tick, which the decoder drops.)
            entry = direct(payload[0])
            if entry is not None and payload.startswith(entry[0]) and entry[1](self, payload):
                pass
            elif len(payload) > SLICED_ABOVE:
                return index
            else:
                dispatch(self, payload)
            if self.closed:
                return end
        return end

    async def _deliver(self, payloads: Sequence[bytes | bytearray]) -> None:
        """Hand every frame to its handler, in order."""
        index = self._deliver_small(payloads)
        while index < len(payloads):
            # Decoded in slices that let the loop run meanwhile.
            await self.transport.dispatch_sliced(self, payloads[index])
            if self.closed:
                return
            index = self._deliver_small(payloads, index + 1)

    # ---------------------------------------------------------------- lending
    #
    # A process that answers what it receives (an echo, a server loop) pays,
    # per message, a scheduler batch between this reader's read and its own
    # turn, and the reader's return to the socket first. Lending the socket
    # to that process removes both from the message's path: the process,
    # finding its mailbox empty, waits on the socket itself, and when bytes
    # come it reads and delivers them as this reader would, takes its own
    # message and replies in the same batch. This reader waits meanwhile,
    # woken after every borrowed read, and takes the socket back when the
    # process has not come back for it by the ``_LEND_BATCHES``-th batch
    # after the last read: the socket is never left unwatched for longer.

    def woke(self, waiter: object) -> None:
        """A frame this connection read woke ``waiter``: the mailbox of a
        process waiting in ``receive``, or a task waiting for a call's
        reply. If it is the only one its read woke, the socket may be lent
        to it; a read that wakes several (many calls in flight) keeps it."""
        self._woke = waiter if self._woke is None else _SEVERAL

    def lent_to(self, borrower: object) -> bool:
        """Whether ``borrower`` (a process's mailbox, or a task waiting for
        a reply) may wait on the socket now (:meth:`borrow`)."""
        return self._lent_to is borrower and self._borrower is None

    async def _lend(self, to: object) -> Sequence[bytes | bytearray] | None:
        """Lend the socket to ``to``, which this read has just woken (a
        process's mailbox, or a task whose call it answered); return when
        the socket is this task's again, with the frames a borrowed read
        left to deliver, if any."""
        if self._socket_wait is None:
            assert self.sock is not None
            self._socket_wait = socket_wait_for(self.sock)
            if self._socket_wait is None:
                self._lendable = False  # not here: the socket stays the reader's
                return None
        # A process finds the connection lent to it through its mailbox.
        mailbox = to if isinstance(to, Mailbox) else None
        # Frame handlers run in this task's context, whoever reads.
        self._reader_context = _trio().lowlevel.current_task().context
        self._lent_to = to
        if mailbox is not None:
            mailbox._settings.lent[mailbox] = self
        checkpoint = self.transport.checkpoint
        idle = 0
        try:
            while self._lent_to is to:
                if self._borrower is not None:
                    await _trio().lowlevel.wait_task_rescheduled(self._park_lender())
                    # Woken after a borrowed read: this batch is the first
                    # the socket may go unwatched.
                    idle = 1
                elif idle < _LEND_BATCHES:
                    await checkpoint()
                    idle += 1
                else:
                    break
        finally:
            self._lent_to = None
            if mailbox is not None and mailbox._settings.lent.get(mailbox) is self:
                del mailbox._settings.lent[mailbox]
        backlog, self._backlog = self._backlog, None
        return backlog

    def _park_lender(self) -> Callable[[Any], Any]:
        self._lender = _trio().lowlevel.current_task()
        return self._abort_lender

    def _abort_lender(self, _: object) -> Any:
        self._lender = None
        return _trio().lowlevel.Abort.SUCCEEDED

    async def borrow(self, waiter: Borrower) -> None:
        """Wait on the socket in the reader's place, for the task waiting
        in ``waiter`` (which :meth:`lent_to` allows); then read and deliver
        what came. Returns when what the task waits for may have come: read
        from the socket, or brought by any other path, which ends the wait
        with a kick of the :class:`SocketWait` that ``waiter`` holds
        meanwhile."""
        wait = self._socket_wait
        assert wait is not None  # made by _lend
        self._borrower = wait
        waiter.hold(wait)
        try:
            try:
                await wait.wait()
            except _trio().ClosedResourceError:
                return  # the connection closed under the wait
            finally:
                self._borrower = None
                waiter.release(wait)
            if not self.closed:
                # In the reader's context: a handler (a plain function served
                # by RPC, for one) sees no current process, as in the reader.
                context = self._reader_context
                assert context is not None  # set by _lend
                context.run(self._borrowed_read)
        finally:
            lender = self._lender
            if lender is not None:
                self._lender = None
                _trio().lowlevel.reschedule(lender)

    def _borrowed_read(self) -> None:
        """The reader's step, run by a borrower: one read, and every frame
        in it delivered. A frame that must be decoded in slices (it awaits)
        is left, with those after it, to the reader, which then takes the
        socket back."""
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(_RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.debug("read from %s failed: %r", self.peer, exc)
            self.transport.count_drop("socket_read_failed")
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
            return
        if not data:
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
            return
        payloads = self._take_in(data)
        if payloads is None:
            return
        try:
            index = self._deliver_small(payloads)
        except Exception:
            # Not the borrowing process's error: as in run().
            self._handler_failed()
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
            return
        finally:
            # Whom this read woke is the reader's to know only for its own reads.
            self._woke = None
        if index < len(payloads):
            self._backlog = payloads[index:]
            self._lent_to = None
        elif self.decoder.pending_frame >= BULK_READ_ABOVE:
            self._lent_to = None  # a big frame's body: read by the reader

    def _stop_lending(self) -> None:
        self._lent_to = None
        if self._borrower is not None:
            self._borrower.kick()

    def _handler_failed(self) -> None:
        # A bug in a frame handler must not take the node down with it.
        self.transport.count_drop("connection_failed")
        logger.exception("connection to %s failed unexpectedly", self.peer)

    async def _receive_bulk(self) -> bytearray | None:
        """Read the rest of the decoder's incomplete big frame into one
        buffer of the frame's size and return its payload (``None`` if the
        frame does not fit the node's budget: the connection is closed).

        The whole frame is drawn from ``max_frame_buffers`` before its body
        is read, as it would be once it had arrived in pieces; the buffer's
        pages are only touched as bytes arrive.
        """
        decoder = self.decoder
        need = decoder.pending_frame
        size = need - HEADER_SIZE
        payload = self._bulk_buffer
        self.release_bulk_buffer()  # drawn again below, as the frame
        if payload is None or len(payload) != size:
            payload = None
        if need > self.transport.config.frame_buffer_reserve and not self._draw_frame_buffer(need):
            return None
        held = decoder.take_buffered()
        if payload is None:
            payload = bytearray(size)
        with memoryview(payload) as view:
            pos = len(held) - HEADER_SIZE
            view[:pos] = memoryview(held)[HEADER_SIZE:]
            del held
            sock = self.sock
            since = _monotonic()
            while pos < size:
                if sock is not None:
                    try:
                        got = sock.recv_into(view[pos:], min(size - pos, _BULK_CHUNK))
                    except BlockingIOError:
                        await self.transport.wait_readable(sock)
                        since = _monotonic()
                        continue
                    if not got:
                        raise anyio.EndOfStream
                    now = _monotonic()
                    if now - since >= _BULK_YIELD_AFTER:
                        await self.transport.checkpoint()
                        since = now
                else:
                    chunk = await self.stream.receive(min(size - pos, _BULK_CHUNK))
                    got = len(chunk)
                    view[pos : pos + got] = chunk
                pos += got
                self.bytes_in += got
                self.received_since_tick = True
        self.frame_buffer_drawn = 0
        return payload

    def _keep_bulk_buffer(self, buffer: bytearray) -> None:
        """Keep the buffer a big frame was read into for the next big frame
        of the same size, if the node's budget for incomplete frames
        (``max_frame_buffers``) has room for it: a stream of big messages
        then costs no allocation per message, and no page of the buffer is
        faulted in or zeroed again (the larger part of a 16 MiB message's
        cost on the receiving side). It is let go of at the second tick
        without a big frame, when the connection closes, and whenever a
        frame needs the room (:meth:`_draw_frame_buffer`).
        """
        config = self.transport.config
        others = self.transport.frame_buffers_drawn(besides=self)
        if others + len(buffer) > config.max_frame_buffers:
            return
        self._bulk_buffer = buffer
        self.bulk_buffer_held = len(buffer)
        self._bulk_since_tick = True

    def release_bulk_buffer(self) -> None:
        """Drop the bulk buffer kept for reuse, if any."""
        self._bulk_buffer = None
        self.bulk_buffer_held = 0

    def _draw_frame_buffer(self, held: int) -> bool:
        """Account an incomplete frame of ``held`` bytes against the node's
        budget; close the connection (and return ``False``) if it does not fit.

        Only frames larger than the reserve get here (big messages, or a peer
        that announces a large frame and stops), so summing over the
        connections is cheaper than keeping a shared counter in step.
        """
        wanted = held - self.transport.config.frame_buffer_reserve
        others = self.transport.frame_buffers_drawn(besides=self)
        if others + wanted > self.transport.config.max_frame_buffers:
            # Kept bulk buffers are only a cache: an incomplete frame comes first.
            self.transport.release_bulk_buffers()
            others = self.transport.frame_buffers_drawn(besides=self)
        if others + wanted > self.transport.config.max_frame_buffers:
            self.transport.count_drop("frame_buffers_full")
            _limited.warning(
                "frame_buffers_full",
                "closing connection to %s: its incomplete frame of %d bytes does not fit "
                "the node's budget for incomplete frames (max_frame_buffers)",
                self.peer,
                held,
            )
            self.close(NodeDownReason.CONNECTION_CLOSED)
            return False
        self.frame_buffer_drawn = wanted
        return True

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

    # --------------------------------------------------------------- liveness

    def tick(self, interval: float) -> None:
        """One tick interval passed (the transport's ticker calls this every
        ``tick_timeout / 4`` seconds, Erlang's scheme): a connection that
        received nothing for four intervals in a row is down
        (``tick_timeout``), and one that sent nothing in this interval
        sends a tick so that its peer does not take it for down."""
        if self.received_since_tick:
            self.received_since_tick = False
            self.silent_ticks = 0
        else:
            self.silent_ticks += 1
            if self.silent_ticks >= 4:
                self.transport.log_limiter.log(
                    logging.INFO,
                    "tick_timeout",
                    "%s did not answer for %.1fs",
                    self.peer,
                    interval * 4,
                )
                self.close(NodeDownReason.TICK_TIMEOUT)
                return
        if self._bulk_buffer is not None:
            if self._bulk_since_tick:
                self._bulk_since_tick = False
            else:
                self.release_bulk_buffer()
        if not self.sent_since_tick and not self.closed:
            self.write(TICK)
            self.frames_out -= 1  # a tick is not a frame the user sent
        self.sent_since_tick = False

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
            self._handler_failed()
        finally:
            self.close(self.peer_bye or NodeDownReason.CONNECTION_CLOSED)
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()
            if self._socket_wait is not None:
                self._socket_wait.close()

    def close(self, reason: str) -> None:
        """Close now (without a goodbye) and report the node down once."""
        if self.closed:
            return
        self.closed = True
        self.down_reason = reason
        # Nothing more is read or written: let go of the bytes now rather
        # than when the last reference to this object goes.
        self.frame_buffer_drawn = 0
        self.release_bulk_buffer()
        self.decoder.discard()
        self._out.clear()
        self._gather = False
        self._out_bytes = 0
        self._stop_lending()
        self._cancel_scope.cancel()
        self._notify_space()
        if self._drained is not None:
            self._drained.set()
        self.transport.connection_closed(self, reason)

    async def close_gracefully(self, reason: str, *, timeout: float = 1.0) -> None:
        """Tell the peer why we are closing, flush (for at most ``timeout``
        seconds, even if cancelled: a peer that does not read cannot hold us
        longer), then close."""
        if self.closed:
            return
        self.write(self.transport.encode_frame([Kind.BYE, reason]))
        with anyio.move_on_after(timeout, shield=True):
            await self.drain()
        self.close(reason)
