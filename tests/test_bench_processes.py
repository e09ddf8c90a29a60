"""The processes benchmark still runs end to end and reports its ratios
(nothing here judges a number), and the per-process state it measures
stays small: the structural rules a million idle processes rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import trio_distribute as td

ROOT = Path(__file__).resolve().parent.parent


def test_processes_benchmark_runs_quickly_and_reports_ratios(tmp_path: Path) -> None:
    out = tmp_path / "processes.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.processes",
            "--quick",
            "--count",
            "300",
            "--sends",
            "200",
            "--backends",
            "trio",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "td / raw" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"raw/trio/300", "td/trio/10", "td/trio/300"}
    for key in ("rss_per_unit", "spawn_s", "stop_s", "send_us", "rtt_p50_us"):
        assert data["results"]["td/trio/300"][key] > 0


@pytest.mark.anyio
async def test_an_idle_process_holds_no_queue_watch_set_or_parker() -> None:
    """What an idle process does not own until it needs it: a message
    queue (a deque is 760 bytes empty), a set of monitor refs, a parker
    object; and its task is not wrapped in a task handle of its own."""
    started = anyio.Event()
    async with td.open_node("lean@127.0.0.1", cookie="c") as node:

        async def idle(proc: td.Process) -> None:
            started.set()
            await proc.receive()

        pid = await node.spawn(idle)
        with anyio.fail_after(10):
            await started.wait()
            await anyio.wait_all_tasks_blocked()
        process = node._processes.lookup(pid)
        assert process is not None
        assert not hasattr(process, "__dict__")
        mailbox = process._mailbox
        assert not hasattr(mailbox, "__dict__")
        assert mailbox._queue is None
        assert process._watching is None
        assert mailbox._waiter is not None  # it waits in receive
        # A message makes a queue; taking the last one drops it again.
        await node.send(pid, "hello")
        assert len(mailbox) == 1
        with anyio.fail_after(10):
            while node._processes.lookup(pid) is not None:
                await anyio.sleep(0.01)
        assert mailbox._queue is None  # closed with the process


# What spawning without a start handshake must still guarantee.


@pytest.mark.anyio
async def test_a_process_exists_before_its_task_runs() -> None:
    """spawn returns before the function has run (no handshake with the
    new task), but the process is already there: named, in the table, and
    messages sent to it wait in its mailbox."""
    ran: list[str] = []
    got: list[object] = []
    async with td.open_node("early@127.0.0.1", cookie="c") as node:

        async def worker(proc: td.Process) -> None:
            ran.append("ran")
            got.append(await proc.receive())

        pid = await node.spawn(worker, name="early")
        assert node.whereis("early") == pid
        assert node._processes.lookup(pid) is not None
        await node.send("early", "first")
        with anyio.fail_after(10):
            while not got:
                await anyio.sleep(0.01)
    assert ran == ["ran"]
    assert got == ["first"]


@pytest.mark.anyio
async def test_a_process_killed_before_its_task_runs_never_runs_its_function() -> None:
    ran: list[str] = []
    async with td.open_node("killed@127.0.0.1", cookie="c") as node:

        async def worker(proc: td.Process) -> None:
            ran.append("ran")

        pid = await node.spawn(worker)
        async with node.monitor(pid) as downs:
            await node.exit(pid, "kill")
            with anyio.fail_after(10):
                down = await downs.receive()
    assert down.reason.kind == td.ExitKind.KILLED
    assert ran == []


@pytest.mark.anyio
async def test_two_tasks_receiving_from_one_mailbox_either_gets_the_message() -> None:
    """The mailbox remembers one waiting task in a slot and any others in a
    list; cancelling the one in the slot must not lose the others."""
    async with td.open_node("two@127.0.0.1", cookie="c") as node, node.open_process() as proc:
        got: list[object] = []

        async def take() -> None:
            got.append(await proc.receive())

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                async with anyio.create_task_group() as first:
                    first.start_soon(take)  # waits first: the slot
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(take)
                    tg.start_soon(take)
                    await anyio.wait_all_tasks_blocked()
                    first.cancel_scope.cancel()
                await node.send(proc.pid, "a")
                await node.send(proc.pid, "b")
        assert sorted(got) == ["a", "b"]  # type: ignore[type-var]
