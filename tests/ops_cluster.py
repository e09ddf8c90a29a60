"""Clusters of OS-process nodes (tests/ops_node.py) for the operations
tests: discovery through ``file:`` and ``dns:``, a metrics scrape, and the
rolling restart. ``python tests/ops_cluster.py rolling`` runs the rolling
restart and prints its table (``nox -s operations``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_distribute as td
from trio_distribute.config import ElectionConfig, MembershipConfig

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = ROOT / "tests" / "ops_node.py"
COOKIE = "ops-test-cookie-4f9a2c17e6b8d0a3"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free for TCP and UDP on ``host`` (picked by the kernel)."""
    import socket

    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
        except OSError:
            continue
        if port not in ports:
            ports.append(port)
    return ports


def namespaces_usable() -> str | None:
    """Why a node cannot run in a mount namespace of its own, or None."""
    if os.geteuid() != 0:
        return "needs root for a mount namespace (unshare -m) with its own /etc/hosts"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind /etc/hostname /etc/hosts"],
        capture_output=True,
        check=False,
    )
    if probe.returncode:
        return f"unshare -m is not permitted here: {probe.stderr.decode().strip()}"
    return None


@attrs.define
class NodeProcess:
    name: str
    port: int
    args: list[str]
    log: Path
    hosts_file: Path | None = None
    metrics_port: int | None = None
    process: trio.Process | None = None
    creation: int | None = None
    ready: trio.Event = attrs.field(factory=trio.Event)

    @property
    def address(self) -> str:
        return f"{self.name.partition('@')[2]}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            str(NODE_SCRIPT),
            "--name",
            self.name,
            "--port",
            str(self.port),
            "--cookie",
            COOKIE,
            *self.args,
        ]
        if self.metrics_port is not None:
            cmd += ["--metrics-port", str(self.metrics_port)]
        if self.hosts_file is not None:
            # A mount namespace of its own whose /etc/hosts is the test's
            # file: the node resolves names through the real libc resolver,
            # and the test changes what they resolve to by rewriting it.
            cmd = [
                "unshare",
                "-m",
                "sh",
                "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"',
                str(self.hosts_file),
                *cmd,
            ]
        return cmd


@attrs.define
class Cluster:
    directory: Path
    nursery: trio.Nursery
    nodes: list[NodeProcess] = attrs.field(factory=list)
    #: ``(unix time, node, term, leader or None)`` from every node's output.
    leader_lines: list[tuple[float, str, int, str | None]] = attrs.field(factory=list)
    observer: td.Node | None = None

    async def start(self, node: NodeProcess) -> None:
        node.ready = trio.Event()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = node.log.open("ab")
        node.process = await trio.lowlevel.open_process(
            node.command(), stdout=subprocess.PIPE, stderr=log, env=env
        )
        log.close()
        if node not in self.nodes:
            self.nodes.append(node)
        self.nursery.start_soon(self._read, node, node.process)
        with trio.fail_after(60):
            await node.ready.wait()

    async def _read(self, node: NodeProcess, process: trio.Process) -> None:
        assert process.stdout is not None
        buffer = b""
        with node.log.open("a") as log:
            async for chunk in process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode()
                    log.write(f"OUT {line}\n")
                    log.flush()
                    parts = line.split()
                    if parts[:1] == ["READY"]:
                        node.creation = int(parts[2])
                        node.ready.set()
                    elif parts[:1] == ["LEADER"]:
                        leader = None if parts[3] == "-" else parts[3]
                        self.leader_lines.append(
                            (float(parts[1]), node.name, int(parts[2]), leader)
                        )

    async def stop(self, node: NodeProcess) -> None:
        process = node.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await process.wait()
            return
        process.kill()
        await process.wait()

    async def call(self, node: NodeProcess, function: str, timeout: float = 5.0) -> Any:
        """An RPC to ``node`` from the observer (not a member: membership and
        election are off on it)."""
        assert self.observer is not None
        peer = await self.observer.connect(f"{node.name}:{node.port}")
        return await self.observer.rpc.call(peer, function, timeout=timeout)

    async def converged(self, live: Sequence[NodeProcess] | None = None) -> bool:
        """Every node sees all of them alive, one leader, and every node's
        global name owned by its current run."""
        live = self.nodes if live is None else live
        leaders = set()
        try:
            for node in live:
                report = await self.call(node, "trio_distribute.status")
                alive = {m["name"] for m in report["members"] if m["status"] == "alive"}
                if alive != {n.name for n in live}:
                    return False
                leaders.add(report["health"]["leader"])
                names = await self.call(node, "ops.names")
                for other in live:
                    short = other.name.partition("@")[0]
                    if names.get(f"svc-{short}") != [other.name, other.creation]:
                        return False
        except (td.DistributionError, TimeoutError, OSError):
            return False
        return len(leaders) == 1 and None not in leaders

    async def wait_converged(self, timeout: float = 60.0) -> None:
        with trio.fail_after(timeout):
            while not await self.converged():
                await trio.sleep(0.1)

    def two_leaders_in_a_term(self) -> dict[int, set[str]]:
        by_term: dict[int, set[str]] = {}
        for _, _, term, leader in self.leader_lines:
            if leader is not None:
                by_term.setdefault(term, set()).add(leader)
        return {term: names for term, names in by_term.items() if len(names) > 1}


@asynccontextmanager
async def open_cluster_processes(directory: Path) -> AsyncIterator[Cluster]:
    config = td.NodeConfig.local(
        membership=MembershipConfig(enabled=False), election=ElectionConfig(enabled=False)
    )
    async with trio.open_nursery() as nursery:
        cluster = Cluster(directory=directory, nursery=nursery)
        try:
            async with td.open_node("observer@127.0.0.1", cookie=COOKIE, config=config) as obs:
                cluster.observer = obs
                yield cluster
        finally:
            with trio.CancelScope(shield=True):
                for process in cluster.nodes:
                    await cluster.stop(process)
            nursery.cancel_scope.cancel()


def leaderless(
    lines: list[tuple[float, str, int, str | None]],
    start: float,
    end: float,
    restarted: str,
    leader_before: str,
    term_before: int,
) -> float:
    """Seconds within ``[start, end]`` during which the cluster had no leader.

    If the restarted node was the leader: from the stop until a node first
    reports a leader of a later term. Otherwise: the union of the intervals
    in which some other node reported no leader.
    """
    if restarted == leader_before:
        for when, _, term, leader in sorted(lines):
            if when >= start and leader is not None and term > term_before:
                return when - start
        return end - start
    total = 0.0
    state: dict[str, bool] = {}  # node -> leaderless now
    since: float | None = None
    for when, node, _, leader in sorted(lines):
        if node == restarted or when > end:
            continue
        state[node] = leader is None
        now_leaderless = any(state.values())
        clamped = max(when, start)
        if now_leaderless and since is None:
            since = clamped
        elif not now_leaderless and since is not None:
            total += max(0.0, clamped - since)
            since = None
    if since is not None:
        total += end - max(since, start)
    return total


@attrs.frozen
class RestartRow:
    index: int
    node: str
    was_leader: bool
    back_after: float
    leaderless: float
    term_before: int
    term_after: int
    leader_after: str


async def rolling_restart(directory: Path, say: Callable[[str], None] = print) -> list[RestartRow]:
    """Five nodes (file: discovery, state_dir), each restarted in turn."""
    ports = free_ports(5)
    seeds = directory / "seeds"
    seeds.write_text("".join(f"127.0.0.1:{port}\n" for port in ports))
    rows: list[RestartRow] = []
    async with open_cluster_processes(directory) as cluster:
        for i, port in enumerate(ports, 1):
            state = directory / f"state-n{i}"
            state.mkdir()
            args = ["--seed", f"file:{seeds}", "--expect", "5", "--state-dir", str(state)]
            node = NodeProcess(f"n{i}@127.0.0.1", port, args, directory / f"n{i}.log")
            cluster.nursery.start_soon(cluster.start, node)
            cluster.nodes.append(node)
        await cluster.wait_converged()
        say("cluster of 5 converged")
        for index, node in enumerate(list(cluster.nodes), 1):
            report = await cluster.call(
                cluster.nodes[0 if index > 1 else 1], "trio_distribute.status"
            )
            leader_before, term_before = report["health"]["leader"], report["health"]["term"]
            start = time.time()
            await cluster.stop(node)
            await cluster.start(node)
            await cluster.wait_converged()
            end = time.time()
            report = await cluster.call(node, "trio_distribute.status")
            row = RestartRow(
                index=index,
                node=node.name,
                was_leader=node.name == leader_before,
                back_after=end - start,
                leaderless=leaderless(
                    cluster.leader_lines, start, end, node.name, leader_before, term_before
                ),
                term_before=term_before,
                term_after=report["health"]["term"],
                leader_after=report["health"]["leader"],
            )
            rows.append(row)
            say(f"restarted {node.name}: {row}")
        conflicts = cluster.two_leaders_in_a_term()
        assert not conflicts, f"two leaders in a term: {conflicts}"
    return rows


async def scrape(port: int, host: str = "127.0.0.1") -> str:
    """``GET /metrics`` from ``host:port``; the body (raises unless 200)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    if not head.startswith("HTTP/1.1 200"):
        raise AssertionError(f"metrics answered {head!r}")
    return body


def sample(body: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels...}`` (labels may be a subset)."""
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"([a-z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in:\n{body}")


def table(rows: list[RestartRow]) -> str:
    lines = [
        "| # | node | was leader | converged again after (s) | without a leader (s) "
        "| term before → after | leader after |",
        "|---|------|------------|---------------------------|----------------------"
        "|---------------------|--------------|",
    ]
    for row in rows:
        lines.append(
            f"| {row.index} | {row.node} | {'yes' if row.was_leader else 'no'} "
            f"| {row.back_after:.2f} | {row.leaderless:.2f} "
            f"| {row.term_before} → {row.term_after} | {row.leader_after} |"
        )
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = trio.run(rolling_restart, Path(tmp))
    print(table(rows))


if __name__ == "__main__":
    if sys.argv[1:] != ["rolling"]:
        sys.exit("usage: python tests/ops_cluster.py rolling")
    main()


__all__ = [
    "Cluster",
    "NodeProcess",
    "free_ports",
    "leaderless",
    "namespaces_usable",
    "open_cluster_processes",
    "rolling_restart",
    "sample",
    "scrape",
    "table",
]
