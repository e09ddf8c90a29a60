"""SWIM membership with Lifeguard, as a sans-IO state machine.

One :class:`SwimCore` is one member's view of the cluster. The driver feeds
it datagrams, stream messages and the time; it queues actions
(:class:`SendDatagram`, :class:`SendStream`) and membership events
(:class:`MemberChange`), and says when it next needs :meth:`SwimCore.tick`.

What it does, per protocol period:

* **Failure detection** (SWIM §3, §4.3). Probe the next member of a shuffled
  round-robin list with a ``ping``; without an ack within ``probe_timeout``,
  ask ``indirect_checks`` random members to ``ping-req`` it (they answer
  ``nack`` if they cannot reach it either) and try a fallback ping over a
  stream. No ack by the end of the period: suspect it.
* **Suspicion** (SWIM §4.2). A suspect that does not refute in time is
  declared dead. Only a member raises its own incarnation, to refute; the
  precedence rules are in :meth:`SwimCore._on_alive`, ``_on_suspect`` and
  ``_on_dead``. A dead or left member stays so for that incarnation, but a
  restarted member that hears it is dead refutes with a higher one and comes
  back.
* **Dissemination** (SWIM §4.1). News rides on every datagram within the
  byte budget and is also gossiped to ``gossip_nodes`` random members each
  ``gossip_interval`` (including the recently dead, so they can refute);
  each piece is sent ``retransmit_mult * ceil(log10(n + 1))`` times.
  Periodic push-pull (full state over a stream) repairs what gossip missed.
* **Lifeguard.** The local health multiplier stretches the probe interval
  of a member that misses acks/nacks or has to refute; suspicion timeouts
  start long and shrink with independent confirmations; a ping to a suspect
  carries the suspicion so the suspect can refute at once (buddy system).
  Beyond memberlist: a member that hears someone else's suspicion pings the
  suspect itself (suspicion attached), so it gets the refutation in the ack
  even when the refutation's gossip misses it.
* **Healing.** Dead members are retried with push-pull every
  ``reconnect_interval`` until ``reconnect_timeout`` (then forgotten), and
  the seed addresses are rejoined while fewer members are alive than were
  once seen, so the two sides of a healed partition merge again.

Hardening against memberlist's reported bugs: a member's stored incarnation
never goes back (in the serial order described below); an echo of a
suspicion we already refuted does not cause another refutation (but if our
refutation has finished its transmissions, the same alive is queued again,
so a member that missed it learns it).

**Incarnations wrap around.** They travel as ints below 2**63, and a
member that holds the cookie can send any of them about anyone: "b left at
2**63 - 1" used to make everyone mark b as left for good, since b could not
outbid the largest value. So incarnations compare like RFC 1982 serial
numbers: ``a`` is newer than ``b`` when ``(a - b) mod 2**63`` is in
``(0, 2**62)`` (see :func:`newer`), and a member refutes news of itself at
incarnation ``i`` (unless it is strictly older than its own) with
``(i + 1) mod 2**63``, which is always newer than ``i``: there is no value a
forger can send that the member cannot outbid. Honest incarnations grow by
one per refutation and never come near the window, so for them this is the
plain integer order. Members that went down recently (dead or left) are
among the gossip targets, so a live member said to have left hears it.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import attrs

from . import swim_wire as wire
from .awareness import LocalHealth
from .broadcast_queue import BroadcastQueue, retransmit_limit
from .suspicion import Suspicion, suspicion_bounds
from .swim_wire import SwimDecodeError

__all__ = [
    "CEILING",
    "DEFAULT_DATAGRAM_BUDGET",
    "MAX_METADATA",
    "Member",
    "MemberChange",
    "MemberStatus",
    "SendDatagram",
    "SendStream",
    "SwimConfig",
    "SwimCore",
    "SwimDecodeError",
    "SwimKnobs",
    "newer",
]

MAX_METADATA: Final = wire.MAX_METADATA
#: 1400-byte UDP packets minus room for a 32-byte authentication tag.
DEFAULT_DATAGRAM_BUDGET: Final = 1400 - 32
# Helpers report "target silent" a little before the prober gives up on
# the indirect path, so the nack can arrive in time (a proposal in the
# Lifeguard paper, as swift-cluster-membership does).
NACK_FRACTION: Final = 0.8
# How often a member pings a suspect it heard about from others (once per
# probe interval), so one lost ping or ack does not leave it waiting for gossip.
SUSPECT_CHECKS: Final = 3
# Room kept in every datagram for the compound header and the probe message.
_COMPOUND_HEADER: Final = 2
#: The largest incarnation on the wire; the next one is 0.
CEILING: Final = wire.MAX_INCARNATION - 1
_WINDOW: Final = wire.MAX_INCARNATION // 2


def newer(a: int, b: int) -> bool:
    """Is incarnation ``a`` newer than ``b``? Serial-number order (RFC 1982)
    on ``[0, 2**63)``: ``a`` is newer when it is less than 2**62 ahead of
    ``b``, going round past 2**63 - 1 to 0. Exactly 2**62 apart, neither is
    newer."""
    return 0 < (a - b) % wire.MAX_INCARNATION < _WINDOW


def _not_older(a: int, b: int) -> bool:
    """``a`` equals ``b`` or is newer (the news about a member we act on)."""
    return a == b or newer(a, b)


class SwimKnobs(Protocol):
    """Anything that carries the protocol's knobs (the public
    ``MembershipConfig`` does); :class:`SwimCore` copies them into its own
    :class:`SwimConfig` when it is built."""

    @property
    def probe_interval(self) -> float: ...
    @property
    def probe_timeout(self) -> float: ...
    @property
    def indirect_checks(self) -> int: ...
    @property
    def suspicion_mult(self) -> int: ...
    @property
    def suspicion_max_timeout_mult(self) -> int: ...
    @property
    def retransmit_mult(self) -> int: ...
    @property
    def gossip_interval(self) -> float: ...
    @property
    def gossip_nodes(self) -> int: ...
    @property
    def push_pull_interval(self) -> float: ...
    @property
    def awareness_max_multiplier(self) -> int: ...
    @property
    def reconnect_interval(self) -> float: ...
    @property
    def reconnect_timeout(self) -> float: ...


@attrs.frozen(kw_only=True)
class SwimConfig:
    """The core's own frozen copy of the knobs it runs on (validated by the
    public configuration that supplies them; see :meth:`of`)."""

    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    suspicion_mult: int
    suspicion_max_timeout_mult: int
    retransmit_mult: int
    gossip_interval: float
    gossip_nodes: int
    push_pull_interval: float
    awareness_max_multiplier: int
    reconnect_interval: float
    reconnect_timeout: float

    @classmethod
    def of(cls, knobs: SwimKnobs) -> SwimConfig:
        """A frozen copy of ``knobs`` (returned as is if already one), so
        the core never sees a later change to the caller's object."""
        if isinstance(knobs, SwimConfig):
            return knobs
        return cls(**{name: getattr(knobs, name) for name in attrs.fields_dict(cls)})


class MemberStatus(enum.Enum):
    """A member's status in membership: alive, suspect (it missed probes and
    may refute the suspicion), dead (declared failed) or left (gracefully)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_WIRE_STATUS: Final = {
    MemberStatus.ALIVE: wire.STATUS_ALIVE,
    MemberStatus.SUSPECT: wire.STATUS_SUSPECT,
    MemberStatus.DEAD: wire.STATUS_DEAD,
    MemberStatus.LEFT: wire.STATUS_LEFT,
}
_LIVE: Final = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
_NEWS: Final = (wire.Alive, wire.Suspect, wire.Dead, wire.Left)
_DOWN: Final = (MemberStatus.DEAD, MemberStatus.LEFT)


@attrs.frozen
class Member:
    name: str
    address: str
    status: MemberStatus
    incarnation: int
    metadata: bytes


@attrs.frozen
class MemberChange:
    """A member appeared (``previous`` is None), changed status, or changed
    address or metadata (``previous == member.status``)."""

    member: Member
    previous: MemberStatus | None


@attrs.frozen
class SendDatagram:
    """Send ``payload`` (at most the core's ``datagram_budget`` bytes) by UDP."""

    address: str
    payload: bytes


@attrs.frozen
class SendStream:
    """Deliver ``payload`` reliably (TCP) to the member ``name`` at ``address``.

    ``name`` is empty when it is not known yet (a seed address). If it
    cannot be delivered, tell the core with :meth:`SwimCore.stream_failed`.
    """

    name: str
    address: str
    payload: bytes


Action = SendDatagram | SendStream


@attrs.define(eq=False, kw_only=True)
class _Record:
    name: str
    address: str
    status: MemberStatus
    incarnation: int
    metadata: bytes
    changed_at: float
    suspicion: Suspicion | None = None

    def snapshot(self) -> Member:
        return Member(
            name=self.name,
            address=self.address,
            status=self.status,
            incarnation=self.incarnation,
            metadata=self.metadata,
        )


@attrs.define(eq=False, kw_only=True)
class _Probe:
    seq: int
    target: str
    address: str
    started: float
    timeout_at: float
    ends_at: float
    acked: bool = False
    acked_directly: bool = False
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@attrs.define(eq=False, kw_only=True)
class _Relay:
    """A ping we send on behalf of a member that asked us with ping-req."""

    origin_address: str
    origin_seq: int
    expires_at: float


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str) or not value or len(value) > wire.MAX_NAME:
        raise ValueError(f"{what} must be a non-empty string of at most {wire.MAX_NAME} characters")


def _check_metadata(metadata: bytes) -> None:
    if not isinstance(metadata, bytes):
        raise TypeError(f"metadata must be bytes, got {type(metadata).__name__}")
    if len(metadata) > MAX_METADATA:
        raise ValueError(f"metadata must be at most {MAX_METADATA} bytes, got {len(metadata)}")


class _ShuffledRound:
    """Members in shuffled order, walked one at a time and reshuffled after
    each full round; newcomers go to a random place in the rest of the
    round (SWIM §4.3). Probing and gossip each walk their own."""

    __slots__ = ("_index", "_order", "_rng")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[str] = []
        self._index = 0

    def reset(self) -> None:
        """Reshuffle at the next step."""
        self._order = []
        self._index = 0

    def insert(self, name: str) -> None:
        position = self._rng.randint(self._index, len(self._order))
        self._order.insert(position, name)

    def next(self, live: list[str], usable: Callable[[str], bool]) -> str | None:
        """The next usable name, starting a new round from ``live`` if needed."""
        order = self._order
        for _ in range(2):
            while self._index < len(order):
                name = order[self._index]
                self._index += 1
                if usable(name):
                    return name
            order = self._order = list(live)
            self._rng.shuffle(order)
            self._index = 0
            if not order:
                return None
        return None


class SwimCore:
    """One member's SWIM + Lifeguard state machine (sans-IO).

    Args:
        name: this member's unique name.
        address: where others reach it (datagrams and streams).
        config: the protocol knobs (copied into a :class:`SwimConfig`).
        rng: the only source of randomness.
        now: the current time (seconds, any monotonic origin).
        metadata: up to 512 bytes gossiped with this member.
        incarnation: the starting incarnation (a restarted member may pass a
            remembered one; it refutes higher ones it hears anyway).
        datagram_budget: the largest datagram payload to produce.
        lifeguard: False gives plain SWIM (fixed suspicion timeout, no local
            health multiplier, no buddy system), for comparisons.
        gossip_to_the_dead_time: keep gossiping to a dead member this long,
            so it can hear of its death and refute (default:
            ``config.push_pull_interval``, as memberlist's profiles set it).
        seeds: addresses to rejoin while fewer members are alive than were
            seen (also learned from :meth:`join`).
        stream_fallback: send the fallback ping over a stream alongside the
            indirect probes (False: UDP only, as in the SWIM paper's model).
        suspect_check: with Lifeguard, ping a member when we first hear
            someone else suspect it, with the suspicion attached, so it can
            refute to us directly (up to SUSPECT_CHECKS times, one probe
            interval apart, while it stays suspect; see :meth:`_check_suspect`).
        stream_reachable: whether a stream to the named member can go out
            now (the driver holds a connection to it). The periodic
            push-pull picks among the alive members it names first, so the
            full-state exchange works where nodes connect to each other only
            on demand (a push-pull to a member the driver will not dial fails
            and repairs nothing). None: every member is reachable.
    """

    def __init__(
        self,
        *,
        name: str,
        address: str,
        config: SwimKnobs,
        rng: random.Random,
        now: float,
        metadata: bytes = b"",
        incarnation: int = 0,
        datagram_budget: int = DEFAULT_DATAGRAM_BUDGET,
        lifeguard: bool = True,
        gossip_to_the_dead_time: float | None = None,
        seeds: Sequence[str] = (),
        stream_fallback: bool = True,
        suspect_check: bool = True,
        stream_reachable: Callable[[str], bool] | None = None,
    ) -> None:
        _check_text(name, "name")
        _check_text(address, "address")
        _check_metadata(metadata)
        if not 0 <= incarnation < wire.MAX_INCARNATION:
            raise ValueError(f"incarnation must be in [0, 2**63), got {incarnation}")
        self.name: Final = name
        self.address: Final = address
        config = SwimConfig.of(config)
        self.config: Final = config
        self.lifeguard: Final = lifeguard
        self.stream_fallback: Final = stream_fallback
        self.suspect_check: Final = suspect_check
        self._stream_reachable = stream_reachable
        self.datagram_budget: Final = datagram_budget
        if gossip_to_the_dead_time is None:
            gossip_to_the_dead_time = config.push_pull_interval
        self.gossip_to_the_dead_time: Final = gossip_to_the_dead_time
        self._rng = rng
        self._health = LocalHealth(max_multiplier=config.awareness_max_multiplier)
        self._queue = BroadcastQueue()
        self._self = _Record(
            name=name,
            address=address,
            status=MemberStatus.ALIVE,
            incarnation=incarnation,
            metadata=metadata,
            changed_at=now,
        )
        if len(self._alive_message(self._self)) > datagram_budget - 16:
            raise ValueError(
                f"name, address and metadata do not fit a {datagram_budget}-byte datagram"
            )
        self._members: dict[str, _Record] = {name: self._self}
        self._status_counts: Counter[MemberStatus] = Counter({MemberStatus.ALIVE: 1})
        # Live (alive or suspect) members other than us, indexable for O(1)
        # random choice.
        self._live: list[str] = []
        self._live_index: dict[str, int] = {}
        # Dead or left members, in the order they went down.
        self._down: dict[str, float] = {}
        self._probe_round = _ShuffledRound(rng)
        # Gossip walks its own shuffled round of the live members, so each
        # member's copies of a piece of news go to distinct members.
        self._gossip_round = _ShuffledRound(rng)
        self._probe: _Probe | None = None
        self._next_probe_at = now + rng.uniform(0.0, config.probe_interval)
        self._relays: dict[int, _Relay] = {}
        self._relay_timers: list[tuple[float, int, bool]] = []  # (when, seq, is_expiry)
        self._suspicion_timers: list[tuple[float, str, int]] = []  # (deadline, name, id(timer))
        self._check_timers: list[tuple[float, str, int, int]] = []  # (when, name, inc, sent)
        self._seq = rng.getrandbits(32)
        self._gossip_at = now + config.gossip_interval
        # The latest time any input carried, so news queued in a handler can
        # find the next gossip tick (the ticker keeps its phase while idle).
        self._clock = now
        self._push_pull_at = now + rng.uniform(0.0, config.push_pull_interval)
        self._reconnect_at = now + config.reconnect_interval
        self._seeds: list[str] = [s for s in seeds if s != address]
        self._max_live_seen = 1
        self._leaving = False
        self._rtt: dict[str, float] = {}
        self._actions: list[Action] = []
        self._events: list[MemberChange] = []
        #: Protocol counters (probes, failures, refutes, ignored messages...).
        self.counters: Counter[str] = Counter()
        self._broadcast(name, self._alive_message(self._self))

    # -- public state ----------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def metadata(self) -> bytes:
        return self._self.metadata

    @property
    def health_multiplier(self) -> int:
        """Lifeguard's local health score, 0 (healthy) to ``awareness_max_multiplier - 1``."""
        return self._health.score

    @property
    def leaving(self) -> bool:
        return self._leaving

    def members(self) -> list[Member]:
        """Every known member, this one included."""
        return [record.snapshot() for record in self._members.values()]

    def member(self, name: str) -> Member | None:
        record = self._members.get(name)
        return None if record is None else record.snapshot()

    def status_of(self, name: str) -> MemberStatus | None:
        """The status of ``name`` without building a :class:`Member`."""
        record = self._members.get(name)
        return None if record is None else record.status

    def counts(self) -> dict[MemberStatus, int]:
        """How many known members are in each status (this one included)."""
        return {status: self._status_counts[status] for status in MemberStatus}

    def alive_count(self) -> int:
        """Alive and suspect members, this one included (if not left)."""
        return len(self._live) + (0 if self._leaving else 1)

    def last_rtt(self, name: str) -> float | None:
        """Round trip of the last direct probe of ``name`` that was answered."""
        return self._rtt.get(name)

    def cluster_size(self) -> int:
        """n in the protocol formulas: live members, this one included."""
        return len(self._live) + 1

    def suspicion_deadline(self, name: str) -> float | None:
        """When the suspicion of ``name`` will turn into a death, if suspected."""
        record = self._members.get(name)
        if record is None or record.suspicion is None:
            return None
        return record.suspicion.deadline()

    @property
    def current_probe(self) -> tuple[str, float] | None:
        """The member being probed now and when its probe started, if any."""
        probe = self._probe
        return None if probe is None else (probe.target, probe.started)

    def take_actions(self) -> list[SendDatagram | SendStream]:
        actions, self._actions = self._actions, []
        return actions

    def take_events(self) -> list[MemberChange]:
        events, self._events = self._events, []
        return events

    # -- commands --------------------------------------------------------------

    def join(self, now: float, seed_addresses: Sequence[str], *, remember: bool = True) -> None:
        """Exchange full state with each seed over a stream, and remember the
        seeds to rejoin them after a partition (unless ``remember`` is false:
        a peer that merely connected is no seed)."""
        self._clock = max(self._clock, now)
        for address in seed_addresses:
            _check_text(address, "seed address")
            if address == self.address:
                continue
            if remember and address not in self._seeds:
                self._seeds.append(address)
            self._send_push_pull("", address, reply=False)

    def add_known_members(self, now: float, members: Sequence[Member]) -> None:
        """Record members known out of band (a converged snapshot) without
        gossiping them or emitting events: simulations start from a settled
        cluster this way instead of replaying a join storm. Only members we
        do not know yet are added, and only as alive or suspect."""
        for member in members:
            if member.name in self._members or member.status not in _LIVE:
                continue
            _check_text(member.name, "name")
            _check_text(member.address, "address")
            _check_metadata(member.metadata)
            record = _Record(
                name=member.name,
                address=member.address,
                status=MemberStatus.ALIVE,
                incarnation=member.incarnation,
                metadata=member.metadata,
                changed_at=now,
            )
            self._members[member.name] = record
            self._status_counts[MemberStatus.ALIVE] += 1
            self._add_live(member.name)
        self._probe_round.reset()
        self._gossip_round.reset()

    def leave(self, now: float) -> None:
        """Leave gracefully: stop probing and gossip our own departure."""
        self._clock = max(self._clock, now)
        if self._leaving:
            return
        self._leaving = True
        self._probe = None
        self._set_status(self._self, MemberStatus.LEFT, now)
        self._events.append(MemberChange(self._self.snapshot(), MemberStatus.ALIVE))
        self._broadcast(self.name, self._left_message(self.name, self._self.incarnation))
        self._gossip_at = min(self._gossip_at, now)

    def left_complete(self, now: float) -> bool:
        """After :meth:`leave`: whether the departure was sent as often as
        gossip sends anything (or there is nobody left to tell)."""
        return self._leaving and (self.name not in self._queue or not self._live)

    def update_metadata(self, now: float, metadata: bytes) -> None:
        """Gossip new metadata (with a new incarnation, so it takes precedence)."""
        self._clock = max(self._clock, now)
        _check_metadata(metadata)
        record = self._self
        candidate = attrs.evolve(record, metadata=metadata)
        if len(self._alive_message(candidate)) > self.datagram_budget - 16:
            raise ValueError(
                f"name, address and metadata do not fit a {self.datagram_budget}-byte datagram"
            )
        record.metadata = metadata
        self._bump_incarnation(record.incarnation)

    def remove(self, now: float, name: str) -> None:
        """Forget a dead or left member (it may come back by joining)."""
        record = self._members.get(name)
        if record is None:
            return
        if record.status not in _DOWN or name == self.name:
            raise ValueError(f"only a dead or left member can be removed, {name!r} is not")
        self._forget(record)

    # -- input -----------------------------------------------------------------

    def datagram_received(self, now: float, source_address: str, payload: bytes) -> None:
        """Handle one datagram; :class:`SwimDecodeError` if it is malformed
        (then nothing changed: the driver counts it and moves on)."""
        self._clock = max(self._clock, now)
        messages = wire.decode_datagram(payload)
        # News first, then the probe traffic: a suspect who gets a ping with
        # its suspicion attached (buddy system) refutes in the very ack.
        for message in messages:
            if isinstance(message, _NEWS):
                self._on_datagram_message(now, source_address, message)
        for message in messages:
            if not isinstance(message, _NEWS):
                self._on_datagram_message(now, source_address, message)

    def stream_received(self, now: float, source_address: str, payload: bytes) -> None:
        """Handle one stream message; :class:`SwimDecodeError` if malformed."""
        self._clock = max(self._clock, now)
        message = wire.decode_stream(payload)
        if isinstance(message, wire.StreamPing):
            if message.target == self.name:
                ack = wire.encode(wire.StreamAck(message.seq))
                self._actions.append(SendStream(message.reply_name, message.reply_address, ack))
        elif isinstance(message, wire.StreamAck):
            probe = self._probe
            if probe is not None and probe.seq == message.seq:
                probe.acked = True
                self.counters["stream_acks"] += 1
        else:
            self._on_push_pull(now, message)

    def stream_failed(self, now: float, name: str, address: str) -> None:
        """A :class:`SendStream` could not be delivered. Nothing to undo:
        probes time out on their own and healing retries joins later."""
        self.counters["streams_failed"] += 1

    def stalled(self) -> None:
        """The driver's own loop was starved (it woke well after the
        deadline it asked for). Like a missed ack, this says the slow one
        may be us: with Lifeguard it raises the local health score, so this
        member probes less often until its probes succeed again."""
        self.counters["stalls"] += 1
        if self.lifeguard:
            self._health.apply(1)

    # -- time ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadline = self._push_pull_at
        if self._reconnect_at < deadline:
            deadline = self._reconnect_at
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect_sent and probe.timeout_at < deadline:
                deadline = probe.timeout_at
            if probe.ends_at < deadline:
                deadline = probe.ends_at
        elif not self._leaving and self._next_probe_at < deadline:
            deadline = self._next_probe_at
        if len(self._queue) and self._gossip_at < deadline:
            deadline = self._gossip_at
        if self._suspicion_timers and self._suspicion_timers[0][0] < deadline:
            deadline = self._suspicion_timers[0][0]
        if self._relay_timers and self._relay_timers[0][0] < deadline:
            deadline = self._relay_timers[0][0]
        if self._check_timers and self._check_timers[0][0] < deadline:
            deadline = self._check_timers[0][0]
        return deadline

    def tick(self, now: float) -> None:
        """Do everything due at ``now``."""
        self._clock = max(self._clock, now)
        self._run_relay_timers(now)
        self._run_suspicion_timers(now)
        self._run_check_timers(now)
        self._run_probe(now)
        if now >= self._gossip_at:
            if len(self._queue):
                self._gossip(now)
            interval = self.config.gossip_interval
            self._gossip_at += interval
            if self._gossip_at <= now:
                self._gossip_at += math.ceil((now - self._gossip_at) / interval + 1e-9) * interval
        if now >= self._push_pull_at:
            self._periodic_push_pull()
            self._push_pull_at = now + self._push_pull_interval()
        if now >= self._reconnect_at:
            self._reconnect(now)
            self._reconnect_at = now + self.config.reconnect_interval

    # -- probing ---------------------------------------------------------------

    def _run_probe(self, now: float) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect_sent and now >= probe.timeout_at:
                self._probe_indirectly(now, probe)
            if now >= probe.ends_at:
                self._probe = None
                self._finish_probe(now, probe)
                self._next_probe_at = probe.ends_at
        if self._probe is None and not self._leaving and now >= self._next_probe_at:
            self._start_probe(now)

    def _next_target(self) -> _Record | None:
        name = self._probe_round.next(self._live, self._is_live_other)
        return None if name is None else self._members[name]

    def _is_live_other(self, name: str) -> bool:
        record = self._members.get(name)
        return record is not None and record.status in _LIVE and name != self.name

    def _start_probe(self, now: float) -> None:
        interval = self.config.probe_interval
        if self.lifeguard:
            interval = self._health.scale(interval)
        target = self._next_target()
        if target is None:
            self._next_probe_at = now + interval
            return
        seq = self._next_seq()
        self._probe = _Probe(
            seq=seq,
            target=target.name,
            address=target.address,
            started=now,
            timeout_at=now + self.config.probe_timeout,
            ends_at=now + interval,
        )
        self.counters["probes"] += 1
        parts = [wire.encode(wire.Ping(seq, target.name))]
        if self.lifeguard and target.status is MemberStatus.SUSPECT:
            # Buddy system: tell the suspect directly so it can refute now.
            parts.append(self._suspect_message(target.name, target.incarnation, self.name))
        self._send_datagram(target.address, parts)

    def _probe_indirectly(self, now: float, probe: _Probe) -> None:
        probe.indirect_sent = True
        helpers = self._random_live(
            self.config.indirect_checks, exclude=probe.target, alive_only=True
        )
        request = wire.encode(wire.PingReq(probe.seq, probe.target, probe.address))
        for helper in helpers:
            self._send_datagram(helper.address, [request])
        probe.expected_nacks = len(helpers) if self.lifeguard else 0
        if not self.stream_fallback:
            return
        # A fallback ping over a stream catches "UDP blocked, TCP open".
        fallback = wire.StreamPing(probe.seq, probe.target, self.name, self.address)
        self._actions.append(SendStream(probe.target, probe.address, wire.encode(fallback)))

    def _finish_probe(self, now: float, probe: _Probe) -> None:
        if probe.acked:
            if probe.acked_directly and self.lifeguard:
                self._health.apply(-1)
            return
        self.counters["probe_failures"] += 1
        if self.lifeguard:
            if probe.expected_nacks:
                self._health.apply(max(probe.expected_nacks - probe.nacks, 0))
            else:
                self._health.apply(1)
        record = self._members.get(probe.target)
        if record is None or record.status not in _LIVE or record.address != probe.address:
            return
        self.counters["suspicions_raised"] += 1
        self._on_suspect(now, probe.target, record.incarnation, self.name)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % wire.MAX_SEQ
        return self._seq

    # -- datagram messages -------------------------------------------------------

    def _on_datagram_message(
        self, now: float, source_address: str, message: wire.DatagramMessage
    ) -> None:
        if isinstance(message, wire.Alive):
            name, address = message.name, message.address
            self._on_alive(now, name, address, message.incarnation, message.metadata)
        elif isinstance(message, wire.Suspect):
            self._on_suspect(now, message.name, message.incarnation, message.source)
        elif isinstance(message, wire.Dead):
            self._on_dead(now, message.name, message.incarnation, left=False)
        elif isinstance(message, wire.Left):
            self._on_dead(now, message.name, message.incarnation, left=True)
        elif isinstance(message, wire.Ping):
            if message.target == self.name:
                self._send_datagram(source_address, [wire.encode(wire.Ack(message.seq))])
            else:
                # The address now belongs to someone else (a restart under a
                # new name): stay silent so the prober learns the truth.
                self.counters["pings_for_other_names"] += 1
        elif isinstance(message, wire.Ack):
            self._on_ack(now, source_address, message.seq)
        elif isinstance(message, wire.Nack):
            probe = self._probe
            if probe is not None and probe.seq == message.seq:
                probe.nacks += 1
        else:
            self._on_ping_req(now, source_address, message)

    def _on_ack(self, now: float, source_address: str, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if not probe.acked:
                probe.acked = True
                # Before the ping-reqs went out only the target can have
                # answered (whatever source address the driver reports).
                direct = source_address == probe.address or not probe.indirect_sent
                if direct:
                    self._rtt[probe.target] = now - probe.started
                    probe.acked_directly = now <= probe.timeout_at
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send_datagram(relay.origin_address, [wire.encode(wire.Ack(relay.origin_seq))])

    def _on_ping_req(self, now: float, source_address: str, message: wire.PingReq) -> None:
        if message.target == self.name:
            self._send_datagram(source_address, [wire.encode(wire.Ack(message.seq))])
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(
            origin_address=source_address,
            origin_seq=message.seq,
            expires_at=now + self.config.probe_interval,
        )
        heapq.heappush(
            self._relay_timers, (now + NACK_FRACTION * self.config.probe_timeout, seq, False)
        )
        self._send_datagram(message.target_address, [wire.encode(wire.Ping(seq, message.target))])

    def _run_relay_timers(self, now: float) -> None:
        timers = self._relay_timers
        while timers and timers[0][0] <= now:
            _, seq, is_expiry = heapq.heappop(timers)
            relay = self._relays.get(seq)
            if relay is None:
                continue
            if is_expiry:
                del self._relays[seq]
                continue
            self._send_datagram(relay.origin_address, [wire.encode(wire.Nack(relay.origin_seq))])
            heapq.heappush(timers, (relay.expires_at, seq, True))

    # -- state changes (SWIM precedence rules) -----------------------------------

    def _on_alive(self, now: float, name: str, address: str, incarnation: int, meta: bytes) -> None:
        if name == self.name:
            own = self._self
            if self._leaving:
                return
            if (incarnation != own.incarnation and not newer(own.incarnation, incarnation)) or (
                incarnation == own.incarnation and (address != own.address or meta != own.metadata)
            ):
                # Someone holds a newer or conflicting version of us (we
                # restarted, or an impostor): outbid it.
                self._refute(incarnation)
            return
        record = self._members.get(name)
        if record is None:
            message = self._encode_alive(name, address, incarnation, meta)
            if message is None:
                return
            record = _Record(
                name=name,
                address=address,
                status=MemberStatus.ALIVE,
                incarnation=incarnation,
                metadata=meta,
                changed_at=now,
            )
            self._members[name] = record
            self._status_counts[MemberStatus.ALIVE] += 1
            self._add_live(name)
            # Newcomers go to a random place in the rest of this round.
            self._probe_round.insert(name)
            self._gossip_round.insert(name)
            self._events.append(MemberChange(record.snapshot(), None))
            self._broadcast(name, message)
            return
        if not newer(incarnation, record.incarnation):
            return
        if address != record.address and record.status in _LIVE:
            # Two live members claim one name: keep the one we know until it
            # is declared dead (memberlist does the same).
            self.counters["address_conflicts"] += 1
            return
        message = self._encode_alive(name, address, incarnation, meta)
        if message is None:
            return
        previous = record.status
        changed = previous is not MemberStatus.ALIVE or meta != record.metadata
        changed = changed or address != record.address
        record.incarnation = incarnation
        record.metadata = meta
        record.address = address
        self._clear_suspicion(record)
        if previous is not MemberStatus.ALIVE:
            self._set_status(record, MemberStatus.ALIVE, now)
        if changed:
            self._events.append(MemberChange(record.snapshot(), previous))
        self._broadcast(name, message)

    def _bad_news_of_self(self, incarnation: int) -> None:
        """Someone says we are suspect or dead: refute it, unless we are
        leaving or it is an old rumour our refutation already outdated."""
        if self._leaving:
            return
        if newer(self._self.incarnation, incarnation):
            self._stale_news_of_self()
            return
        self._refute(incarnation)

    def _on_suspect(self, now: float, name: str, incarnation: int, source: str) -> None:
        if name == self.name:
            self._bad_news_of_self(incarnation)
            return
        record = self._members.get(name)
        if record is None or not _not_older(incarnation, record.incarnation):
            return
        suspicion = record.suspicion
        if suspicion is not None and newer(incarnation, record.incarnation):
            # Suspect(i) overrides Suspect(j) for i > j (SWIM §4.2): the member
            # refuted the old suspicion, so this is a new one with a fresh timer.
            record.incarnation = incarnation
            record.suspicion = self._new_suspicion(now, source)
            self._push_suspicion_timer(record, record.suspicion)
            self._broadcast(name, self._suspect_message(name, incarnation, source))
            if source != self.name:
                self._check_suspect(record)
            return
        if suspicion is not None:
            if suspicion.confirm(source):
                # An independent confirmation shortens our timer; pass it on
                # so it shortens everyone else's too.
                self._push_suspicion_timer(record, suspicion)
                self._broadcast(name, self._suspect_message(name, incarnation, source))
            return
        if record.status is not MemberStatus.ALIVE:
            return
        record.incarnation = incarnation
        record.suspicion = self._new_suspicion(now, source)
        self._push_suspicion_timer(record, record.suspicion)
        self._set_status(record, MemberStatus.SUSPECT, now)
        self._events.append(MemberChange(record.snapshot(), MemberStatus.ALIVE))
        self._broadcast(name, self._suspect_message(name, incarnation, source))
        if source != self.name:
            self._check_suspect(record)

    def _check_suspect(self, record: _Record) -> None:
        """We heard someone else suspect ``record``: ping it with the
        suspicion attached. If it is alive it refutes in its ack, so we learn
        the refutation directly even if its gossip never reaches us (an
        extension of Lifeguard's buddy system). The ack itself is not awaited:
        the check is repeated each probe interval, up to SUSPECT_CHECKS times,
        while the member stays suspect at that incarnation."""
        if not (self.lifeguard and self.suspect_check) or self._leaving:
            return
        self._send_suspect_check(record)
        if SUSPECT_CHECKS > 1:
            heapq.heappush(
                self._check_timers,
                (self._clock + self.config.probe_interval, record.name, record.incarnation, 1),
            )

    def _send_suspect_check(self, record: _Record) -> None:
        self.counters["suspect_checks"] += 1
        ping = wire.encode(wire.Ping(self._next_seq(), record.name))
        suspect = self._suspect_message(record.name, record.incarnation, self.name)
        self._send_datagram(record.address, [ping, suspect])

    def _run_check_timers(self, now: float) -> None:
        timers = self._check_timers
        while timers and timers[0][0] <= now:
            _, name, incarnation, sent = heapq.heappop(timers)
            record = self._members.get(name)
            if (
                record is None
                or record.status is not MemberStatus.SUSPECT
                or record.incarnation != incarnation
                or self._leaving
            ):
                continue
            self._send_suspect_check(record)
            if sent + 1 < SUSPECT_CHECKS:
                interval = self.config.probe_interval
                heapq.heappush(timers, (now + interval, name, incarnation, sent + 1))

    def _on_dead(self, now: float, name: str, incarnation: int, *, left: bool) -> None:
        if name == self.name:
            self._bad_news_of_self(incarnation)
            return
        record = self._members.get(name)
        if record is None or not _not_older(incarnation, record.incarnation):
            return
        if record.status in _DOWN:
            # Final for that incarnation; only keep the number monotone.
            record.incarnation = incarnation
            return
        previous = record.status
        record.incarnation = incarnation
        self._clear_suspicion(record)
        status = MemberStatus.LEFT if left else MemberStatus.DEAD
        self._set_status(record, status, now)
        self._events.append(MemberChange(record.snapshot(), previous))
        if left:
            self._broadcast(name, self._left_message(name, incarnation))
        else:
            self._broadcast(name, wire.encode(wire.Dead(name, incarnation, self.name)))

    def _stale_news_of_self(self) -> None:
        """Someone still gossips a suspicion or death we already refuted. If
        our refutation finished its transmissions, a member that missed it
        may act on the stale news: say it again (same incarnation, so no
        new precedence fight; queued at most once at a time)."""
        self.counters["stale_news_of_self"] += 1
        if self.name not in self._queue:
            self._broadcast(self.name, self._alive_message(self._self))

    def _refute(self, incarnation: int) -> None:
        self.counters["refutes"] += 1
        if self.lifeguard:
            self._health.apply(1)
        self._bump_incarnation(incarnation)

    def _bump_incarnation(self, at_least: int) -> None:
        """Take an incarnation newer than both our own and ``at_least``
        (the news we refute), going round past the top if need be."""
        own = self._self
        base = own.incarnation if newer(own.incarnation, at_least) else at_least
        if base == CEILING:
            self.counters["incarnation_wraps"] += 1
        own.incarnation = (base + 1) % wire.MAX_INCARNATION
        self._broadcast(self.name, self._alive_message(own))

    def _new_suspicion(self, now: float, source: str) -> Suspicion:
        config = self.config
        n = self.cluster_size()
        minimum, maximum = suspicion_bounds(
            suspicion_mult=config.suspicion_mult,
            max_timeout_mult=config.suspicion_max_timeout_mult,
            probe_interval=config.probe_interval,
            cluster_size=n,
        )
        k = config.suspicion_mult - 2
        if not self.lifeguard or n - 2 < k:
            # Not enough members to ever confirm: use the nominal timeout.
            k = 0
        return Suspicion(source=source, k=k, minimum=minimum, maximum=maximum, started=now)

    def _push_suspicion_timer(self, record: _Record, suspicion: Suspicion) -> None:
        heapq.heappush(self._suspicion_timers, (suspicion.deadline(), record.name, id(suspicion)))

    def _run_suspicion_timers(self, now: float) -> None:
        timers = self._suspicion_timers
        while timers and timers[0][0] <= now:
            deadline, name, ident = heapq.heappop(timers)
            record = self._members.get(name)
            if record is None or record.suspicion is None or id(record.suspicion) != ident:
                continue
            if record.suspicion.deadline() != deadline:
                continue  # superseded by a confirmation (a later entry holds it)
            self.counters["suspicion_timeouts"] += 1
            self._on_dead(now, name, record.incarnation, left=False)

    def _clear_suspicion(self, record: _Record) -> None:
        record.suspicion = None

    def _set_status(self, record: _Record, status: MemberStatus, now: float) -> None:
        previous = record.status
        if previous is status:
            return
        self._status_counts[previous] -= 1
        self._status_counts[status] += 1
        record.status = status
        record.changed_at = now
        if record is self._self:
            return
        name = record.name
        if status in _LIVE:
            if previous in _DOWN:
                self._gossip_round.insert(name)
            self._add_live(name)
            self._down.pop(name, None)
            self._max_live_seen = max(self._max_live_seen, self.cluster_size())
        else:
            self._remove_live(name)
            self._down.pop(name, None)
            self._down[name] = now
            if status is MemberStatus.LEFT:
                # A graceful leave is not a loss to heal from.
                self._max_live_seen = max(self.cluster_size(), self._max_live_seen - 1)

    def _add_live(self, name: str) -> None:
        if name not in self._live_index:
            self._live_index[name] = len(self._live)
            self._live.append(name)
            self._max_live_seen = max(self._max_live_seen, self.cluster_size())

    def _remove_live(self, name: str) -> None:
        index = self._live_index.pop(name, None)
        if index is None:
            return
        last = self._live.pop()
        if last != name:
            self._live[index] = last
            self._live_index[last] = index

    def _forget(self, record: _Record) -> None:
        name = record.name
        self._remove_live(name)
        self._down.pop(name, None)
        self._status_counts[record.status] -= 1
        del self._members[name]
        self._queue.invalidate(name)
        self._rtt.pop(name, None)
        self._max_live_seen = max(self.cluster_size(), self._max_live_seen - 1)

    # -- dissemination -----------------------------------------------------------

    def _alive_message(self, record: _Record) -> bytes:
        return wire.encode(
            wire.Alive(record.name, record.address, record.incarnation, record.metadata)
        )

    def _encode_alive(self, name: str, address: str, incarnation: int, meta: bytes) -> bytes | None:
        message = wire.encode(wire.Alive(name, address, incarnation, meta))
        if len(message) > self.datagram_budget - 16:
            # It could never be gossiped within our budget; refuse the member.
            self.counters["alive_too_large"] += 1
            return None
        return message

    def _suspect_message(self, name: str, incarnation: int, source: str) -> bytes:
        return wire.encode(wire.Suspect(name, incarnation, source))

    def _left_message(self, name: str, incarnation: int) -> bytes:
        return wire.encode(wire.Left(name, incarnation))

    def _broadcast(self, name: str, message: bytes) -> None:
        self._queue.queue(name, message)
        if self._gossip_at < self._clock:
            # The gossip ticker idles while there is nothing to send; resume
            # it on its own grid rather than at once, so news travels one
            # gossip round per hop as in memberlist.
            interval = self.config.gossip_interval
            behind = self._clock - self._gossip_at
            self._gossip_at += math.ceil(behind / interval) * interval

    def _retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self.cluster_size())

    def _send_datagram(self, address: str, parts: list[bytes]) -> None:
        """Send ``parts`` plus as much queued news as fits the budget."""
        used = sum(len(part) for part in parts)
        space = self.datagram_budget - _COMPOUND_HEADER - used
        if space < 0:
            parts = parts[:1]  # the probe message alone always fits
            space = self.datagram_budget - _COMPOUND_HEADER - len(parts[0])
        if len(self._queue):
            parts = parts + self._queue.take(
                space, self._retransmit_limit(), max_count=wire.MAX_PARTS - len(parts)
            )
        self._actions.append(SendDatagram(address, wire.pack(parts)))

    def _gossip(self, now: float) -> None:
        targets = self._gossip_targets(now)
        limit = self._retransmit_limit()
        space = self.datagram_budget - _COMPOUND_HEADER
        for target in targets:
            news = self._queue.take(space, limit, max_count=wire.MAX_PARTS)
            if not news:
                break
            self._actions.append(SendDatagram(target.address, wire.pack(news)))

    def _gossip_targets(self, now: float) -> list[_Record]:
        """``gossip_nodes`` distinct members: the next ones of the shuffled
        gossip round, or now and then a recently dead member (so it hears
        of its death and can refute), in proportion to their numbers."""
        recent = self._recently_dead(now)
        live_count = len(self._live)
        total = live_count + len(recent)
        wanted = min(self.config.gossip_nodes, total)
        chosen: list[_Record] = []
        picked: set[str] = set()
        attempts = 0
        while len(chosen) < wanted and attempts < 2 * wanted + 2:
            attempts += 1
            if recent and self._rng.randrange(total) >= live_count:
                name: str | None = self._rng.choice(recent)
            else:
                name = self._next_gossip_target()
            if name is None or name in picked:
                continue
            picked.add(name)
            chosen.append(self._members[name])
        return chosen

    def _next_gossip_target(self) -> str | None:
        return self._gossip_round.next(self._live, self._is_live_other)

    def _recently_dead(self, now: float) -> list[str]:
        horizon = now - self.gossip_to_the_dead_time
        recent: list[str] = []
        # _down is in the order members went down: stop at the first old one.
        for name, when in reversed(self._down.items()):
            if when <= horizon:
                break
            # Left ones too: a live member said to have left (by a forger)
            # must hear it to refute; one that really left ignores it.
            recent.append(name)
        return recent

    def _random_live(
        self, count: int, *, exclude: str | None = None, alive_only: bool = False
    ) -> list[_Record]:
        """Up to ``count`` distinct random live members (not us)."""
        live = self._live
        chosen: list[_Record] = []
        total = len(live)
        if total == 0 or count <= 0:
            return chosen
        # Sample by index without building a copy; a few extra draws cover
        # the excluded and filtered entries.
        tries = 0
        seen: set[int] = set()
        while len(chosen) < count and tries < 3 * count + 3 and len(seen) < total:
            tries += 1
            index = self._rng.randrange(total)
            if index in seen:
                continue
            seen.add(index)
            record = self._members[live[index]]
            if record.name == exclude or (alive_only and record.status is not MemberStatus.ALIVE):
                continue
            chosen.append(record)
        return chosen

    # -- push-pull and healing ---------------------------------------------------

    def _push_pull_interval(self) -> float:
        n = self.cluster_size()
        interval = self.config.push_pull_interval
        if n <= 32:
            return interval
        # memberlist's pushPullScale: one more period per doubling beyond 32.
        return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def _state(self) -> tuple[wire.MemberState, ...]:
        return tuple(
            wire.MemberState(
                record.name,
                record.address,
                record.incarnation,
                _WIRE_STATUS[record.status],
                record.metadata,
            )
            for record in self._members.values()
        )

    def _send_push_pull(self, name: str, address: str, *, reply: bool) -> None:
        message = wire.PushPull(reply, self.name, self.address, self._state())
        self._actions.append(SendStream(name, address, wire.encode(message)))
        self.counters["push_pulls_sent"] += 1

    def _periodic_push_pull(self) -> None:
        reachable = self._stream_reachable
        if reachable is not None:
            # A scan of the live members, once per push-pull interval (at
            # least 30 s on LAN timers); the common on-demand case is a few
            # reachable among many, which sampling would mostly miss.
            candidates = [
                name
                for name in self._live
                if self._members[name].status is MemberStatus.ALIVE and reachable(name)
            ]
            if candidates:
                record = self._members[self._rng.choice(candidates)]
                self._send_push_pull(record.name, record.address, reply=False)
                return
        peers = self._random_live(1, alive_only=True)
        if peers:
            self._send_push_pull(peers[0].name, peers[0].address, reply=False)

    def _on_push_pull(self, now: float, message: wire.PushPull) -> None:
        if not message.reply and message.name != self.name:
            self._send_push_pull(message.name, message.address, reply=True)
        for state in message.members:
            if state.status == wire.STATUS_ALIVE:
                self._on_alive(now, state.name, state.address, state.incarnation, state.metadata)
            elif state.status == wire.STATUS_LEFT:
                self._on_dead(now, state.name, state.incarnation, left=True)
            else:
                # A remote "dead" only makes us suspect (as memberlist does):
                # the member gets a chance to refute stale news of its death.
                self._on_suspect(now, state.name, state.incarnation, message.name)

    def _reconnect(self, now: float) -> None:
        horizon = now - self.config.reconnect_timeout
        expired = [name for name, when in self._down.items() if when <= horizon]
        for name in expired:
            self._forget(self._members[name])
        if self._leaving:
            return
        dead = [name for name in self._down if self._members[name].status is MemberStatus.DEAD]
        if dead:
            record = self._members[self._rng.choice(dead)]
            self._send_push_pull(record.name, record.address, reply=False)
        if self._seeds and self.alive_count() < self._max_live_seen:
            for address in self._seeds:
                self._send_push_pull("", address, reply=False)
