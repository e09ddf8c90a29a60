"""The voter cap of the raft-lite core: voters, learners and replacement.

A leader keeps at most ``max_voters`` voters; the other live members are
learners, told who leads every ``learner_interval`` (not every heartbeat)
and never answering. A voter declared dead is replaced by a live learner,
one single-server change at a time. See docs/election-voters.rst.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest
import raft_helpers
from raft_helpers import E

from trio_distribute._proto.raft import (
    LEARNER_SILENCE,
    ElectionCore,
    Heartbeat,
    HeartbeatAck,
    LeaderChange,
    Persist,
    PreVote,
    PreVoteReply,
    Role,
    Send,
    Vote,
    VoteReply,
)
from trio_distribute.config import ElectionConfig

LI = 2.0


def make(
    name: str,
    voters: Iterable[str] = (),
    *,
    seed: int = 0,
    now: float = 0.0,
    **options: Any,
) -> ElectionCore:
    options.setdefault("max_voters", 3)
    options.setdefault("learner_interval", LI)
    return raft_helpers.make(name, voters, seed=seed, now=now, **options)


class Net:
    """Cores on an instant network; ``down`` nodes receive nothing and never tick."""

    def __init__(self, cores: dict[str, ElectionCore]) -> None:
        self.now = 0.0
        self.cores = cores
        self.down: set[str] = set()
        self.sent: list[tuple[float, str, Send]] = []
        self.events: dict[str, list[LeaderChange]] = {n: [] for n in cores}
        self.leaders_by_term: dict[int, set[str]] = {}

    def tell(self, **extra: Iterable[str]) -> None:
        """Membership as every up node sees it: all known, the up ones alive."""
        names = set(self.cores)
        alive = names - self.down
        for name in sorted(alive):
            self.cores[name].observe(self.now, known=names, alive=alive, **extra)
        self.flush()

    def flush(self) -> None:
        queue: list[tuple[str, Send]] = []
        while True:
            for name, core in self.cores.items():
                if core.is_leader:
                    self.leaders_by_term.setdefault(core.term, set()).add(name)
                for action in core.take_actions():
                    if isinstance(action, Send):
                        queue.append((name, action))
                        self.sent.append((self.now, name, action))
                self.events[name] += core.take_events()
            if not queue:
                return
            source, send = queue.pop(0)
            if send.to in self.cores and send.to not in self.down and source not in self.down:
                self.cores[send.to].receive(self.now, source, send.message)

    def run_until(self, t: float) -> None:
        self.flush()
        same_instant = 0
        while True:
            due = [
                (d, n)
                for n, c in self.cores.items()
                if n not in self.down and (d := c.next_deadline()) is not None and d <= t
            ]
            if not due:
                break
            now, name = min(due)
            # A deadline that a tick does not move is a core that would spin.
            same_instant = same_instant + 1 if now == self.now else 0
            assert same_instant < 1000, f"{name} keeps asking for a tick at {now}"
            self.now = now
            self.cores[name].tick(self.now)
            self.flush()
        self.now = t

    def leader(self) -> str:
        leaders = [n for n, c in self.cores.items() if c.is_leader and n not in self.down]
        assert len(leaders) == 1, leaders
        return leaders[0]


def leader_of(core: ElectionCore) -> str | None:
    """``core.leader``, read through a call so mypy does not narrow it."""
    return core.leader


def static_cluster(n: int, voters: Iterable[str], **options: Any) -> Net:
    names = [f"n{i}" for i in range(n)]
    voters = list(voters)
    return Net({x: make(x, voters, seed=i, **options) for i, x in enumerate(names)})


def formed(n: int = 9, cap: int = 3, **options: Any) -> Net:
    """``n`` nodes, a static set of the first two, membership told, run to a full set."""
    net = static_cluster(n, ["n0", "n1"], max_voters=cap, **options)
    net.tell()
    net.run_until(10.0)
    return net


# ------------------------------------------------------------ the cap


def test_the_leader_adds_voters_up_to_the_cap_and_no_further() -> None:
    net = formed(9, cap=3)
    leader = net.cores[net.leader()]
    assert leader.voters == {"n0", "n1", "n2"}  # the first live names, one at a time
    assert leader.committed
    # Everyone, voter or learner, holds the same set and knows the leader.
    for core in net.cores.values():
        assert core.voters == leader.voters and core.leader == leader.name
    # Without a cap every live member votes (the behaviour without max_voters).
    net = formed(9, cap=None)  # type: ignore[arg-type]
    assert net.cores[net.leader()].voters == {f"n{i}" for i in range(9)}


def test_each_change_is_one_voter_and_waits_for_the_previous_to_commit() -> None:
    net = static_cluster(6, ["n0", "n1"], max_voters=5)
    net.tell()
    net.run_until(10.0)
    leader = net.cores[net.leader()]
    sets = [frozenset(p.voters) for p in _persisted(net, leader.name)]
    sets = [s for i, s in enumerate(sets) if i == 0 or s != sets[i - 1]]
    assert sets[-1] == {f"n{i}" for i in range(5)}
    for before, after in itertools.pairwise(sets):
        assert len(before ^ after) == 1


def _persisted(net: Net, name: str) -> list[Persist]:
    # The Net drops Persist actions; replay them from a fresh run is overkill:
    # the voter sets a leader announced in its heartbeats are the same thing.
    seen: list[Persist] = []
    for _, source, send in net.sent:
        if source == name and isinstance(send.message, Heartbeat):
            m = send.message
            seen.append(Persist(m.term, None, m.version, m.voters))
    return seen


def test_a_set_above_the_cap_is_shed_one_at_a_time_unreachable_first() -> None:
    net = static_cluster(6, [f"n{i}" for i in range(6)], max_voters=3)
    net.down = {"n2"}
    net.tell()
    net.run_until(10.0)
    leader = net.cores[net.leader()]
    assert len(leader.voters) == 3 and "n2" not in leader.voters
    sets = [
        s.message.voters
        for _, src, s in net.sent
        if src == leader.name and isinstance(s.message, Heartbeat)
    ]
    sizes = [len(v) for v in dict.fromkeys(sets)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 3


def test_max_voters_and_learner_interval_are_validated() -> None:
    for bad in (0, -1, 2.5, True):
        if bad is True:
            continue
        with pytest.raises(ValueError, match="max_voters"):
            make("a", ["a"], max_voters=bad)
    for interval in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="learner_interval"):
            make("a", ["a"], learner_interval=interval)


def test_the_config_fields_default_to_five_voters_and_a_two_second_round() -> None:
    config = ElectionConfig()
    assert config.max_voters == 5 and config.learner_interval == 2.0
    with pytest.raises(ValueError, match="max_voters"):
        ElectionConfig(max_voters=0)
    with pytest.raises(ValueError, match="learner_interval"):
        ElectionConfig(learner_interval=0)


# ------------------------------------------------------------ learners


def test_learners_hear_every_learner_interval_and_voters_every_heartbeat() -> None:
    net = formed(9, cap=3)
    leader = net.leader()
    start = net.now
    net.run_until(start + 20.0)
    per_peer: dict[str, int] = {}
    for t, source, send in net.sent:
        if t > start and source == leader and isinstance(send.message, Heartbeat):
            per_peer[send.to] = per_peer.get(send.to, 0) + 1
    voters = net.cores[leader].voters - {leader}
    for name, count in per_peer.items():
        if name in voters:
            assert 195 <= count <= 201  # every H = 0.1 s
        else:
            assert 9 <= count <= 11  # every LI = 2 s
    assert set(per_peer) == set(net.cores) - {leader}


def test_learners_never_answer_and_their_acks_would_not_count() -> None:
    net = formed(9, cap=3)
    leader = net.leader()
    start = net.now
    net.run_until(start + 5.0)
    voters = net.cores[leader].voters
    ackers = {
        source
        for t, source, send in net.sent
        if t > start and isinstance(send.message, HeartbeatAck)
    }
    assert ackers == voters - {leader}
    # An ack from a learner is not a voter's ack: the lease does not move.
    core = net.cores[leader]
    expiry = core.lease_expiry()
    core.receive(net.now, "n8", HeartbeatAck(core.term, net.now, core.version))
    assert core.lease_expiry() == expiry


def test_a_learner_never_campaigns_and_forgets_a_silent_leader() -> None:
    net = formed(9, cap=3)
    learner = net.cores["n8"]
    assert learner.leader is not None and learner.next_deadline() is not None
    # Every voter goes silent (crashed) for good: the learner forgets the
    # leader after LEARNER_SILENCE rounds, and never starts an election.
    heard = max(t for t, _, s in net.sent if s.to == "n8" and isinstance(s.message, Heartbeat))
    net.down = set(learner.voters)
    net.run_until(heard + LEARNER_SILENCE * LI - 0.01)
    assert leader_of(learner) is not None
    net.run_until(heard + LEARNER_SILENCE * LI + 0.01)
    assert leader_of(learner) is None and learner.role is Role.FOLLOWER
    assert not any(isinstance(s.message, PreVote | Vote) for _, src, s in net.sent if src == "n8")
    assert LeaderChange(learner.term, None) in net.events["n8"]


def test_a_new_leader_tells_the_learners_at_once() -> None:
    net = formed(9, cap=3)
    old = net.leader()
    net.down = {old}
    net.tell()
    net.run_until(net.now + 5 * E)
    new = net.leader()
    assert new != old
    won = min(t for t, src, s in net.sent if src == new and isinstance(s.message, Heartbeat))
    term = net.cores[new].term
    told = {
        s.to
        for t, src, s in net.sent
        if src == new and t == won and isinstance(s.message, Heartbeat)
    }
    assert told == set(net.cores) - {new}  # voters (the old one too: still one) and learners
    for name, core in net.cores.items():
        if name != old:
            assert (core.leader, core.term) == (new, term)


def test_a_member_that_comes_alive_is_told_at_once() -> None:
    net = formed(9, cap=3)
    leader = net.leader()
    net.down = {"n7"}
    net.tell()
    net.run_until(net.now + 0.5)
    net.down = set()
    before = len(net.sent)
    net.tell()  # n7 is alive again: the leader tells it now, not at the next round
    told = [s for _, src, s in net.sent[before:] if src == leader and s.to == "n7"]
    assert told and isinstance(told[0].message, Heartbeat)
    # Only the leader tells anyone anything about leadership.
    assert all(src == leader for _, src, s in net.sent[before:] if isinstance(s.message, Heartbeat))
    assert net.cores["n7"].leader == leader


def _rounds(net: Net, leader: str, learner: str) -> list[float]:
    return [
        t
        for t, src, s in net.sent
        if src == leader and s.to == learner and isinstance(s.message, Heartbeat)
    ]


def test_the_first_learner_of_a_full_set_gets_every_round() -> None:
    # Three members, three voters: no learner, no round. A fourth member
    # comes alive: it is told at once, and from then on every interval.
    net = static_cluster(4, ["n0", "n1", "n2"], max_voters=3)
    net.down = {"n3"}
    net.tell()
    net.run_until(10.0)
    leader = net.leader()
    assert not any(s.to == "n3" for _, _, s in net.sent)
    net.down = set()
    net.tell()
    joined = net.now
    net.run_until(joined + 5 * LI + 0.01)
    assert _rounds(net, leader, "n3") == [joined + i * LI for i in range(6)]


def test_a_newcomer_does_not_postpone_the_round_of_the_others() -> None:
    net = static_cluster(9, ["n0", "n1", "n2"], max_voters=3)
    net.down = {"n8"}
    net.tell()
    net.run_until(10.0)
    leader = net.leader()
    last = _rounds(net, leader, "n7")[-1]
    net.run_until(last + LI - 0.5)
    net.down = set()
    net.tell()  # n8 arrives half a second before the others' round
    net.run_until(last + LI + 0.01)
    assert _rounds(net, leader, "n7")[-1] == last + LI


def test_a_learner_outside_the_voters_answers_a_stale_leader_with_its_term() -> None:
    net = formed(9, cap=3)
    learner = net.cores["n8"]
    learner.receive(net.now, "n5", Heartbeat(learner.term - 1, net.now, (0, 1), ("n5",)))
    replies = [a for a in learner.take_actions() if isinstance(a, Send)]
    assert replies == [Send("n5", HeartbeatAck(learner.term, net.now, learner.version))]


# ------------------------------------------------------------ replacement


def test_a_dead_voter_is_replaced_by_a_live_learner() -> None:
    net = formed(9, cap=3)
    leader = net.leader()
    victim = sorted(net.cores[leader].voters - {leader})[0]
    net.down = {victim}
    net.tell(failed=[victim])
    net.run_until(net.now + 2.0)
    voters = net.cores[leader].voters
    assert victim not in voters and len(voters) == 3 and net.cores[leader].committed
    assert voters == {leader, *sorted(set(net.cores) - {leader, victim})[:2]} or len(voters) == 3
    for name, core in net.cores.items():
        if name != victim:
            assert core.voters == voters
    assert all(len(v) == 1 for v in net.leaders_by_term.values())
    # And then the set rests: no further change while nothing happens.
    version = net.cores[leader].version
    net.run_until(net.now + 5.0)
    assert net.cores[leader].version == version


def test_a_dead_leader_is_replaced_after_the_next_election() -> None:
    net = formed(9, cap=3)
    old = net.leader()
    net.down = {old}
    net.tell(failed=[old])
    net.run_until(net.now + 6 * E)
    new = net.leader()
    voters = net.cores[new].voters
    assert old not in voters and len(voters) == 3
    assert all(len(v) == 1 for v in net.leaders_by_term.values())


def test_a_suspect_voter_is_not_replaced() -> None:
    # Not alive but not declared dead: it may refute; the set stays.
    net = formed(9, cap=3)
    leader = net.leader()
    victim = sorted(net.cores[leader].voters - {leader})[0]
    voters = net.cores[leader].voters
    net.down = {victim}
    net.tell()  # alive no longer lists it; failed does not either
    net.run_until(net.now + 5.0)
    assert net.cores[leader].voters == voters


def test_a_dead_voter_stays_when_no_learner_can_replace_it() -> None:
    # At or below the cap a crash does not shrink the set (a minority must
    # never elect a leader), as without a cap.
    net = formed(3, cap=3)
    leader = net.leader()
    victim = sorted(net.cores[leader].voters - {leader})[0]
    net.down = {victim}
    net.tell(failed=[victim])
    net.run_until(net.now + 5.0)
    assert net.cores[leader].voters == {"n0", "n1", "n2"}


# ------------------------------------------------------------ bootstrap


def test_only_the_first_names_of_the_known_set_ask_for_a_bootstrap() -> None:
    names = [f"n{i}" for i in range(8)]
    for cap in (1, 3, 5):
        cores = {
            x: make(x, seed=i, bootstrap_expect=8, max_voters=cap) for i, x in enumerate(names)
        }
        askers = set()
        for name, core in cores.items():
            core.observe(0.0, known=names, alive=names)
            deadline = core.next_deadline()
            assert deadline is not None
            core.tick(deadline)  # its first election timeout
            if any(
                isinstance(a, Send) and isinstance(a.message, PreVote) for a in core.take_actions()
            ):
                askers.add(name)
        assert askers == set(names[:cap])
    # Without a cap every member may ask.
    core = make("n7", bootstrap_expect=8, max_voters=None)
    core.observe(0.0, known=names, alive=names)
    deadline = core.next_deadline()
    assert deadline is not None
    core.tick(deadline)
    assert any(isinstance(a, Send) for a in core.take_actions())


def test_a_capped_bootstrap_is_asked_by_the_first_names_and_installs_the_cap() -> None:
    names = [f"n{i}" for i in range(8)]
    net = Net({x: make(x, seed=i, bootstrap_expect=8) for i, x in enumerate(names)})
    net.tell()
    net.run_until(10.0)
    leader = net.leader()
    campaigners = {src for _, src, s in net.sent if isinstance(s.message, PreVote | Vote)}
    assert campaigners and campaigners <= {"n0", "n1", "n2"}
    voters = net.cores[leader].voters
    assert len(voters) == 3 and leader in voters
    for core in net.cores.values():
        assert core.voters == voters and core.leader == leader and core.configured
    assert all(len(v) == 1 for v in net.leaders_by_term.values())


def test_a_lone_voter_still_wakes_for_its_learners() -> None:
    # One voter sends no heartbeats (no one to send them to) and never loses
    # its quorum: only the learner round wakes it, on time.
    net = static_cluster(3, ["n0"], max_voters=1)
    net.tell()
    net.run_until(20.0)
    assert net.leader() == "n0" and net.cores["n0"].voters == {"n0"}
    rounds = sorted(
        {t for t, src, s in net.sent if src == "n0" and isinstance(s.message, Heartbeat)}
    )
    assert len(rounds) >= 9
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(rounds)}
    assert gaps == {LI}
    for name in ("n1", "n2"):
        assert net.cores[name].leader == "n0"


def test_a_voter_whose_name_sorts_late_still_campaigns() -> None:
    # The first-names rule is for asking for a bootstrap only: a configured
    # voter campaigns whatever its place in the known set (a replacement
    # named "z" among many learners), and a bootstrap hold does not stop it.
    names = ["a", "b", "c", "d", "z"]
    core = make("z", ("a", "b", "z"), bootstrap_expect=9, max_voters=3)
    core.observe(0.0, known=names, alive=names)
    core.hold_bootstrap(0.0, True)
    deadline = core.next_deadline()
    assert deadline is not None
    core.tick(deadline)
    assert core.role is Role.PRE_CANDIDATE
    asked = [a.to for a in core.take_actions() if isinstance(a, Send)]
    assert asked == ["a", "b"]


def test_a_learner_made_a_voter_keeps_no_learner_timer() -> None:
    # Its silence timer belongs to its time as a learner: once a voter, only
    # the election timer runs, so a static change that takes it out again
    # leaves it with no deadline at all (as any node outside its set).
    core = make("c", ("a", "b"))
    core.receive(0.0, "a", Heartbeat(1, 0.0, (1, 2), ("a", "b")))
    assert core.next_deadline() == LEARNER_SILENCE * LI  # a learner
    core.receive(0.5, "a", Heartbeat(1, 0.5, (1, 3), ("a", "b", "c")))
    core.set_voters(0.6, ["a", "b"])
    assert core.next_deadline() is None and core.leader == "a"


def test_a_capped_bootstrap_winner_installs_exactly_the_cap() -> None:
    # Its first set, stamped (term, 1): itself and the first cap - 1 other
    # names of the proposal, before any change of its own.
    names = ["n0", "n1", "n2", "n3", "n4"]
    core = make("n0", bootstrap_expect=5, max_voters=3, pre_vote=False)
    core.observe(0.0, known=names, alive=[])
    now = raft_helpers.fire(core)
    for name in names[1:]:
        core.receive(now, name, VoteReply(1, granted=True))
    assert core.is_leader and core.version == (1, 1)
    assert core.voters == {"n0", "n1", "n2"}


def removals(net: Any, leader: str, start: int, before: tuple[str, ...]) -> list[str]:
    """The voters the leader took out, in order, as its heartbeats from
    ``net.sent[start:]`` show them (``before``: the set it started from)."""
    sets = [before] + [
        send.message.voters
        for _, source, send in net.sent[start:]
        if source == leader and isinstance(send.message, Heartbeat)
    ]
    return [
        name
        for earlier, later in itertools.pairwise(dict.fromkeys(sets))
        if earlier
        for name in sorted(set(earlier) - set(later))
    ]


def test_unreachable_voters_are_shed_first_in_name_order() -> None:
    net = static_cluster(7, [f"n{i}" for i in range(7)], max_voters=3)
    net.down = {"n4", "n2"}
    net.tell()
    net.run_until(10.0)
    leader = net.cores[net.leader()]
    assert removals(net, leader.name, 0, ())[:2] == ["n2", "n4"]
    assert len(leader.voters) == 3


def test_dead_voters_are_replaced_first_in_name_order() -> None:
    net = formed(9, cap=5)
    leader = net.leader()
    victims = sorted(net.cores[leader].voters - {leader})[-2:]
    net.down = set(victims)
    start = len(net.sent)
    before = tuple(net.cores[leader].voters)
    net.tell(failed=victims[::-1])
    net.run_until(net.now + 4.0)
    assert removals(net, leader, start, before) == victims
    voters = net.cores[leader].voters
    assert len(voters) == 5 and not voters & set(victims)


def test_a_member_no_longer_among_the_first_names_drops_its_round() -> None:
    # n2 is among the first three names of n0..n3 and asks for a bootstrap;
    # then a0 and a1 join, n2 is no longer among the first three, and its
    # next election timeout must end the round it started: a grant of that
    # round arriving late must not make it campaign.
    names = ["n0", "n1", "n2", "n3"]
    core = make("n2", bootstrap_expect=4)
    core.observe(0.0, known=names, alive=names)
    now = raft_helpers.fire(core)
    roles = [core.role]
    asked = [a for a in core.take_actions() if isinstance(a, Send)]
    assert {a.to for a in asked} == {"n0", "n1", "n3"}
    grown = ["a0", "a1", *names]
    core.observe(now, known=grown, alive=grown)
    core.take_actions()
    now = raft_helpers.fire(core)
    roles.append(core.role)
    assert not [a for a in core.take_actions() if isinstance(a, Send)]
    for voter in ("n0", "n1", "n3"):  # every grant the bootstrap round asked for
        core.receive(now, voter, PreVoteReply(0, 1, granted=True))
    roles.append(core.role)
    assert roles == [Role.PRE_CANDIDATE, Role.FOLLOWER, Role.FOLLOWER]
    assert core.term == 0
    assert not [a for a in core.take_actions() if isinstance(a, Send | Persist)]
