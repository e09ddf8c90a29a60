"""Process monitors, local and remote, for every exit kind."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import anyio
import pytest

import trio_distribute as td
from trio_distribute.monitor import ExitKind
from trio_distribute.testing import open_cluster

COOKIE = "test-cookie"
FAST = td.NodeConfig.local()


def cluster(*names: str) -> AbstractAsyncContextManager[list[td.Node]]:
    return open_cluster(names, cookie=COOKIE, config=FAST)


async def wait_forever(proc: td.Process) -> None:
    await anyio.sleep_forever()


async def exit_on_message(proc: td.Process) -> None:
    message = await proc.receive()
    if message == "raise":
        raise ValueError("asked to fail")


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_normal_and_exception_exits(remote: bool) -> None:
    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            for message, expected in [
                ("stop", td.ExitReason(ExitKind.NORMAL)),
                ("raise", td.ExitReason(ExitKind.EXCEPTION, "ValueError: asked to fail")),
            ]:
                pid = await host.spawn(exit_on_message)
                async with a.monitor(pid) as down:
                    await a.send(pid, message)
                    event = await down.receive()
                assert event.pid == pid
                assert event.reason == expected


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_dead_and_stale_pids_give_noproc(remote: bool) -> None:
    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            async with host.open_process() as gone:
                pass
            stale = td.Pid(host.name, gone.pid.id, host.creation ^ 1)
            never = td.Pid(host.name, 10_000, host.creation)
            for pid in (gone.pid, stale, never):
                async with a.monitor(pid) as down:
                    event = await down.receive()
                assert event.reason.kind == ExitKind.NOPROC
                assert event.pid == pid


async def test_process_monitor_delivers_into_the_mailbox_once() -> None:
    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            target = await b.spawn(exit_on_message)
            async with a.open_process() as watcher:
                ref1 = watcher.monitor(target)
                ref2 = watcher.monitor(target)  # two monitors, two events
                assert ref1 != ref2
                await a.send(target, "stop")
                events = [await watcher.receive(), await watcher.receive()]
                assert {e.ref for e in events} == {ref1, ref2}
                assert all(e.reason.kind == ExitKind.NORMAL for e in events)
                with pytest.raises(TimeoutError):
                    await watcher.receive(timeout=0.1)
                assert watcher.demonitor(ref1) is False  # it already fired


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_demonitor_before_exit_means_no_event(remote: bool) -> None:
    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            target = await host.spawn(exit_on_message)
            async with a.open_process() as watcher:
                ref = watcher.monitor(target)
                assert watcher.demonitor(ref) is True
                kept = watcher.monitor(target)
                await a.send(target, "stop")
                event = await watcher.receive()
                assert event.ref == kept  # only the monitor still active fired
                with pytest.raises(TimeoutError):
                    await watcher.receive(timeout=0.1)
            assert a.statistics().monitors == 0
            assert host.statistics().monitors == 0


async def test_demonitor_racing_the_down_can_flush_it() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,):
            target = await a.spawn(exit_on_message)
            async with a.open_process() as watcher:
                ref = watcher.monitor(target)
                await a.send(target, "stop")
                while watcher.pending() == 0:
                    await anyio.sleep(0.01)
                # The DOWN is already queued: demonitor reports it fired, and
                # flush removes it from the mailbox.
                assert watcher.demonitor(ref, flush=True) is False
                assert watcher.pending() == 0


async def test_disconnect_fires_noconnection_and_stop_fires_shutdown() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            target = await b.spawn(wait_forever)
            async with (
                a.open_process() as watcher,
                a.monitor_nodes() as node_events,
                b.monitor_nodes() as b_events,
            ):
                ref = watcher.monitor(target)
                while b.statistics().monitors == 0:  # the MONITOR frame is in flight
                    await anyio.sleep(0.01)
                await a.disconnect("b@127.0.0.1")
                event = await watcher.receive()
                assert event.ref == ref
                assert event.reason.kind == ExitKind.NOCONNECTION
                # The monitor fired before the node-down event was published.
                assert await node_events.receive() == td.NodeDown("b@127.0.0.1", "disconnect")
                assert await b_events.receive() == td.NodeDown("a@127.0.0.1", "disconnect")
                assert b.statistics().monitors == 0  # b forgot a's watch


async def test_node_stop_fires_shutdown_for_remote_monitors() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,), a.open_process() as watcher:
            async with td.open_node("c@127.0.0.1", cookie=COOKIE, config=FAST) as c:
                await c.connect(f"{a.name}:{a.address[1]}")
                target = await c.spawn(wait_forever)
                ref = watcher.monitor(target)
            event = await watcher.receive()
            assert event.ref == ref
            assert event.reason.kind == ExitKind.SHUTDOWN


async def test_local_processes_end_with_shutdown_when_their_node_stops() -> None:
    exits: dict[td.Pid, td.ExitReason] = {}
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            a._processes.exit_hooks.append(lambda pid, reason: exits.__setitem__(pid, reason))
            target = await a.spawn(wait_forever)
        assert exits[target].kind == ExitKind.SHUTDOWN


async def test_monitor_of_an_unreachable_node_fires_noconnection_at_once() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,):
            pid = td.Pid("z@127.0.0.1", 1, 1)
            async with a.monitor(pid) as down:
                event = await down.receive()
            assert event.reason.kind == ExitKind.NOCONNECTION
            async with a.open_process() as watcher:
                ref = watcher.monitor(pid)
                event = watcher.receive_nowait()
                assert event.ref == ref and event.reason.kind == ExitKind.NOCONNECTION


async def test_monitor_of_a_previous_incarnation_of_a_node() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            async with td.open_node("c@127.0.0.1", cookie=COOKIE, config=FAST) as c:
                old_port = c.address[1]
                await c.connect(f"{a.name}:{a.address[1]}")
                old = await c.spawn(wait_forever)
            async with td.open_node("c@127.0.0.1", cookie=COOKIE, config=FAST, port=old_port) as c2:
                await c2.connect(f"{a.name}:{a.address[1]}")
                assert c2.creation != old.creation
                async with a.monitor(old) as down:
                    event = await down.receive()
                assert event.reason.kind == ExitKind.NOPROC
