"""Membership on a starved event loop: a node whose loop stops (CPU-bound
work, a loaded machine, a stopped process) must not blame its peers for
the time it lost itself.

In virtual time a stall is a jump of the clock while no task yields: every
timer that fell due meanwhile fires at once, in the same scheduling round
as the receivers of the datagrams that arrived meanwhile, exactly as on a
real loop that was kept busy.
"""

from __future__ import annotations

import asyncio
import math

import anyio
import attrs
import pytest
import sniffio
from virtual import anyio_backend, fake_network, open_cluster

import trio_distribute as td
from trio_distribute.cluster.membership import MemberStatus, StallClock
from trio_distribute.testing import FakeNetwork, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

FAST = td.NodeConfig.local()


def stall(seconds: float) -> None:
    """Stop the loop for ``seconds`` of its (virtual) clock without yielding."""
    if sniffio.current_async_library() == "trio":
        import trio

        trio.lowlevel.current_clock().jump(seconds)  # type: ignore[attr-defined]
    else:
        loop = asyncio.get_running_loop()
        loop._virtual_now += seconds  # type: ignore[attr-defined]


def suspicions(nodes: list[td.Node]) -> int:
    return sum(node.membership.core.counters["suspicions_raised"] for node in nodes)


async def until_probe_phase(node: td.Node, phase: float) -> None:
    """Wait until ``node``'s current probe started ``phase`` seconds ago (to
    within 5 ms)."""
    while True:
        probe = node.membership.core.current_probe
        # The core's time is real time less the stalls taken off it.
        now = anyio.current_time() - node.membership.stalls[1]
        if probe is not None and phase <= now - probe[1] < phase + 0.005:
            return
        await anyio.sleep(0.005)


async def stalled_cluster(
    network: FakeNetwork, config: td.NodeConfig, rounds: int
) -> tuple[int, int, list[td.Node], list[int]]:
    """Three nodes; the loop stalls ``rounds`` times for 1 s (five probe
    intervals, ten probe timeouts) while a probe is under way. Returns
    (suspicions raised, members ever seen dead, nodes, their peer counts at the end)."""
    dead = 0
    with anyio.fail_after(300):
        async with open_cluster(3, config=config) as nodes:
            everyone = {node.name: MemberStatus.ALIVE for node in nodes}
            await wait_until(
                lambda: all(
                    {n: s for n, s, _ in node.membership.members_with_status()} == everyone
                    for node in nodes
                )
            )
            # 30 ms each way: a probe's ack is in flight for a third of
            # every probe interval, so stalls often catch one on the way.
            for x in nodes:
                for y in nodes:
                    if x is not y:
                        network.set_link(x.name, y.name, both_ways=False, latency=0.03)
            await anyio.sleep(1.0)
            before = suspicions(nodes)
            for i in range(rounds):
                # Stall while a's ping is on its way (its target, on the same
                # loop, cannot answer in time) or while the ack is on its way
                # back (it waits unread when the timers fire).
                phase = 0.01 if i % 2 else 0.045
                await until_probe_phase(nodes[0], phase)
                stall(1.0)
                for node in nodes:
                    counts = node.membership.core.counts()
                    dead += counts.get(MemberStatus.DEAD, 0)
            await anyio.sleep(2.0)
            for node in nodes:
                dead += node.membership.core.counts().get(MemberStatus.DEAD, 0)
            peers = [len(node.nodes()) for node in nodes]
            return suspicions(nodes) - before, dead, nodes, peers


async def test_a_starved_loop_does_not_suspect_its_peers(fake_network: FakeNetwork) -> None:
    raised, dead, nodes, peers = await stalled_cluster(fake_network, FAST, rounds=10)
    assert raised == 0
    assert dead == 0
    for node in nodes:
        count, lost = node.membership.stalls
        # Each stall found once; at least 1 s less a probe interval lost.
        assert count == 10 and lost >= 10 * 0.5
        assert node.membership.core.counters["stalls"] == count
    assert peers == [2, 2, 2]  # no connection was closed


async def test_stalls_below_the_threshold_are_real_time(fake_network: FakeNetwork) -> None:
    """``stall_threshold`` is the line: a stall shorter than it is not taken
    off the clock (and, as before the rule existed, a peer on the same
    starved loop is then suspected)."""
    config = attrs.evolve(FAST, membership=attrs.evolve(FAST.membership, stall_threshold=5.0))
    raised, _dead, nodes, _peers = await stalled_cluster(fake_network, config, rounds=10)
    assert raised > 0
    assert all(node.membership.stalls == (0, 0.0) for node in nodes)


def test_stall_clock_takes_a_late_wake_up_off_the_protocol_time() -> None:
    clock = StallClock(threshold=0.05)
    assert clock.now(10.0) == (10.0, False)  # not armed: never late
    assert clock.arm(11.0) == 11.0
    assert clock.now(10.5) == (10.5, False)
    assert clock.now(11.04) == (11.04, False)  # late by less than the threshold: real time
    assert clock.arm(12.0) == 12.0
    now, stalled = clock.now(14.0)  # two seconds late: protocol time is the deadline
    assert stalled and now == 12.0
    assert clock.stalls == 1 and clock.lost == pytest.approx(2.0) and clock.due == math.inf
    now, stalled = clock.now(14.5)
    assert not stalled and now == pytest.approx(12.5)  # counted once
    assert clock.arm(13.0) == pytest.approx(15.0)  # later deadlines move with the offset
    assert clock.arm(None) == math.inf
    now, stalled = clock.now(10.0)
    assert not stalled and now == pytest.approx(12.5)  # never goes back


def test_stall_clock_reaches_its_deadline_despite_rounding() -> None:
    """After a stall, real minus offset can round to just below an armed
    deadline; the driver, woken at that deadline, must see it reached (or
    it would wake again and again at the same instant)."""
    clock = StallClock(threshold=0.05)
    clock.arm(0.1)
    clock.now(0.1 + 0.7)  # a stall: offset 0.7
    for deadline in (0.3, 0.7, 1.1, 1.3, 2.9):
        due = clock.arm(deadline)
        now, _ = clock.now(due)
        assert now >= deadline


def test_a_stall_raises_local_health_with_lifeguard() -> None:
    import random

    from trio_distribute._proto.swim import SwimCore

    for lifeguard, expected in ((True, 1), (False, 0)):
        core = SwimCore(
            name="a",
            address="h:1",
            config=td.MembershipConfig(),
            rng=random.Random(0),
            now=0.0,
            lifeguard=lifeguard,
        )
        core.stalled()
        assert core.health_multiplier == expected
        assert core.counters["stalls"] == 1


async def test_the_drain_before_the_timers_is_bounded() -> None:
    """A receiver that never settles (a flood) does not keep the driver from
    its timers: it yields at most ``DRAIN_ROUNDS`` scheduling rounds."""
    from trio_distribute.cluster import membership as module

    async with open_cluster(1, config=FAST) as (a,):
        await anyio.sleep(0.5)
        membership = a.membership
        membership._receiver_waiting = False  # as if busy with one datagram after another
        rounds = 0
        original = anyio.lowlevel.checkpoint
        me = anyio.get_current_task().id

        async def counting() -> None:
            nonlocal rounds
            rounds += anyio.get_current_task().id == me
            await original()

        module.anyio.lowlevel.checkpoint = counting  # type: ignore[attr-defined]
        try:
            with anyio.fail_after(5):
                await membership._drain()
        finally:
            module.anyio.lowlevel.checkpoint = original  # type: ignore[attr-defined]
        assert rounds == module.DRAIN_ROUNDS
        membership._receiver_waiting = True


async def test_an_ack_waiting_when_its_probe_is_judged_is_read_first(
    fake_network: FakeNetwork,
) -> None:
    """A busy spell shorter than ``stall_threshold`` (so real time, not taken
    off the clock) during which the ack arrived and the probe's end fell
    due: both are ready in the same scheduling round, and the ack must be
    read before the probe is judged, whichever the scheduler runs first."""
    async with open_cluster(2, config=FAST) as nodes:
        a, b = nodes
        await wait_until(lambda: len(a.membership.alive()) == 2 == len(b.membership.alive()))
        # 90 ms each way: the ack is back 180 ms after the ping, after the
        # probe's timeout (0.1 s; with no other member to ask, a late ack
        # still counts) and 20 ms before the probe interval (0.2 s) ends.
        fake_network.set_link(a.name, b.name, latency=0.09)
        await anyio.sleep(1.0)
        failures = a.membership.core.counters["probe_failures"]
        for _ in range(20):
            # Busy from 170 ms to 210 ms into a's probe: the ack (at 180 ms)
            # and the probe's end (at 200 ms) are both due when it returns.
            await until_probe_phase(a, 0.17)
            stall(0.04)
            await anyio.sleep(0.05)
        assert a.membership.core.counters["probe_failures"] == failures
        assert a.membership.stalls == (0, 0.0)  # real time throughout
