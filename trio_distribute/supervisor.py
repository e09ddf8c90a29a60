"""Supervisors, pools and a cluster singleton: OTP-style fault tolerance on
trio task groups.

A supervisor is an async context manager that owns a task group. Each child
is a process (a pid with a mailbox, linkable, monitorable, optionally named
locally and globally) whose task lives in that group, so leaving the
supervisor's block stops every child, in reverse start order, each given
its ``shutdown`` time. When a child ends the supervisor applies its
restart type and the supervisor's strategy; more than ``intensity``
restarts within ``period`` seconds stop every child and end the supervisor
with :class:`RestartIntensityExceeded`, which the enclosing task group (or
the parent supervisor, whose child then crashed) sees.

Stopping a child: it is asked first, then made. Asking is a cancellation of
the child's body (its ``finally`` blocks run; cleanup that must wait shields
itself, as always in trio), or, for a process that traps exits, an exit
signal in its mailbox. After ``shutdown`` seconds the child is cancelled
from an outer scope, which ends anything but shielded code.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import attrs

from . import codec
from ._ids import Pid
from .election.raft_lite import Leader, LeaderChanged
from .errors import DistributionError, NameNotFoundError, NameTakenError
from .messaging import Process, become_process
from .monitor import ExitKind, ExitReason
from .node import host_process

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from .node import Node

__all__ = [
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "Pool",
    "PoolRef",
    "RestartIntensityExceeded",
    "Singleton",
    "Supervisor",
    "SupervisorError",
    "find_pool",
    "open_dynamic_supervisor",
    "open_pool",
    "open_singleton",
    "open_supervisor",
]

logger = logging.getLogger("trio_distribute.supervisor")

STRATEGIES: Final = frozenset({"one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"})
RESTART_TYPES: Final = frozenset({"permanent", "transient", "temporary"})

#: The reason of a child its supervisor stopped (Erlang's ``shutdown``): a
#: transient child that ends with it is not restarted.
TERMINATED: Final = ExitReason(ExitKind.SHUTDOWN, "terminated by its supervisor")


class SupervisorError(DistributionError):
    """A supervisor could not do what it was asked (or gave up)."""


class RestartIntensityExceeded(SupervisorError):
    """More than ``intensity`` restarts happened within ``period`` seconds:
    the supervisor stopped every child and ended with this."""

    def __init__(self, intensity: int, period: float, child_id: str, reason: ExitReason) -> None:
        super().__init__(
            f"more than {intensity} restart(s) within {period:g} s; "
            f"last: child {child_id!r} ended with {reason}"
        )
        self.intensity = intensity
        self.period = period
        self.child_id = child_id
        self.reason = reason


# ------------------------------------------------------------------ specs


def _check_restart(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in RESTART_TYPES:
        raise ValueError(f"restart must be one of {sorted(RESTART_TYPES)}, got {value!r}")


def _check_shutdown(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"shutdown must be seconds (a number) or None, got {value!r}")
    if not value >= 0:
        raise ValueError(f"shutdown must be >= 0 seconds (or None: wait forever), got {value!r}")


def _check_callable(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(f"fn must be an async function taking the process first, got {value!r}")


def _check_optional_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{attribute.name} must be a non-empty str or None, got {value!r}")


def _check_id(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"a child id must be a non-empty str, got {value!r}")


def _to_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"args must be a tuple of arguments, got {value!r}")
    return tuple(value)


@attrs.frozen
class ChildSpec:
    """How to start, restart and stop one child.

    Attributes:
        id: names the child within its supervisor (unique there).
        fn: ``await fn(process, *args)`` is the child's body.
        args: extra arguments after the process.
        restart: ``"permanent"`` (always restarted), ``"transient"``
            (restarted only when it ends abnormally: not ``normal``, not
            stopped by its supervisor) or ``"temporary"`` (never restarted;
            forgotten once it ends).
        shutdown: seconds the child gets to finish once asked to stop,
            before it is cancelled from outside; ``0`` cancels it at once,
            ``None`` waits as long as it takes (for a child that is itself a
            supervisor).
        name: registers every run of the child locally under this name.
        global_name: registers every run of the child in the global
            registry under this name, before ``fn`` starts.
    """

    id: str = attrs.field(validator=_check_id)
    fn: Callable[..., Awaitable[object]] = attrs.field(validator=_check_callable)
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_tuple)
    restart: str = attrs.field(default="permanent", validator=_check_restart)
    shutdown: float | None = attrs.field(default=5.0, validator=_check_shutdown)
    name: str | None = attrs.field(default=None, validator=_check_optional_name)
    global_name: str | None = attrs.field(default=None, validator=_check_optional_name)


@attrs.frozen
class ChildInfo:
    """One child as :meth:`Supervisor.which_children` reports it; ``pid``
    is ``None`` while it is not running (terminated, or being restarted)."""

    id: str
    pid: Pid | None
    restart: str


@attrs.frozen
class ChildCounts:
    """:meth:`Supervisor.count_children`: child specs held, and how many of
    them run now."""

    specs: int
    active: int


# ------------------------------------------------------------- supervisor


@attrs.define(eq=False, kw_only=True)
class _Run:
    """One run of a child: one process, its two cancel scopes."""

    soft: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    # Shielded: a cancellation from outside the supervisor (a parent being
    # stopped) must not reach the children all at once; the supervisor
    # stops them itself, in order. Cancelling this scope directly still
    # ends the child.
    hard: anyio.CancelScope = attrs.field(factory=lambda: anyio.CancelScope(shield=True))
    done: anyio.Event = attrs.field(factory=anyio.Event)
    process: Process | None = None
    #: Set when the supervisor asked it to stop: its end is not a crash.
    stopping: bool = False
    reason: ExitReason | None = None


@attrs.define(eq=False, kw_only=True)
class _Child:
    spec: ChildSpec
    args: tuple[Any, ...]
    run: _Run | None = None

    @property
    def pid(self) -> Pid | None:
        run = self.run
        if run is None or run.done.is_set() or run.process is None:
            return None
        return run.process.pid


@attrs.define(eq=False, kw_only=True)
class Supervisor:
    """A running supervisor (from :func:`open_supervisor`)."""

    node: Node
    strategy: str
    intensity: int
    period: float
    #: The one spec of a ``simple_one_for_one`` supervisor.
    child_spec: ChildSpec | None = None
    _task_group: anyio.abc.TaskGroup | None = None
    # Children in start order (restarts keep a child's place).
    _children: list[_Child] = attrs.field(factory=list)
    _lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    _restarts: deque[float] = attrs.field(factory=deque)
    _exits: deque[tuple[_Child, _Run]] = attrs.field(factory=deque)
    _exit_event: anyio.Event = attrs.field(factory=anyio.Event)
    _closed: bool = False
    # Every run not yet ended, even one whose start has not returned.
    _runs: set[_Run] = attrs.field(factory=set)
    _dynamic_ids: int = 0

    # ---------------------------------------------------------------- API

    async def start_child(self, spec: ChildSpec | Any = None, *extra: Any) -> Pid:
        """Start a child and return its pid once its process exists (and
        its global name, if any, is registered).

        For ``simple_one_for_one`` pass the extra arguments instead of a
        spec: the child runs ``fn(process, *spec.args, *extra)``.

        Raises:
            ValueError: the id is already used, or its local name is taken.
            TypeError: not a :class:`ChildSpec` (or, for
                ``simple_one_for_one``, a spec where arguments were expected).
            NameTakenError: its global name is registered already.
            SupervisorError: the supervisor has ended.
        """
        if self.strategy == "simple_one_for_one":
            assert self.child_spec is not None
            if isinstance(spec, ChildSpec):
                raise TypeError(
                    "a simple_one_for_one supervisor starts children from its own spec: "
                    "pass extra arguments, not a ChildSpec"
                )
            args = (*self.child_spec.args, *(() if spec is None else (spec,)), *extra)
            self._dynamic_ids += 1
            child = _Child(spec=self.child_spec, args=args)
        else:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"start_child needs a ChildSpec, got {spec!r}")
            if extra:
                raise TypeError("start_child takes one ChildSpec (its args go in the spec)")
            child = _Child(spec=spec, args=spec.args)
        async with self._lock:
            self._check_open()
            if self.strategy != "simple_one_for_one" and self._find(spec.id) is not None:
                raise ValueError(f"a child with id {spec.id!r} already exists in this supervisor")
            pid = await self._start(child)  # raises: nothing recorded
            self._children.append(child)
        return pid

    async def terminate_child(self, child_id: str | Pid) -> None:
        """Stop a child (its spec is kept, so :meth:`restart_child` can
        start it again; a ``simple_one_for_one`` child, named by its pid,
        is forgotten). Stopping a child that is not running does nothing.

        Raises:
            KeyError: no such child.
        """
        async with self._lock:
            child = self._get(child_id)
            await self._stop(child)
            if self.strategy == "simple_one_for_one" or child.spec.restart == "temporary":
                self._children.remove(child)

    async def restart_child(self, child_id: str) -> Pid:
        """Start a terminated child again from its spec.

        Raises:
            KeyError: no such child.
            SupervisorError: it is running.
        """
        async with self._lock:
            self._check_open()
            child = self._get(child_id)
            if child.pid is not None:
                raise SupervisorError(f"child {child_id!r} is running; terminate it first")
            return await self._start(child)

    async def delete_child(self, child_id: str) -> None:
        """Forget a terminated child's spec.

        Raises:
            KeyError: no such child.
            SupervisorError: it is running.
        """
        async with self._lock:
            child = self._get(child_id)
            if child.pid is not None:
                raise SupervisorError(f"child {child_id!r} is running; terminate it first")
            self._children.remove(child)

    def which_children(self) -> list[ChildInfo]:
        """Every child, in start order."""
        return [ChildInfo(c.spec.id, c.pid, c.spec.restart) for c in self._children]

    def count_children(self) -> ChildCounts:
        """How many child specs there are and how many of them run."""
        active = sum(1 for c in self._children if c.pid is not None)
        return ChildCounts(specs=len(self._children), active=active)

    def whereis_child(self, child_id: str) -> Pid | None:
        """The pid of a running child, or ``None``."""
        child = self._find(child_id)
        return None if child is None else child.pid

    # ---------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise SupervisorError("the supervisor has ended")

    def _find(self, child_id: str | Pid) -> _Child | None:
        for child in self._children:
            if isinstance(child_id, Pid) and child.pid == child_id:
                return child
            if child.spec.id == child_id and self.strategy != "simple_one_for_one":
                return child
        return None

    def _get(self, child_id: str | Pid) -> _Child:
        child = self._find(child_id)
        if child is None:
            raise KeyError(f"no child {child_id!r} in this supervisor")
        return child

    async def _start(self, child: _Child) -> Pid:
        """Start a run of ``child`` and return its pid (which may have
        ended already: its end is then handled like any other)."""
        assert self._task_group is not None
        run = _Run()
        self._runs.add(run)
        previous = child.run
        try:
            await self._task_group.start(self._run_child, child, run)
        except BaseException:
            self._runs.discard(run)
            child.run = previous
            raise
        child.run = run
        assert run.process is not None
        return run.process.pid

    async def _run_child(
        self,
        child: _Child,
        run: _Run,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        spec = child.spec
        # A child is a process of the node (pid, monitors, names, exit
        # hooks) whose task lives in this supervisor's task group.
        hosted = host_process(self.node, spec.name)
        process = hosted.process
        become_process(process)  # this task's own context: no reset needed
        run.process = process
        # Known before the body runs (on asyncio it may run before start()
        # returns): whereis_child never lags behind the child itself.
        child.run = run
        reason = ExitReason(ExitKind.NORMAL)
        started = False
        try:
            # ``signalled`` is cancelled by an exit signal (a link, or
            # Node.exit), like a spawned process: it then ends with the
            # signal's reason.
            with run.hard, run.soft, hosted.signalled:
                if spec.global_name is not None:
                    # Before fn runs: the name is there for as long as the
                    # body is, and a failure starts nothing.
                    await self.node.registry.register(spec.global_name, process.pid)
                started = True
                task_status.started()
                if hosted.exit_signal is None:
                    await spec.fn(process, *child.args)
            if run.stopping and (run.soft.cancelled_caught or run.hard.cancelled_caught):
                reason = TERMINATED
        except anyio.get_cancelled_exc_class() as exc:
            reason = hosted.reason_for(exc)
            raise
        except Exception as exc:
            reason = ExitReason.from_exception(exc)
            if not started:
                raise
            logger.exception("child %r (%s) crashed", spec.id, process.pid)
        finally:
            reason = hosted.end(reason)
            run.reason = reason
            run.done.set()
            self._runs.discard(run)
            if started:
                self._exits.append((child, run))
                self._exit_event.set()

    async def _stop(self, child: _Child) -> None:
        """Ask a running child to stop, wait its shutdown time, then cancel
        it from outside; return once it ended (or can't be made to)."""
        run = child.run
        if run is None or run.done.is_set():
            return
        run.stopping = True
        grace = child.spec.shutdown
        if self.node.transport.stopping or grace == 0:
            run.hard.cancel()  # the node is going: no time for grace
        else:
            await self._ask_to_stop(run)
            with anyio.move_on_after(math.inf if grace is None else grace):
                await run.done.wait()
            if not run.done.is_set():
                logger.warning(
                    "child %r did not stop within %s s: cancelling it", child.spec.id, grace
                )
                run.hard.cancel()
        await run.done.wait()

    async def _ask_to_stop(self, run: _Run) -> None:
        process = run.process
        if process is not None and process.trap_exits and process.alive:
            # A process that traps exits is told in its mailbox, as in OTP
            # (an ExitSignal with reason shutdown), and may finish its work.
            await self.node.exit(process.pid, TERMINATED)
        else:
            run.soft.cancel()

    async def _stop_all(self, children: list[_Child]) -> None:
        """Stop ``children`` in reverse order, one after the other."""
        for child in reversed(children):
            await self._stop(child)

    # ------------------------------------------------------- supervising

    async def _supervise(self) -> None:
        while True:
            await self._exit_event.wait()
            self._exit_event = anyio.Event()
            while self._exits:
                child, run = self._exits.popleft()
                async with self._lock:
                    if child.run is not run or run.stopping or self._closed:
                        continue  # stopped on purpose, or already replaced
                    await self._child_exited(child, run)

    async def _child_exited(self, child: _Child, run: _Run) -> None:
        reason = run.reason
        assert reason is not None
        restart = child.spec.restart
        abnormal = reason.kind != ExitKind.NORMAL and reason != TERMINATED
        if restart == "temporary" or (restart == "transient" and not abnormal):
            if restart == "temporary" or self.strategy == "simple_one_for_one":
                self._children.remove(child)
            return
        logger.info("child %r (%s) ended with %s: restarting", child.spec.id, _pid(run), reason)
        while True:
            if not self._allow_restart():
                self._closed = True
                await self._stop_all(list(self._children))
                raise RestartIntensityExceeded(self.intensity, self.period, child.spec.id, reason)
            try:
                await self._restart(child)
                return
            except Exception as exc:
                # A start that fails counts as one more restart, as in OTP.
                reason = ExitReason.from_exception(exc)
                logger.warning("restarting child %r failed: %s", child.spec.id, reason)

    def _allow_restart(self) -> bool:
        now = anyio.current_time()
        restarts = self._restarts
        restarts.append(now)
        while restarts and restarts[0] <= now - self.period:
            restarts.popleft()
        return len(restarts) <= self.intensity

    async def _restart(self, failed: _Child) -> None:
        if self.strategy in ("one_for_one", "simple_one_for_one"):
            group = [failed]
        elif self.strategy == "one_for_all":
            group = list(self._children)
        else:  # rest_for_one: the failed child and every child started after it
            group = self._children[self._children.index(failed) :]
        await self._stop_all([c for c in group if c is not failed])
        for child in group:
            if child is failed or child.spec.restart != "temporary":
                await self._start(child)
            else:
                self._children.remove(child)  # a temporary sibling is not restarted

    def _kill_all(self) -> None:
        """Cancel every child at once (their scopes shield them from any
        other cancellation)."""
        self._closed = True
        for run in list(self._runs):
            run.stopping = True
            run.hard.cancel()

    async def _shutdown(self) -> None:
        async with self._lock:
            self._closed = True
            await self._stop_all(list(self._children))


def _pid(run: _Run) -> Pid | None:
    return None if run.process is None else run.process.pid


def _check_intensity(intensity: object, period: object) -> tuple[int, float]:
    if isinstance(intensity, bool) or not isinstance(intensity, int):
        raise TypeError(f"intensity must be an int, got {intensity!r}")
    if intensity < 0:
        raise ValueError(f"intensity must be >= 0 (restarts allowed per period), got {intensity}")
    if isinstance(period, bool) or not isinstance(period, int | float):
        raise TypeError(f"period must be seconds (a number), got {period!r}")
    if not (period > 0 and math.isfinite(period)):
        raise ValueError(f"period must be a finite number of seconds > 0, got {period!r}")
    return intensity, float(period)


@asynccontextmanager
async def open_supervisor(
    node: Node,
    strategy: str = "one_for_one",
    intensity: int = 3,
    period: float = 5.0,
    *,
    child_spec: ChildSpec | None = None,
) -> AsyncIterator[Supervisor]:
    """Run a supervisor for the duration of the block.

    Args:
        node: the node whose processes the children are.
        strategy: what a child's abnormal end restarts: ``"one_for_one"``
            (that child), ``"one_for_all"`` (every child: the others are
            stopped in reverse start order, then all started in order),
            ``"rest_for_one"`` (that child and those started after it), or
            ``"simple_one_for_one"`` (any number of children of
            ``child_spec``, each restarted alone).
        intensity, period: more than ``intensity`` restarts within
            ``period`` seconds stop every child and raise
            :class:`RestartIntensityExceeded` out of the block.
        child_spec: the spec of a ``simple_one_for_one`` supervisor.

    Leaving the block stops the children in reverse start order, each given
    its ``shutdown`` time.

    Raises:
        ValueError: unknown strategy, ``intensity < 0``, ``period <= 0``,
            or a ``child_spec`` missing, misplaced or naming its children.
        TypeError: arguments of the wrong type.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
    intensity, period = _check_intensity(intensity, period)
    if strategy == "simple_one_for_one":
        if not isinstance(child_spec, ChildSpec):
            raise ValueError("a simple_one_for_one supervisor needs child_spec=ChildSpec(...)")
        if child_spec.name is not None or child_spec.global_name is not None:
            raise ValueError(
                "a simple_one_for_one child_spec cannot name its children (they are many)"
            )
    elif child_spec is not None:
        raise ValueError("child_spec is for simple_one_for_one supervisors only")
    supervisor = Supervisor(
        node=node, strategy=strategy, intensity=intensity, period=period, child_spec=child_spec
    )
    try:
        async with anyio.create_task_group() as task_group:
            supervisor._task_group = task_group
            task_group.start_soon(supervisor._supervise)
            try:
                yield supervisor
            finally:
                try:
                    if node.transport.stopping:
                        # The node is going (or crashed): no time for grace,
                        # and no await may come first (we may be cancelled).
                        supervisor._kill_all()
                    # Shielded otherwise: a cancelled parent still stops the
                    # children one by one, in order, within their shutdown.
                    with anyio.CancelScope(shield=not node.transport.stopping):
                        await supervisor._shutdown()
                finally:
                    supervisor._kill_all()  # whatever happened above
                    task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A task group wraps even a lone error: give the caller the error
        # (RestartIntensityExceeded, or what the block raised) itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def open_dynamic_supervisor(
    node: Node, child_spec: ChildSpec, intensity: int = 3, period: float = 5.0
) -> Any:
    """A ``simple_one_for_one`` supervisor of ``child_spec``:
    ``await sup.start_child(*extra_args)`` starts one more child."""
    return open_supervisor(node, "simple_one_for_one", intensity, period, child_spec=child_spec)


# ------------------------------------------------------------------ pools


def _slot_name(name: str, index: int) -> str:
    return f"{name}_{index}"


def _stable_index(key: Hashable, size: int) -> int:
    """The same slot for the same key on every node and every run
    (``hash()`` is salted per process, so it cannot be used)."""
    digest = hashlib.blake2b(codec.encode(key), digest_size=8).digest()
    return int.from_bytes(digest, "big") % size


@attrs.define(eq=False, kw_only=True)
class PoolRef:
    """Picks a worker of the pool ``name`` from any node, through the
    global registry (workers are registered as ``name_1..name_size``)."""

    node: Node
    name: str
    #: The pool's size; ``None`` reads it from the registry (the highest
    #: ``name_<i>`` registered), which is briefly low while the last
    #: worker restarts. Give it when keys must map stably through restarts.
    size: int | None = None
    _next: int = 0

    def _size(self) -> int:
        if self.size is not None:
            return self.size
        pattern = re.compile(re.escape(self.name) + r"_([1-9][0-9]*)")
        highest = 0
        for registered in self.node.registry.names():
            match = pattern.fullmatch(registered)
            if match:
                highest = max(highest, int(match.group(1)))
        return highest

    def pick(self, key: Hashable = None) -> Pid:
        """A worker's pid: the next live one in turn (round robin), or,
        given ``key``, always the one in the key's slot (a stable hash of
        the key's encoding, the same on every node).

        Raises:
            NameNotFoundError: no worker is registered (or, with ``key``,
                the key's worker is being restarted).
        """
        size = self._size()
        whereis = self.node.registry.whereis
        if key is not None:
            if size == 0:
                raise NameNotFoundError(_slot_name(self.name, 1))
            slot = _slot_name(self.name, _stable_index(key, size) + 1)
            pid = whereis(slot)
            if pid is None:
                raise NameNotFoundError(slot)
            return pid
        for _ in range(size):
            self._next = self._next % size + 1
            pid = whereis(_slot_name(self.name, self._next))
            if pid is not None:
                return pid
        raise NameNotFoundError(_slot_name(self.name, 1))

    def workers(self) -> list[Pid | None]:
        """Each slot's pid (``None`` while it restarts), slot 1 first."""
        whereis = self.node.registry.whereis
        return [whereis(_slot_name(self.name, i)) for i in range(1, self._size() + 1)]


def find_pool(node: Node, name: str, size: int | None = None) -> PoolRef:
    """A :class:`PoolRef` to pick workers of the pool ``name`` (opened on
    any node of the cluster) from ``node``."""
    return PoolRef(node=node, name=name, size=size)


@attrs.define(eq=False, kw_only=True)
class Pool(PoolRef):
    """A running pool (from :func:`open_pool`): ``size`` supervised workers."""

    supervisor: Supervisor


@asynccontextmanager
async def open_pool(
    node: Node,
    name: str,
    size: int,
    fn: Callable[..., Awaitable[object]],
    *args: Any,
    restart: str = "permanent",
    shutdown: float | None = 5.0,
    intensity: int | None = None,
    period: float = 5.0,
) -> AsyncIterator[Pool]:
    """Run ``size`` workers ``fn(process, *args)`` under a one-for-one
    supervisor, registered globally as ``name_1..name_size`` (and so
    reachable from every node: :func:`find_pool`).

    ``intensity`` defaults to ``size`` restarts per ``period``.

    Raises:
        ValueError: ``size < 1``, or bad supervisor or spec arguments.
        NameTakenError: a worker's name is registered already (nothing is
            left running).
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"pool size must be an int, got {size!r}")
    if size < 1:
        raise ValueError(f"pool size must be >= 1, got {size}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"pool name must be a non-empty str, got {name!r}")
    specs = [
        ChildSpec(
            _slot_name(name, i),
            fn,
            args,
            restart=restart,
            shutdown=shutdown,
            global_name=_slot_name(name, i),
        )
        for i in range(1, size + 1)
    ]
    async with open_supervisor(
        node, "one_for_one", size if intensity is None else intensity, period
    ) as supervisor:
        for spec in specs:
            await supervisor.start_child(spec)
        yield Pool(node=node, name=name, size=size, supervisor=supervisor)


# -------------------------------------------------------------- singleton


@attrs.define(eq=False, kw_only=True)
class Singleton:
    """This node's part of a cluster singleton (from :func:`open_singleton`)."""

    node: Node
    name: str
    #: The term this node runs the instance for, or ``None`` (not leader).
    term: int | None = None
    #: How many instances this node has started.
    starts: int = 0

    def whereis(self) -> Pid | None:
        """The instance's pid, wherever it runs (from the registry)."""
        return self.node.registry.whereis(self.name)


@asynccontextmanager
async def open_singleton(
    node: Node,
    name: str,
    fn: Callable[..., Awaitable[object]],
    *args: Any,
    shutdown: float | None = 0.0,
    intensity: int = 3,
    period: float = 5.0,
) -> AsyncIterator[Singleton]:
    """Take part in running ``fn`` on exactly one node: the elected leader.

    Open it on every node. While this node leads term ``t`` it runs
    ``await fn(process, t, *args)`` under a one-for-one supervisor,
    registered globally as ``name`` (restarted with the supervisor's rules;
    the term is the fencing token: whatever the instance writes should
    carry it). When the leader or term changes the instance is stopped
    (given ``shutdown`` seconds), and a new leader starts its instance only
    once the old one's name has left its registry replica: the old
    instance has exited, or its node is down.

    Raises:
        ValueError, TypeError: bad arguments, or the node runs no election.
        RestartIntensityExceeded: (out of the block) the instance kept
            crashing here.
    """
    _check_intensity(intensity, period)
    ChildSpec(name, fn, args, shutdown=shutdown, global_name=name)  # validates now
    if not node.election.enabled:
        raise ValueError(
            "open_singleton needs the node's election (ElectionConfig.enabled, with membership)"
        )
    singleton = Singleton(node=node, name=name)
    try:
        async with (
            node.election.subscribe() as changes,
            anyio.create_task_group() as task_group,
        ):
            task_group.start_soon(
                _follow_leader, singleton, changes, fn, args, shutdown, intensity, period
            )
            try:
                yield singleton
            finally:
                task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _follow_leader(
    singleton: Singleton,
    changes: MemoryObjectReceiveStream[LeaderChanged],
    fn: Callable[..., Awaitable[object]],
    args: tuple[Any, ...],
    shutdown: float | None,
    intensity: int,
    period: float,
) -> None:
    node = singleton.node
    while True:
        # The state decides; events only wake us (they queue from the
        # subscription on, so none is missed between the read and the wait).
        leader = node.election.leader
        if isinstance(leader, Leader) and leader.name == node.name:
            await _lead(singleton, leader.term, changes, fn, args, shutdown, intensity, period)
        else:
            await changes.receive()


async def _until_changed(
    changes: MemoryObjectReceiveStream[LeaderChanged],
    term: int,
    me: str,
    scope: anyio.CancelScope,
) -> None:
    async for change in changes:
        if change.term != term or change.leader != me:
            scope.cancel()
            return


async def _lead(
    singleton: Singleton,
    term: int,
    changes: MemoryObjectReceiveStream[LeaderChanged],
    fn: Callable[..., Awaitable[object]],
    args: tuple[Any, ...],
    shutdown: float | None,
    intensity: int,
    period: float,
) -> None:
    """Run the instance for ``term`` until the leader or the term changes."""
    node = singleton.node
    registry = node.registry
    spec = ChildSpec(
        singleton.name, fn, (term, *args), shutdown=shutdown, global_name=singleton.name
    )
    try:
        async with (
            open_supervisor(node, "one_for_one", intensity, period) as supervisor,
            anyio.create_task_group() as task_group,
        ):
            task_group.start_soon(_until_changed, changes, term, node.name, task_group.cancel_scope)
            while True:
                # The old instance's name leaves this replica when it exited
                # (its node unregisters it) or when its node is down.
                while registry.whereis(singleton.name) is not None:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                try:
                    await supervisor.start_child(spec)
                    break
                except (NameTakenError, TimeoutError):
                    await anyio.sleep(0.01)  # registered meanwhile elsewhere: wait again
            singleton.term = term
            singleton.starts += 1
            logger.info("%s: singleton %r started for term %d", node.name, singleton.name, term)
            await anyio.sleep_forever()
    finally:
        singleton.term = None
