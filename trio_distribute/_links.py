"""Links and exit signals between processes, local and across nodes.

Erlang semantics: a link is bidirectional and there is at most one between
two processes. When a process ends, every process linked to it gets an exit
signal carrying its reason; a signal with a reason other than ``normal``
ends a receiver that does not trap exits, and a trapping receiver gets an
:class:`ExitSignal` in its mailbox instead. ``Node.exit`` sends a signal
without a link; its reason ``"kill"`` cannot be trapped.

Each node holds its own processes' side of every link. Across nodes, LINK
and UNLINK keep the two sides in step, LINK_EXIT carries the signal of a
process that ended (and removes the link on the receiving side), and a lost
connection fires every link with that node's processes as ``noconnection``
(``shutdown`` when the peer stopped gracefully, as monitors do). All of
them travel on the one connection per pair of nodes, so they stay in order
with the messages around them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

import anyio.lowlevel
import attrs

from ._ids import Pid
from ._node_events import NodeEventBus, PeerDown, ProcessExited
from ._proto.kinds import Kind
from .codec import message
from .errors import NodeDownError
from .monitor import ExitKind, ExitReason, NodeDownReason

if TYPE_CHECKING:
    from .messaging import Process, Processes
    from .transport import Connection, Transport

__all__ = ["KILL", "ExitSignal", "Links", "signal_reason", "terminate"]

logger = logging.getLogger("trio_distribute.links")

#: The reason of ``Node.exit`` that cannot be trapped (Erlang's ``kill``).
KILL: Final = "kill"
# The detail of a process ended by a signal starts with this, so a signal
# passed along a chain of links names the first reason once, not nested.
_FROM = "exit signal from "


@message("trio_distribute.ExitSignal", version=1)
@attrs.frozen
class ExitSignal:
    """An exit signal delivered as a message to a process that traps exits
    (``proc.trap_exits = True``): ``pid`` is where it came from (the linked
    process that ended, or the sender of ``Node.exit``) and ``reason`` why.

    Erlang: the ``{'EXIT', Pid, Reason}`` message.
    """

    pid: Pid = attrs.field(validator=attrs.validators.instance_of(Pid))
    reason: ExitReason = attrs.field(validator=attrs.validators.instance_of(ExitReason))


def signal_reason(reason: object) -> ExitReason | None:
    """The reason ``Node.exit`` sends for ``reason``; ``None`` for ``"kill"``.

    A string naming an :class:`ExitKind` (``"normal"``, ``"shutdown"``...)
    is that kind; any other non-empty string ``s`` is ``ExitReason("exit", s)``.

    Raises:
        TypeError: ``reason`` is neither a str nor an :class:`ExitReason`.
        ValueError: it is an empty string.
    """
    if isinstance(reason, ExitReason):
        return reason
    if not isinstance(reason, str):
        raise TypeError(f"an exit reason must be a str or an ExitReason, got {reason!r}")
    if not reason:
        raise ValueError("an exit reason must not be an empty string")
    if reason == KILL:
        return None
    try:
        return ExitReason(reason)
    except ValueError:
        return ExitReason(ExitKind.EXIT, reason)


def _root(reason: ExitReason) -> str:
    detail = reason.detail
    if reason.kind == ExitKind.EXIT and detail.startswith(_FROM):
        # "exit signal from <pid>: <root>": keep the root, drop the hop.
        return detail.partition(": ")[2]
    return str(reason)


def terminate(process: Process, reason: ExitReason) -> None:
    """End ``process`` with ``reason``: its task (the ``spawn``-ed function or
    the ``open_process`` body) is cancelled. The first reason wins."""
    if not process.alive or process._exit_reason is not None:
        return
    process._exit_reason = reason
    if process._scope is not None:
        process._scope.cancel()


@attrs.define(eq=False, kw_only=True)
class Links:
    """Every link this node's processes have, and the exit signals."""

    transport: Transport
    processes: Processes
    events: NodeEventBus
    # Local pid id -> the pids (local or remote) it is linked to.
    _links: dict[int, set[Pid]] = attrs.field(factory=dict)
    # Peer node -> (local pid id, remote pid) of each link with it, so a
    # lost connection finds them and a peer's share can be bounded.
    _by_node: dict[str, set[tuple[int, Pid]]] = attrs.field(factory=dict)
    # Peer node -> (local pid id, remote pid) -> UNLINKs sent and not yet
    # acknowledged. A LINK for such a pair was sent by the peer before it
    # read our UNLINK, which will remove the link on its side: taking the
    # LINK would leave the link on this side only (Erlang's unlink ids).
    _unlinking: dict[str, dict[tuple[int, Pid], int]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.events.subscribe(ProcessExited, self.process_exited)
        self.events.subscribe(PeerDown, self.node_down)

    def start(self) -> None:
        add = self.transport.add_handler
        add(Kind.LINK, self._handle_link)
        add(Kind.UNLINK, self._handle_unlink)
        add(Kind.UNLINK_ACK, self._handle_unlink_ack)
        add(Kind.LINK_EXIT, self._handle_link_exit)
        add(Kind.EXIT, self._handle_exit)

    # ------------------------------------------------------------ the table

    def _add(self, local: Pid, other: Pid) -> None:
        self._links.setdefault(local.id, set()).add(other)
        if other.node != self.transport.name:
            self._by_node.setdefault(other.node, set()).add((local.id, other))

    def _remove(self, local: Pid, other: Pid) -> bool:
        """Forget ``local``'s side of its link with ``other``; ``True`` if
        there was one."""
        linked = self._links.get(local.id)
        if linked is None or other not in linked:
            return False
        linked.discard(other)
        if not linked:
            del self._links[local.id]
        if other.node != self.transport.name:
            pairs = self._by_node.get(other.node)
            if pairs is not None:
                pairs.discard((local.id, other))
                if not pairs:
                    del self._by_node[other.node]
        return True

    def linked(self, pid: Pid) -> frozenset[Pid]:
        """The pids a local process is linked to now."""
        return frozenset(self._links.get(pid.id, ()))

    # ------------------------------------------------------------ link/unlink

    async def link(self, process: Process, pid: Pid) -> None:
        """See :meth:`Process.link`."""
        if type(pid) is not Pid:
            raise TypeError(f"can only link to a Pid, got {pid!r}")
        if not process.alive:
            raise ValueError(f"process {process.pid} has ended: it cannot link")
        transport = self.transport
        if pid != process.pid and pid not in self._links.get(process.pid.id, ()):
            if pid.node == transport.name:
                self.link_local(process, pid)
            else:
                conn = transport.connection(pid.node)
                if conn is None and transport.knows_address(pid.node):
                    with contextlib.suppress(NodeDownError):  # fires noconnection below
                        conn = await self.transport.connection_for(pid.node)
                if conn is None or conn.closed or not process.alive:
                    if process.alive:
                        reason = ExitReason(ExitKind.NOCONNECTION, f"not connected to {pid.node}")
                        self.signal(process, pid, reason)
                elif pid not in self._links.get(process.pid.id, ()):
                    self._add(process.pid, pid)
                    self._write(conn, [Kind.LINK, process.pid, pid])
        # A signal fired at once (noproc, noconnection) ends the caller here.
        await anyio.lowlevel.checkpoint()

    def link_local(self, process: Process, pid: Pid) -> None:
        """Link ``process`` to the local ``pid`` now (no await: ``spawn``
        links a child before it runs)."""
        target = self.processes.lookup(pid)
        if target is None:
            self.signal(process, pid, ExitReason(ExitKind.NOPROC))
            return
        self._add(process.pid, pid)
        self._add(pid, process.pid)

    async def unlink(self, process: Process, pid: Pid) -> None:
        """See :meth:`Process.unlink`."""
        if type(pid) is not Pid:
            raise TypeError(f"can only unlink a Pid, got {pid!r}")
        if self._remove(process.pid, pid):
            if pid.node == self.transport.name:
                self._remove(pid, process.pid)
            else:
                conn = self.transport.connection(pid.node)
                if conn is not None and not conn.closed:
                    pending = self._unlinking.setdefault(pid.node, {})
                    key = (process.pid.id, pid)
                    pending[key] = pending.get(key, 0) + 1
                    self._write(conn, [Kind.UNLINK, process.pid, pid])
        await anyio.lowlevel.checkpoint()

    # ---------------------------------------------------------------- signals

    def signal(self, process: Process, origin: Pid, reason: ExitReason | None) -> None:
        """Deliver an exit signal from ``origin`` to the local ``process``
        (``reason`` ``None`` is ``kill``)."""
        if not process.alive:
            return
        if self.transport.stopping and not process.trap_exits:
            # The node is stopping: every process ends with "shutdown"
            # anyway, and a signal from a neighbour that went first must not
            # turn that into "exit".
            return
        if reason is None:
            terminate(process, ExitReason(ExitKind.KILLED, f"killed by {origin}"))
        elif process.trap_exits:
            process._deliver_down(ExitSignal(origin, reason))
        elif reason.kind != ExitKind.NORMAL:
            terminate(process, ExitReason(ExitKind.EXIT, f"{_FROM}{origin}: {_root(reason)}"))

    async def exit(self, origin: Pid, pid: Pid, reason: object) -> None:
        """See :meth:`Node.exit`."""
        if type(pid) is not Pid:
            raise TypeError(f"exit needs a Pid, got {pid!r}")
        signal = signal_reason(reason)
        transport = self.transport
        if pid.node == transport.name:
            target = self.processes.lookup(pid)
            if target is not None:
                self.signal(target, origin, signal)
        else:
            if signal is None:
                kind, detail = KILL, ""
            else:
                kind, detail = signal.kind, signal.detail
            conn = transport.connection(pid.node)
            if conn is None:
                conn = await self.transport.connection_for(pid.node)
            self._write(conn, [Kind.EXIT, origin, pid, kind, detail])
        await anyio.lowlevel.checkpoint()

    def process_exited(self, event: ProcessExited) -> None:
        """A local process ended: signal everything linked to it."""
        pid, reason = event.pid, event.reason
        linked = self._links.pop(pid.id, None)
        if not linked:
            return
        transport = self.transport
        for other in sorted(linked):
            if other.node == transport.name:
                self._remove(other, pid)
                target = self.processes.lookup(other)
                if target is not None:
                    self.signal(target, pid, reason)
            else:
                pairs = self._by_node.get(other.node)
                if pairs is not None:
                    pairs.discard((pid.id, other))
                    if not pairs:
                        del self._by_node[other.node]
                conn = transport.connection(other.node)
                if conn is not None:
                    self._write(conn, [Kind.LINK_EXIT, pid, other, reason.kind, reason.detail])

    def node_down(self, event: PeerDown) -> None:
        """The connection to ``node`` ended: every link with one of its
        processes fires (``noconnection``; ``shutdown`` if it stopped)."""
        node, reason = event.name, event.reason
        self._unlinking.pop(node, None)
        pairs = self._by_node.pop(node, None)
        if not pairs:
            return
        kind = ExitKind.SHUTDOWN if reason == NodeDownReason.SHUTDOWN else ExitKind.NOCONNECTION
        exit_reason = ExitReason(kind, f"node {node} down: {reason}")
        for local_id, other in sorted(pairs, key=lambda pair: (pair[0], pair[1])):
            linked = self._links.get(local_id)
            if linked is None:
                continue
            linked.discard(other)
            if not linked:
                del self._links[local_id]
            process = self.processes.lookup(
                Pid(self.transport.name, local_id, self.transport.creation)
            )
            if process is not None:
                self.signal(process, other, exit_reason)

    # --------------------------------------------------------------- frames

    def _write(self, conn: Connection, item: list[Any]) -> None:
        if not conn.closed:
            conn.write(self.transport.encode_frame(item))

    def _pids(
        self, conn: Connection, item: list[Any], what: str, *, current: bool = True
    ) -> tuple[Pid, Pid]:
        """Check that a frame's origin is the peer's own pid (of its current
        run, if ``current``) and its target one of ours: a peer speaks only
        for its own processes."""
        origin, target = item[1], item[2]
        if type(origin) is not Pid or origin.node != conn.peer:
            raise ValueError(f"{what} from {origin!r}, which is not a pid of {conn.peer}")
        if current and origin.creation != conn.peer_creation:
            raise ValueError(f"{what} from {origin!r}, a pid of an earlier run of {conn.peer}")
        if type(target) is not Pid or target.node != self.transport.name:
            raise ValueError(f"{what} to {target!r}, which is not a pid of this node")
        return origin, target

    def _handle_link(self, conn: Connection, item: list[Any]) -> None:
        _, _, _ = item
        origin, target = self._pids(conn, item, "LINK")
        process = self.processes.lookup(target)
        if process is None:
            # Dead, never existed, or of an earlier run of this node.
            self._write(conn, [Kind.LINK_EXIT, target, origin, ExitKind.NOPROC, ""])
            return
        if origin in self._links.get(target.id, ()):
            return  # both sides linked at once: still one link
        if (target.id, origin) in self._unlinking.get(conn.peer, ()):
            return  # sent before the peer read our UNLINK, which undoes it there
        pairs = self._by_node.get(conn.peer, ())
        if len(pairs) >= self.transport.config.max_links_per_peer:
            # Each link is memory the peer makes us hold: past the bound it
            # is misbehaving (or leaking) and loses the connection.
            self.transport.count_drop("link_limit")
            raise ValueError(f"{conn.peer} holds {len(pairs)} links here (max_links_per_peer)")
        self._add(target, origin)

    def _handle_unlink(self, conn: Connection, item: list[Any]) -> None:
        _, _, _ = item
        origin, target = self._pids(conn, item, "UNLINK", current=False)
        self._remove(target, origin)
        self._write(conn, [Kind.UNLINK_ACK, target, origin])

    def _handle_unlink_ack(self, conn: Connection, item: list[Any]) -> None:
        _, acked_by, unlinker = item
        if type(acked_by) is not Pid or acked_by.node != conn.peer:
            raise ValueError(f"UNLINK_ACK from {acked_by!r}, which is not a pid of {conn.peer}")
        if type(unlinker) is not Pid or unlinker.node != self.transport.name:
            raise ValueError(f"UNLINK_ACK to {unlinker!r}, which is not a pid of this node")
        pending = self._unlinking.get(conn.peer)
        key = (unlinker.id, acked_by)
        if pending is None or key not in pending:
            return  # for an UNLINK of an earlier connection, or a double ack
        pending[key] -= 1
        if not pending[key]:
            del pending[key]
            if not pending:
                del self._unlinking[conn.peer]

    def _reason(self, kind: object, detail: object) -> ExitReason:
        if not isinstance(kind, str) or not isinstance(detail, str):
            raise TypeError("an exit signal needs a str kind and a str detail")
        return ExitReason(kind, detail)  # ValueError for an unknown kind

    def _handle_link_exit(self, conn: Connection, item: list[Any]) -> None:
        _, _, _, kind, detail = item
        # The noproc answer to a link with a pid of the peer's earlier run
        # comes from that pid; it only acts on a link this node made.
        origin, target = self._pids(conn, item, "LINK_EXIT", current=False)
        reason = self._reason(kind, detail)
        if not self._remove(target, origin):
            return  # unlinked meanwhile (or fired already): nothing to deliver
        process = self.processes.lookup(target)
        if process is not None:
            self.signal(process, origin, reason)

    def _handle_exit(self, conn: Connection, item: list[Any]) -> None:
        _, _, _, kind, detail = item
        origin, target = self._pids(conn, item, "EXIT")
        reason = None if kind == KILL and detail == "" else self._reason(kind, detail)
        process = self.processes.lookup(target)
        if process is not None:
            self.signal(process, origin, reason)

    # ------------------------------------------------------------ inspection

    def count(self) -> int:
        """Links held by this node's processes (a link between two local
        processes counts twice: once per side)."""
        return sum(len(pids) for pids in self._links.values())

    def sizes(self) -> dict[str, int]:
        """The size of each table, for statistics and leak checks."""
        return {
            "linked_pids": len(self._links),
            "links": self.count(),
            "remote": sum(len(pairs) for pairs in self._by_node.values()),
            "peers": len(self._by_node),
            "unlinking": sum(len(pairs) for pairs in self._unlinking.values()),
        }
