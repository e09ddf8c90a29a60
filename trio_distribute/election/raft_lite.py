"""Raft-lite leader election: the driver that runs the sans-IO core on a node.

The rules live in :mod:`trio_distribute._proto.raft`; this module feeds the
core the election messages that arrive on the node's connections, the time
and what membership knows, carries out its actions in order (a
:class:`~trio_distribute._proto.raft.Persist` is written and fsynced before
any send queued after it), and publishes leader changes.

* **Forming a cluster**: a node starts without a voter set and does not
  campaign until it knows ``ElectionConfig.bootstrap_expect`` members
  (itself included) and, if it was given seeds, has joined through one of
  them. The first leader is elected unanimously by the members it knew.
* **Voters** are then changed by the leader only, one at a time: it adds
  live members that are not voters and removes the ones that left
  gracefully or were removed (``await node.membership.remove(name)`` on any
  node asks the leader). A crash does not shrink the set, so a minority can
  never elect a leader.
* **Persistence**: with ``NodeConfig.state_dir`` set, ``(term, voted_for)``
  and the voter set with its version are written atomically (temporary
  file, fsync, rename, fsync of the directory) before any message that
  depends on them leaves the node, and read back on start. Every start
  abstains (no vote, no campaign) for one maximum election timeout
  (``2E``), following only a leader it hears from. Without ``state_dir``
  that abstention is all that keeps a restarted voter from voting twice in
  a term; it narrows the window but cannot close it, so set ``state_dir``
  for real use.
* **Terms are fencing tokens**: anything that acts on leadership should
  carry the term and refuse older ones.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from .._events import Subscribers
from .._node_events import MembersChanged, NodeEventBus
from .._proto.kinds import Kind
from .._proto.raft import (
    ElectionCore,
    HeartbeatAck,
    MemberView,
    Persist,
    RaftDecodeError,
    Send,
    decode_message,
    encode_message,
)
from .._proto.swim import MemberStatus
from .._ratelimit import LogLimiter
from .._state_dir import read_state, safe_file_name, write_atomic
from ..cluster.membership import Membership
from ..config import ElectionConfig
from ..transport import Connection, Transport

__all__ = [
    "Election",
    "Leader",
    "LeaderChanged",
    "NoLeader",
    "load_state",
    "save_state",
    "state_file",
]

logger = logging.getLogger("trio_distribute.election")

SUBSCRIBER_BUFFER: Final = 256


@attrs.frozen
class Leader:
    """The cluster has a leader: ``name``, elected in ``term``."""

    name: str
    term: int


@attrs.frozen
class NoLeader:
    """No leader is known (an election is running, or no majority is reachable)."""


@attrs.frozen
class LeaderChanged:
    """The leader this node knows changed: ``leader`` (``None``: none) in ``term``."""

    term: int
    leader: str | None


def state_file(state_dir: Path, name: str) -> Path:
    """Where the node ``name`` keeps its election state under ``state_dir``."""
    return state_dir / f"election-{safe_file_name(name)}.json"


def load_state(path: Path) -> Persist | None:
    """The state saved in ``path`` (term, vote, voter set and its version);
    ``None`` if it does not exist. A file without a voter set (an older
    format) loads as unconfigured.

    Raises:
        ValueError: the file exists but does not hold a valid state.
    """
    try:
        raw = read_state(path)
        if raw is None:
            return None
        data = json.loads(raw)
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise ValueError(f"unreadable election state {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"invalid election state in {path}: {data!r}")
    term, voted_for = data.get("term"), data.get("voted_for")
    version, voters = data.get("version", [0, 0]), data.get("voters", [])
    if (
        type(term) is not int
        or term < 0
        or not (voted_for is None or isinstance(voted_for, str))
        or not (
            isinstance(version, list)
            and len(version) == 2
            and all(type(x) is int and x >= 0 for x in version)
        )
        or not (isinstance(voters, list) and all(isinstance(v, str) for v in voters))
    ):
        raise ValueError(f"invalid election state in {path}: {data!r}")
    return Persist(term, voted_for, (version[0], version[1]), tuple(voters))


def save_state(path: Path, state: Persist) -> None:
    """Write ``state`` durably and atomically: a crash leaves either the old
    state or the new one, never a torn file."""
    record = {
        "term": state.term,
        "voted_for": state.voted_for,
        "version": list(state.version),
        "voters": list(state.voters),
    }
    write_atomic(path, json.dumps(record).encode())


@attrs.define(eq=False, kw_only=True)
class Election:
    """A node's leader election: ``node.election``."""

    transport: Transport
    events: NodeEventBus
    membership: Membership
    config: ElectionConfig
    state_dir: Path | None = None
    _core: ElectionCore | None = None
    _task_group: anyio.abc.TaskGroup | None = None
    _wakeup: anyio.Event = attrs.field(factory=anyio.Event)
    _changed: anyio.Event = attrs.field(factory=anyio.Event)
    _joining: bool = False
    #: Membership changes the core has not heard yet, ``{name: status}``:
    #: the driver tells it once per wake-up, and only of these members (a
    #: join storm brings thousands of changes; a look at the whole member
    #: table per wake-up made each node's join quadratic). ``_resync``: a
    #: member was removed, so the core is told the whole table again.
    _pending: dict[str, MemberStatus] = attrs.field(factory=dict)
    _resync: bool = False
    #: The driver's sleep until the core's next deadline (None while it
    #: runs): a handler moves its deadline instead of waking it (a
    #: follower's heartbeat only pushes its election timer back).
    _sleep: anyio.CancelScope | None = None
    _seen: set[str] = attrs.field(factory=set)
    _removed: set[str] = attrs.field(factory=set)
    _log_limiter: LogLimiter = attrs.field(factory=lambda: LogLimiter(logger))
    _subscribers: Subscribers[LeaderChanged] = attrs.field(
        default=attrs.Factory(
            lambda self: Subscribers[LeaderChanged](
                SUBSCRIBER_BUFFER,
                lambda: self.transport.count_drop("election_subscriber_overflow"),
            ),
            takes_self=True,
        )
    )

    def __repr__(self) -> str:
        if not self.enabled or self._core is None:
            return f"<Election of {self.transport.name}: disabled>"
        leader = self.leader
        shown = f"leader {leader.name}" if isinstance(leader, Leader) else "no leader"
        return f"<Election of {self.transport.name}: {shown}, term {self.term}>"

    @property
    def enabled(self) -> bool:
        """Election runs when it and membership are both enabled."""
        return self.config.enabled and self.membership.enabled

    @property
    def core(self) -> ElectionCore:
        """The election state machine (for inspection and tests)."""
        if self._core is None:
            raise RuntimeError(
                "election is disabled on this node (ElectionConfig.enabled; it needs membership)"
            )
        return self._core

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        if not self.enabled:
            # Peers with the election on still send us votes: drop them.
            self.transport.add_handler(Kind.ELECTION, self._ignore_message)
            return
        now = anyio.current_time()
        persisted: Persist | None = None
        if self.state_dir is not None:
            path = state_file(self.state_dir, self.transport.name)
            try:
                persisted = load_state(path)
            except ValueError as exc:
                logger.error("%s; starting as if restarted without state", exc)
        timeout = self.config.election_timeout
        self._core = ElectionCore(
            name=self.transport.name,
            election_timeout=timeout,
            heartbeat_interval=self.config.heartbeat_interval,
            rng=self.transport.network.random(),
            now=now,
            persisted=persisted,
            # Every start abstains for one maximum election timeout. Without
            # durable state a restart cannot be told from a first start, so
            # this is all that stands between it and a second vote in a term;
            # with state it still gives voters time to forget no leader's
            # lease (they restarted).
            abstain_until=now + 2 * timeout,
            bootstrap_expect=self.config.bootstrap_expect,
            max_voters=self.config.max_voters,
            learner_interval=self.config.learner_interval,
        )
        self._core.hold_bootstrap(now, self._joining)
        self._observe()
        self._task_group = task_group
        self.events.subscribe(MembersChanged, self._membership_changed)
        self.transport.add_handler(Kind.ELECTION, self._handle_message)
        task_group.start_soon(self._drive)

    # ----------------------------------------------------------------- query

    @property
    def leader(self) -> Leader | NoLeader:
        """The leader this node knows of, with its term, or ``NoLeader()``."""
        core = self.core
        return NoLeader() if core.leader is None else Leader(core.leader, core.term)

    def elect(self) -> Leader | NoLeader:
        """The seed library's name for :attr:`leader`."""
        return self.leader

    @property
    def is_leader(self) -> bool:
        """Whether this node is the leader now."""
        return self.core.is_leader

    @property
    def term(self) -> int:
        """Return the current term, a fencing token for anything done as leader."""
        return self.core.term

    def voters(self) -> list[str]:
        """The accepted voter set, sorted (empty before the cluster formed)."""
        return sorted(self.core.voters)

    def has_quorum(self) -> bool:
        """Whether a majority of the voters is alive (or suspect) as far as
        membership knows (never before the cluster formed)."""
        core = self.core
        if not core.voters:
            return False
        live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
        alive = sum(1 for v in core.voters if self.membership.core.status_of(v) in live)
        return alive >= core.quorum

    async def wait_for_leader(self, timeout: float | None = None) -> Leader:
        """Wait until a leader is known and return it.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        with anyio.fail_after(math.inf if timeout is None else timeout):
            while True:
                current = self.leader
                if isinstance(current, Leader):
                    return current
                await self._changed.wait()

    def subscribe(self) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[LeaderChanged]]:
        """``LeaderChanged(term, leader)`` events from now on."""
        return self._subscribers.subscribe()

    # --------------------------------------------------------------- driving

    def joining(self, joining: bool) -> None:
        """While ``joining`` is true (seeds given, none reached yet) this node
        does not bootstrap a cluster: it would be a cluster of its own."""
        self._joining = joining
        if self._core is not None:
            self._core.hold_bootstrap(anyio.current_time(), joining)
            self._wakeup.set()

    def _observe(self) -> None:
        # Gossip tells the core who exists; the leader decides who votes.
        # Members remembered from before a restart count as known, so a
        # restarted node without a voter set does not propose a smaller one.
        core = self.core
        members = self.membership.core.members()
        names = {m.name for m in members}
        # A member that vanished from membership without leaving was removed
        # by an operator (membership.remove): the leader takes it out.
        for name in self._seen - names:
            self._removed.add(name)
        self._seen = names
        left = {m.name for m in members if m.status is MemberStatus.LEFT}
        known = (names - left) | (self.membership.remembered.keys() - names - self._removed)
        alive = {m.name for m in members if m.status is MemberStatus.ALIVE}
        failed = {m.name for m in members if m.status is MemberStatus.DEAD}
        self._removed -= alive  # it came back: it may vote again
        core.observe(
            anyio.current_time(),
            known=known,
            alive=alive,
            departed=left | self._removed,
            failed=failed,
        )

    def _membership_changed(self, event: MembersChanged) -> None:
        if self._core is None:
            return
        if event.change is None:
            self._resync = True  # a member was removed
        else:
            member = event.change.member
            self._pending[member.name] = member.status
        self._wakeup.set()

    def _catch_up(self) -> None:
        """Tell the core what membership knows now (if it changed): the
        members that changed, or the whole table after a removal."""
        if self._pending and not self._resync:
            pending, self._pending = self._pending, {}
            views = []
            for name, status in pending.items():
                self._seen.add(name)
                if status is MemberStatus.ALIVE:
                    self._removed.discard(name)  # it came back: it may vote again
                removed = name in self._removed
                views.append(
                    MemberView(
                        name,
                        known=status is not MemberStatus.LEFT,
                        alive=status is MemberStatus.ALIVE,
                        departed=removed or status is MemberStatus.LEFT,
                        failed=status is MemberStatus.DEAD,
                    )
                )
            self.core.observe_changes(anyio.current_time(), views)
            # A member forgotten without an event (a dead one past
            # reconnect_timeout) leaves the table smaller than what was
            # seen: look at the whole table, which finds it removed.
            self._resync = len(self._seen) != sum(self.membership.core.counts().values())
        if not self._resync:
            return
        self._resync = False
        self._pending.clear()
        removed_before = set(self._removed)
        self._observe()
        now = anyio.current_time()
        for name in self._removed - removed_before:
            self.core.request_removal(now, name)

    def _ignore_message(self, conn: Connection, item: list[Any]) -> None:
        self.transport.count_drop("election_disabled")

    def _handle_message(self, conn: Connection, item: list[Any]) -> None:
        _, payload = item
        if type(payload) is not bytes:
            raise TypeError("ELECTION needs a bytes payload")
        try:
            message = decode_message(payload)
        except RaftDecodeError as exc:
            self.transport.count_drop("election_malformed")
            self._log_limiter.warning(
                "election_malformed", "malformed election message from %s: %s", conn.peer, exc
            )
            return
        core = self.core
        self._catch_up()
        core.receive(anyio.current_time(), conn.peer, message)
        # Answer here rather than in the driver: a heartbeat and its ack
        # cost no task switch, and the driver wakes only if the core now
        # needs it sooner than it planned (the usual heartbeat only pushes
        # the election timer back).
        self._flush()
        sleep = self._sleep
        if sleep is not None and not (type(message) is HeartbeatAck and core.is_leader):
            # An ack that leaves us leader only moves the lease expiry later
            # (a wake at the old deadline is harmless), and the leader's
            # deadline costs a sort of the voters: not once per ack.
            deadline = core.next_deadline()
            sleep.deadline = math.inf if deadline is None else deadline

    async def _drive(self) -> None:
        core = self.core
        while True:
            self._catch_up()
            self._flush()
            deadline = core.next_deadline()
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as sleep:
                self._sleep = sleep
                try:
                    await self._wakeup.wait()
                finally:
                    self._sleep = None
            self._wakeup = anyio.Event()
            self._catch_up()
            core.tick(anyio.current_time())

    def _flush(self) -> None:
        core = self.core
        transport = self.transport
        # The leader sends one message to many (heartbeats to voters, the
        # round to learners): encode it once.
        last: object = None
        frame = b""
        for action in core.take_actions():
            if isinstance(action, Persist):
                if self.state_dir is not None:
                    # Synchronous on purpose: nothing may leave before it is durable.
                    save_state(state_file(self.state_dir, transport.name), action)
            elif isinstance(action, Send):
                conn = transport.connection(action.to)
                if conn is not None and not conn.closed:
                    if action.message is not last:
                        last = action.message
                        frame = transport.encode_frame(
                            [Kind.ELECTION, encode_message(action.message)]
                        )
                    conn.write(frame)
                else:
                    # Membership redials a live member it is not connected
                    # to (connect_all), or connects now on demand (without
                    # it); until then the message is lost, as on a lossy
                    # network, and raft's timers cope.
                    transport.count_drop("election_not_connected")
                    self.membership.connect_on_demand(action.to)
        for change in core.take_events():
            logger.info("%s: leader is %s in term %d", transport.name, change.leader, change.term)
            event = LeaderChanged(change.term, change.leader)
            changed, self._changed = self._changed, anyio.Event()
            changed.set()
            self._subscribers.publish(event)
