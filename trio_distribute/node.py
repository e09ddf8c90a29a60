"""The node: a task group that owns a listener, its connections and (in
later capabilities) every process and service.

``open_node`` is the only way to get one; leaving its ``async with`` block
says goodbye to every peer (they see ``NodeDown(reason="shutdown")``) and
stops everything the node started.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from ._calls import Calls
from ._cookie import check_cookie_strength, cookie_keys
from ._events import Subscribers
from ._ids import Pid, validate_cookie, validate_node_name
from ._links import Links
from ._monitors import Monitors
from ._network import REAL_NETWORK, Network
from ._node_events import NodeEventBus, PeerDown, PeerUp
from ._proto.kinds import Kind
from .cluster.health import Health
from .cluster.membership import Membership, member_snapshot_file
from .config import NodeConfig
from .discovery import Discovery, run_discovery, split_seeds
from .election.raft_lite import Election
from .errors import ConnectError, NodeDownError
from .groups import Groups
from .messaging import HostedProcess, Process, Processes, current_process
from .monitor import ExitReason, NodeDown, NodeDownReason, NodeEvent, NodeUp, ProcessDown
from .registry import Registry
from .remote_call import Rpc
from .telemetry import Telemetry
from .transport import Connection, Transport

__all__ = ["Node", "NodeStatistics", "open_node"]

logger = logging.getLogger("trio_distribute.node")

#: Events a ``monitor_nodes`` subscriber may fall behind by before further
#: events for it are dropped (and counted as ``monitor_overflow``).
MONITOR_BUFFER = 1024


@attrs.frozen
class NodeStatistics:
    """A snapshot of a node's traffic and tables (see :meth:`Node.statistics`).

    Attributes:
        connections: peers currently connected.
        bytes_in, bytes_out: bytes read and written on all connections,
            closed ones included.
        messages_in, messages_out: frames read and written (ticks excluded
            on the way out).
        drops: dropped frames, messages, events and connections, by cause.
        pending_handshakes: incoming connections not yet authenticated.
        processes: live processes on this node.
        monitors: process monitors held or served.
        mailbox_depths: queued messages per process, for non-empty mailboxes.
        links: links held by this node's processes (one between two local
            processes counts twice, once per side).
        calls: calls this node's processes wait on plus calls from other
            nodes waiting for a reply from this node's processes.
    """

    connections: int
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    drops: Mapping[str, int]
    pending_handshakes: int
    processes: int
    monitors: int
    mailbox_depths: Mapping[Pid, int]
    links: int = 0
    calls: int = 0


@attrs.define(eq=False, kw_only=True)
class _PendingPing:
    conn: Connection
    done: anyio.Event = attrs.field(factory=anyio.Event)
    answered: bool = False


@attrs.define(eq=False, kw_only=True)
class Node:
    """A running node. Get one from :func:`open_node`."""

    name: str
    creation: int
    config: NodeConfig
    _transport: Transport
    _processes: Processes
    _monitors: Monitors
    _links: Links
    _calls: Calls
    groups: Groups
    registry: Registry
    rpc: Rpc
    membership: Membership
    election: Election
    health: Health
    telemetry: Telemetry
    _events: NodeEventBus
    _node_monitors: Subscribers[NodeEvent]
    _task_group: anyio.abc.TaskGroup | None = None
    _pings: dict[int, _PendingPing] = attrs.field(factory=dict)
    _ping_seq: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def __repr__(self) -> str:
        # Short on purpose: attrs' default would walk the whole node graph
        # (about a megabyte, the cookie among it) into every %r log line.
        if self._transport.stopping:
            return f"<Node {self.name}: stopped>"
        peers = len(self._transport.peers())
        return f"<Node {self.name}: {peers} peer{'' if peers == 1 else 's'}>"

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the listener is actually bound to."""
        return self._transport.address

    @property
    def transport(self) -> Transport:
        """The shared transport every subsystem sends through."""
        return self._transport

    # ------------------------------------------------------------ connections

    async def connect(self, target: str) -> str:
        """Connect to another node and return its name.

        Args:
            target: ``"name@host:port"``, ``"host:port"``, or the name of a
                node whose address this node already knows.

        Returns at once if already connected. Cancelling it abandons the
        attempt. It also ends a :meth:`disconnect` of that node.

        Raises:
            ValueError: ``target`` is not one of the forms above.
            AuthenticationError: the peer does not share our cookie.
            VersionMismatchError: no common protocol version.
            HandshakeError: the handshake failed for another reason.
            ConnectError: refused, unreachable or timed out.
        """
        return await self._transport.connect(target, explicit=True)

    async def disconnect(self, name: str) -> None:
        """Close the connection to ``name``; both sides see
        ``NodeDown(reason="disconnect")``.

        The disconnect sticks: membership does not redial it, and
        :meth:`ping` and :meth:`send` raise ``NodeDownError``, until
        :meth:`connect` is called for it again (on either side) or the peer
        restarts; ``membership.remove(name)`` forgets it. The goodbye is
        flushed for at most ``config.shutdown_timeout`` seconds."""
        await self._transport.disconnect(name)

    def nodes(self) -> list[str]:
        """Names of the nodes connected now, sorted."""
        return self._transport.peers()

    async def ping(self, name: str, timeout: float = 5.0) -> float:
        """Measure a round trip to ``name`` over its connection, in seconds.

        Connects first if ``name`` is known but not connected (not if it was
        disconnected on purpose).

        Raises:
            NodeDownError: not connected (and cannot connect), went down
                meanwhile, or no answer within ``timeout``.
        """
        try:
            with anyio.fail_after(timeout):
                conn = await self._transport.connection_for(name)
        except TimeoutError:
            raise NodeDownError(name, f"cannot connect: timed out after {timeout}s") from None
        seq = next(self._ping_seq)
        pending = _PendingPing(conn=conn)
        self._pings[seq] = pending
        started = anyio.current_time()
        try:
            conn.write(self._transport.encode_frame([Kind.PING, seq]))
            with anyio.move_on_after(timeout):
                await pending.done.wait()
        finally:
            # Already gone if the node went down meanwhile (_node_down).
            self._pings.pop(seq, None)
        if not pending.answered:
            if conn.closed:
                raise NodeDownError(name, conn.down_reason or "connection closed")
            raise NodeDownError(name, f"no answer to ping within {timeout}s")
        return anyio.current_time() - started

    def _handle_ping(self, conn: Connection, item: list[Any]) -> None:
        seq = item[1]
        if type(seq) is not int:
            raise TypeError("ping sequence must be an int")
        conn.write(self._transport.encode_frame([Kind.PONG, seq]))

    def _handle_pong(self, conn: Connection, item: list[Any]) -> None:
        pending = self._pings.get(item[1])
        if pending is not None and pending.conn is conn:
            pending.answered = True
            pending.done.set()

    # ---------------------------------------------------------------- events

    def monitor_nodes(self) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[NodeEvent]]:
        """Subscribe to :class:`NodeUp` / :class:`NodeDown` events.

        Yields a receive channel; leaving the block unsubscribes. Events
        from before the block are not replayed. A subscriber that falls
        more than ``MONITOR_BUFFER`` events behind loses the newer ones,
        counted in ``statistics().drops["monitor_overflow"]``.
        """
        return self._node_monitors.subscribe()

    def _publish(self, event: NodeEvent) -> None:
        self._node_monitors.publish(event)

    def __attrs_post_init__(self) -> None:
        # The node is built last, so it hears of a peer after every service
        # has: monitors, links and calls fire before the public NodeDown, as
        # in Erlang.
        self._events.subscribe(PeerUp, self._node_up)
        self._events.subscribe(PeerDown, self._node_down)

    def _node_up(self, event: PeerUp) -> None:
        logger.info("%s: node up %s", self.name, event.name)
        self._publish(NodeUp(event.name))

    def _node_down(self, event: PeerDown) -> None:
        name, reason = event.name, event.reason
        logger.info("%s: node down %s (%s)", self.name, name, reason)
        for seq, pending in list(self._pings.items()):
            if pending.conn.peer == name:
                pending.done.set()
                del self._pings[seq]
        self._publish(NodeDown(name, reason))

    def status_report(self) -> dict[str, Any]:
        """Members, leader and health as plain values (what the ``status``
        command shows; every node exports it by RPC as
        ``"trio_distribute.status"``)."""
        report: dict[str, Any] = {"node": self.name, "connections": self.nodes()}
        if self.membership.enabled:
            report["members"] = [
                {
                    "name": health.name,
                    "status": None if health.status is None else health.status.value,
                    "incarnation": health.incarnation,
                    "rtt": health.last_rtt,
                    "connected": health.connected,
                }
                for health in (
                    self.health.node(member.name) for member in self.membership.members()
                )
            ]
        cluster = self.health.cluster()
        report["health"] = {
            "alive": cluster.alive,
            "suspect": cluster.suspect,
            "dead": cluster.dead,
            "left": cluster.left,
            "has_quorum": cluster.has_quorum,
            "leader": cluster.leader,
            "term": cluster.term,
            "health_multiplier": cluster.health_multiplier,
            "healthy": self.health.is_healthy(),
        }
        return report

    # ------------------------------------------------------------ statistics

    def statistics(self) -> NodeStatistics:
        """A frozen snapshot of traffic counters and drops."""
        transport = self._transport
        bytes_in, bytes_out, frames_in, frames_out = transport.closed_totals
        for conn in transport.all_connections():
            bytes_in += conn.bytes_in
            bytes_out += conn.bytes_out
            frames_in += conn.frames_in
            frames_out += conn.frames_out
        return NodeStatistics(
            connections=len(transport.peers()),
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            messages_in=frames_in,
            messages_out=frames_out,
            drops=self._drops(),
            pending_handshakes=transport.pending_handshakes,
            processes=self._processes.count(),
            monitors=self._monitors.count(),
            mailbox_depths=self._processes.mailbox_depths(),
            links=self._links.count(),
            calls=self._calls.sizes()["pending"] + self._calls.sizes()["serving"],
        )

    def _drops(self) -> dict[str, int]:
        drops = dict(self._transport.drops)
        # Counted by the kernel, read when asked: datagrams it had no room
        # for while the event loop was busy.
        kernel = self.membership.datagrams_dropped_by_kernel
        if kernel:
            drops["datagram_receive_buffer_full"] = kernel
        return drops

    # ------------------------------------------------------------- processes

    def open_process(self, name: str | None = None) -> AbstractAsyncContextManager[Process]:
        """A process for the current task: a pid and a mailbox.

        ``name``, if given, registers it locally (``send("name", msg)``).
        Leaving the block ends the process with reason ``normal``, or with
        the exception that escaped. Monitors fire as it ends.

        Raises:
            ValueError: the name is invalid or already registered here.
        """
        return self._processes.open_process(name)

    async def spawn(
        self,
        fn: Callable[..., Awaitable[object]],
        *args: Any,
        name: str | None = None,
        link: bool = False,
    ) -> Pid:
        """Run ``await fn(process, *args)`` as a new process in the node's
        task group and return its pid once it exists.

        An exception escaping ``fn`` ends the process (monitors see kind
        ``exception`` with the type and message) and is logged; the node
        keeps running. The node's stop cancels it (kind ``shutdown``).

        ``link=True`` links the new process to the calling task's process
        before ``fn`` starts (Erlang's ``spawn_link``): the child cannot
        end unlinked.

        Raises:
            RuntimeError: ``link=True`` outside a process (or from one that
                has ended).
            ValueError: ``name`` is invalid or already registered here.
        """
        return await self._processes.spawn(fn, *args, name=name, link=link)

    async def exit(self, pid: Pid, reason: str | ExitReason) -> None:
        """Send an exit signal to ``pid``, on any node (Erlang's ``exit/2``).

        It comes from the calling task's process, or from the node itself
        (the pid with id 0) when called outside a process. ``reason`` is an
        :class:`ExitReason` or a string: ``"kill"`` ends the target even if
        it traps exits (kind ``killed``); ``"normal"`` is ignored unless the
        target traps exits; the name of another exit kind (``"shutdown"``)
        is that kind; any other string ``s`` is ``ExitReason("exit", s)``.
        A target that traps exits gets an :class:`ExitSignal`; any other
        ends with kind ``exit``. A signal to a dead pid does nothing.

        Raises:
            TypeError: ``pid`` is not a Pid, or ``reason`` not a str or an
                ExitReason.
            ValueError: ``reason`` is an empty string.
            NodeDownError: the pid's node is not connected and cannot be
                reached.
        """
        process = current_process()
        origin = Pid(self.name, 0, self.creation) if process is None else process.pid
        await self._links.exit(origin, pid, reason)

    async def send(self, dest: Pid | str | tuple[str, str], message: Any) -> None:
        """Send ``message`` to ``dest``: fire and forget, like Erlang's ``!``.

        ``dest`` is a :class:`Pid`, the name of a process registered on this
        node, or ``(name, node_name)``. Messages from one sender to one
        process arrive in order while the connection stays up. A message to
        a dead pid, or to ``(name, node)`` where nothing has that name, is
        dropped and counted. Yields to the scheduler only now and then, or
        when the connection's send buffer is full (backpressure).

        Raises:
            NameNotFoundError: ``dest`` is a local name nobody registered.
            NodeDownError: the node is not connected and cannot be reached.
            EncodeError: ``message`` holds a value that cannot travel.
            MessageTooLargeError: it encodes to more than ``max_message_size``.
        """
        await self._processes.send(dest, message)

    def whereis(self, name: str) -> Pid | None:
        """The pid registered on this node under ``name``, if any."""
        return self._processes.whereis(name)

    async def send_global(self, name: str, message: Any) -> None:
        """Send ``message`` to the process registered globally as ``name``.

        Raises:
            NameNotFoundError: the name is not registered (in this node's
                replica of the registry).
        """
        await self.registry.send(name, message)

    # -------------------------------------------------------------- monitors

    @asynccontextmanager
    async def monitor(self, pid: Pid) -> AsyncIterator[MemoryObjectReceiveStream[ProcessDown]]:
        """Watch ``pid``: the channel delivers exactly one :class:`ProcessDown`.

        Connects to the pid's node first if it is known but not connected;
        if that fails the event (``noconnection``) is there at once.
        Leaving the block demonitors.
        """
        if pid.node != self.name:
            with contextlib.suppress(NodeDownError):  # the watch reports noconnection
                await self._transport.connection_for(pid.node)
        send, receive = anyio.create_memory_object_stream[ProcessDown](1)
        ref = self._monitors.watch(pid, send.send_nowait)
        try:
            yield receive
        finally:
            self._monitors.unwatch(ref)
            send.close()
            receive.close()


def crash(node: Node) -> None:
    """Stop ``node`` the way a killed OS process stops: every connection is
    dropped without a goodbye, membership falls silent, and every task of
    the node is cancelled (so is the body of its ``open_node`` block).
    Peers see ``connection_closed`` and, later, the member declared dead.
    For tests: :func:`trio_distribute.testing.crash`."""
    transport = node._transport
    transport.stopping = True
    for conn in transport.all_connections():
        conn.close(NodeDownReason.CONNECTION_CLOSED)
    if node._task_group is not None:
        node._task_group.cancel_scope.cancel()


def _fresh_creation(rng: random.Random) -> int:
    # Like Erlang's 32-bit creation: a new random value per start makes a
    # pid from an earlier run of the same name recognisably stale.
    return rng.randrange(2**32 - 1) + 1


@asynccontextmanager
async def open_node(
    name: str,
    *,
    cookie: str | bytes,
    port: int = 0,
    host: str | None = None,
    config: NodeConfig | None = None,
    ssl_context: ssl.SSLContext | None = None,
    client_ssl_context: ssl.SSLContext | None = None,
    seeds: Iterable[str | Discovery] = (),
    network: Network | None = None,
) -> AsyncIterator[Node]:
    """Start a node named ``name`` (``"short@host"``) and yield it.

    Args:
        name: the node's name; other nodes address it by this.
        cookie: the shared secret; only nodes with the same cookie connect.
        port: TCP port to listen on; 0 picks a free one (see ``node.address``).
        host: interface to bind; defaults to the host part of ``name``.
        config: a :class:`NodeConfig`; defaults to ``NodeConfig()``.
        ssl_context: enables TLS on every connection (the cookie check
            still runs inside it). This is the server-side context used for
            accepted connections; for mutual TLS load a certificate chain
            and set ``verify_mode = CERT_REQUIRED``.
        client_ssl_context: the context for connections this node dials
            (with its own certificate for mutual TLS); defaults to
            ``ssl_context``, which then must be usable on both sides.
        seeds: nodes (``"name@host:port"`` or ``"host:port"``) to connect to
            on start; failures are logged, not raised. Also discovery
            strategies, polled for the node's lifetime: ``"dns:NAME:PORT"``,
            ``"dns-srv:_service._tcp.NAME"``, ``"file:PATH"`` or any
            :class:`~trio_distribute.discovery.Discovery`.
        network: where the node listens, dials and sends datagrams; the
            operating system's TCP/UDP by default, or a
            :class:`trio_distribute.testing.FakeNetwork` for a simulated one.

    Raises:
        ValueError: ``name``, ``cookie`` or ``port`` is invalid.
        OSError: the port cannot be bound.
    """
    validate_node_name(name)
    secret = validate_cookie(cookie)
    # Stretch the cookie into the handshake and datagram keys now (scrypt,
    # cached per cookie in the process) rather than on the first
    # connection, and say so if the cookie is easy to guess.
    check_cookie_strength(secret, name)
    cookie_keys(secret)
    if type(port) is not int or not 0 <= port < 65536:
        raise ValueError(f"port must be an int in 0..65535, got {port!r}")
    config = NodeConfig() if config is None else config
    plain_seeds, strategies = split_seeds(seeds)
    bind_host = name.partition("@")[2] if host is None else host
    try:
        async with anyio.create_task_group() as task_group:
            node = _build_node(
                name, secret, config, ssl_context, client_ssl_context, network or REAL_NETWORK
            )
            node._task_group = task_group
            await node.transport.start(task_group, bind_host, port)
            # From here on connections may exist; they end only through
            # transport.stop() (goodbye, bounded by shutdown_timeout), so it
            # runs however this block is left, start-up failures included.
            try:
                node._processes.start(task_group)
                await node.telemetry.start(task_group, node.membership, node.election)
                node._monitors.start()
                node._links.start()
                node._calls.start()
                node.groups.start()
                node.registry.start()
                node.rpc.start(task_group)
                node.membership.load_snapshot()
                await node.membership.start(task_group, _advertised_host(name, node.address[0]))
                node.election.start(task_group)
                await _join_seeds(node, plain_seeds)
                for strategy in strategies:
                    task_group.start_soon(run_discovery, node.transport, strategy)
                yield node
            finally:
                with anyio.CancelScope(shield=True):
                    await node.transport.stop()
                task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The task group wraps even a lone error from the block's body;
        # give the caller the error they raised, not a group of one.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def _advertised_host(name: str, bound: str) -> str:
    # A wildcard bind is not an address others can reach: use the name's host.
    return name.partition("@")[2] if bound in ("0.0.0.0", "::", "") else bound


async def _join_seeds(node: Node, seeds: list[str]) -> None:
    """Join through ``seeds``: once now, then, until a seed is a member
    this node knows, again in the background with exponential backoff and
    jitter (from 1/32 of ``membership.reconnect_interval`` doubling up to
    it). Start order does not matter. Until it has joined (or others joined
    it), the node does not bootstrap an election of its own."""
    if not seeds:
        return
    election = node.election
    if election.enabled:
        election.joining(True)
    pending = list(seeds)

    def seed_known() -> bool:
        """Joined: a seed is a member we know. Not "we know someone": once
        others joined through us, those we know say nothing of the seeds'
        cluster (two clusters of hundreds formed that way when the exchange
        with the seed was lost under load, and never met)."""
        return any(node.membership.knows_address(seed) for seed in pending)

    async def attempt() -> bool:
        membership = node.membership
        if membership.enabled:
            try:
                await membership.join(pending)
            except (ConnectError, ValueError) as exc:
                logger.warning("%s: could not join any seed of %s: %s", node.name, pending, exc)
                return False
            # Reaching a seed is not joining: the state exchange can be lost
            # with a connection that closes at once (two nodes dialling each
            # other, or a seed too busy to answer).
            with anyio.move_on_after(node.transport.config.handshake_timeout):
                while not seed_known():  # noqa: ASYNC110
                    await anyio.sleep(node.transport.config.membership.gossip_interval)
            if not seed_known():
                logger.warning("%s: reached a seed of %s but learned no member", node.name, pending)
                return False
            pending.clear()
        else:
            for seed in list(pending):
                try:
                    await node.connect(seed)
                except (ConnectError, ValueError) as exc:
                    logger.warning("%s: could not join seed %s: %s", node.name, seed, exc)
                else:
                    pending.remove(seed)
        if pending:
            return False
        if election.enabled:
            election.joining(False)
        return True

    if await attempt():
        return
    cap = node.transport.config.membership.reconnect_interval
    rng = node.transport.network.random()

    async def keep_trying() -> None:
        held = True  # not yet part of any cluster: the election waits (see above)
        delay = cap / 32
        while True:
            # Full jitter in [delay/2, delay): nodes started together do not
            # retry in lockstep.
            wait = rng.uniform(delay / 2, delay)
            logger.info("%s: retrying seeds %s in %.2f s", node.name, pending, wait)
            await anyio.sleep(wait)
            membership = node.membership
            if membership.enabled and len(membership.core.members()) > 1:
                # Someone joined us meanwhile: we are part of a cluster, and
                # may bootstrap with it. But it may not be the seeds' cluster
                # (nodes started together: our seed was not up yet when we
                # tried, and others joined through us), so the seeds are
                # tried until one of them is a member we know.
                if held:
                    held = False
                    if election.enabled:
                        election.joining(False)
                    logger.info("%s: joined by another member", node.name)
                if seed_known():
                    pending.clear()
                    return
            if await attempt():
                logger.info("%s: joined through the seeds", node.name)
                return
            delay = min(cap, delay * 2)

    assert node._task_group is not None
    node._task_group.start_soon(keep_trying)


def host_process(node: Node, name: str | None) -> HostedProcess:
    """A new process of ``node`` whose task the caller runs in its own task
    group: what a supervisor needs of the process table to run a child.

    Raises:
        ValueError: ``name`` is invalid or already registered.
    """
    return node._processes.host(name)


def _build_node(
    name: str,
    cookie: bytes,
    config: NodeConfig,
    ssl_context: ssl.SSLContext | None,
    client_ssl_context: ssl.SSLContext | None,
    network: Network,
) -> Node:
    attached = network.attach(name)
    creation = _fresh_creation(attached.random())
    # Built in dependency order, each service with the event bus it
    # publishes on and subscribes to; the order of construction is the
    # order in which services hear of a peer or a process going down.
    events = NodeEventBus()
    transport = Transport(
        name=name,
        creation=creation,
        cookie=cookie,
        config=config,
        ssl_context=ssl_context,
        client_ssl_context=client_ssl_context,
        network=attached,
        events=events,
    )
    processes = Processes(transport=transport, events=events)
    groups = Groups(transport=transport, processes=processes, events=events)
    registry = Registry(transport=transport, processes=processes, events=events)
    rpc = Rpc(
        transport=transport,
        processes=processes,
        events=events,
        allow_any_module=config.allow_any_module,
    )
    membership = Membership(
        transport=transport,
        events=events,
        config=config.membership,
        cookie=cookie,
        metadata=config.metadata,
        connect_all=config.connect_all,
        snapshot=None if config.state_dir is None else member_snapshot_file(config.state_dir, name),
    )
    election = Election(
        transport=transport,
        events=events,
        membership=membership,
        config=config.election,
        state_dir=config.state_dir,
    )
    node = Node(
        events=events,
        node_monitors=Subscribers[NodeEvent](
            MONITOR_BUFFER, lambda: transport.count_drop("monitor_overflow")
        ),
        name=name,
        creation=creation,
        config=config,
        transport=transport,
        processes=processes,
        monitors=processes.monitors,
        links=processes.links,
        calls=processes.calls,
        groups=groups,
        registry=registry,
        rpc=rpc,
        membership=membership,
        election=election,
        health=Health(transport=transport, membership=membership, election=election),
        telemetry=Telemetry(transport=transport),
    )
    rpc.export(node.status_report, name="trio_distribute.status")
    transport.add_handler(Kind.PING, node._handle_ping)
    transport.add_handler(Kind.PONG, node._handle_pong)
    return node
