"""The voter cap on the deterministic simulator: dead voters are replaced by
learners, former voters come back as learners without disrupting anyone,
and no term has two leaders while voters are replaced under faults."""

from __future__ import annotations

from trio_distribute.testing import election_sim as es


def test_a_dead_voter_or_leader_is_replaced_by_a_learner() -> None:
    result = es.voter_replacement(4, n=9, max_voters=5, kills=3)
    assert result.violations == ()
    assert result.two_leader_terms == 0 and result.double_votes == 0
    # Every kill (a third of them the leader's) was made good: five live
    # voters again, committed, and held by every up node.
    assert result.replaced == result.kills == 12
    # Within detection (up to 3 E) plus an election and two changes.
    assert max(result.replacement_times) < 10
    # The victim came back (with its old configuration on disk) as a learner
    # and nobody's leader changed because of it.
    assert result.changes_after_rejoin == 0
    # A learner hears from the leader once per learner_interval (2 E = 0.6 s),
    # a voter every heartbeat (0.05 s): twelve times as often.
    assert 1.5 <= result.learner_msgs_per_s <= 1.8
    assert result.voter_msgs_per_s > 10 * result.learner_msgs_per_s


def test_no_term_has_two_leaders_with_learners_under_faults() -> None:
    # Seven nodes, three voters, the R1 fault schedules; crashed nodes are
    # reported failed at once, so voters are replaced in the middle of them.
    result = es.r1_safety(60, n=7, max_voters=3)
    assert result.violations == ()
    assert result.two_leader_terms == 0 and result.double_votes == 0
    assert result.terms_with_leader > 2 * result.schedules
    assert result.no_leader_after_heal == 0
