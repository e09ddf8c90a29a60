"""A member that holds the cookie forges news of another member's departure
or death at the incarnation hardest to outbid (2**62 - 1 ahead of the
current one, the farthest that still counts as newer; the old attack used
2**63 - 1): in the simulator (20 members, 1% loss) the accused member is
alive again in every view within the suspicion bound, every time the forger
repeats itself, all the way round the incarnation range."""

from __future__ import annotations

import pytest

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.suspicion import suspicion_bounds
from trio_distribute._proto.swim import MemberStatus
from trio_distribute.config import MembershipConfig
from trio_distribute.testing.swim_sim import SwimCluster

LOCAL = MembershipConfig.local()


def forge(cluster: SwimCluster, to: list[str], message: wire.DatagramMessage) -> None:
    """Deliver an authenticated datagram from outside the cluster's cores."""
    payload = wire.pack([wire.encode(message)])
    for name in to:
        host = cluster.hosts[name]
        host._now = cluster.now
        host.core.datagram_received(cluster.now, "forger:1", payload)
        cluster.sim.wake(name)


@pytest.mark.parametrize("kind", ["left", "dead"])
def test_forged_departure_at_the_ceiling_is_refuted_within_the_suspicion_bound(kind: str) -> None:
    n = 20
    cluster = SwimCluster.converged(n, seed=7, loss=0.01, config=LOCAL, settle=10.0)
    names = cluster.names()
    victim = names[3]
    others = [name for name in names if name != victim]
    config = cluster.config
    # The suspicion bound: the longest a suspect has to refute before it is
    # declared dead (measured: at most 1.3 s here, mostly under SuspicionMin).
    _, bound = suspicion_bounds(
        suspicion_mult=config.suspicion_mult,
        max_timeout_mult=config.suspicion_max_timeout_mult,
        probe_interval=config.probe_interval,
        cluster_size=n,
    )
    down = MemberStatus.LEFT if kind == "left" else MemberStatus.DEAD
    for _ in range(4):  # the forger repeats itself; each time it is refuted
        member = cluster.core(others[0]).member(victim)
        assert member is not None
        forged = (member.incarnation + 2**62 - 1) % 2**63
        message: wire.DatagramMessage = (
            wire.Left(victim, forged) if kind == "left" else wire.Dead(victim, forged, "forger")
        )
        forge(cluster, others[:5], message)
        assert all(cluster.view(name, victim) is down for name in others[:5])
        assert cluster.sim.run_until_true(
            lambda: cluster.everyone_sees(victim, MemberStatus.ALIVE, among=others),
            timeout=bound,
        ), [cluster.view(name, victim) for name in others]
        cluster.sim.run_for(2.0)
    assert cluster.core(victim).counters["incarnation_wraps"] >= 1
