"""Process monitors, local and remote, for every exit kind."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute._node_events import ProcessExited
from trio_distribute.monitor import ExitKind
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

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
            async with open_node("c@127.0.0.1", cookie=COOKIE, config=FAST) as c:
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
            a._events.subscribe(ProcessExited, lambda e: exits.__setitem__(e.pid, e.reason))
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
            async with open_node("c@127.0.0.1", cookie=COOKIE, config=FAST) as c:
                old_port = c.address[1]
                await c.connect(f"{a.name}:{a.address[1]}")
                old = await c.spawn(wait_forever)
            async with open_node("c@127.0.0.1", cookie=COOKIE, config=FAST, port=old_port) as c2:
                await c2.connect(f"{a.name}:{a.address[1]}")
                assert c2.creation != old.creation
                async with a.monitor(old) as down:
                    event = await down.receive()
                assert event.reason.kind == ExitKind.NOPROC


# ------------------------------------------------------------------ leaks
#
# A monitor belongs to the process that made it: when that process ends,
# its monitors that have not fired are removed on its node and on the
# target's node. Without that, every short-lived process that watches a
# long-lived one leaves an entry behind on both sides for ever.


def monitor_tables(node: td.Node) -> dict[str, int]:
    return node._monitors.sizes()


EMPTY = {"local": 0, "served": 0, "remote": 0}


async def monitor_then_end(proc: td.Process, target: td.Pid, how: str) -> None:
    proc.monitor(target)
    proc.monitor(target)  # two monitors of one target: both go
    if how == "raise":
        raise ValueError("ends with an exception")
    if how == "cancel":
        await anyio.sleep_forever()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_monitors_of_an_ended_process_are_removed(remote: bool) -> None:
    with anyio.fail_after(20):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            target = await host.spawn(exit_on_message)
            assert a.statistics().monitors == host.statistics().monitors == 0
            # Processes that end normally, with an exception, and cancelled.
            for i in range(60):
                await a.spawn(monitor_then_end, target, ["normal", "raise"][i % 2])
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(cancelled_watcher, a, target)
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            async with a.open_process() as block:
                block.monitor(target)
            assert a.statistics().processes == (0 if remote else 1)  # the target's
            # Back to nothing on both nodes (the DEMONITORs reach b).
            await wait_until(lambda: a.statistics().monitors == host.statistics().monitors == 0)
            assert monitor_tables(a) == monitor_tables(host) == EMPTY
            # The target lives on, and its end reaches nobody.
            assert host._processes.lookup(target) is not None
            async with a.monitor(target) as down:
                await a.send(target, "stop")
                assert (await down.receive()).reason.kind == ExitKind.NORMAL
            assert a.statistics().drops.get("dead_pid", 0) == 0
            assert a.statistics().monitors == host.statistics().monitors == 0


async def cancelled_watcher(node: td.Node, target: td.Pid) -> None:
    async with node.open_process() as proc:
        await monitor_then_end(proc, target, "cancel")


async def watch_many(proc: td.Process, host: td.Node, count: int) -> None:
    for _ in range(count):
        short = await host.spawn(exit_on_message)
        ref = proc.monitor(short)
        await host.send(short, "stop")
        event = await proc.receive()
        assert event.ref == ref
    # Fired monitors are not kept for the process's end either.
    assert not proc._watching


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_long_lived_watcher_keeps_nothing_of_fired_monitors(remote: bool) -> None:
    with anyio.fail_after(20):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            async with a.open_process() as proc:
                await watch_many(proc, host, 50)
                # noproc and noconnection leave nothing either.
                proc.monitor(td.Pid(host.name, 10_000, host.creation))
                assert (await proc.receive()).reason.kind == ExitKind.NOPROC
                proc.monitor(td.Pid("z@127.0.0.1", 1, 1))
                assert not proc._watching
                # A demonitored one is forgotten too.
                long_lived = await host.spawn(wait_forever)
                proc.demonitor(proc.monitor(long_lived))
                assert not proc._watching
                await wait_until(lambda: monitor_tables(a) == monitor_tables(host) == EMPTY)
            # A process cannot remove another's monitor.
            async with a.open_process() as other:
                theirs = other.monitor(long_lived)
                async with a.open_process() as intruder:
                    assert intruder.demonitor(theirs) is False
                assert other.demonitor(theirs) is True
            # A process object used after its end places no monitor.
            proc.monitor(await host.spawn(wait_forever))
            assert monitor_tables(a) == EMPTY


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_node_monitor_channels_leave_nothing(remote: bool) -> None:
    with anyio.fail_after(20):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            target = await host.spawn(wait_forever)
            for _ in range(20):
                async with a.monitor(target):
                    pass
            # A block cancelled while it waits for the event.
            with anyio.move_on_after(0.05):
                async with a.monitor(target) as down:
                    await down.receive()
            # Inside a process that ends while watching.
            async with a.open_process(), a.monitor(target):
                pass
            await wait_until(lambda: monitor_tables(a) == monitor_tables(host) == EMPTY)
            assert a.statistics().monitors == host.statistics().monitors == 0


async def monitor_then_wait(proc: td.Process, target: td.Pid) -> None:
    proc.monitor(target)
    proc.monitor(target)
    await proc.receive()


async def test_a_node_serving_monitors_forgets_them_when_the_watcher_ends() -> None:
    """The target's node is told (DEMONITOR) as the watching process ends,
    not only when the connection goes down: 200 watchers, 400 entries
    gone while a and b stay connected."""
    with anyio.fail_after(20):
        async with cluster("a", "b") as (a, b):
            target = await b.spawn(wait_forever)
            watchers = [await a.spawn(monitor_then_wait, target) for _ in range(200)]
            await wait_until(lambda: monitor_tables(b)["served"] == 400)
            assert monitor_tables(a)["remote"] == 400
            for pid in watchers:
                await a.send(pid, "go")
            await wait_until(lambda: monitor_tables(b) == EMPTY)
            assert monitor_tables(a) == EMPTY
            assert a.nodes() == ["b@127.0.0.1"]
