"""Tests for the raft-lite election core (trio_distribute._proto.raft).

One test per rule, in the spirit of etcd's raft_paper_test.go. Most drive a
single core by hand; a few use ``Pump``, which delivers queued sends between
a handful of cores instantly (optionally dropping some links) so a whole
exchange can be followed step by step.
"""

from __future__ import annotations

import math
import random
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raft_helpers import E, H, fire, make

from trio_distribute._proto.raft import (
    MAX_MESSAGE_SIZE,
    MAX_TERM,
    STATIC,
    UNCONFIGURED,
    ElectionCore,
    Heartbeat,
    HeartbeatAck,
    LeaderChange,
    Message,
    Persist,
    PreVote,
    PreVoteReply,
    RaftDecodeError,
    Remove,
    Role,
    Send,
    Version,
    Vote,
    VoteReply,
    decode_message,
    default_lease_timeout,
    encode_message,
)

ABC = ("a", "b", "c")


def P(
    term: int, voted_for: str | None, version: Version = STATIC, voters: tuple[str, ...] = ABC
) -> Persist:
    """The state a core of the static set ``ABC`` persists."""
    return Persist(term, voted_for, version, voters)


def hb(
    term: int, stamp: float, version: Version = STATIC, voters: tuple[str, ...] = ABC
) -> Heartbeat:
    """A heartbeat from a leader of the static set ``ABC``."""
    return Heartbeat(term, stamp, version, voters)


L = default_lease_timeout(E, H)


def sends(actions: list[Persist | Send]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def leads(core: ElectionCore) -> bool:
    """``core.is_leader``, read through a call so mypy does not narrow it."""
    return core.is_leader


def make_leader(core: ElectionCore) -> float:
    """Drive a 3-voter core ``a`` to leadership with b's help; return the time."""
    now = fire(core)
    core.receive(now, "b", PreVoteReply(core.term, core.term + 1, granted=True))
    core.receive(now, "b", VoteReply(core.term, granted=True))
    assert core.is_leader
    core.take_actions()
    core.take_events()
    return now


class Pump:
    """Cores connected by an instant network that delivers every send."""

    def __init__(self, names: list[str], seed: int = 0, **options: Any) -> None:
        self.now = 0.0
        self.cores = {
            n: make(n, names, seed=seed * 100 + i, **options) for i, n in enumerate(names)
        }
        self.cut: set[tuple[str, str]] = set()
        self.events: dict[str, list[LeaderChange]] = {n: [] for n in names}
        self.persisted: dict[str, list[Persist]] = {n: [] for n in names}

    def isolate(self, name: str) -> None:
        for other in self.cores:
            if other != name:
                self.cut |= {(name, other), (other, name)}

    def flush(self) -> None:
        queue: list[tuple[str, Send]] = []
        while True:
            for name, core in self.cores.items():
                for action in core.take_actions():
                    if isinstance(action, Persist):
                        self.persisted[name].append(action)
                    else:
                        queue.append((name, action))
                self.events[name] += core.take_events()
            if not queue:
                return
            source, send = queue.pop(0)
            if (source, send.to) not in self.cut and send.to in self.cores:
                self.cores[send.to].receive(self.now, source, send.message)

    def run_until(self, t: float) -> None:
        self.flush()
        while True:
            due = [
                (d, n)
                for n, c in self.cores.items()
                if (d := c.next_deadline()) is not None and d <= t
            ]
            if not due:
                break
            self.now, name = min(due)
            self.cores[name].tick(self.now)
            self.flush()
        self.now = t

    def leaders(self) -> list[str]:
        return [n for n, c in self.cores.items() if c.is_leader]


# ------------------------------------------------------------ timeouts


def test_election_timeout_is_uniform_in_e_2e_and_redrawn_each_time() -> None:
    draws = []
    for seed in range(200):
        core = make(seed=seed)
        for _ in range(5):
            start = core.next_deadline()
            assert start is not None
            draws.append(start)
            fire(core)  # a lonely pre-vote round, re-arms the timer
            deadline = core.next_deadline()
            assert deadline is not None
            draws[-1] = deadline - start
    assert all(E <= d < 2 * E for d in draws)
    # The empirical CDF looks uniform (etcd's TestPastElectionTimeout checks 0.1/0.4/0.6/0.9).
    for fraction in (0.1, 0.4, 0.6, 0.9):
        share = sum(d < E * (1 + fraction) for d in draws) / len(draws)
        assert abs(share - fraction) < 0.06
    assert len(set(draws)) == len(draws)


def test_timeout_draw_at_upper_bound_is_kept_below_2e() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    core = ElectionCore(
        name="a", voters=["a"], election_timeout=E, heartbeat_interval=H, rng=Top(), now=5.0
    )
    deadline = core.next_deadline()
    assert deadline is not None and 5.0 + E <= deadline < 5.0 + 2 * E


def test_rejects_inconsistent_timing() -> None:
    with pytest.raises(ValueError, match="lease_timeout"):
        make(lease_timeout=E)
    with pytest.raises(ValueError, match="lease_timeout"):
        make(lease_timeout=H / 2)
    with pytest.raises(ValueError, match="election_timeout"):
        ElectionCore(
            name="a", voters=[], election_timeout=0, heartbeat_interval=H,
            rng=random.Random(0), now=0,
        )  # fmt: skip
    assert H < L < E
    assert default_lease_timeout(1.0, 0.9) == pytest.approx(0.95)


# ------------------------------------------------------------ pre-vote


def test_timeout_starts_pre_vote_without_bumping_term_or_persisting() -> None:
    core = make()
    fire(core)
    assert core.role is Role.PRE_CANDIDATE
    assert core.term == 0 and core.voted_for is None
    assert core.take_actions() == [Send("b", PreVote(1)), Send("c", PreVote(1))]


def test_pre_vote_request_never_bumps_the_receivers_term() -> None:
    core = make(persisted=(4, None))
    core.receive(0.0, "b", PreVote(50))
    assert core.term == 4 and core.voted_for is None and core.role is Role.FOLLOWER
    assert core.take_actions() == [Send("b", PreVoteReply(4, 50, granted=True))]


def test_pre_vote_refused_for_a_term_not_above_ours() -> None:
    core = make(persisted=(4, None))
    core.receive(0.0, "b", PreVote(4))
    assert core.take_actions() == [Send("b", PreVoteReply(4, 4, granted=False))]


def test_pre_candidate_behind_learns_term_from_refusal() -> None:
    core = make()
    now = fire(core)
    core.take_actions()
    core.receive(now, "b", PreVoteReply(7, 1, granted=False))
    assert core.term == 7 and core.role is Role.FOLLOWER
    assert core.take_actions() == [P(7, None)]


def test_pre_vote_majority_starts_campaign_persisting_before_vote_requests() -> None:
    core = make()
    now = fire(core)
    core.take_actions()
    core.receive(now, "b", PreVoteReply(0, 1, granted=True))
    assert core.role is Role.CANDIDATE and core.term == 1 and core.voted_for == "a"
    assert core.take_actions() == [
        P(1, "a"),
        Send("b", Vote(1)),
        Send("c", Vote(1)),
    ]


def test_stale_pre_vote_grants_do_not_count() -> None:
    core = make(persisted=(3, None))
    now = fire(core)
    core.receive(now, "b", PreVoteReply(3, 3, granted=True))  # answer to an older round
    core.receive(now, "c", PreVoteReply(3, 4, granted=False))
    assert core.role is Role.PRE_CANDIDATE and core.term == 3


def test_without_pre_vote_timeout_campaigns_directly() -> None:
    core = make(pre_vote=False)
    fire(core)
    assert core.role is Role.CANDIDATE and core.term == 1
    assert core.take_actions()[0] == P(1, "a")


# ------------------------------------------------------------ votes


def test_vote_persisted_before_the_reply() -> None:
    core = make()
    core.receive(0.5, "b", Vote(1))
    assert core.take_actions() == [P(1, "b"), Send("b", VoteReply(1, granted=True))]
    assert (core.term, core.voted_for) == (1, "b")


def test_granting_a_vote_restarts_the_election_timer() -> None:
    core = make()
    core.receive(0.9, "b", Vote(1))
    deadline = core.next_deadline()
    assert deadline is not None and 0.9 + E <= deadline < 0.9 + 2 * E


def test_one_vote_per_term() -> None:
    core = make()
    core.receive(0.0, "b", Vote(1))
    core.take_actions()
    core.receive(0.0, "c", Vote(1))
    assert core.take_actions() == [Send("c", VoteReply(1, granted=False))]
    core.receive(0.0, "b", Vote(1))  # a retransmission: same answer, nothing to write
    assert core.take_actions() == [Send("b", VoteReply(1, granted=True))]
    core.receive(0.0, "c", Vote(2))  # a new term: a new vote
    assert core.take_actions() == [P(2, "c"), Send("c", VoteReply(2, granted=True))]


def test_vote_for_a_lower_term_refused_with_our_term() -> None:
    core = make(persisted=(5, None))
    core.receive(0.0, "b", Vote(4))
    assert core.take_actions() == [Send("b", VoteReply(5, granted=False))]
    assert core.voted_for is None


def test_candidate_refuses_rivals_of_its_term() -> None:
    core = make(pre_vote=False)
    now = fire(core)
    core.take_actions()
    core.receive(now, "b", Vote(1))
    assert core.take_actions() == [Send("b", VoteReply(1, granted=False))]
    assert core.role is Role.CANDIDATE


def test_persisted_state_restores_term_and_vote() -> None:
    core = make(persisted=(3, "b"))
    assert (core.term, core.voted_for) == (3, "b")
    core.receive(0.0, "c", Vote(3))
    assert core.take_actions() == [Send("c", VoteReply(3, granted=False))]
    with pytest.raises(ValueError, match="persisted term"):
        make(persisted=(-1, None))


def test_candidate_with_majority_becomes_leader_and_heartbeats_at_once() -> None:
    core = make(pre_vote=False)
    now = fire(core)
    core.take_actions()
    core.receive(now, "c", VoteReply(1, granted=False))
    assert core.role is Role.CANDIDATE
    core.receive(now, "b", VoteReply(1, granted=True))
    assert core.is_leader and core.leader == "a"
    # The set is stamped with the new term (raft's no-op entry) before it goes out.
    assert core.take_actions() == [
        P(1, "a", (1, 2)),
        Send("b", hb(1, now, (1, 2))),
        Send("c", hb(1, now, (1, 2))),
    ]
    assert core.take_events() == [LeaderChange(1, "a")]


def test_votes_from_outside_the_voter_set_do_not_count() -> None:
    core = make(pre_vote=False)
    now = fire(core)
    core.receive(now, "z", VoteReply(1, granted=True))
    assert core.role is Role.CANDIDATE


def test_vote_requests_from_outside_the_voter_set_are_refused() -> None:
    core = make()
    core.receive(0.0, "z", Vote(9))
    core.receive(0.0, "z", PreVote(9))
    assert core.term == 0 and core.voted_for is None
    assert core.take_actions() == [
        Send("z", VoteReply(0, granted=False)),
        Send("z", PreVoteReply(0, 9, granted=False)),
    ]


# ------------------------------------------------------------ heartbeats and terms


def test_leader_heartbeats_every_interval() -> None:
    core = make()
    start = make_leader(core)
    times = []
    for _ in range(5):
        now = fire(core)
        core.receive(now, "b", HeartbeatAck(core.term, now))
        times.append(now)
        assert sends(core.take_actions()) == [
            Send("b", hb(1, now, (1, 2))),
            Send("c", hb(1, now, (1, 2))),
        ]
    assert times == pytest.approx([start + H * (i + 1) for i in range(5)])


def test_heartbeat_makes_follower_and_is_acknowledged() -> None:
    core = make(pre_vote=False)
    now = fire(core)  # candidate in term 1
    core.take_actions()
    core.receive(now, "b", hb(1, 123.0))
    assert core.role is Role.FOLLOWER and core.leader == "b" and core.term == 1
    assert core.take_actions() == [Send("b", HeartbeatAck(1, 123.0))]
    assert core.take_events() == [LeaderChange(1, "b")]


def test_higher_term_heartbeat_is_adopted_and_persisted_before_ack() -> None:
    core = make()
    core.receive(0.0, "b", hb(6, 1.0))
    assert core.take_actions() == [P(6, None), Send("b", HeartbeatAck(6, 1.0))]
    assert (core.term, core.leader) == (6, "b")


def test_stale_leader_is_told_the_current_term() -> None:
    core = make(persisted=(5, None))
    core.receive(0.0, "b", hb(3, 2.5))
    assert core.take_actions() == [Send("b", HeartbeatAck(5, 2.5))]
    assert core.leader is None


def test_leader_steps_down_on_higher_term() -> None:
    core = make()
    now = make_leader(core)
    core.receive(now, "c", HeartbeatAck(core.term + 1, now))
    assert core.role is Role.FOLLOWER and core.leader is None and core.term == 2
    assert core.take_events() == [LeaderChange(2, None)]


def test_two_leaders_of_one_term_both_step_down() -> None:
    # Only possible with diverged voter sets: a and b each led alone in term 1.
    a = make("a", voters=["a"])
    b = make("b", voters=["b"], seed=1)
    fire(a)
    fire(b)
    assert a.is_leader and b.is_leader and a.term == b.term == 1
    a.set_voters(10.0, ["a", "b"])
    b.set_voters(10.0, ["a", "b"])
    for core, other in ((a, "b"), (b, "a")):
        for action in sends(core.take_actions()):
            assert action.to == other
            (b if other == "b" else a).receive(10.001, core.name, action.message)
    assert not leads(a) and not leads(b)
    assert a.leader is None and b.leader is None and a.term == b.term == 1
    # A fresh election over the merged set elects exactly one.
    pump = Pump(["a", "b"])
    pump.cores = {"a": a, "b": b}
    pump.now = 10.001
    pump.run_until(20.0)
    assert len(pump.leaders()) == 1 and a.term == b.term == 2


def test_terms_never_decrease() -> None:
    core = make(persisted=(9, None))
    for message in (hb(2, 0.0), Vote(3), VoteReply(4, True), HeartbeatAck(1, 0.0)):
        core.receive(0.0, "b", message)
        assert core.term == 9


def test_follower_forgets_a_silent_leader_after_its_timeout() -> None:
    core = make()
    core.receive(0.0, "b", hb(1, 0.0))
    core.take_events()
    fire(core)
    assert core.leader is None and core.role is Role.PRE_CANDIDATE
    assert core.take_events() == [LeaderChange(1, None)]


def test_same_leader_in_a_new_term_is_announced() -> None:
    core = make()
    core.receive(0.0, "b", hb(1, 0.0))
    core.receive(0.1, "b", hb(2, 0.1))
    assert core.take_events() == [LeaderChange(1, "b"), LeaderChange(2, "b")]


# ------------------------------------------------------------ stickiness


def test_stickiness_ignores_votes_within_e_of_the_leader() -> None:
    core = make()
    core.receive(0.0, "b", hb(1, 0.0))
    core.take_actions()
    core.receive(E * 0.99, "c", Vote(2))
    core.receive(E * 0.99, "c", PreVote(2))
    assert core.take_actions() == []
    assert core.term == 1 and core.voted_for is None and core.leader == "b"
    # Past E without news from the leader (and before our own timeout fired):
    core.receive(E, "c", PreVote(2))
    core.receive(E, "c", Vote(2))
    assert core.take_actions() == [
        Send("c", PreVoteReply(1, 2, granted=True)),
        P(2, "c"),
        Send("c", VoteReply(2, granted=True)),
    ]


def test_leader_ignores_vote_requests() -> None:
    core = make()
    now = make_leader(core)
    core.receive(now, "c", Vote(5, core.version))
    core.receive(now, "c", PreVote(5, core.version))
    assert core.take_actions() == [] and core.is_leader and core.term == 1


# ------------------------------------------------------------ check-quorum


def test_leader_without_acks_steps_down_after_lease() -> None:
    core = make()
    won = make_leader(core)
    while core.is_leader:
        now = fire(core)
    assert now == pytest.approx(won + L)
    assert core.take_events() == [LeaderChange(1, None)]
    assert core.lease_expiry() is None


def test_check_quorum_step_down_time_is_acked_send_time_plus_lease() -> None:
    core = make()
    won = make_leader(core)
    assert core.lease_expiry() == pytest.approx(won + L)
    last_acked = won
    now = won
    while now < won + 0.5:
        now = fire(core)
        core.receive(now + 0.001, "b", HeartbeatAck(1, now))
        last_acked = now
    assert core.lease_expiry() == pytest.approx(last_acked + L)
    # b goes silent: heartbeats continue until exactly last_acked + L.
    while core.is_leader:
        now = fire(core)
    assert now == pytest.approx(last_acked + L)


def test_acks_with_implausible_stamps_are_ignored() -> None:
    core = make()
    won = make_leader(core)
    core.receive(won, "b", HeartbeatAck(1, won + 100.0))  # from the future
    core.receive(won, "c", HeartbeatAck(1, won - 100.0))  # before we led
    assert core.lease_expiry() == pytest.approx(won + L)


def test_check_quorum_off_never_steps_down() -> None:
    core = make(check_quorum=False)
    won = make_leader(core)
    for _ in range(100):
        fire(core)
    assert core.is_leader and core.next_deadline() == pytest.approx(won + 101 * H)


# ------------------------------------------------------------ abstention


def test_abstaining_node_neither_votes_nor_campaigns() -> None:
    core = make(abstain_until=2 * E)
    core.receive(0.1, "b", Vote(1))
    core.receive(0.1, "b", PreVote(1))
    assert core.take_actions() == [] and core.voted_for is None
    while (deadline := core.next_deadline()) is not None and deadline < 2 * E:
        fire(core)
        assert core.role is Role.FOLLOWER and core.take_actions() == []
    core.receive(2 * E, "b", Vote(1))
    assert core.take_actions() == [P(1, "b"), Send("b", VoteReply(1, granted=True))]


def test_abstaining_node_follows_a_leader() -> None:
    core = make(abstain_until=2 * E)
    core.receive(0.1, "b", hb(4, 0.1))
    assert core.leader == "b" and core.term == 4
    assert sends(core.take_actions()) == [Send("b", HeartbeatAck(4, 0.1))]


def test_abstaining_node_campaigns_after_abstention() -> None:
    core = make(abstain_until=2 * E)
    while core.role is Role.FOLLOWER:
        now = fire(core)
    assert now >= 2 * E and core.role is Role.PRE_CANDIDATE


# ------------------------------------------------------------ voter sets


def test_node_outside_the_voter_set_never_campaigns() -> None:
    core = make("z")
    assert core.next_deadline() is None
    core.tick(100.0)
    assert core.role is Role.FOLLOWER and core.take_actions() == []
    core.receive(100.0, "a", hb(3, 100.0))  # but it follows the leader
    assert core.leader == "a"


def test_added_to_voter_set_arms_the_timer() -> None:
    core = make("z")
    core.set_voters(10.0, ["a", "b", "c", "z"])
    deadline = core.next_deadline()
    assert deadline is not None and 10.0 + E <= deadline < 10.0 + 2 * E


def test_leader_removed_from_voter_set_steps_down() -> None:
    core = make()
    now = make_leader(core)
    core.set_voters(now, ["b", "c"])
    assert core.role is Role.FOLLOWER and core.leader is None
    assert core.next_deadline() is None
    assert core.take_events() == [LeaderChange(1, None)]


def test_shrinking_voter_set_can_complete_an_election() -> None:
    core = make(voters=["a", "b", "c", "d", "e"], pre_vote=False)
    now = fire(core)
    core.receive(now, "b", VoteReply(1, True))
    assert core.role is Role.CANDIDATE  # 2 of 5
    core.set_voters(now, ["a", "b", "c"])  # 2 of 3
    assert core.is_leader


def test_growing_voter_set_makes_leader_heartbeat_newcomers() -> None:
    core = make(voters=["a"])
    won = fire(core)
    assert core.is_leader and core.next_deadline() is None  # alone: nothing to do
    core.take_actions()
    core.set_voters(5.0, ["a", "b"])
    assert core.take_actions() == [Send("b", hb(1, 5.0, (1, 2), ("a", "b")))]
    # A newcomer gets a lease's grace from when it was added.
    assert won < 5.0 - L and core.is_leader
    assert core.lease_expiry() == pytest.approx(5.0 + L)


def test_acks_from_removed_voters_stop_counting() -> None:
    core = make()
    won = make_leader(core)
    core.receive(won + 0.2, "b", HeartbeatAck(1, won + 0.1))
    assert core.lease_expiry() == pytest.approx(won + 0.1 + L)
    core.set_voters(won + 0.2, ["a", "c"])
    assert core.lease_expiry() == pytest.approx(won + L)
    core.set_voters(won + 0.3, ["a", "c", "b"])  # back, but its old ack is forgotten
    assert core.lease_expiry() == pytest.approx(won + 0.3 + L)


# ------------------------------------------------------------ cluster sizes


def test_one_voter_elects_itself_after_its_timeout_and_stays() -> None:
    core = make(voters=["a"])
    deadline = core.next_deadline()
    assert deadline is not None and E <= deadline < 2 * E
    core.tick(deadline - 1e-9)
    assert not leads(core)
    core.tick(deadline)
    assert leads(core)
    assert core.term == 1
    assert core.take_actions() == [P(1, "a", (1, 2), ("a",))]
    core.tick(1e6)
    assert core.is_leader


def test_two_voters_need_both() -> None:
    pump = Pump(["a", "b"])
    pump.isolate("b")
    pump.run_until(20 * E)
    assert pump.leaders() == []
    assert all(c.term == 0 for c in pump.cores.values())  # pre-vote kept terms still
    pump.cut.clear()
    pump.run_until(23 * E)
    assert len(pump.leaders()) == 1
    leader = pump.leaders()[0]
    follower = "b" if leader == "a" else "a"
    pump.isolate(follower)
    pump.run_until(pump.now + L + H)
    assert pump.leaders() == []


def test_three_voters_tolerate_one_failure() -> None:
    pump = Pump(["a", "b", "c"], seed=3)
    pump.run_until(3 * E)
    [first] = pump.leaders()
    pump.isolate(first)
    pump.run_until(pump.now + 4 * E)
    others = [n for n in pump.leaders() if n != first]
    assert len(others) == 1
    assert not pump.cores[first].is_leader  # check-quorum deposed it
    assert pump.cores[others[0]].term > pump.cores[first].term


# ------------------------------------------------------------ R4 by hand


def disrupted(pre_vote: bool) -> tuple[int, int, int]:
    """Isolate a follower for 10 E, heal; return (term before, term after,
    leader changes seen by the majority after the heal)."""
    pump = Pump(["a", "b", "c"], seed=7, pre_vote=pre_vote)
    pump.run_until(3 * E)
    [leader] = pump.leaders()
    follower = next(n for n in pump.cores if n != leader)
    term = pump.cores[leader].term
    pump.isolate(follower)
    pump.run_until(pump.now + 10 * E)
    changes_before = sum(len(pump.events[n]) for n in pump.cores if n != follower)
    pump.cut.clear()
    pump.run_until(pump.now + 5 * E)
    changes = sum(len(pump.events[n]) for n in pump.cores if n != follower) - changes_before
    return term, pump.cores[leader].term, changes


def test_isolated_follower_rejoins_without_disruption() -> None:
    before, after, changes = disrupted(pre_vote=True)
    assert after == before and changes == 0


def test_without_pre_vote_rejoiner_deposes_the_leader() -> None:
    # The contrast that shows the previous test can fail.
    before, after, changes = disrupted(pre_vote=False)
    assert after > before and changes > 0


def test_pump_elects_exactly_one_leader_per_term() -> None:
    for seed in range(30):
        pump = Pump(["a", "b", "c", "d", "e"], seed=seed)
        pump.run_until(5 * E)
        assert len(pump.leaders()) == 1
        term = pump.cores[pump.leaders()[0]].term
        voters_for = [p.voted_for for ps in pump.persisted.values() for p in ps if p.term == term]
        assert voters_for.count(pump.leaders()[0]) >= 3


# ------------------------------------------------------------ wire


terms = st.integers(0, MAX_TERM)
versions = st.tuples(terms, terms)
node_names = st.text(min_size=1, max_size=20)
voter_sets = st.lists(node_names, max_size=6, unique=True).map(tuple)
stamps = st.floats(allow_nan=False, allow_infinity=False)
messages = st.one_of(
    st.builds(PreVote, terms, versions, st.none() | voter_sets),
    st.builds(PreVoteReply, terms, terms, st.booleans()),
    st.builds(Vote, terms, versions, st.none() | voter_sets),
    st.builds(VoteReply, terms, st.booleans()),
    st.builds(Heartbeat, terms, stamps, versions, voter_sets),
    st.builds(HeartbeatAck, terms, stamps, versions),
    st.builds(Remove, node_names),
)


@given(messages)
def test_wire_round_trip(message: Message) -> None:
    data = encode_message(message)
    assert len(data) <= MAX_MESSAGE_SIZE
    assert decode_message(data) == message
    assert isinstance(cbor2.loads(data), list)


def check_garbage(data: bytes) -> None:
    try:
        message = decode_message(data)
    except RaftDecodeError:
        return
    assert encode_message(message) == data or decode_message(encode_message(message)) == message


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_garbage_bytes_raise_only_raft_decode_error(data: bytes) -> None:
    check_garbage(data)


scalars = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.floats(),
    st.binary(max_size=4),
    st.text(max_size=4),
)


@settings(max_examples=500)
@given(st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=5))
def test_garbage_structures_raise_only_raft_decode_error(value: list[object]) -> None:
    check_garbage(cbor2.dumps(value))


@given(messages, st.data())
def test_mutated_messages_raise_only_raft_decode_error(
    message: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_message(message))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    check_garbage(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]))
    check_garbage(bytes(encoded))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor2.dumps([5, 1, math.nan, 0, 1, []]),
        cbor2.dumps([5, 1, math.inf, 0, 1, []]),
        cbor2.dumps([1, True, 0, 1, None]),  # a bool is not a term
        cbor2.dumps([4, 1, 1]),  # an int is not a flag
        cbor2.dumps([1, -1, 0, 1, None]),
        cbor2.dumps([1, 2**63, 0, 1, None]),
        cbor2.dumps([1, 1, 0, 1]),  # a field short
        cbor2.dumps([5, 1, 0.0, 0, 1, ["a", "a"]]),  # a name twice
        cbor2.dumps([5, 1, 0.0, 0, 1, [""]]),
        cbor2.dumps([5, 1, 0.0, 0, 1, ["x" * 319]]),
        cbor2.dumps([5, 1, 0.0, 0, 1, [b"a"]]),
        cbor2.dumps([5, 1, 0.0, 0, 1, "a"]),  # not a list of names
        cbor2.dumps([3, 1, 0, 1, [1]]),
        cbor2.dumps([7, 5]),  # Remove takes a name
        cbor2.dumps([9, 1]),
        cbor2.dumps((1, 2)) + b"\x00",  # trailing bytes
        cbor2.dumps({"kind": 1}),
        cbor2.dumps(cbor2.CBORTag(1, 5)),
        b"\xd8\x1c\x81\xd8\x1d\x00",  # a self-referencing shared value
        b"\x9f\x01\x01\xff",  # indefinite length
        bytes(MAX_MESSAGE_SIZE + 1),
    ],
)
def test_known_garbage(data: bytes) -> None:
    with pytest.raises(RaftDecodeError):
        decode_message(data)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(RaftDecodeError):
        decode_message("text")  # type: ignore[arg-type]


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(TypeError):
        encode_message("nope")  # type: ignore[arg-type]


# ------------------------------------------------------------ bootstrap


def fresh(
    name: str, *, expect: int = 3, now: float = 0.0, seed: int = 0, **options: Any
) -> ElectionCore:
    """An unconfigured core (a node that has not joined a cluster yet)."""
    return make(name, (), now=now, seed=seed, bootstrap_expect=expect, **options)


def test_unconfigured_node_never_campaigns_below_bootstrap_expect() -> None:
    core = fresh("a", expect=3)
    assert not core.configured and core.voters == frozenset()
    core.observe(0.0, known=["a", "b"], alive=["a", "b"])
    for _ in range(20):
        fire(core)
    assert core.term == 0 and core.role is Role.FOLLOWER
    assert sends(core.take_actions()) == []
    core.observe(30.0, known=["c"], alive=["a", "b", "c"])  # known only grows
    assert core.known == {"a", "b", "c"}
    fire(core)
    abc = ("a", "b", "c")
    assert sends(core.take_actions()) == [
        Send("b", PreVote(1, UNCONFIGURED, abc)),
        Send("c", PreVote(1, UNCONFIGURED, abc)),
    ]


def test_bootstrap_expect_one_lets_a_lone_node_elect_itself() -> None:
    core = fresh("a", expect=1)
    fire(core)
    assert core.is_leader and core.term == 1
    assert core.voters == {"a"} and core.version == (1, 1)
    assert core.take_actions() == [P(1, "a", (1, 1), ("a",))]


def test_bootstrap_needs_every_member_of_the_proposal() -> None:
    core = fresh("a", expect=3, pre_vote=False)
    core.observe(0.0, known=["a", "b", "c"])
    now = fire(core)
    core.take_actions()
    core.receive(now, "b", VoteReply(1, granted=True))
    assert core.role is Role.CANDIDATE  # 2 of 3 is a majority, not a bootstrap
    core.receive(now, "c", VoteReply(1, granted=True))
    assert core.is_leader and core.voters == {"a", "b", "c"} and core.version == (1, 1)
    assert core.take_actions()[0] == P(1, "a", (1, 1))


def test_bootstrap_vote_only_between_unconfigured_nodes_that_know_the_same_members() -> None:
    abc = ("a", "b", "c")
    voter = fresh("b")
    voter.observe(0.0, known=["a", "b"])
    voter.receive(0.0, "a", Vote(1, UNCONFIGURED, abc))  # b does not know c yet
    assert voter.take_actions() == [Persist(1, None), Send("a", VoteReply(1, granted=False))]
    voter.observe(0.0, known=["c"])
    voter.receive(0.0, "a", Vote(1, UNCONFIGURED, abc))
    assert voter.take_actions() == [Persist(1, "a"), Send("a", VoteReply(1, granted=True))]
    # A configured node refuses any bootstrap, without adopting its term.
    member = make("b")
    member.receive(0.0, "a", Vote(5, UNCONFIGURED, abc))
    member.receive(0.0, "a", PreVote(5, UNCONFIGURED, abc))
    assert member.term == 0
    assert member.take_actions() == [
        Send("a", VoteReply(0, granted=False)),
        Send("a", PreVoteReply(0, 5, granted=False)),
    ]


def test_votes_go_only_to_candidates_with_a_configuration_at_least_as_new() -> None:
    core = make("b")
    core.receive(0.0, "a", hb(3, 0.0, (3, 7)))
    core.take_actions()
    later = 10 * E
    core.receive(later, "c", Vote(4, (3, 6)))  # older set: refused (term adopted)
    assert core.take_actions() == [P(4, None, (3, 7)), Send("c", VoteReply(4, granted=False))]
    core.receive(later, "c", PreVote(6, (2, 9)))
    assert sends(core.take_actions()) == [Send("c", PreVoteReply(4, 6, granted=False))]
    core.receive(later, "c", Vote(5, (3, 7)))
    assert core.take_actions() == [P(5, "c", (3, 7)), Send("c", VoteReply(5, granted=True))]


def test_followers_adopt_and_persist_the_leaders_set_before_acknowledging() -> None:
    core = fresh("b")
    core.receive(0.0, "a", Heartbeat(2, 0.5, (2, 3), ("a", "b", "d")))
    assert core.configured and core.voters == {"a", "b", "d"} and core.version == (2, 3)
    assert core.take_actions() == [
        P(2, None, (2, 3), ("a", "b", "d")),
        Send("a", HeartbeatAck(2, 0.5, (2, 3))),
    ]
    restarted = fresh("b", persisted=P(2, None, (2, 3), ("a", "b", "d")))
    assert restarted.voters == {"a", "b", "d"} and restarted.version == (2, 3)


def lead_alone(name: str = "a") -> tuple[ElectionCore, float]:
    core = fresh(name, expect=1)
    now = fire(core)
    core.take_actions()
    core.take_events()
    return core, now


def test_leader_adds_live_members_one_at_a_time_after_each_commits() -> None:
    core, now = lead_alone()
    core.observe(now, known=["a", "b", "c"], alive=["a", "b", "c"])
    # b first (sorted); c waits until a majority of {a, b} holds (1, 2).
    assert core.voters == {"a", "b"} and core.version == (1, 2)
    assert core.take_actions() == [
        P(1, "a", (1, 2), ("a", "b")),
        Send("b", Heartbeat(1, now, (1, 2), ("a", "b"))),
    ]
    core.receive(now, "b", HeartbeatAck(1, now, (1, 1)))  # not the new set yet
    assert core.voters == {"a", "b"}
    core.receive(now, "b", HeartbeatAck(1, now, (1, 2)))
    assert core.voters == {"a", "b", "c"} and core.version == (1, 3)
    core.receive(now, "b", HeartbeatAck(1, now, (1, 3)))  # majority of 3: commits
    assert core.committed and core.voters == {"a", "b", "c"}


def test_dead_members_are_not_added_and_crashed_voters_stay() -> None:
    core, now = lead_alone()
    core.observe(now, known=["a", "b"], alive=["a", "b"])
    core.receive(now, "b", HeartbeatAck(1, now, (1, 2)))
    core.observe(now, known=["a", "b", "z"], alive=["a"])  # b crashed, z is dead
    assert core.voters == {"a", "b"}


def test_removal_goes_through_the_leader() -> None:
    core, now = lead_alone()
    for name in ("b", "c"):
        core.observe(now, known=["a", "b", "c"], alive=["a", "b", "c"])
        core.receive(now, name, HeartbeatAck(1, now, core.version))
    core.receive(now, "b", HeartbeatAck(1, now, core.version))
    assert core.voters == {"a", "b", "c"} and core.committed
    core.take_actions()
    core.receive(now, "b", Remove("c"))
    assert core.voters == {"a", "b"} and core.version == (1, 4)
    follower = make("b")
    follower.receive(now, "a", hb(1, now))
    follower.take_actions()
    follower.request_removal(now, "c")
    assert follower.take_actions() == [Send("a", Remove("c"))]
    outsider = make("z", ("z",))
    core.receive(now, "z", Remove("b"))  # not a voter: ignored
    assert core.voters == {"a", "b"} and outsider.voters == {"z"}


def test_a_leaving_node_steps_down_and_never_campaigns() -> None:
    core = make()
    make_leader(core)
    core.observe(1.0, known=["a", "b", "c"], alive=["b", "c"], departed=["a"])
    assert core.role is Role.FOLLOWER
    for _ in range(10):
        fire(core)
    assert core.role is Role.FOLLOWER and core.term == 1


def test_two_bootstraps_of_one_term_cannot_both_win() -> None:
    # Five unconfigured nodes that all know each other; every one of them
    # times out at once in term 1 (pre-vote off): each votes for itself, so
    # nobody gets the unanimous bootstrap vote, and the retry settles it.
    for seed in range(20):
        pump = Pump(["a", "b", "c", "d", "e"], seed=seed, bootstrap_expect=5)
        for core in pump.cores.values():
            core.set_voters(0.0, [])
            core.version = UNCONFIGURED
            core.observe(0.0, known=pump.cores.keys())
        pump.run_until(20 * E)
        assert len(pump.leaders()) == 1
        leader = pump.cores[pump.leaders()[0]]
        assert leader.voters == set(pump.cores) and leader.version[1] == 1


# -- wire rules and voter-set rules, each at its exact boundary ------------------

from trio_distribute._proto.raft import MAX_NAME_LENGTH  # noqa: E402


def raw(*fields: object) -> bytes:
    return cbor2.dumps(list(fields))


def test_raft_terms_bounds_are_exact() -> None:
    for term in (0, MAX_TERM):
        assert decode_message(raw(4, term, True)) == VoteReply(term, True)
    for bad in (-1, MAX_TERM + 1, 1.0, True, "1"):
        with pytest.raises(RaftDecodeError, match="bad term"):
            decode_message(raw(4, bad, True))


def test_raft_name_length_bounds_are_exact() -> None:
    for length in (1, MAX_NAME_LENGTH):
        assert decode_message(raw(7, "n" * length)) == Remove("n" * length)
    for name in ("", "n" * (MAX_NAME_LENGTH + 1), b"n", 1, None):
        with pytest.raises(RaftDecodeError, match="bad node name"):
            decode_message(raw(7, name))


def test_raft_voter_set_refuses_duplicates_and_bad_names() -> None:
    ok = raw(5, 1, 0.5, 1, 1, ["a", "b"])
    assert decode_message(ok) == Heartbeat(1, 0.5, (1, 1), ("a", "b"))
    for voters in (["a", "a"], ["a", ""], "ab", None, [["a"]]):
        with pytest.raises(RaftDecodeError):
            decode_message(raw(5, 1, 0.5, 1, 1, voters))
    # A proposal is a voter set or nil.
    assert decode_message(raw(1, 1, 0, 0, None)) == PreVote(1, (0, 0), None)
    assert decode_message(raw(3, 1, 0, 0, ["a"])) == Vote(1, (0, 0), ("a",))
    with pytest.raises(RaftDecodeError, match="twice"):
        decode_message(raw(3, 1, 0, 0, ["a", "a"]))


def test_raft_flags_and_stamps() -> None:
    with pytest.raises(RaftDecodeError, match="bad flag"):
        decode_message(raw(4, 1, 1))
    assert decode_message(raw(6, 1, 2, 1, 1)) == HeartbeatAck(1, 2.0, (1, 1))
    for stamp in (math.inf, -math.inf, math.nan, "1", None):
        with pytest.raises(RaftDecodeError, match="bad stamp"):
            decode_message(raw(6, 1, stamp, 1, 1))


def test_raft_message_shape() -> None:
    for data in (raw(), raw(0, 1), raw(8, 1), raw(4, 1), raw(4, 1, True, 1), raw("4", 1, True)):
        with pytest.raises(RaftDecodeError):
            decode_message(data)
    for data in (cbor2.dumps({"k": 1}), cbor2.dumps(1), cbor2.dumps(True)):
        with pytest.raises(RaftDecodeError, match="non-empty CBOR array"):
            decode_message(data)


def test_raft_message_size_limit_is_exact() -> None:
    name = "n" * 300
    voters = [f"{i:05d}" + name for i in range(900)]
    data = raw(5, 1, 0.5, 1, 1, voters)
    assert len(data) > MAX_MESSAGE_SIZE
    fits = data[:MAX_MESSAGE_SIZE]
    with pytest.raises(RaftDecodeError, match=f"max {MAX_MESSAGE_SIZE}"):
        decode_message(data[: MAX_MESSAGE_SIZE + 1])
    with pytest.raises(RaftDecodeError) as info:
        decode_message(fits)  # truncated, but not refused for its size
    assert "max" not in str(info.value)


def test_raft_decoder_refuses_tags_duplicates_and_trailers() -> None:
    for data in (
        cbor2.dumps(cbor2.CBORTag(28, [4, 1, True])),
        raw(4, cbor2.CBORTag(2, b"\x01"), True),
        raw(4, 1, True) + b"\x41x",
        b"\x9f\x04\x01\xf5\xff",
        raw(7, [[["deep"]]]),
    ):
        with pytest.raises(RaftDecodeError):
            decode_message(data)
    for buffer in (bytearray(raw(4, 1, True)), memoryview(raw(4, 1, True))):
        assert decode_message(buffer) == VoteReply(1, True)  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_quorum_is_a_strict_majority(size: int, quorum: int) -> None:
    voters = [chr(ord("a") + i) for i in range(size)]
    core = make("a", voters)
    assert core.quorum == quorum


def test_may_grant_rules() -> None:
    core = make("a", ("a", "b", "c"))
    v = core.version
    assert core._may_grant("b", v, None)
    assert not core._may_grant("z", v, None)  # not a voter
    assert not core._may_grant("b", UNCONFIGURED, None)
    assert not core._may_grant("b", (v[0], v[1] - 1) if v[1] else (-1, 0), None)
    assert core._may_grant("b", (v[0], v[1] + 1), None)  # newer is fine
    assert not core._may_grant("b", UNCONFIGURED, ("a", "b"))  # configured: no bootstrap
    # A bootstrap: only between unconfigured nodes knowing the same members.
    fresh = make("a", ())
    fresh.observe(0.0, known={"a", "b"}, alive={"a", "b"})
    assert fresh._may_grant("b", UNCONFIGURED, ("a", "b"))
    assert not fresh._may_grant("b", UNCONFIGURED, ("a", "b", "c"))  # another proposal
    assert not fresh._may_grant("c", UNCONFIGURED, ("a", "b"))  # proposer unknown
    assert not fresh._may_grant("b", (1, 1), ("a", "b"))  # proposer claims a config
    assert fresh._may_grant("b", (1, 1), None)  # a configured candidate, newer than us
    assert fresh._may_grant("b", (0, 1), None) == (fresh.version <= (0, 1))


def test_majority_of_acked_versions_commits() -> None:
    core = make("a", ("a", "b", "c", "d", "e"))
    now = fire(core)
    for voter in ("b", "c"):
        core.receive(now, voter, PreVoteReply(core.term, core.term + 1, granted=True))
    for voter in ("b", "c"):
        core.receive(now, voter, VoteReply(core.term, granted=True))
    assert core.is_leader
    core._acked_versions = {"b": core.version}
    assert not core._holds_majority()  # a and b: 2 of 5
    core._acked_versions["c"] = core.version
    assert core._holds_majority()  # 3 of 5
    core._acked_versions = {"b": core.version, "c": (0, 0)}
    assert not core._holds_majority()  # c holds an older version


def test_quorum_stamp_is_the_majoritys_oldest_ack() -> None:
    core = make("a", ("a", "b", "c", "d", "e"))
    now = fire(core)
    for voter in ("b", "c"):
        core.receive(now, voter, PreVoteReply(core.term, core.term + 1, granted=True))
    for voter in ("b", "c"):
        core.receive(now, voter, VoteReply(core.term, granted=True))
    assert core.is_leader
    core._acks = {"b": 5.0, "c": 3.0, "d": 4.0, "e": 1.0}
    # Sorted newest first: a (inf), b 5, d 4, c 3, e 1; quorum 3 -> 4.0.
    assert core._quorum_stamp() == 4.0
    core._acks = {"b": 5.0}
    assert core._quorum_stamp() == core._leader_since
