"""Raft-lite leader election as a sans-IO state machine (no log replication).

One :class:`ElectionCore` per node. The driver feeds it received messages
(:meth:`~ElectionCore.receive`), clock ticks (:meth:`~ElectionCore.tick`,
called once ``now >= next_deadline()``) and what membership knows
(:meth:`~ElectionCore.observe`), then drains
:meth:`~ElectionCore.take_actions` and :meth:`~ElectionCore.take_events`
after every call. Actions come in the order they must be carried out: a
:class:`Persist` precedes every :class:`Send` queued after it, and the driver
must make it durable (write and fsync) before doing those sends. The core
never reads a clock, never touches a socket and draws randomness only from
the ``rng`` it is given.

Rules (Ongaro's thesis, chapters 3, 4.1, 4.2.3, 6.4 and 9.6)
------------------------------------------------------------
* **Terms** only grow. Any message carrying a higher term makes the receiver
  adopt it and become a follower, except a pre-vote request (it only asks a
  question about the future) and a vote request ignored by stickiness.
* **Randomized timeouts**: a follower, pre-candidate or candidate that hears
  nothing for a timeout drawn uniformly from ``[E, 2E)`` (drawn afresh every
  time the timer is armed) starts an election.
* **Pre-vote**: before bumping its term, a would-be candidate asks every
  voter "would you vote for me at ``term + 1``?". A voter says yes only if
  it would grant the vote and it has not heard from a leader within ``E``.
  Only with enough yeses does the node become a candidate, so a node cut off
  from the majority never inflates its term and cannot depose a healthy
  leader when it comes back.
* **One vote per term**, persisted: a candidate votes for itself, a voter
  grants at most one candidate per term, and the state is queued as a
  :class:`Persist` before the reply that depends on it.
* **The configuration** is the voter set with a *version* ``(term, index)``
  (what raft's last log entry would be: this core keeps no log, only the
  newest configuration entry). It is persisted with ``(term, voted_for)``.
  Votes and acks count only from the voter set the node has accepted; a
  node outside its voter set never campaigns. A voter grants (pre-)votes
  only to a candidate whose version is at least its own (raft's
  "up-to-date" rule), so every leader holds the newest committed set.
* **Majority of the voter set**: ``len(voters) // 2 + 1``.
* **Heartbeats** carry the leader's configuration: a leader sends
  :class:`Heartbeat` to every other voter every ``heartbeat_interval`` (and
  at once on winning or changing the set); followers adopt the set and
  version they carry and answer with :class:`HeartbeatAck`, echoing the
  ``stamp`` (the leader's clock at sending) and the version they now hold.
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
  ``(heartbeat_interval, E)`` when the heartbeat interval is above that). A
  fresh leader gets ``L`` of grace from the moment it won, and so does a
  voter added to a leader's set. A voter restarted *with* persisted state
  has forgotten when it last heard from the leader, so a driver that relies
  on :meth:`ElectionCore.lease_expiry` should pass ``abstain_until = now +
  E`` on every restart. A pause (SIGSTOP, GC, blocked fsync) of the leader
  breaks any lease argument; the term is the fencing token that stays safe.
* **Abstention after a restart without persisted state**: a node built with
  ``abstain_until`` neither votes, pre-votes nor campaigns before that time
  (the driver passes ``now + 2E``). It follows a leader it hears from. This
  narrows, but does not close, the window in which a node that forgot its
  vote could vote twice in one term; only ``persisted`` closes it.

Forming a cluster (bootstrap)
-----------------------------
A node starts *unconfigured* (version ``(0, 0)``, no voters) unless it is
given a voter set or a persisted configuration. The driver tells it which
members exist (:meth:`~ElectionCore.observe`); the core keeps the union of
what it was told (its *known* set ``K``, less members that left). An
unconfigured node never campaigns and never counts itself a cluster until
``|K| >= bootstrap_expect`` (Consul's ``bootstrap_expect``) and the driver
has not put bootstrapping on hold (a node still joining through seeds). It
then campaigns with the proposal ``P = K``: its (pre-)vote requests carry
``P``, and a voter grants only if it is unconfigured too and its own ``K``
equals ``P``. The bootstrap win needs *every* member of ``P`` (a
unanimous vote, not a majority). The winner installs ``P`` with version
``(term, 1)``; everyone else adopts it from the heartbeats. A configured
node refuses every bootstrap request, so nodes joining an existing cluster
can never bootstrap a second one: they wait for its leader to add them.

Voter-set changes (raft's single-server changes, thesis 4.1)
------------------------------------------------------------
Gossip tells the leader who exists; it no longer decides who votes. A
leader first gets its own configuration acknowledged by a majority in its
term (it re-stamps the version as ``(term, index + 1)`` on winning: the
no-op entry raft commits before any change). Then, one change at a time,
it adds a live member that is not a voter or removes a voter that left or
was removed (:class:`Remove`, sent to the leader by any node), installs
the new set at once with ``(term, index + 1)``, and starts the next change
only when a majority of the *new* set acknowledged it. Crashed voters stay
voters.

Voter cap and learners
----------------------
With ``max_voters`` set, a leader adds live members only while the set is
smaller than the cap; the other live members are *learners*. A learner
holds the configuration (version and voters) like any node, but has no
election timer, never campaigns, and never answers a heartbeat (the
leader counts voters' acks only). The leader tells learners that it leads
with the same :class:`Heartbeat` (its term, configuration and clock), sent
to every learner at once on winning, to a member that becomes alive as
soon as membership reports it, and otherwise every ``learner_interval``
(not every ``heartbeat_interval``). A learner forgets a leader it has not
heard from for :data:`LEARNER_SILENCE` intervals. A learner follows the
highest term it hears, so a deposed leader cannot take it back.

Voter replacement is two single-server changes made by the leader, each
committed before the next: a voter that membership declared *failed*
(dead, not merely suspect) is removed only when a live learner can take
its place, and that learner is added by the following change. A crash
therefore never shrinks a set that has no replacement (at or below the
cap nothing changes), and every step is the raft rule above. A set above
the cap (the cap was lowered) is shed one voter per change, unreachable
voters first.

With a cap, the bootstrap is asked for only by the members a bootstrap
would make voters (the first ``max_voters`` names of the known set), and
the winner installs itself and the first ``max_voters - 1`` other names of
the proposal; everyone else in the proposal becomes a learner. The rule
that grants a bootstrap vote is unchanged (unanimity of the proposal, equal
known sets), so the argument below holds as it is: it only restricts who
asks and what the winner installs, which any leader may choose.

Why no term has two leaders (design note)
-----------------------------------------
Within one configuration history this is raft's argument: a leader of
term ``T`` holds votes of a majority of the set it held; consecutive sets
differ by one member, so any two majorities of sets a leader could hold at
``T`` intersect (a set is only replaced once a majority of its successor
holds it, and the up-to-date check keeps candidates with an older set from
collecting a majority), and the voter in the intersection votes once in
``T``. So two sides of a partition cannot both lead ``T``: at most one can
have had a quorum, and the other never reaches a term of its own by
pre-vote. When they merge there is nothing to repeat.

Two *histories* could only begin with two bootstraps, and two bootstraps
cannot both win when their proposals intersect. Let ``W1`` win ``(T1, P1)``
and ``W2`` win ``(T2, P2)`` with a common member ``x`` (any two proposals
intersect when ``bootstrap_expect`` is more than half of the nodes started
together). If ``T1 = T2``, ``x`` voted twice in one term. Otherwise say
``T1 < T2``: ``x`` granted both while unconfigured, with ``K = P1`` and then
``K = P2``; ``K`` only grows, so ``W1`` is in ``P2`` and had to grant
``W2``'s unanimous vote in ``T2``. It cannot have done so after winning
``T1`` (it was configured, and it persisted that), nor before (then its
term was already ``T2`` and it could not win ``T1``). Hence one history,
and in it at most one leader per term, whatever the start order: nodes that
start alone do not elect themselves (``|K| < bootstrap_expect``), and late
or slow nodes join a configuration instead of making their own. The
argument assumes persisted state where nodes restart (``state_dir``; a
node restarted without it is unconfigured again and relies on abstention)
and that no member of a proposal leaves gracefully while the cluster forms
(a member that left is dropped from ``K``).

Cluster sizes
-------------
* **1 voter**: the node is a majority on its own and stays leader for ever;
  check-quorum never fires.
* **2 voters**: both are needed to elect, and a leader whose peer stops
  acknowledging steps down after ``L``. One node down means no leader.
* **3 voters**: any one node may fail or be cut off and the other two
  elect (or keep) a leader.

Wire
----
Every message is a CBOR array of plain values (:func:`encode_message`),
first element the message kind. :func:`decode_message` accepts only the
exact shapes this module produces and raises :class:`RaftDecodeError` for
anything else. The sender is not in the message: the transport knows which
authenticated peer sent it. Voter sets travel in heartbeats and bootstrap
requests, so a message is at most :data:`MAX_MESSAGE_SIZE` bytes.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable
from typing import Any, Final, TypeAlias

import attrs
import cbor2

from trio_distribute.errors import DecodeError

from ._cbor import TagTable, decode_one

__all__ = [
    "MAX_MESSAGE_SIZE",
    "MAX_TERM",
    "UNCONFIGURED",
    "Action",
    "ElectionCore",
    "Heartbeat",
    "HeartbeatAck",
    "LeaderChange",
    "MemberView",
    "Message",
    "Persist",
    "PreVote",
    "PreVoteReply",
    "RaftDecodeError",
    "Remove",
    "Role",
    "Send",
    "Version",
    "Vote",
    "VoteReply",
    "decode_message",
    "default_lease_timeout",
    "encode_message",
]

MAX_TERM: Final = 2**63 - 1
"""Terms and version indexes are non-negative ints up to this (an int64)."""

MAX_MESSAGE_SIZE: Final = 256 * 1024
"""Largest encoded message accepted: a voter set of about 800 names of the
longest legal length (318 characters), or thousands of typical ones."""

MAX_NAME_LENGTH: Final = 318
"""A node name is at most 64 + 1 + 253 characters (``short@host``)."""

Version: TypeAlias = tuple[int, int]
"""A configuration's version ``(term, index)``, compared as a tuple."""

UNCONFIGURED: Final[Version] = (0, 0)
"""The version of a node that holds no voter set yet."""

STATIC: Final[Version] = (0, 1)
"""The version of a voter set given to the core at creation."""

LEARNER_SILENCE: Final = 3
"""A learner forgets its leader after this many ``learner_interval`` without
hearing from it (the leader may have stepped down without a successor)."""


# --------------------------------------------------------------------- wire


@attrs.frozen
class PreVote:
    """ "Would you vote for me at ``term``?" (``term`` = the sender's term + 1).

    ``version`` is the sender's configuration version; ``proposal`` the
    voter set it would bootstrap (``None`` unless it is unconfigured). Never
    changes anyone's term.
    """

    term: int
    version: Version = STATIC
    proposal: tuple[str, ...] | None = None


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
    """A candidate in ``term`` asks for the receiver's vote (``version`` and
    ``proposal`` as in :class:`PreVote`)."""

    term: int
    version: Version = STATIC
    proposal: tuple[str, ...] | None = None


@attrs.frozen
class VoteReply:
    """The answer to a :class:`Vote`; ``term`` is the replier's term."""

    term: int
    granted: bool


@attrs.frozen
class Heartbeat:
    """The leader of ``term`` is alive; ``stamp`` is its clock at sending;
    ``version`` and ``voters`` its configuration (followers adopt it)."""

    term: int
    stamp: float
    version: Version = STATIC
    voters: tuple[str, ...] = ()


@attrs.frozen
class HeartbeatAck:
    """The answer to a :class:`Heartbeat`: the replier's ``term``, the
    heartbeat's ``stamp`` echoed back (the leader's lease is measured from
    it) and the configuration version the replier now holds."""

    term: int
    stamp: float
    version: Version = STATIC


@attrs.frozen
class Remove:
    """Ask the leader to take ``name`` out of the voter set (it left, or an
    operator removed it)."""

    name: str


Message: TypeAlias = PreVote | PreVoteReply | Vote | VoteReply | Heartbeat | HeartbeatAck | Remove

_PRE_VOTE: Final = 1
_PRE_VOTE_REPLY: Final = 2
_VOTE: Final = 3
_VOTE_REPLY: Final = 4
_HEARTBEAT: Final = 5
_HEARTBEAT_ACK: Final = 6
_REMOVE: Final = 7


class RaftDecodeError(ValueError):
    """Bytes that are not a well-formed raft-lite message."""


def _names(names: tuple[str, ...] | None) -> list[str] | None:
    return None if names is None else list(names)


def encode_message(message: Message) -> bytes:
    """The wire form of ``message``: CBOR of a plain array."""
    fields: list[Any]
    match message:
        case PreVote(term=term, version=(vt, vi), proposal=proposal):
            fields = [_PRE_VOTE, term, vt, vi, _names(proposal)]
        case PreVoteReply(term=term, proposed_term=proposed, granted=granted):
            fields = [_PRE_VOTE_REPLY, term, proposed, granted]
        case Vote(term=term, version=(vt, vi), proposal=proposal):
            fields = [_VOTE, term, vt, vi, _names(proposal)]
        case VoteReply(term=term, granted=granted):
            fields = [_VOTE_REPLY, term, granted]
        case Heartbeat(term=term, stamp=stamp, version=(vt, vi), voters=voters):
            fields = [_HEARTBEAT, term, float(stamp), vt, vi, list(voters)]
        case HeartbeatAck(term=term, stamp=stamp, version=(vt, vi)):
            fields = [_HEARTBEAT_ACK, term, float(stamp), vt, vi]
        case Remove(name=name):
            fields = [_REMOVE, name]
        case _:
            raise TypeError(f"not a raft message: {message!r}")
    return cbor2.dumps(fields)


# Raft messages carry no tags; the kernel's restricted decoder refuses
# every tag at its head (see trio_distribute._proto._cbor).
_NO_TAGS: Final = TagTable(context="a raft message")


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
    try:
        value = decode_one(data, tags=_NO_TAGS, max_depth=3)
    except DecodeError as exc:
        raise RaftDecodeError(str(exc)) from None
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
            return PreVote(rest[0], (rest[1], rest[2]), _tuple(rest[3]))
        case 2:
            return PreVoteReply(rest[0], rest[1], rest[2])
        case 3:
            return Vote(rest[0], (rest[1], rest[2]), _tuple(rest[3]))
        case 4:
            return VoteReply(rest[0], rest[1])
        case 5:
            return Heartbeat(rest[0], float(rest[1]), (rest[2], rest[3]), tuple(rest[4]))
        case 6:
            return HeartbeatAck(rest[0], float(rest[1]), (rest[2], rest[3]))
        case _:
            return Remove(rest[0])


def _tuple(names: list[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


def _check_term(value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TERM:
        raise RaftDecodeError(f"bad term {value!r}")


def _check_flag(value: object) -> None:
    if type(value) is not bool:
        raise RaftDecodeError(f"bad flag {value!r}")


def _check_stamp(value: object) -> None:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise RaftDecodeError(f"bad stamp {value!r}")


def _check_name(value: object) -> None:
    if type(value) is not str or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise RaftDecodeError(f"bad node name {value!r}")


def _check_names(value: object) -> None:
    if type(value) is not list:
        raise RaftDecodeError(f"bad voter set {value!r}")
    for name in value:
        _check_name(name)
    if len(set(value)) != len(value):
        raise RaftDecodeError("a name twice in one voter set")


def _check_proposal(value: object) -> None:
    if value is not None:
        _check_names(value)


_SHAPES: Final = {
    _PRE_VOTE: (_check_term, _check_term, _check_term, _check_proposal),
    _PRE_VOTE_REPLY: (_check_term, _check_term, _check_flag),
    _VOTE: (_check_term, _check_term, _check_term, _check_proposal),
    _VOTE_REPLY: (_check_term, _check_flag),
    _HEARTBEAT: (_check_term, _check_stamp, _check_term, _check_term, _check_names),
    _HEARTBEAT_ACK: (_check_term, _check_stamp, _check_term, _check_term),
    _REMOVE: (_check_name,),
}


# ------------------------------------------------------- actions and events


@attrs.frozen
class Persist:
    """Write ``(term, voted_for)`` and the configuration (``version``,
    ``voters``) durably before carrying out later actions."""

    term: int
    voted_for: str | None
    version: Version = UNCONFIGURED
    voters: tuple[str, ...] = ()


@attrs.frozen
class Send:
    """Send ``message`` to the node named ``to`` (over the reliable stream)."""

    to: str
    message: Message


Action: TypeAlias = Persist | Send


@attrs.frozen(slots=True)
class MemberView:
    """What membership knows of one member, for
    :meth:`ElectionCore.observe_changes`: whether it counts as ``known``
    (any status but left, or remembered from before a restart), is
    ``alive`` (not suspect), has ``departed`` (left, or removed by an
    operator) or ``failed`` (declared dead)."""

    name: str
    known: bool
    alive: bool
    departed: bool
    failed: bool


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
        voters: a voter set to start with (a static configuration, version
            ``(0, 1)``); empty or omitted: start unconfigured and bootstrap.
        election_timeout: ``E``; timeouts are drawn from ``[E, 2E)``.
        heartbeat_interval: how often a leader sends heartbeats (``< L``).
        rng: the only source of randomness.
        now: the driver's clock at creation.
        persisted: the last :class:`Persist` (or ``(term, voted_for)``)
            restored from durable storage; its configuration, if any, wins
            over ``voters``.
        abstain_until: neither vote nor campaign before this time (a restart
            without persisted state; pass ``now + 2E``).
        pre_vote: run the pre-vote round before campaigning.
        check_quorum: leaders step down without a majority's acks within L.
        lease_timeout: ``L``, with ``heartbeat_interval < L < E``; default
            :func:`default_lease_timeout`.
        bootstrap_expect: an unconfigured node campaigns only once it knows
            at least this many members (itself included).
        max_voters: the most voters a leader keeps (``None``: every live
            member votes). Other members are *learners* (see "Voter cap").
        learner_interval: how often a leader tells learners that it leads
            (``None``: never); a learner forgets a leader it has not heard
            from for :data:`LEARNER_SILENCE` intervals.
    """

    name: str
    election_timeout: float
    heartbeat_interval: float
    lease_timeout: float
    pre_vote: bool
    check_quorum: bool
    bootstrap_expect: int
    max_voters: int | None
    learner_interval: float | None
    term: int
    voted_for: str | None
    role: Role
    leader: str | None
    version: Version
    _voters: frozenset[str]
    _known: set[str]
    _alive: set[str]
    _failed: set[str]
    _departed: set[str]
    _hold: bool
    _retiring: bool
    _proposal: frozenset[str] | None
    _rng: random.Random
    _abstain_until: float | None
    _election_deadline: float | None
    _heartbeat_deadline: float | None
    _learner_deadline: float | None
    _leader_since: float
    _last_leader_contact: float | None
    _acks: dict[str, float]
    _acked_versions: dict[str, Version]
    _committed: bool
    _pre_votes: set[str]
    _votes: set[str]
    _actions: list[Action]
    _events: list[LeaderChange]
    _announced: tuple[int, str | None]

    def __init__(
        self,
        *,
        name: str,
        election_timeout: float,
        heartbeat_interval: float,
        rng: random.Random,
        now: float,
        voters: Iterable[str] = (),
        persisted: Persist | tuple[int, str | None] | None = None,
        abstain_until: float | None = None,
        pre_vote: bool = True,
        check_quorum: bool = True,
        lease_timeout: float | None = None,
        bootstrap_expect: int = 1,
        max_voters: int | None = None,
        learner_interval: float | None = None,
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
        if type(bootstrap_expect) is not int or bootstrap_expect < 1:
            raise ValueError(f"bootstrap_expect must be an int >= 1, got {bootstrap_expect!r}")
        if max_voters is not None and (type(max_voters) is not int or max_voters < 1):
            raise ValueError(f"max_voters must be an int >= 1 or None, got {max_voters!r}")
        if learner_interval is not None and not (
            math.isfinite(learner_interval) and learner_interval > 0
        ):
            raise ValueError(
                f"learner_interval must be a positive number, got {learner_interval!r}"
            )
        voter_set = frozenset(voters)
        version = STATIC if voter_set else UNCONFIGURED
        if isinstance(persisted, Persist):
            term, voted_for = persisted.term, persisted.voted_for
            if persisted.version != UNCONFIGURED:
                version, voter_set = persisted.version, frozenset(persisted.voters)
        elif persisted is not None:
            term, voted_for = persisted
        else:
            term, voted_for = 0, None
        if type(term) is not int or not 0 <= term <= MAX_TERM:
            raise ValueError(f"persisted term must be an int in [0, 2**63), got {term!r}")
        self.name = name
        self.election_timeout = float(election_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.lease_timeout = float(lease_timeout)
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.bootstrap_expect = bootstrap_expect
        self.max_voters = max_voters
        self.learner_interval = None if learner_interval is None else float(learner_interval)
        self.term = term
        self.voted_for = voted_for
        self.role = Role.FOLLOWER
        self.leader = None
        self.version = version
        self._voters = voter_set
        self._known = {name}
        self._alive = set()
        self._failed = set()
        self._departed = set()
        self._hold = False
        self._retiring = False
        self._proposal = None
        self._rng = rng
        self._abstain_until = abstain_until
        self._election_deadline = None
        self._heartbeat_deadline = None
        self._learner_deadline = None
        self._leader_since = now
        self._last_leader_contact = None
        self._acks = {}
        self._acked_versions = {}
        self._committed = False
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
        """The accepted voter set (empty while unconfigured)."""
        return self._voters

    @property
    def configured(self) -> bool:
        """Whether this node holds a voter set (it bootstrapped or was given one)."""
        return self.version != UNCONFIGURED

    @property
    def known(self) -> frozenset[str]:
        """The members this node was told of (what a bootstrap would propose)."""
        return frozenset(self._known)

    @property
    def committed(self) -> bool:
        """Leader only: a majority of the voter set holds the current version."""
        return self.role is Role.LEADER and self._committed

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
            if self._learner_deadline is not None:
                deadline = (
                    self._learner_deadline
                    if deadline is None
                    else min(deadline, self._learner_deadline)
                )
            if self.check_quorum:
                expiry = self._quorum_stamp() + self.lease_timeout
                if math.isfinite(expiry):
                    deadline = expiry if deadline is None else min(deadline, expiry)
            return deadline
        # A voter waits for its election timer; a learner (no election
        # timer) only for the moment it forgets a silent leader.
        if self._election_deadline is not None:
            return self._election_deadline
        return self._learner_deadline

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def take_events(self) -> list[LeaderChange]:
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------- inputs

    def observe(
        self,
        now: float,
        *,
        known: Iterable[str],
        alive: Iterable[str] = (),
        departed: Iterable[str] = (),
        failed: Iterable[str] = (),
    ) -> None:
        """What membership knows: ``known`` members (any status but left),
        the ``alive`` ones among them, ``departed`` ones (left or removed)
        and ``failed`` ones (declared dead, not merely suspected). Before
        bootstrap this grows the known set; a leader adds live non-voters
        (up to ``max_voters``), removes departed voters, and replaces failed
        voters when a live learner can take their place, one change at a
        time; it tells learners it has not told yet that it leads."""
        departed = set(departed)
        before = self._alive
        self._departed = (self._departed | departed) - set(alive)
        self._known = ((self._known | set(known)) - departed) | {self.name}
        self._alive = set(alive)
        self._failed = set(failed)
        if self.name in departed:
            self.retire(now)
        self._observed(now, self._alive - before)

    def observe_changes(self, now: float, changes: Iterable[MemberView]) -> None:
        """What membership knows now of the members in ``changes`` (one
        :class:`MemberView` per member, its whole classification): the same
        as :meth:`observe` given the full sets with these members updated,
        at a cost proportional to the changes rather than to the cluster (a
        join storm brings thousands of changes to every node, and a look at
        the full sets per change made it quadratic)."""
        became_alive: set[str] = set()
        retire = False
        for view in changes:
            name = view.name
            if view.alive:
                if name not in self._alive:
                    self._alive.add(name)
                    became_alive.add(name)
                self._departed.discard(name)
            else:
                self._alive.discard(name)
                became_alive.discard(name)
            if view.failed:
                self._failed.add(name)
            else:
                self._failed.discard(name)
            if view.departed and not view.alive:
                self._departed.add(name)
                if name == self.name:
                    retire = True
                else:
                    self._known.discard(name)
            elif view.known:
                self._known.add(name)
        if retire:
            self.retire(now)
        self._observed(now, became_alive)

    def _observed(self, now: float, became_alive: set[str]) -> None:
        if self.role is Role.LEADER:
            # Newcomers learn the leader at once, not at the next round (one
            # the leader then makes a voter hears again at once, as a voter).
            fresh = sorted(became_alive - self._voters - self._departed)
            self._tell_learners(now, fresh, everyone=False)
            self._reconfigure(now)
        elif self._election_deadline is None:
            self._arm_election_timer(now)
        self._announce()

    def hold_bootstrap(self, now: float, hold: bool) -> None:
        """While ``hold`` is true an unconfigured node does not bootstrap (the
        driver sets it while the node is still joining through seeds)."""
        self._hold = hold

    def request_removal(self, now: float, name: str) -> None:
        """Take ``name`` out of the voter set: at once if this node leads,
        else by asking the leader it knows (:class:`Remove`)."""
        self._departed.add(name)
        self._known.discard(name)
        if self.role is Role.LEADER:
            self._reconfigure(now)
        elif self.leader is not None and self.leader != self.name:
            self._send(self.leader, Remove(name))
        self._announce()

    def retire(self, now: float) -> None:
        """This node is leaving: it steps down and never campaigns again; the
        next leader removes it from the voter set."""
        self._retiring = True
        if self.role is not Role.FOLLOWER:
            self._become_follower(now, leader=None)
        self._announce()

    def set_voters(self, now: float, voters: Iterable[str]) -> None:
        """Install ``voters`` at once, keeping the version (a static
        reconfiguration for tests and tools; the node driver lets the leader
        change the set instead)."""
        voters = frozenset(voters)
        if self.version == UNCONFIGURED and voters:
            self.version = STATIC
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
        elif self.role is Role.PRE_CANDIDATE and len(self._pre_votes) >= self._round_quorum():
            self._campaign(now)
        elif self.role is Role.CANDIDATE and len(self._votes) >= self._round_quorum():
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
            if self._learner_deadline is not None and now >= self._learner_deadline:
                self._tell_learners(now, self._learners(), everyone=True)
        elif self._election_deadline is not None and now >= self._election_deadline:
            self._election_timeout(now)
        elif self._learner_deadline is not None and now >= self._learner_deadline:
            # A learner that heard nothing for LEARNER_SILENCE rounds.
            self._learner_deadline = None
            self.leader = None
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
            case Remove():
                if self.role is Role.LEADER and source in self._voters:
                    self.request_removal(now, message.name)
            case _:
                raise TypeError(f"not a raft message: {message!r}")
        self._announce()

    # ------------------------------------------------------------ handlers

    def _may_grant(self, source: str, version: Version, proposal: tuple[str, ...] | None) -> bool:
        """Whether a (pre-)vote for ``source`` passes the configuration checks."""
        if proposal is None:
            # A configured candidate: it must be one of our voters (if we
            # know any) and hold a configuration at least as new as ours.
            if self.configured and source not in self._voters:
                return False
            return version != UNCONFIGURED and version >= self.version
        # A bootstrap: only between unconfigured nodes that know the same
        # members, so every member of the proposal agrees on it.
        return (
            not self.configured
            and version == UNCONFIGURED
            and frozenset(proposal) == self._known
            and source in self._known
        )

    def _on_pre_vote(self, now: float, source: str, message: PreVote) -> None:
        if self._abstaining(now):
            return
        if message.term <= self.term or not self._may_grant(
            source, message.version, message.proposal
        ):
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
            and source in self._round_voters()
        ):
            self._pre_votes.add(source)
            if len(self._pre_votes) >= self._round_quorum():
                self._campaign(now)

    def _on_vote(self, now: float, source: str, message: Vote) -> None:
        if self._abstaining(now):
            return
        if (self.configured and source not in self._voters) or (
            message.proposal is not None and self.configured
        ):
            # Not one of ours, or a bootstrap while we already have a
            # cluster: refuse without adopting its term.
            self._send(source, VoteReply(self.term, granted=False))
            return
        if message.term >= self.term and self._in_lease(now):
            return  # stickiness: do not even adopt the term
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=None)
        if (
            message.term < self.term
            or self.voted_for not in (None, source)
            or not self._may_grant(source, message.version, message.proposal)
        ):
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
            and source in self._round_voters()
        ):
            self._votes.add(source)
            if len(self._votes) >= self._round_quorum():
                self._become_leader(now)

    def _on_heartbeat(self, now: float, source: str, message: Heartbeat) -> None:
        if message.term < self.term:
            # A deposed leader: tell it the current term so it steps down.
            self._send(source, HeartbeatAck(self.term, message.stamp, self.version))
            return
        if message.term == self.term and self.role is Role.LEADER:
            # Two leaders in one term: impossible by the argument in the
            # module docstring; if it happened anyway (a voter that lost its
            # state), never follow the rival: both step down and a fresh
            # election settles it.
            self._become_follower(now, leader=None)
            return
        if message.term > self.term:
            self._adopt_term(now, message.term, leader=source)
        elif self.role is not Role.FOLLOWER or self.leader != source:
            self._become_follower(now, leader=source)
        # The leader of the current term is the authority on the voter set
        # (raft's followers take the leader's log), newer or not.
        voters = frozenset(message.voters)
        if (message.version, voters) != (self.version, self._voters):
            self.version = message.version
            self._voters = voters
            self._persist()
        self._last_leader_contact = now
        self._arm_election_timer(now)
        if self.name in self._voters:
            self._learner_deadline = None
            self._send(source, HeartbeatAck(self.term, message.stamp, self.version))
        elif self.learner_interval is not None:
            # A learner does not answer: the leader counts only voters' acks,
            # and a thousand learners' acks would be its whole load.
            self._learner_deadline = now + LEARNER_SILENCE * self.learner_interval

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
            self._acked_versions[source] = message.version
            if not self._committed and self._holds_majority():
                self._committed = True
                self._reconfigure(now)

    # -------------------------------------------------------- transitions

    def _may_campaign(self) -> bool:
        if self._retiring:
            return False
        if self.configured:
            return self.name in self._voters
        if self._hold or len(self._known) < self.bootstrap_expect:
            return False
        # With a cap, only the members a bootstrap would make voters (the
        # first names of the known set) campaign: a thousand nodes forming a
        # cluster send a few proposals, not a thousand. This restricts who
        # asks, never who grants, so the bootstrap argument is unchanged.
        return self.max_voters is None or self.name in sorted(self._known)[: self.max_voters]

    def _election_timeout(self, now: float) -> None:
        self._arm_election_timer(now)
        if self.leader is not None:
            self.leader = None  # silent for a whole timeout: no longer known
        if self._abstaining(now) or not self._may_campaign():
            if self.role is not Role.FOLLOWER:
                # The round it started is over and it may not start another
                # (its name no longer sorts among the first of a grown known
                # set, or it abstains): a late grant must not make it campaign.
                self._become_follower(now, leader=None)
            return
        self._proposal = None if self.configured else frozenset(self._known)
        proposal = None if self._proposal is None else tuple(sorted(self._proposal))
        if self.pre_vote:
            self.role = Role.PRE_CANDIDATE
            self._pre_votes = {self.name}
            for voter in self._round_others():
                self._send(voter, PreVote(self.term + 1, self.version, proposal))
            if len(self._pre_votes) >= self._round_quorum():
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
        proposal = None if self._proposal is None else tuple(sorted(self._proposal))
        for voter in self._round_others():
            self._send(voter, Vote(self.term, self.version, proposal))
        if len(self._votes) >= self._round_quorum():
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        if self._proposal is not None:
            self._voters = self._capped(self._proposal)  # the bootstrap configuration
            self.version = (self.term, 1)
        else:
            # Raft's no-op entry: stamp the set with this term before any
            # change, so no candidate holding an older set can win again.
            self.version = (self.term, self.version[1] + 1)
        self._proposal = None
        self._persist()
        self.role = Role.LEADER
        self.leader = self.name
        self._leader_since = now
        self._acks = {}
        self._acked_versions = {}
        self._committed = self._holds_majority()
        self._election_deadline = None
        self._learner_deadline = None
        self._broadcast_heartbeat(now)
        self._tell_learners(now, self._learners(), everyone=True)
        if self._committed:
            self._reconfigure(now)

    def _capped(self, proposal: frozenset[str]) -> frozenset[str]:
        """The first voter set of a bootstrap won with ``proposal``: all of
        it, or with a cap the winner and the first names of the rest."""
        cap = self.max_voters
        if cap is None or len(proposal) <= cap:
            return proposal
        return frozenset([self.name, *sorted(proposal - {self.name})[: cap - 1]])

    def _reconfigure(self, now: float) -> None:
        """Leader: one voter change, once the current set is committed."""
        if self.role is not Role.LEADER or not self._committed:
            return
        if self.name in self._departed or self._retiring:
            self.retire(now)  # the next leader removes us
            return
        cap = self.max_voters
        leaving = sorted(self._voters & self._departed)
        joining = sorted(self._alive - self._voters - self._departed)
        if leaving:
            voters = self._voters - {leaving[0]}
        elif cap is not None and len(self._voters) > cap:
            # Above the cap (it was lowered, or set after the set grew): shed
            # one, an unreachable voter first, else the last name.
            down = sorted(self._voters - self._alive - {self.name})
            voters = self._voters - {down[0] if down else max(self._voters - {self.name})}
        elif joining and (cap is None or len(self._voters) < cap):
            voters = self._voters | {joining[0]}
            # A newcomer gets the grace a fresh leader gets: a lease from now.
            self._acks[joining[0]] = now
        elif joining and (failed := sorted((self._voters & self._failed) - {self.name})):
            # A voter declared dead while a live learner could vote in its
            # place: remove it; the next change adds the learner.
            voters = self._voters - {failed[0]}
        else:
            return
        self._voters = voters
        self.version = (self.term, self.version[1] + 1)
        self._acks = {v: s for v, s in self._acks.items() if v in voters}
        self._persist()
        self._committed = self._holds_majority()
        self._broadcast_heartbeat(now)
        if self._committed:
            self._reconfigure(now)  # a one-voter set commits at once

    def _holds_majority(self) -> bool:
        holders = sum(
            1 for v in self._voters if v == self.name or self._acked_versions.get(v) == self.version
        )
        return holders >= self.quorum

    def _broadcast_heartbeat(self, now: float) -> None:
        others = self._others()
        voters = tuple(sorted(self._voters))
        for voter in others:
            self._send(voter, Heartbeat(self.term, now, self.version, voters))
        # A lone voter has no one to tell: no timer until voters are added.
        self._heartbeat_deadline = now + self.heartbeat_interval if others else None

    def _learners(self) -> list[str]:
        """Leader: the live members outside the voter set."""
        return sorted(self._alive - self._voters - self._departed - {self.name})

    def _tell_learners(self, now: float, learners: list[str], *, everyone: bool) -> None:
        """Leader: tell ``learners`` who leads (a heartbeat they do not
        answer); ``everyone``: they are all of them (the periodic round)."""
        if self.learner_interval is None:
            return
        if learners:
            message = Heartbeat(self.term, now, self.version, tuple(sorted(self._voters)))
            for learner in learners:
                self._send(learner, message)
        if everyone:
            # No learners: no round until one appears (observe arms it).
            self._learner_deadline = now + self.learner_interval if learners else None
        elif learners and self._learner_deadline is None:
            self._learner_deadline = now + self.learner_interval

    def _check_quorum(self, now: float) -> bool:
        """Step down if the majority's acks are older than the lease; True if still leader."""
        if not self.check_quorum or now < self._quorum_stamp() + self.lease_timeout:
            return True
        self._become_follower(now, leader=None)
        return False

    def _quorum_stamp(self) -> float:
        """The send time of the oldest heartbeat a majority has acknowledged
        (the leader itself counts as acknowledging everything now)."""
        # Called for every deadline the driver reads: a plain list of the
        # others' stamps (at most max_voters - 1), sorted in place.
        quorum = self.quorum
        if len(self._voters) < quorum:
            return -math.inf
        acks, since, name = self._acks, self._leader_since, self.name
        stamps = [acks.get(voter, since) for voter in self._voters if voter != name]
        if len(stamps) < len(self._voters):
            quorum -= 1  # the leader itself, at infinity, is the first of the order
            if quorum == 0:
                return math.inf
        stamps.sort(reverse=True)
        return stamps[quorum - 1]

    def _adopt_term(self, now: float, term: int, *, leader: str | None) -> None:
        self.term = term
        self.voted_for = None
        self._persist()
        self._become_follower(now, leader=leader)

    def _become_follower(self, now: float, *, leader: str | None) -> None:
        was_leader = self.role is Role.LEADER
        self.role = Role.FOLLOWER
        self.leader = leader
        self._proposal = None
        self._pre_votes = set()
        self._votes = set()
        self._heartbeat_deadline = None
        self._learner_deadline = None
        if leader is None:
            self._last_leader_contact = None
        if was_leader or self._election_deadline is None or leader is not None:
            self._arm_election_timer(now)

    # ------------------------------------------------------------ helpers

    def _round_voters(self) -> frozenset[str]:
        """Whose votes count in the current campaign: the voter set, or the
        bootstrap proposal."""
        return self._voters if self._proposal is None else self._proposal

    def _round_quorum(self) -> int:
        if self._proposal is not None:
            return len(self._proposal)  # a bootstrap needs every member
        return self.quorum

    def _round_others(self) -> list[str]:
        return sorted(v for v in self._round_voters() if v != self.name)

    def _arm_election_timer(self, now: float) -> None:
        if self.configured and self.name not in self._voters:
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
        action = Persist(self.term, self.voted_for, self.version, tuple(sorted(self._voters)))
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
