"""``open_cluster``: several connected nodes in one process, for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.abc

from .._network import Network
from ..config import ElectionConfig, NodeConfig
from ..node import Node, crash, open_node

__all__ = ["crash", "open_cluster", "partition", "start_node", "wait_until"]


@asynccontextmanager
async def open_cluster(
    n: int | Sequence[str],
    *,
    cookie: str = "trio-distribute-test",
    config: NodeConfig | None = None,
    host: str = "127.0.0.1",
    connect: bool = True,
    network: Network | None = None,
) -> AsyncIterator[list[Node]]:
    """Start nodes on loopback and connect every pair (a full mesh).

    Args:
        n: how many nodes (named ``a``, ``b``, ... ``@host``), or their short
            names.
        cookie: the cookie they share.
        config: defaults to :meth:`~trio_distribute.NodeConfig.local`, fast timers, with
            ``bootstrap_expect`` set to the number of nodes.
        host: where they listen.
        connect: ``False`` starts them unconnected.
        network: a :class:`~trio_distribute.testing.FakeNetwork` to run them on (default: loopback).

    Yields the nodes in order; leaving the block stops them in reverse order.
    """
    names = [chr(ord("a") + i) for i in range(n)] if isinstance(n, int) else list(n)
    if isinstance(n, int) and not 1 <= n <= 26:
        raise ValueError("open_cluster(n) names nodes a..z: n must be 1..26")
    if config is None:
        # They are started together: all of them form the cluster.
        config = NodeConfig.local(election=ElectionConfig.local(bootstrap_expect=len(names)))
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                open_node(f"{name}@{host}", cookie=cookie, config=config, network=network)
            )
            for name in names
        ]
        if connect:
            for i, node in enumerate(nodes):
                for other in nodes[i + 1 :]:
                    await node.connect(f"{other.name}:{other.address[1]}")
        yield nodes


async def start_node(
    task_group: anyio.abc.TaskGroup,
    name: str,
    *,
    cookie: str = "trio-distribute-test",
    config: NodeConfig | None = None,
    seeds: Sequence[str] = (),
    port: int = 0,
    network: Network | None = None,
) -> Node:
    """Run a node in a task of its own in ``task_group`` and return it once
    it is up (``config`` defaults to :meth:`~trio_distribute.NodeConfig.local`). Such a node
    can be :func:`crash`-ed without cancelling the test itself; cancelling
    ``task_group`` stops it. ``network``: a
    :class:`~trio_distribute.testing.FakeNetwork` to run it on."""
    node: Node = await task_group.start(
        _run_node,
        name,
        cookie,
        NodeConfig.local() if config is None else config,
        seeds,
        port,
        network,
    )
    return node


async def _run_node(
    name: str,
    cookie: str,
    config: NodeConfig,
    seeds: Sequence[str],
    port: int,
    network: Network | None,
    *,
    task_status: anyio.abc.TaskStatus[Node] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with open_node(
        name, cookie=cookie, config=config, seeds=seeds, port=port, network=network
    ) as node:
        task_status.started(node)
        await anyio.sleep_forever()


@asynccontextmanager
async def partition(*groups: Sequence[Node]) -> AsyncIterator[None]:
    """Cut the nodes of each group off from the other groups until the
    block ends: connections between groups are closed (``connection_closed``)
    and refused, and membership datagrams between them are dropped (an
    in-process stand-in for firewall rules). Leaving the block lifts the
    cut and the cluster heals by itself: with ``connect_all`` each node
    redials the live members it lost (capped backoff), and members declared
    dead during a longer cut are merged back by membership, so the full
    mesh returns within about ``redial_max_interval`` of the heal after a
    short cut (under 2 s with ``NodeConfig.local()`` after any cut)."""
    pairs = [
        (x, y)
        for index, group in enumerate(groups)
        for other in groups[index + 1 :]
        for x in group
        for y in other
    ]
    for x, y in pairs:
        await x.transport.block(y.name)
        await y.transport.block(x.name)
    try:
        yield
    finally:
        for x, y in pairs:
            x.transport.unblock(y.name)
            y.transport.unblock(x.name)


async def wait_until(condition: Callable[[], bool], *, poll: float = 0.01) -> None:
    """Wait until ``condition()`` is true, checking every ``poll`` seconds.

    For eventually consistent state (registry and group replicas, node
    lists after a disconnect). It never gives up by itself: bound it with
    ``fail_after``.
    """
    # Polling is the point: replicas change on frames from other nodes and
    # have no event to wait on.
    while not condition():  # noqa: ASYNC110
        await anyio.sleep(poll)
