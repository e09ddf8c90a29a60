"""Idle cost per node, measured in virtual time on FakeNetwork.

Usage, from the repository root::

    python -m benchmarks.cluster_idle --nodes 100 --seconds 60
    python -m benchmarks.cluster_idle --nodes 1000 --no-connect-all --no-election

``N`` nodes (memberlist's LAN timers, the default ``NodeConfig``) run in one
process on :class:`~trio_distribute.testing.FakeNetwork` under trio's
``MockClock``, which jumps to the next timer whenever every task waits. The
nodes join through ``n0``; once every node sees every member alive (and,
with ``connect_all``, is connected to every other, and with the election
knows a leader), the process's CPU time over ``--seconds`` virtual seconds
is divided by the nodes and those seconds. The result is the CPU the
package's own code spends per node per second of an idle cluster, without
the kernel's socket work and, unlike a run on real sockets, unaffected by
what else the machine runs. Task steps (trio's wake-ups) and membership
datagrams per node per second are counted over the same window.
``--td-path DIR`` measures the package found in ``DIR`` (another commit,
for before/after in one sitting); ``--profile FILE`` writes a cProfile of
the window.

Prints one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="virtual seconds measured")
    parser.add_argument("--connect-all", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--election", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--timers", choices=["lan", "local"], default="lan")
    parser.add_argument("--td-path", default="")
    parser.add_argument("--profile", default="")
    parser.add_argument("--limit", type=float, default=3600.0, help="virtual seconds to converge")
    args = parser.parse_args(argv)
    if args.td_path:
        sys.path.insert(0, args.td_path)
    import trio
    import trio.testing

    result = trio.run(_run, args, clock=trio.testing.MockClock(autojump_threshold=0))
    print(json.dumps(result))
    return 0 if result["converged_at"] is not None else 1


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import anyio
    import attrs
    import trio

    import trio_distribute as td
    from trio_distribute.testing import FakeNetwork, start_node

    steps = [0]

    class StepCounter(trio.abc.Instrument):
        def before_task_step(self, task: Any) -> None:
            steps[0] += 1

    trio.lowlevel.add_instrument(StepCounter())
    if args.timers == "local":
        config = td.NodeConfig.local(connect_all=args.connect_all)
    else:
        config = td.NodeConfig(connect_all=args.connect_all)
    config = attrs.evolve(
        config,
        election=attrs.evolve(config.election, enabled=args.election, bootstrap_expect=3),
    )
    net = FakeNetwork(seed=1)
    n = args.nodes
    counts = {"sent": 0, "received": 0}

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def sendto(self, data: bytes, host: str, port: int) -> None:
            counts["sent"] += 1
            await self.inner.sendto(data, host, port)

        async def receive(self) -> Any:
            item = await self.inner.receive()
            counts["received"] += 1
            return item

        async def __aenter__(self) -> Any:
            await self.inner.__aenter__()
            return self

        async def __aexit__(self, *exc: object) -> None:
            await self.inner.__aexit__(*exc)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    started_cpu = time.process_time()
    async with anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        first = await start_node(tg, "n0@127.0.0.1", cookie="idle-cost", config=config, network=net)
        seeds = [f"127.0.0.1:{first.address[1]}"]
        nodes = [first]
        for i in range(1, n):
            nodes.append(
                await start_node(
                    tg,
                    f"n{i}@127.0.0.1",
                    cookie="idle-cost",
                    config=config,
                    seeds=seeds,
                    network=net,
                )
            )
        for node in nodes:
            membership = node.membership
            membership._socket = Counting(membership._socket)

        def converged() -> bool:
            for node in nodes:
                if node.membership.core.alive_count() != n:
                    return False
                if args.connect_all and len(node.transport.connections) != n - 1:
                    return False
                if args.election and node.election.core.leader is None:
                    return False
            return True

        converged_at = None
        while anyio.current_time() - t0 < args.limit:
            if converged():
                converged_at = anyio.current_time() - t0
                break
            await anyio.sleep(0.5)
        startup_cpu = time.process_time() - started_cpu
        await anyio.sleep(5.0)  # let the join's last gossip drain
        suspicions_before = sum(x.membership.core.counters["suspicions_raised"] for x in nodes)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)  # CPU: the machine is shared
            profiler.enable()
        cpu0, steps0, virtual0 = time.process_time(), steps[0], anyio.current_time()
        sent0, received0 = counts["sent"], counts["received"]
        await anyio.sleep(args.seconds)
        cpu = time.process_time() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        virtual = anyio.current_time() - virtual0
        per = n * virtual
        suspicions = (
            sum(x.membership.core.counters["suspicions_raised"] for x in nodes) - suspicions_before
        )
        result = {
            "nodes": n,
            "connect_all": args.connect_all,
            "election": args.election,
            "timers": args.timers,
            "converged_at": converged_at,
            "startup_cpu_s": startup_cpu,
            "virtual_s": virtual,
            "cpu_pct_per_node": 100.0 * cpu / per,
            "task_steps_per_node_s": (steps[0] - steps0) / per,
            "datagrams_sent_per_node_s": (counts["sent"] - sent0) / per,
            "datagrams_received_per_node_s": (counts["received"] - received0) / per,
            "suspicions_raised_in_window": suspicions,
            "leaders": sorted({str(x.election.core.leader) for x in nodes})
            if args.election
            else [],
        }
        tg.cancel_scope.cancel()
    return result


if __name__ == "__main__":
    sys.exit(main())
