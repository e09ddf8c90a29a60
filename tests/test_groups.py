"""Process groups across nodes (Erlang pg semantics)."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._proto.frames import frame
from trio_distribute._proto.kinds import Kind
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures


async def wait_forever(proc: td.Process) -> None:
    await anyio.sleep_forever()


async def test_multiset_joins_and_leaves() -> None:
    with anyio.fail_after(10):
        async with open_cluster(2) as (a, b), a.open_process() as p:
            for _ in range(16):
                await a.groups.join("g", p.pid)
            for _ in range(4):
                assert await a.groups.leave("g", p.pid) is True
            assert a.groups.local_members("g") == [p.pid] * 12
            await wait_until(lambda: len(b.groups.members("g")) == 12)
            assert b.groups.members("g") == [p.pid] * 12
            assert b.groups.local_members("g") == []
            assert a.groups.which_groups() == b.groups.which_groups() == ["g"]
            for _ in range(12):
                await a.groups.leave("g", p.pid)
            assert await a.groups.leave("g", p.pid) is False  # not_joined
            await wait_until(lambda: b.groups.which_groups() == [])


async def test_a_new_node_receives_the_full_view() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a", "b"], connect=False) as (a, b):
            pids = [await a.spawn(wait_forever) for _ in range(3)]
            await a.groups.join("workers", pids[0])
            await a.groups.join("workers", pids[1])
            await a.groups.join("other", pids[2])
            async with b.groups.monitor("workers") as events:
                await b.connect(f"{a.name}:{a.address[1]}")
                event = await events.receive()
            assert event == td.GroupJoined("workers", (pids[0], pids[1]))
            await wait_until(lambda: b.groups.which_groups() == ["other", "workers"])
            assert sorted(b.groups.members("workers")) == sorted(pids[:2])
            # And the other way round: a learns b's members.
            pb = await b.spawn(wait_forever)
            await b.groups.join("workers", pb)
            await wait_until(lambda: pb in a.groups.members("workers"))


async def test_exit_and_node_down_remove_members_everywhere() -> None:
    with anyio.fail_after(10):
        async with open_cluster(3) as (a, b, c):
            stopped = anyio.Event()

            async def stop_on_message(proc: td.Process) -> None:
                await proc.receive()
                stopped.set()

            short_lived = await b.spawn(stop_on_message)
            await b.groups.join("g", short_lived)
            await b.groups.join("g", short_lived)
            await b.groups.join("h", short_lived)
            await wait_until(lambda: len(a.groups.members("g")) == 2)
            await wait_until(lambda: a.groups.members("h") == [short_lived])
            await wait_until(lambda: len(c.groups.members("g")) == 2)
            await a.send(short_lived, "exit")
            await stopped.wait()
            for node in (a, b, c):
                await wait_until(lambda n=node: n.groups.which_groups() == [])  # type: ignore[misc]

            async with open_node("d@127.0.0.1", cookie="trio-distribute-test") as d:
                await d.connect(f"{a.name}:{a.address[1]}")
                await d.connect(f"{c.name}:{c.address[1]}")
                member = await d.spawn(wait_forever)
                await d.groups.join("g", member)
                await wait_until(lambda: a.groups.members("g") == [member])
                await wait_until(lambda: c.groups.members("g") == [member])
            # Removed with the node-down, on every survivor.
            await wait_until(lambda: a.groups.members("g") == [])
            await wait_until(lambda: c.groups.members("g") == [])


async def test_event_sequence_at_local_and_remote_subscribers() -> None:
    with anyio.fail_after(10):
        async with open_cluster(2) as (a, b):
            async with a.groups.monitor("g") as local, b.groups.monitor("g") as remote:
                done = anyio.Event()

                async def member(proc: td.Process) -> None:
                    await a.groups.join("g", proc.pid)
                    await a.groups.join("g", proc.pid)
                    await a.groups.leave("g", proc.pid)
                    await done.wait()

                pid = await a.spawn(member)
                await wait_until(lambda: len(b.groups.members("g")) == 1)
                done.set()
                expected = [
                    td.GroupJoined("g", (pid,)),
                    td.GroupJoined("g", (pid,)),
                    td.GroupLeft("g", (pid,)),
                    td.GroupLeft("g", (pid,)),  # the exit removes the last entry
                ]
                for events in (local, remote):
                    assert [await events.receive() for _ in expected] == expected
                    with pytest.raises(anyio.WouldBlock):
                        events.receive_nowait()


async def test_broadcast_reaches_every_membership() -> None:
    with anyio.fail_after(10):
        async with open_cluster(2) as (a, b):
            async with a.open_process() as pa, b.open_process() as pb:
                await a.groups.join("room", pa.pid)
                await b.groups.join("room", pb.pid)
                await b.groups.join("room", pb.pid)
                await wait_until(lambda: len(a.groups.members("room")) == 3)
                assert await a.groups.broadcast("room", "hello") == 3
                assert await pa.receive(timeout=2) == "hello"
                assert [await pb.receive(timeout=2) for _ in range(2)] == ["hello", "hello"]
                assert await a.groups.broadcast("empty", "x") == 0


async def test_invalid_input_is_refused() -> None:
    with anyio.fail_after(10):
        async with open_cluster(2) as (a, b), b.open_process() as pb:
            for bad in ("", "x" * 256, 3):
                with pytest.raises(ValueError, match="group name"):
                    await a.groups.join(bad, pb.pid)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="local"):
                await a.groups.join("g", pb.pid)  # only local pids, like pg's nolocal
            async with a.open_process() as gone:
                pass
            await a.groups.join("g", gone.pid)  # a dead pid: nothing to keep
            assert a.groups.members("g") == []


async def test_a_peer_announcing_foreign_pids_loses_its_connection() -> None:
    with anyio.fail_after(10):
        async with open_cluster(3) as (a, b, c), b.monitor_nodes() as events:
            foreign = td.Pid("c@127.0.0.1", 1, c.creation)
            conn = a.transport.connections["b@127.0.0.1"]
            conn.write(frame(codec.encode([int(Kind.GROUP_JOIN), "g", [foreign]])))
            assert await events.receive() == td.NodeDown("a@127.0.0.1", "protocol_error")
            assert b.groups.members("g") == []
            assert b.nodes() == ["c@127.0.0.1"]  # everyone else is still served
