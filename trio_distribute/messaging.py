"""Processes, mailboxes and sending messages to them, locally or across nodes.

A process is a pid and a mailbox, owned by one task: the body of an
``open_process`` block, or a function started with ``spawn``. Sending is
fire-and-forget like Erlang's ``!``: messages from one sender to one process
arrive in the order sent while the connection stays up; a message to a dead
pid is dropped and counted.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from . import codec
from ._backend import Checkpoints, checkpoints, running_on_trio
from ._calls import Calls
from ._correlation import Traced, correlation_id
from ._ids import Pid, Ref, check_label
from ._links import Links
from ._mailbox import TAKE_YIELD_EVERY as _TAKE_YIELD_EVERY
from ._mailbox import Mailbox, MailboxSettings, unwrap_received
from ._monitors import Monitors
from ._node_events import NodeEventBus, ProcessExited
from ._proto.kinds import Kind
from ._sliced_decode import SLICED_ABOVE as _SLICED_ABOVE
from .errors import (
    DecodeError,
    MessageTooLargeError,
    NameNotFoundError,
    ProcessExitError,
)
from .monitor import ExitKind, ExitReason, ProcessDown
from .transport import GATHER_ABOVE

if TYPE_CHECKING:
    from ._calls import Call
    from .transport import Connection, Transport

__all__ = ["Pid", "Process", "Processes", "current_process"]

logger = logging.getLogger("trio_distribute.messaging")

_current: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "trio_distribute_current_process", default=None
)

#: Sends made without yielding before ``send`` lets other tasks run once;
#: yielding on every send would cost a scheduler pass per message, and the
#: frames queued meanwhile go out in one write.
_YIELD_EVERY = 256

MAX_NAME_LENGTH = 255

# Plain ints encode faster than IntEnum members (cbor2 checks subclasses).
_SEND = int(Kind.SEND)
_SEND_NAMED = int(Kind.SEND_NAMED)
_ARRAY_OF_3 = b"\x83"  # CBOR head of a 3-element array
_LENGTH = struct.Struct(">I")
_HEAD_CACHE_SIZE = 4096
#: Nesting a local send copies without the codec (see _plain_copy); a
#: deeper message takes the codec's round trip (and its depth rule).
_PLAIN_DEPTH = 32
_INFINITIES = (float("inf"), float("-inf"))
_ID_SIZES: dict[Pid | Ref, int] = {}
_current_id = correlation_id.get
_decode_element = codec.decode_element


#: The name of every spawned process's task (a name made per task from
#: the function, as trio and anyio do, costs ~100 bytes per process).
_TASK_NAME = "trio_distribute.process"
_NORMAL = ExitReason(ExitKind.NORMAL)
_SHUTDOWN = ExitReason(ExitKind.SHUTDOWN, "the node stopped")
_CANCELLED = ExitReason(ExitKind.EXCEPTION, "Cancelled: the process's task was cancelled")


def current_process() -> Process | None:
    """The process whose task (or a task it started) is running, if any."""
    return _current.get()


def become_process(process: Process) -> None:
    """Make ``process`` the current process of the calling task's context
    (for a task that runs a process's body itself, as a supervisor does)."""
    _current.set(process)


def _check_name(name: object) -> str:
    return check_label(name, "a process name", MAX_NAME_LENGTH)


class _Unusual(Exception):
    """Raised by :func:`_plain_copy` for a value it leaves to the codec."""


def _head(n: int) -> int:
    """Bytes of a CBOR head carrying ``n`` (a length or an int's magnitude)."""
    if n < 24:
        return 1
    if n < 0x100:
        return 2
    if n < 0x10000:
        return 3
    return 5 if n < 0x100000000 else 9


def _bytes_head(n: int) -> bytes:
    """The CBOR head of a byte string of ``n`` bytes (major type 2)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x5a" + n.to_bytes(4, "big")
    return b"\x5b" + n.to_bytes(8, "big")


def _bytes_to_end(payload: bytes | bytearray, pos: int) -> bytes | None:
    """The CBOR byte string at ``pos`` if it ends exactly where ``payload``
    does (``None`` otherwise), copied out once."""
    first = payload[pos]
    if first >> 5 != 2:
        return None
    info = first & 31
    if info < 24:
        start, length = pos + 1, info
    elif info <= 27:
        start = pos + 1 + (1 << (info - 24))
        length = int.from_bytes(payload[pos + 1 : start], "big")
    else:
        return None
    if start + length != len(payload):
        return None
    with memoryview(payload) as view:
        return bytes(view[start:])


def _id_size(value: Pid | Ref) -> int:
    size = _ID_SIZES.get(value)
    if size is None:
        if len(_ID_SIZES) >= _HEAD_CACHE_SIZE:
            _ID_SIZES.clear()
        size = _ID_SIZES[value] = len(codec.encode(value))
    return size


def _pid_frame_head_size(dest: Pid) -> int:
    """``len(_frame_head(SEND, dest))``, counted rather than encoded: a
    local send to one of many processes would miss the head cache (and
    encode a head) every time. The array and kind bytes (2), the pid's tag
    (3) and array (1) heads, then its fields; a node name is ASCII (its
    validation allows nothing else), so its length is its encoded length."""
    node = dest.node
    return 6 + _head(len(node)) + len(node) + _head(dest.id) + _head(dest.creation)


def _plain_copy(value: Any, depth: int) -> tuple[Any, int]:
    """``(codec.decode(codec.encode(value)), len(codec.encode(value)))``
    for plain data, without encoding: tuples become lists, containers are
    new, immutable leaves are shared. The encoded size is computed from
    CBOR's rules (cbor2 writes finite floats as doubles, NaN and the
    infinities as halves); tests check both against the codec.

    Raises:
        _Unusual: anything else (a message class, a dict with a key that is
            not exactly str or bytes, a subclass, an int outside 64 bits,
            nesting over ``depth``): the caller uses the codec.
        UnicodeEncodeError: a str with lone surrogates (likewise).
    """
    cls = type(value)
    if cls is str:
        n = len(value) if value.isascii() else len(value.encode())
        return value, _head(n) + n
    if cls is int:
        if 0 <= value <= codec.MAX_INT:
            return value, _head(value)
        if codec.MIN_INT <= value < 0:
            return value, _head(-1 - value)
        raise _Unusual
    if cls is bytes:
        n = len(value)
        return value, _head(n) + n
    if cls is float:
        return value, 9 if value == value and value not in _INFINITIES else 3
    if value is None or cls is bool:
        return value, 1
    if depth <= 0:
        raise _Unusual
    if cls is dict:
        copied: dict[Any, Any] = {}
        size = _head(len(value))
        for key, item in value.items():
            key_cls = type(key)
            if key_cls is str:
                n = len(key) if key.isascii() else len(key.encode())
            elif key_cls is bytes:
                n = len(key)
            else:
                raise _Unusual
            size += (1 if n < 24 else _head(n)) + n
            # The common leaves inline (a call per item costs more than the
            # codec's C encoder); the rest recursively.
            item_cls = type(item)
            if item_cls is int and 0 <= item < 24:
                copied[key] = item
                size += 1
            elif item_cls is str and item.isascii():
                copied[key] = item
                n = len(item)
                size += (1 if n < 24 else _head(n)) + n
            else:
                copied[key], item_size = _plain_copy(item, depth - 1)
                size += item_size
        return copied, size
    if cls is list or cls is tuple:
        size = _head(len(value))
        for item in value:
            item_cls = type(item)
            if item_cls is int:
                if 0 <= item <= codec.MAX_INT:
                    size += 1 if item < 24 else _head(item)
                    continue
            elif item_cls is str and item.isascii():
                n = len(item)
                size += (1 if n < 24 else _head(n)) + n
                continue
            elif item_cls is float:
                size += 9 if item == item and item not in _INFINITIES else 3
                continue
            break  # not a simple leaf: copy item by item below
        else:
            # Only immutable leaves: a shallow copy is the whole copy.
            return list(value), size
        items: list[Any] = []
        size = _head(len(value))
        for item in value:
            item_copy, item_size = _plain_copy(item, depth - 1)
            items.append(item_copy)
            size += item_size
        return items, size
    if cls is Pid or cls is Ref:
        return value, _id_size(value)
    raise _Unusual


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class _Scope(_Cancellable, Protocol):
    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: Any) -> bool | None: ...


_new_object = object.__new__
_set_attribute = object.__setattr__


def _local_pid(node: str, id: int, creation: int) -> Pid:
    """``Pid(node, id, creation)`` without its validators, for this node's
    own new pids (the name and creation were checked when it started, the
    id comes from a counter): a spawn pays for no regular expression."""
    pid = _new_object(Pid)
    _set_attribute(pid, "node", node)
    _set_attribute(pid, "id", id)
    _set_attribute(pid, "creation", creation)
    _set_attribute(pid, "_attrs_cached_hash", None)
    return pid


class Process:
    """A mailbox with a pid. Get one from ``Node.open_process`` or ``Node.spawn``."""

    # Slots and nothing made before it is needed: a node may hold a million
    # idle processes (docs/internals/processes.rst).
    __slots__ = (
        "__weakref__",  # as the attrs class it was had
        "_exit_reason",
        "_mailbox",
        "_processes",
        "_scope",
        "_watching",
        "alive",
        "name",
        "pid",
        "trap_exits",
    )

    def __init__(self, pid: Pid, name: str | None, processes: Processes, mailbox: Mailbox) -> None:
        self.pid = pid
        self.name = name
        self._processes = processes
        self._mailbox = mailbox
        self.alive = True
        # The refs of this process's own monitors that have not fired: they
        # are removed when it ends (here and, for remote targets, on the
        # target's node), so a short-lived process leaves nothing behind on
        # either side. None until it monitors something.
        self._watching: set[Ref] | None = None
        #: ``True``: exit signals arrive as ``ExitSignal`` messages instead of
        #: ending this process (all but ``kill``). Erlang's ``trap_exit`` flag.
        self.trap_exits = False
        # Cancelled to end the process on an exit signal (see _links).
        self._scope: Any = None
        # Why an exit signal ended it; overrides what its task raised.
        self._exit_reason: ExitReason | None = None

    def __repr__(self) -> str:
        name = "" if self.name is None else f" {self.name!r}"
        return f"<Process {self.pid}{name}{'' if self.alive else ' ended'}>"

    async def receive(
        self, *, timeout: float | None = None, match: Callable[[Any], bool] | None = None
    ) -> Any:
        """Take the oldest message, waiting for one if needed.

        Args:
            timeout: seconds to wait; ``None`` waits forever.
            match: selective receive: take the oldest message for which
                ``match(message)`` is true; the others stay queued in order.

        Raises:
            TimeoutError: nothing (matching) arrived within ``timeout``.
        """
        if timeout is not None:
            return await self._receive_within(timeout, match)
        if match is not None:
            return await self._mailbox.take(match)
        # Mailbox.take without a match, written out: an idle process waits
        # here, and a frame less (and few locals) per waiting process is
        # ~10% of what it costs (a million of them fit on a node). Keep the
        # two in step.
        mailbox = self._mailbox
        mailbox._since_yield += 1
        if mailbox._since_yield >= _TAKE_YIELD_EVERY:
            mailbox._since_yield = 0
            await mailbox._settings.checkpoint()
        else:
            await mailbox._settings.checkpoint_if_cancelled()
        while True:
            queue = mailbox._queue
            if queue is not None:
                message = queue.popleft()
                mailbox._bytes -= queue.popleft()
                if not queue:
                    mailbox._queue = None
                if type(message) is Traced or _current_id() is not None:
                    return unwrap_received(message)
                return message
            settings = mailbox._settings
            if settings.on_trio:
                lender = mailbox.lender()
                if lender is not None:
                    await lender.borrow(mailbox)
                else:
                    await settings.wait_task_rescheduled(mailbox.park_task())
            else:
                await mailbox.event().wait()
            mailbox._since_yield = 0

    async def _receive_within(self, timeout: float, match: Callable[[Any], bool] | None) -> Any:
        try:
            with anyio.fail_after(timeout):
                return await self._mailbox.take(match)
        except TimeoutError:
            # What is already queued is taken whatever the timeout (Erlang's
            # `after 0`): a deadline of 0 or a few ns cancels the take at its
            # first checkpoint, before it has looked at the queue.
            try:
                return self._mailbox.take_nowait(match)
            except anyio.WouldBlock:
                pass
            raise

    def receive_nowait(self, *, match: Callable[[Any], bool] | None = None) -> Any:
        """Take the oldest (matching) message without waiting.

        Raises:
            anyio.WouldBlock: nothing (matching) is queued.
        """
        return self._mailbox.take_nowait(match)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self._mailbox.take()

    def pending(self) -> int:
        """How many messages wait in the mailbox."""
        return len(self._mailbox)

    def monitor(self, pid: Pid) -> Ref:
        """Watch ``pid``; a :class:`ProcessDown` with the returned ref
        arrives in this mailbox exactly once (unless demonitored first).

        The monitor ends with this process: if it has not fired by then, it
        is removed (as in Erlang, where a monitor belongs to the process
        that made it).
        """
        monitors = self._processes.monitors
        if not self.alive:
            # An ended process holds no monitors (nothing could reach its
            # closed mailbox, and nothing would ever remove the watch).
            return monitors.new_ref()
        ref = monitors.watch(pid, self._monitor_fired)
        if monitors.active(ref):  # not fired at once (noproc, noconnection)
            if self._watching is None:
                self._watching = set()
            self._watching.add(ref)
        return ref

    def demonitor(self, ref: Ref, *, flush: bool = False) -> bool:
        """Stop watching. Returns ``True`` if the monitor was still active
        (``False`` too for a ref this process did not make).

        With ``flush=True`` a ``ProcessDown`` for ``ref`` already queued in
        the mailbox is removed too (Erlang's ``demonitor(Ref, [flush])``).
        """
        # Only this process's own monitors: another's ref is left alone.
        watching = self._watching
        active = watching is not None and ref in watching
        if active:
            assert watching is not None
            watching.discard(ref)
            self._processes.monitors.unwatch(ref)
        if flush:
            while True:
                try:
                    self._mailbox.take_nowait(lambda m: isinstance(m, ProcessDown) and m.ref == ref)
                except anyio.WouldBlock:
                    break
        return active

    # -------------------------------------------- links and calls (_links, _calls)

    async def link(self, pid: Pid) -> None:
        """Link this process to ``pid`` (on any node), both ways.

        When either ends with a reason other than ``normal``, the other gets
        an exit signal: it ends (kind ``exit``) unless it traps exits, in
        which case an ``ExitSignal`` arrives in its mailbox. Linking to a
        dead pid (or one of an earlier run of its node) fires ``noproc`` at
        once, to a node that cannot be reached ``noconnection``. Linking
        twice is one link; linking to itself does nothing.

        Raises:
            TypeError: ``pid`` is not a :class:`Pid`.
            ValueError: this process has ended.
        """
        await self._processes.links.link(self, pid)

    async def unlink(self, pid: Pid) -> None:
        """Remove the link with ``pid``, if any: no exit signal travels over
        it afterwards (one already queued as an ``ExitSignal`` stays).

        Raises:
            TypeError: ``pid`` is not a :class:`Pid`.
        """
        await self._processes.links.unlink(self, pid)

    async def call(
        self, dest: Pid | str | tuple[str, str], request: Any, timeout: float | None = 5.0
    ) -> Any:
        """Send ``request`` to ``dest`` as a :class:`Call` and wait for the
        reply (``dest`` as in ``Node.send``). The callee is monitored while
        the call waits; the reply is matched by the call's ref and never
        enters this mailbox (one arriving too late is dropped and counted).

        Raises:
            CallTimeoutError: no reply within ``timeout`` seconds.
            ProcessDownError: the callee ended, did not exist (``noproc``)
                or its node went down or cannot be reached
                (``noconnection``) before replying.
            NameNotFoundError: ``dest`` is a local name nobody registered.
            ValueError: ``timeout`` is not positive, ``dest`` is this
                process, or this process has ended.
        """
        return await self._processes.calls.call(self, dest, request, timeout)

    async def reply(self, call: Call, value: Any) -> None:
        """Answer ``call`` (a :class:`Call` taken from the mailbox) with
        ``value``. Any process may reply, once per call.

        Raises:
            TypeError: ``call`` is not a :class:`Call`.
            AlreadyRepliedError: this call was already replied to.
            EncodeError, MessageTooLargeError: ``value`` cannot travel.
        """
        await self._processes.calls.reply(call, value)

    def _monitor_fired(self, event: ProcessDown) -> None:
        if self._watching is not None:
            self._watching.discard(event.ref)
        self._deliver_down(event)

    def _deliver_down(self, event: object) -> None:
        if not self._mailbox.put(event):
            self._processes.dropped(self.pid, self._mailbox.refusal)


@attrs.define(eq=False)
class HostedProcess:
    """A process of the node whose task runs in another task group: a
    supervisor's child. The pid, table entry, name, monitors and links are
    the process table's; the task, and when it ends, are the host's. Made by
    :meth:`Processes.host`, ended once with :meth:`end`."""

    process: Process
    #: Cancelled by an exit signal (a link, ``Node.exit``): the host runs
    #: the body inside it, so a signal ends the body like a spawned one's.
    signalled: anyio.CancelScope
    _processes: Processes

    @property
    def exit_signal(self) -> ExitReason | None:
        """The reason of the exit signal that ended the process, if one did."""
        return self.process._exit_reason

    def reason_for(self, exc: BaseException) -> ExitReason:
        """The exit reason of a body that ``exc`` ended (a cancellation is
        ``shutdown`` while the node stops)."""
        return self._processes._reason_for(exc)

    def end(self, reason: ExitReason) -> ExitReason:
        """End the process (monitors fire, links propagate, its name is
        freed) and return why: an exit signal's reason overrides ``reason``."""
        if self.process._exit_reason is not None:
            reason = self.process._exit_reason
        self._processes._exit(self.process, reason)
        return reason


@attrs.define(eq=False, kw_only=True)
class Processes:
    """The node's process table: pids, local names, spawning and sending."""

    transport: Transport
    events: NodeEventBus
    # A process's monitors, links and calls are parts of the process table,
    # built with it (in this order: a process's end fires its monitors,
    # then its links, then fails the calls it was serving).
    monitors: Monitors = attrs.field(init=False)
    links: Links = attrs.field(init=False)
    calls: Calls = attrs.field(init=False)
    _task_group: anyio.abc.TaskGroup | None = None
    _table: dict[int, Process] = attrs.field(factory=dict)
    _names: dict[str, Process] = attrs.field(factory=dict)
    _ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    _since_yield: int = 0
    _on_trio: bool = False
    _heads: dict[int, dict[Any, bytes]] = attrs.field(factory=lambda: {_SEND: {}, _SEND_NAMED: {}})
    _checkpoints: Checkpoints = (anyio.lowlevel.checkpoint, anyio.lowlevel.checkpoint_if_cancelled)
    _last_drop_log: float = 0.0
    _drops_since_log: int = 0
    # Bound at start() to the running backend (see there).
    _start_soon: Callable[..., object] | None = None
    _new_scope: Callable[[], _Scope] = anyio.CancelScope
    _cancelled: type[BaseException] = BaseException
    _mailbox_settings: MailboxSettings | None = None
    _spawns_since_yield: int = 0
    # Direct delivery of SEND frames (see _init_direct_delivery).
    _direct_creation: bytes = b""
    _direct_start: int = 0

    def __attrs_post_init__(self) -> None:
        self.monitors = Monitors(transport=self.transport, processes=self, events=self.events)
        self.links = Links(transport=self.transport, processes=self, events=self.events)
        self.calls = Calls(
            transport=self.transport, processes=self, monitors=self.monitors, events=self.events
        )

    def __repr__(self) -> str:
        return f"<Processes of {self.transport.name}: {len(self._table)} running>"

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        self._checkpoints = checkpoints()
        self._on_trio = running_on_trio()
        self._cancelled = anyio.get_cancelled_exc_class()
        self._start_soon = task_group.start_soon
        if self._on_trio:
            import trio

            self._new_scope = trio.CancelScope
            # anyio's start_soon gives every task a handle with a cancel
            # scope and an event of its own (about 1.2 KB, and a third of
            # a spawn's time); a process needs neither, so on trio it is
            # started in the task group's nursery itself.
            nursery = getattr(task_group, "_nursery", None)
            if isinstance(nursery, trio.Nursery):
                self._start_soon = nursery.start_soon
        self._mailbox_settings = self._new_mailbox_settings()
        self.transport.add_handler(Kind.SEND, self._handle_send)
        self._init_direct_delivery()
        self.transport.add_handler(Kind.SEND_NAMED, self._handle_send_named)
        self.transport.add_handler(Kind.SEND_TRACED, self._handle_send_traced)
        self.transport.add_handler(Kind.SEND_NAMED_TRACED, self._handle_send_named_traced)

    def _new_mailbox_settings(self) -> MailboxSettings:
        config = self.transport.config
        return MailboxSettings(
            config.max_mailbox, self._checkpoints, config.max_mailbox_bytes, self._on_trio
        )

    # ------------------------------------------------------------- lifecycle

    def _new_process(self, name: str | None) -> Process:
        if name is not None:
            _check_name(name)
            if name in self._names:
                raise ValueError(f"the name {name!r} is already registered on this node")
        settings = self._mailbox_settings
        if settings is None:
            settings = self._mailbox_settings = self._new_mailbox_settings()
        transport = self.transport
        id = next(self._ids)
        process = Process(
            _local_pid(transport.name, id, transport.creation), name, self, Mailbox(settings)
        )
        self._table[id] = process
        if name is not None:
            self._names[name] = process
        return process

    def _exit(self, process: Process, reason: ExitReason) -> None:
        process.alive = False
        process._mailbox.close()
        pid = process.pid
        self._table.pop(pid.id, None)
        name = process.name
        if name is not None and self._names.get(name) is process:
            del self._names[name]
        watching = process._watching
        if watching:
            # Its own monitors end with it (DEMONITOR to remote targets).
            self.monitors.unwatch_all(watching)
            watching.clear()
        self.events.publish(ProcessExited(pid, reason))

    def _reason_for(self, exc: BaseException) -> ExitReason:
        if isinstance(exc, self._cancelled):
            return _SHUTDOWN if self.transport.stopping else _CANCELLED
        return ExitReason.from_exception(exc)

    def host(self, name: str | None) -> HostedProcess:
        """A new process whose task the caller runs in its own task group
        (a supervisor's child); see :class:`HostedProcess`.

        Raises:
            ValueError: ``name`` is invalid or already registered.
        """
        process = self._new_process(name)
        process._scope = scope = anyio.CancelScope()
        return HostedProcess(process, scope, self)

    @asynccontextmanager
    async def open_process(self, name: str | None = None) -> AsyncIterator[Process]:
        """See :meth:`Node.open_process`."""
        process = self._new_process(name)
        token = _current.set(process)
        scope = process._scope = self._new_scope()
        reason = _NORMAL
        try:
            with scope:  # an exit signal cancels it
                yield process
        except BaseException as exc:
            reason = self._reason_for(exc)
            raise
        finally:
            _current.reset(token)
            if process._exit_reason is not None:
                reason = process._exit_reason
            self._exit(process, reason)
        if process._exit_reason is not None:
            # The body was cut short: the code after the block must not run
            # as if it had finished.
            raise ProcessExitError(process.pid, process._exit_reason)

    async def spawn(
        self,
        fn: Callable[..., Awaitable[object]],
        *args: Any,
        name: str | None = None,
        link: bool = False,
    ) -> Pid:
        """See :meth:`Node.spawn`."""
        start_soon = self._start_soon
        if start_soon is None:
            raise RuntimeError("the node has not started")
        parent = None
        if link:
            parent = _current.get()
            if parent is None:
                raise RuntimeError("spawn(link=True) must be called from within a process")
            if not parent.alive:
                raise RuntimeError(f"spawn(link=True): the calling process {parent.pid} has ended")
        # The process exists (pid, table entry, name) before its task does:
        # messages sent to it meanwhile wait in its mailbox, and an exit
        # signal meanwhile ends it before fn runs (see _run_spawned).
        process = self._new_process(name)
        if parent is not None:
            # Linked before the pid is handed out and before fn runs: the
            # child cannot end unlinked (a parent gone meanwhile: noproc).
            self.links.link_local(process, parent.pid)
        try:
            start_soon(self._run_spawned, process, fn, args, name=_TASK_NAME)
        except BaseException:
            # The task group is closed (the node is stopping): no task will
            # ever end this process, so it ends here.
            self._exit(process, _SHUTDOWN)
            raise
        # Not a scheduler pass per spawn (that is what made spawning slow),
        # but one every _YIELD_EVERY, as for sends; a cancelled caller stops
        # here.
        self._spawns_since_yield += 1
        if self._spawns_since_yield >= _YIELD_EVERY:
            self._spawns_since_yield = 0
            await self._checkpoints[0]()
        else:
            await self._checkpoints[1]()
        return process.pid

    async def _run_spawned(
        self, process: Process, fn: Callable[..., Awaitable[object]], args: tuple[Any, ...]
    ) -> None:
        # This frame lives as long as the process does, so it keeps few
        # locals, and enters its scope by hand: a ``with`` statement would
        # hold the scope's bound ``__exit__`` for the whole wait.
        _current.set(process)  # this task's own context: no reset needed
        process._scope = self._new_scope()
        try:
            process._scope.__enter__()  # an exit signal cancels it
            try:
                if process._exit_reason is None:
                    await fn(process, *args)
            except BaseException as exc:
                if not process._scope.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                process._scope.__exit__(None, None, None)
        except BaseException as exc:
            if self._ended(process, exc):
                raise
        else:
            self._exit(process, _NORMAL if process._exit_reason is None else process._exit_reason)

    def _ended(self, process: Process, exc: BaseException) -> bool:
        """End ``process``, whose function raised ``exc`` (its scope did not
        take it); ``True``: the caller re-raises it (a cancellation from
        outside, or worse)."""
        reraise = not isinstance(exc, Exception) or isinstance(exc, self._cancelled)
        if reraise:
            reason = self._reason_for(exc)
        else:
            # A crashing process is reported to its monitors and logged; it
            # does not take the node down.
            reason = ExitReason.from_exception(exc)
            logger.exception("process %s crashed", process.pid, exc_info=exc)
        self._exit(process, reason if process._exit_reason is None else process._exit_reason)
        return reraise

    # --------------------------------------------------------------- sending

    async def send(self, dest: Pid | str | tuple[str, str], message: Any) -> None:
        """See :meth:`Node.send`."""
        cid = _current_id()
        if cid is not None:
            await self._send_traced(dest, message, cid)
            return
        transport = self.transport
        if type(dest) is Pid:
            node = dest.node
            if node != transport.name:
                # The hot path, written out flat: every call layer here is
                # paid once per message.
                conn = transport.connection(node)
                if conn is None:
                    conn = await self.transport.connection_for(node)
                if conn.is_congested():
                    # Wait before writing, not after: of many senders woken
                    # together only the first writes, the others see the
                    # buffer full again, so a burst of senders cannot pile
                    # frames towards max_send_queue.
                    await conn.wait_for_space()
                    self._write_frame(conn, _SEND, dest, message)
                    self._since_yield = 0
                    return
                self._write_frame(conn, _SEND, dest, message)
                self._since_yield += 1
                if self._since_yield >= _YIELD_EVERY:
                    self._since_yield = 0
                    await self._checkpoints[0]()
                else:
                    await self._checkpoints[1]()
                return
            copy, size = self.local_copy(_SEND, dest, message)
            self._deliver(dest, copy, size)
        elif isinstance(dest, str):
            process = self._names.get(dest)
            if process is None:
                raise NameNotFoundError(dest)
            copy, size = self.local_copy(_SEND_NAMED, dest, message)
            self._put(process, copy, size)
        elif isinstance(dest, tuple) and len(dest) == 2:
            name, node = dest
            if node != transport.name:
                _check_name(name)
                await self._send_remote(node, _SEND_NAMED, name, message)
                return
            # Like Erlang's {Name, node()} ! Msg: no error, only a count
            # (after the same encoding check as a remote send).
            copy, size = self.local_copy(_SEND_NAMED, _check_name(name), message)
            process = self._names.get(name)
            if process is None:
                self.dropped(None, "unknown_name")
            else:
                self._put(process, copy, size)
        else:
            raise TypeError(f"send destination must be a Pid, a name or (name, node), got {dest!r}")
        await self.maybe_yield()

    async def _send_traced(self, dest: Pid | str | tuple[str, str], message: Any, cid: str) -> None:
        """``send`` when a correlation id is current: the message carries it
        (the frame kinds without one keep the common path lean)."""
        transport = self.transport
        if type(dest) is Pid:
            if dest.node != transport.name:
                await self._send_item(dest.node, [Kind.SEND_TRACED, dest, message, cid])
                return
            copy, size = self.local_copy(_SEND, dest, message, _head(len(cid)) + len(cid))
            self._deliver(dest, Traced(copy, cid), size)
        elif isinstance(dest, str):
            process = self._names.get(dest)
            if process is None:
                raise NameNotFoundError(dest)
            copy, size = self.local_copy(_SEND_NAMED, dest, message, _head(len(cid)) + len(cid))
            self._put(process, Traced(copy, cid), size)
        elif isinstance(dest, tuple) and len(dest) == 2:
            name, node = dest
            if node != transport.name:
                _check_name(name)
                await self._send_item(node, [Kind.SEND_NAMED_TRACED, name, message, cid])
                return
            copy, size = self.local_copy(
                _SEND_NAMED, _check_name(name), message, _head(len(cid)) + len(cid)
            )
            process = self._names.get(name)
            if process is None:
                self.dropped(None, "unknown_name")
            else:
                self._put(process, Traced(copy, cid), size)
        else:
            raise TypeError(f"send destination must be a Pid, a name or (name, node), got {dest!r}")
        await self.maybe_yield()

    async def _send_item(self, node: str, item: list[Any]) -> None:
        conn = self.transport.connection(node)
        if conn is None:
            conn = await self.transport.connection_for(node)
        data = self.transport.encode_frame(item)
        if conn.is_congested():
            await conn.wait_for_space()  # before writing: see send()
            conn.write(data)
            self._since_yield = 0
        else:
            conn.write(data)
            await self.maybe_yield()

    def _frame_head(self, kind: int, dest: Pid | str) -> bytes:
        """The encoded start of ``[kind, dest, message]``, cached per dest.

        CBOR items concatenate, so a frame is this head plus the encoded
        message: the destination is encoded once, not once per message.
        """
        heads = self._heads[kind]
        head = heads.get(dest)
        if head is None:
            if len(heads) >= _HEAD_CACHE_SIZE:
                heads.clear()
            head = heads[dest] = _ARRAY_OF_3 + codec.encode(kind) + codec.encode(dest)
        return head

    def _write_frame(self, conn: Connection, kind: int, dest: Pid | str, message: Any) -> None:
        """Encode ``[kind, dest, message]`` (the head from the cache) and
        write it; a plain call, so the hot path pays no await layer."""
        head = self._heads[kind].get(dest) or self._frame_head(kind, dest)
        if type(message) is bytes and len(message) >= GATHER_ABOVE:
            # Bulk data: only the heads are encoded; the payload goes to the
            # socket from the caller's own buffer (the same bytes on the
            # wire as codec.encode would give, without copying 16 MiB).
            n = len(message)
            size = len(head) + _head(n) + n
            limit = self.transport.config.max_message_size
            if size > limit:
                raise MessageTooLargeError(size, limit)
            conn.write_parts(b"".join((_LENGTH.pack(size), head, _bytes_head(n))), message)
            return
        body = codec.encode(message)
        size = len(head) + len(body)
        limit = self.transport.config.max_message_size
        if size > limit:
            raise MessageTooLargeError(size, limit)
        if size >= GATHER_ABOVE:
            # A big encoded message is not copied once more to join it.
            conn.write_parts(b"".join((_LENGTH.pack(size), head)), body)
            return
        conn.write(b"".join((_LENGTH.pack(size), head, body)))

    async def _send_remote(self, node: str, kind: int, dest: Pid | str, message: Any) -> None:
        conn = self.transport.connection(node)
        if conn is None:
            conn = await self.transport.connection_for(node)
        if conn.is_congested():
            await conn.wait_for_space()  # before writing: see send()
            self._write_frame(conn, kind, dest, message)
            self._since_yield = 0
        else:
            self._write_frame(conn, kind, dest, message)
            await self.maybe_yield()

    async def maybe_yield(self) -> None:
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await self._checkpoints[0]()
        else:
            await self._checkpoints[1]()

    def local_copy(
        self, kind: int, dest: Pid | str, message: Any, extra: int = 0
    ) -> tuple[Any, int]:
        """What the receiver would get had ``message`` crossed the wire, and
        the frame size a remote send would have had (what the mailbox's byte
        limit counts).

        A local send goes through the codec like a remote one, so code tested
        on one node behaves the same distributed: tuples arrive as lists, the
        receiver never shares a mutable object with the sender, ``@message``
        classes round-trip, and what cannot travel raises ``EncodeError``
        (too large: ``MessageTooLargeError``) here, at the sender.

        The common shapes (plain data: str-keyed dicts, lists, tuples,
        scalars, pids) are copied by :func:`_plain_copy`, which gives what the
        round trip would, at a fraction of its cost; the rest takes the
        round trip.

        Raises:
            EncodeError: the message cannot travel.
            MessageTooLargeError: its frame would exceed ``max_message_size``.
            DecodeError: it encodes but this node would refuse it (a
                ``@message`` class whose constructor rejects its fields).
        """
        if type(dest) is Pid:
            head_size = _pid_frame_head_size(dest)
        else:
            head_size = len(self._heads[kind].get(dest) or self._frame_head(kind, dest))
        try:
            copy, body_size = _plain_copy(message, _PLAIN_DEPTH)
        except (_Unusual, UnicodeEncodeError):
            # Messages, keyed maps, subclasses, refusals: the codec itself.
            body = codec.encode(message)
            copy, body_size = None, len(body)
        else:
            body = b""
        size = head_size + body_size + extra
        limit = self.transport.config.max_message_size
        if size > limit:
            raise MessageTooLargeError(size, limit)
        if not body:
            return copy, size
        return codec.decode(body), size

    # ------------------------------------------------------------- receiving

    def _deliver(self, dest: Pid, message: Any, size: int = 0) -> None:
        if dest.creation != self.transport.creation:
            self.dropped(dest, "dead_pid")  # a pid of an earlier run of this node
            return
        process = self._table.get(dest.id)
        if process is None:
            self.dropped(dest, "dead_pid")
            return
        self._put(process, message, size)

    def _put(self, process: Process, message: Any, size: int = 0) -> None:
        """Queue ``message``; ``size`` is its encoded size (what the
        mailbox's byte limit counts), 0 for the node's own notifications."""
        mailbox = process._mailbox
        if not mailbox.put(message, size):
            self.dropped(process.pid, mailbox.refusal)

    def put_from(self, conn: Connection, process: Process, message: Any, size: int) -> None:
        """:meth:`_put` for a message ``conn``'s reader brought: if it wakes
        the process, the connection may lend it its socket."""
        mailbox = process._mailbox
        waiting = mailbox._waiter is not None
        if not mailbox.put(message, size):
            self.dropped(process.pid, mailbox.refusal)
        elif waiting:
            conn.woke(mailbox)

    def _init_direct_delivery(self) -> None:
        """Let the connection readers hand a SEND frame to a local process
        without decoding its head: every SEND to a pid of this node starts
        with the same bytes (the frame's array head, the kind, the pid's tag
        and array head, this node's name), and ends its head with the pid's
        id and this node's creation."""
        transport = self.transport
        creation = codec.encode(transport.creation)
        pid = codec.encode(Pid(transport.name, 0, transport.creation))
        # The pid's encoding: ..., the name, the id (0: one byte), creation.
        name_end = len(pid) - len(creation) - 1
        assert pid[name_end] == 0 and pid.endswith(creation)
        prefix = b"\x83" + codec.encode(_SEND) + pid[:name_end]
        self._direct_creation = creation
        self._direct_start = len(prefix)
        transport.add_direct_dispatch(prefix, self._deliver_direct)

    def _deliver_direct(self, conn: Connection, payload: bytes | bytearray) -> bool:
        """Deliver a SEND frame (``payload`` starts with the direct-delivery
        prefix) to a live local process, its head read by hand and only the
        message decoded; ``False`` leaves the frame to the full decode and
        :meth:`_handle_send` (a dead pid, a head in any other form, a
        message that does not decode: whatever that path counts or
        refuses, it does so as for any frame). What a frame delivered here
        would have been delivered as is the same: the head matched this
        node's name and creation byte for byte, the id names a live
        process, and the message decodes under the same depth limit.
        """
        pos = self._direct_start
        try:
            first = payload[pos]
            # The pid's id: a CBOR uint head of up to 4 bytes.
            if first < 24:
                id_ = first
                pos += 1
            elif first == 24:
                id_ = payload[pos + 1]
                pos += 2
            elif first == 25:
                id_ = (payload[pos + 1] << 8) | payload[pos + 2]
                pos += 3
            elif first == 26:
                id_ = int.from_bytes(payload[pos + 1 : pos + 5], "big")
                pos += 5
            else:
                return False
        except IndexError:  # a truncated frame: let the full decode say so
            return False
        creation = self._direct_creation
        if not payload.startswith(creation, pos):
            return False
        process = self._table.get(id_)
        if process is None:
            return False
        pos += len(creation)
        size = len(payload)
        message: object
        if size > _SLICED_ABOVE:
            # A big frame: only a byte string filling the rest of it (bulk
            # data) is cut out here, with the one copy that makes the
            # ``bytes``; anything else is decoded in slices by the reader.
            message = _bytes_to_end(payload, pos)
            if message is None:
                return False
        else:
            try:
                message = _decode_element(payload[pos:])
            except DecodeError:
                return False
        self.put_from(conn, process, message, size)
        return True

    def _handle_send(self, conn: Connection, item: list[Any]) -> None:
        _, dest, message = item
        transport = self.transport
        if type(dest) is not Pid or dest.node != transport.name:
            raise ValueError(f"SEND to {dest!r}, which is not a pid of this node")
        # _deliver, written out flat (once per received message).
        process = self._table.get(dest.id) if dest.creation == transport.creation else None
        if process is None:
            self.dropped(dest, "dead_pid")
        else:
            self.put_from(conn, process, message, conn.frame_size)

    def _handle_send_named(self, conn: Connection, item: list[Any]) -> None:
        _, name, message = item
        if not isinstance(name, str):
            raise TypeError("SEND_NAMED needs a str name")
        process = self._names.get(name)
        if process is None:
            self.dropped(None, "unknown_name")
        else:
            self._put(process, message, conn.frame_size)

    def _handle_send_traced(self, conn: Connection, item: list[Any]) -> None:
        _, dest, message, cid = item
        if type(dest) is not Pid or dest.node != self.transport.name:
            raise ValueError(f"SEND_TRACED to {dest!r}, which is not a pid of this node")
        if type(cid) is not str:
            raise TypeError("SEND_TRACED needs a str correlation id")
        self._deliver(dest, Traced(message, cid), conn.frame_size)

    def _handle_send_named_traced(self, conn: Connection, item: list[Any]) -> None:
        _, name, message, cid = item
        if not isinstance(name, str) or type(cid) is not str:
            raise TypeError("SEND_NAMED_TRACED needs a str name and a str correlation id")
        process = self._names.get(name)
        if process is None:
            self.dropped(None, "unknown_name")
        else:
            self._put(process, Traced(message, cid), conn.frame_size)

    def dropped(self, pid: Pid | None, cause: str) -> None:
        """Count a dropped message and log it, at most once a second."""
        self.transport.count_drop(cause, pid)
        self._drops_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:
            logger.warning(
                "%s: dropped %d message(s) in the last %.0fs; latest: %s to %s",
                self.transport.name,
                self._drops_since_log,
                now - self._last_drop_log if self._last_drop_log else 0,
                cause,
                pid,
            )
            self._last_drop_log = now
            self._drops_since_log = 0

    # ----------------------------------------------------------- inspection

    def lookup(self, pid: Pid) -> Process | None:
        """The live local process with this pid, if any."""
        if pid.node != self.transport.name or pid.creation != self.transport.creation:
            return None
        return self._table.get(pid.id)

    def local(self, id_: int) -> Process | None:
        """The live local process with this id (of this run of the node)."""
        return self._table.get(id_)

    def whereis(self, name: str) -> Pid | None:
        """The pid registered locally under ``name``."""
        process = self._names.get(name)
        return None if process is None else process.pid

    def count(self) -> int:
        return len(self._table)

    def mailbox_depths(self) -> dict[Pid, int]:
        return {p.pid: len(p._mailbox) for p in self._table.values() if len(p._mailbox)}
