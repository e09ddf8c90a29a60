"""Real OS processes: the two-node example runs as two processes and passes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from forked import ForkedProcess, ForkServer
from free_ports import free_port, free_port_block

import trio_distribute as td

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(
    fork_server: ForkServer, script: str, port: int | None = None, timeout: float = 60
) -> str:
    """Run an example in ``both`` mode (it starts its own OS processes);
    return its output."""
    port = free_port() if port is None else port
    result = fork_server.run(
        [sys.executable, str(EXAMPLES / script), "both", str(port)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output: str = result.stdout
    return output


def test_two_nodes_example_in_two_processes(fork_server: ForkServer) -> None:
    out = run_example(fork_server, "two_nodes.py")
    assert "[client] 'hello' came back" in out
    assert "[client] reply: 2" in out
    assert "[client] echo process went down: normal" in out
    assert "[server] client process" in out and "ended: normal" in out
    assert "[server] done" in out


CHILD = """
import sys, trio, trio_distribute as td

async def sink(proc):
    async for _ in proc:
        pass

async def main(port):
    config = td.NodeConfig.local()
    async with td.open_node("victim@127.0.0.1", cookie="kill-test", port=port, config=config) as n:
        pid = await n.spawn(sink, name="sink")
        print("READY", pid.id, pid.creation, flush=True)
        await trio.sleep_forever()

trio.run(main, int(sys.argv[1]))
"""


async def test_sigkilled_node_mid_traffic_fires_noconnection() -> None:
    port = free_port()
    child = await anyio.open_process([sys.executable, "-c", CHILD, str(port)])
    try:
        assert child.stdout is not None
        line = b""
        with anyio.fail_after(20):
            while not line.endswith(b"\n"):
                line += await child.stdout.receive()
        ready, pid_id, creation = line.decode().split()
        assert ready == "READY"
        sink = td.Pid("victim@127.0.0.1", int(pid_id), int(creation))
        with anyio.fail_after(20):
            async with (
                td.open_node(
                    "killer@127.0.0.1", cookie="kill-test", config=td.NodeConfig.local()
                ) as node,
                node.monitor_nodes() as events,
                node.open_process() as me,
            ):
                await node.connect(f"victim@127.0.0.1:{port}")
                assert await events.receive() == td.NodeUp("victim@127.0.0.1")
                ref = me.monitor(sink)

                async def traffic() -> None:
                    # Sends fail with NodeDownError once the kill is noticed.
                    with contextlib.suppress(td.NodeDownError):
                        while True:
                            await node.send(sink, b"x" * 100)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(traffic)
                    await anyio.sleep(0.2)
                    child.kill()  # SIGKILL: no goodbye, mid-traffic
                    down = await me.receive(match=lambda m: isinstance(m, td.ProcessDown))
                    tg.cancel_scope.cancel()
                assert down.ref == ref
                assert down.reason.kind == "noconnection"
                event = await events.receive()
                assert isinstance(event, td.NodeDown)
                assert event.reason in ("connection_closed", "tick_timeout")
    finally:
        if child.returncode is None:
            child.kill()
        with anyio.fail_after(10):
            await child.aclose()


def test_groups_chat_example_in_two_processes(fork_server: ForkServer) -> None:
    out = run_example(fork_server, "groups_chat.py")
    assert "[client] lobby says: {'welcome':" in out
    assert "[client] broadcast reached 2 members" in out
    assert "[server] heard 'hello, room'" in out
    assert "[client] heard 'hello, room'" in out
    assert "[server] GroupLeft" in out
    assert "[server] done" in out


def test_rpc_example_in_two_processes(fork_server: ForkServer) -> None:
    out = run_example(fork_server, "rpc.py")
    assert "[client] 2 + 3 = 5" in out
    assert "same id: True" in out
    assert "timed out after 0.5s" in out
    assert "[server] reports.build(60) was cancelled by its caller" in out
    assert "[client] the server acknowledged the cancellation" in out
    assert "[client] remote RuntimeError: disk on fire at File" in out
    assert "[client] refused: no exported function named 'os.system'" in out
    assert "[client] multicall: ['Ok', 'Err']" in out
    assert "[client] 64 concurrent calls answered" in out
    assert "[server] served 70 calls; done" in out


RPC_CHILD = """
import sys, trio, trio_distribute as td

async def slow():
    print("CALLED", flush=True)
    await trio.sleep(60)

async def main(port):
    config = td.NodeConfig.local()
    async with td.open_node("callee@127.0.0.1", cookie="kill-test", port=port, config=config) as n:
        n.rpc.export(slow)
        print("READY", flush=True)
        await trio.sleep_forever()

trio.run(main, int(sys.argv[1]))
"""


async def test_sigkilled_node_mid_rpc_gives_node_down() -> None:
    port = free_port()
    child = await anyio.open_process([sys.executable, "-c", RPC_CHILD, str(port)])
    try:
        assert child.stdout is not None
        stdout = child.stdout

        async def line() -> str:
            data = b""
            while not data.endswith(b"\n"):
                data += await stdout.receive(1)
            return data.decode().strip()

        with anyio.fail_after(20):
            assert await line() == "READY"
            async with td.open_node(
                "caller@127.0.0.1", cookie="kill-test", config=td.NodeConfig.local()
            ) as node:
                await node.connect(f"callee@127.0.0.1:{port}")
                async with anyio.create_task_group() as tg:

                    async def kill_when_called() -> None:
                        assert await line() == "CALLED"
                        child.kill()  # SIGKILL mid-call: no goodbye, no reply

                    tg.start_soon(kill_when_called)
                    with pytest.raises(td.NodeDownError):
                        await node.rpc.call("callee@127.0.0.1", "slow", timeout=None)
                assert node.rpc.statistics().in_flight == 0
    finally:
        if child.returncode is None:
            child.kill()
        with anyio.fail_after(10):
            await child.aclose()


LINK_CHILD = """
import sys, trio, trio_distribute as td

async def server(proc):
    async for call in proc:
        if isinstance(call, td.Call):
            print("CALLED", flush=True)  # and never replies

async def main(port):
    config = td.NodeConfig.local()
    async with td.open_node("linked@127.0.0.1", cookie="kill-test", port=port, config=config) as n:
        pid = await n.spawn(server, name="server")
        print("READY", pid.id, pid.creation, flush=True)
        await trio.sleep_forever()

trio.run(main, int(sys.argv[1]))
"""


async def test_sigkilled_node_fires_noconnection_on_links_and_calls() -> None:
    """A node SIGKILLed while processes here are linked to its process and
    calling it: the links fire ``noconnection`` (a trapping process gets it
    as a message, a non-trapping one ends) and the call fails with
    ``ProcessDownError(noconnection)``. (About 1.5 s per backend.)"""
    port = free_port()
    child = await anyio.open_process([sys.executable, "-c", LINK_CHILD, str(port)])
    try:
        assert child.stdout is not None
        stdout = child.stdout

        async def line() -> str:
            data = b""
            while not data.endswith(b"\n"):
                data += await stdout.receive(1)
            return data.decode().strip()

        with anyio.fail_after(30):
            ready, pid_id, creation = (await line()).split()
            assert ready == "READY"
            server = td.Pid("linked@127.0.0.1", int(pid_id), int(creation))
            async with (
                td.open_node(
                    "linker@127.0.0.1", cookie="kill-test", config=td.NodeConfig.local()
                ) as node,
                node.open_process() as trapping,
            ):
                await node.connect(f"linked@127.0.0.1:{port}")
                trapping.trap_exits = True
                await trapping.link(server)
                linked = anyio.Event()

                async def plain(proc: td.Process) -> None:
                    await proc.link(server)
                    linked.set()
                    await anyio.sleep_forever()

                plain_pid = await node.spawn(plain)
                await linked.wait()
                async with node.monitor(plain_pid) as plain_down, anyio.create_task_group() as tg:

                    async def kill_when_called() -> None:
                        assert await line() == "CALLED"
                        child.kill()  # SIGKILL mid-call: no goodbye, no reply

                    tg.start_soon(kill_when_called)
                    async with node.open_process() as caller:
                        with pytest.raises(td.ProcessDownError) as info:
                            await caller.call(server, "q", timeout=None)
                    assert info.value.reason.kind == "noconnection"
                    signal = await trapping.receive()
                    assert signal.pid == server
                    assert signal.reason.kind == "noconnection"
                    reason = (await plain_down.receive()).reason
                    assert reason.kind == "exit"
                    assert "noconnection" in reason.detail
                assert node.statistics().links == 0
                assert node.statistics().calls == 0
    finally:
        if child.returncode is None:
            child.kill()
        with anyio.fail_after(10):
            await child.aclose()


def run_orchestrated(fork_server: ForkServer, script: str) -> str:
    """Run an example that starts and kills three members of its own, on
    three consecutive ports."""
    return run_example(fork_server, script, free_port_block(3), timeout=90)


def test_swim_cluster_example_sigkill_and_restart(fork_server: ForkServer) -> None:
    out = run_orchestrated(fork_server, "swim_cluster.py")
    assert "[main] 3 processes converged" in out
    assert "[main] n0 declared n2 dead" in out and "[main] n1 declared n2 dead" in out
    assert "[main] n0 sees n2 alive again with incarnation" in out
    assert "[main] n1 sees n2 alive again with incarnation" in out
    assert "[main] the restarted n2 sees everyone alive; done" in out


def test_leader_election_example_sigkill_leader_and_restart(fork_server: ForkServer) -> None:
    out = run_orchestrated(fork_server, "leader_election.py")
    assert "[main] all three agree:" in out
    assert "[main] SIGKILLed the leader" in out
    assert "after the kill" in out
    assert "restarted with its saved term and follows: LEADER" in out


JOIN_STORM = Path(__file__).resolve().parent / "join_storm.py"


def _events(output: str) -> list[tuple[str, str, str]]:
    return [
        (kind, name, reason)
        for line in output.splitlines()
        if line.startswith("EVENT ")
        for kind, name, reason in [line.split()[1:4]]
    ]


def test_three_processes_joining_one_seed_at_once_never_flap_and_leave_as_shutdown(
    fork_server: ForkServer,
) -> None:
    """Three OS processes join one seed at the same instant, several times
    over: the seed sees exactly one ``NodeUp`` per joiner and no
    ``NodeDown`` until each leaves, and every leave is ``shutdown``, on the
    seed and on the joiners alike. The third joiner is stopped with Ctrl-C
    (SIGINT): it still says goodbye, and exits within the shutdown bound."""
    # The trials are independent clusters (each its own seed port): they
    # run side by side, so the suite waits for the longest one rather than
    # for the four in a row. Sixteen interpreters starting at once also make
    # each trial's formation a busier one than a lone trial's.
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOIN_STORM_TRIALS) as pool:
        trials = [pool.submit(_join_storm_trial, fork_server) for _ in range(JOIN_STORM_TRIALS)]
        for trial in trials:
            trial.result()


#: How many join storms the test runs (at the same time, on separate seeds).
JOIN_STORM_TRIALS = 4


def _join_storm_trial(fork_server: ForkServer) -> None:
    """One seed, three joiners at the same instant; assert what the test says."""
    joiners = [f"j{i}@127.0.0.1" for i in range(3)]
    port = free_port()
    seed = fork_server.popen(
        [sys.executable, str(JOIN_STORM), "seed", str(port), str(len(joiners))],
        stdout=subprocess.PIPE,
        text=True,
    )
    children: list[ForkedProcess] = []
    try:
        assert seed.stdout is not None
        assert seed.stdout.readline().strip() == "READY"
        children = [
            fork_server.popen(
                [
                    sys.executable,
                    str(JOIN_STORM),
                    "join",
                    name,
                    str(port),
                    "4" if index < 2 else "60",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # the KeyboardInterrupt traceback
                text=True,
            )
            for index, name in enumerate(joiners)
        ]
        # Every interpreter has started: all three join at the same instant.
        for child in children:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "STARTED"
        go_at = time.time() + 0.2
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{go_at}\n")
            child.stdin.flush()  # communicate() closes it
        outputs = [child.communicate(timeout=60)[0] for child in children[:2]]
        assert all(child.returncode == 0 for child in children[:2]), outputs
        children[2].send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        outputs.append(children[2].communicate(timeout=60)[0])
        # A few seconds at most (shutdown_timeout is 0.5 s with local()),
        # generous for a loaded machine.
        assert time.monotonic() - interrupted < 10
        seed_out = seed.communicate(timeout=60)[0]
        assert seed.returncode == 0
    finally:
        for process in [seed, *children]:
            if process.poll() is None:
                process.kill()
    seen = _events(seed_out)
    ups = [name for kind, name, _ in seen if kind == "up"]
    downs = [(name, reason) for kind, name, reason in seen if kind == "down"]
    # One NodeUp per joiner, all before any NodeDown: no flap at formation.
    assert sorted(ups) == joiners, seen
    assert [kind for kind, _, _ in seen] == ["up"] * 3 + ["down"] * 3, seen
    assert sorted(downs) == [(name, "shutdown") for name in joiners], seen
    for name, out in zip(joiners, outputs, strict=True):
        mine = _events(out)
        # (Connections made while joining, before the block, are not
        # replayed to a later subscriber.) No peer comes up twice.
        peer_ups = [n for kind, n, _ in mine if kind == "up"]
        assert len(set(peer_ups)) == len(peer_ups), (name, mine)
        assert all(r == "shutdown" for kind, _, r in mine if kind == "down"), (name, mine)
