"""The cluster singleton: one instance, on the elected leader, fenced by the
term; when the leader's node crashes the instance moves, and the new one
starts only after the old one is gone, with a higher term."""

from __future__ import annotations

import anyio
import pytest
from virtual import anyio_backend, fake_network, open_cluster, open_node, start_node

import trio_distribute as td
from trio_distribute.testing import crash, partition, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "test-cookie"
CONFIG = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=3))
Event = tuple[str, str, int]


async def test_singleton_runs_on_the_leader_and_moves_when_its_node_crashes() -> None:
    events: list[Event] = []

    async def instance(proc: td.Process, term: int, label: str) -> None:
        assert label == "fenced"
        events.append(("start", proc.pid.node, term))
        try:
            await anyio.sleep_forever()
        finally:
            events.append(("stop", proc.pid.node, term))

    async def host(proc: td.Process, node: td.Node) -> None:
        # In a process of the node: crashing the node ends it too.
        async with td.open_singleton(node, "single", instance, "fenced"):
            await anyio.sleep_forever()

    def starts() -> list[Event]:
        return [e for e in events if e[0] == "start"]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            first = await start_node(tg, "s1@127.0.0.1", cookie=COOKIE, config=CONFIG)
            seeds = [f"127.0.0.1:{first.address[1]}"]
            nodes = [first] + [
                await start_node(tg, f"s{i}@127.0.0.1", cookie=COOKIE, config=CONFIG, seeds=seeds)
                for i in (2, 3)
            ]
            by_name = {node.name: node for node in nodes}
            for node in nodes:
                await node.spawn(host, node)

            await wait_until(lambda: len(starts()) == 1)
            _, old_node, old_term = starts()[0]
            leader = by_name[old_node].election.leader
            assert leader == td.Leader(old_node, old_term)  # the leader, with its term
            pid = by_name[old_node].registry.whereis("single")
            assert pid is not None and pid.node == old_node
            await wait_until(lambda: all(n.registry.whereis("single") == pid for n in nodes))

            crash(by_name[old_node])
            survivors = [n for n in nodes if n.name != old_node]
            await wait_until(lambda: len(starts()) == 2)
            _, new_node, new_term = starts()[1]
            assert new_node != old_node
            assert new_term > old_term
            # The old instance had stopped before the new one started.
            assert events == [
                ("start", old_node, old_term),
                ("stop", old_node, old_term),
                ("start", new_node, new_term),
            ]
            new_pid = by_name[new_node].registry.whereis("single")
            assert new_pid is not None and new_pid.node == new_node
            await wait_until(
                lambda: all(n.registry.whereis("single") == new_pid for n in survivors)
            )
            await anyio.sleep(0.5)  # and it stays one instance
            assert len(starts()) == 2
            tg.cancel_scope.cancel()


async def test_a_cut_off_leader_stops_its_instance_before_another_starts() -> None:
    """Check-quorum: the cut-off leader steps down within its lease, before
    the majority can elect, and stops its instance then (shutdown 0)."""
    events: list[Event] = []

    async def instance(proc: td.Process, term: int) -> None:
        events.append(("start", proc.pid.node, term))
        try:
            await anyio.sleep_forever()
        finally:
            events.append(("stop", proc.pid.node, term))

    async def host(proc: td.Process, node: td.Node) -> None:
        async with td.open_singleton(node, "cut", instance):
            await anyio.sleep_forever()

    with anyio.fail_after(30):
        async with open_cluster(["c1", "c2", "c3"], cookie=COOKIE, config=CONFIG) as nodes:
            for node in nodes:
                await node.spawn(host, node)
            await wait_until(lambda: len(events) == 1)
            _, old_node, old_term = events[0]
            old = next(n for n in nodes if n.name == old_node)
            async with partition([old], [n for n in nodes if n is not old]):
                await wait_until(lambda: len(events) == 3)
                assert events[1] == ("stop", old_node, old_term)
                _, new_node, new_term = events[2]
                assert events[2][0] == "start" and new_node != old_node
                assert new_term > old_term
                assert old.election.leader != td.Leader(old_node, old_term)


async def test_singleton_instance_is_supervised_on_the_leader() -> None:
    starts: list[int] = []

    async def flaky(proc: td.Process, term: int) -> None:
        starts.append(term)
        if len(starts) == 1:
            raise RuntimeError("first run fails")
        await anyio.sleep_forever()

    config = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=1))
    with anyio.fail_after(15):
        async with (
            open_node("solo@127.0.0.1", cookie=COOKIE, config=config) as node,
            td.open_singleton(node, "solo_single", flaky) as singleton,
        ):
            leader = await node.election.wait_for_leader(timeout=10)
            await wait_until(lambda: len(starts) == 2)
            # Restarted by its supervisor, with the same term.
            assert starts == [leader.term, leader.term]
            assert singleton.term == leader.term
            pid = singleton.whereis()
            assert pid is not None and pid.node == node.name


async def test_singleton_that_keeps_crashing_ends_with_the_supervisors_error() -> None:
    async def broken(proc: td.Process, term: int) -> None:
        raise RuntimeError("never works")

    config = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=1))

    async def run(node: td.Node) -> None:
        async with td.open_singleton(node, "broken", broken, intensity=1):
            await anyio.sleep_forever()

    with anyio.fail_after(15):
        async with open_node("solo@127.0.0.1", cookie=COOKIE, config=config) as node:
            with pytest.raises(td.RestartIntensityExceeded):
                await run(node)


async def test_a_new_instance_waits_until_the_old_ones_name_is_gone() -> None:
    """The leader starts its instance only once the name has left its
    registry replica (the old instance exited, or its node is down)."""
    events: list[str] = []

    async def instance(proc: td.Process, term: int) -> None:
        events.append("new started")
        await anyio.sleep_forever()

    config = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=1))
    with anyio.fail_after(15):
        async with open_node("solo@127.0.0.1", cookie=COOKIE, config=config) as node:
            await node.election.wait_for_leader(timeout=10)

            async def holder(proc: td.Process) -> None:  # stands for the old instance
                await node.registry.register("handover", proc.pid)
                await proc.receive()

            old = await node.spawn(holder)
            await wait_until(lambda: node.registry.whereis("handover") == old)
            async with td.open_singleton(node, "handover", instance) as singleton:
                await anyio.sleep(0.3)
                assert events == []  # the old one still holds the name
                events.append("old stopped")
                await node.send(old, "stop")
                await wait_until(lambda: events == ["old stopped", "new started"])
                assert singleton.whereis() not in (None, old)


async def test_singleton_bad_input() -> None:
    async def fn(proc: td.Process, term: int) -> None:
        await anyio.sleep_forever()

    config = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=1))
    async with open_node("solo@127.0.0.1", cookie=COOKIE, config=config) as node:
        with pytest.raises(ValueError, match="intensity"):
            async with td.open_singleton(node, "x", fn, intensity=-1):
                pass
        with pytest.raises(TypeError, match="fn must be"):
            async with td.open_singleton(node, "x", "fn"):  # type: ignore[arg-type]
                pass
    quiet = td.NodeConfig(election=td.ElectionConfig(enabled=False))
    async with open_node("quiet@127.0.0.1", cookie=COOKIE, config=quiet) as node:
        with pytest.raises(ValueError, match="needs the node's election"):
            async with td.open_singleton(node, "x", fn):
                pass
