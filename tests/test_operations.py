"""Operations across OS processes: five nodes discover each other through
``file:`` and ``dns:`` (a node added later included), a metrics endpoint is
scraped, and a rolling restart keeps names and one leader per term.

Marked ``slow``: not in the default run; ``nox -s operations`` runs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ops_cluster import (
    NodeProcess,
    free_ports,
    namespaces_usable,
    open_cluster_processes,
    rolling_restart,
    sample,
    scrape,
    table,
)

pytestmark = pytest.mark.slow


def check_metrics(body: str, name: str) -> None:
    """Every family, with the values a converged cluster of five has."""
    assert sample(body, "trio_distribute_connections", node=name) >= 4
    assert sample(body, "trio_distribute_members", status="alive") == 5
    assert sample(body, "trio_distribute_members", status="dead") == 0
    for key in ("bytes_in", "bytes_out", "frames_in", "frames_out"):
        assert sample(body, f"trio_distribute_{key}_total", node=name) > 0
        assert sample(body, f"trio_distribute_peer_{key}_total", node=name) > 0
    assert sample(body, "trio_distribute_term", node=name) >= 1
    assert sample(body, "trio_distribute_leader", node=name) == 1
    assert sample(body, "trio_distribute_mailbox_depth_high_water", node=name) >= 0
    assert sample(body, "trio_distribute_events_total", event="MemberUp") >= 4
    assert "trio_distribute_drops_total" in body
    assert "trio_distribute_rpc_latency_seconds" in body


async def five_with_one_later(directory: Path, *, dns: bool) -> None:
    hosts = [f"127.0.0.{i}" for i in range(1, 6)] if dns else ["127.0.0.1"] * 5
    ports = free_ports(1) * 5 if dns else free_ports(5)
    metrics_port = free_ports(1)[0]
    hosts_file = directory / "hosts"
    seeds = directory / "seeds"

    def publish(count: int) -> None:
        if dns:
            # Rewritten in place: the nodes' /etc/hosts is bind-mounted from it.
            with hosts_file.open("w") as file:
                file.write("127.0.0.1 localhost\n")
                file.writelines(f"{h} td-nodes.test\n" for h in hosts[:count])
        else:
            seeds.write_text(
                "".join(f"{h}:{p}\n" for h, p in zip(hosts[:count], ports, strict=False))
            )

    publish(4)
    seed = f"dns:td-nodes.test:{ports[0]}" if dns else f"file:{seeds}"
    async with open_cluster_processes(directory) as cluster:
        nodes = [
            NodeProcess(
                f"n{i}@{host}",
                port,
                ["--seed", seed, "--expect", "3"],
                directory / f"n{i}.log",
                hosts_file=hosts_file if dns else None,
            )
            for i, (host, port) in enumerate(zip(hosts, ports, strict=True), 1)
        ]
        async with trio.open_nursery() as nursery:
            for node in nodes[:4]:
                nursery.start_soon(cluster.start, node)
        await cluster.wait_converged()
        # A node added later: published, then started; everyone finds it.
        publish(5)
        nodes[4].metrics_port = metrics_port
        await cluster.start(nodes[4])
        await cluster.wait_converged()
        check_metrics(await scrape(metrics_port), nodes[4].name)
        assert not cluster.two_leaders_in_a_term()


def test_five_processes_discover_each_other_through_a_file(tmp_path: Path) -> None:
    trio.run(lambda: five_with_one_later(tmp_path, dns=False))


def test_five_processes_discover_each_other_through_dns(tmp_path: Path) -> None:
    reason = namespaces_usable()
    if reason is not None:
        pytest.skip(reason)
    trio.run(lambda: five_with_one_later(tmp_path, dns=True))


def test_rolling_restart_keeps_names_and_one_leader_per_term(tmp_path: Path) -> None:
    rows = trio.run(rolling_restart, tmp_path)
    print()
    print(table(rows))
    assert [row.index for row in rows] == [1, 2, 3, 4, 5]
    assert sum(row.was_leader for row in rows) >= 1
    for row in rows:
        # Generous: a loaded machine; the table in the output has the values.
        assert row.leaderless < 30
