"""The full mesh's dials are bounded (``MembershipConfig.max_mesh_dials``,
see docs/internals/cluster-processes.rst), on FakeNetwork in virtual time:
counts of dials in flight, never wall-clock bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from virtual import anyio_backend, fake_network

import trio_distribute as td
from trio_distribute.cluster.membership import dials_first
from trio_distribute.testing import FakeNetwork, start_node, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "mesh-dials-test-cookie"
#: How long each dial of the joining node takes: a peer on a busy machine.
SLOW_DIAL = 1.0


class _Dials:
    """Dials of one node: how many are in flight, the most at once, all."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.total = 0


class _SlowDialsNetwork:
    """A network whose node ``slow`` waits ``SLOW_DIAL`` before each dial
    and whose dials are all counted, per node."""

    def __init__(self, inner: FakeNetwork, slow: str) -> None:
        self.inner = inner
        self.slow = slow
        self.dials: dict[str, _Dials] = {}

    def attach(self, name: str) -> Any:
        return _CountingHost(
            self.inner.attach(name), self.dials.setdefault(name, _Dials()), name == self.slow
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _CountingHost:
    def __init__(self, inner: Any, dials: _Dials, slow: bool) -> None:
        self.inner = inner
        self.dials = dials
        self.slow = slow

    async def dial(self, host: str, port: int, *, local_host: str) -> Any:
        self.dials.total += 1
        self.dials.in_flight += 1
        self.dials.most = max(self.dials.most, self.dials.in_flight)
        try:
            if self.slow:
                await anyio.sleep(SLOW_DIAL)
            return await self.inner.dial(host, port, local_host=local_host)
        finally:
            self.dials.in_flight -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def config(*, max_mesh_dials: int | None = None) -> td.NodeConfig:
    base = td.NodeConfig.local()
    membership = base.membership
    if max_mesh_dials is not None:
        membership = attrs.evolve(membership, max_mesh_dials=max_mesh_dials)
    # No election: only the mesh dials.
    return attrs.evolve(base, membership=membership, election=td.ElectionConfig(enabled=False))


@asynccontextmanager
async def joined_late(
    n: int, fake_network: FakeNetwork | None, cfg: td.NodeConfig
) -> AsyncIterator[tuple[list[td.Node], td.Node, _Dials]]:
    """``n`` nodes in a full mesh, then one more (``late``, whose dials are
    slow) joining through the first: it learns the ``n`` members at once."""
    assert fake_network is not None
    net = _SlowDialsNetwork(fake_network, "late@127.0.0.1")
    async with anyio.create_task_group() as tg:
        first = await start_node(tg, "n0@127.0.0.1", cookie=COOKIE, config=cfg, network=net)
        seeds = [f"127.0.0.1:{first.address[1]}"]
        nodes = [first]
        for i in range(1, n):
            nodes.append(
                await start_node(
                    tg, f"n{i}@127.0.0.1", cookie=COOKIE, config=cfg, seeds=seeds, network=net
                )
            )
        await wait_until(lambda: all(len(x.nodes()) == n - 1 for x in nodes))
        late = await start_node(
            tg, "late@127.0.0.1", cookie=COOKIE, config=cfg, seeds=seeds, network=net
        )
        yield nodes, late, net.dials["late@127.0.0.1"]
        tg.cancel_scope.cancel()


async def test_a_node_runs_at_most_max_mesh_dials_at_once(
    fake_network: FakeNetwork | None,
) -> None:
    n, bound = 12, 2
    with anyio.fail_after(120):
        async with joined_late(n, fake_network, config(max_mesh_dials=bound)) as (
            nodes,
            late,
            dials,
        ):
            # The election asks for a connection to each voter it cannot
            # reach (connect_on_demand); with connect_all that waits for the
            # mesh's turn like any other dial.
            for x in nodes:
                late.membership.connect_on_demand(x.name)
            await wait_until(lambda: len(late.nodes()) == n)
            # About half of the 12 members are the late node's to dial
            # (dials_first), all learned at once from the seed: without the
            # bound they were all dialled together. With it, exactly
            # ``bound`` ran at once (the join's own dial to the seed was over
            # before), and the mesh was completed all the same (the members
            # whose turn did not come within handshake_timeout dialled it).
            first = sum(dials_first(late.name, x.name) for x in nodes)
            assert first >= 2 * bound
            assert dials.most == bound, (dials.most, dials.total)
            assert all(late.name in x.nodes() for x in nodes)


def test_max_mesh_dials_defaults_to_4_and_must_be_positive() -> None:
    assert td.MembershipConfig().max_mesh_dials == 4
    with pytest.raises(ValueError, match="max_mesh_dials"):
        td.MembershipConfig(max_mesh_dials=0)
    with pytest.raises(TypeError):
        td.MembershipConfig(max_mesh_dials=2.5)  # type: ignore[arg-type]
