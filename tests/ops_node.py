"""One node as an OS process, for the operations tests (discovery, metrics,
rolling restart): ``python tests/ops_node.py --name n1@127.0.0.1 --port P
--seed file:PATH [--seed dns:NAME:PORT] --expect 5 --state-dir DIR
[--metrics-port M] --cookie C``.

It runs a supervised process registered under the global name
``svc-<short name>`` (a supervisor child with ``global_name``), exports
``ops.names`` and ``ops.creation`` for the test driver, prints ``READY``,
and one ``LEADER <unix time> <term> <leader|->`` line per leader change it
sees. SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any

import trio

import trio_distribute as td
from trio_distribute.config import ElectionConfig


def say(line: str) -> None:
    print(line, flush=True)


async def holder(proc: td.Process) -> None:
    async for _ in proc:
        pass


async def run(args: argparse.Namespace) -> None:
    config = td.NodeConfig.local(
        election=ElectionConfig.local(bootstrap_expect=args.expect),
        state_dir=None if args.state_dir is None else Path(args.state_dir),
    )
    short = args.name.partition("@")[0]
    async with trio.open_nursery() as nursery:
        async with td.open_node(
            args.name, cookie=args.cookie, port=args.port, config=config, seeds=args.seed
        ) as node:

            def names() -> dict[str, list[Any]]:
                found = {}
                for name in node.registry.names():
                    pid = node.registry.whereis(name)
                    if pid is not None:
                        found[name] = [pid.node, pid.creation]
                return found

            node.rpc.export(names, name="ops.names")
            node.rpc.export(lambda: node.creation, name="ops.creation")
            nursery.start_soon(watch_leader, node)
            if args.metrics_port is not None:
                from trio_distribute.metrics import serve_metrics

                await nursery.start(serve_metrics, node, args.metrics_port, "127.0.0.1")
            async with td.open_supervisor(node, "one_for_one") as supervisor:
                spec = td.ChildSpec("svc", holder, global_name=f"svc-{short}")
                while True:
                    try:
                        await supervisor.start_child(spec)
                        break
                    except td.NameTakenError:
                        # The previous run's registration is still being cleared.
                        await trio.sleep(0.1)
                say(f"READY {node.name} {node.creation}")
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        break
            nursery.cancel_scope.cancel()


async def watch_leader(node: td.Node) -> None:
    async with node.election.subscribe() as changes:
        current = node.election.leader
        if isinstance(current, td.Leader):
            say(f"LEADER {time.time():.4f} {current.term} {current.name}")
        async for change in changes:
            say(f"LEADER {time.time():.4f} {change.term} {change.leader or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--expect", type=int, default=5)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--metrics-port", type=int, default=None)
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
