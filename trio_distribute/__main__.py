"""Command line: ``python -m trio_distribute demo | node ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from . import _demo
from ._ids import validate_node_name
from .config import NodeConfig
from .node import open_node


async def _run_node(name: str, port: int, cookie: str, join: Sequence[str], local: bool) -> None:
    config = NodeConfig.local() if local else NodeConfig()
    async with open_node(name, cookie=cookie, port=port, config=config) as node:
        print(f"{node.name} listening on {node.address[0]}:{node.address[1]}", flush=True)
        async with node.monitor_nodes() as events:
            for target in join:
                peer = await node.connect(target)
                print(f"connected to {peer}", flush=True)
            async for event in events:
                print(f"{event}", flush=True)


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
    node.add_argument("--join", action="append", default=[], help="name@host:port to connect to")
    node.add_argument("--local", action="store_true", help="fast timers (NodeConfig.local())")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if not 2 <= args.nodes <= 9:
                parser.error("--nodes must be between 2 and 9")
            trio.run(_demo.run, args.nodes)
        else:
            validate_node_name(args.name)
            trio.run(_run_node, args.name, args.port, args.cookie, args.join, args.local)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
