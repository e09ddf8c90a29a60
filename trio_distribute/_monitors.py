"""Process monitors, local and across nodes.

A monitor fires exactly once: with the watched process's exit reason,
``noproc`` if it was already dead (or a pid of an earlier run of its node),
``noconnection`` if its node's connection was lost or never made, or
``shutdown`` if its node stopped. A monitor on another node's process is
registered there with a MONITOR frame, and that node sends DOWN back; both
travel on the one connection, so a DOWN never overtakes the messages the
process sent before it died.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ._ids import Pid, Ref, unchecked_id
from ._node_events import NodeEventBus, PeerDown, ProcessExited
from ._proto.kinds import Kind
from .monitor import ExitKind, ExitReason, NodeDownReason, ProcessDown

if TYPE_CHECKING:
    from .messaging import Processes
    from .transport import Connection, Transport

__all__ = ["Monitors"]

Deliver = Callable[[ProcessDown], None]


@attrs.define(eq=False, kw_only=True)
class Monitors:
    """Every monitor this node holds or serves."""

    transport: Transport
    processes: Processes
    events: NodeEventBus

    def __repr__(self) -> str:
        return f"<Monitors of {self.transport.name}>"

    _ref_ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    # Watches of this node's processes, by pid id: a local callback, or the
    # name of the node that asked (so DOWN goes back there).
    _watchers: dict[int, dict[Ref, Deliver | str]] = attrs.field(factory=dict)
    _targets: dict[Ref, int] = attrs.field(factory=dict)
    _served_by_node: dict[str, set[Ref]] = attrs.field(factory=dict)
    # Watches this node placed on other nodes' processes.
    _remote: dict[Ref, tuple[Pid, Deliver]] = attrs.field(factory=dict)
    _remote_by_node: dict[str, set[Ref]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.events.subscribe(ProcessExited, self.process_exited)
        self.events.subscribe(PeerDown, self.node_down)

    def start(self) -> None:
        self.transport.add_handler(Kind.MONITOR, self._handle_monitor)
        self.transport.add_handler(Kind.DEMONITOR, self._handle_demonitor)
        self.transport.add_handler(Kind.DOWN, self._handle_down)

    def new_ref(self) -> Ref:
        """A reference unique to this run of this node."""
        # The name and creation were validated when the node started and
        # the id comes from a counter: every call makes one, so no regex.
        transport = self.transport
        return unchecked_id(Ref, transport.name, next(self._ref_ids), transport.creation)

    def _send(self, conn: Connection, item: list[Any]) -> None:
        if not conn.closed:
            conn.write(self.transport.encode_frame(item))

    # ------------------------------------------------------------ watching

    def watch(self, pid: Pid, deliver: Deliver) -> Ref:
        """Start watching ``pid``; ``deliver`` is called exactly once."""
        ref = self.new_ref()
        transport = self.transport
        if pid.node == transport.name:
            if self.processes.lookup(pid) is None:
                deliver(ProcessDown(pid, ExitReason(ExitKind.NOPROC), ref))
            else:
                self._watchers.setdefault(pid.id, {})[ref] = deliver
                self._targets[ref] = pid.id
            return ref
        conn = transport.connection(pid.node)
        if conn is None or conn.closed:
            reason = ExitReason(ExitKind.NOCONNECTION, f"not connected to {pid.node}")
            deliver(ProcessDown(pid, reason, ref))
            return ref
        self._remote[ref] = (pid, deliver)
        self._remote_by_node.setdefault(pid.node, set()).add(ref)
        self._send(conn, [Kind.MONITOR, ref, pid])
        return ref

    def _forget_local(self, ref: Ref) -> bool:
        """Drop a watch of one of our processes; ``True`` if there was one."""
        pid_id = self._targets.pop(ref, None)
        if pid_id is None:
            return False
        watchers = self._watchers.get(pid_id)
        if watchers is not None:
            watchers.pop(ref, None)
            if not watchers:
                del self._watchers[pid_id]
        return True

    def unwatch(self, ref: Ref) -> bool:
        """Stop a watch; ``True`` if it had not fired yet."""
        if self._forget_local(ref):
            return True
        remote = self._remote.pop(ref, None)
        if remote is None:
            return False
        node = remote[0].node
        self._remote_by_node.get(node, set()).discard(ref)
        conn = self.transport.connection(node)
        if conn is not None:
            self._send(conn, [Kind.DEMONITOR, ref])
        return True

    def unwatch_all(self, refs: Iterable[Ref]) -> None:
        """Stop several watches (those of a process that ended).

        The DEMONITOR frames are written back to back without yielding, so
        each connection coalesces its share into one or two socket writes.
        """
        for ref in refs:
            self.unwatch(ref)

    def active(self, ref: Ref) -> bool:
        """``True`` while the watch ``ref`` has not fired nor been stopped."""
        return ref in self._targets or ref in self._remote

    # -------------------------------------------------------------- firing

    def process_exited(self, event: ProcessExited) -> None:
        """A local process ended: fire every watch on it."""
        pid, reason = event.pid, event.reason
        watchers = self._watchers.pop(pid.id, None)
        if not watchers:
            return
        for ref, watcher in watchers.items():
            self._targets.pop(ref, None)
            if isinstance(watcher, str):
                self._served_by_node.get(watcher, set()).discard(ref)
                conn = self.transport.connection(watcher)
                if conn is not None:
                    self._send(conn, [Kind.DOWN, ref, pid, reason.kind, reason.detail])
            else:
                watcher(ProcessDown(pid, reason, ref))

    def node_down(self, event: PeerDown) -> None:
        """The connection to ``node`` ended: fire our watches of its
        processes and forget the watches it held on ours."""
        node, reason = event.name, event.reason
        kind = ExitKind.SHUTDOWN if reason == NodeDownReason.SHUTDOWN else ExitKind.NOCONNECTION
        exit_reason = ExitReason(kind, f"node {node} down: {reason}")
        for ref in sorted(self._remote_by_node.pop(node, ()), key=lambda r: r.id):
            entry = self._remote.pop(ref, None)
            if entry is not None:
                pid, deliver = entry
                deliver(ProcessDown(pid, exit_reason, ref))
        for ref in self._served_by_node.pop(node, ()):
            self._forget_local(ref)

    # ------------------------------------------------------------ handlers

    def _handle_monitor(self, conn: Connection, item: list[Any]) -> None:
        _, ref, target = item
        if type(ref) is not Ref or ref.node != conn.peer:
            raise ValueError(f"MONITOR ref {ref!r} does not belong to {conn.peer}")
        if type(target) is not Pid or target.node != self.transport.name:
            raise ValueError(f"MONITOR target {target!r} is not a pid of this node")
        if self.processes.lookup(target) is None or ref in self._targets:
            self._send(conn, [Kind.DOWN, ref, target, ExitKind.NOPROC, ""])
            return
        served = self._served_by_node.setdefault(conn.peer, set())
        if len(served) >= self.transport.config.max_monitors_per_peer:
            # Each entry is memory a peer makes us hold; past the bound the
            # peer is misbehaving (or leaking), so it loses the connection.
            self.transport.count_drop("monitor_limit")
            raise ValueError(
                f"{conn.peer} holds {len(served)} monitors here (max_monitors_per_peer)"
            )
        self._watchers.setdefault(target.id, {})[ref] = conn.peer
        self._targets[ref] = target.id
        served.add(ref)

    def _handle_demonitor(self, conn: Connection, item: list[Any]) -> None:
        _, ref = item
        if type(ref) is not Ref or ref.node != conn.peer:
            raise ValueError(f"DEMONITOR ref {ref!r} does not belong to {conn.peer}")
        if ref in self._served_by_node.get(conn.peer, ()):
            self._served_by_node[conn.peer].discard(ref)
            self.unwatch(ref)

    def _handle_down(self, conn: Connection, item: list[Any]) -> None:
        _, ref, target, kind, detail = item
        if type(ref) is not Ref or type(target) is not Pid or not isinstance(detail, str):
            raise TypeError("DOWN needs a ref, a pid, a kind and a detail")
        entry = self._remote.get(ref)
        if entry is None:
            return  # demonitored meanwhile: nothing to deliver
        pid, deliver = entry
        if pid != target or pid.node != conn.peer:
            raise ValueError(f"DOWN for {target!r} does not match the monitor {ref!r}")
        del self._remote[ref]
        self._remote_by_node.get(pid.node, set()).discard(ref)
        deliver(ProcessDown(pid, ExitReason(kind, detail), ref))

    def count(self) -> int:
        """Monitors held or served now."""
        return len(self._targets) + len(self._remote)

    def sizes(self) -> dict[str, int]:
        """The size of each table, for statistics and leak checks: watches
        of local processes (``local``, those served for other nodes among
        them as ``served``) and watches placed on other nodes (``remote``)."""
        return {
            "local": len(self._targets),
            "served": sum(len(refs) for refs in self._served_by_node.values()),
            "remote": len(self._remote),
        }
