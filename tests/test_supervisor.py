"""Supervisors: strategies and their restart order, restart types,
intensity, nested trees, shutdown order and timeouts, names, bad input."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from forked import ForkServer
from free_ports import free_port_block
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute.monitor import ExitKind
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "test-cookie"
FAST = td.NodeConfig.local()
Log = list[tuple[str, str]]


@asynccontextmanager
async def one_node() -> AsyncIterator[td.Node]:
    async with open_node("sup@127.0.0.1", cookie=COOKIE, config=FAST) as node:
        yield node


def worker(log: Log) -> Callable[..., Awaitable[None]]:
    """A child that logs its start and end, crashes on "crash" and returns
    on "exit"."""

    async def body(proc: td.Process, tag: str) -> None:
        log.append(("start", tag))
        try:
            async for message in proc:
                if message == "crash":
                    raise RuntimeError(f"{tag} asked to crash")
                if message == "exit":
                    return
        finally:
            log.append(("stop", tag))

    return body


def spec(log: Log, tag: str, **kwargs: Any) -> td.ChildSpec:
    return td.ChildSpec(tag, worker(log), args=(tag,), **kwargs)


async def restarted(sup: td.Supervisor, child_id: str, old: td.Pid | None) -> td.Pid:
    await wait_until(lambda: sup.whereis_child(child_id) not in (None, old))
    pid = sup.whereis_child(child_id)
    assert pid is not None
    return pid


async def crash(node: td.Node, sup: td.Supervisor, child_id: str) -> td.Pid:
    """Crash a child; return its new pid once it is restarted."""
    old = sup.whereis_child(child_id)
    assert old is not None
    await node.send(old, "crash")
    return await restarted(sup, child_id, old)


# ------------------------------------------------------------- strategies


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node, "one_for_one") as sup:
            pids = {tag: await sup.start_child(spec(log, tag)) for tag in "abc"}
            log.clear()
            new_b = await crash(node, sup, "b")
            assert new_b != pids["b"]
            assert sup.whereis_child("a") == pids["a"]
            assert sup.whereis_child("c") == pids["c"]
            assert log == [("stop", "b"), ("start", "b")]
            log.clear()
        # Leaving the block: reverse start order.
        assert log == [("stop", "c"), ("stop", "b"), ("stop", "a")]


async def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node, "one_for_all") as sup:
            pids = {tag: await sup.start_child(spec(log, tag)) for tag in "abcd"}
            log.clear()
            await crash(node, sup, "b")
            await wait_until(lambda: len(log) == 8)
            assert log == [
                ("stop", "b"),  # its own crash
                ("stop", "d"),
                ("stop", "c"),
                ("stop", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
                ("start", "d"),
            ]
            assert all(sup.whereis_child(tag) not in (None, pids[tag]) for tag in "abcd")
            assert [c.id for c in sup.which_children()] == list("abcd")


async def test_rest_for_one_restarts_the_crashed_child_and_those_after_it() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node, "rest_for_one") as sup:
            pids = {tag: await sup.start_child(spec(log, tag)) for tag in "abcd"}
            log.clear()
            await crash(node, sup, "b")
            await wait_until(lambda: len(log) == 6)
            assert log == [
                ("stop", "b"),
                ("stop", "d"),
                ("stop", "c"),
                ("start", "b"),
                ("start", "c"),
                ("start", "d"),
            ]
            assert sup.whereis_child("a") == pids["a"]
            assert all(sup.whereis_child(tag) not in (None, pids[tag]) for tag in "bcd")


async def test_simple_one_for_one_starts_many_children_of_one_spec() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with (
            one_node() as node,
            td.open_dynamic_supervisor(node, td.ChildSpec("w", worker(log))) as sup,
        ):
            pids = [await sup.start_child(tag) for tag in ("x", "y", "z")]
            assert len(set(pids)) == 3
            assert sup.count_children() == td.ChildCounts(specs=3, active=3)
            log.clear()
            await node.send(pids[1], "crash")
            await wait_until(lambda: log == [("stop", "y"), ("start", "y")])  # same args
            assert sup.count_children().active == 3
            assert all(p in [c.pid for c in sup.which_children()] for p in (pids[0], pids[2]))
            await sup.terminate_child(pids[0])
            assert sup.count_children() == td.ChildCounts(specs=2, active=2)
            with pytest.raises(TypeError, match="extra arguments"):
                await sup.start_child(td.ChildSpec("other", worker(log)))


# ---------------------------------------------------------- restart types


async def test_restart_types() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node) as sup:
            perm = await sup.start_child(spec(log, "perm", restart="permanent"))
            trans = await sup.start_child(spec(log, "trans", restart="transient"))
            temp = await sup.start_child(spec(log, "temp", restart="temporary"))

            # A permanent child is restarted even after a normal exit.
            await node.send(perm, "exit")
            await restarted(sup, "perm", perm)

            # A transient child: not after a normal exit (its spec stays),
            # but after a crash.
            await node.send(trans, "exit")
            await wait_until(lambda: ("stop", "trans") in log)
            await anyio.sleep(0.05)
            assert sup.whereis_child("trans") is None
            assert "trans" in [c.id for c in sup.which_children()]
            trans = await sup.restart_child("trans")
            await crash(node, sup, "trans")

            # A temporary child: never restarted, and forgotten.
            await node.send(temp, "crash")
            await wait_until(lambda: "temp" not in [c.id for c in sup.which_children()])
            await anyio.sleep(0.05)
            assert log.count(("start", "temp")) == 1
            assert sup.count_children() == td.ChildCounts(specs=2, active=2)


async def test_terminate_restart_delete() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node) as sup:
            pid = await sup.start_child(spec(log, "a"))
            async with node.monitor(pid) as down:
                await sup.terminate_child("a")
                event = await down.receive()
            # Stopped by its supervisor: Erlang's ``shutdown``.
            assert event.reason == td.ExitReason(ExitKind.SHUTDOWN, "terminated by its supervisor")
            assert sup.which_children() == [td.ChildInfo("a", None, "permanent")]
            assert sup.count_children() == td.ChildCounts(specs=1, active=0)
            await anyio.sleep(0.05)
            assert sup.whereis_child("a") is None  # terminated: not restarted
            again = await sup.restart_child("a")
            assert again != pid
            with pytest.raises(td.SupervisorError, match="running"):
                await sup.restart_child("a")
            with pytest.raises(td.SupervisorError, match="running"):
                await sup.delete_child("a")
            await sup.terminate_child("a")
            await sup.delete_child("a")
            assert sup.which_children() == []
            with pytest.raises(KeyError):
                await sup.terminate_child("a")


# -------------------------------------------------------------- intensity


async def test_restart_intensity_exceeded_ends_the_supervisor() -> None:
    log: Log = []

    async def crash_at_once(proc: td.Process) -> None:
        log.append(("start", "bad"))
        raise RuntimeError("cannot start")

    with anyio.fail_after(10):
        async with one_node() as node:
            processes = node.statistics().processes

            async def run() -> None:
                async with td.open_supervisor(node, intensity=2, period=60) as sup:
                    await sup.start_child(spec(log, "good"))
                    await sup.start_child(td.ChildSpec("bad", crash_at_once))
                    await anyio.sleep_forever()

            with pytest.raises(td.RestartIntensityExceeded) as info:
                await run()
            assert info.value.child_id == "bad"
            assert "more than 2 restart(s) within 60 s" in str(info.value)
            # The first run and two restarts; the third restart was refused
            # and the sibling stopped before the error came out.
            assert log.count(("start", "bad")) == 3
            assert log[-1] == ("stop", "good")
            assert node.statistics().processes == processes


async def test_intensity_zero_allows_no_restart() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node:
            with pytest.raises(td.RestartIntensityExceeded):
                async with td.open_supervisor(node, intensity=0) as sup:
                    await crash_after_start(node, sup, log)
            assert log.count(("start", "a")) == 1


async def crash_after_start(node: td.Node, sup: td.Supervisor, log: Log) -> None:
    pid = await sup.start_child(spec(log, "a"))
    await node.send(pid, "crash")
    await anyio.sleep_forever()


async def test_restarts_older_than_the_period_do_not_count() -> None:
    log: Log = []
    with anyio.fail_after(20):
        async with one_node() as node, td.open_supervisor(node, intensity=1, period=0.2) as sup:
            await sup.start_child(spec(log, "a"))
            for _ in range(3):
                # Each crash comes more than a period after the last one.
                await anyio.sleep(0.25)
                await crash(node, sup, "a")
            assert log.count(("start", "a")) == 4


# ------------------------------------------------------------------ trees


async def test_nested_trees_shut_down_in_reverse_order() -> None:
    log: Log = []

    async def subtree(proc: td.Process) -> None:
        node = td_node[0]
        async with td.open_supervisor(node) as inner:
            await inner.start_child(spec(log, "x1"))
            await inner.start_child(spec(log, "x2"))
            log.append(("start", "sub"))
            try:
                await anyio.sleep_forever()
            finally:
                log.append(("stop", "sub"))

    td_node: list[td.Node] = []
    with anyio.fail_after(10):
        async with one_node() as node:
            td_node.append(node)
            async with td.open_supervisor(node) as root:
                await root.start_child(spec(log, "w1"))
                await root.start_child(td.ChildSpec("sub", subtree, shutdown=None))
                await root.start_child(spec(log, "w2"))
                await wait_until(lambda: len(log) == 5)
                starts = [tag for what, tag in log if what == "start"]
                # start_child returns once the process exists: the subtree
                # starts its own children concurrently with w2.
                assert starts[0] == "w1"
                assert [t for t in starts if t != "w2"] == ["w1", "x1", "x2", "sub"]
                log.clear()
            assert log == [
                ("stop", "w2"),
                ("stop", "sub"),
                ("stop", "x2"),
                ("stop", "x1"),
                ("stop", "w1"),
            ]


async def test_a_subtree_that_gives_up_is_restarted_by_its_parent() -> None:
    log: Log = []
    nodes: list[td.Node] = []

    async def subtree(proc: td.Process) -> None:
        log.append(("start", "sub"))
        async with td.open_supervisor(nodes[0], intensity=0) as inner:
            await crash_after_start(nodes[0], inner, log)

    with anyio.fail_after(10):
        async with one_node() as node:
            nodes.append(node)

            async def run() -> None:
                async with td.open_supervisor(node, intensity=2, period=60) as root:
                    await root.start_child(td.ChildSpec("sub", subtree))
                    await anyio.sleep_forever()

            with pytest.raises(td.RestartIntensityExceeded) as info:
                await run()
            # The root gave up on "sub", which crashed with the inner
            # supervisor's error three times.
            assert info.value.child_id == "sub"
            assert "RestartIntensityExceeded" in info.value.reason.detail
            assert log.count(("start", "sub")) == 3


async def test_supervisor_error_reaches_the_enclosing_task_group() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node:

            async def run() -> None:
                async with td.open_supervisor(node, intensity=0) as sup:
                    await crash_after_start(node, sup, log)

            async def nursery() -> None:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run)

            with pytest.raises(BaseExceptionGroup) as info:
                await nursery()
            assert [type(e) for e in info.value.exceptions] == [td.RestartIntensityExceeded]


# --------------------------------------------------------------- shutdown


async def test_shutdown_waits_for_cleanup_within_the_shutdown_time() -> None:
    log: Log = []

    async def slow_cleanup(proc: td.Process, tag: str) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)
            log.append(("cleaned", tag))

    with anyio.fail_after(10):
        async with one_node() as node:
            async with td.open_supervisor(node) as sup:
                await sup.start_child(td.ChildSpec("a", slow_cleanup, ("a",)))
                await sup.start_child(spec(log, "b"))
                log.clear()
            # "a" finished its cleanup before the block ended, after "b".
            assert log == [("stop", "b"), ("cleaned", "a")]


async def test_a_trapping_child_is_asked_by_exit_signal_then_cancelled_after_its_shutdown() -> None:
    log: list[object] = []

    async def trapping(proc: td.Process, obey: bool) -> None:
        proc.trap_exits = True
        try:
            async for message in proc:
                log.append(message)
                if obey:
                    return
                # Ignores the request: only the hard cancel ends it.
        finally:
            log.append("ended")

    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node) as sup:
            await sup.start_child(td.ChildSpec("obeys", trapping, (True,), shutdown=None))
            stubborn = await sup.start_child(
                td.ChildSpec("ignores", trapping, (False,), shutdown=0.3)
            )
            async with node.monitor(stubborn) as down:
                started = anyio.current_time()
                await sup.terminate_child("ignores")
                event = await down.receive()
            assert anyio.current_time() - started >= 0.3  # it got its shutdown time
            signal, ended = log
            assert isinstance(signal, td.ExitSignal)
            assert signal.reason == td.ExitReason(ExitKind.SHUTDOWN, "terminated by its supervisor")
            assert ended == "ended"
            assert event.reason.kind == ExitKind.SHUTDOWN
            log.clear()
            await sup.terminate_child("obeys")  # returns on the signal: no wait
            assert [type(m) for m in log] == [td.ExitSignal, str]


async def test_children_take_part_in_links_and_exit_signals() -> None:
    log: Log = []
    with anyio.fail_after(10):
        async with one_node() as node, td.open_supervisor(node) as sup:
            pid = await sup.start_child(spec(log, "a"))
            # An exit signal ends a child like a crash: it is restarted.
            async with node.monitor(pid) as down:
                await node.exit(pid, "kill")
                event = await down.receive()
            assert event.reason.kind == ExitKind.KILLED
            pid = await restarted(sup, "a", pid)
            # A process linked to a child hears of its crash.
            async with node.open_process() as watcher:
                watcher.trap_exits = True
                await watcher.link(pid)
                await node.send(pid, "crash")
                signal = await watcher.receive()
            assert isinstance(signal, td.ExitSignal)
            assert signal.pid == pid
            assert signal.reason.kind == ExitKind.EXCEPTION
            await restarted(sup, "a", pid)


# ------------------------------------------------------------------ names


async def test_local_and_global_names_are_registered_again_after_a_restart() -> None:
    log: Log = []
    with anyio.fail_after(15):
        async with open_cluster(["ga", "gb"], cookie=COOKIE, config=FAST) as (a, b):
            async with td.open_supervisor(a) as sup:
                pid = await sup.start_child(spec(log, "svc", name="local_svc", global_name="svc"))
                # Registered before the body ran, on every node.
                assert a.registry.whereis("svc") == pid
                assert a.whereis("local_svc") == pid
                await wait_until(lambda: b.registry.whereis("svc") == pid)
                new = await crash(a, sup, "svc")
                await wait_until(lambda: b.registry.whereis("svc") == new)
                await wait_until(lambda: a.whereis("local_svc") == new)
                await b.send_global("svc", "exit")  # reaches the new run
                await restarted(sup, "svc", new)
                await sup.terminate_child("svc")
                await wait_until(lambda: b.registry.whereis("svc") is None)


# -------------------------------------------------------------- bad input


async def test_bad_input_is_refused_with_nothing_half_started() -> None:
    log: Log = []

    async def body(proc: td.Process) -> None:
        await anyio.sleep_forever()

    with pytest.raises(ValueError, match="restart must be one of"):
        td.ChildSpec("a", body, restart="sometimes")
    with pytest.raises(TypeError, match="fn must be"):
        td.ChildSpec("a", "not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="child id"):
        td.ChildSpec(3, body)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown must be >= 0"):
        td.ChildSpec("a", body, shutdown=-1)
    with anyio.fail_after(10):
        async with one_node() as node:
            cases: list[tuple[dict[str, Any], type[Exception], str]] = [
                ({"strategy": "one_for_some"}, ValueError, "strategy must be one of"),
                ({"intensity": -1}, ValueError, "intensity must be >= 0"),
                ({"intensity": 1.5}, TypeError, "intensity must be an int"),
                ({"period": 0}, ValueError, "period must be"),
                ({"period": -2.0}, ValueError, "period must be"),
                ({"strategy": "simple_one_for_one"}, ValueError, "needs child_spec"),
            ]
            for kwargs, error, message in cases:
                with pytest.raises(error, match=message):
                    async with td.open_supervisor(node, **kwargs):
                        pass
            processes = node.statistics().processes
            async with td.open_supervisor(node) as sup:
                pid = await sup.start_child(spec(log, "a", name="taken_here"))
                with pytest.raises(ValueError, match="already exists"):
                    await sup.start_child(spec(log, "a"))
                with pytest.raises(ValueError, match="already registered"):
                    await sup.start_child(spec(log, "b", name="taken_here"))
                with pytest.raises(TypeError, match="ChildSpec"):
                    await sup.start_child("a")
                async with node.open_process() as other:
                    await node.registry.register("global_taken", other.pid)
                    with pytest.raises(td.NameTakenError):
                        await sup.start_child(spec(log, "c", global_name="global_taken"))
                assert sup.which_children() == [td.ChildInfo("a", pid, "permanent")]
                assert node.statistics().processes == processes + 1
                assert log == [("start", "a")]  # the refused children never ran


# ---------------------------------------------------------------- example


@pytest.mark.slow
def test_supervised_service_example_across_os_processes(fork_server: ForkServer) -> None:
    """The example's ``both`` mode: three server processes, a worker crash,
    the SIGKILL of the singleton's node (about 10-15 s: slow)."""
    port = free_port_block(3)  # the example's three members
    example = Path(__file__).parent.parent / "examples" / "supervised_service.py"
    result = fork_server.run(
        [sys.executable, str(example), "both", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "worker 2 crashed and was restarted" in out
    assert "all 20 read back" in out
    assert "SIGKILLed" in out
    assert "kv moved to" in out
    assert "all 20 keys read back" in out
    assert "writes work on the new leader" in out
    assert "[main] done" in out
