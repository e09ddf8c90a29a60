"""Lifeguard suspicion timer (trio_distribute._proto.suspicion), with
memberlist's published vectors (suspicion_test.go, state_test.go) as
conformance tables."""

from __future__ import annotations

import random

import pytest

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.suspicion import (
    Suspicion,
    remaining_suspicion_time,
    suspicion_bounds,
)
from trio_distribute._proto.swim import MemberStatus, SwimCore
from trio_distribute.config import MembershipConfig

# memberlist TestSuspicion_remainingSuspicionTime: (confirmations, k, elapsed,
# min, max) -> remaining seconds.
REMAINING = [
    (0, 3, 0.0, 2.0, 30.0, 30.0),
    (1, 3, 2.0, 2.0, 30.0, 14.0),
    (2, 3, 3.0, 2.0, 30.0, 4.81),
    (3, 3, 4.0, 2.0, 30.0, -2.0),
    (4, 3, 5.0, 2.0, 30.0, -3.0),
    (5, 3, 10.0, 2.0, 30.0, -8.0),
]


@pytest.mark.parametrize(("n", "k", "elapsed", "low", "high", "expected"), REMAINING)
def test_remaining_suspicion_time_matches_memberlist(
    n: int, k: int, elapsed: float, low: float, high: float, expected: float
) -> None:
    assert remaining_suspicion_time(n, k, elapsed, low, high) == pytest.approx(expected, abs=1e-9)


# memberlist TestSuspicion_Timer: k=3, min 500 ms, max 2 s; (source,
# newInfo) confirmations -> (counted confirmations, timeout). memberlist's
# table says 810 ms for two confirmations with a 25 ms tolerance; the exact
# whole-millisecond value of its formula is 811 ms.
TIMER_CASES = [
    ([], 0, 2.0),
    ([("me", False), ("foo", True)], 1, 1.25),
    ([("me", False), ("foo", True), ("foo", False), ("foo", False)], 1, 1.25),
    ([("me", False), ("foo", True), ("bar", True)], 2, 0.811),
    ([("me", False), ("foo", True), ("bar", True), ("baz", True)], 3, 0.5),
    ([("me", False), ("foo", True), ("bar", True), ("baz", True), ("zoo", False)], 3, 0.5),
]


@pytest.mark.parametrize(("confirmations", "counted", "timeout"), TIMER_CASES)
def test_timer_confirmations_match_memberlist(
    confirmations: list[tuple[str, bool]], counted: int, timeout: float
) -> None:
    suspicion = Suspicion(source="me", k=3, minimum=0.5, maximum=2.0, started=10.0)
    for source, new_info in confirmations:
        assert suspicion.confirm(source) is new_info
    assert suspicion.confirmations == counted
    assert suspicion.deadline() == pytest.approx(10.0 + timeout, abs=1e-9)
    # A late confirmation after the timer fired changes nothing.
    assert not suspicion.confirm("me")


def test_timer_underflow_fires_at_once() -> None:
    # memberlist TestSuspicion_Timer_Immediate: k=1, min 100 ms, max 30 s;
    # one confirmation 200 ms in makes the timer overdue.
    suspicion = Suspicion(source="me", k=1, minimum=0.1, maximum=30.0, started=0.0)
    assert suspicion.confirm("foo")
    assert suspicion.deadline() < 0.2


def test_k_zero_means_fixed_minimum() -> None:
    suspicion = Suspicion(source="me", k=0, minimum=4.0, maximum=24.0, started=1.0)
    assert suspicion.deadline() == 5.0
    assert not suspicion.confirm("other")


@pytest.mark.parametrize(
    ("n", "low", "high"),
    [(1, 4.0, 24.0), (10, 4.0, 24.0), (100, 8.0, 48.0), (1000, 12.0, 72.0), (10000, 16.0, 96.0)],
)
def test_bounds_follow_memberlist_lan_formula(n: int, low: float, high: float) -> None:
    minimum, maximum = suspicion_bounds(
        suspicion_mult=4, max_timeout_mult=6, probe_interval=1.0, cluster_size=n
    )
    assert (minimum, maximum) == pytest.approx((low, high))


# memberlist TestMemberList_ProbeNode_Suspect_Dogpile: SuspicionMult 5,
# SuspicionMaxTimeoutMult 2, ProbeInterval 100 ms; (peers, confirmations) ->
# time from suspicion to death. The member under test raises the suspicion
# itself; k = 3 applies only once n - 2 >= k.
DOGPILE = [
    (1, 0, 0.500),
    (2, 0, 0.500),
    (3, 0, 0.500),
    (4, 0, 1.000),
    (5, 0, 1.000),
    (5, 1, 0.750),
    (5, 2, 0.604),
    (5, 3, 0.500),
    (5, 4, 0.500),
]


@pytest.mark.parametrize(("peers", "confirmations", "expected"), DOGPILE)
def test_dogpile_table(peers: int, confirmations: int, expected: float) -> None:
    config = MembershipConfig(
        probe_interval=0.1,
        probe_timeout=0.001,
        suspicion_mult=5,
        suspicion_max_timeout_mult=2,
        push_pull_interval=1000.0,
        reconnect_interval=1000.0,
    )
    core = SwimCore(name="me", address="me", config=config, rng=random.Random(1), now=0.0)
    names = [f"p{i}" for i in range(peers)]
    bad = names[-1]
    for name in names:
        message = wire.pack([wire.encode(wire.Alive(name, name, 1, b""))])
        core.datagram_received(0.0, name, message)
    # The member's own failed probe raises the suspicion (source = itself).
    suspect = wire.pack([wire.encode(wire.Suspect(bad, 1, "me"))])
    core.datagram_received(0.0, bad, suspect)
    for j in range(confirmations):
        confirm = wire.pack([wire.encode(wire.Suspect(bad, 1, f"peer{j}"))])
        core.datagram_received(0.0, f"peer{j}", confirm)
    assert core.status_of(bad) is MemberStatus.SUSPECT
    deadline = core.suspicion_deadline(bad)
    # Within 1 ms: memberlist's 604 ms is the formula's 603.77 ms rounded,
    # and its timer truncates to whole milliseconds (603 ms).
    assert deadline is not None
    assert abs(deadline - expected) <= 0.001 + 1e-9
    core.tick(expected - 0.002)
    assert core.status_of(bad) is MemberStatus.SUSPECT
    core.tick(expected + 0.001)
    assert core.status_of(bad) is MemberStatus.DEAD


# -- each rule pinned at its exact boundary -----------------------------------


def test_suspicion_k_of_one_starts_at_the_maximum() -> None:
    # k = 1 is the smallest k that shortens the timer: with no confirmation
    # the suspicion runs for the maximum, one confirmation brings it to the
    # minimum (k < 1 alone means "always the minimum").
    timer = Suspicion(source="a", k=1, minimum=2.0, maximum=10.0, started=100.0)
    assert timer.maximum == 10.0
    assert timer.deadline() == 110.0
    assert remaining_suspicion_time(0, 1, 0.0, 2.0, 10.0) == 10.0
    assert timer.confirm("b")
    assert timer.deadline() == 102.0
    assert not timer.confirm("c")  # k reached: no news
    zero = Suspicion(source="a", k=0, minimum=2.0, maximum=10.0, started=100.0)
    assert zero.maximum == 2.0 and zero.deadline() == 102.0
    assert remaining_suspicion_time(0, 0, 0.0, 2.0, 10.0) == 2.0


def test_suspicion_bounds_for_tiny_and_empty_clusters() -> None:
    # A cluster of 0 or 1 (a member alone) scales like 10: log10 floor of 1.
    for n in (0, 1, 2, 10):
        assert suspicion_bounds(
            suspicion_mult=4, max_timeout_mult=6, probe_interval=1.0, cluster_size=n
        ) == (4.0, 24.0)
    low, high = suspicion_bounds(
        suspicion_mult=4, max_timeout_mult=6, probe_interval=1.0, cluster_size=100
    )
    assert (low, high) == (8.0, 48.0)


def test_suspicion_confirmations_are_not_a_constructor_argument() -> None:
    # Only confirm() adds confirmations (so the source is always counted out).
    with pytest.raises(TypeError):
        Suspicion(  # type: ignore[call-arg]
            source="a", k=2, minimum=1.0, maximum=2.0, started=0.0, confirmed_by={"b"}
        )
    timer = Suspicion(source="a", k=2, minimum=1.0, maximum=5.0, started=0.0)
    assert timer.confirmations == 0
    assert not timer.confirm("a")  # the source does not confirm itself
