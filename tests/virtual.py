"""Run a test module's nodes on a FakeNetwork in virtual time.

A module about logic (membership, election, registry, ...) imports the
fixtures and the node helpers from here instead of from
``trio_distribute.testing``::

    from virtual import anyio_backend, fake_network, open_cluster, open_node, start_node

Every async test then still runs twice, on trio and on asyncio, but both
under a virtual clock (trio's ``MockClock(autojump_threshold=0)``, the
asyncio ``VirtualTimeEventLoop``), and every node the helpers start lives
on the test's own seeded ``FakeNetwork``: timeouts, heartbeats and sleeps
cost no wall time, and time bounds are exact. A test that needs real
sockets (raw sockets, a hostile peer, TLS, another process) is marked
``@pytest.mark.real_network`` and runs on loopback in real time as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio.abc
import pytest
from hostile_peer import HostilePeer, hostile_peer

import trio_distribute as td
from trio_distribute._network import Network
from trio_distribute.testing import FakeNetwork, seed_scheduler, virtual_time
from trio_distribute.testing import open_cluster as _open_cluster
from trio_distribute.testing import start_node as _start_node

__all__ = [
    "anyio_backend",
    "fake_network",
    "hostile_member",
    "network",
    "open_cluster",
    "open_node",
    "start_node",
]

_current: FakeNetwork | None = None


def network() -> Network | None:
    """The network of the running test (``None``: real sockets)."""
    return _current


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, Any]]:
    backend: str = request.param
    if request.node.get_closest_marker("real_network") is not None:
        return backend
    return virtual_time(backend=backend)


@pytest.fixture(autouse=True)
def fake_network(request: pytest.FixtureRequest) -> Iterator[FakeNetwork | None]:
    """The test's network: a fresh ``FakeNetwork`` (seed 0), or ``None`` for
    a test marked ``real_network``."""
    global _current
    if request.node.get_closest_marker("real_network") is not None:
        _current = None
    else:
        seed_scheduler(0)
        _current = FakeNetwork(seed=0)
    try:
        yield _current
    finally:
        _current = None


def open_cluster(
    n: int | Sequence[str], **options: Any
) -> AbstractAsyncContextManager[list[td.Node]]:
    """:func:`trio_distribute.testing.open_cluster` on the test's network."""
    options.setdefault("network", _current)
    return _open_cluster(n, **options)


def open_node(name: str, **options: Any) -> AbstractAsyncContextManager[td.Node]:
    """:func:`trio_distribute.open_node` on the test's network."""
    options.setdefault("network", _current)
    return td.open_node(name, **options)


async def start_node(task_group: anyio.abc.TaskGroup, name: str, **options: Any) -> td.Node:
    """:func:`trio_distribute.testing.start_node` on the test's network."""
    options.setdefault("network", _current)
    return await _start_node(task_group, name, **options)


@asynccontextmanager
async def hostile_member(
    node: td.Node, *, name: str = "mallory@127.0.0.1", creation: int = 7
) -> AsyncIterator[HostilePeer]:
    """:func:`hostile_peer` to ``node`` on the test's network, as ``name``,
    once ``node`` counts it among its connected nodes."""
    from trio_distribute.testing import wait_until

    fake = network()
    attached = None if fake is None else fake.attach(name)
    async with hostile_peer(node.address, name=name, creation=creation, network=attached) as peer:
        await wait_until(lambda: name in node.nodes())
        yield peer
