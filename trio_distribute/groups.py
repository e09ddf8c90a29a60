"""Process groups, like Erlang's ``pg``: eventually consistent, no locks.

Each node owns the memberships of its own processes and tells its peers:
on node-up it sends a SYNC (which *replaces* what the peer knew of this
node) followed, for a big view, by JOIN frames with the rest, so no frame
exceeds the frame limit; afterwards every join and leave. A node's view is
its own members plus what each connected peer told it about *its own*
processes: a frame naming a pid of another node (or of an earlier run) is
refused and closes the connection. Members of a process that exits are
removed by its node (and the peers hear a leave); members of a node that
goes down vanish with it.

Memberships are kept as ordered pid -> count maps, so joins, leaves and
syncs cost time linear in their size, and big frames from peers are applied
in slices that yield to other tasks (see :mod:`._applier`).

A pid may join a group several times and must leave as many times (a
multiset, as in ``pg``). Only local pids can join or leave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._applier import OrderedSender, PeerWork, Work, frames_for
from ._ids import Pid, check_label
from ._node_events import NodeEventBus, PeerDown, PeerUp, ProcessExited
from ._proto.kinds import Kind
from .errors import NodeDownError

if TYPE_CHECKING:
    from .messaging import Processes
    from .transport import Connection, Transport

__all__ = ["GroupEvent", "GroupJoined", "GroupLeft", "Groups"]

#: Longest group name, in characters.
MAX_GROUP_NAME = 255
#: Events a ``monitor`` subscriber may fall behind by before newer ones are
#: dropped (counted as ``group_monitor_overflow``).
MONITOR_BUFFER = 1024


@attrs.frozen
class GroupJoined:
    """``pids`` joined ``group`` (one entry per join: a double join lists a pid twice)."""

    group: str
    pids: tuple[Pid, ...]


@attrs.frozen
class GroupLeft:
    """``pids`` left ``group`` (by leaving, exiting, or their node going down)."""

    group: str
    pids: tuple[Pid, ...]


GroupEvent = GroupJoined | GroupLeft


def _check_group(group: object) -> str:
    return check_label(group, "a group name", MAX_GROUP_NAME)


@attrs.define(eq=False, kw_only=True)
class Groups:
    """The process groups of one node (``node.groups``)."""

    transport: Transport
    processes: Processes
    events: NodeEventBus
    # group -> pid -> number of memberships, in first-join order.
    _local: dict[str, dict[Pid, int]] = attrs.field(factory=dict)
    # The groups each local process is in, so an exit costs a lookup rather
    # than a scan of every group.
    _groups_of: dict[Pid, set[str]] = attrs.field(factory=dict)
    # peer -> group -> pid -> count: what each peer told us of its own pids.
    _remote: dict[str, dict[str, dict[Pid, int]]] = attrs.field(factory=dict)
    _remote_counts: dict[str, int] = attrs.field(factory=dict)
    _subscribers: dict[str, set[MemoryObjectSendStream[GroupEvent]]] = attrs.field(factory=dict)
    _work: PeerWork = attrs.field(init=False)
    _out: OrderedSender = attrs.field(init=False)

    def __repr__(self) -> str:
        return f"<Groups of {self.transport.name}: {len(self.which_groups())} groups>"

    def __attrs_post_init__(self) -> None:
        self._work = PeerWork(
            transport=self.transport,
            backlog_cause="group_backlog",
            max_backlog=lambda: self.transport.config.groups.max_backlog,
        )
        self._out = OrderedSender(transport=self.transport)
        self.events.subscribe(ProcessExited, self._process_exited)
        self.events.subscribe(PeerUp, self.node_up)
        self.events.subscribe(PeerDown, self.node_down)

    def start(self) -> None:
        self.transport.add_handler(Kind.GROUP_SYNC, self._handle_sync)
        self.transport.add_handler(Kind.GROUP_JOIN, self._handle_join)
        self.transport.add_handler(Kind.GROUP_LEAVE, self._handle_leave)

    # ------------------------------------------------------------ changes

    async def join(self, group: str, pid: Pid) -> None:
        """Add one membership of the local process ``pid`` to ``group``.

        Joining a process that has already exited does nothing (its
        membership would be removed at once anyway).

        Raises:
            ValueError: ``group`` is not a valid name, or ``pid`` is not a
                pid of this node.
        """
        _check_group(group)
        self._check_local(pid)
        if self.processes.lookup(pid) is None:
            return
        members = self._local.setdefault(group, {})
        members[pid] = members.get(pid, 0) + 1
        self._groups_of.setdefault(pid, set()).add(group)
        self._broadcast([Kind.GROUP_JOIN, group, [pid]])
        self._publish(GroupJoined(group, (pid,)))
        await anyio.lowlevel.checkpoint()

    async def leave(self, group: str, pid: Pid) -> bool:
        """Remove one membership of the local ``pid`` from ``group``.

        Returns ``False`` if ``pid`` was not a member (Erlang's
        ``not_joined``).

        Raises:
            ValueError: as for :meth:`join`.
        """
        _check_group(group)
        self._check_local(pid)
        members = self._local.get(group)
        await anyio.lowlevel.checkpoint()
        if not members or pid not in members:
            return False
        if members[pid] > 1:
            members[pid] -= 1
        else:
            del members[pid]
            if not members:
                del self._local[group]
            groups = self._groups_of[pid]
            groups.discard(group)
            if not groups:
                del self._groups_of[pid]
        self._broadcast([Kind.GROUP_LEAVE, group, [pid]])
        self._publish(GroupLeft(group, (pid,)))
        return True

    def _check_local(self, pid: Pid) -> None:
        transport = self.transport
        if type(pid) is not Pid or pid.node != transport.name:
            raise ValueError(f"only local pids can join or leave a group; {pid!r} is not local")
        if pid.creation != transport.creation:
            raise ValueError(f"{pid} belongs to an earlier run of this node")

    # -------------------------------------------------------------- reads

    def members(self, group: str) -> list[Pid]:
        """Every member of ``group`` known here (local first), duplicates kept."""
        out = _expand(self._local.get(group))
        for groups in self._remote.values():
            out.extend(_expand(groups.get(group)))
        return out

    def local_members(self, group: str) -> list[Pid]:
        """The members of ``group`` that live on this node."""
        return _expand(self._local.get(group))

    def which_groups(self) -> list[str]:
        """Names of the non-empty groups known here, sorted."""
        names = set(self._local)
        for groups in self._remote.values():
            names.update(groups)
        return sorted(names)

    async def broadcast(self, group: str, message: Any) -> int:
        """Send ``message`` to every member of ``group``; return how many
        sends were made (one per membership, as ``members`` lists them).

        Members on nodes that went down meanwhile are skipped (and not
        counted).
        """
        sent = 0
        for pid in self.members(_check_group(group)):
            try:
                await self.processes.send(pid, message)
            except NodeDownError:
                continue
            sent += 1
        return sent

    # ------------------------------------------------------------- events

    @asynccontextmanager
    async def monitor(self, group: str) -> AsyncIterator[MemoryObjectReceiveStream[GroupEvent]]:
        """Watch ``group``: yields a channel of :class:`GroupJoined` and
        :class:`GroupLeft` events from now on; leaving the block stops it."""
        _check_group(group)
        send, receive = anyio.create_memory_object_stream[GroupEvent](MONITOR_BUFFER)
        self._subscribers.setdefault(group, set()).add(send)
        try:
            yield receive
        finally:
            subscribers = self._subscribers.get(group)
            if subscribers is not None:
                subscribers.discard(send)
                if not subscribers:
                    del self._subscribers[group]
            send.close()
            receive.close()

    def _publish(self, event: GroupEvent) -> None:
        for channel in list(self._subscribers.get(event.group, ())):
            try:
                channel.send_nowait(event)
            except anyio.WouldBlock:
                self.transport.count_drop("group_monitor_overflow")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers[event.group].discard(channel)

    # ------------------------------------------------------- replication

    def _broadcast(self, item: list[Any]) -> None:
        self._out.broadcast(self.transport.encode_frame(item))

    def node_up(self, event: PeerUp) -> None:
        """Send a newly connected node every local membership: one SYNC, and
        for a big view JOIN frames with the rest, each within the frame
        limit (encoded and written by a task, a frame at a time)."""
        node = event.name
        conn = self.transport.connection(node)
        if conn is None:
            return
        # A copy taken now: later changes are broadcast, and reach this peer
        # after the view (OrderedSender holds them back meanwhile).
        entries = [
            (group, pid)
            for group, members in self._local.items()
            for pid, count in members.items()
            for _ in range(count)
        ]
        self._out.stream(conn, self._view_frames(entries))

    def _view_frames(self, entries: list[tuple[str, Pid]]) -> Iterator[bytes]:
        config = self.transport.config.groups
        encode = self.transport.encode_frame
        first = True

        def encode_part(part: Sequence[tuple[str, Pid]]) -> bytes:
            snapshot: dict[str, list[Pid]] = {}
            for group, pid in part:
                snapshot.setdefault(group, []).append(pid)
            if first:
                return encode([Kind.GROUP_SYNC, snapshot])
            # After the SYNC, the rest of the view adds to it: JOINs (one
            # group per frame, so split the part by group).
            return b"".join(
                encode([Kind.GROUP_JOIN, group, pids]) for group, pids in snapshot.items()
            )

        def oversize() -> None:
            self.transport.count_drop("group_sync_oversize")

        if not entries:
            yield encode([Kind.GROUP_SYNC, {}])
            return
        for data in frames_for(entries, config.sync_chunk, encode_part, oversize):
            first = False
            yield data

    def node_down(self, event: PeerDown) -> None:
        """Forget every member of ``node``."""
        node = event.name
        groups = self._remote.pop(node, None)
        self._remote_counts.pop(node, None)
        for group, members in (groups or {}).items():
            if group in self._subscribers:
                self._publish(GroupLeft(group, tuple(_expand(members))))

    def _process_exited(self, event: ProcessExited) -> None:
        pid = event.pid
        for group in sorted(self._groups_of.pop(pid, ())):
            members = self._local[group]
            count = members.pop(pid, 0)
            if not members:
                del self._local[group]
            gone = [pid] * count
            self._broadcast([Kind.GROUP_LEAVE, group, gone])
            # One leave event per membership, as pg does for a dead process.
            for one in gone:
                self._publish(GroupLeft(group, (one,)))

    # ----------------------------------------------------------- handlers

    def _own_pids(self, conn: Connection, pids: object) -> list[Pid]:
        """``pids`` if it is a list (checked entry by entry as applied)."""
        if not isinstance(pids, list):
            raise TypeError(f"group members from {conn.peer} must be a list of pids")
        return pids

    def _check_own(self, conn: Connection, pid: object) -> Pid:
        # A peer speaks only for its own processes of its current run:
        # anything else is a forgery (or a bug) and costs the connection.
        if type(pid) is not Pid or pid.node != conn.peer or pid.creation != conn.peer_creation:
            self.transport.count_drop("group_foreign_pid")
            raise ValueError(f"group members from {conn.peer} must be its own pids, not {pid!r}")
        return pid

    def _handle_sync(self, conn: Connection, item: list[Any]) -> None:
        _, snapshot = item
        if not isinstance(snapshot, dict):
            raise TypeError("GROUP_SYNC needs a map of group -> pids")
        size = sum(len(p) if isinstance(p, list) else 1 for p in snapshot.values())
        self._work.submit(conn, self._apply_sync(conn, snapshot), size + len(snapshot))

    def _apply_sync(self, conn: Connection, snapshot: dict[Any, Any]) -> Work:
        config = self.transport.config.groups
        step = config.apply_slice
        done = 0
        # Check the whole frame first: nothing of a forged one is applied.
        fresh: dict[str, dict[Pid, int]] = {}
        total = 0
        for group, pids in snapshot.items():
            _check_group(group)
            members = self._own_pids(conn, pids)
            if total + len(members) > config.max_remote_entries:
                self.transport.count_drop("group_limit")
                break
            total += len(members)
            counts: dict[Pid, int] = {}
            for pid in members:
                pid = self._check_own(conn, pid)
                counts[pid] = counts.get(pid, 0) + 1
                done += 1
                if done >= step:
                    done = 0
                    yield
            if counts:
                fresh[group] = counts
        old = self._remote.get(conn.peer, {})
        self._remote[conn.peer] = fresh
        self._remote_counts[conn.peer] = total
        # A sync replaces what we knew of that node: report the difference
        # (only where someone listens; computing it is linear anyway).
        for group in sorted(set(old) | set(fresh)):
            if group not in self._subscribers:
                continue
            before, after = old.get(group, {}), fresh.get(group, {})
            left = _minus(before, after)
            joined = _minus(after, before)
            if left:
                self._publish(GroupLeft(group, tuple(left)))
            if joined:
                self._publish(GroupJoined(group, tuple(joined)))
            done += len(before) + len(after)
            if done >= step:
                done = 0
                yield

    def _handle_join(self, conn: Connection, item: list[Any]) -> None:
        _, group, pids = item
        _check_group(group)
        members = self._own_pids(conn, pids)
        self._work.submit(conn, self._apply_join(conn, group, members), len(members) + 1)

    def _apply_join(self, conn: Connection, group: str, members: list[Any]) -> Work:
        config = self.transport.config.groups
        count = self._remote_counts.get(conn.peer, 0)
        if count + len(members) > config.max_remote_entries:
            self.transport.count_drop("group_limit")
            return
        # Applied slice by slice as checked: a forged pid further on closes
        # the connection, and the node-down purges what was applied.
        counts = self._remote.setdefault(conn.peer, {}).setdefault(group, {})
        for start in range(0, len(members), config.apply_slice):
            for pid in members[start : start + config.apply_slice]:
                pid = self._check_own(conn, pid)
                counts[pid] = counts.get(pid, 0) + 1
            self._remote_counts[conn.peer] = count = count + len(
                members[start : start + config.apply_slice]
            )
            if start + config.apply_slice < len(members):
                yield
        if members:
            self._publish(GroupJoined(group, tuple(members)))
        elif not counts:
            del self._remote[conn.peer][group]

    def _handle_leave(self, conn: Connection, item: list[Any]) -> None:
        _, group, pids = item
        _check_group(group)
        members = self._own_pids(conn, pids)
        self._work.submit(conn, self._apply_leave(conn, group, members), len(members) + 1)

    def _apply_leave(self, conn: Connection, group: str, members: list[Any]) -> Work:
        step = self.transport.config.groups.apply_slice
        removed: list[Pid] = []
        for start in range(0, len(members), step):
            groups = self._remote.get(conn.peer, {})
            counts = groups.get(group, {})
            for pid in members[start : start + step]:
                pid = self._check_own(conn, pid)
                have = counts.get(pid, 0)
                if have > 1:
                    counts[pid] = have - 1
                elif have == 1:
                    del counts[pid]
                else:
                    continue
                removed.append(pid)
            if not counts:
                groups.pop(group, None)
            if start + step < len(members):
                yield
        if removed:
            self._remote_counts[conn.peer] = self._remote_counts.get(conn.peer, 0) - len(removed)
            self._publish(GroupLeft(group, tuple(removed)))


def _expand(counts: dict[Pid, int] | None) -> list[Pid]:
    """A pid -> count map as a list with each pid repeated ``count`` times."""
    out: list[Pid] = []
    if counts:
        for pid, count in counts.items():
            out.extend([pid] * count if count > 1 else (pid,))
    return out


def _minus(a: dict[Pid, int], b: dict[Pid, int]) -> list[Pid]:
    """Multiset difference ``a - b`` (linear), in ``a``'s order."""
    out: list[Pid] = []
    for pid, count in a.items():
        extra = count - b.get(pid, 0)
        if extra > 0:
            out.extend([pid] * extra)
    return out
