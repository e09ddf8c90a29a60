"""Prometheus metrics for a node (the optional extra ``trio_distribute[prometheus]``).

``NodeMetrics(node)`` exposes ``node.statistics()``, per-peer traffic,
membership, the election and telemetry event counts as Prometheus metric
families in its own ``CollectorRegistry`` (read at every scrape), plus an
RPC latency histogram fed by telemetry. :func:`serve_metrics` serves them
over HTTP (``GET /metrics``) from the node's own task group, without
threads::

    async with td.open_node(...) as node, trio.open_nursery() as nursery:
        nursery.start_soon(serve_metrics, node, 9100)

The rest of the package never imports this module, so ``prometheus_client``
is needed only by those who use it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .telemetry import RpcCompleted

if TYPE_CHECKING:
    from .node import Node

__all__ = ["RPC_LATENCY_BUCKETS", "NodeMetrics", "serve_metrics"]

logger = logging.getLogger("trio_distribute.metrics")

#: Bucket bounds (seconds) of the RPC latency histogram.
RPC_LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Seconds between samples of the mailbox depths (their high-water mark is
#: the largest depth seen at a sample or a scrape).
SAMPLE_INTERVAL: Final = 1.0
#: The largest HTTP request head read, and how long a client may take to
#: send it, before its connection is closed.
MAX_REQUEST_BYTES: Final = 8192
REQUEST_TIMEOUT: Final = 5.0

_PREFIX = "trio_distribute"


class NodeMetrics(Collector):
    """The metric families of one node, in ``self.registry``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_latency = Histogram(
            f"{_PREFIX}_rpc_latency_seconds",
            "Latency of RPCs made by this node, by outcome",
            ["outcome"],
            buckets=RPC_LATENCY_BUCKETS,
            registry=self.registry,
        )
        #: The largest mailbox depth sampled since the node started.
        self.mailbox_high_water = 0
        self.registry.register(self)
        node.telemetry.add_sink(self._observe)

    def close(self) -> None:
        """Stop observing the node's telemetry."""
        self.node.telemetry.remove_sink(self._observe)

    def _observe(self, event: object) -> None:
        if isinstance(event, RpcCompleted):
            self.rpc_latency.labels(event.outcome).observe(event.seconds)

    def sample(self) -> int:
        """Update the mailbox high-water mark; return the deepest mailbox now."""
        depths = self.node.statistics().mailbox_depths
        deepest = max(depths.values(), default=0)
        self.mailbox_high_water = max(self.mailbox_high_water, deepest)
        return deepest

    def describe(self) -> list[Metric]:
        return []  # families depend on the node's state: found at collect

    def collect(self) -> Iterator[Metric]:
        node = self.node
        stats = node.statistics()
        labels = ["node"]
        me = [node.name]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{_PREFIX}_{name}", doc, labels=labels)
            family.add_metric(me, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=labels)
            family.add_metric(me, value)
            return family

        yield gauge("connections", "Peers connected now", stats.connections)
        yield gauge(
            "pending_handshakes", "Incoming handshakes in progress", stats.pending_handshakes
        )
        yield gauge("processes", "Live processes", stats.processes)
        yield gauge("monitors", "Process monitors held or served", stats.monitors)
        yield counter("bytes_in", "Bytes read on all connections", stats.bytes_in)
        yield counter("bytes_out", "Bytes written on all connections", stats.bytes_out)
        yield counter("frames_in", "Frames read on all connections", stats.messages_in)
        yield counter("frames_out", "Frames written on all connections", stats.messages_out)

        peer_families = {
            key: CounterMetricFamily(
                f"{_PREFIX}_peer_{key}",
                f"{key.replace('_', ' ')} on the connection to a peer",
                labels=["node", "peer"],
            )
            for key in ("bytes_in", "bytes_out", "frames_in", "frames_out")
        }
        for conn in node.transport.all_connections():
            peer = conn.peer
            for key, family in peer_families.items():
                family.add_metric([node.name, peer], getattr(conn, key))
        yield from peer_families.values()

        drops = CounterMetricFamily(
            f"{_PREFIX}_drops",
            "Dropped frames, messages and connections, by cause",
            labels=["node", "cause"],
        )
        for cause, count in sorted(stats.drops.items()):
            drops.add_metric([node.name, cause], count)
        yield drops

        deepest = max(stats.mailbox_depths.values(), default=0)
        self.mailbox_high_water = max(self.mailbox_high_water, deepest)
        yield gauge("mailbox_depth_max", "Messages queued in the deepest mailbox now", deepest)
        yield gauge(
            "mailbox_depth_high_water",
            "The deepest mailbox seen (sampled every second and at each scrape)",
            self.mailbox_high_water,
        )

        events = CounterMetricFamily(
            f"{_PREFIX}_events", "Telemetry events published, by type", labels=["node", "event"]
        )
        for kind, count in sorted(node.telemetry.counts.items()):
            events.add_metric([node.name, kind], count)
        yield events

        if node.membership.enabled:
            members = GaugeMetricFamily(
                f"{_PREFIX}_members",
                "Known members by status (this node included)",
                labels=["node", "status"],
            )
            counts: dict[str, int] = {}
            for _name, status, _incarnation in node.membership.members_with_status():
                counts[status.value] = counts.get(status.value, 0) + 1
            for status_name in ("alive", "suspect", "dead", "left"):
                members.add_metric([node.name, status_name], counts.get(status_name, 0))
            yield members
        if node.election.enabled:
            leader = node.election.leader
            yield gauge("term", "The current election term", node.election.term)
            yield gauge("is_leader", "1 if this node is the leader", int(node.election.is_leader))
            known = GaugeMetricFamily(
                f"{_PREFIX}_leader",
                "1 for the leader this node knows (none: no sample)",
                labels=["node", "leader"],
            )
            leader_name = getattr(leader, "name", None)
            if leader_name is not None:
                known.add_metric([node.name, leader_name], 1)
            yield known

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


async def serve_metrics(
    node: Node,
    port: int,
    host: str = "0.0.0.0",
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``node``'s metrics at ``http://host:port/metrics`` until cancelled.

    Reports the port actually bound through ``task_status`` (``port=0``
    picks a free one: ``port = await task_group.start(serve_metrics, node, 0)``).
    A request that does not arrive within ``REQUEST_TIMEOUT`` seconds or is
    larger than ``MAX_REQUEST_BYTES`` is closed unanswered.
    """
    metrics = NodeMetrics(node)
    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener, anyio.create_task_group() as task_group:
            task_group.start_soon(_sample, metrics)
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(bound)
            await listener.serve(lambda stream: _answer(metrics, stream))
    finally:
        metrics.close()


async def _sample(metrics: NodeMetrics) -> None:
    while True:
        metrics.sample()
        await anyio.sleep(SAMPLE_INTERVAL)


async def _answer(metrics: NodeMetrics, stream: anyio.abc.SocketStream) -> None:
    async with stream:
        head = b""
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in head and b"\n\n" not in head:
                    head += await stream.receive(4096)
                    if len(head) > MAX_REQUEST_BYTES:
                        return
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        parts = head.split(b"\r\n", 1)[0].split()
        path = parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""
        if len(parts) >= 2 and parts[0] == b"GET" and path in (b"/metrics", b"/"):
            body, status = metrics.exposition(), b"200 OK"
            kind = b"text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, kind = b"not found\n", b"404 Not Found", b"text/plain"
        response = (
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + kind
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        try:
            await stream.send(response)
        except (anyio.BrokenResourceError, OSError):
            logger.debug("a metrics client went away before its answer")
