"""SWIM in the deterministic simulator: scenarios and the M-targets of
reference/swim-raft-targets.md at CI size (the full sizes are marked slow)."""

from __future__ import annotations

import pytest

from trio_distribute._proto.swim import MemberStatus
from trio_distribute.config import MembershipConfig
from trio_distribute.testing import swim_sim
from trio_distribute.testing.simulator import Outgoing, Simulator
from trio_distribute.testing.swim_sim import Result, SwimCluster, node_name

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)
LOCAL = MembershipConfig.local()


def assert_passed(results: list[Result]) -> None:
    failed = [r for r in results if r.passed is False]
    assert not failed, "\n".join(r.row() for r in failed)


def every_view(cluster: SwimCluster, status: MemberStatus, among: list[str]) -> bool:
    return all(cluster.everyone_sees(name, status, among=among) for name in among)


# -- scenarios -----------------------------------------------------------------------


def test_members_join_through_one_seed_and_converge() -> None:
    sim = Simulator(3)
    cluster = SwimCluster(sim=sim, config=LOCAL)
    names = [node_name(i) for i in range(12)]
    for i, name in enumerate(names):
        core = cluster._new_core(name)
        cluster._attach(name, core)
        if i:
            core.join(sim.now, [names[0]])
            sim.wake(name)
    assert sim.run_until_true(lambda: every_view(cluster, ALIVE, names), timeout=20.0)
    ups = [r for r in cluster.events if r.change.previous is None]
    assert len(ups) == 12 * 11


def test_crash_is_detected_everywhere_and_a_restart_comes_back() -> None:
    cluster = SwimCluster.converged(10, seed=4, config=LOCAL)
    victim = node_name(5)
    others = [n for n in cluster.names() if n != victim]
    cluster.crash(victim)
    assert cluster.sim.run_until_true(
        lambda: cluster.everyone_sees(victim, DEAD, among=others), timeout=30.0
    )
    core = cluster.restart(victim)
    assert cluster.sim.run_until_true(
        lambda: cluster.everyone_sees(victim, ALIVE, among=others), timeout=30.0
    )
    assert core.incarnation > 0  # it refuted its own death
    for name in others:
        member = cluster.core(name).member(victim)
        assert member is not None and member.incarnation == core.incarnation


def test_graceful_leave_is_left_everywhere() -> None:
    cluster = SwimCluster.converged(8, seed=5, config=LOCAL)
    leaver = node_name(3)
    core = cluster.core(leaver)
    core.leave(cluster.now)
    cluster.sim.wake(leaver)
    others = [n for n in cluster.names() if n != leaver]
    assert cluster.sim.run_until_true(
        lambda: cluster.everyone_sees(leaver, LEFT, among=others), timeout=10.0
    )
    assert cluster.sim.run_until_true(lambda: core.left_complete(cluster.now), timeout=10.0)
    cluster.crash(leaver)
    cluster.sim.run_for(20.0)
    assert cluster.everyone_sees(leaver, LEFT, among=others)  # never "dead"


def test_partition_heals_without_anyone_acting() -> None:
    cluster = SwimCluster.converged(12, seed=6, config=LOCAL)
    names = cluster.names()
    left_side, right_side = names[:6], names[6:]
    cluster.sim.partition(left_side, right_side)
    assert cluster.sim.run_until_true(
        lambda: all(cluster.everyone_sees(n, DEAD, among=left_side) for n in right_side),
        timeout=60.0,
    )
    cluster.sim.heal()
    assert cluster.sim.run_until_true(lambda: every_view(cluster, ALIVE, names), timeout=60.0)


def test_udp_blocked_member_stays_alive_through_the_stream_fallback() -> None:
    cluster = SwimCluster.converged(8, seed=7, config=LOCAL)
    isolated = node_name(4)
    sim = cluster.sim
    original = sim._send

    def udp_blocked(source: str, item: Outgoing) -> None:
        if item.channel == "datagram" and isolated in (source, item.destination):
            sim.stats[source].dropped["udp blocked"] += 1
            return
        original(source, item)

    sim._send = udp_blocked  # type: ignore[method-assign]
    sim.run_for(60.0)
    others = [n for n in cluster.names() if n != isolated]
    assert not any(
        r.change.member.name == isolated and r.change.member.status is DEAD for r in cluster.events
    )
    assert cluster.everyone_sees(isolated, ALIVE, among=others) or all(
        cluster.view(o, isolated) in (ALIVE, SUSPECT) for o in others
    )


def test_garbage_datagrams_are_counted_and_dropped() -> None:
    cluster = SwimCluster.converged(4, seed=8, config=LOCAL)
    host = cluster.hosts[node_name(1)]
    host.datagram_received(cluster.now, "x", b"\xff\x00garbage")
    assert host.decode_errors == 1
    cluster.sim.run_for(5.0)
    assert every_view(cluster, ALIVE, cluster.names())


def test_same_seed_same_run() -> None:
    def run() -> list[tuple[float, str, str, str]]:
        cluster = SwimCluster.converged(6, seed=9, config=LOCAL, loss=0.05)
        cluster.crash(node_name(2))
        cluster.sim.run_for(20.0)
        return [
            (r.time, r.observer, r.change.member.name, r.change.member.status.value)
            for r in cluster.events
        ]

    first = run()
    assert first and first == run()


# -- targets, CI-sized ------------------------------------------------------------------


def test_m1_m3_detection() -> None:
    assert_passed(swim_sim.measure_detection([8, 32], {8: 40, 32: 20}, seed=1))


def test_m2_probe_coverage() -> None:
    assert_passed([swim_sim.measure_probe_coverage(16, 100, seed=1)])


def test_m5_m6_false_positives() -> None:
    assert_passed(swim_sim.measure_false_positives(16, 300, [0.01, 0.05], seed=1))


def test_m7_lifeguard_ab() -> None:
    assert_passed(
        swim_sim.measure_lifeguard_ab(32, 120, seed=1, delay=8.0, detection_trials_count=4)
    )


def test_m9_refutation() -> None:
    assert_passed([swim_sim.measure_refutation(32, 20, 0.05, seed=1)])


def test_m10_dissemination() -> None:
    assert_passed(swim_sim.measure_dissemination(128, 10, 0.0, seed=1))
    assert_passed(swim_sim.measure_dissemination(128, 10, 0.10, seed=2))


def test_m10_gossip_stragglers_are_repaired_by_push_pull() -> None:
    """A member that missed every gossip copy of an update (its UDP was down
    while the retransmit budget ran out) gets it by push-pull within one
    push-pull interval."""
    cluster = SwimCluster.converged(16, seed=10)
    sim = cluster.sim
    straggler = node_name(7)
    original = sim._send

    def deaf(source: str, item: Outgoing) -> None:
        if item.channel == "datagram" and item.destination == straggler:
            return
        original(source, item)

    sim._send = deaf  # type: ignore[method-assign]
    origin = node_name(3)
    cluster.core(origin).update_metadata(sim.now, b"v2")
    sim.wake(origin)
    sim.run_for(5.0)
    others = [n for n in cluster.names() if n != straggler]
    incarnation = cluster.core(origin).incarnation

    def seen(name: str) -> bool:
        member = cluster.core(name).member(origin)
        return member is not None and member.incarnation == incarnation

    assert all(seen(n) for n in others) and not seen(straggler)
    assert not any(origin in cluster.core(n)._queue for n in others)  # budget spent
    sim._send = original  # type: ignore[method-assign]
    start = sim.now
    assert sim.run_until_true(lambda: seen(straggler), timeout=cluster.config.push_pull_interval)
    assert sim.now - start <= cluster.config.push_pull_interval


def test_m11_m12_load_and_packet_size() -> None:
    assert_passed(swim_sim.measure_load([8, 32], 30.0, seed=1))


# -- full sizes ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(3600)  # full-size runs: minutes, not the default 2
def test_full_suite() -> None:
    assert_passed(swim_sim.run_all(full=True))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # full-size runs: minutes, not the default 2
def test_m1_m3_detection_at_1000() -> None:
    assert_passed(swim_sim.measure_detection([1000], {1000: 10}, seed=3))


def test_everyone_sees_answers_as_asking_everyone_in_order() -> None:
    """everyone_sees asks last time's dissenter first (a speed-up for waits):
    the answer must still be the plain one, also when the list it was given
    changes in between."""
    cluster = SwimCluster.converged(6, seed=11, config=LOCAL)
    victim = node_name(2)
    others = [n for n in cluster.names() if n != victim]

    def plain(among: list[str]) -> bool:
        return all(cluster.view(o, victim) is DEAD for o in among if o != victim)

    cluster.crash(victim)
    checked = 0
    while not plain(others):
        assert cluster.everyone_sees(victim, DEAD, among=others) is False
        assert cluster.everyone_sees(victim, DEAD, among=tuple(others)) is False
        agree = [o for o in others if cluster.view(o, victim) is DEAD]
        dissent = [o for o in others if cluster.view(o, victim) is not DEAD]
        if agree:
            # The only dissenter is remembered, then replaced in the same
            # list by the member itself (who is never asked): now "yes".
            among = [dissent[0], *agree]
            assert cluster.everyone_sees(victim, DEAD, among=among) is False
            among[0] = victim
            assert cluster.everyone_sees(victim, DEAD, among=among) is True
            among[0] = dissent[0]
            assert cluster.everyone_sees(victim, DEAD, among=among) is False
            checked += 1
        cluster.sim.run_for(0.05)
    assert checked
    assert cluster.everyone_sees(victim, DEAD, among=others)
    assert cluster.everyone_sees(victim, DEAD, among=iter(others))
