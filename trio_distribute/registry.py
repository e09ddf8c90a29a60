"""The global name registry, like Erlang's ``global``.

Every node keeps a replica of the name table. To register a name a node
locks it on every connected node, starting with the *boss* (the greatest
node name, itself included), and commits only when every node granted the
lock; if another node holds a lock anywhere, it releases what it got, waits
a random moment and tries again. Because every contender asks the same boss
first, contention is settled there and exactly one of several concurrent
registrations succeeds. Reads (``whereis``, ``names``) are local and may be
briefly stale.

Each node speaks only for its own processes: a peer may register,
unregister or sync only names whose pid is one of its own (of its current
run), so every name a node knows came from the pid's own node and vanishes
when that node goes down; anything else closes the connection. A lock has a
lease (``RegistryConfig.lock_lease``): one neither committed nor released in
time is dropped, so an abandoned lock never blocks a registration for long.

A name disappears everywhere when its process exits (its node tells the
others) or its node goes down (each node notices by itself). When two
partitions that both registered a name reconnect, each node sends every
peer its own names (in frames within the frame limit); every node applies
the same resolver to a clash, so all agree on the winner; the losing process
gets a :class:`NameConflict` message and keeps running.

The registry assumes the nodes that share it are all connected to each
other (a full mesh, as ``open_cluster`` and ``connect_all`` make).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs

from ._applier import OrderedSender, PeerWork, Work, frames_for
from ._ids import Pid, check_label
from ._node_events import NodeEventBus, PeerDown, PeerUp, ProcessExited
from ._proto.kinds import Kind
from ._ratelimit import LogLimiter
from .codec import message
from .errors import NameNotFoundError, NameTakenError
from .monitor import NodeDownReason
from .telemetry import RegistryConflict

if TYPE_CHECKING:
    from .messaging import Processes
    from .transport import Connection, Transport

__all__ = ["NameConflict", "Registry", "Resolver", "default_resolver"]

logger = logging.getLogger("trio_distribute.registry")
_log = LogLimiter(logger)

#: Longest registered name, in characters.
MAX_NAME_LENGTH = 255
#: Names a node's replica may hold; names beyond it from peers are dropped
#: and counted as ``registry_limit``.
MAX_NAMES = 1_000_000

Resolver = Callable[[str, Pid, Pid], Pid]


def default_resolver(name: str, first: Pid, second: Pid) -> Pid:
    """Keep the pid that sorts first by (node name, creation, id).

    It depends only on the two pids, not on which side asks, so every node
    picks the same winner (Erlang's built-in resolvers likewise prefer the
    pid on the smaller node name).
    """
    return min(first, second)


@message("trio_distribute.NameConflict", version=1)
@attrs.frozen
class NameConflict:
    """Sent to a process that lost its global name to ``winner`` when two
    partitions that both registered ``name`` merged."""

    name: str
    winner: Pid


def _check_name(name: object) -> str:
    return check_label(name, "a global name", MAX_NAME_LENGTH)


@attrs.define(eq=False)
class _Pending:
    node: str
    done: anyio.Event = attrs.field(factory=anyio.Event)
    answer: str = "down"


@attrs.define(eq=False)
class _Lock:
    holder: str
    #: When it was granted: the lease runs from here and is never renewed
    #: (a holder asking again does not extend it).
    since: float


@attrs.define(eq=False, kw_only=True)
class Registry:
    """The global registry of one node (``node.registry``)."""

    transport: Transport
    processes: Processes
    events: NodeEventBus
    #: Chooses the survivor when a name was registered on both sides of a
    #: healed partition. It must give the same answer on every node for
    #: the same two pids, whatever their order.
    resolver: Resolver = default_resolver
    _names: dict[str, Pid] = attrs.field(factory=dict)
    # The name each local process holds (at most one), so an exit costs a
    # lookup rather than a scan of the whole table.
    _owned: dict[Pid, str] = attrs.field(factory=dict)
    _locks: dict[str, _Lock] = attrs.field(factory=dict)
    _lock_counts: dict[str, int] = attrs.field(factory=dict)
    # name -> (node whose lock on it expired, until when it may not lock it
    # again): so a holder that lets its lease run out cannot take the lock
    # straight back before a waiting registration gets it.
    _expired: dict[str, tuple[str, float]] = attrs.field(factory=dict)
    _pending: dict[int, _Pending] = attrs.field(factory=dict)
    _request_ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    _local_busy: dict[str, anyio.Event] = attrs.field(factory=dict)
    _abandoned: dict[int, tuple[str, str]] = attrs.field(factory=dict)
    _rng: random.Random = attrs.field(
        default=attrs.Factory(lambda self: self.transport.network.random(), takes_self=True)
    )
    _work: PeerWork = attrs.field(init=False)
    _out: OrderedSender = attrs.field(init=False)

    def __repr__(self) -> str:
        return f"<Registry of {self.transport.name}: {len(self._names)} names>"

    def __attrs_post_init__(self) -> None:
        self._work = PeerWork(
            transport=self.transport,
            backlog_cause="registry_backlog",
            max_backlog=lambda: self.transport.config.registry.max_backlog,
        )
        self._out = OrderedSender(transport=self.transport)
        self.events.subscribe(ProcessExited, self._process_exited)
        self.events.subscribe(PeerUp, self.node_up)
        self.events.subscribe(PeerDown, self.node_down)

    def start(self) -> None:
        add = self.transport.add_handler
        add(Kind.REG_LOCK, self._handle_lock)
        add(Kind.REG_REPLY, self._handle_reply)
        add(Kind.REG_COMMIT, self._handle_commit)
        add(Kind.REG_RELEASE, self._handle_release)
        add(Kind.REG_UNREGISTER, self._handle_unregister)
        add(Kind.REG_SYNC, self._handle_sync)

    # ---------------------------------------------------------------- reads

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under ``name``, from this node's replica."""
        return self._names.get(name)

    def names(self) -> list[str]:
        """Every registered name this node knows, sorted."""
        return sorted(self._names)

    # -------------------------------------------------------------- writes

    async def register(self, name: str, pid: Pid) -> None:
        """Register ``pid`` (a process of this node) as ``name`` on every
        connected node; on return every one of them has it (or went down).

        Registering a process that has already exited does nothing (as in
        Erlang, where such a name vanishes at once).

        Raises:
            NameTakenError: ``name`` is registered, or ``pid`` already has a
                global name.
            ValueError: ``name`` is invalid or ``pid`` is not local.
            TimeoutError: the name stayed locked by others for longer than
                ``RegistryConfig.contention_timeout``.
        """
        _check_name(name)
        self._check_local(pid)
        if self.processes.lookup(pid) is None:
            await anyio.lowlevel.checkpoint()
            return
        other = self._owned.get(pid)
        if other is not None and self._names.get(other) == pid:
            raise NameTakenError(name, f"{pid} is already registered as {other!r}")
        while name in self._local_busy:  # one attempt per name from this node
            await self._local_busy[name].wait()
        self._local_busy[name] = anyio.Event()
        try:
            config = self.transport.config.registry
            # Longer than any lease, so a lock someone abandoned runs out
            # (and this attempt gets it) before we give up.
            deadline = anyio.current_time() + config.contention_timeout
            attempt = 0
            while True:
                outcome = await self._try_register(name, pid)
                if outcome == "registered":
                    return
                if outcome == "taken":
                    raise NameTakenError(name)
                # Busy: someone else holds a lock. Back off and retry.
                if anyio.current_time() >= deadline:
                    raise TimeoutError(f"registering {name!r}: the name stayed contended")
                await anyio.sleep(self._rng.uniform(0.001, 0.01) * min(2**attempt, 32))
                attempt += 1
        finally:
            self._local_busy.pop(name).set()

    async def _try_register(self, name: str, pid: Pid) -> str:
        me = self.transport.name
        if name in self._names:
            return "taken"
        config = self.transport.config.registry
        started = anyio.current_time()
        peers = self.transport.peers()
        boss = max([me, *peers])
        granted: list[str] = []
        try:
            # The boss first: every contender asks it first, so it decides.
            answer = await self._lock_on(boss, name)
            if answer != "granted":
                return answer
            granted.append(boss)
            others = [n for n in [me, *peers] if n != boss]
            answers: dict[str, str] = {}

            async def ask(node: str) -> None:
                answer = answers[node] = await self._lock_on(node, name)
                if answer == "granted":
                    # Recorded at once, so a cancellation still releases it.
                    granted.append(node)

            async with anyio.create_task_group() as tg:
                for node in others:
                    tg.start_soon(ask, node)
            if "taken" in answers.values():
                return "taken"
            if "busy" in answers.values():
                return "busy"
            if anyio.current_time() - started > config.lock_timeout:
                # Gathering the locks took so long that the first ones may
                # be near the end of their lease: committing now could race
                # a registration that got a lapsed lock. Start over.
                return "busy"
            # Every node granted (or left the cluster meanwhile): commit,
            # and return once every node has it (as Erlang's global does).
            granted.clear()
            if self.processes.lookup(pid) is None:
                # It exited while we gathered the locks: its exit hook has
                # run already, so a commit now would never be undone.
                return "registered"
            self._apply(name, pid)
            self._drop_lock(name)
            await self._confirm(Kind.REG_COMMIT, name, pid)
            return "registered"
        finally:
            # Whatever happened (lost, contended, cancelled), give back
            # every lock we still hold.
            for node in granted:
                self._release(node, name)

    async def _lock_on(self, node: str, name: str) -> str:
        if node == self.transport.name:
            return self._grant(name, node)
        timeout = self.transport.config.registry.lock_timeout
        return await self._ask(node, Kind.REG_LOCK, timeout, name)

    async def _ask(self, node: str, kind: Kind, timeout: float, *args: Any) -> str:
        """Send ``[kind, request_id, *args]`` to ``node`` and wait up to
        ``timeout`` for its answer: ``"down"`` if it is (or goes) down.

        A peer that leaves a *lock* request unanswered that long is
        disconnected (the answer is then ``"down"``): it has stopped serving
        us or holds registrations up on purpose, and waiting on it again at
        every attempt would block every registration. A commit or
        unregister that is not acknowledged in time is counted and given up
        on (``"late"``): the peer still applies it in order if it is merely
        slow, and only a broken peer's own view suffers otherwise."""
        conn = self.transport.connection(node)
        if conn is None or conn.closed:
            return "down"
        request = next(self._request_ids)
        pending = self._pending[request] = _Pending(node)
        try:
            data = self.transport.encode_frame([kind, request, *args])
            with anyio.move_on_after(timeout):
                if kind == Kind.REG_LOCK:
                    # Locks are not about the names in our table: no need
                    # to wait behind it (its size must not time us out).
                    conn.write(data)
                else:
                    # A commit or unregister follows the table we may still
                    # be sending this peer.
                    self._out.write(conn, data)
                    await self._out.wait_streamed(conn)
                await pending.done.wait()
                return pending.answer
            if kind == Kind.REG_LOCK:
                cause = "registry_unanswered"
                _log.warning(
                    cause,
                    "%s: closing connection to %s: no answer to a lock request in %.1fs",
                    self.transport.name,
                    node,
                    timeout,
                )
                self.transport.count_drop(cause)
                conn.close(NodeDownReason.PROTOCOL_ERROR)
                return "down"
            self.transport.count_drop("registry_unacknowledged")
            _log.warning(
                "registry_unacknowledged",
                "%s: %s did not acknowledge a registry change in %.1fs",
                self.transport.name,
                node,
                timeout,
            )
            return "late"
        finally:
            del self._pending[request]
            if kind == Kind.REG_LOCK and not pending.done.is_set():
                # A grant may still come; remember to hand it back.
                if len(self._abandoned) >= 1024:
                    self._abandoned.clear()
                self._abandoned[request] = (node, args[0])

    async def _confirm(self, kind: Kind, name: str, pid: Pid) -> None:
        """Tell every connected node and wait until each has applied it, gone
        down, or let ``commit_timeout`` pass. Shielded: once a commit has
        started it is finished, so the replicas never disagree because a
        caller was cancelled; the deadline (each peer's wait, all at once)
        keeps that bounded whatever the peers do, so leaving a node's block
        is bounded too."""
        timeout = self.transport.config.registry.commit_timeout
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for node in self.transport.peers():
                    tg.start_soon(self._ask, node, kind, timeout, name, pid)

    def _grant(self, name: str, requester: str) -> str:
        if name in self._names:
            return "taken"
        config = self.transport.config.registry
        now = anyio.current_time()
        lock = self._locks.get(name)
        if lock is not None and lock.holder != requester:
            if now - lock.since < config.lock_lease:
                return "busy"
            # The lease ran out: the holder crashed mid-attempt without its
            # node going down, or is holding the name on purpose.
            self.transport.count_drop("registry_lock_expired")
            _log.warning(
                "registry_lock_expired",
                "%s: the lock of %s on %r expired",
                self.transport.name,
                lock.holder,
                name,
            )
            self._drop_lock(name)
            self._penalise(name, lock.holder, now + config.lock_lease)
            lock = None
        penalty = self._expired.get(name)
        if penalty is not None:
            if penalty[1] <= now:
                del self._expired[name]
            elif penalty[0] == requester:
                return "busy"
        if lock is None:
            if (
                requester != self.transport.name
                and self._lock_counts.get(requester, 0) >= config.max_locks_per_node
            ):
                self.transport.count_drop("registry_lock_limit")
                return "busy"
            self._locks[name] = _Lock(requester, now)
            self._lock_counts[requester] = self._lock_counts.get(requester, 0) + 1
        return "granted"

    def _drop_lock(self, name: str) -> None:
        lock = self._locks.pop(name, None)
        if lock is not None:
            left = self._lock_counts[lock.holder] - 1
            if left:
                self._lock_counts[lock.holder] = left
            else:
                del self._lock_counts[lock.holder]

    def _penalise(self, name: str, holder: str, until: float) -> None:
        if len(self._expired) >= 1024:
            # Bounded: entries live one lease; forget those already over.
            now = anyio.current_time()
            for key in [k for k, (_, end) in self._expired.items() if end <= now]:
                del self._expired[key]
        self._expired[name] = (holder, until)

    def _release(self, node: str, name: str) -> None:
        me = self.transport.name
        if node == me:
            lock = self._locks.get(name)
            if lock is not None and lock.holder == me:
                self._drop_lock(name)
            return
        conn = self.transport.connection(node)
        if conn is not None and not conn.closed:
            # Like the lock it gives back, not held behind our table.
            conn.write(self.transport.encode_frame([Kind.REG_RELEASE, name]))

    async def unregister(self, name: str) -> None:
        """Remove ``name`` everywhere if this node's process holds it; on
        return every connected node has dropped it.

        Does nothing if the name is not registered (as in Erlang).

        Raises:
            ValueError: the name belongs to a process of another node (only
                its node may unregister it).
        """
        _check_name(name)
        await anyio.lowlevel.checkpoint()
        pid = self._names.get(name)
        if pid is None:
            return
        if pid.node != self.transport.name:
            raise ValueError(f"{name!r} belongs to {pid}, which lives on another node")
        del self._names[name]
        self._owned.pop(pid, None)
        await self._confirm(Kind.REG_UNREGISTER, name, pid)

    async def send(self, name: str, msg: Any) -> Pid:
        """Send ``msg`` to the process registered as ``name``; return its pid.

        Raises:
            NameNotFoundError: the name is not registered (here).
        """
        pid = self._names.get(name)
        if pid is None:
            raise NameNotFoundError(name)
        await self.processes.send(pid, msg)
        return pid

    def _check_local(self, pid: Pid) -> None:
        transport = self.transport
        if type(pid) is not Pid or pid.node != transport.name:
            raise ValueError(f"only pids of this node can be registered here; {pid!r} is not")

    # --------------------------------------------------------- replication

    def _broadcast(self, item: list[Any]) -> None:
        self._out.broadcast(self.transport.encode_frame(item))

    def _apply(self, name: str, pid: Pid) -> None:
        """Record ``name -> pid``, resolving a clash with what we had.

        Every node that knows both pids applies the same resolver and gets
        the same winner; nothing is forwarded (each node hears each name
        from the name's own node)."""
        current = self._names.get(name)
        if current is None:
            if len(self._names) >= MAX_NAMES:
                self.transport.count_drop("registry_limit")
                return
            self._names[name] = pid
            if pid.node == self.transport.name:
                self._owned[pid] = name
            return
        if current == pid:
            return
        winner = self._resolve(name, current, pid)
        self.transport.on_event(
            RegistryConflict(name, winner, pid if winner == current else current)
        )
        if winner == current:
            return
        self._names[name] = winner
        self._owned.pop(current, None)
        if winner.node == self.transport.name:
            self._owned[winner] = name
        logger.info(
            "%s: name %r clash: %s kept, %s lost", self.transport.name, name, winner, current
        )
        self._notify_loser(name, current, winner)

    def _resolve(self, name: str, first: Pid, second: Pid) -> Pid:
        try:
            winner = self.resolver(name, first, second)
        except Exception:
            logger.exception("name resolver failed for %r; using the default", name)
            winner = default_resolver(name, first, second)
        if winner != first and winner != second:
            logger.warning("name resolver returned neither pid for %r; using the default", name)
            winner = default_resolver(name, first, second)
        return winner

    def _notify_loser(self, name: str, loser: Pid, winner: Pid) -> None:
        process = self.processes.lookup(loser)
        if process is not None:
            process._deliver_down(NameConflict(name, winner))

    def node_up(self, event: PeerUp) -> None:
        """Send a newly connected node the names of our own processes (the
        peer hears every other node's names from that node), in frames
        that each fit the frame limit, from a task."""
        node = event.name
        conn = self.transport.connection(node)
        if conn is None:
            return
        # A copy taken now; later changes reach this peer after the table.
        entries = [(name, pid) for pid, name in self._owned.items() if self._names.get(name) == pid]
        if entries:
            self._out.stream(conn, self._table_frames(entries))

    def _table_frames(self, entries: list[tuple[str, Pid]]) -> Iterator[bytes]:
        encode = self.transport.encode_frame

        def encode_part(part: Sequence[tuple[str, Pid]]) -> bytes:
            return encode([Kind.REG_SYNC, dict(part)])

        def oversize() -> None:
            self.transport.count_drop("registry_sync_oversize")

        chunk = self.transport.config.registry.sync_chunk
        return frames_for(entries, chunk, encode_part, oversize)

    def node_down(self, event: PeerDown) -> None:
        """Forget the names of ``node``'s processes and its locks; answer
        our requests waiting on it."""
        node = event.name
        for name in [n for n, pid in self._names.items() if pid.node == node]:
            del self._names[name]
        if self._lock_counts.get(node):
            for name in [n for n, lock in self._locks.items() if lock.holder == node]:
                self._drop_lock(name)
        for pending in self._pending.values():
            if pending.node == node:
                pending.answer = "down"
                pending.done.set()

    def _process_exited(self, event: ProcessExited) -> None:
        pid = event.pid
        name = self._owned.pop(pid, None)
        if name is not None and self._names.get(name) == pid:
            del self._names[name]
            self._broadcast([Kind.REG_UNREGISTER, 0, name, pid])  # 0: no answer wanted

    # ------------------------------------------------------------ handlers
    #
    # Frames that change state are applied in arrival order per connection
    # (PeerWork), big ones in slices. Lock requests and releases, and the
    # answers to requests, are not about the names in a table and are
    # handled (and sent) at once, never behind a big table.

    def _check_own(self, conn: Connection, pid: object) -> Pid:
        # A peer speaks only for its own processes of its current run.
        if type(pid) is not Pid or pid.node != conn.peer or pid.creation != conn.peer_creation:
            self.transport.count_drop("registry_foreign_pid")
            raise ValueError(f"{conn.peer} may only register its own pids, not {pid!r}")
        return pid

    def _handle_lock(self, conn: Connection, item: list[Any]) -> None:
        _, request, name = item
        if type(request) is not int:
            raise TypeError("REG_LOCK needs an int request id")
        # At once, not behind a big frame still being applied: a lock is not
        # about the names in the table, and its requester is waiting.
        self._apply_lock(conn, _check_name(name), request)

    def _apply_lock(self, conn: Connection, name: str, request: int) -> None:
        answer = self._grant(name, conn.peer)
        conn.write(self.transport.encode_frame([Kind.REG_REPLY, request, answer]))

    def _handle_reply(self, conn: Connection, item: list[Any]) -> None:
        _, request, answer = item
        if answer not in ("granted", "taken", "busy", "done"):
            raise ValueError(f"unknown lock answer {answer!r}")
        pending = self._pending.get(request)
        if pending is None or pending.node != conn.peer:
            abandoned = self._abandoned.pop(request, None)
            if abandoned is not None and answer == "granted" and abandoned[0] == conn.peer:
                self._release(conn.peer, abandoned[1])  # we gave up waiting: hand it back
            return
        pending.answer = answer
        pending.done.set()

    def _acknowledge(self, conn: Connection, request: object) -> None:
        if request:
            conn.write(self.transport.encode_frame([Kind.REG_REPLY, request, "done"]))

    def _handle_commit(self, conn: Connection, item: list[Any]) -> None:
        _, request, name, pid = item
        if type(request) is not int:
            raise TypeError("a registry request id must be an int")
        _check_name(name)
        self._check_own(conn, pid)
        self._work.call(conn, lambda: self._apply_commit(conn, request, name, pid))

    def _apply_commit(self, conn: Connection, request: int, name: str, pid: Pid) -> None:
        lock = self._locks.get(name)
        if lock is not None and lock.holder == conn.peer:
            self._drop_lock(name)
        self._apply(name, pid)
        self._acknowledge(conn, request)

    def _handle_release(self, conn: Connection, item: list[Any]) -> None:
        _, name = item
        # At once, like the lock it gives back (so it stays after it).
        self._apply_release(conn, _check_name(name))

    def _apply_release(self, conn: Connection, name: str) -> None:
        lock = self._locks.get(name)
        if lock is not None and lock.holder == conn.peer:
            self._drop_lock(name)

    def _handle_unregister(self, conn: Connection, item: list[Any]) -> None:
        _, request, name, pid = item
        if type(request) is not int:
            raise TypeError("a registry request id must be an int")
        _check_name(name)
        self._check_own(conn, pid)
        self._work.call(conn, lambda: self._apply_unregister(conn, request, name, pid))

    def _apply_unregister(self, conn: Connection, request: int, name: str, pid: Pid) -> None:
        if self._names.get(name) == pid:
            del self._names[name]
        self._acknowledge(conn, request)

    def _handle_sync(self, conn: Connection, item: list[Any]) -> None:
        _, table = item
        if not isinstance(table, dict):
            raise TypeError("REG_SYNC needs a map of name -> pid")
        self._work.submit(conn, self._apply_sync(conn, table), len(table))

    def _apply_sync(self, conn: Connection, table: dict[Any, Any]) -> Work:
        step = self.transport.config.registry.apply_slice
        done = 0
        # Check the whole frame first: nothing of a forged one is applied.
        # (Iterated in place: copying a big table would be one long step;
        # nothing else holds the decoded frame, so it cannot change.)
        for name, pid in table.items():
            _check_name(name)
            self._check_own(conn, pid)
            done += 1
            if done >= step:
                done = 0
                yield
        for name, pid in table.items():
            self._apply(name, pid)
            done += 1
            if done >= step:
                done = 0
                yield
