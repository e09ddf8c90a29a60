"""Pools: supervised workers named name_1..name_size, picked round robin or
by a stable key hash, from the pool's node or any other."""

from __future__ import annotations

import anyio
import pytest
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "test-cookie"
FAST = td.NodeConfig.local()


async def echo_worker(proc: td.Process, node: td.Node, label: str) -> None:
    """Answers ``(sender, request)`` with ``(label, its pid, request)``;
    crashes on "crash"."""
    async for message in proc:
        sender, request = message
        if request == "crash":
            raise RuntimeError("asked to crash")
        await node.send(sender, [label, proc.pid, request])


async def test_pool_pick_round_robin_and_by_key_from_any_node() -> None:
    with anyio.fail_after(15):
        async with open_cluster(["pa", "pb"], cookie=COOKIE, config=FAST) as (a, b):
            async with td.open_pool(a, "echo", 3, echo_worker, a, "w") as pool:
                workers = [a.registry.whereis(f"echo_{i}") for i in (1, 2, 3)]
                assert None not in workers and len(set(workers)) == 3
                assert pool.workers() == workers
                assert pool.supervisor.count_children() == td.ChildCounts(specs=3, active=3)

                # Round robin: each worker in turn, then again.
                assert [pool.pick() for _ in range(6)] == workers + workers

                # By key: the same key, the same worker; keys spread out.
                picks = {key: pool.pick(key) for key in range(60)}
                assert all(pool.pick(key) == pid for key, pid in picks.items())
                assert set(picks.values()) == set(workers)

                # From another node, through its registry replica.
                await wait_until(lambda: len(b.registry.names()) == 3)
                remote = td.find_pool(b, "echo")
                assert {remote.pick() for _ in range(3)} == set(workers)
                assert all(remote.pick(key) == pid for key, pid in picks.items())
                async with b.open_process() as me:
                    await b.send(remote.pick("k"), (me.pid, "hello"))
                    label, pid, request = await me.receive()
                assert (label, pid, request) == ("w", pool.pick("k"), "hello")

                # A crashed worker is restarted in its slot: keys keep their
                # slot (a size given to find_pool keeps the mapping stable).
                stable = td.find_pool(b, "echo", size=3)
                slot_pid = pool.pick("k")
                slot = workers.index(slot_pid) + 1
                async with b.open_process() as me:
                    await b.send(slot_pid, (me.pid, "crash"))
                await wait_until(lambda: a.registry.whereis(f"echo_{slot}") not in (None, slot_pid))
                new = a.registry.whereis(f"echo_{slot}")
                assert pool.pick("k") == new
                await wait_until(lambda: b.registry.whereis(f"echo_{slot}") == new)
                assert stable.pick("k") == new
            # The pool's block ended: its names are gone everywhere.
            await wait_until(lambda: b.registry.names() == [])
            with pytest.raises(td.NameNotFoundError):
                td.find_pool(b, "echo").pick()
            with pytest.raises(td.NameNotFoundError):
                td.find_pool(b, "echo", size=3).pick("k")


async def test_pool_bad_input_leaves_nothing_running() -> None:
    async def worker(proc: td.Process) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with open_node("pool@127.0.0.1", cookie=COOKIE, config=FAST) as node:
            with pytest.raises(ValueError, match="size must be >= 1"):
                async with td.open_pool(node, "p", 0, worker):
                    pass
            with pytest.raises(TypeError, match="size must be an int"):
                async with td.open_pool(node, "p", "2", worker):  # type: ignore[arg-type]
                    pass
            with pytest.raises(ValueError, match="restart must be"):
                async with td.open_pool(node, "p", 2, worker, restart="often"):
                    pass
            processes = node.statistics().processes
            async with node.open_process() as squatter:
                await node.registry.register("p_2", squatter.pid)
                with pytest.raises(td.NameTakenError):
                    async with td.open_pool(node, "p", 3, worker):
                        pass
                # p_1 was started, then stopped when p_2 could not be.
                assert node.registry.names() == ["p_2"]
                assert node.statistics().processes == processes + 1


async def test_pool_intensity_defaults_to_its_size() -> None:
    starts: list[int] = []

    async def crashes(proc: td.Process) -> None:
        starts.append(1)
        raise RuntimeError("broken worker")

    async def run(node: td.Node) -> None:
        async with td.open_pool(node, "bad", 2, crashes, period=60):
            await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with open_node("pool@127.0.0.1", cookie=COOKIE, config=FAST) as node:
            with pytest.raises(td.RestartIntensityExceeded, match="more than 2 restart"):
                await run(node)
            # Two first runs, two restarts allowed, the third refused.
            assert len(starts) == 4
            assert node.registry.names() == []
