"""Prometheus metrics: every family, with sane values, over HTTP."""

from __future__ import annotations

import re
import sys

import anyio
import pytest

import trio_distribute as td
from trio_distribute.config import ElectionConfig
from trio_distribute.testing import wait_until

pytest.importorskip(
    "prometheus_client", reason="prometheus_client is not installed (trio_distribute[prometheus])"
)

from virtual import anyio_backend, fake_network, open_cluster, open_node

from trio_distribute import metrics
from trio_distribute.metrics import NodeMetrics, serve_metrics

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "metrics-cookie"


async def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                break
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


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


@pytest.mark.real_network  # an HTTP scrape over real loopback TCP
async def test_metrics_endpoint_shows_every_family() -> None:
    config = td.NodeConfig.local(election=ElectionConfig.local(bootstrap_expect=2))
    with anyio.fail_after(30):
        async with open_cluster(["a", "b"], cookie=COOKIE, config=config) as (a, b):
            b.rpc.export(lambda x: x + 1, name="inc")
            async with anyio.create_task_group() as tg:
                port = await tg.start(serve_metrics, a, 0, "127.0.0.1")
                for n in range(3):
                    assert await a.rpc.call(b.name, "inc", n) == n + 1
                async with a.open_process() as proc:
                    for n in range(4):
                        await a.send(proc.pid, n)  # four queued: a high-water mark
                    status, first = await scrape(port)
                await a.send(proc.pid, "late")  # dead_pid, a counted drop
                await a.election.wait_for_leader(timeout=20)
                await wait_until(lambda: a.membership.alive() == [a.name, b.name])
                status, body = await scrape(port)
                assert status == "HTTP/1.1 200 OK"
                assert sample(first, "trio_distribute_mailbox_depth_max", node=a.name) == 4
                assert sample(body, "trio_distribute_mailbox_depth_max", node=a.name) == 0
                assert sample(body, "trio_distribute_mailbox_depth_high_water", node=a.name) == 4
                assert sample(body, "trio_distribute_connections", node=a.name) == 1
                for key in ("bytes_in", "bytes_out", "frames_in", "frames_out"):
                    assert sample(body, f"trio_distribute_{key}_total", node=a.name) > 0
                    assert sample(body, f"trio_distribute_peer_{key}_total", peer=b.name) > 0
                assert sample(body, "trio_distribute_drops_total", cause="dead_pid") == 1
                assert sample(body, "trio_distribute_events_total", event="Dropped") >= 1
                assert sample(body, "trio_distribute_events_total", event="RpcCompleted") == 3
                assert sample(body, "trio_distribute_rpc_latency_seconds_count", outcome="ok") == 3
                assert sample(body, "trio_distribute_rpc_latency_seconds_sum", outcome="ok") > 0
                assert sample(body, "trio_distribute_members", status="alive") == 2
                assert sample(body, "trio_distribute_members", status="dead") == 0
                leader = a.election.leader
                assert isinstance(leader, td.Leader)
                assert sample(body, "trio_distribute_term", node=a.name) == leader.term >= 1
                assert sample(body, "trio_distribute_leader", leader=leader.name) == 1
                assert sample(body, "trio_distribute_is_leader", node=a.name) == int(
                    leader.name == a.name
                )
                assert sample(body, "trio_distribute_processes", node=a.name) >= 0
                status, _ = await scrape(port, "/nope")
                assert status == "HTTP/1.1 404 Not Found"
                tg.cancel_scope.cancel()


@pytest.mark.real_network  # an HTTP scrape over real loopback TCP
async def test_the_metrics_sink_is_removed_on_close() -> None:
    async with open_node("a@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()) as a:
        metrics = NodeMetrics(a)
        assert metrics._observe in a.telemetry._sinks
        metrics.close()
        assert metrics._observe not in a.telemetry._sinks


def test_the_core_does_not_import_prometheus_client() -> None:
    import subprocess

    code = (
        "import sys, trio_distribute, trio_distribute.node, trio_distribute.__main__;"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.real_network  # an HTTP scrape over real loopback TCP
async def test_an_oversized_request_is_closed_unanswered() -> None:
    assert metrics.MAX_REQUEST_BYTES == 8192 and metrics.REQUEST_TIMEOUT == 5.0
    async with open_node("a@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()) as a:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_metrics, a, 0, "127.0.0.1")
            with anyio.fail_after(10):
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    # A head that never ends, larger than the limit.
                    await stream.send(b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 9000)
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await stream.receive()
            tg.cancel_scope.cancel()
