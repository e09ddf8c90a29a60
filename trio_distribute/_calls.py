"""Request/reply between processes: ``Process.call`` and ``Process.reply``.

Erlang's ``gen_server:call``: the caller sends a :class:`Call` (the request,
its pid and a fresh ref) and waits; the callee is monitored for as long as
the caller waits, so the caller learns at once when it ends or its node
goes down. The reply is matched by the ref and handed straight to the
waiting call: it never enters a mailbox, so a reply that comes after the
caller gave up (timeout, callee down, cancelled) is dropped and counted
(``late_reply``), never left in the mailbox for a later receive.

Across nodes, one CALL frame carries both the request and the monitor (the
callee's node resolves a name there, which a pid-only monitor could not), a
REPLY frame the answer, CALL_DOWN the callee's end, and CALL_DONE tells the
callee's node to forget a call the caller stopped waiting for. Between
processes of one node the ordinary monitors do the watching.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs

from ._backend import running_on_trio
from ._deadlines import Deadlines, Waiter, bind_trio, loop_clock
from ._ids import Pid, Ref, unchecked_id
from ._node_events import NodeEventBus, PeerDown, ProcessExited
from ._proto.kinds import Kind
from ._sliced_decode import SLICED_ABOVE
from .codec import (
    decode_element,
    encode,
    encode_element,
    encode_id,
    id_head,
    message,
    read_uint,
)
from .errors import (
    AlreadyRepliedError,
    CallTimeoutError,
    DecodeError,
    MessageTooLargeError,
    NameNotFoundError,
    NodeDownError,
    ProcessDownError,
)
from .monitor import ExitKind, ExitReason, NodeDownReason, ProcessDown

_SEND = int(Kind.SEND)  # a local request or reply is sized as a SEND frame
# Plain ints: the frame encoder writes them from a table.
_CALL = int(Kind.CALL)
_REPLY = int(Kind.REPLY)
_CALL_DOWN = int(Kind.CALL_DOWN)
_CALL_DONE = int(Kind.CALL_DONE)
# The fixed starts of CALL ([kind, ref, caller, dest, request]) and REPLY
# ([kind, caller, ref, value]) frames: array head and kind.
_CALL_START = b"\x85" + encode(_CALL)
_REPLY_START = b"\x84" + encode(_REPLY)
# A CALL's ref is the caller node's: its tag and array head come next.
_CALL_REF_START = _CALL_START + id_head(Ref)
_PID_ID_HEAD = id_head(Pid)
#: Encoded node names kept for reading CALL heads (one per node that calls
#: here; cleared if ever that many).
_NAMES_KEPT = 4096
_LENGTH = struct.Struct(">I")

if TYPE_CHECKING:
    from ._monitors import Monitors
    from .messaging import Process, Processes
    from .transport import Connection, Transport

__all__ = ["Call", "Calls"]

Dest = Pid | str | tuple[str, str]


@message("trio_distribute.Call", version=1)
@attrs.define
class Call:
    """A request made with ``Process.call``, as the callee receives it.

    Answer it with ``await proc.reply(call, value)`` (any process may, once).
    Erlang: the ``{'$gen_call', From, Request}`` message.
    """

    request: Any
    caller: Pid = attrs.field(validator=attrs.validators.instance_of(Pid))
    ref: Ref = attrs.field(validator=attrs.validators.instance_of(Ref))
    # Not sent: set by reply(), so replying twice to this object is an error.
    _replied: bool = attrs.field(default=False, init=False, eq=False, repr=False)


class _Pending(Waiter):
    """A call this node's process is waiting on (it parks the caller)."""

    __slots__ = ("caller", "dest", "down", "node", "replied", "settled", "value")

    def __init__(self, caller: Pid, dest: Dest, node: str, settled: bool = False) -> None:
        super().__init__()
        self.caller = caller
        self.dest = dest
        self.node = node  # the callee's node (this node's name for a local call)
        self.value: Any = None
        self.replied = False
        self.down: ExitReason | None = None
        # The callee's node has forgotten the call already (it replied, or it
        # sent CALL_DOWN, or it went down): no CALL_DONE needed.
        self.settled = settled

    # expire(): its timeout passed; the caller wakes to find neither a
    # reply nor a down reason, and raises the timeout.


_new_object = object.__new__
_set_attribute = object.__setattr__


def _new_call(request: Any, caller: Pid, ref: Ref) -> Call:
    """``Call(request, caller, ref)`` without the validators, for a caller
    and ref whose types were checked already (once per call served)."""
    call = _new_object(Call)
    _set_attribute(call, "request", request)
    _set_attribute(call, "caller", caller)
    _set_attribute(call, "ref", ref)
    _set_attribute(call, "_replied", False)
    return call


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not timeout > 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be positive, got {timeout!r}")


@attrs.define(eq=False, kw_only=True)
class Calls:
    """Calls this node's processes wait on, and calls it serves for others."""

    transport: Transport
    processes: Processes
    monitors: Monitors
    events: NodeEventBus
    # Calls waiting, by ref. (A node going down scans them for its own: a
    # per-node index would cost every call two more set operations.)
    # Keyed by the ref's id: every ref here is this node's own (a Ref does
    # not cache its hash, and a call would hash it three times).
    _pending: dict[int, _Pending] = attrs.field(factory=dict)
    # Calls from other nodes to our processes, until replied, down or done:
    # ref -> (callee pid id, caller's node, caller).
    _serving: dict[Ref, tuple[int, str, Pid]] = attrs.field(factory=dict)
    _serving_by_pid: dict[int, set[Ref]] = attrs.field(factory=dict)
    # How many calls each node has waiting here (max_monitors_per_peer);
    # a node going down scans _serving for its calls.
    _serving_by_node: dict[str, int] = attrs.field(factory=dict)
    _on_trio: bool = False
    # Per call, (trio) the running task and the wait that parks it.
    _current_task: Callable[[], Any] | None = None
    _wait_task_rescheduled: Callable[[Any], Awaitable[Any]] | None = None
    # The calls' timeouts (one task and a heap, not a cancel scope per call).
    deadlines: Deadlines | None = None
    # Set by start() for the frames read by hand (see _reply_direct): this
    # node's pid and ref heads and creation, encoded.
    _own_pid_head: bytes = b""
    _own_ref_head: bytes = b""
    _own_creation: bytes = b""
    _names: dict[str, bytes] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.events.subscribe(ProcessExited, self.process_exited)
        self.events.subscribe(PeerDown, self.node_down)

    def start(self) -> None:
        # The backend's own primitives: anyio's look the backend up on every
        # use, which is most of a call's overhead on the way.
        self._on_trio = running_on_trio()
        if self._on_trio:
            import trio

            bind_trio()
            self._current_task = trio.lowlevel.current_task
            self._wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
        self.deadlines = Deadlines(self.transport.start_soon, loop_clock())
        add = self.transport.add_handler
        add(Kind.CALL, self._handle_call)
        add(Kind.REPLY, self._handle_reply)
        add(Kind.CALL_DOWN, self._handle_call_down)
        add(Kind.CALL_DONE, self._handle_call_done)
        transport = self.transport
        self._own_pid_head = id_head(Pid, transport.name)
        self._own_ref_head = id_head(Ref, transport.name)
        self._own_creation = encode(transport.creation)
        transport.add_direct_dispatch(_REPLY_START + self._own_pid_head, self._reply_direct)
        transport.add_direct_dispatch(_CALL_REF_START, self._call_direct)

    # ----------------------------------------------------------------- caller

    async def call(self, process: Process, dest: Dest, request: Any, timeout: float | None) -> Any:
        """See :meth:`Process.call`."""
        if timeout is not None and (type(timeout) is not float or not timeout > 0):
            _check_timeout(timeout)  # raises unless a positive int or float
        if not process.alive:
            raise ValueError(f"process {process.pid} has ended: it cannot call")
        transport = self.transport
        target: Pid | str
        if type(dest) is Pid:
            node, target = dest.node, dest
        else:
            node, target = self._resolve(dest)
        conn: Connection | None = None
        if node == transport.name:
            pending, ref, watch = self._call_local(process, dest, target, request)
        else:
            ref = self.monitors.new_ref()
            # Encoded first: a request that cannot travel fails here, with
            # nothing registered.
            data = self._call_frame(ref, process.pid, target, request)
            conn = transport.connection(node)
            try:
                if conn is None:
                    conn = await transport.connection_for(node)
                if conn.is_congested():
                    await conn.wait_for_space()
            except NodeDownError as exc:
                reason = ExitReason(ExitKind.NOCONNECTION, exc.reason)
                raise ProcessDownError(reason, dest) from exc
            if conn.closed:
                raise ProcessDownError(ExitReason(ExitKind.NOCONNECTION, "connection lost"), dest)
            pending = _Pending(process.pid, dest, node)
            self._pending[ref.id] = pending
            conn.write(data)
            watch = None
        deadlines = self.deadlines
        assert deadlines is not None
        if timeout is not None:
            deadlines.add(timeout, pending)
        try:
            if self._on_trio:
                current_task = self._current_task
                wait = self._wait_task_rescheduled
                assert current_task is not None and wait is not None
                while not pending.finished:
                    task = current_task()
                    if conn is not None and conn.lent_to(task):
                        # The reply comes on this socket: wait on it here.
                        await conn.borrow(pending)
                    else:
                        pending.task = task
                        await wait(pending)
            else:
                create_future = asyncio.get_running_loop().create_future
                while not pending.finished:
                    future = pending.event = create_future()
                    await future
        finally:
            if timeout is not None:
                deadlines.done()
            self._forget(ref, pending, watch)
        if pending.replied:
            return pending.value
        if pending.down is not None:
            raise ProcessDownError(pending.down, dest)
        raise CallTimeoutError(dest, timeout)

    def _call_local(
        self, process: Process, dest: Dest, target: Pid | str, request: Any
    ) -> tuple[_Pending, Ref, Ref]:
        """Deliver a call to a process of this node, watched by a monitor."""
        processes = self.processes
        pid = processes.whereis(target) if isinstance(target, str) else target
        if pid is None:
            if isinstance(dest, str):
                raise NameNotFoundError(dest)
            raise ProcessDownError(ExitReason(ExitKind.NOPROC, f"no process {target}"), dest)
        if pid == process.pid:
            raise ValueError(f"process {process.pid} cannot call itself")
        # What the callee would get over the wire (a copy, tuples as
        # lists; what cannot travel raises here), as for a local send.
        request, size = processes.local_copy(_SEND, pid, request)
        callee = processes.lookup(pid)
        if callee is None:
            raise ProcessDownError(ExitReason(ExitKind.NOPROC), dest)
        ref = self.monitors.new_ref()
        pending = _Pending(process.pid, dest, self.transport.name, settled=True)
        self._pending[ref.id] = pending
        watch = self.monitors.watch(pid, lambda event: self._local_down(ref, event))
        processes._put(callee, _new_call(request, process.pid, ref), size)
        return pending, ref, watch

    def _sized(self, parts: tuple[bytes, ...]) -> bytes:
        size = sum(map(len, parts))
        limit = self.transport.config.max_message_size
        if size > limit:
            raise MessageTooLargeError(size, limit)
        return b"".join((_LENGTH.pack(size), *parts))

    def _name_bytes(self, node: str) -> bytes:
        """``node`` encoded, as it appears in its pids and refs."""
        data = self._names.get(node)
        if data is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            data = self._names[node] = encode(node)
        return data

    def _call_frame(self, ref: Ref, caller: Pid, dest: Pid | str, request: Any) -> bytes:
        """The CALL frame, built from cached pieces: the same bytes as
        ``transport.encode_frame([CALL, ref, caller, dest, request])``.

        Raises:
            EncodeError, MessageTooLargeError: the request cannot travel.
        """
        body = encode_element(request)
        target = encode_id(dest) if type(dest) is Pid else encode_element(dest)
        return self._sized((_CALL_START, encode_id(ref), encode_id(caller), target, body))

    def _reply_frame(self, caller: Pid, ref: Ref, value: Any) -> bytes:
        """The REPLY frame (as :meth:`_call_frame`)."""
        body = encode_element(value)
        return self._sized((_REPLY_START, encode_id(caller), encode_id(ref), body))

    def _resolve(self, dest: Dest) -> tuple[str, Pid | str]:
        """(the callee's node, its pid or its name there)."""
        if type(dest) is Pid:
            return dest.node, dest
        if isinstance(dest, str):
            return self.transport.name, dest
        if isinstance(dest, tuple) and len(dest) == 2:
            name, node = dest
            if isinstance(name, str) and isinstance(node, str):
                if not name:
                    raise ValueError("a process name must not be empty")
                return node, name
        raise TypeError(f"call destination must be a Pid, a name or (name, node), got {dest!r}")

    def _local_down(self, ref: Ref, event: ProcessDown) -> None:
        pending = self._pending.get(ref.id)
        if pending is not None and not pending.finished:
            pending.down = event.reason
            pending.wake()

    def _forget(self, ref: Ref, pending: _Pending, watch: Ref | None) -> None:
        self._pending.pop(ref.id, None)
        if watch is not None:
            self.monitors.unwatch(watch)
            return
        if not pending.settled:
            # Timed out, cancelled, or answered by a process of another
            # node: the callee's node still watches for us.
            conn = self.transport.connection(pending.node)
            if conn is not None and not conn.closed:
                conn.write(self.transport.encode_id_frame([_CALL_DONE, ref]))

    # ----------------------------------------------------------------- callee

    async def reply(self, call: Call, value: Any) -> None:
        """See :meth:`Process.reply`."""
        if not isinstance(call, Call):
            raise TypeError(f"reply needs the Call received, got {call!r}")
        if call._replied:
            raise AlreadyRepliedError(call.ref)
        transport = self.transport
        caller = call.caller
        if caller.node == transport.name:
            # As over the wire: a copy, and what cannot travel raises with
            # the call still unanswered.
            value, _ = self.processes.local_copy(_SEND, caller, value)
            _set_attribute(call, "_replied", True)  # no attrs setattr hooks
            ref = call.ref
            own = ref.node == transport.name and ref.creation == transport.creation
            pending = self._pending.get(ref.id) if own else None
            if pending is None or pending.caller != caller or pending.finished:
                transport.count_drop("late_reply")
            else:
                pending.value = value
                pending.replied = True
                pending.wake()
            await self.processes.maybe_yield()
            return
        # Encoded first: a value that cannot travel raises with the call
        # still unanswered, so the callee can reply again with another.
        data = self._reply_frame(caller, call.ref, value)
        _set_attribute(call, "_replied", True)
        self._unserve(call.ref, caller.node)
        conn = transport.connection(caller.node)
        if conn is None or conn.closed:
            # Its node is gone (the caller got noconnection already); no
            # redial for an answer nobody waits on.
            transport.count_drop("reply_no_connection")
            await anyio.lowlevel.checkpoint()
            return
        if conn.is_congested():
            await conn.wait_for_space()
        if not conn.closed:
            conn.write(data)
        # Like send: a full yield only now and then (a server replying in a
        # loop would otherwise pay a scheduler pass per reply).
        await self.processes.maybe_yield()

    def _unserve(self, ref: Ref, node: str) -> None:
        entry = self._serving.get(ref)
        if entry is None or entry[1] != node:
            return
        del self._serving[ref]
        pid_id = entry[0]
        refs = self._serving_by_pid.get(pid_id)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self._serving_by_pid[pid_id]
        self._served_one_less(node)

    def _served_one_less(self, node: str) -> None:
        left = self._serving_by_node.get(node, 0) - 1
        if left > 0:
            self._serving_by_node[node] = left
        else:
            self._serving_by_node.pop(node, None)

    def process_exited(self, event: ProcessExited) -> None:
        """A local process ended: fail the calls from other nodes it had
        not answered (local callers are told by their monitors)."""
        pid, reason = event.pid, event.reason
        refs = self._serving_by_pid.pop(pid.id, None)
        if not refs:
            return
        for ref in sorted(refs, key=lambda r: r.id):
            entry = self._serving.pop(ref, None)
            if entry is None:
                continue
            _, node, caller = entry
            self._served_one_less(node)
            conn = self.transport.connection(node)
            if conn is not None and not conn.closed:
                item = [_CALL_DOWN, ref, caller, reason.kind, reason.detail]
                conn.write(self.transport.encode_id_frame(item))

    def node_down(self, event: PeerDown) -> None:
        """Fail the calls waiting on ``node``'s processes; forget the calls
        it made to ours."""
        node, reason = event.name, event.reason
        kind = ExitKind.SHUTDOWN if reason == NodeDownReason.SHUTDOWN else ExitKind.NOCONNECTION
        down = ExitReason(kind, f"node {node} down: {reason}")
        waiting = sorted(ident for ident, pending in self._pending.items() if pending.node == node)
        for ident in waiting:
            pending = self._pending.get(ident)
            if pending is not None and not pending.finished:
                pending.settled = True
                pending.down = down
                pending.wake()
        if self._serving_by_node.pop(node, None) is None:
            return
        for ref in [ref for ref, entry in self._serving.items() if entry[1] == node]:
            entry = self._serving.pop(ref, None)
            if entry is not None:
                refs = self._serving_by_pid.get(entry[0])
                if refs is not None:
                    refs.discard(ref)
                    if not refs:
                        del self._serving_by_pid[entry[0]]

    # ----------------------------------------------------------------- frames

    def _own_ref(self, ref: object, what: str) -> Ref:
        transport = self.transport
        if type(ref) is not Ref or ref.node != transport.name or ref.creation != transport.creation:
            raise ValueError(f"{what} for {ref!r}, a ref this node never made")
        return ref

    def _handle_call(self, conn: Connection, item: list[Any]) -> None:
        _, ref, caller, dest, request = item
        peer = conn.peer
        if type(ref) is not Ref or ref.node != peer:
            raise ValueError(f"CALL ref {ref!r} does not belong to {peer}")
        if type(caller) is not Pid or caller.node != peer:
            raise ValueError(f"CALL from {caller!r}, which is not a pid of {peer}")
        processes = self.processes
        if type(dest) is Pid:
            if dest.node != self.transport.name:
                raise ValueError(f"CALL to {dest!r}, which is not a pid of this node")
            callee = processes.lookup(dest)
        elif isinstance(dest, str):
            pid = processes.whereis(dest)
            callee = None if pid is None else processes.lookup(pid)
        else:
            raise TypeError(f"CALL to {dest!r}: not a pid or a name")
        if callee is None:
            conn.write(
                self.transport.encode_id_frame([_CALL_DOWN, ref, caller, ExitKind.NOPROC, ""])
            )
            return
        if ref in self._serving:
            raise ValueError(f"CALL reuses the ref {ref!r} of a call in progress")
        served = self._serving_by_node.get(peer, 0)
        if served >= self.transport.config.max_monitors_per_peer:
            # Each call waiting here is memory the peer makes us hold.
            self.transport.count_drop("call_limit")
            raise ValueError(f"{peer} has {served} calls waiting here (max_monitors_per_peer)")
        self._serve(conn, ref, caller, callee, request, served)

    def _serve(
        self, conn: Connection, ref: Ref, caller: Pid, callee: Process, request: Any, served: int
    ) -> None:
        """Watch the call for its caller (``served``: how many its node
        has waiting here already) and deliver it."""
        peer = conn.peer
        callee_id = callee.pid.id
        self._serving_by_node[peer] = served + 1
        self._serving[ref] = (callee_id, peer, caller)
        refs = self._serving_by_pid.get(callee_id)
        if refs is None:
            self._serving_by_pid[callee_id] = {ref}
        else:
            refs.add(ref)
        self.processes.put_from(conn, callee, _new_call(request, caller, ref), conn.frame_size)

    def _call_direct(self, conn: Connection, payload: bytes | bytearray) -> bool:
        """Serve a CALL frame to a live local pid with its head read by hand
        and only the request decoded (as ``Processes._deliver_direct`` does
        for SEND). ``False`` leaves the frame to the full decode and
        :meth:`_handle_call`: a callee named or gone, a head in any other
        form, a reused ref, a peer over its limit, a request that does not
        decode: whatever that path answers, refuses or counts, it does so
        as for any frame. The head matched the peer's name and this node's
        byte for byte, so the ref and the caller are the peer's and the
        callee is ours, as the full path checks."""
        if len(payload) > SLICED_ABOVE:
            return False
        peer = conn.peer
        peer_name = self._name_bytes(peer)
        own_pid_head = self._own_pid_head
        try:
            pos = len(_CALL_REF_START)
            if not payload.startswith(peer_name, pos):
                return False
            ref_id, pos = read_uint(payload, pos + len(peer_name))
            ref_creation, pos = read_uint(payload, pos)
            if not payload.startswith(_PID_ID_HEAD, pos):
                return False
            pos += len(_PID_ID_HEAD)
            if not payload.startswith(peer_name, pos):
                return False
            caller_id, pos = read_uint(payload, pos + len(peer_name))
            caller_creation, pos = read_uint(payload, pos)
            if not payload.startswith(own_pid_head, pos):
                return False
            callee_id, pos = read_uint(payload, pos + len(own_pid_head))
        except (IndexError, ValueError):
            return False
        creation = self._own_creation
        if not payload.startswith(creation, pos):
            return False
        callee = self.processes.local(callee_id)
        if callee is None:
            return False
        ref = unchecked_id(Ref, peer, ref_id, ref_creation)
        served = self._serving_by_node.get(peer, 0)
        if ref in self._serving or served >= self.transport.config.max_monitors_per_peer:
            return False
        try:
            request = decode_element(payload[pos + len(creation) :])
        except DecodeError:
            return False
        caller = unchecked_id(Pid, peer, caller_id, caller_creation)
        self._serve(conn, ref, caller, callee, request, served)
        return True

    def _handle_reply(self, conn: Connection, item: list[Any]) -> None:
        _, caller, ref, value = item
        ref = self._own_ref(ref, "REPLY")
        if type(caller) is not Pid or caller.node != self.transport.name:
            raise ValueError(f"REPLY to {caller!r}, which is not a pid of this node")
        pending = self._pending.get(ref.id)
        if (
            pending is None
            or pending.finished
            or (pending.caller is not caller and pending.caller != caller)
        ):
            self.transport.count_drop("late_reply")
            return
        self._replied(conn, pending, value)

    def _replied(self, conn: Connection, pending: _Pending, value: Any) -> None:
        if conn.peer == pending.node:
            pending.settled = True  # the serving node forgot it as it replied
            conn.woke(pending.task)  # the caller's next call may borrow the socket
        pending.value = value
        pending.replied = True
        pending.wake()

    def _reply_direct(self, conn: Connection, payload: bytes | bytearray) -> bool:
        """Hand a REPLY frame to the call waiting for it with its head read
        by hand and only the value decoded; ``False`` leaves the frame to
        the full decode and :meth:`_handle_reply` (a late reply, a head in
        any other form, a value that does not decode). The caller's pid and
        the ref matched this node's name and creation byte for byte, so
        both are this node's, as the full path checks."""
        if len(payload) > SLICED_ABOVE:
            return False
        creation = self._own_creation
        ref_head = self._own_ref_head
        try:
            caller_id, pos = read_uint(payload, len(_REPLY_START) + len(self._own_pid_head))
            if not payload.startswith(creation, pos):
                return False
            pos += len(creation)
            if not payload.startswith(ref_head, pos):
                return False
            ref_id, pos = read_uint(payload, pos + len(ref_head))
        except (IndexError, ValueError):
            return False
        if not payload.startswith(creation, pos):
            return False
        pending = self._pending.get(ref_id)
        if pending is None or pending.finished or pending.caller.id != caller_id:
            return False
        try:
            value = decode_element(payload[pos + len(creation) :])
        except DecodeError:
            return False
        self._replied(conn, pending, value)
        return True

    def _handle_call_down(self, conn: Connection, item: list[Any]) -> None:
        _, ref, caller, kind, detail = item
        ref = self._own_ref(ref, "CALL_DOWN")
        if not isinstance(kind, str) or not isinstance(detail, str) or type(caller) is not Pid:
            raise TypeError("CALL_DOWN needs a ref, a pid, a str kind and a str detail")
        reason = ExitReason(kind, detail)
        pending = self._pending.get(ref.id)
        if pending is None:
            return  # the caller stopped waiting meanwhile
        if pending.node != conn.peer or pending.caller != caller:
            raise ValueError(f"CALL_DOWN for {ref!r} from {conn.peer}, which does not serve it")
        pending.settled = True
        if not pending.finished:
            pending.down = reason
            pending.wake()

    def _handle_call_done(self, conn: Connection, item: list[Any]) -> None:
        _, ref = item
        if type(ref) is not Ref or ref.node != conn.peer:
            raise ValueError(f"CALL_DONE ref {ref!r} does not belong to {conn.peer}")
        self._unserve(ref, conn.peer)

    # ------------------------------------------------------------- inspection

    def sizes(self) -> dict[str, int]:
        """The size of each table, for statistics and leak checks."""
        return {
            "pending": len(self._pending),
            "serving": len(self._serving),
            "serving_by_pid": sum(len(refs) for refs in self._serving_by_pid.values()),
            "serving_by_node": sum(self._serving_by_node.values()),
            # Calls waiting with a timeout (the heap's stale entries are
            # reclaimed lazily and are not counted).
            "deadlines": 0 if self.deadlines is None else self.deadlines.waiting,
        }
