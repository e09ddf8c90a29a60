"""A member that holds the cookie forges news of another member's departure
or death at the largest incarnation the wire allows: in the simulator (20
members, lossy network) the accused member is alive again in every view
within the suspicion bound, every time the forger repeats itself."""

from __future__ import annotations

import pytest

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.swim import CEILING, MemberStatus
from trio_distribute.config import MembershipConfig
from trio_distribute.testing.swim_sim import SwimCluster, suspicion_min

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
    victim, others = names[3], [name for name in names if name != victim]
    bound = suspicion_min(cluster.config, n)
    message: wire.DatagramMessage = (
        wire.Left(victim, CEILING) if kind == "left" else wire.Dead(victim, CEILING, "forger")
    )
    for _ in range(3):  # the forger repeats itself; each time it is refuted
        forge(cluster, others[:5], message)
        down = MemberStatus.LEFT if kind == "left" else MemberStatus.DEAD
        assert all(cluster.view(name, victim) is down for name in others[:5])
        assert cluster.sim.run_until_true(
            lambda: cluster.everyone_sees(victim, MemberStatus.ALIVE, among=others),
            timeout=bound,
        ), [cluster.view(name, victim) for name in others]
        cluster.sim.run_for(2.0)
    assert cluster.core(victim).counters["rebases"] >= 1
