"""The global registry across nodes (Erlang global semantics)."""

from __future__ import annotations

import anyio
import pytest
from hostile_peer import hostile_peer
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute._proto.kinds import Kind
from trio_distribute.registry import default_resolver
from trio_distribute.testing import partition, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures


async def wait_forever(proc: td.Process) -> None:
    await anyio.sleep_forever()


async def test_register_whereis_send_and_unregister() -> None:
    with anyio.fail_after(10):
        async with open_cluster(3) as nodes, nodes[1].open_process() as proc:
            a, b, c = nodes
            await b.registry.register("svc", proc.pid)
            # On return every connected node has it, as with Erlang's global.
            assert [n.registry.whereis("svc") for n in nodes] == [proc.pid] * 3
            assert a.registry.names() == ["svc"]
            await a.send_global("svc", "hello")
            assert await proc.receive(timeout=2) == "hello"
            with pytest.raises(td.NameTakenError):
                await b.registry.register("svc", await b.spawn(wait_forever))
            with pytest.raises(td.NameTakenError, match="already registered as"):
                await b.registry.register("other", proc.pid)
            with pytest.raises(ValueError, match="another node"):
                await a.registry.unregister("svc")
            await b.registry.unregister("svc")
            assert [n.registry.whereis("svc") for n in nodes] == [None] * 3
            with pytest.raises(td.NameNotFoundError):
                await c.send_global("svc", "lost")


async def test_invalid_registrations() -> None:
    with anyio.fail_after(10):
        async with open_cluster(2) as (a, b), b.open_process() as remote:
            async with a.open_process() as gone:
                pass
            await a.registry.register("ghost", gone.pid)  # dead: nothing kept
            assert a.registry.whereis("ghost") is None
            with pytest.raises(ValueError, match="only pids of this node"):
                await a.registry.register("x", remote.pid)
            for bad in ("", "n" * 256, 7):
                with pytest.raises(ValueError, match="global name"):
                    await a.registry.register(bad, remote.pid)  # type: ignore[arg-type]


async def attempt(node: td.Node, name: str, pid: td.Pid, i: int, outcomes: dict[int, str]) -> None:
    try:
        await node.registry.register(name, pid)
        outcomes[i] = "won"
    except td.NameTakenError:
        outcomes[i] = "taken"


async def test_concurrent_registrations_have_exactly_one_winner() -> None:
    with anyio.fail_after(120):
        async with open_cluster(4) as nodes:
            pids = [await node.spawn(wait_forever) for node in nodes]
            for round_ in range(100):
                name = f"leader-{round_ % 3}"
                outcomes: dict[int, str] = {}

                async with anyio.create_task_group() as tg:
                    for i in range(4):
                        tg.start_soon(attempt, nodes[i], name, pids[i], i, outcomes)
                winners = [i for i, o in outcomes.items() if o == "won"]
                assert len(winners) == 1, outcomes
                winner = pids[winners[0]]
                assert [n.registry.whereis(name) for n in nodes] == [winner] * 4
                await nodes[winners[0]].registry.unregister(name)
                assert [n.registry.whereis(name) for n in nodes] == [None] * 4


async def test_names_vanish_when_the_process_exits_or_the_node_stops() -> None:
    with anyio.fail_after(20):
        async with open_cluster(3) as (a, b, c):
            async with b.open_process() as proc:
                await b.registry.register("short", proc.pid)
                await wait_until(lambda: a.registry.whereis("short") == proc.pid)
            for node in (a, b, c):
                await wait_until(lambda n=node: n.registry.whereis("short") is None)  # type: ignore[misc]

            async with open_node("d@127.0.0.1", cookie="trio-distribute-test") as d:
                for node in (a, b, c):
                    await d.connect(f"{node.name}:{node.address[1]}")
                pid = await d.spawn(wait_forever)
                await d.registry.register("on-d", pid)
                for node in (a, b, c):
                    await wait_until(lambda n=node: n.registry.whereis("on-d") == pid)  # type: ignore[misc]
            for node in (a, b, c):
                await wait_until(lambda n=node: n.registry.whereis("on-d") is None)  # type: ignore[misc]


async def test_partition_heal_keeps_one_name_everywhere_and_tells_the_loser() -> None:
    with anyio.fail_after(20):
        async with open_cluster(4) as nodes:
            a, b, c, d = nodes
            async with a.open_process() as pa, c.open_process() as pc:
                async with partition([a, b], [c, d]):
                    for node in nodes:
                        await wait_until(lambda n=node: len(n.nodes()) == 1)  # type: ignore[misc]
                    # Each side registers the name while it cannot see the other.
                    await a.registry.register("svc", pa.pid)
                    await c.registry.register("svc", pc.pid)
                    await wait_until(lambda: b.registry.whereis("svc") == pa.pid)
                    await wait_until(lambda: d.registry.whereis("svc") == pc.pid)
                for left in (a, b):  # heal: a full mesh again
                    for right in (c, d):
                        await left.connect(f"{right.name}:{right.address[1]}")
                winner = default_resolver("svc", pa.pid, pc.pid)
                loser = pc if winner == pa.pid else pa
                for node in nodes:
                    await wait_until(lambda n=node: n.registry.whereis("svc") == winner)  # type: ignore[misc]
                conflict = await loser.receive(timeout=5)
                assert conflict == td.NameConflict("svc", winner)
                with pytest.raises(TimeoutError):  # told once
                    await loser.receive(timeout=0.2)
                winner_proc = pa if loser is pc else pc
                assert winner_proc.pending() == 0  # the winner hears nothing


async def test_a_custom_resolver_is_applied_on_every_node() -> None:
    with anyio.fail_after(20):
        async with open_cluster(2) as (a, b):
            for node in (a, b):
                node.registry.resolver = lambda name, p1, p2: max(p1, p2)
            async with a.open_process() as pa, b.open_process() as pb:
                async with partition([a], [b]):
                    await wait_until(lambda: a.nodes() == [] and b.nodes() == [])
                    await a.registry.register("svc", pa.pid)
                    await b.registry.register("svc", pb.pid)
                await a.connect(f"{b.name}:{b.address[1]}")
                winner = max(pa.pid, pb.pid)
                for node in (a, b):
                    await wait_until(lambda n=node: n.registry.whereis("svc") == winner)  # type: ignore[misc]
                loser = pa if winner == pb.pid else pb
                assert await loser.receive(timeout=5) == td.NameConflict("svc", winner)


async def test_a_peer_registering_foreign_pids_loses_its_connection() -> None:
    from trio_distribute import codec
    from trio_distribute._proto.frames import frame
    from trio_distribute._proto.kinds import Kind

    with anyio.fail_after(10):
        async with open_cluster(3) as (a, b, c), b.monitor_nodes() as events:
            victim = await c.spawn(wait_forever)
            conn = a.transport.connections["b@127.0.0.1"]
            conn.write(frame(codec.encode([int(Kind.REG_COMMIT), 0, "stolen", victim])))
            assert await events.receive() == td.NodeDown("a@127.0.0.1", "protocol_error")
            assert b.registry.whereis("stolen") is None
            assert b.nodes() == ["c@127.0.0.1"]  # everyone else is still served


async def test_a_cancelled_registration_leaves_no_lock_behind() -> None:
    with anyio.fail_after(20):
        async with open_cluster(3) as nodes:
            a, b, _ = nodes
            pa = await a.spawn(wait_forever)
            for delay in (0.0, 0.0005, 0.001, 0.002, 0.005):
                with anyio.move_on_after(delay):
                    await a.registry.register("contended", pa)
                await a.registry.unregister("contended")  # if it got that far
                assert [n.registry.whereis("contended") for n in nodes] == [None] * 3
                # Whatever the cancellation interrupted, nobody keeps a lock:
                # another node can register the name now.
                pb = await b.spawn(wait_forever)
                await b.registry.register("contended", pb)
                assert [n.registry.whereis("contended") for n in nodes] == [pb] * 3
                await b.registry.unregister("contended")
            for node in nodes:
                await wait_until(lambda n=node: not n.registry._locks)  # type: ignore[misc]


@pytest.mark.real_network  # a hostile peer speaks over a real socket
async def test_a_process_that_exits_while_its_name_is_locked_is_never_registered() -> None:
    """The exit hook runs before the commit would: committing anyway left the
    name (pointing at a dead pid) on every node for ever."""
    with anyio.fail_after(20):
        async with open_cluster(1) as (a,):
            # The peer is the boss (the greater name): a asks it first and
            # waits; the process ends before the peer grants the lock.
            async with hostile_peer(a.address, name="zed@127.0.0.1") as boss:
                await wait_until(lambda: "zed@127.0.0.1" in a.nodes())
                async with anyio.create_task_group() as tg:
                    async with a.open_process() as proc:
                        tg.start_soon(a.registry.register, "brief", proc.pid)
                        while True:
                            item = await boss.receive()
                            if isinstance(item, list) and item[0] == Kind.REG_LOCK:
                                break
                    await boss.send([Kind.REG_REPLY, item[1], "granted"])
                assert a.registry.whereis("brief") is None
                assert a.registry.names() == []
