"""Testing a service built on trio_distribute, in virtual time.

The service: the elected leader appends an entry to a ledger every second,
stamped with its term (the fencing token a real consumer would check). The
question a test answers: *what does my service do when the leader's node is
cut off for 30 seconds?* Three nodes run in memory on a FakeNetwork; a
MockClock jumps over every wait, so the 30-second cut takes a fraction of
a second of wall time and the run repeats exactly.

Run it (with trio_distribute installed, its pytest plugin supplies the
``td_cluster`` and ``fake_network`` fixtures)::

    pytest examples/test_my_service.py

From a source checkout, load the plugin by hand::

    PYTHONPATH=. pytest -p trio_distribute.testing.pytest_plugin examples/test_my_service.py
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import trio_distribute as td
from trio_distribute.testing import FakeNetwork, virtual_time, wait_until
from trio_distribute.testing.pytest_plugin import ClusterFactory

Entry = tuple[int, str, float]  # (term, leader, time)


async def ledger_service(node: td.Node, ledger: list[Entry]) -> None:
    """My service: while this node leads, record one entry a second."""
    while True:
        leader = node.election.leader
        if isinstance(leader, td.Leader) and leader.name == node.name:
            ledger.append((leader.term, node.name, anyio.current_time()))
        await anyio.sleep(1)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # trio with a MockClock: time passes only when every task waits.
    return virtual_time()


async def test_the_ledger_survives_a_30s_cut_of_the_leader(
    td_cluster: ClusterFactory, fake_network: FakeNetwork
) -> None:
    ledger: list[Entry] = []
    async with td_cluster(3) as nodes, anyio.create_task_group() as services:
        for node in nodes:
            services.start_soon(ledger_service, node, ledger)
        await wait_until(lambda: isinstance(nodes[0].election.leader, td.Leader))
        old = nodes[0].election.leader
        assert isinstance(old, td.Leader)
        old_leader = old.name
        await anyio.sleep(5)

        # Cut the leader's node off from the others for 30 seconds.
        cut_at = anyio.current_time()
        fake_network.isolate(old_leader)
        await anyio.sleep(30)
        fake_network.heal()
        await anyio.sleep(10)
        services.cancel_scope.cancel()

    during = [entry for entry in ledger if cut_at + 5 < entry[2] < cut_at + 30]
    # The majority side elected a new leader and the service kept going...
    assert during and all(name != old_leader for _, name, _ in during)
    # ...the old leader stopped writing once it lost its quorum...
    assert not [e for e in ledger if e[1] == old_leader and e[2] > cut_at + 5]
    # ...and no term ever had two writers (the fencing token holds).
    writers: dict[int, set[str]] = {}
    for term, name, _ in ledger:
        writers.setdefault(term, set()).add(name)
    assert all(len(names) == 1 for names in writers.values())
    # Terms never go backwards in the ledger.
    terms = [term for term, _, _ in ledger]
    assert terms == sorted(terms)
