"""Helpers for testing code that uses trio_distribute (like ``trio.testing``)."""

from __future__ import annotations

from ._cluster import crash as crash
from ._cluster import open_cluster as open_cluster
from ._cluster import partition as partition
from ._cluster import start_node as start_node
from ._cluster import wait_until as wait_until
from ._fake_network import FakeNetwork as FakeNetwork
from ._fake_network import LinkConditions as LinkConditions
from ._fake_network import VirtualTimeEventLoop as VirtualTimeEventLoop
from ._fake_network import seed_scheduler as seed_scheduler
from ._fake_network import virtual_time as virtual_time

__all__ = [
    "FakeNetwork",
    "LinkConditions",
    "VirtualTimeEventLoop",
    "crash",
    "open_cluster",
    "partition",
    "seed_scheduler",
    "start_node",
    "virtual_time",
    "wait_until",
]
