"""Helpers shared by the process-level tests (links, call/reply): a fast
in-process cluster (on the test's FakeNetwork when the module uses
tests/virtual.py) and conditions for ``wait_until``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from virtual import open_cluster

import trio_distribute as td

COOKIE = "trio-distribute-test"
FAST = td.NodeConfig.local()


def drops_at(node: td.Node, cause: str, n: int) -> Callable[[], bool]:
    return lambda: node.statistics().drops.get(cause) == n


def ended(node: td.Node, pid: td.Pid) -> Callable[[], bool]:
    return lambda: node._processes.lookup(pid) is None


def cluster(
    *names: str, config: td.NodeConfig = FAST
) -> AbstractAsyncContextManager[list[td.Node]]:
    return open_cluster(names, cookie=COOKIE, config=config)
