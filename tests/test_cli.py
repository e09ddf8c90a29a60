"""The command line: the README's first command and the ``node`` subcommand."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from free_ports import free_port
from test_tls import Pki, pki  # noqa: F401 (the fixture)

import trio_distribute as td
import trio_distribute.testing
from trio_distribute.__main__ import main
from trio_distribute._cli import UserError, _ssl_contexts, build_parser

COOKIE = "cli-test-cookie-0123456789abcdef"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """``main()`` configures the root logger as a program should; a test that
    calls it in-process must not leave a handler on a closed capture stream
    for the tests that run after it in the same worker."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_demo_runs_and_tells_the_story() -> None:
    # Two nodes: the smallest cluster --help allows (it once crashed), and
    # the same story as the default three.
    result = subprocess.run(
        [sys.executable, "-m", "trio_distribute", "demo", "--nodes", "2"],
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
        "; all three agree",
        "(the leader) without a goodbye",
        "declared dead by both survivors",
        "quorum True",
        "go down (reason: shutdown)",
        "the cluster carries on: a@127.0.0.1, b@127.0.0.1",
        "a@127.0.0.1 <-> b@127.0.0.1: cookie proven both ways",
    ]:
        assert expected in out, expected
    # Raft promises one leader per term, not which term: a split vote
    # between the two survivors (likelier on a loaded machine) moves the
    # replacement to a later term. The replacement's term must be higher.
    first = re.search(r"elected in term (\d+); all three agree", out)
    second = re.search(r"elected in term (\d+), [\d.]+s after the kill", out)
    assert first is not None and second is not None, out
    assert int(second.group(1)) > int(first.group(1)) >= 1


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_distribute", *args]


async def read_all(stream: anyio.abc.ByteReceiveStream) -> str:
    chunks = []
    with contextlib.suppress(anyio.EndOfStream):
        while True:
            chunks.append(await stream.receive())
    return b"".join(chunks).decode()


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_node_command_says_goodbye_and_exits_0_on_a_signal(signum: signal.Signals) -> None:
    async with td.open_node(
        "probe@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()
    ) as probe:
        child = await anyio.open_process(
            cli(
                "node",
                "--name",
                "cli@127.0.0.1",
                "--local",
                "--seed",
                f"{probe.name}:{probe.address[1]}",
            ),
            env={**os.environ, "TRIO_DISTRIBUTE_COOKIE": COOKIE},
        )
        try:
            with anyio.fail_after(30):
                async with probe.monitor_nodes() as events:
                    assert await events.receive() == td.NodeUp("cli@127.0.0.1")
                    assert await probe.ping("cli@127.0.0.1") > 0
                    assert child.stdout is not None
                    out = ""
                    while "node up: probe@127.0.0.1\n" not in out:  # started
                        out += (await child.stdout.receive()).decode()
                    child.send_signal(signum)
                    # A goodbye, not a lost connection.
                    assert await events.receive() == td.NodeDown("cli@127.0.0.1", "shutdown")
                assert await child.wait() == 0
                assert child.stdout is not None and child.stderr is not None
                out += await read_all(child.stdout)
                err = await read_all(child.stderr)
        finally:
            if child.returncode is None:
                child.kill()
            with anyio.fail_after(10):
                await child.aclose()
    assert "Traceback" not in err, err
    # Logging goes to stderr with timestamps; events to stdout with them too.
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ", err, re.M), err
    assert re.search(r"^\d{4}-\d\d-\d\dT[\d:.]+\+00:00 node up: probe@127.0.0.1$", out, re.M), out
    assert "stopped" in out


def test_a_port_in_use_or_an_address_not_ours_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "TRIO_DISTRIBUTE_COOKIE": COOKIE}
        # Both commands at once (two interpreters): neither depends on the other.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            in_use_run = pool.submit(
                subprocess.run,
                cli("node", "--name", "x@127.0.0.1", "--port", str(port)),
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            # 192.0.2.1 (TEST-NET-1) is no interface of this machine: bind
            # fails at once, nothing is sent.
            not_ours_run = pool.submit(
                subprocess.run,
                cli("node", "--name", "x@192.0.2.1"),
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            in_use = in_use_run.result()
            not_ours = not_ours_run.result()
    assert in_use.returncode == 2, in_use.stderr
    assert in_use.stderr.strip().splitlines()[-1].endswith(f"127.0.0.1:{port}: the port is in use")
    assert "Traceback" not in in_use.stderr
    assert not_ours.returncode == 2, not_ours.stderr
    assert "cannot listen on 192.0.2.1:0" in not_ours.stderr
    assert "Traceback" not in not_ours.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["node", "--name", "bad", "--cookie", COOKIE], "node name"),
        (["node", "--name", "a@127.0.0.1", "--cookie", COOKIE, "--port", "http"], "port"),
        (["node", "--name", "a@127.0.0.1", "--cookie", COOKIE, "--port", "70000"], "65535"),
        (["node", "--name", "a@127.0.0.1", "--cookie", COOKIE, "--expect", "0"], "at least 1"),
        (["node", "--name", "a@127.0.0.1"], "no cookie"),
        (["node", "--name", "a@127.0.0.1", "--cookie-file", "/nonexistent/c"], "cookie file"),
        (["node", "--name", "a@127.0.0.1", "--cookie", COOKIE, "--tls-cert", "c.pem"], "--tls-ca"),
        (["node", "--name", "a@127.0.0.1", "--cookie", COOKIE, "--log-level", "loud"], "choice"),
        (["status", "--node", "nowhere", "--cookie", COOKIE], "host:port"),
        (["status", "--node", "127.0.0.1:1", "--cookie", COOKIE, "--timeout", "0"], "more than 0"),
        (["demo", "--nodes", "1"], "2..9"),
        (["demo", "--nodes", "10"], "2..9"),
        (["launch"], "invalid choice"),
        ([], "required"),
    ],
)
def test_every_user_mistake_is_one_line_and_exit_2(
    argv: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRIO_DISTRIBUTE_COOKIE", raising=False)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err


def test_version_and_the_program_name_as_invoked(monkeypatch: pytest.MonkeyPatch) -> None:
    result = subprocess.run(cli("--version"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"trio-distribute {td.__version__}"
    monkeypatch.setattr(sys, "argv", ["/venv/lib/trio_distribute/__main__.py"])
    assert build_parser().prog == "python -m trio_distribute"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/trio-distribute"])
    parser = build_parser()
    assert parser.format_usage().startswith("usage: trio-distribute ")
    # Every option of every command has help text.
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in commands.choices.items():
        assert sub.format_usage().startswith(f"usage: trio-distribute {command}")
        for action in sub._actions:
            assert action.help, f"{command} {action.option_strings} has no help"


async def test_seeds_are_connected_on_start() -> None:
    config = td.NodeConfig.local()
    with anyio.fail_after(10):
        async with td.open_node("s1@127.0.0.1", cookie="c", config=config) as s1:
            seeds = [f"{s1.name}:{s1.address[1]}", "nobody@127.0.0.1:1"]
            async with td.open_node("s2@127.0.0.1", cookie="c", config=config, seeds=seeds) as s2:
                # The unreachable seed is logged and skipped, not raised.
                assert s2.nodes() == ["s1@127.0.0.1"]


async def status(node: td.Node, *args: str, env_cookie: str = COOKIE) -> Any:
    """Run ``python -m trio_distribute status`` against ``node`` with
    ``$TRIO_DISTRIBUTE_COOKIE`` set to ``env_cookie``."""
    command = cli("status", "--node", f"127.0.0.1:{node.address[1]}", *args)
    env = {**os.environ, "TRIO_DISTRIBUTE_COOKIE": env_cookie}
    return await anyio.run_process(command, check=False, env=env)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_status_command_shows_members_leader_and_health(tmp_path: Path) -> None:
    async with td.testing.open_cluster(2, cookie=COOKIE) as (a, b):
        with anyio.fail_after(30):
            leader = await a.election.wait_for_leader(timeout=10)
            cookie_file = tmp_path / "cookie"
            cookie_file.write_text(COOKIE + "\n")
            wrong_cookie = "wrong-cookie-0123456789abcdef"
            # The three commands are independent: they run at the same time
            # (each is its own interpreter; a node answers several at once).
            runs: dict[str, Any] = {}

            async def run(key: str, *args: str, env_cookie: str = COOKIE) -> None:
                runs[key] = await status(a, *args, env_cookie=env_cookie)

            async with anyio.create_task_group() as commands:
                commands.start_soon(run, "text")  # the cookie from the environment
                # --json, the cookie from a file (which wins over the environment).
                commands.start_soon(
                    functools.partial(
                        run, "json", "--json", "--cookie-file", str(cookie_file),
                        env_cookie=wrong_cookie,
                    )
                )  # fmt: skip
                commands.start_soon(run, "wrong", "--cookie", wrong_cookie)
            result = runs["text"]
            out = result.stdout.decode()
            assert result.returncode == 0, out + result.stderr.decode()
            assert f"node {a.name}" in out
            assert f"leader {leader.name} (term {leader.term}), quorum True" in out
            assert "members: 2 alive, 0 suspect, 0 dead, 0 left" in out
            assert f"{b.name}" in out and "alive" in out
            # The status nodes took no part in the cluster.
            assert all(not m.name.startswith("status-") for m in a.membership.members())
            as_json = runs["json"]
            assert as_json.returncode == 0, as_json.stderr.decode()
            report = json.loads(as_json.stdout)
            assert report["node"] == a.name
            assert {m["name"] for m in report["members"]} == {a.name, b.name}
            assert report["health"]["alive"] == 2
            assert report["health"]["leader"] == leader.name
            wrong = runs["wrong"]
            assert wrong.returncode == 2
            assert "cookie" in wrong.stderr.decode().strip().splitlines()[-1]


def test_the_two_nodes_client_without_a_server_says_so_in_one_line() -> None:
    port = free_port()  # nobody listens there
    example = Path(__file__).resolve().parent.parent / "examples" / "two_nodes.py"
    result = subprocess.run(
        [sys.executable, str(example), "client", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"no server at a@127.0.0.1:{port} after 3s" in lines[0]
    assert f"server {port}" in lines[0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_options_build_contexts_for_mutual_tls(pki: Pki) -> None:  # noqa: F811
    def options(**files: object) -> argparse.Namespace:
        return argparse.Namespace(**{"tls_cert": None, "tls_key": None, "tls_ca": None, **files})

    assert _ssl_contexts(options()) == (None, None)
    server, client = _ssl_contexts(
        options(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_ca=str(pki.ca))
    )
    assert server is not None and client is not None
    assert server.verify_mode == ssl.CERT_REQUIRED  # peers must show a certificate
    config = td.NodeConfig.local()
    with anyio.fail_after(20):
        async with (
            td.open_node(
                "a@127.0.0.1", cookie=COOKIE, config=config, ssl_context=server,
                client_ssl_context=client,
            ) as a,
            td.open_node(
                "b@127.0.0.1", cookie=COOKIE, config=config, ssl_context=server,
                client_ssl_context=client,
            ) as b,
        ):  # fmt: skip
            assert await b.connect(f"{a.name}:{a.address[1]}") == a.name
    with pytest.raises(UserError, match="--tls-ca"):
        _ssl_contexts(options(tls_cert=str(pki.cert)))
    with pytest.raises(UserError, match="cannot load the TLS files"):
        _ssl_contexts(options(tls_cert=str(pki.key), tls_ca=str(pki.ca)))


def test_status_reaches_a_node_on_another_host() -> None:
    """In private network namespaces (two hosts joined by a veth pair)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"no private network namespace with veth here: {probe.stderr.strip()}")
    script = Path(__file__).resolve().parent / "netns_status.py"
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(script.parent.parent)},
        check=False,
    )
    assert "STATUS OK" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_node_command_serves_metrics_on_request() -> None:
    pytest.importorskip("prometheus_client", reason="metrics need the prometheus extra")
    child = await anyio.open_process(
        cli("node", "--name", "metrics@127.0.0.1", "--local", "--metrics-port", "0"),
        env={**os.environ, "TRIO_DISTRIBUTE_COOKIE": COOKIE},
    )
    try:
        with anyio.fail_after(30):
            assert child.stdout is not None
            out = ""
            while (found := re.search(r"metrics at http://([\d.]+):(\d+)/metrics", out)) is None:
                out += (await child.stdout.receive()).decode()
            stream = await anyio.connect_tcp(found.group(1), int(found.group(2)))
            async with stream:
                await stream.send(b"GET /metrics HTTP/1.0\r\n\r\n")
                page = await read_all(stream)
            child.send_signal(signal.SIGINT)
            assert await child.wait() == 0
    finally:
        if child.returncode is None:
            child.kill()
        with anyio.fail_after(10):
            await child.aclose()
    assert 'trio_distribute_connections{node="metrics@127.0.0.1"}' in page, page[:2000]
