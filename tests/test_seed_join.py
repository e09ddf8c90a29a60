"""Joining through seeds (``open_node(seeds=...)``), on FakeNetwork in
virtual time: the node keeps trying until a seed is a member it knows,
holds its election back until then, and backs off with jitter between
attempts. Start order must not matter (docs/guide/election.rst, "Seeds")."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import attrs
import pytest

import trio_distribute as td
from trio_distribute.cluster.membership import Membership
from trio_distribute.election.raft_lite import Leader, NoLeader
from trio_distribute.errors import ConnectError
from trio_distribute.testing import FakeNetwork, start_node, virtual_time, wait_until

COOKIE = "seed-join-cookie"
SEED_PORT = 4400


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time()


def config(
    bootstrap_expect: int, *, membership: bool = True, reconnect_interval: float | None = None
) -> td.NodeConfig:
    base = td.NodeConfig.local()
    members = attrs.evolve(base.membership, enabled=membership)
    if reconnect_interval is not None:
        members = attrs.evolve(members, reconnect_interval=reconnect_interval)
    return attrs.evolve(
        base,
        membership=members,
        election=attrs.evolve(base.election, bootstrap_expect=bootstrap_expect),
    )


def held(node: td.Node) -> bool:
    """Whether the node's election waits for its seeds."""
    return bool(node.election._joining)


class Timeline(logging.Handler):
    """The node module's log lines with the loop's (virtual) time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((anyio.current_time(), record.getMessage()))

    def times(self, text: str) -> list[float]:
        return [at for at, line in self.lines if text in line]


@pytest.fixture
def timeline() -> Any:
    handler = Timeline()
    logger = logging.getLogger("trio_distribute.node")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)


async def joined_by_another(
    tg: Any, net: FakeNetwork, cfg: td.NodeConfig
) -> tuple[td.Node, td.Node]:
    """``early``, whose seed is down, and ``other``, which joins through
    ``early``; once ``early``'s election is released."""
    early = await start_node(
        tg, "early@h1", cookie=COOKIE, config=cfg, network=net, seeds=[f"seed@h0:{SEED_PORT}"]
    )
    other = await start_node(
        tg, "other@h2", cookie=COOKIE, config=cfg, network=net,
        seeds=[f"early@h1:{early.address[1]}"],
    )  # fmt: skip
    await wait_until(lambda: not held(early))
    return early, other


async def assert_retries_ended(timeline: Timeline, cfg: td.NodeConfig) -> None:
    """``early`` has stopped trying its seeds (within two retries)."""
    await anyio.sleep(2 * cfg.membership.reconnect_interval)
    retries = len(timeline.times("early@h1: retrying seeds"))
    await anyio.sleep(2 * cfg.membership.reconnect_interval)
    assert len(timeline.times("early@h1: retrying seeds")) == retries


async def test_a_node_without_seeds_is_never_held() -> None:
    net = FakeNetwork(seed=3)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            alone = await start_node(tg, "alone@h0", cookie=COOKIE, config=config(1), network=net)
            assert not held(alone)
            await wait_until(lambda: isinstance(alone.election.leader, Leader))
            tg.cancel_scope.cancel()


async def test_a_seed_that_is_up_is_joined_at_once_and_quietly(timeline: Timeline) -> None:
    """Joined means the state exchange told of a member: with the seed up,
    that is the first attempt, no retry and no warning."""
    net = FakeNetwork(seed=3)
    cfg = config(2)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            seed = await start_node(
                tg, "seed@h0", cookie=COOKIE, config=cfg, network=net, port=SEED_PORT
            )
            started = anyio.current_time()
            early = await start_node(
                tg, "early@h1", cookie=COOKIE, config=cfg, network=net,
                seeds=[f"seed@h0:{SEED_PORT}"],
            )  # fmt: skip
            await wait_until(lambda: not held(early))
            assert anyio.current_time() - started < cfg.handshake_timeout / 2
            assert early.membership.core.status_of(seed.name) is td.MemberStatus.ALIVE
            await anyio.sleep(10)
            about_seeds = ("retrying", "could not join", "reached a seed", "joined")
            said = [line for _, line in timeline.lines if any(t in line for t in about_seeds)]
            assert said == []
            tg.cancel_scope.cancel()


async def test_the_election_waits_until_a_seed_is_joined_and_not_longer() -> None:
    """With ``bootstrap_expect`` 1 a held node would elect itself at once:
    a cluster of its own beside its seed's."""
    net = FakeNetwork(seed=3)
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            early = await start_node(
                tg, "early@h1", cookie=COOKIE, config=config(1), network=net,
                seeds=[f"seed@h0:{SEED_PORT}"],
            )  # fmt: skip
            assert held(early)
            await anyio.sleep(30)  # many retries: nobody listens on the seed's port
            assert held(early)
            assert early.election.leader == NoLeader() and early.election.term == 0
            seed = await start_node(
                tg, "seed@h0", cookie=COOKIE, config=config(1), network=net, port=SEED_PORT
            )
            await wait_until(lambda: not held(early))
            await wait_until(lambda: len(early.membership.alive()) == 2)
            # One cluster, one leader both agree on.
            await wait_until(
                lambda: (
                    isinstance(early.election.leader, Leader)
                    and early.election.leader == seed.election.leader
                )
            )
            assert early.election.voters() == sorted([early.name, seed.name])
            tg.cancel_scope.cancel()


async def test_reaching_a_seed_that_tells_of_no_member_is_not_joining(
    timeline: Timeline,
) -> None:
    """A seed whose state exchange tells nothing (here: its membership is
    off) was reached, not joined: the node stays held and tries again."""
    net = FakeNetwork(seed=3)
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            await start_node(
                tg, "mute@h0", cookie=COOKIE, config=config(1, membership=False), network=net,
                port=SEED_PORT,
            )  # fmt: skip
            early = await start_node(
                tg, "early@h1", cookie=COOKIE, config=config(1), network=net,
                seeds=[f"mute@h0:{SEED_PORT}"],
            )  # fmt: skip
            await anyio.sleep(30)
            assert held(early)
            assert len(timeline.times("reached a seed of")) >= 2
            assert len(timeline.times("retrying seeds")) >= 2
            assert early.election.leader == NoLeader()
            tg.cancel_scope.cancel()


async def test_without_membership_every_seed_is_dialled_until_each_answers(
    timeline: Timeline,
) -> None:
    """Without membership (and so without an election) joining is
    connecting: a seed that answered is not dialled again, one that did not
    is, until it answers."""
    net = FakeNetwork(seed=3)
    cfg = config(1, membership=False, reconnect_interval=2.0)
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            up = await start_node(tg, "up@h0", cookie=COOKIE, config=cfg, network=net, port=4401)
            early = await start_node(
                tg, "early@h1", cookie=COOKIE, config=cfg, network=net,
                seeds=[f"up@h0:{4401}", f"late@h2:{4402}"],
            )  # fmt: skip
            await wait_until(lambda: early.transport.is_connected(up.name))
            await anyio.sleep(10)
            failed = timeline.times("could not join seed late@h2")
            assert len(failed) >= 3
            assert not timeline.times("could not join seed up@h0")
            retries = [line for _, line in timeline.lines if "retrying seeds" in line]
            assert retries and all("up@h0" not in line for line in retries)
            late = await start_node(
                tg, "late@h2", cookie=COOKIE, config=cfg, network=net, port=4402
            )
            await wait_until(lambda: early.transport.is_connected(late.name))
            # Joined: no more attempts.
            await wait_until(lambda: bool(timeline.times("joined through the seeds")))
            count = len(timeline.times("retrying seeds"))
            await anyio.sleep(10)
            assert len(timeline.times("retrying seeds")) == count
            assert sorted(early.transport.connections) == sorted([up.name, late.name])
            tg.cancel_scope.cancel()


async def test_joined_by_another_releases_the_election_and_the_seed_is_still_joined(
    timeline: Timeline,
) -> None:
    """``other`` joins through ``early`` while ``early``'s seed is down:
    ``early`` is part of a cluster (its election is released at its next
    retry) but keeps trying its seed until the seed is a member it knows."""
    net = FakeNetwork(seed=3)
    cfg = config(2, reconnect_interval=2.0)
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            early, other = await joined_by_another(tg, net, cfg)
            await wait_until(lambda: len(early.membership.alive()) == 2)
            await wait_until(lambda: isinstance(early.election.leader, Leader))
            await anyio.sleep(20)
            # The seed starts alone and knows nobody.
            seed = await start_node(
                tg, "seed@h0", cookie=COOKIE, config=config(1), network=net, port=SEED_PORT
            )
            nodes = [early, other, seed]
            await wait_until(lambda: all(len(n.membership.alive()) == 3 for n in nodes))
            # The seed is a member early knows: its retries end.
            await assert_retries_ended(timeline, cfg)
            # Released once, said once, however many retries it took.
            assert len(timeline.times("early@h1: joined by another member")) == 1
            tg.cancel_scope.cancel()


async def test_a_seed_heard_of_through_the_cluster_is_not_joined_again(
    timeline: Timeline,
) -> None:
    """``early``'s seed comes up and joins ``early``'s cluster through
    another member: ``early`` hears of it from the cluster and stops
    trying, without a state exchange of its own."""
    net = FakeNetwork(seed=3)
    cfg = config(2, reconnect_interval=30.0)
    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            early, other = await joined_by_another(tg, net, cfg)
            # early's retries are seconds apart by now: gossip comes first.
            await anyio.sleep(40)
            tried = len(timeline.times("early@h1: could not join any seed"))
            seed = await start_node(
                tg, "seed@h0", cookie=COOKIE, config=cfg, network=net, port=SEED_PORT,
                seeds=[f"other@h2:{other.address[1]}"],
            )  # fmt: skip
            await wait_until(lambda: early.membership.knows_address(f"seed@h0:{SEED_PORT}"))
            await assert_retries_ended(timeline, cfg)
            assert len(timeline.times("early@h1: could not join any seed")) == tried
            assert not timeline.times("early@h1: joined through the seeds")
            assert early.membership.core.status_of(seed.name) is td.MemberStatus.ALIVE
            tg.cancel_scope.cancel()


async def test_retries_wait_with_jitter_doubling_up_to_the_cap(timeline: Timeline) -> None:
    cap = 16.0
    net = FakeNetwork(seed=5)
    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            await start_node(
                tg, "eager@h1", cookie=COOKIE, config=config(1, reconnect_interval=cap),
                network=net, seeds=[f"nobody@h0:{SEED_PORT}"],
            )  # fmt: skip
            await anyio.sleep(120)
            tg.cancel_scope.cancel()
    announced = [
        (at, float(line.rsplit(" in ", 1)[1].split()[0]))
        for at, line in timeline.lines
        if "retrying seeds" in line
    ]
    attempts = timeline.times("could not join any seed") + timeline.times("reached a seed of")
    attempts.sort()
    assert len(announced) >= 8
    # Every failed attempt says why, once.
    assert len(announced) <= len(attempts) <= len(announced) + 1
    ceilings = [min(cap, cap / 32 * 2**i) for i in range(len(announced))]
    for (_, wait), ceiling in zip(announced, ceilings, strict=True):
        assert ceiling / 2 - 0.005 <= wait <= ceiling + 0.005
    # Jitter: the waits are not the ceilings themselves.
    assert any(
        wait < 0.9 * ceiling for (_, wait), ceiling in zip(announced, ceilings, strict=False)
    )
    assert ceilings[-1] == cap and announced[-1][1] > cap / 2 - 0.005
    # Each announced wait is waited: the next attempt starts no sooner.
    for at, wait in announced:
        later = [t for t in attempts if t > at]
        if later:
            assert later[0] - at >= wait - 0.005


async def test_joined_by_another_a_seed_reached_but_not_learned_is_tried_again(
    timeline: Timeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``early`` was joined by ``other`` while its seed was down. When the
    seed is up, ``early`` reaches it but the state exchange is lost (a
    seed too busy to answer): ``early`` knows members, but not the seed's
    cluster, so it must try again, or the two clusters never meet."""
    net = FakeNetwork(seed=3)
    cfg = config(2, reconnect_interval=2.0)
    real_join = Membership.join
    lost: list[float] = []
    seed_up = False

    async def join_losing_the_first_exchanges(membership: Membership, addresses: list[str]) -> int:
        if membership.transport.name == "early@h1" and len(lost) < 3:
            await anyio.sleep(0.01)
            if not seed_up:
                raise ConnectError(f"could not reach any seed of {addresses}")
            lost.append(anyio.current_time())  # reached, and nothing came of it
            return 1
        return await real_join(membership, addresses)

    monkeypatch.setattr(Membership, "join", join_losing_the_first_exchanges)
    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            early, other = await joined_by_another(tg, net, cfg)
            await wait_until(lambda: len(early.membership.alive()) == 2)
            seed_up = True
            seed = await start_node(
                tg, "seed@h0", cookie=COOKIE, config=config(1), network=net, port=SEED_PORT
            )
            nodes = [early, other, seed]
            await wait_until(lambda: all(len(n.membership.alive()) == 3 for n in nodes))
            assert len(lost) == 3
            assert len(timeline.times("early@h1: reached a seed of")) == 3
            await assert_retries_ended(timeline, cfg)
            tg.cancel_scope.cancel()
