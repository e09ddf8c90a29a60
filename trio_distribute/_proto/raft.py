"""Raft-lite leader election as a sans-IO state machine (no log replication).

One :class:`ElectionCore` per node. The driver feeds it received messages
(:meth:`~ElectionCore.receive`) and clock ticks (:meth:`~ElectionCore.tick`,
called once ``now >= next_deadline()``), then drains
:meth:`~ElectionCore.take_actions` and :meth:`~ElectionCore.take_events`
after every call. Actions come in the order they must be carried out: a
:class:`Persist` precedes every :class:`Send` queued after it, and the driver
must make it durable (write and fsync) before doing those sends. The core
never reads a clock, never touches a socket and draws randomness only from
the ``rng`` it is given.

Rules (Ongaro's thesis, chapters 3, 4.2.3, 6.4 and 9.6)
-------------------------------------------------------
* **Terms** only grow. Any message carrying a higher term makes the receiver
  adopt it and become a follower, except a pre-vote request (it only asks a
  question about the future) and a vote request ignored by stickiness.
* **Randomized timeouts**: a follower, pre-candidate or candidate that hears
  nothing for a timeout drawn uniformly from ``[E, 2E)`` (drawn afresh every
  time the timer is armed) starts an election.
* **Pre-vote**: before bumping its term, a would-be candidate asks every
  voter "would you vote for me at ``term + 1``?". A voter says yes only if
  the proposed term is above its own and it has not heard from a leader
  within ``E``. Only with a majority of yeses does the node become a
  candidate, so a node cut off from the majority never inflates its term and
  cannot depose a healthy leader when it comes back.
* **One vote per term**, persisted: a candidate votes for itself, a voter
  grants at most one candidate per term, and ``(term, voted_for)`` is queued
  as a :class:`Persist` before the reply that depends on it.
* **Majority of the voter set**: ``len(voters) // 2 + 1``. The node counts
  itself only if it is in its own voter set; a node outside its voter set
  never campaigns, and votes or acks from outside the set do not count.
  Vote and pre-vote requests from outside the set are refused.
* **Heartbeats**: a leader sends :class:`Heartbeat` to every other voter
  every ``heartbeat_interval`` (and at once on winning); followers answer
  with :class:`HeartbeatAck` echoing the heartbeat's ``stamp`` (the
  leader's clock when it sent it).
* **Stickiness** (leader lease on the voter side): a node that heard from
  its leader less than ``E`` ago, or that is the leader, ignores vote and
  pre-vote requests without adopting their term.
* **Check-quorum**: a leader steps down when the acknowledgements of a
  majority are older than the lease ``L`` (``lease_timeout``). The age is
  measured from the *send* time of the heartbeat that was acknowledged, so a
  voter that acknowledged a heartbeat sent at ``s`` heard from the leader no
  earlier than ``s`` and refuses to vote for anyone else before ``s + E``.
  The leader gives up at ``s_q + L`` where ``s_q`` is the majority's oldest
  acknowledged send time. With ``L < E`` and a clock drift bound ``eps``
  such that ``L + eps < E``, a deposed leader has stopped before any other
  leader can be elected. Default ``L = 0.75 E`` (or the midpoint of
  ``(heartbeat_interval, E)`` when the heartbeat interval is above that):
  five missed heartbeats at the default 0.1 s / 1 s, a margin of ``E / 4``
  for drift and scheduling delay. A fresh leader gets ``L`` of grace from
  the moment it won, and so does a voter added to a leader's set. The lease
  argument also assumes voters remember when they last heard from the
  leader: a voter restarted *with* persisted state has forgotten, so a
  driver that relies on :meth:`ElectionCore.lease_expiry` should pass
  ``abstain_until = now + E`` on every restart. A pause (SIGSTOP, GC,
  blocked fsync) of the leader breaks any lease argument; the term is the
  fencing token that stays safe.
* **Abstention after a restart without persisted state**: a node built with
  ``abstain_until`` neither votes, pre-votes nor campaigns before that time
  (the driver passes ``now + 2E``). It follows a leader it hears from.
  This narrows, but does not close, the window in which a node that forgot
  its vote could vote twice in one term; only ``persisted`` closes it.

Cluster sizes
-------------
* **1 voter**: the node is a majority on its own. When its first timeout
  (in ``[E, 2E)``) fires it wins the pre-vote and the vote without sending
  anything and stays leader forever; check-quorum never fires.
* **2 voters**: the majority is 2, so both are needed to elect, and a
  leader whose peer stops acknowledging steps down after ``L``. One node
  down means no leader (the price of never having two).
* **3 voters**: the majority is 2; any one node may fail or be cut off and
  the other two elect (or keep) a leader.

Voter-set changes
-----------------
:meth:`ElectionCore.set_voters` applies a new voter set at once. Two nodes
whose voter sets differ by more than one member may compute disjoint
majorities, so election safety across a change assumes members are added
or removed one at a time (as raft's single-server changes do) and that the
sets converge before the next change. If it was violated anyway (say two
nodes each elected themselves alone before learning of each other), a
leader that hears a heartbeat from another leader of its own term steps
down, so the overlap lasts one message, not a lease.

Wire
----
Every message is a CBOR array of plain values (:func:`encode_message`),
first element the message kind. :func:`decode_message` accepts only the
exact shapes this module produces and raises :class:`RaftDecodeError` for
anything else. The sender is not in the message: the transport knows which
authenticated peer sent it.
"""

from __future__ import annotations

import enum
import io
import math
import random
from collections.abc import Iterable
from typing import Any, Final, TypeAlias

import attrs
import cbor2

__all__ = [
    "MAX_MESSAGE_SIZE",
    "MAX_TERM",
    "Action",
    "ElectionCore",
    "Heartbeat",
    "HeartbeatAck",
    "LeaderChange",
    "Message",
    "Persist",
    "PreVote",
    "PreVoteReply",
    "RaftDecodeError",
    "Role",
    "Send",
    "Vote",
    "VoteReply",
    "decode_message",
    "default_lease_timeout",
    "encode_message",
]

MAX_TERM: Final = 2**63 - 1
"""Terms are non-negative ints up to this (they fit an int64)."""

MAX_MESSAGE_SIZE: Final = 64
"""Encoded messages are at most ~25 bytes; anything longer is garbage."""


# --------------------------------------------------------------------- wire


@attrs.frozen
class PreVote:
    """ "Would you vote for me at ``term``?" (``term`` = the sender's term + 1).

    Never changes anyone's term.
    """

    term: int


@attrs.frozen
class PreVoteReply:
    """The answer to a :class:`PreVote` for ``proposed_term``.

    ``term`` is the replier's own term, so a pre-candidate that is behind
    learns the current term from a refusal.
    """

    term: int
    proposed_term: int
    granted: bool


@attrs.frozen
class Vote:
    """A candidate in ``term`` asks for the receiver's vote."""

    term: int


@attrs.frozen
class VoteReply:
    """The answer to a :class:`Vote`; ``term`` is the replier's term."""

    term: int
    granted: bool


@attrs.frozen
class Heartbeat:
    """The leader of ``term`` is alive; ``stamp`` is its clock at sending."""

    term: int
    stamp: float


@attrs.frozen
class HeartbeatAck:
    """The answer to a :class:`Heartbeat`: the replier's ``term`` and the
    heartbeat's ``stamp`` echoed back (the leader's lease is measured from it)."""

    term: int
    stamp: float


Message: TypeAlias = PreVote | PreVoteReply | Vote | VoteReply | Heartbeat | HeartbeatAck

_PRE_VOTE: Final = 1
_PRE_VOTE_REPLY: Final = 2
_VOTE: Final = 3
_VOTE_REPLY: Final = 4
_HEARTBEAT: Final = 5
_HEARTBEAT_ACK: Final = 6


class RaftDecodeError(ValueError):
    """Bytes that are not a well-formed raft-lite message."""


def encode_message(message: Message) -> bytes:
    """The wire form of ``message``: CBOR of a plain array."""
    fields: list[Any]
    match message:
        case PreVote(term=term):
            fields = [_PRE_VOTE, term]
        case PreVoteReply(term=term, proposed_term=proposed, granted=granted):
            fields = [_PRE_VOTE_REPLY, term, proposed, granted]
        case Vote(term=term):
            fields = [_VOTE, term]
        case VoteReply(term=term, granted=granted):
            fields = [_VOTE_REPLY, term, granted]
        case Heartbeat(term=term, stamp=stamp):
            fields = [_HEARTBEAT, term, float(stamp)]
        case HeartbeatAck(term=term, stamp=stamp):
            fields = [_HEARTBEAT_ACK, term, float(stamp)]
        case _:
            raise TypeError(f"not a raft message: {message!r}")
    return cbor2.dumps(fields)


class _RefuseEveryTag(dict[int, Any]):
    """``semantic_decoders`` that refuses every CBOR tag when its head is
    read (raft messages contain none), before cbor2 decodes its content."""

    def __missing__(self, tag: int) -> Any:
        def refuse(immutable: bool) -> Any:
            raise RaftDecodeError(f"CBOR tag {tag} in a raft message")

        return cbor2.shareable_decoder(refuse)


_NO_TAGS: Final = _RefuseEveryTag()


def decode_message(data: bytes) -> Message:
    """Parse one message produced by :func:`encode_message`.

    Raises:
        RaftDecodeError: for any input that is not exactly such a message
            (and never any other exception).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RaftDecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_SIZE:
        raise RaftDecodeError(f"raft message of {len(data)} bytes (max {MAX_MESSAGE_SIZE})")
    stream = io.BytesIO(bytes(data))
    try:
        decoder = cbor2.CBORDecoder(
            stream, semantic_decoders=_NO_TAGS, max_depth=2, allow_indefinite=False
        )
        value = decoder.decode()
    except RaftDecodeError:
        raise
    except Exception as exc:
        raise RaftDecodeError(f"malformed CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise RaftDecodeError("trailing bytes after a raft message")
    return _from_fields(value)


def _from_fields(value: object) -> Message:
    if type(value) is not list or not value:
        raise RaftDecodeError("a raft message is a non-empty CBOR array")
    kind, *rest = value
    shape = _SHAPES.get(kind) if type(kind) is int else None
    if shape is None:
        raise RaftDecodeError(f"unknown raft message kind {kind!r}")
    if len(rest) != len(shape):
        raise RaftDecodeError(f"raft message kind {kind} takes {len(shape)} fields")
    for field, check in zip(rest, shape, strict=True):
        check(field)
    match kind:
        case 1:
            return PreVote(rest[0])
        case 2:
            return PreVoteReply(rest[0], rest[1], rest[2])
        case 3:
            return Vote(rest[0])
        case 4:
            return VoteReply(rest[0], rest[1])
        case 5:
            return Heartbeat(rest[0], float(rest[1]))
        case _:
            return HeartbeatAck(rest[0], float(rest[1]))


def _check_term(value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TERM:
        raise RaftDecodeError(f"bad term {value!r}")


def _check_flag(value: object) -> None:
    if type(value) is not bool:
        raise RaftDecodeError(f"bad flag {value!r}")


def _check_stamp(value: object) -> None:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise RaftDecodeError(f"bad stamp {value!r}")


_SHAPES: Final = {
    _PRE_VOTE: (_check_term,),
    _PRE_VOTE_REPLY: (_check_term, _check_term, _check_flag),
    _VOTE: (_check_term,),
    _VOTE_REPLY: (_check_term, _check_flag),
    _HEARTBEAT: (_check_term, _check_stamp),
    _HEARTBEAT_ACK: (_check_term, _check_stamp),
}


# ------------------------------------------------------- actions and events


@attrs.frozen
class Persist:
    """Write ``(term, voted_for)`` durably before carrying out later actions."""

    term: int
    voted_for: str | None


@attrs.frozen
class Send:
    """Send ``message`` to the node named ``to`` (over the reliable stream)."""

    to: str
    message: Message


Action: TypeAlias = Persist | Send


@attrs.frozen
class LeaderChange:
    """The leader this node knows changed: ``leader`` leads ``term``, or no
    leader is known (``None``). Emitted when the leader changes and when the
    same node leads again in a new term (the fencing token changed)."""

    term: int
    leader: str | None


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


def default_lease_timeout(election_timeout: float, heartbeat_interval: float) -> float:
    """``0.75 E``, or the midpoint of ``(heartbeat_interval, E)`` if that is larger."""
    return max(0.75 * election_timeout, (heartbeat_interval + election_timeout) / 2)


# --------------------------------------------------------------------- core


@attrs.define(eq=False, kw_only=True, init=False)
class ElectionCore:
    """The election state machine of one node (see the module docstring).

    Args:
        name: this node's name, as it appears in voter sets and as ``to``.
        voters: the voter set; may or may not include ``name``.
        election_timeout: ``E``; timeouts are drawn from ``[E, 2E)``.
        heartbeat_interval: how often a leader sends heartbeats (``< L``).
        rng: the only source of randomness.
        now: the driver's clock at creation.
        persisted: ``(term, voted_for)`` restored from durable storage.
        abstain_until: neither vote nor campaign before this time (a restart
            without persisted state; pass ``now + 2E``).
        pre_vote: run the pre-vote round before campaigning.
        check_quorum: leaders step down without a majority's acks within L.
        lease_timeout: ``L``, with ``heartbeat_interval < L < E``; default
            :func:`default_lease_timeout`.
    """

    name: str
    election_timeout: float
    heartbeat_interval: float
    lease_timeout: float
    pre_vote: bool
    check_quorum: bool
    term: int
    voted_for: str | None
    role: Role
    leader: str | None
    _voters: frozenset[str]
    _rng: random.Random
    _abstain_until: float | None
    _election_deadline: float | None
    _heartbeat_deadline: float | None
    _leader_since: float
    _last_leader_contact: float | None
    _acks: dict[str, float]
    _pre_votes: set[str]
    _votes: set[str]
    _actions: list[Action]
    _events: list[LeaderChange]
    _announced: tuple[int, str | None]

    def __init__(
        self,
        *,
        name: str,
        voters: Iterable[str],
        election_timeout: float,
        heartbeat_interval: float,
        rng: random.Random,
        now: float,
        persisted: tuple[int, str | None] | None = None,
        abstain_until: float | None = None,
        pre_vote: bool = True,
        check_quorum: bool = True,
        lease_timeout: float | None = None,
    ) -> None:
        for label, value in (
            ("election_timeout", election_timeout),
            ("heartbeat_interval", heartbeat_interval),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        if lease_timeout is None:
            lease_timeout = default_lease_timeout(election_timeout, heartbeat_interval)
        if not heartbeat_interval < lease_timeout < election_timeout:
            raise ValueError(
                f"need heartbeat_interval ({heartbeat_interval}) < lease_timeout "
                f"({lease_timeout}) < election_timeout ({election_timeout})"
            )
        term, voted_for = persisted if persisted is not None else (0, None)
        if type(term) is not int or not 0 <= term <= MAX_TERM:
            raise ValueError(f"persisted term must be an int in [0, 2**63), got {term!r}")
        self.name = name
        self.election_timeout = float(election_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.lease_timeout = float(lease_timeout)
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.term = term
        self.voted_for = voted_for
        self.role = Role.FOLLOWER
        self.leader = None
        self._voters = frozenset(voters)
        self._rng = rng
        self._abstain_until = abstain_until
        self._election_deadline = None
        self._heartbeat_deadline = None
        self._leader_since = now
        self._last_leader_contact = None
        self._acks = {}
        self._pre_votes = set()
        self._votes = set()
        self._actions = []
        self._events = []
        self._announced = (term, None)
        self._arm_election_timer(now)

    # ------------------------------------------------------------ queries

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def voters(self) -> frozenset[str]:
        return self._voters

    @property
    def quorum(self) -> int:
        """Votes (or acks, the leader's own included) needed: a majority."""
        return len(self._voters) // 2 + 1

    def lease_expiry(self) -> float | None:
        """Leader only: when check-quorum will step down unless more acks come
        (``s_q + L``); ``None`` when not leader."""
        if self.role is not Role.LEADER:
            return None
        return self._quorum_stamp() + self.lease_timeout

    def next_deadline(self) -> float | None:
        if self.role is Role.LEADER:
            deadline = self._heartbeat_deadline
            expiry = self._quorum_stamp() + self.lease_timeout
            if self.check_quorum and math.isfinite(expiry):
                deadline = expiry if deadline is None else min(deadline, expiry)
            return deadline
        return self._election_deadline

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def take_events(self) -> list[LeaderChange]:
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------- inputs

    def set_voters(self, now: float, voters: Iterable[str]) -> None:
        voters = frozenset(voters)
        if self.role is Role.LEADER:
            # Newcomers get the grace a fresh leader gets: a lease from now,
            # so growing the set does not depose a leader before they can ack.
            for voter in voters - self._voters:
                self._acks[voter] = now
        self._voters = voters
        self._acks = {v: s for v, s in self._acks.items() if v in voters}
        self._pre_votes &= self._voters
        self._votes &= self._voters
        if self.name not in self._voters:
            if self.role is Role.LEADER:
                self._become_follower(now, leader=None)
            elif self.role is not Role.FOLLOWER:
                self._become_follower(now, leader=self.leader)
            self._election_deadline = None
            self._announce()
            return
        if self.role is Role.LEADER:
            if self._check_quorum(now) and self._heartbeat_deadline is None:
                self._broadcast_heartbeat(now)
        elif self.role is Role.PRE_CANDIDATE and len(self._pre_votes) >= self.quorum:
            self._campaign(now)
        elif self.role is Role.CANDIDATE and len(self._votes) >= self.quorum:
            self._become_leader(now)
        elif self._election_deadline is None:
            self._arm_election_timer(now)
        self._announce()

    def tick(self, now: float) -> None:
        if self.role is Role.LEADER:
            if self.check_quorum and not self._check_quorum(now):
                self._announce()
                return
            if self._heartbeat_deadline is not None and now >= self._heartbeat_deadline:
                self._broadcast_heartbeat(now)
        elif self._election_deadline is not None and now >= self._election_deadline:
            self._election_timeout(now)
        self._announce()

    def receive(self, now: float, source: str, message: Message) -> None:
        match message:
            case PreVote():
                self._on_pre_vote(now, source, message)
            case PreVoteReply():
                self._on_pre_vote_reply(now, source, message)
            case Vote():
                self._on_vote(now, source, message)
            case VoteReply():
                self._on_vote_reply(now, source, message)
            case Heartbeat():
                self._on_heartbeat(now, source, message)
            case HeartbeatAck():
                self._on_heartbeat_ack(now, source, message)
            case _:
                raise TypeError(f"not a raft message: {message!r}")
        self._announce()

    # ------------------------------------------------------------ handlers

    def _on_pre_vote(self, now: float, source: str, message: PreVote) -> None:
        if self._abstaining(now):
            return
        if source not in self._voters or message.term <= self.term:
            self._send(source, PreVoteReply(self.term, message.term, granted=False))
            return
        if self._in_lease(now):
            return  # stickiness: a leader is alive, the asker is the one cut off
        self._send(source, PreVoteReply(self.term, message.term, granted=True))

    def _on_pre_vote_reply(self, now: float, source: str, message: PreVoteReply) -> None:
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=None)
            return
        if (
            self.role is Role.PRE_CANDIDATE
            and message.granted
            and message.proposed_term == self.term + 1
            and source in self._voters
        ):
            self._pre_votes.add(source)
            if len(self._pre_votes) >= self.quorum:
                self._campaign(now)

    def _on_vote(self, now: float, source: str, message: Vote) -> None:
        if self._abstaining(now):
            return
        if source not in self._voters:
            self._send(source, VoteReply(self.term, granted=False))
            return
        if message.term >= self.term and self._in_lease(now):
            return  # stickiness: do not even adopt the term
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=None)
        if message.term < self.term or self.voted_for not in (None, source):
            self._send(source, VoteReply(self.term, granted=False))
            return
        if self.voted_for is None:
            self.voted_for = source
            self._persist()
        # Granting a vote restarts the timer, as hearing from a leader does.
        self._arm_election_timer(now)
        self._send(source, VoteReply(self.term, granted=True))

    def _on_vote_reply(self, now: float, source: str, message: VoteReply) -> None:
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=None)
            return
        if (
            self.role is Role.CANDIDATE
            and message.granted
            and message.term == self.term
            and source in self._voters
        ):
            self._votes.add(source)
            if len(self._votes) >= self.quorum:
                self._become_leader(now)

    def _on_heartbeat(self, now: float, source: str, message: Heartbeat) -> None:
        if message.term < self.term:
            # A deposed leader: tell it the current term so it steps down.
            self._send(source, HeartbeatAck(self.term, message.stamp))
            return
        if message.term == self.term and self.role is Role.LEADER:
            # Two leaders in one term: impossible while every voter set
            # agrees, possible when they diverged (two nodes that each led
            # alone before membership merged them). Never follow the rival;
            # both step down (it gets our heartbeat too) and a fresh
            # election over the merged set settles it.
            self._become_follower(now, leader=None)
            return
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=source)
        elif self.role is not Role.FOLLOWER or self.leader != source:
            self._become_follower(now, leader=source)
        self._last_leader_contact = now
        self._arm_election_timer(now)
        self._send(source, HeartbeatAck(self.term, message.stamp))

    def _on_heartbeat_ack(self, now: float, source: str, message: HeartbeatAck) -> None:
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=None)
            return
        if (
            self.role is Role.LEADER
            and message.term == self.term
            and source in self._voters
            and self._leader_since <= message.stamp <= now
        ):
            self._acks[source] = max(self._acks.get(source, message.stamp), message.stamp)

    # -------------------------------------------------------- transitions

    def _election_timeout(self, now: float) -> None:
        self._arm_election_timer(now)
        if self.leader is not None:
            self.leader = None  # silent for a whole timeout: no longer known
        if self._abstaining(now) or self.name not in self._voters:
            return
        if self.pre_vote:
            self.role = Role.PRE_CANDIDATE
            self._pre_votes = {self.name}
            for voter in self._others():
                self._send(voter, PreVote(self.term + 1))
            if len(self._pre_votes) >= self.quorum:
                self._campaign(now)
        else:
            self._campaign(now)

    def _campaign(self, now: float) -> None:
        self.role = Role.CANDIDATE
        self.term += 1
        self.voted_for = self.name
        self.leader = None
        self._persist()
        self._votes = {self.name}
        self._arm_election_timer(now)
        for voter in self._others():
            self._send(voter, Vote(self.term))
        if len(self._votes) >= self.quorum:
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        self.role = Role.LEADER
        self.leader = self.name
        self._leader_since = now
        self._acks = {}
        self._election_deadline = None
        self._broadcast_heartbeat(now)

    def _broadcast_heartbeat(self, now: float) -> None:
        others = self._others()
        for voter in others:
            self._send(voter, Heartbeat(self.term, now))
        # A lone voter has no one to tell: no timer until voters are added.
        self._heartbeat_deadline = now + self.heartbeat_interval if others else None

    def _check_quorum(self, now: float) -> bool:
        """Step down if the majority's acks are older than the lease; True if still leader."""
        if not self.check_quorum or now < self._quorum_stamp() + self.lease_timeout:
            return True
        self._become_follower(now, leader=None)
        return False

    def _quorum_stamp(self) -> float:
        """The send time of the oldest heartbeat a majority has acknowledged
        (the leader itself counts as acknowledging everything now)."""
        stamps = sorted(
            (
                math.inf if voter == self.name else self._acks.get(voter, self._leader_since)
                for voter in self._voters
            ),
            reverse=True,
        )
        if len(stamps) < self.quorum:
            return -math.inf
        return stamps[self.quorum - 1]

    def _adopt_term(self, now: float, term: int, *, leader: str | None) -> None:
        self.term = term
        self.voted_for = None
        self._persist()
        self._become_follower(now, leader=leader)

    def _become_follower(self, now: float, *, leader: str | None) -> None:
        was_leader = self.role is Role.LEADER
        self.role = Role.FOLLOWER
        self.leader = leader
        self._pre_votes = set()
        self._votes = set()
        self._heartbeat_deadline = None
        if leader is None:
            self._last_leader_contact = None
        if was_leader or self._election_deadline is None or leader is not None:
            self._arm_election_timer(now)

    # ------------------------------------------------------------ helpers

    def _arm_election_timer(self, now: float) -> None:
        if self.name not in self._voters:
            self._election_deadline = None
            return
        self._election_deadline = now + self._rng.uniform(
            self.election_timeout, 2 * self.election_timeout
        )
        # uniform(a, b) may return b through rounding; keep the draw in [E, 2E).
        if self._election_deadline >= now + 2 * self.election_timeout:
            self._election_deadline = now + self.election_timeout

    def _abstaining(self, now: float) -> bool:
        return self._abstain_until is not None and now < self._abstain_until

    def _in_lease(self, now: float) -> bool:
        if self.role is Role.LEADER:
            return True
        return (
            self.leader is not None
            and self._last_leader_contact is not None
            and now < self._last_leader_contact + self.election_timeout
        )

    def _others(self) -> list[str]:
        return sorted(v for v in self._voters if v != self.name)

    def _send(self, to: str, message: Message) -> None:
        self._actions.append(Send(to, message))

    def _persist(self) -> None:
        action = Persist(self.term, self.voted_for)
        if self._actions and isinstance(self._actions[-1], Persist):
            self._actions[-1] = action  # nothing was sent in between: one write will do
        else:
            self._actions.append(action)

    def _announce(self) -> None:
        known = (self.term, self.leader)
        last_term, last_leader = self._announced
        if self.leader != last_leader or (self.leader is not None and self.term != last_term):
            self._events.append(LeaderChange(self.term, self.leader))
        self._announced = known
