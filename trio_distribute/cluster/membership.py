"""SWIM membership: the driver that runs the sans-IO core on a node.

The protocol lives in :mod:`trio_distribute._proto.swim`; this module feeds
it datagrams (UDP on the node's port, authenticated by
:mod:`~trio_distribute.cluster.gossip`), stream messages (frames on the
node's TCP connections: push-pull anti-entropy and the fallback probe) and
the time, and carries out what it asks for. One task runs the core's
timers; the task that receives datagrams answers them itself (a datagram
costs one task wake-up, not two). The core is plain synchronous code, so
no two calls into it interleave, and one flag lets a single task send at a
time.

How membership meets the rest of the node:

* Connecting to a node (``node.connect``) joins its cluster: the dialler
  exchanges full state with it, and both learn every member.
* A member declared dead (or that left) is disconnected, so monitors,
  registry and groups react through the one node-down path (reason
  ``member_dead`` / ``member_left``).
* With ``NodeConfig.connect_all`` (the default) a node connects to every
  member that comes up (full mesh, like Erlang) and keeps it so: a live
  member it is not connected to (a reset, a cut shorter than failure
  detection) is redialled with capped exponential backoff and jitter
  (``redial_min_interval`` .. ``redial_max_interval``) until connected or
  no longer alive; at most ``max_mesh_dials`` dials run at once. A peer
  the user disconnected is the exception: it stays disconnected until the
  user connects again or it restarts.
* Streams to live members go over existing connections; membership dials
  only seed addresses and dead members (healing).
* With ``NodeConfig.state_dir`` the addresses of known members are kept in
  a snapshot file (as serf does); a restarted node rejoins them, so it finds
  its cluster (and its leader) without being given seeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import zlib
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from .._addresses import split_address
from .._events import Subscribers
from .._network import DatagramEndpoint, datagrams_dropped
from .._node_events import MembersChanged, NodeEventBus, PeerAddress, PeerDown
from .._proto.kinds import Kind
from .._proto.swim import (
    DEFAULT_DATAGRAM_BUDGET,
    Member,
    MemberChange,
    MemberStatus,
    SendDatagram,
    SendStream,
    SwimCore,
    SwimDecodeError,
)
from .._ratelimit import LogLimiter
from .._state_dir import read_state, safe_file_name, write_atomic
from ..config import MembershipConfig
from ..errors import ConnectError
from ..monitor import NodeDownReason
from ..transport import Connection, Transport
from .gossip import DatagramSealer

__all__ = [
    "Member",
    "MemberDown",
    "MemberEvent",
    "MemberLeft",
    "MemberStatus",
    "MemberSuspect",
    "MemberUp",
    "Membership",
]

logger = logging.getLogger("trio_distribute.membership")

#: Events a subscriber may fall behind by before newer ones are dropped
#: (counted as ``membership_subscriber_overflow``).
SUBSCRIBER_BUFFER: Final = 1024
#: Stream sends (push-pull, fallback pings, joins) in flight at once; more
#: fail at once, as memberlist caps concurrent push-pulls.
MAX_STREAMS_IN_FLIGHT: Final = 128
#: Scheduling rounds the driver yields at most, before it runs the core's
#: timers, for the datagrams already waiting to be read (it stops sooner,
#: after two rounds that bring none).
DRAIN_ROUNDS: Final = 16
#: Pause after the membership socket fails to receive, so an error that
#: repeats does not spin the loop.
RECEIVE_ERROR_DELAY: Final = 0.05


@attrs.frozen
class MemberUp:
    """A member joined, or came back after being declared dead."""

    name: str
    address: str
    incarnation: int
    metadata: bytes


@attrs.frozen
class MemberSuspect:
    """A member did not answer probes; it is dead unless it refutes in time."""

    name: str
    incarnation: int


@attrs.frozen
class MemberDown:
    """A member was declared dead (its node is disconnected)."""

    name: str
    incarnation: int


@attrs.frozen
class MemberLeft:
    """A member left gracefully."""

    name: str
    incarnation: int


MemberEvent = MemberUp | MemberSuspect | MemberDown | MemberLeft


def _event_for(change: MemberChange) -> MemberEvent | None:
    member, previous = change.member, change.previous
    status = member.status
    if status is MemberStatus.ALIVE:
        if previous is MemberStatus.SUSPECT:
            return None  # a refuted suspicion: it never went away
        # previous ALIVE (an address or metadata update) still makes one for
        # _act_on, which dials the member if it is not connected; _publish
        # keeps it from subscribers.
        return MemberUp(member.name, member.address, member.incarnation, member.metadata)
    if status is previous:
        return None  # an update of a suspect or dead member
    if status is MemberStatus.SUSPECT:
        return MemberSuspect(member.name, member.incarnation)
    if status is MemberStatus.DEAD:
        return MemberDown(member.name, member.incarnation)
    return MemberLeft(member.name, member.incarnation)


def member_snapshot_file(state_dir: Path, name: str) -> Path:
    """Where the node ``name`` keeps the addresses of the members it knows."""
    return state_dir / f"members-{safe_file_name(name)}.json"


def load_snapshot(path: Path) -> dict[str, str]:
    """``{name: address}`` of the members a previous run knew (empty if none
    or unreadable)."""
    try:
        raw = read_state(path)
        if raw is None:
            return {}
        data = json.loads(raw)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        logger.warning("ignoring an unreadable member snapshot %s: %s", path, exc)
        return {}
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in members.items()
    ):
        logger.warning("ignoring a malformed member snapshot %s", path)
        return {}
    return members


def save_snapshot(path: Path, members: dict[str, str]) -> None:
    """Replace the snapshot atomically and durably (a crash leaves the old or
    the new one)."""
    write_atomic(path, json.dumps({"members": members}, sort_keys=True).encode())


@attrs.define(eq=False, kw_only=True)
class StallClock:
    """The membership protocol's time: real time less the time the event
    loop lost to starvation.

    The driver sleeps until the core's next deadline. When it (or the
    receiver, whichever runs first) finds itself more than ``threshold``
    seconds past that deadline, the loop was starved (CPU-bound work, a
    loaded machine, a stopped process): the acks its probes were waiting
    for may sit unread in the socket, and a peer on the same starved loop
    could not answer at all. The whole delay is then taken off the
    protocol's clock, so the core sees its timer fire on time and every
    window it was judging (a probe's timeout, a suspicion) gets the live
    time it was promised. Protocol time still advances by at least one
    deadline per wake-up, so a node that is always late judges slowly, but
    it does judge.
    """

    threshold: float
    #: Seconds taken off real time so far.
    offset: float = 0.0
    #: The protocol deadline the driver sleeps until, and the real time
    #: that is (both inf while it runs or has no deadline): a caller later
    #: than ``due`` by more than ``threshold`` found a stall.
    deadline: float = math.inf
    due: float = math.inf
    #: Protocol time never goes back, and once a deadline has come it is
    #: not before it (real minus offset can round below it by a hair).
    floor: float = -math.inf
    #: Stalls found, and the seconds they took off the clock.
    stalls: int = 0
    lost: float = 0.0

    def now(self, real: float) -> tuple[float, bool]:
        """Protocol time at real time ``real``, and whether a stall was
        found (counted once: the driver re-arms)."""
        stalled = False
        if real >= self.due:
            late = real - self.due
            if late > self.threshold:
                self.offset += late
                self.lost += late
                self.stalls += 1
                stalled = True
            self.floor = max(self.floor, self.deadline)
            self.deadline = self.due = math.inf
        now = max(real - self.offset, self.floor)
        self.floor = now
        return now, stalled

    def arm(self, deadline: float | None) -> float:
        """The driver sleeps until the protocol time ``deadline``: the real
        time to wake at."""
        if deadline is None:
            self.deadline = self.due = math.inf
        else:
            self.deadline = deadline
            self.due = deadline + self.offset
        return self.due


def dials_first(own: str, other: str) -> bool:
    """Of the nodes ``own`` and ``other``, is ``own`` the one that dials when
    the full mesh needs a connection between them? Exactly one of the two
    does (both compute the same answer); the other dials only if no
    connection came after ``handshake_timeout``. Two nodes that meet then
    make one handshake instead of two crossing ones, and in a join storm
    each node dials about half of the others (the choice is a hash of the
    two names, not their order, which would leave one node all the work)."""
    low, high = (own, other) if own < other else (other, own)
    flip = zlib.crc32(f"{low}\0{high}".encode()) & 1
    return own == (low if flip else high)


@attrs.define(eq=False, kw_only=True)
class Membership:
    """A node's SWIM membership: ``node.membership``."""

    transport: Transport
    events: NodeEventBus
    config: MembershipConfig
    cookie: bytes = attrs.field(repr=False)
    metadata: bytes = b""
    connect_all: bool = True
    _core: SwimCore | None = None
    _socket: DatagramEndpoint | None = None
    _sealer: DatagramSealer | None = None
    _task_group: anyio.abc.TaskGroup | None = None
    _wakeup: anyio.Event = attrs.field(factory=anyio.Event)
    _subscribers: Subscribers[MemberEvent] = attrs.field(
        default=attrs.Factory(
            lambda self: Subscribers[MemberEvent](
                SUBSCRIBER_BUFFER,
                lambda: self.transport.count_drop("membership_subscriber_overflow"),
            ),
            takes_self=True,
        )
    )
    _streams_in_flight: int = 0
    _names_by_address: dict[str, str] = attrs.field(factory=dict)
    # Who answered at each address given to join(), as given (one entry
    # per seed the user named).
    _seed_names: dict[str, str] = attrs.field(factory=dict)
    _stopped: bool = False
    #: The driver's sleep while it waits for the core's next deadline (None
    #: while it runs), and whether a flush is under way: the receiver
    #: answers a datagram itself and moves that sleep's deadline to the
    #: core's new one, so the driver wakes only when a timer is due.
    _sleep: anyio.CancelScope | None = None
    _sending: bool = False
    #: Where the addresses of known members are kept (``state_dir``), so a
    #: restarted node rejoins its cluster without being given seeds.
    snapshot: Path | None = None
    #: ``{name: (time of the next redial, current backoff)}`` for live
    #: members we are not connected to (``connect_all``).
    _redial: dict[str, tuple[float, float]] = attrs.field(factory=dict)
    _redialling: set[str] = attrs.field(factory=set)
    #: ``{name: address}`` of live (alive or suspect) members other than
    #: this node, kept from membership events: the mesh scans it without
    #: building a snapshot of every member.
    _live_members: dict[str, str] = attrs.field(factory=dict)
    _mesh_wakeup: anyio.Event = attrs.field(factory=anyio.Event)
    # From the network: unpredictable on a real one, seeded on a simulated one.
    _rng: random.Random = attrs.field(
        default=attrs.Factory(lambda self: self.transport.network.random(), takes_self=True)
    )
    _log_limiter: LogLimiter = attrs.field(factory=lambda: LogLimiter(logger))
    #: ``{name: address}`` from the snapshot at start: the cluster this node
    #: belonged to before it restarted (the election counts them as voters).
    remembered: dict[str, str] = attrs.field(factory=dict)
    _snapshot_saved: dict[str, str] = attrs.field(factory=dict)
    #: Protocol time (real time less what starvation took, see StallClock).
    _clock: StallClock = attrs.field(
        default=attrs.Factory(
            lambda self: StallClock(threshold=self.config.stall_threshold), takes_self=True
        )
    )
    #: Datagrams and stream messages handed to the core so far, and whether
    #: the receiver is waiting on the socket: the driver reads what is
    #: waiting before it judges timeouts (see _drain).
    _heard: int = 0
    _receiver_waiting: bool = False

    def __attrs_post_init__(self) -> None:
        self.events.subscribe(PeerAddress, self._peer_address)
        self.events.subscribe(PeerDown, self.mesh_changed)

    def __repr__(self) -> str:
        if not self.enabled:
            return f"<Membership of {self.transport.name}: disabled>"
        alive = self._core.alive_count() if self._core is not None else 0
        return f"<Membership of {self.transport.name}: {alive} alive>"

    # ---------------------------------------------------------------- set-up

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def core(self) -> SwimCore:
        """The protocol state machine (for inspection and tests)."""
        if self._core is None:
            raise RuntimeError("membership is disabled on this node (MembershipConfig.enabled)")
        return self._core

    @property
    def address(self) -> str:
        """This member's ``"host:port"`` (UDP and TCP share the port)."""
        return self.core.address

    async def start(self, task_group: anyio.abc.TaskGroup, advertise_host: str) -> None:
        """Bind UDP on the node's port and start the protocol."""
        if not self.enabled:
            # Peers with membership on still send us their state: drop it.
            self.transport.add_handler(Kind.MEMBER_STREAM, self._ignore_stream)
            return
        host, port = self.transport.address
        try:
            self._socket = await self.transport.network.open_datagram(host, port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"membership cannot bind UDP {host}:{port}: {exc.strerror}"
            ) from exc
        self._sealer = DatagramSealer(self.cookie)
        self._core = SwimCore(
            name=self.transport.name,
            address=f"{advertise_host}:{port}",
            config=self.config,
            rng=random.Random(self._rng.getrandbits(64)),
            now=self._now(),
            metadata=self.metadata,
            datagram_budget=DEFAULT_DATAGRAM_BUDGET,
            # The periodic push-pull goes to a member we hold a connection
            # to (without connect_all, most members are not: a stream to
            # them would fail, and anti-entropy would repair nothing).
            stream_reachable=self.transport.is_connected,
        )
        self._task_group = task_group
        self.transport.add_handler(Kind.MEMBER_STREAM, self._handle_stream)
        task_group.start_soon(self._receive_datagrams)
        task_group.start_soon(self._drive)
        if self.connect_all:
            task_group.start_soon(self._keep_mesh)
        if self.remembered:
            task_group.start_soon(self._rejoin, sorted(set(self.remembered.values())))

    def load_snapshot(self) -> None:
        """Read the snapshot (before ``start``, so the election sees it)."""
        if self.snapshot is not None and self.enabled:
            self.remembered = load_snapshot(self.snapshot)
            self._snapshot_saved = dict(self.remembered)

    async def _rejoin(self, addresses: list[str]) -> None:
        """Rejoin the members this node knew before it restarted (serf's
        snapshot); the seeds it was given, if any, are joined as well."""
        try:
            reached = await self.join(addresses)
        except (ConnectError, ValueError) as exc:
            logger.info("%s: no member of the snapshot answered: %s", self.transport.name, exc)
        else:
            logger.info("%s: rejoined through %d known member(s)", self.transport.name, reached)

    # ----------------------------------------------------------------- query

    def members(self) -> list[Member]:
        """Every known member, this node included, sorted by name."""
        return sorted(self.core.members(), key=lambda m: m.name)

    def member(self, name: str) -> Member | None:
        """What this node knows of ``name`` (status, incarnation, metadata)."""
        return self.core.member(name)

    def members_with_status(self) -> list[tuple[str, MemberStatus, int]]:
        """``[(name, status, incarnation), ...]``, this node included, sorted."""
        return [(m.name, m.status, m.incarnation) for m in self.members()]

    def alive(self) -> list[str]:
        """Names of live members (alive or suspect: not yet declared dead),
        this node included, sorted."""
        live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
        return [m.name for m in self.members() if m.status in live]

    def knows_address(self, address: str) -> bool:
        """Whether a live member other than this node listens at
        ``address`` (``"host:port"`` or ``"name@host:port"``, as a seed is
        given; a host name given to :meth:`join` counts for the member that
        answered there)."""
        hostport = address.rpartition("@")[2]
        name = self._names_by_address.get(hostport) or self._seed_names.get(hostport)
        return name is not None and name in self._live_members

    def current_leader(self) -> str | None:
        """The lexicographically greatest live name: the seed library's
        leader. Not partition safe; use ``node.election`` for that."""
        alive = self.alive()
        return alive[-1] if alive else None

    # -------------------------------------------------------------- commands

    async def join(self, addresses: Iterable[str]) -> int:
        """Join the cluster through seed nodes (``"host:port"`` or
        ``"name@host:port"``): exchange full state with each.

        Returns how many seeds were reached. The seeds are remembered: while
        this node sees fewer members than it once did, it rejoins them.

        Raises:
            ConnectError: none of them could be reached.
            ValueError: an address is malformed.
        """
        core = self.core
        seeds = []
        for address in addresses:
            _, _, hostport = address.rpartition("@")
            split_address(hostport)
            seeds.append(hostport)
        if not seeds:
            return 0
        reached = 0
        async with anyio.create_task_group() as task_group:

            async def dial(address: str) -> None:
                nonlocal reached
                name = self._name_at(address)
                conn = await self._connection_to(address, name=name, dial=True)
                if conn is not None:
                    # The seed may listen under another name for its host
                    # (a DNS name, "localhost"): remember who answered here.
                    self._seed_names[address] = conn.peer
                    reached += 1
                    return
                # Our dial may have lost to the peer dialling us at the same
                # moment (it is reconnecting to us): its connection counts.
                with anyio.move_on_after(self.transport.config.handshake_timeout):
                    # No event marks "a connection from that address": poll.
                    while not (  # noqa: ASYNC110
                        (peer := self._name_at(address)) and self.transport.is_connected(peer)
                    ):
                        await anyio.sleep(0.05)
                    reached += 1

            for address in seeds:
                task_group.start_soon(dial, address)
        core.join(self._now(), seeds)
        self._wake()
        if not reached:
            raise ConnectError(f"could not reach any seed of {seeds}")
        return reached

    async def leave(self, timeout: float | None = None) -> None:
        """Leave gracefully: others see this node as *left*, not dead.

        Waits until the departure was gossiped as often as any news is
        (at most ``timeout`` seconds; default: three probe intervals). The
        node keeps running but no longer probes or answers as a member.
        """
        core = self.core
        core.leave(self._now())
        self._wake()
        limit = 3 * self.config.probe_interval if timeout is None else timeout
        with anyio.move_on_after(limit):
            # The core has no event for "sent often enough": poll at gossip pace.
            while not core.left_complete(self._now()):  # noqa: ASYNC110
                await anyio.sleep(self.config.gossip_interval / 2)

    async def remove(self, name: str) -> None:
        """Forget a dead or left member: it leaves the election's voter set.

        Raises:
            ValueError: ``name`` is alive or suspect (only the dead can be
                removed) or this node itself.
        """
        self.core.remove(self._now(), name)
        self.remembered.pop(name, None)
        self.transport.forget(name)
        self._redial.pop(name, None)
        self._live_members.pop(name, None)
        self.events.publish(MembersChanged(None))
        if self.snapshot is not None:
            self._save_snapshot()
        self._wake()

    def update_metadata(self, metadata: bytes) -> None:
        """Gossip new metadata for this node (at most 512 bytes)."""
        self.core.update_metadata(self._now(), metadata)
        self._wake()

    def subscribe(self) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[MemberEvent]]:
        """Membership events (``MemberUp``, ``MemberSuspect``, ``MemberDown``,
        ``MemberLeft``) from now on, on a channel; leaving the block
        unsubscribes."""
        return self._subscribers.subscribe()

    # ------------------------------------------------------------ node hooks

    def _peer_address(self, event: PeerAddress) -> None:
        """A connected node told us where it listens: exchange state with it
        unless it is already a live member (connecting joins clusters)."""
        name = event.name
        core = self._core
        if core is None or core.leaving or self.transport.is_blocked(name):
            return
        if core.status_of(name) in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
            return
        address = self.transport.address_of(name)
        assert address is not None  # published just after it was stored
        host, port = address
        # Not remembered as a seed: a passing client (the status command)
        # must not be rejoined for ever after it left.
        core.join(self._now(), [f"{host}:{port}"], remember=False)
        self._wake()

    # ----------------------------------------------------------------- tasks

    def _wake(self) -> None:
        self._wakeup.set()

    def _now(self) -> float:
        """The protocol's time; finds a stall of the loop first (whichever
        task runs first after one), so no input is handed to the core at a
        time the stall made late."""
        now, stalled = self._clock.now(anyio.current_time())
        if stalled and self._core is not None:
            self._core.stalled()
            self._log_limiter.log(
                logging.INFO,
                "membership_stall",
                "%s: the event loop was starved; membership timers paused for it",
                self.transport.name,
            )
        return now

    @property
    def datagrams_dropped_by_kernel(self) -> int:
        """Datagrams for this node that the kernel dropped because the
        socket's receive buffer was full (the event loop did not read them
        in time); 0 where the kernel does not say."""
        return 0 if self._socket is None else datagrams_dropped(self._socket)

    @property
    def stalls(self) -> tuple[int, float]:
        """``(count, seconds)`` of event-loop stalls membership has found
        and taken off its clock (see ``MembershipConfig.stall_threshold``)."""
        return self._clock.stalls, self._clock.lost

    async def _drive(self) -> None:
        """Run the core's timers and carry out their actions."""
        core = self.core
        clock = self._clock
        while True:
            deadline = clock.arm(core.next_deadline())
            with anyio.CancelScope(deadline=deadline) as sleep:
                self._sleep = sleep
                try:
                    await self._wakeup.wait()
                finally:
                    self._sleep = None
            self._now()  # a stall is taken off the clock before anything else
            self._wakeup = anyio.Event()
            # The drain, too, is off the clock if it takes long: on a loop
            # where one scheduling round takes longer than stall_threshold,
            # the rounds it waits are what lets an ack (or a peer on the
            # same loop) through before the timers judge.
            clock.arm(core.next_deadline())
            await self._drain()
            now = self._now()
            clock.arm(None)
            core.tick(now)
            await self._flush()
            if self._stopped:
                return

    async def _drain(self) -> None:
        """Let the receiver (and the connections) hand the core what is
        already waiting before the core judges its timeouts: after a busy
        spell of the loop, the ack a probe waits for can sit unread in the
        socket while its timer fires in the same scheduling round, and the
        order of the two is the scheduler's choice. Yields until two rounds
        in a row bring nothing new while the receiver waits on its socket,
        at most ``DRAIN_ROUNDS`` rounds (a flood of datagrams must not keep
        the timers from running)."""
        quiet = 0
        for _ in range(DRAIN_ROUNDS):
            heard = self._heard
            await anyio.lowlevel.checkpoint()
            quiet = quiet + 1 if heard == self._heard and self._receiver_waiting else 0
            if quiet == 2:
                return

    async def _flush(self) -> None:
        """Carry out what the core queued. Two tasks call this (the driver
        and the receiver); only one sends at a time, and it goes on until
        the core has nothing queued, so what the other queued meanwhile is
        sent too."""
        if self._sending:
            return
        self._sending = True
        try:
            while await self._flush_actions():
                pass
        finally:
            self._sending = False

    async def _answer(self) -> None:
        """After a datagram: send what the core queued from the receiving
        task, and move the driver's sleep to the core's next deadline
        (earlier or later: an ack cancels the probe's timeout). A datagram
        then costs one task wake-up instead of two, and the driver wakes
        only when a timer is due."""
        await self._flush()
        sleep = self._sleep
        if self._stopped:
            self._wake()
        elif sleep is not None:
            sleep.deadline = self._clock.arm(self.core.next_deadline())

    async def _flush_actions(self) -> bool:
        """One batch of actions and events; False if there was none."""
        core = self.core
        assert self._socket is not None and self._sealer is not None
        actions = core.take_actions()
        events = core.take_events()
        if not actions and not events:
            return False
        for action in actions:
            if isinstance(action, SendDatagram):
                if self.transport.is_blocked(self._names_by_address.get(action.address, "")):
                    continue
                try:
                    host, port = split_address(action.address)
                    await self._socket.sendto(self._sealer.seal(action.payload), host, port)
                except anyio.ClosedResourceError:
                    self._stopped = True  # the node is stopping: the receiver closed the socket
                    return False
                except (OSError, anyio.BrokenResourceError, ValueError) as exc:
                    # EPERM (a firewall's output rule), ENETUNREACH, ENOBUFS...
                    # (anyio wraps them as BrokenResourceError on trio): the
                    # datagram is lost, as it could be on the wire; the
                    # protocol copes with loss. The node must not end.
                    self.transport.count_drop("membership_send_failed")
                    self._log_limiter.log(
                        logging.INFO,
                        "membership_send_failed",
                        "membership datagram to %s failed: %r",
                        action.address,
                        exc,
                    )
            elif self._streams_in_flight >= MAX_STREAMS_IN_FLIGHT:
                core.stream_failed(self._now(), action.name, action.address)
            else:
                self._streams_in_flight += 1
                assert self._task_group is not None
                self._task_group.start_soon(self._send_stream, action)
        for change in events:
            self._publish(change)
        return True

    async def _receive_datagrams(self) -> None:
        assert self._socket is not None and self._sealer is not None
        core = self.core
        sealer = self._sealer
        try:
            async with self._socket:  # closed when the node stops
                await self._receive_loop(core, sealer, self.transport.is_blocked)
        finally:
            # Nothing more will come: the driver's _drain must not wait for it.
            self._receiver_waiting = True

    async def _receive_loop(
        self, core: SwimCore, sealer: DatagramSealer, is_blocked: Callable[[str], bool]
    ) -> None:
        assert self._socket is not None
        while True:
            self._receiver_waiting = True
            try:
                datagram, (host, port) = await self._socket.receive()
            except (OSError, anyio.BrokenResourceError) as exc:
                # e.g. an ICMP error reported on the socket: nothing is lost
                # but that one read.
                self.transport.count_drop("membership_receive_failed")
                self._log_limiter.log(
                    logging.INFO,
                    "membership_receive_failed",
                    "membership socket: %r",
                    exc,
                )
                await anyio.sleep(RECEIVE_ERROR_DELAY)
                continue
            finally:
                self._receiver_waiting = False
            self._heard += 1
            payload = sealer.open(datagram)
            if payload is None:
                cause = "datagram_oversized" if len(datagram) > 1400 else "datagram_unauthenticated"
                self.transport.count_drop(cause)
                continue
            source = f"{host}:{port}"
            name = self._names_by_address.get(source)
            if name is not None and is_blocked(name):
                self.transport.count_drop("datagram_blocked")
                continue
            try:
                core.datagram_received(self._now(), source, payload)
            except SwimDecodeError as exc:
                self.transport.count_drop("datagram_malformed")
                self._log_limiter.warning(
                    "datagram_malformed", "malformed membership datagram from %s: %s", source, exc
                )
                continue
            await self._answer()

    # --------------------------------------------------------------- streams

    def _ignore_stream(self, conn: Connection, item: list[Any]) -> None:
        self.transport.count_drop("membership_disabled")

    def _handle_stream(self, conn: Connection, item: list[Any]) -> None:
        _, payload = item
        if type(payload) is not bytes:
            raise TypeError("MEMBER_STREAM needs a bytes payload")
        self._heard += 1
        known = self.transport.address_of(conn.peer)
        if known is None:
            self.transport.count_drop("member_stream_unknown_address")
            return
        try:
            self.core.stream_received(self._now(), f"{known[0]}:{known[1]}", payload)
        except SwimDecodeError as exc:
            self.transport.count_drop("member_stream_malformed")
            self._log_limiter.warning(
                "member_stream_malformed",
                "malformed membership stream message from %s: %s",
                conn.peer,
                exc,
            )
            return
        self._wake()

    async def _send_stream(self, action: SendStream) -> None:
        try:
            core = self.core
            name = action.name or self._name_at(action.address)
            # Dial only addresses of nodes never met (seeds) and dead members
            # (healing). A live member we are not connected to is redialled
            # by _keep_mesh, with backoff, unless the user disconnected it.
            # A member that left is not dialled: it said it is gone, and a
            # connection made now would outlive the MemberLeft that closed it.
            dial = not name or core.status_of(name) is MemberStatus.DEAD
            conn = await self._connection_to(action.address, name=name, dial=dial)
            if conn is None:
                core.stream_failed(self._now(), action.name, action.address)
            else:
                conn.write(self.transport.encode_frame([Kind.MEMBER_STREAM, action.payload]))
            self._wake()
        finally:
            self._streams_in_flight -= 1

    def _name_at(self, address: str) -> str:
        """The node known to listen at ``address``, or ``""``."""
        name = self._names_by_address.get(address)
        if name:
            return name
        host, port = split_address(address)
        return self.transport.name_listening_at(host, port) or ""

    async def _connection_to(self, address: str, *, name: str, dial: bool) -> Connection | None:
        transport = self.transport
        conn = transport.connection(name) if name else None
        if conn is not None or not dial or transport.is_blocked(name):
            return conn
        host, port = split_address(address)
        with contextlib.suppress(ConnectError, TimeoutError, ValueError):
            if name:
                transport.learn_address(name, host, port)
                peer = await transport.connect(name)
            else:
                peer = await transport.connect(f"{host}:{port}")
            return transport.connection(peer)
        return None

    # ---------------------------------------------------------------- events

    def _save_snapshot(self) -> None:
        assert self.snapshot is not None
        live = (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD)
        members = {
            m.name: m.address
            for m in self.core.members()
            if m.status in live and m.name != self.transport.name
        }
        if members != self._snapshot_saved:
            save_snapshot(self.snapshot, members)
            self._snapshot_saved = members

    def _publish(self, change: MemberChange) -> None:
        member = change.member
        if member.name != self.transport.name:
            self._names_by_address[member.address] = member.name
            if member.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT):
                self._live_members[member.name] = member.address
            else:
                self._live_members.pop(member.name, None)
            self._mesh_wakeup.set()
        if self.snapshot is not None and change.previous is not change.member.status:
            try:
                self._save_snapshot()
            except OSError as exc:
                logger.warning("cannot save the member snapshot: %s", exc)
        self.events.publish(MembersChanged(change))
        event = _event_for(change)
        if event is None:
            return
        if member.name != self.transport.name:
            self._act_on(event, member.address)
        if change.previous is MemberStatus.ALIVE and member.status is MemberStatus.ALIVE:
            # An address or metadata update of a live member: it did not come
            # up, so subscribers hear nothing (the public events are status
            # changes); ``member(name)`` shows the new metadata.
            return
        self._subscribers.publish(event)

    def _same_instance(self, name: str, address: str) -> bool:
        """Whether the node connected as ``name`` is the member at
        ``address``. A node restarted under the same name listens on
        another port: a verdict about the instance that went away (it was
        still suspected when it stopped) must not close the connection of
        the new one, which refutes on its own once it hears it."""
        known = self.transport.address_of(name)
        if known is None:
            return True
        try:
            port = split_address(address)[1]
        except ValueError:
            return True
        return known[1] == port

    def _act_on(self, event: MemberEvent, address: str = "") -> None:
        transport = self.transport
        assert self._task_group is not None
        if isinstance(event, MemberDown | MemberLeft):
            logger.info("%s: member %s is %s", transport.name, event.name, type(event).__name__)
            self._redial.pop(event.name, None)
            if transport.is_connected(event.name) and self._same_instance(event.name, address):
                reason = (
                    NodeDownReason.MEMBER_DEAD
                    if isinstance(event, MemberDown)
                    else NodeDownReason.MEMBER_LEFT
                )
                self._task_group.start_soon(transport.close_peer, event.name, reason)
        elif (
            isinstance(event, MemberUp)
            and self.connect_all
            and not transport.is_connected(event.name)
            and not transport.is_blocked(event.name)
        ):
            if self.dials_first(event.name):
                # Due now: _keep_mesh dials it as soon as one of the
                # max_mesh_dials slots is free.
                self._redial[event.name] = (anyio.current_time(), self.config.redial_min_interval)
                self._mesh_wakeup.set()
            elif event.name not in self._redial:
                # The other side dials; dial only if no connection came.
                wait = self.transport.config.handshake_timeout
                wait += self._jitter(self.config.redial_min_interval)
                self._redial[event.name] = (
                    anyio.current_time() + wait,
                    self.config.redial_min_interval,
                )

    async def _connect_member(self, name: str, address: str) -> None:
        with contextlib.suppress(ConnectError, TimeoutError, ValueError):
            host, port = split_address(address)
            self.transport.learn_address(name, host, port)
            await self.transport.connect(name)

    # ------------------------------------------------------------ full mesh

    def dials_first(self, name: str) -> bool:
        """Whether this node, not ``name``, dials when the mesh needs a
        connection between them (see :func:`dials_first`)."""
        return dials_first(self.transport.name, name)

    def connect_on_demand(self, name: str) -> None:
        """Start connecting to the live member ``name`` in the background if
        this node is not connected to it (without ``connect_all`` the
        election reaches its voters this way). One attempt at a time per
        member; a member the user disconnected or blocked is left alone.
        With ``connect_all`` the mesh dials every live member anyway, within
        ``max_mesh_dials``: a dial here would go around that bound (the
        election asks for each voter it cannot reach, all of them at once
        in a join storm)."""
        transport = self.transport
        address = self._live_members.get(name)
        if (
            self.connect_all
            or address is None
            or self._task_group is None
            or name in self._redialling
            or transport.is_connected(name)
            or transport.is_blocked(name)
            or transport.was_disconnected(name)
            or transport.stopping
        ):
            return
        self._redialling.add(name)
        self._task_group.start_soon(self._dial_on_demand, name, address)

    async def _dial_on_demand(self, name: str, address: str) -> None:
        try:
            await self._connect_member(name, address)
        finally:
            self._redialling.discard(name)
            # It held one of the mesh's dial slots (max_mesh_dials).
            self._mesh_wakeup.set()

    def mesh_changed(self, event: PeerDown | None = None) -> None:
        """Something the mesh depends on changed (a connection was lost):
        look again now rather than at the next periodic check."""
        self._mesh_wakeup.set()

    def _wants_connection(self, name: str) -> bool:
        transport = self.transport
        return (
            not transport.is_connected(name)
            and not transport.is_blocked(name)
            and not transport.was_disconnected(name)
            and not transport.stopping
            and not self.core.leaving
        )

    async def _keep_mesh(self) -> None:
        """Redial every live member we are not connected to (``connect_all``).

        The first attempt after a connection is lost waits
        ``redial_min_interval`` (after a member comes up, the side that does
        not dial first, see :meth:`dials_first`, waits ``handshake_timeout``
        more); each failure doubles the wait up to ``redial_max_interval``; a
        random 0-25 % is added so that the nodes of a healed partition do
        not all dial at the same instant. It wakes when a membership event
        or a lost connection says the mesh may need work, when a redial is
        due, and otherwise every ``redial_max_interval`` (a block lifted,
        say, has no event): an idle node in a complete mesh does not poll.

        A member that comes up and that this node dials first is due at
        once. At most ``max_mesh_dials`` dials (these and the redials, and
        the election's dials on demand) run at once; the others wait, in
        random order, for one to end. A dial that waits is checked again
        when its turn comes: if the peer dialled meanwhile, it is not made.
        """
        config = self.config
        while not self._stopped:
            self._mesh_wakeup = anyio.Event()
            now = anyio.current_time()
            wanted = {
                name: address
                for name, address in self._live_members.items()
                if self._wants_connection(name)
            }
            for name in list(self._redial):
                if name not in wanted:
                    del self._redial[name]  # connected, dead, left or disconnected
            assert self._task_group is not None
            next_due = now + config.redial_max_interval
            ready: list[str] = []
            for name in wanted:
                due, backoff = self._redial.get(name, (None, config.redial_min_interval))
                if due is None:
                    due = now + self._jitter(backoff)
                    self._redial[name] = (due, backoff)
                if name in self._redialling:
                    continue
                if now >= due:
                    ready.append(name)
                else:
                    next_due = min(next_due, due)
            # At most max_mesh_dials at once: the rest wait for a slot (a
            # dial ending sets the wakeup). In random order, so that the
            # nodes of a join storm, which learn the members in much the
            # same order, do not all dial the same few first.
            self._rng.shuffle(ready)
            for name in ready[: max(0, config.max_mesh_dials - len(self._redialling))]:
                self._redialling.add(name)
                self._task_group.start_soon(self._redial_member, name, wanted[name])
            with anyio.move_on_after(max(next_due - now, 0.0)):
                await self._mesh_wakeup.wait()

    def _jitter(self, delay: float) -> float:
        return delay * (1 + 0.25 * self._rng.random())

    async def _redial_member(self, name: str, address: str) -> None:
        try:
            await self._connect_member(name, address)
        finally:
            self._redialling.discard(name)
            self._mesh_wakeup.set()
        if self.transport.is_connected(name):
            self._redial.pop(name, None)
            return
        self.transport.count_drop("mesh_redial_failed")
        backoff = self._redial.get(name, (0.0, self.config.redial_min_interval))[1]
        backoff = min(backoff * 2, self.config.redial_max_interval)
        self._redial[name] = (anyio.current_time() + self._jitter(backoff), backoff)
