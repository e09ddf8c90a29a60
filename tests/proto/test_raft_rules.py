"""The election core's rules on voter sets and quorums
(trio_distribute._proto.raft), each pinned on both sides of its edge.

tests/proto/test_raft.py covers the election's behaviour and
tests/proto/test_raft_wire_rules.py the wire decoder's bounds; this file
holds the cases that mutation testing (tests/mutation/mutate.py) showed no
other test pinned: who may be granted a vote, what a majority is, and how
a leader changes its voter set."""

from __future__ import annotations

import cbor2
import pytest
from raft_helpers import E, fire, make

from trio_distribute._proto.raft import (
    STATIC,
    UNCONFIGURED,
    ElectionCore,
    Heartbeat,
    HeartbeatAck,
    LeaderChange,
    Persist,
    PreVote,
    PreVoteReply,
    Remove,
    Role,
    Send,
    Version,
    Vote,
    VoteReply,
    decode_message,
    encode_message,
)


def role(core: ElectionCore) -> Role:
    """``core.role``, read through a call so mypy does not narrow it."""
    return core.role


def state(core: ElectionCore) -> tuple[Version, bool]:
    return core.version, core.configured


def win(core: ElectionCore, *helpers: str) -> float:
    """Drive ``core`` to leadership with the votes of ``helpers``; the time."""
    now = fire(core)
    for helper in helpers:
        core.receive(now, helper, PreVoteReply(core.term, core.term + 1, granted=True))
    for helper in helpers:
        core.receive(now, helper, VoteReply(core.term, granted=True))
    assert role(core) is Role.LEADER
    core.take_actions()
    core.take_events()
    return now


# -- a static voter set ------------------------------------------------------------


def test_a_static_voter_set_given_to_an_unconfigured_node_configures_it() -> None:
    core = make("a", ())
    assert state(core) == (UNCONFIGURED, False)
    core.set_voters(0.0, [])  # an empty set configures nothing
    assert state(core) == (UNCONFIGURED, False)
    core.set_voters(0.0, ["a", "b", "c"])
    assert state(core) == (STATIC, True)
    assert core.voters == {"a", "b", "c"}


# -- the wire: every field lands where it belongs ---------------------------------


def test_every_field_of_every_kind_decodes_into_its_own_place() -> None:
    # Distinct values everywhere, so a field read from the wrong position
    # (or a version's term and index swapped) cannot go unnoticed.
    cases: list[tuple[list[object], object]] = [
        ([1, 11, 12, 13, ["p", "q"]], PreVote(11, (12, 13), ("p", "q"))),
        ([1, 11, 12, 13, None], PreVote(11, (12, 13), None)),
        ([2, 21, 22, True], PreVoteReply(21, 22, True)),
        ([2, 21, 22, False], PreVoteReply(21, 22, False)),
        ([3, 31, 32, 33, ["r"]], Vote(31, (32, 33), ("r",))),
        ([3, 31, 32, 33, None], Vote(31, (32, 33), None)),
        ([4, 41, True], VoteReply(41, True)),
        ([4, 41, False], VoteReply(41, False)),
        ([5, 51, 5.5, 52, 53, ["s", "t"]], Heartbeat(51, 5.5, (52, 53), ("s", "t"))),
        ([6, 61, 6.5, 62, 63], HeartbeatAck(61, 6.5, (62, 63))),
        ([7, "u"], Remove("u")),
    ]
    for fields, message in cases:
        assert decode_message(cbor2.dumps(fields)) == message
        assert encode_message(message) == cbor2.dumps(fields)


def test_integer_stamps_decode_as_floats() -> None:
    heartbeat = decode_message(cbor2.dumps([5, 1, 7, 0, 1, []]))
    ack = decode_message(cbor2.dumps([6, 1, 7, 0, 1]))
    assert isinstance(heartbeat, Heartbeat) and type(heartbeat.stamp) is float
    assert isinstance(ack, HeartbeatAck) and type(ack.stamp) is float


# -- who may be granted a vote ------------------------------------------------------


def test_an_unconfigured_candidate_without_a_proposal_is_refused() -> None:
    # Raft's up-to-date rule needs a real version; (0, 0) without a
    # bootstrap proposal is neither, even to a node that is unconfigured too.
    core = make("a", ())
    core.observe(0.0, known=["a", "b"], alive=["a", "b"])
    core.take_actions()
    for message in (PreVote(1, UNCONFIGURED, None), Vote(1, UNCONFIGURED, None)):
        core.receive(0.0, "b", message)
        [reply] = [a for a in core.take_actions() if isinstance(a, Send)]
        assert reply.to == "b" and reply.message.granted is False  # type: ignore[union-attr]
    assert core.voted_for is None


# -- a static change of the voter set during an election -----------------------------


FIVE = ("a", "b", "c", "d", "e")


def test_votes_of_voters_taken_out_during_the_campaign_stop_counting() -> None:
    core = make("a", FIVE, pre_vote=False)
    now = fire(core)
    core.receive(now, "e", VoteReply(1, True))
    assert role(core) is Role.CANDIDATE  # a and e: 2 of 5
    core.set_voters(now, ["a", "b", "c"])  # e is gone: a alone is 1 of 2
    assert role(core) is Role.CANDIDATE
    core.receive(now, "b", VoteReply(1, True))
    assert role(core) is Role.LEADER


def test_pre_votes_of_voters_taken_out_stop_counting() -> None:
    core = make("a", FIVE)
    now = fire(core)
    core.receive(now, "e", PreVoteReply(0, 1, True))
    assert role(core) is Role.PRE_CANDIDATE and core.term == 0
    core.set_voters(now, ["a", "b", "c"])
    assert role(core) is Role.PRE_CANDIDATE and core.term == 0


def test_a_pre_candidate_whose_pre_votes_become_a_majority_campaigns() -> None:
    core = make("a", FIVE)
    now = fire(core)
    core.receive(now, "b", PreVoteReply(0, 1, True))
    assert role(core) is Role.PRE_CANDIDATE  # 2 of 5
    core.take_actions()
    core.set_voters(now, ["a", "b", "c"])  # exactly 2 of 3
    assert role(core) is Role.CANDIDATE and core.term == 1
    assert [a.to for a in core.take_actions() if isinstance(a, Send)] == ["b", "c"]


def test_a_candidate_whose_votes_become_a_majority_leads_and_says_so() -> None:
    core = make("a", FIVE, pre_vote=False)
    now = fire(core)
    core.receive(now, "b", VoteReply(1, True))
    core.take_events()
    core.set_voters(now, ["a", "b", "c"])
    assert role(core) is Role.LEADER
    assert core.take_events() == [LeaderChange(1, "a")]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_campaigner_taken_out_of_the_voter_set_stops(pre_vote: bool) -> None:
    core = make("a", FIVE, pre_vote=pre_vote)
    fire(core)
    assert role(core) is (Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE)
    core.set_voters(5.0, ["b", "c", "d"])
    assert role(core) is Role.FOLLOWER
    assert core.next_deadline() is None  # outside the set: never campaigns


# -- the leader's own changes --------------------------------------------------------


def lone_leader() -> tuple[ElectionCore, float]:
    core = make("a", ("a",))
    won = fire(core)
    assert role(core) is Role.LEADER
    core.take_actions()
    core.take_events()
    return core, won


def test_the_newcomer_added_gets_the_lease_grace_not_the_one_left_waiting() -> None:
    # Two live non-voters: b joins first; b (not c) gets a lease from now,
    # so the leader of {a, b} does not step down before b can acknowledge.
    core, won = lone_leader()
    now = won + 10.0
    core.observe(now, known=["a", "b", "c"], alive=["a", "b", "c"])
    assert core.voters == {"a", "b"}
    assert core.lease_expiry() == pytest.approx(now + core.lease_timeout)
    core.tick(now + 0.01)
    assert role(core) is Role.LEADER


def test_departed_voters_leave_one_at_a_time_in_name_order() -> None:
    core = make("a", FIVE)
    now = win(core, "b", "c")
    for voter in ("b", "c"):
        core.receive(now, voter, HeartbeatAck(1, now, core.version))
    assert core.committed
    core.observe(now, known=FIVE, alive=["a", "b", "c"], departed=["e", "d"])
    assert core.voters == {"a", "b", "c", "e"}
    for voter in ("b", "c"):
        core.receive(now, voter, HeartbeatAck(1, now, core.version))
    assert core.voters == {"a", "b", "c"}


def test_a_change_to_a_one_voter_set_commits_at_once_and_the_next_follows() -> None:
    core = make("a", ("a", "b"))
    now = win(core, "b")
    core.receive(now, "b", HeartbeatAck(1, now, core.version))
    assert core.committed and core.version == (1, 2)
    core.observe(now, known=["a", "b", "c"], alive=["a", "c"], departed=["b"])
    # {a} needs no acknowledgement: c is added right after b is removed.
    assert core.voters == {"a", "c"} and core.version == (1, 4)


def test_the_lease_runs_from_the_majoritys_oldest_ack_with_an_even_voter_set() -> None:
    core = make("a", ("a", "b", "c", "d"))
    won = win(core, "b", "c")
    now = won + 0.3
    for voter, sent in (("b", won + 0.3), ("c", won + 0.2), ("d", won + 0.1)):
        core.receive(now, voter, HeartbeatAck(1, sent, core.version))
    # Newest first: a (now), b, c, d; a majority of 4 is 3, so c's.
    assert core.lease_expiry() == pytest.approx(won + 0.2 + core.lease_timeout)


def test_a_leader_whose_lease_ran_out_steps_down_on_a_set_change_without_heartbeats() -> None:
    # No acks since it won: growing the set finds the lease gone. The
    # deposed leader must not send heartbeats in the term it no longer leads.
    core = make("a")
    won = win(core, "b")
    now = won + core.lease_timeout + 0.01
    core.set_voters(now, ["a", "b", "c", "d"])
    assert role(core) is Role.FOLLOWER
    assert [a for a in core.take_actions() if isinstance(a, Send)] == []


# -- what a peer's message decides ---------------------------------------------------


ABC = ("a", "b", "c")


def committed_leader() -> tuple[ElectionCore, float]:
    """``a`` leading ``{a, b, c}`` with its no-op version acknowledged."""
    core = make("a", ABC)
    now = win(core, "b")
    core.receive(now, "b", HeartbeatAck(1, now, core.version))
    assert core.committed
    core.take_actions()
    return core, now


def test_a_remove_counts_only_from_a_voter_and_only_at_the_leader() -> None:
    leader, now = committed_leader()
    leader.receive(now, "x", Remove("c"))  # not a voter: ignored
    assert leader.voters == set(ABC) and leader.take_actions() == []
    leader.receive(now, "b", Remove("c"))
    assert leader.voters == {"a", "b"}
    # A follower is not the one to act on a Remove, not even a voter's: it
    # neither forwards it nor forgets the member.
    follower = make("b", ABC)
    follower.observe(now, known=ABC, alive=ABC)
    follower.receive(now, "a", Heartbeat(1, now, STATIC, ABC))
    follower.take_actions()
    follower.receive(now, "c", Remove("a"))
    assert follower.take_actions() == [] and follower.known == set(ABC)


def test_a_vote_request_of_the_leaders_own_term_is_ignored_in_the_lease() -> None:
    # b heard the leader of term 1 (adopting the term, so it voted for no
    # one in it): a rival of that same term gets no answer and no vote.
    core = make("b", ABC)
    core.receive(0.0, "a", Heartbeat(1, 0.0, STATIC, ABC))
    core.take_actions()
    assert core.term == 1 and core.voted_for is None
    core.receive(0.5, "c", Vote(1, STATIC))
    assert core.take_actions() == [] and core.voted_for is None


def test_a_repeated_vote_request_is_granted_again_without_another_write() -> None:
    core = make("b", ABC)
    core.receive(0.0, "c", Vote(1, STATIC))
    assert [type(a) for a in core.take_actions()] == [Persist, Send]
    core.receive(0.1, "c", Vote(1, STATIC))  # a retransmission
    assert core.take_actions() == [Send("c", VoteReply(1, granted=True))]
    assert core.voted_for == "c"


@pytest.mark.parametrize("role_before", ["follower", "candidate"])
def test_the_vote_of_a_term_survives_hearing_its_leader(role_before: str) -> None:
    # Hearing the leader of the term we already voted in must not reset the
    # vote: a rival of that term asking after the lease is still refused.
    core = make("b", ABC, pre_vote=False)
    if role_before == "candidate":
        now = fire(core)  # b campaigns in term 1, voting for itself
        leader, voted = "a", "b"
    else:
        now = 0.0
        core.receive(now, "a", Vote(1, STATIC))
        leader, voted = "a", "a"
    core.take_actions()
    assert core.term == 1 and core.voted_for == voted
    core.receive(now, leader, Heartbeat(1, now, STATIC, ABC))
    assert core.voted_for == voted and core.leader == leader
    assert core.take_actions() == [Send(leader, HeartbeatAck(1, now, STATIC))]
    later = now + 3 * E
    core.receive(later, "c", Vote(1, STATIC))
    assert core.take_actions() == [Send("c", VoteReply(1, granted=False))]
    assert core.voted_for == voted


def test_a_new_terms_lease_runs_from_its_win_not_from_acks_of_an_earlier_term() -> None:
    # Acks a leader got in term 1 are no evidence for term 3: a voter that
    # acknowledged them may have voted for someone else since.
    core = make("a", ABC, pre_vote=False)
    won = win(core, "b")
    core.receive(won, "b", HeartbeatAck(1, won, core.version))
    core.receive(won, "c", HeartbeatAck(1, won, core.version))
    core.receive(won + 0.1, "b", Heartbeat(2, won + 0.1, core.version, ABC))  # deposed
    assert role(core) is Role.FOLLOWER
    later = won + 10.0
    core.tick(later)  # the election timer ran out long ago: a campaign for term 3
    core.receive(later, "c", VoteReply(3, granted=True))
    assert role(core) is Role.LEADER and core.term == 3
    assert core.lease_expiry() == pytest.approx(later + core.lease_timeout)


def test_a_removed_member_leaves_the_known_set_and_no_leader_means_no_request() -> None:
    # Before any cluster exists a removal shrinks what a bootstrap would
    # propose; with no leader known there is no one to ask (nothing sent).
    core = make("a", ())
    core.observe(0.0, known=ABC, alive=ABC)
    core.request_removal(0.0, "c")
    assert core.known == {"a", "b"}
    assert core.take_actions() == []


@pytest.mark.parametrize("pre_vote", [True, False])
def test_a_refusal_from_a_later_term_makes_a_campaigner_adopt_it(pre_vote: bool) -> None:
    core = make("a", ABC, pre_vote=pre_vote)
    now = fire(core)
    core.take_actions()
    reply = PreVoteReply(7, 1, granted=False) if pre_vote else VoteReply(7, granted=False)
    core.receive(now, "b", reply)
    assert role(core) is Role.FOLLOWER and core.term == 7 and core.voted_for is None
    assert core.take_actions() == [Persist(7, None, STATIC, ABC)]


def test_each_heartbeat_restarts_a_followers_election_timer() -> None:
    # The leader's heartbeats keep a follower from ever timing out: each
    # one pushes its election deadline to at least E after it.
    core = make("b", ABC)
    now = 0.0
    for _ in range(30):
        core.receive(now, "a", Heartbeat(1, now, STATIC, ABC))
        deadline = core.next_deadline()
        assert deadline is not None and deadline >= now + E
        now += 0.5 * E
    assert role(core) is Role.FOLLOWER and core.leader == "a"


def test_a_lone_voter_that_wins_adds_a_live_member_at_once() -> None:
    # A one-voter set commits the moment it is won, so the first change
    # follows at once, not at the next report from membership.
    core = make("a", ("a",))
    core.observe(0.0, known=["a", "b"], alive=["a", "b"])
    assert core.voters == {"a"}
    fire(core)
    assert role(core) is Role.LEADER and core.voters == {"a", "b"}


def test_a_leader_changes_nothing_before_its_own_set_is_committed() -> None:
    # One single-server change at a time: until a majority holds the set
    # the leader stamped on winning, newcomers and removals wait.
    core = make("a", ABC)
    now = win(core, "b")
    assert not core.committed
    core.observe(now, known=["a", "b", "c", "d"], alive=["a", "b", "c", "d"])
    core.request_removal(now, "c")
    assert core.voters == set(ABC) and core.version == (1, 2)
    core.receive(now, "b", HeartbeatAck(1, now, (1, 2)))  # committed: one change
    assert core.voters == {"a", "b"} and core.version == (1, 3)


def test_a_leader_asked_to_remove_itself_steps_down_instead() -> None:
    # It never leads a set it is not in: it retires, and the next leader
    # takes it out.
    core, now = committed_leader()
    core.receive(now, "b", Remove("a"))
    assert role(core) is Role.FOLLOWER and core.leader is None
    assert core.voters == set(ABC)
    assert [a for a in core.take_actions() if isinstance(a, Send)] == []
