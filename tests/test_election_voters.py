"""The voter cap through the node's real drivers, on FakeNetwork in virtual
time: a cluster larger than ``ElectionConfig.max_voters`` keeps that many
voters, every other node learns the leader from rare messages, and a voter
that dies is replaced by a live learner."""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest

import trio_distribute as td
from trio_distribute.election.raft_lite import Leader
from trio_distribute.testing import FakeNetwork, crash, start_node, virtual_time, wait_until

COOKIE = "voters-cookie"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time()


def config(max_voters: int) -> td.NodeConfig:
    base = td.NodeConfig.local()
    return attrs.evolve(
        base,
        election=attrs.evolve(base.election, bootstrap_expect=3, max_voters=max_voters),
    )


async def test_a_capped_cluster_keeps_its_voters_and_replaces_a_dead_one() -> None:
    net = FakeNetwork(seed=5)
    n, cap = 8, 3
    cfg = config(cap)
    async with anyio.create_task_group() as tg:
        first = await start_node(tg, "n0@127.0.0.1", cookie=COOKIE, config=cfg, network=net)
        seed = [f"127.0.0.1:{first.address[1]}"]
        nodes = [first]
        for i in range(1, n):
            nodes.append(
                await start_node(
                    tg, f"n{i}@127.0.0.1", cookie=COOKIE, config=cfg, seeds=seed, network=net
                )
            )

        def agreed(group: list[td.Node]) -> Leader | None:
            views = {repr(x.election.leader) for x in group}
            first_view = group[0].election.leader
            if len(views) == 1 and isinstance(first_view, Leader):
                voters = {tuple(x.election.voters()) for x in group}
                if len(voters) == 1 and len(next(iter(voters))) == cap:
                    return first_view
            return None

        with anyio.fail_after(60):  # virtual seconds
            await wait_until(lambda: agreed(nodes) is not None)
        leader = agreed(nodes)
        assert leader is not None
        by_name = {x.name: x for x in nodes}
        voters = by_name[leader.name].election.voters()
        learners = [x for x in nodes if x.name not in voters]
        assert len(learners) == n - cap
        # A learner has no election timer: it never campaigns.
        for x in learners:
            core = x.election.core
            assert x.name not in core.voters and core._election_deadline is None
        # A follower voter dies: the leader puts a learner in its place once
        # membership declares it dead.
        victim = by_name[next(v for v in voters if v != leader.name)]
        net.isolate(victim)
        crash(victim)
        survivors = [x for x in nodes if x is not victim]
        with anyio.fail_after(60):
            await wait_until(
                lambda: (
                    agreed(survivors) is not None
                    and victim.name not in survivors[0].election.voters()
                )
            )
        after = agreed(survivors)
        assert after is not None and after.name == leader.name and after.term == leader.term
        new_voters = set(survivors[0].election.voters())
        assert len(new_voters) == cap and victim.name not in new_voters
        assert len(new_voters - set(voters)) == 1  # one learner promoted
        tg.cancel_scope.cancel()
