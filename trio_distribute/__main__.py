"""Command line: ``python -m trio_distribute demo | node ... | status ... | cookie``."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

import attrs
import trio

from . import _demo
from ._cookie import generate_cookie
from ._ids import validate_node_name
from .config import ElectionConfig, MembershipConfig, NodeConfig
from .election.raft_lite import Leader, LeaderChanged
from .errors import DistributionError
from .node import Node, open_node


async def _run_node(
    name: str, port: int, cookie: str, join: Sequence[str], local: bool, expect: int | None
) -> None:
    config = NodeConfig.local() if local else NodeConfig()
    if expect is not None:
        config = attrs.evolve(
            config, election=attrs.evolve(config.election, bootstrap_expect=expect)
        )
    # Seeds are retried (backoff with jitter) until one answers, so nodes
    # may be started in any order.
    async with open_node(name, cookie=cookie, port=port, config=config, seeds=join) as node:
        print(f"{node.name} listening on {node.address[0]}:{node.address[1]}", flush=True)
        async with node.monitor_nodes() as events, trio.open_nursery() as nursery:
            if node.membership.enabled:
                nursery.start_soon(_print_membership, node)
            async for event in events:
                print(f"{event}", flush=True)


async def _print_membership(node: Node) -> None:
    async with node.membership.subscribe() as events, node.election.subscribe() as changes:
        async with trio.open_nursery() as nursery:

            async def leaders() -> None:
                # Joining (inside open_node) may already have found a leader:
                # print it, then every change after the subscription.
                current = node.election.leader
                if isinstance(current, Leader):
                    print(f"{LeaderChanged(current.term, current.name)}", flush=True)
                async for change in changes:
                    print(f"{change}", flush=True)

            if node.election.enabled:
                nursery.start_soon(leaders)
            async for event in events:
                print(f"{event}", flush=True)


async def _status(target: str, cookie: str, timeout: float) -> int:
    # A throwaway node that takes no part in membership or elections.
    config = NodeConfig(
        membership=MembershipConfig(enabled=False),
        election=ElectionConfig(enabled=False),
        handshake_timeout=timeout,
    )
    name = f"status-{secrets.token_hex(3)}@127.0.0.1"
    async with open_node(name, cookie=cookie, config=config) as node:
        peer = await node.connect(target)
        report = await node.rpc.call(peer, "trio_distribute.status", timeout=timeout)
    print(f"node {report['node']}: connected to {', '.join(report['connections']) or 'nobody'}")
    health = report["health"]
    print(
        f"leader {health['leader'] or '-'} (term {health['term']}), quorum {health['has_quorum']},"
        f" healthy {health['healthy']}, local health multiplier {health['health_multiplier']}"
    )
    print(
        f"members: {health['alive']} alive, {health['suspect']} suspect,"
        f" {health['dead']} dead, {health['left']} left"
    )
    if "members" in report:
        print(f"  {'name':<28}{'status':<9}{'inc':>5}{'rtt':>11}  connected")
        for member in report["members"]:
            rtt = "-" if member["rtt"] is None else f"{member['rtt'] * 1e6:.0f} us"
            mark = " (leader)" if member["name"] == health["leader"] else ""
            print(
                f"  {member['name']:<28}{member['status']:<9}{member['incarnation']:>5}"
                f"{rtt:>11}  {member['connected']}{mark}"
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trio_distribute`` and ``trio-distribute``."""
    parser = argparse.ArgumentParser(prog="python -m trio_distribute")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a small local cluster and narrate it")
    demo.add_argument("--nodes", type=int, default=3, help="how many nodes (2-9)")
    node = commands.add_parser("node", help="run one node until interrupted")
    node.add_argument("--name", required=True, help="node name, e.g. a@127.0.0.1")
    node.add_argument("--port", type=int, default=0)
    node.add_argument("--cookie", required=True)
    node.add_argument(
        "--join",
        action="append",
        default=[],
        help="name@host:port or host:port of a seed (repeatable; retried until one answers)",
    )
    node.add_argument(
        "--expect",
        type=int,
        default=None,
        help="bootstrap_expect: members to know before electing (default: ElectionConfig's)",
    )
    node.add_argument("--local", action="store_true", help="fast timers (NodeConfig.local())")
    status = commands.add_parser("status", help="show a running node's members, leader, health")
    status.add_argument("--node", required=True, help="host:port or name@host:port of the node")
    status.add_argument("--cookie", required=True)
    status.add_argument("--timeout", type=float, default=5.0)
    cookie = commands.add_parser("cookie", help="print a fresh random cookie (256 bits)")
    cookie.add_argument(
        "--urlsafe",
        action="store_true",
        help="43 URL-safe base64 characters instead of 64 hex digits",
    )
    args = parser.parse_args(argv)
    if args.command == "cookie":
        print(generate_cookie("urlsafe" if args.urlsafe else "hex"))
        return 0
    try:
        if args.command == "demo":
            if not 2 <= args.nodes <= 9:
                parser.error("--nodes must be between 2 and 9")
            trio.run(_demo.run, args.nodes)
        elif args.command == "status":
            return trio.run(_status, args.node, args.cookie, args.timeout)
        else:
            validate_node_name(args.name)
            if args.expect is not None and args.expect < 1:
                parser.error("--expect must be at least 1")
            trio.run(
                _run_node, args.name, args.port, args.cookie, args.join, args.local, args.expect
            )
    except (ValueError, DistributionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
