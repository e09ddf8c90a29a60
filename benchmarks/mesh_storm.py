"""The join storm of a full mesh in virtual time: protocol work, not load.

Usage, from the repository root::

    python -m benchmarks.mesh_storm --nodes 100
    python -m benchmarks.mesh_storm --nodes 100 --td-path /tmp/base-worktree

``--nodes`` nodes (memberlist's LAN timers, the default ``NodeConfig``,
full mesh, election on) start at the same virtual instant on
:class:`~trio_distribute.testing.FakeNetwork` under trio's ``MockClock``;
node ``i`` joins through node ``i mod 3`` (the first ones through node 0),
as in ``benchmarks/cluster_scale.py``. Every task runs as soon as it can and
costs no virtual time, so what is reported is what the protocol does, free
of the machine's load (trio's scheduler is seeded, so a run repeats):

* **virtual seconds** until every node sees every member alive and until
  every node is connected to every other (the protocol's own latency: the
  floor of what a real run can reach);
* **handshakes**: streams dialled (every outgoing handshake starts with
  one), and the handshakes that failed, timed out or were refused, from
  the nodes' drop counters;
* **CPU seconds** the process spent until the full mesh (the work a real
  machine must find room for: on two cores, 10 CPU seconds cannot take
  less than 5 s of wall time);
* the most outgoing dials any one node had in flight at once;
* how long CPython's cyclic garbage collector paused the process until then
  (``gc_s``, of which full collections ``gc_full_s``; ``BENCH_GC=held`` or
  ``off`` changes the collector's setting: ``benchmarks/_gc.py``).

Prints one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

PORT = 4369


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--limit", type=float, default=120.0, help="virtual seconds to wait")
    parser.add_argument("--td-path", default="")
    parser.add_argument("--profile", default="")
    parser.add_argument(
        "--real",
        action="store_true",
        help="real loopback sockets in real time (one process; node i on 127.0.1.i+1)",
    )
    args = parser.parse_args(argv)
    if args.td_path:
        sys.path.insert(0, args.td_path)
    import trio
    import trio.testing

    from ._gc import apply_policy_from_environment

    apply_policy_from_environment()

    if args.real:
        result = trio.run(_run, args)
    else:
        # One order of the tasks trio finds ready together, so that a run
        # repeats (as the tests' do; a base checkout may predate the helper).
        from trio_distribute import testing

        seed_scheduler = getattr(testing, "seed_scheduler", None)
        if seed_scheduler is not None:
            seed_scheduler(1)
        result = trio.run(_run, args, clock=trio.testing.MockClock(autojump_threshold=0))
    print(json.dumps(result))
    return 0 if result["mesh_s"] is not None else 1


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    import trio_distribute as td
    from trio_distribute.testing import FakeNetwork, start_node

    from ._gc import GcPauses

    n = args.nodes
    net: Any = FakeNetwork(seed=1)
    port = PORT

    host: Callable[[int], str] = "h{}".format
    if args.real:
        from trio_distribute._network import REAL_NETWORK

        from .cluster_scale import _free_port, node_host

        net, host = REAL_NETWORK, node_host
        port = _free_port([node_host(i) for i in range(n)])
    config = td.NodeConfig()
    in_flight: dict[int, int] = {}
    most = [0]
    dialled = [0]

    class CountingDials:
        def __init__(self, inner: Any, index: int) -> None:
            self.inner = inner
            self.index = index

        async def dial(self, host: str, port: int, *, local_host: str) -> Any:
            dialled[0] += 1
            in_flight[self.index] = in_flight.get(self.index, 0) + 1
            most[0] = max(most[0], in_flight[self.index])
            try:
                return await self.inner.dial(host, port, local_host=local_host)
            finally:
                in_flight[self.index] -= 1

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    class CountingNetwork:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.index = 0

        def attach(self, name: str) -> Any:
            return CountingDials(self.inner.attach(name), int(name.split("@")[0][1:]))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    counting: Any = CountingNetwork(net)
    from trio_distribute._cookie import cookie_keys

    cookie_keys(b"storm")  # once per process, not part of the storm
    pauses = GcPauses()
    pauses.start()
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    nodes: list[Any] = [None] * n
    async with anyio.create_task_group() as tg:
        t0 = anyio.current_time()

        async def start(i: int) -> None:
            through = i % args.seeds if i >= args.seeds else 0
            seeds = [] if i == 0 else [f"{host(through)}:{port}"]
            node = await start_node(
                tg,
                f"n{i}@{host(i)}",
                cookie="storm",
                config=config,
                seeds=seeds,
                port=port,
                network=counting,
            )
            nodes[i] = node

        async with anyio.create_task_group() as starting:
            for i in range(n):
                starting.start_soon(start, i)
        members_at = mesh_at = None
        while anyio.current_time() - t0 < args.limit:
            if members_at is None and all(x.membership.core.alive_count() == n for x in nodes):
                members_at = anyio.current_time() - t0
            if all(len(x.transport.connections) == n - 1 for x in nodes):
                mesh_at = anyio.current_time() - t0
                break
            await anyio.sleep(0.01)
        cpu = time.process_time() - cpu0
        pauses.stop()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        drops: dict[str, int] = {}
        for x in nodes:
            for cause, count in x.statistics().drops.items():
                drops[cause] = drops.get(cause, 0) + count
        result = {
            "nodes": n,
            "members_s": members_at,
            "mesh_s": mesh_at,
            "cpu_s": round(cpu, 2),
            **pauses.summary(),
            "wall_s": round(time.monotonic() - wall0, 2),
            "dials": dialled[0],
            "most_dials_in_flight_per_node": most[0],
            "connections": sum(len(x.transport.connections) for x in nodes),
            "drops": drops,
        }
        tg.cancel_scope.cancel()
    return result


if __name__ == "__main__":
    sys.exit(main())
