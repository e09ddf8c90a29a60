"""A partition and packet loss made by the kernel, not by the library.

Run by ``tests/test_netns.py`` inside a private network namespace
(``unshare -n``): five nodes on 127.0.0.1-5, then ``nft`` rules that drop
every packet between {n1, n2} and {n3, n4, n5}, then none, then 10 % of all
UDP datagrams. Prints one ``CHECK`` line per verified property and exits
non-zero at the first one that fails.
"""

from __future__ import annotations

import subprocess
import sys

import anyio
import trio
from netns_common import eventually, nft

import trio_distribute as td
from trio_distribute.testing import start_node

COOKIE = "netns-cookie"
HOSTS = [f"127.0.0.{i}" for i in range(1, 6)]
MINORITY, MAJORITY = HOSTS[:2], HOSTS[2:]


def check(label: str, condition: bool) -> None:
    print(f"CHECK {label}: {'ok' if condition else 'FAILED'}", flush=True)
    if not condition:
        sys.exit(1)


def leader_of(nodes: list[td.Node]) -> td.Leader | None:
    views = [node.election.leader for node in nodes]
    first = views[0]
    return first if isinstance(first, td.Leader) and all(v == first for v in views) else None


async def main() -> None:
    # Set-up before any node exists: nothing else runs yet, blocking is fine.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # noqa: ASYNC221
    nft("add table inet td", "add chain inet td input { type filter hook input priority 0 ; }")
    # All five form the cluster, so each side's majority is counted against five.
    config = td.NodeConfig.local(election=td.ElectionConfig.local(bootstrap_expect=len(HOSTS)))
    async with anyio.create_task_group() as nursery:
        nodes: list[td.Node] = []
        for index, host in enumerate(HOSTS):
            seeds = [] if index == 0 else [f"{HOSTS[0]}:{nodes[0].address[1]}"]
            name = f"n{index + 1}@{host}"
            nodes.append(await start_node(nursery, name, cookie=COOKIE, config=config, seeds=seeds))
        by_host = dict(zip(HOSTS, nodes, strict=True))
        minority = [by_host[h] for h in MINORITY]
        majority = [by_host[h] for h in MAJORITY]

        everyone = sorted(n.name for n in nodes)
        converged = await eventually(
            lambda: all(n.membership.alive() == everyone for n in nodes), 10
        )
        check("five nodes converge", converged)
        check("one leader", await eventually(lambda: leader_of(nodes) is not None, 10))
        before = leader_of(nodes)
        assert before is not None

        # The kernel drops everything between the two sides, both ways.
        rules = [
            f"add rule inet td input ip saddr {a} ip daddr {b} drop"
            for x, y in ((MINORITY, MAJORITY), (MAJORITY, MINORITY))
            for a in x
            for b in y
        ]
        nft(*rules)

        def sides_see_each_other_dead() -> bool:
            dead = td.MemberStatus.DEAD
            return all(
                node.membership.member(other.name).status is dead  # type: ignore[union-attr]
                for group, others in ((minority, majority), (majority, minority))
                for node in group
                for other in others
            )

        bound = config.membership.dead_bound(5) * 2 + 2
        check(
            "each side declares the other dead", await eventually(sides_see_each_other_dead, bound)
        )

        def majority_leads() -> bool:
            current = leader_of(majority)
            return current is not None and current.term >= before.term

        check("the majority side has a leader", await eventually(majority_leads, 10))
        await trio.sleep(4 * config.election.election_timeout)
        check("the minority side has none", all(not n.election.is_leader for n in minority))
        check(
            "the minority knows no leader",
            all(n.election.leader == td.NoLeader() for n in minority),
        )

        nft("flush chain inet td input")  # heal: nobody acts, membership merges
        healed = await eventually(lambda: all(n.membership.alive() == everyone for n in nodes), 30)
        check("healed: everyone alive everywhere again", healed)
        check("healed: one leader", await eventually(lambda: leader_of(nodes) is not None, 30))
        check(
            "healed: one node believes it leads",
            [n.election.is_leader for n in nodes].count(True) == 1,
        )

        # 10 % of UDP datagrams lost: probes fail now and then, suspicions
        # are refuted, nobody is declared dead.
        nft("add rule inet td input meta l4proto udp numgen random mod 100 < 10 drop")
        async with trio.open_nursery() as watchers:
            deaths: list[str] = []

            async def watch(node: td.Node) -> None:
                async with node.membership.subscribe() as events:
                    async for event in events:
                        if isinstance(event, td.MemberDown):
                            deaths.append(f"{node.name} saw {event.name} dead")

            for node in nodes:
                watchers.start_soon(watch, node)
            await trio.sleep(8)
            watchers.cancel_scope.cancel()
        check(f"10% UDP loss for 8 s: no false deaths ({deaths})", not deaths)
        nursery.cancel_scope.cancel()
    print("ALL CHECKS PASSED", flush=True)


if __name__ == "__main__":
    trio.run(main)
