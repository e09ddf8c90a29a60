"""RPC: call exported functions on other nodes, with timeouts that cancel
the remote task.

Only exported functions can be called: per node with
``node.rpc.export(fn, name)``, or for every node of this OS process with
the :func:`expose` decorator. ``settings.allow_any_module`` (off by
default, for trusted clusters) also resolves ``"module.function"`` by
import.

Semantics follow Erlang's ``erpc`` with one deliberate difference: the
caller's timeout is a cancel scope that spans the network. When a call
times out or its caller is cancelled, the remote task is cancelled too and
acknowledges with a ``CANCELLED`` reply; a reply that still arrives later is
dropped, never delivered anywhere. The task serving a call is also
cancelled when the caller's node goes down, since nobody is left to
receive its result. Casts run to completion.

Wire (see ``_proto.kinds``): ``RPC_CALL``/``RPC_CAST`` carry the function
name, arguments and the caller's correlation id; ``RPC_REPLY`` carries a
status (:data:`OK`, :data:`RAISED`, :data:`BAD`, :data:`CANCELLED`) and a
value; ``RPC_CANCEL`` asks the serving node to stop a call. Calls on one
connection are matched to replies by request id, so any number can be in
flight at once.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio
import anyio.abc
import attrs

from ._backend import running_on_trio
from ._correlation import correlation_id
from ._deadlines import Waiter, bind_trio, loop_clock
from ._node_events import NodeEventBus, PeerDown
from ._proto.kinds import Kind
from ._ratelimit import LogLimiter
from .errors import (
    BadRpcError,
    EncodeError,
    MessageTooLargeError,
    NodeDownError,
    RemoteError,
    RpcTimeoutError,
)
from .telemetry import RpcCompleted, RpcTimedOut
from .transport import Connection, Transport

if TYPE_CHECKING:
    from .messaging import Processes
    from .node import Node

__all__ = ["Err", "Ok", "Rpc", "RpcStatistics", "call", "expose"]

logger = logging.getLogger("trio_distribute.rpc")
_limited = LogLimiter(logger)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Reply statuses: the function returned / raised / could not be called /
#: was cancelled at the caller's request (the acknowledgement).
OK, RAISED, BAD, CANCELLED = 0, 1, 2, 3
#: Never on the wire: the connection went down before a reply came.
_NODE_DOWN = -1
#: Telemetry names of how a call ended.
_OUTCOMES = {OK: "ok", RAISED: "raised", BAD: "bad_rpc", _NODE_DOWN: "node_down"}

_CALL = Kind.RPC_CALL
_REPLY = Kind.RPC_REPLY

#: Functions exposed with :func:`expose`, callable on every node of this process.
_exposed: dict[str, Callable[..., Any]] = {}


def _check_function_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ValueError(f"an RPC function name is a non-empty str of <= 255 chars, got {name!r}")
    return name


def expose(name: str | None = None) -> Callable[[F], F]:
    """Decorator: make a function callable by RPC, on every node of this
    OS process, under ``name`` (default: the function's ``__name__``)::

        @td.rpc.expose("math.add")
        def add(a: int, b: int) -> int:
            return a + b
    """

    def register(fn: F) -> F:
        _exposed[_check_function_name(name or fn.__name__)] = fn
        return fn

    return register


@attrs.frozen
class Ok(Generic[T]):
    """A successful result in :meth:`Rpc.multicall`'s list."""

    value: T

    def unwrap(self) -> T:
        """The value."""
        return self.value


@attrs.frozen
class Err:
    """A failed call in :meth:`Rpc.multicall`'s list."""

    error: Exception

    def unwrap(self) -> Any:
        """Raise the error."""
        raise self.error


@attrs.frozen
class RpcStatistics:
    """Counters of one node's RPC service (see :meth:`Rpc.statistics`).

    Attributes:
        calls_sent: calls this node made to other nodes.
        calls_served: calls from other nodes that this node answered.
        casts_served: casts from other nodes that this node ran.
        in_flight: calls of this node waiting for a reply now.
        serving: remote calls running here now.
        cancels_sent: calls given up (timeout or cancellation) and cancelled remotely.
        cancel_acks: remote cancellations the serving node acknowledged.
        late_replies: replies that came after their call was given up, dropped.
    """

    calls_sent: int
    calls_served: int
    casts_served: int
    in_flight: int
    serving: int
    cancels_sent: int
    cancel_acks: int
    late_replies: int


class _Scope(Protocol):
    """What both ``trio.move_on_after`` and ``anyio.move_on_after`` return."""

    @property
    def cancelled_caught(self) -> bool: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any, /) -> bool: ...


class _Call(Waiter):
    """One call of this node waiting for its reply (it parks the caller)."""

    __slots__ = ("conn", "status", "timed_out", "value")

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.status = -1
        self.value: Any = None
        self.timed_out = False

    def finish(self, status: int, value: Any) -> None:
        self.status = status
        self.value = value
        self.wake()

    def expire(self) -> None:
        self.timed_out = True
        self.wake()


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(fn))


def _arguments_fit(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature available (some builtins): give it the benefit
        return True
    return True


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _failure(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], exc: Exception
) -> list[Any]:
    """The reply body for a call that raised ``exc``.

    A ``TypeError`` from the call itself is the caller's fault when the
    arguments do not bind to the signature; checking only after a failure
    keeps the signature out of the success path.
    """
    if isinstance(exc, TypeError) and not _arguments_fit(fn, args, kwargs):
        return [BAD, f"arguments do not fit {getattr(fn, '__name__', 'the function')}: {exc}"]
    # Skip our own frame: the remote traceback starts at the user's function.
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return [RAISED, [_type_name(exc), str(exc), text]]


def _check_timeout(timeout: float | None) -> float:
    if type(timeout) is float and timeout >= 0:  # the common case, checked first
        return timeout
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ValueError(f"timeout must be a number >= 0 or None, got {timeout!r}")
    return float(timeout)


@attrs.define(eq=False, kw_only=True)
class Rpc:
    """A node's RPC service: ``node.rpc``."""

    transport: Transport
    processes: Processes
    events: NodeEventBus
    allow_any_module: bool = False
    _exports: dict[str, Callable[..., Any]] = attrs.field(factory=dict)
    _is_async_cache: dict[Callable[..., Any], bool] = attrs.field(factory=dict)
    _calls: dict[int, _Call] = attrs.field(factory=dict)
    _ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    _serving: dict[tuple[Connection, int], anyio.CancelScope] = attrs.field(factory=dict)
    # Calls and casts running as tasks, per peer name (max_rpc_concurrency).
    # By name, not connection: casts outlive their connection, and a peer
    # that reconnects must not get a fresh allowance on top of them.
    _running: dict[str, list[int]] = attrs.field(factory=dict)  # [tasks, bytes]
    _awaiting_ack: dict[int, str] = attrs.field(factory=dict)
    _task_group: anyio.abc.TaskGroup | None = None
    _on_trio: bool = False
    # (trio) The running task and the wait that parks it, looked up once.
    _current_task: Callable[[], Any] | None = None
    _wait_task_rescheduled: Callable[[Any], Awaitable[Any]] | None = None
    # The event loop's clock (call latencies, deadlines).
    _now: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return (
            f"<Rpc of {self.transport.name}: {len(self._exports)} exported,"
            f" {len(self._calls)} calls pending>"
        )

    _move_on_after: Callable[[float], _Scope] = anyio.move_on_after
    _counts: dict[str, int] = attrs.field(
        factory=lambda: dict.fromkeys(
            (
                "calls_sent",
                "calls_served",
                "casts_served",
                "cancels_sent",
                "cancel_acks",
                "late_replies",
            ),
            0,
        )
    )

    def __attrs_post_init__(self) -> None:
        self.events.subscribe(PeerDown, self.node_down)

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        self._on_trio = running_on_trio()
        if self._on_trio:
            import trio

            # trio's own scope skips anyio's wrapper on every call.
            def move_on_after(seconds: float) -> trio.CancelScope:
                return trio.CancelScope(relative_deadline=seconds)

            self._move_on_after = move_on_after
            bind_trio()
            self._current_task = trio.lowlevel.current_task
            self._wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
        self._now = loop_clock()
        transport = self.transport
        transport.add_handler(Kind.RPC_CALL, self._handle_call)
        transport.add_handler(Kind.RPC_CAST, self._handle_cast)
        transport.add_handler(Kind.RPC_CANCEL, self._handle_cancel)
        transport.add_handler(Kind.RPC_REPLY, self._handle_reply)

    # -------------------------------------------------------------- exports

    def export(self, fn: F, name: str | None = None) -> F:
        """Make ``fn`` (sync or ``async def``) callable on this node as
        ``name`` (default: ``fn.__name__``); returns ``fn``.

        Sync functions run on the event loop, inside the connection's
        reader: keep them short, or make them ``async`` (an async function
        gets a task of its own, which a caller's timeout can cancel).
        """
        if not callable(fn):
            raise TypeError(f"export needs a callable, got {fn!r}")
        self._exports[_check_function_name(name or fn.__name__)] = fn
        return fn

    def unexport(self, name: str) -> None:
        """Stop offering ``name`` on this node (no error if it was not)."""
        self._exports.pop(name, None)

    def exported(self) -> list[str]:
        """Names callable on this node: its own exports and exposed functions."""
        return sorted(self._exports.keys() | _exposed.keys())

    def resolve(self, name: str) -> Callable[..., Any] | None:
        """The function a call of ``name`` would run here, or ``None``."""
        fn = self._exports.get(name) or _exposed.get(name)
        if fn is None and self.allow_any_module:
            fn = _import_function(name)
        return fn

    def _kind_of(self, fn: Callable[..., Any]) -> bool:
        is_async = self._is_async_cache.get(fn)
        if is_async is None:
            if len(self._is_async_cache) >= 4096:
                self._is_async_cache.clear()
            is_async = self._is_async_cache[fn] = _is_async(fn)
        return is_async

    # -------------------------------------------------------------- calling

    async def call(
        self, node: str, function: str, *args: Any, timeout: float | None = 5.0, **kwargs: Any
    ) -> Any:
        """Call ``function(*args, **kwargs)`` on ``node`` and return its result.

        ``timeout`` (seconds, ``None`` for none) bounds the whole call; when
        it passes, or the caller is cancelled, the remote task is cancelled
        too. A call to this node's own name runs in the calling task.

        Raises:
            RpcTimeoutError: no result within ``timeout``.
            NodeDownError: ``node`` is down, or went down during the call.
            BadRpcError: ``node`` exports no such function, or the
                arguments do not fit it.
            RemoteError: the function raised (type name, message and
                remote traceback inside).
            EncodeError: an argument cannot travel.
            MessageTooLargeError: the arguments encode too large.
        """
        limit = _check_timeout(timeout)
        _check_function_name(function)
        transport = self.transport
        if node == transport.name:
            return await self._call_here(function, args, kwargs, limit)
        conn = transport.connection(node)
        if conn is None:
            conn = await self.transport.connection_for(node)
        req = next(self._ids)
        frame = transport.encode_frame(
            [_CALL, req, function, list(args), kwargs, correlation_id.get()]
        )
        if conn.is_congested():
            # A call can wait for space like a send; only the reply, written
            # by the serving node's reader, cannot (see max_send_queue).
            await conn.wait_for_space()
        call = _Call(conn)
        self._calls[req] = call
        started = self._now()
        self._counts["calls_sent"] += 1
        # The node's shared deadline heap, not a cancel scope per call (see
        # _deadlines): the call's own Waiter is woken by a reply or expiry.
        deadlines = self.processes.calls.deadlines
        assert deadlines is not None
        timed = limit != math.inf
        if timed:
            deadlines.add(limit, call)
        try:
            conn.write(frame)
            if conn.closed:
                call.finish(_NODE_DOWN, conn.down_reason or "connection closed")
            if self._on_trio:
                current_task = self._current_task
                wait = self._wait_task_rescheduled
                assert current_task is not None and wait is not None
                while not call.finished:
                    task = current_task()
                    if conn.lent_to(task):
                        # The reply comes on this socket: wait on it here.
                        await conn.borrow(call)
                    else:
                        call.task = task
                        await wait(call)
            else:
                create_future = asyncio.get_running_loop().create_future
                while not call.finished:
                    future = call.event = create_future()
                    await future
        finally:
            if timed:
                deadlines.done()
            del self._calls[req]
            if not call.finished or call.timed_out:
                # Timed out or cancelled: stop the remote task as well.
                self._abandon(conn, req)
        if call.timed_out:
            self._observe(node, function, started, "timeout", limit)
            raise RpcTimeoutError(node, function, limit)
        self._observe(node, function, started, _OUTCOMES.get(call.status, "node_down"), limit)
        return self._outcome(node, function, call.status, call.value)

    def _observe(
        self, node: str, function: str, started: float, outcome: str, limit: float
    ) -> None:
        # Telemetry: every remote call's latency; a timeout also on its own.
        emit = self.transport.on_event
        emit(RpcCompleted(node, function, self._now() - started, outcome))
        if outcome == "timeout":
            emit(RpcTimedOut(node, function, limit))

    def _outcome(self, node: str, function: str, status: int, value: Any) -> Any:
        if status == OK:
            return value
        if status == RAISED:
            type_name, message, text = value
            raise RemoteError(node, function, type_name, message, text)
        if status == BAD:
            raise BadRpcError(node, function, value)
        raise NodeDownError(node, f"went down during rpc {function!r}: {value}")

    def _abandon(self, conn: Connection, req: int) -> None:
        if conn.closed:
            return
        self._counts["cancels_sent"] += 1
        if len(self._awaiting_ack) >= 65536:
            self._awaiting_ack.clear()  # a peer that never acknowledges must not grow this
        self._awaiting_ack[req] = conn.peer
        conn.write(self.transport.encode_frame([Kind.RPC_CANCEL, req]))

    async def _call_here(
        self, function: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: float
    ) -> Any:
        name = self.transport.name
        fn = self.resolve(function)
        if fn is None:
            raise BadRpcError(name, function, "no exported function of that name")
        with self._move_on_after(limit) as scope:
            try:
                result = fn(*args, **kwargs)
                if self._kind_of(fn):
                    result = await result
                return result
            except Exception as exc:
                return self._outcome(name, function, *_failure(fn, args, kwargs, exc))
        assert scope.cancelled_caught
        raise RpcTimeoutError(name, function, limit)

    async def cast(self, node: str, function: str, *args: Any, **kwargs: Any) -> None:
        """Run ``function(*args, **kwargs)`` on ``node`` without waiting for
        it; its failures are logged there, not reported here.

        Raises:
            NodeDownError: ``node`` is down and cannot be reached.
            EncodeError, MessageTooLargeError: the arguments cannot travel.
        """
        _check_function_name(function)
        transport = self.transport
        frame_item = [Kind.RPC_CAST, function, list(args), kwargs, correlation_id.get()]
        if node == transport.name:
            transport.encode_frame(frame_item)  # the same errors as a remote cast
            self._start_cast(None, function, list(args), kwargs, correlation_id.get())
            return
        conn = transport.connection(node)
        if conn is None:
            conn = await self.transport.connection_for(node)
        data = transport.encode_frame(frame_item)
        if conn.is_congested():
            await conn.wait_for_space()  # before writing, as Processes.send does
        conn.write(data)

    async def multicall(
        self,
        nodes: Iterable[str],
        function: str,
        *args: Any,
        timeout: float | None = 5.0,
        **kwargs: Any,
    ) -> list[Ok[Any] | Err]:
        """Call ``function`` on every node in ``nodes`` at once; one
        ``timeout`` for all. Returns ``Ok(value)`` or ``Err(exception)`` per
        node, in the order of ``nodes`` (duplicates allowed)."""
        targets = list(nodes)
        _check_timeout(timeout)
        results: list[Ok[Any] | Err | None] = [None] * len(targets)

        async def one(index: int, node: str) -> None:
            try:
                results[index] = Ok(
                    await self.call(node, function, *args, timeout=timeout, **kwargs)
                )
            except Exception as exc:
                results[index] = Err(exc)

        async with anyio.create_task_group() as task_group:
            for index, node in enumerate(targets):
                task_group.start_soon(one, index, node)
        return [result for result in results if result is not None]

    def statistics(self) -> RpcStatistics:
        """A snapshot of this service's counters."""
        return RpcStatistics(in_flight=len(self._calls), serving=len(self._serving), **self._counts)

    # -------------------------------------------------------------- serving

    def _handle_call(self, conn: Connection, item: list[Any]) -> None:
        _, req, function, args, kwargs, cid = item
        if type(req) is not int or not isinstance(function, str) or type(args) is not list:
            raise ValueError("RPC_CALL needs an int request id, a str function and a list of args")
        if type(kwargs) is not dict or (kwargs and not all(type(key) is str for key in kwargs)):
            raise ValueError("RPC_CALL needs a map of keyword arguments with str keys")
        if cid is not None and type(cid) is not str:
            raise ValueError("RPC_CALL correlation id must be a str or null")
        self._counts["calls_served"] += 1
        fn = self.resolve(function)
        if fn is None:
            self._reply(conn, req, BAD, f"no exported function named {function!r}")
            return
        if self._kind_of(fn):
            if (conn, req) in self._serving:
                # A reused id would orphan the first task: nothing could
                # cancel it any more. Only a broken or hostile peer does this.
                raise ValueError(f"RPC_CALL reuses request id {req} of a running call")
            size = conn.frame_size
            if not self._take_slot(conn, size):
                self._reply(conn, req, BAD, "busy")
                return
            scope = anyio.CancelScope()
            self._serving[conn, req] = scope
            assert self._task_group is not None
            self._task_group.start_soon(self._serve, conn, req, fn, args, kwargs, cid, scope, size)
            return
        # A sync function runs right here in the reader: no task hop.
        token = correlation_id.set(cid)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._reply(conn, req, *_failure(fn, args, kwargs, exc))
        else:
            self._reply(conn, req, OK, result)
        finally:
            correlation_id.reset(token)

    async def _serve(
        self,
        conn: Connection,
        req: int,
        fn: Callable[..., Awaitable[Any]],
        args: list[Any],
        kwargs: dict[str, Any],
        cid: str | None,
        scope: anyio.CancelScope,
        size: int,
    ) -> None:
        correlation_id.set(cid)  # this task's own context
        reply: list[Any] = [CANCELLED, None]
        try:
            with scope:
                try:
                    reply = [OK, await fn(*args, **kwargs)]
                except Exception as exc:
                    reply = _failure(fn, args, kwargs, exc)
        finally:
            if self._serving.get((conn, req)) is scope:
                del self._serving[conn, req]
            self._release_slot(conn, size)
        self._reply(conn, req, *reply)

    def _take_slot(self, conn: Connection, size: int) -> bool:
        """Count one more task serving ``conn``, whose request frame was
        ``size`` bytes; ``False`` (counted) when the peer already has
        ``max_rpc_concurrency`` running, or ``max_rpc_bytes`` of arguments.
        Each task holds its arguments and whatever the function allocates:
        this is what bounds the tasks and memory one peer makes us hold.
        A lone request always fits, whatever its size."""
        running = self._running.get(conn.peer)
        if running is None:
            self._running[conn.peer] = [1, size]
            return True
        config = self.transport.config
        if running[0] >= config.max_rpc_concurrency or (running[1] + size > config.max_rpc_bytes):
            self.transport.count_drop("rpc_busy")
            _limited.warning(
                "rpc_busy",
                "refused rpc from %s: %d calls and casts of it (%d bytes of arguments) "
                "are running (max_rpc_concurrency, max_rpc_bytes)",
                conn.peer,
                running[0],
                running[1],
            )
            return False
        running[0] += 1
        running[1] += size
        return True

    def _release_slot(self, conn: Connection, size: int) -> None:
        running = self._running.get(conn.peer)
        if running is None:
            return
        running[0] -= 1
        running[1] -= size
        if running[0] <= 0:
            del self._running[conn.peer]

    def _reply(self, conn: Connection, req: int, status: int, value: Any) -> None:
        if conn.closed:
            return
        try:
            frame = self.transport.encode_frame([_REPLY, req, status, value])
        except (EncodeError, MessageTooLargeError) as exc:
            logger.warning("rpc reply to %s cannot travel: %s", conn.peer, exc)
            frame = self.transport.encode_frame(
                [_REPLY, req, RAISED, [_type_name(exc), f"the result cannot travel: {exc}", ""]]
            )
        conn.write(frame)

    def _handle_cancel(self, conn: Connection, item: list[Any]) -> None:
        if type(item[1]) is not int:
            raise ValueError("RPC_CANCEL needs an int request id")
        scope = self._serving.get((conn, item[1]))
        if scope is not None:
            scope.cancel()  # the task acknowledges with a CANCELLED reply
        else:
            # Already finished: its reply is on the way and the caller
            # drops it; acknowledge so the caller is not left waiting.
            conn.write(self.transport.encode_frame([_REPLY, item[1], CANCELLED, None]))

    def _handle_cast(self, conn: Connection, item: list[Any]) -> None:
        _, function, args, kwargs, cid = item
        if not isinstance(function, str) or type(args) is not list or type(kwargs) is not dict:
            raise ValueError("RPC_CAST needs a str function, a list of args and a map")
        if cid is not None and type(cid) is not str:
            raise ValueError("RPC_CAST correlation id must be a str or null")
        self._counts["casts_served"] += 1
        self._start_cast(conn, function, args, kwargs, cid)

    def _start_cast(
        self,
        conn: Connection | None,
        function: str,
        args: list[Any],
        kwargs: dict[str, Any],
        cid: str | None,
    ) -> None:
        fn = self.resolve(function)
        source = "this node" if conn is None else conn.peer
        if fn is None:
            self.transport.count_drop("bad_rpc_cast")
            logger.warning(
                "cast of %r from %s: no exported function of that name", function, source
            )
            return
        size = 0 if conn is None else conn.frame_size
        if conn is not None and not self._take_slot(conn, size):
            return  # no one to tell: a cast has no reply
        assert self._task_group is not None
        self._task_group.start_soon(
            self._run_cast, conn, size, source, function, fn, args, kwargs, cid
        )

    async def _run_cast(
        self,
        conn: Connection | None,
        size: int,
        source: str,
        function: str,
        fn: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        cid: str | None,
    ) -> None:
        correlation_id.set(cid)
        try:
            result = fn(*args, **kwargs)
            if self._kind_of(fn):
                await result
        except Exception:
            self.transport.count_drop("rpc_cast_failed")
            logger.exception("cast of %r from %s failed", function, source)
        finally:
            if conn is not None:
                self._release_slot(conn, size)

    def _handle_reply(self, conn: Connection, item: list[Any]) -> None:
        _, req, status, value = item
        if status not in (OK, RAISED, BAD, CANCELLED):
            raise ValueError(f"RPC_REPLY with unknown status {status!r}")
        call = self._calls.get(req)
        if call is not None and call.conn is conn and status != CANCELLED and not call.finished:
            if status == RAISED and not (
                type(value) is list and len(value) == 3 and all(type(v) is str for v in value)
            ):
                raise ValueError("RPC_REPLY of a raised call needs [type, message, traceback]")
            conn.woke(call.task)  # the caller's next call may borrow the socket
            call.finish(status, value)
            return
        if status == CANCELLED and self._awaiting_ack.pop(req, None) is not None:
            self._counts["cancel_acks"] += 1
        else:
            self._counts["late_replies"] += 1

    # ---------------------------------------------------------- node events

    def node_down(self, event: PeerDown) -> None:
        """Fail this node's calls to ``name``; cancel its calls here."""
        name, reason = event.name, event.reason
        for call in list(self._calls.values()):
            if call.conn.peer == name and not call.finished:
                call.finish(_NODE_DOWN, reason)
        for (conn, _), scope in list(self._serving.items()):
            if conn.peer == name:
                scope.cancel()
        for req, peer in list(self._awaiting_ack.items()):
            if peer == name:
                del self._awaiting_ack[req]


def _import_function(name: str) -> Callable[..., Any] | None:
    module_name, _, attribute = name.rpartition(".")
    if not module_name or any(part.startswith("_") for part in name.split(".")):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    fn = getattr(module, attribute, None)
    return fn if callable(fn) else None


async def call(
    node: Node,
    node_name: str,
    module: str,
    function: str,
    args: Sequence[Any],
    timeout: float | None = 5.0,
) -> Any:
    """The seed library's spelling: ``node.rpc.call(node_name,
    "module.function", *args, timeout=timeout)``."""
    return await node.rpc.call(node_name, f"{module}.{function}", *args, timeout=timeout)
