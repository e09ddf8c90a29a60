"""The command line: the README's first command and the ``node`` subcommand."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

import trio_distribute as td
import trio_distribute.testing


def test_demo_runs_and_tells_the_story() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_distribute", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for expected in [
        "rejected",  # the intruder with the wrong cookie
        "cookie proven both ways",
        "[   ping]",
        "asked for 3^2 and got 9",
        "ProcessDown for",
        "exception (RuntimeError: told to crash)",
        "called 'squares' by name: 12^2 = 144",
        "'everyone' has",
        "heard 'hello, everyone'",
        "math.multiply(6, 7) on b@127.0.0.1: 42",
        "timed out after 0.3s",
        "cancelled the remote task and acknowledged it",
        "Ok(9)",
        "Err(BadRpcError)",
        "membership converged: everyone sees 3 alive members",
        "elected in term 1; all three agree",
        "(the leader) without a goodbye",
        "elected in term 2",
        "declared dead by both survivors",
        "quorum True",
        "go down (reason: shutdown)",
        "the cluster carries on",
    ]:
        assert expected in out, expected


def test_bad_arguments_are_reported() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_distribute", "node", "--name", "bad", "--cookie", "c"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "node name" in result.stderr


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_node_command_serves_until_stopped() -> None:
    async with td.open_node("probe@127.0.0.1", cookie="cli", config=td.NodeConfig.local()) as probe:
        child = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "trio_distribute",
                "node",
                "--name",
                "cli@127.0.0.1",
                "--cookie",
                "cli",
                "--local",
                "--join",
                f"{probe.name}:{probe.address[1]}",
            ]
        )
        try:
            with anyio.fail_after(20):
                async with probe.monitor_nodes() as events:
                    assert await events.receive() == td.NodeUp("cli@127.0.0.1")
                    assert await probe.ping("cli@127.0.0.1") > 0
                    child.terminate()
                    event = await events.receive()
                    assert isinstance(event, td.NodeDown)
        finally:
            if child.returncode is None:
                child.kill()
            with anyio.fail_after(10):
                await child.aclose()


async def test_seeds_are_connected_on_start() -> None:
    config = td.NodeConfig.local()
    with anyio.fail_after(10):
        async with td.open_node("s1@127.0.0.1", cookie="c", config=config) as s1:
            seeds = [f"{s1.name}:{s1.address[1]}", "nobody@127.0.0.1:1"]
            async with td.open_node("s2@127.0.0.1", cookie="c", config=config, seeds=seeds) as s2:
                # The unreachable seed is logged and skipped, not raised.
                assert s2.nodes() == ["s1@127.0.0.1"]


async def status(node: td.Node, cookie: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m trio_distribute status`` against ``node``."""
    command = [sys.executable, "-m", "trio_distribute", "status"]
    command += ["--node", f"127.0.0.1:{node.address[1]}", "--cookie", cookie]
    return await anyio.run_process(command, check=False)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_status_command_shows_members_leader_and_health() -> None:
    async with td.testing.open_cluster(2, cookie="status-cookie") as (a, b):
        with anyio.fail_after(20):
            leader = await a.election.wait_for_leader(timeout=10)
            result = await status(a, "status-cookie")
            out = result.stdout.decode()
            assert result.returncode == 0, out + result.stderr.decode()
            assert f"node {a.name}" in out
            assert f"leader {leader.name} (term {leader.term}), quorum True" in out
            assert "members: 2 alive, 0 suspect, 0 dead, 0 left" in out
            assert f"{b.name}" in out and "alive" in out
            # The status node took no part in the cluster.
            assert all(not m.name.startswith("status-") for m in a.membership.members())
            wrong = await status(a, "wrong")
            assert wrong.returncode == 2
            assert "cookie" in wrong.stderr.decode()
