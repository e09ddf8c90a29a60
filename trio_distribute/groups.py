"""Process groups, like Erlang's ``pg``: eventually consistent, no locks.

Each node owns the memberships of its own processes and tells its peers:
on node-up it sends a SYNC with all of them (which *replaces* what the peer
knew of this node), and afterwards every join and leave. A node's view is
its own members plus the last SYNC and updates from each connected peer.
Members of a process that exits are removed by its node (and the peers hear
a leave); members of a node that goes down vanish with it.

A pid may join a group several times and must leave as many times (a
multiset, as in ``pg``). Only local pids can join or leave.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import codec
from ._ids import Pid, check_label
from ._proto.frames import frame
from ._proto.kinds import Kind
from .errors import NodeDownError
from .monitor import ExitReason

if TYPE_CHECKING:
    from .messaging import Processes
    from .transport import Connection, Transport

__all__ = ["GroupEvent", "GroupJoined", "GroupLeft", "Groups"]

#: Longest group name, in characters.
MAX_GROUP_NAME = 255
#: Memberships one peer may announce (all groups together); more are
#: dropped and counted, so a peer cannot grow our tables without bound.
MAX_REMOTE_ENTRIES = 1_000_000
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
    _local: dict[str, list[Pid]] = attrs.field(factory=dict)
    # The groups each local process is in, so an exit costs a lookup rather
    # than a scan of every group.
    _groups_of: dict[Pid, set[str]] = attrs.field(factory=dict)
    _remote: dict[str, dict[str, list[Pid]]] = attrs.field(factory=dict)
    _remote_counts: dict[str, int] = attrs.field(factory=dict)
    _subscribers: dict[str, set[MemoryObjectSendStream[GroupEvent]]] = attrs.field(factory=dict)

    def start(self) -> None:
        self.transport.add_handler(Kind.GROUP_SYNC, self._handle_sync)
        self.transport.add_handler(Kind.GROUP_JOIN, self._handle_join)
        self.transport.add_handler(Kind.GROUP_LEAVE, self._handle_leave)
        self.processes.exit_hooks.append(self._process_exited)

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
        self._local.setdefault(group, []).append(pid)
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
        members.remove(pid)
        if not members:
            del self._local[group]
        if pid not in members:
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
        out = list(self._local.get(group, ()))
        for groups in self._remote.values():
            out.extend(groups.get(group, ()))
        return out

    def local_members(self, group: str) -> list[Pid]:
        """The members of ``group`` that live on this node."""
        return list(self._local.get(group, ()))

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
        data = self.transport.encode_frame(item)
        for conn in list(self.transport.connections.values()):
            if not conn.closed:
                conn.write(data)

    def node_up(self, node: str) -> None:
        """Tell a newly connected node every local membership."""
        conn = self.transport.connections.get(node)
        if conn is not None:
            snapshot = {group: list(pids) for group, pids in self._local.items()}
            # Not encode_frame: this runs inside the node-up hook, where a size
            # error would escape into the connection set-up; an oversized
            # snapshot is refused by the peer's frame limit instead.
            conn.write(frame(codec.encode([Kind.GROUP_SYNC, snapshot])))

    def node_down(self, node: str, reason: str) -> None:
        """Forget every member of ``node``."""
        groups = self._remote.pop(node, None)
        self._remote_counts.pop(node, None)
        for group, pids in (groups or {}).items():
            self._publish(GroupLeft(group, tuple(pids)))

    def _process_exited(self, pid: Pid, reason: ExitReason) -> None:
        for group in sorted(self._groups_of.pop(pid, ())):
            members = self._local[group]
            gone = tuple(p for p in members if p == pid)
            members[:] = [p for p in members if p != pid]
            if not members:
                del self._local[group]
            self._broadcast([Kind.GROUP_LEAVE, group, list(gone)])
            # One leave event per membership, as pg does for a dead process.
            for one in gone:
                self._publish(GroupLeft(group, (one,)))

    def _peer_pids(self, conn: Connection, pids: object) -> list[Pid]:
        if not isinstance(pids, list) or not all(
            type(p) is Pid and p.node == conn.peer for p in pids
        ):
            raise ValueError(f"group members from {conn.peer} must be its own pids")
        return pids

    def _handle_sync(self, conn: Connection, item: list[Any]) -> None:
        _, snapshot = item
        if not isinstance(snapshot, dict):
            raise TypeError("GROUP_SYNC needs a map of group -> pids")
        fresh: dict[str, list[Pid]] = {}
        total = 0
        for group, pids in snapshot.items():
            _check_group(group)
            members = self._peer_pids(conn, pids)
            total += len(members)
            if total > MAX_REMOTE_ENTRIES:
                self.transport.count_drop("group_limit")
                break
            if members:
                fresh[group] = list(members)
        old = self._remote.get(conn.peer, {})
        self._remote[conn.peer] = fresh
        self._remote_counts[conn.peer] = sum(len(p) for p in fresh.values())
        # A sync replaces what we knew of that node: report the difference.
        for group in sorted(set(old) | set(fresh)):
            before, after = old.get(group, []), fresh.get(group, [])
            left = _minus(before, after)
            joined = _minus(after, before)
            if left:
                self._publish(GroupLeft(group, tuple(left)))
            if joined:
                self._publish(GroupJoined(group, tuple(joined)))

    def _handle_join(self, conn: Connection, item: list[Any]) -> None:
        _, group, pids = item
        _check_group(group)
        members = self._peer_pids(conn, pids)
        count = self._remote_counts.get(conn.peer, 0)
        if count + len(members) > MAX_REMOTE_ENTRIES:
            self.transport.count_drop("group_limit")
            return
        self._remote_counts[conn.peer] = count + len(members)
        self._remote.setdefault(conn.peer, {}).setdefault(group, []).extend(members)
        self._publish(GroupJoined(group, tuple(members)))

    def _handle_leave(self, conn: Connection, item: list[Any]) -> None:
        _, group, pids = item
        _check_group(group)
        members = self._peer_pids(conn, pids)
        groups = self._remote.get(conn.peer, {})
        current = groups.get(group, [])
        removed = []
        for pid in members:
            if pid in current:
                current.remove(pid)
                removed.append(pid)
        if not current:
            groups.pop(group, None)
        self._remote_counts[conn.peer] = self._remote_counts.get(conn.peer, 0) - len(removed)
        if removed:
            self._publish(GroupLeft(group, tuple(removed)))


def _minus(a: Iterable[Pid], b: Iterable[Pid]) -> list[Pid]:
    """Multiset difference ``a - b``, keeping ``a``'s order."""
    rest = list(b)
    out = []
    for pid in a:
        if pid in rest:
            rest.remove(pid)
        else:
            out.append(pid)
    return out
