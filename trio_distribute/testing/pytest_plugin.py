"""pytest fixtures for testing services built on trio_distribute.

Installed as a pytest plugin (entry point ``trio_distribute``), so a
project that depends on trio_distribute gets these fixtures without any
import:

* ``td_seed``: the seed of the run (``0``; override the fixture, or
  parametrize it, to change it).
* ``fake_network``: a fresh :class:`~trio_distribute.testing.FakeNetwork`
  seeded with ``td_seed``; it also seeds trio's scheduler, so a test under
  ``MockClock`` repeats exactly.
* ``td_cluster``: ``td_cluster(n, **options)`` is
  :func:`~trio_distribute.testing.open_cluster` on ``fake_network``.

For virtual time, run the tests on trio with a ``MockClock``: define
``anyio_backend`` as :func:`~trio_distribute.testing.virtual_time` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from ..node import Node
from ._cluster import open_cluster
from ._fake_network import FakeNetwork, seed_scheduler

__all__ = ["ClusterFactory", "fake_network", "td_cluster", "td_seed"]


class ClusterFactory:
    """``td_cluster(n, **options)``: nodes on the test's fake network."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network

    def __call__(
        self, n: int | Sequence[str], **options: Any
    ) -> AbstractAsyncContextManager[list[Node]]:
        return open_cluster(n, network=self.network, **options)


@pytest.fixture
def td_seed() -> int | str:
    """The seed of ``fake_network`` (override to change it)."""
    return 0


@pytest.fixture
def fake_network(td_seed: int | str) -> FakeNetwork:
    """A fresh in-memory network seeded with ``td_seed``."""
    seed_scheduler(td_seed)
    return FakeNetwork(seed=td_seed)


@pytest.fixture
def td_cluster(fake_network: FakeNetwork) -> ClusterFactory:
    """``async with td_cluster(3) as nodes:`` a full mesh on ``fake_network``."""
    return ClusterFactory(fake_network)
