"""Several OS processes join one seed at the same moment, stay a while and
leave gracefully; each prints every node event it sees.

``python join_storm.py seed PORT JOINERS``: runs ``seed@127.0.0.1`` on PORT,
prints ``READY``, then ``EVENT up|down NAME REASON`` lines until it saw
JOINERS node-downs (or 60 s passed), then ``DONE`` and leaves.

``python join_storm.py join NAME SEED_PORT HOLD``: prints ``STARTED`` once
its imports are done, reads the wall-clock time GO_AT from a line of its
standard input (the test sends it when every joiner has started, so that
they join together without guessing how long an interpreter takes to
start), waits until then, joins the seed, prints its own events for HOLD
seconds, then leaves its block (a graceful stop).
"""

from __future__ import annotations

import signal
import sys
import time

import trio

import trio_distribute as td

COOKIE = "join-storm"


async def print_events(node: td.Node, stop_after_downs: int | None = None) -> None:
    downs = 0
    async with node.monitor_nodes() as events:
        async for event in events:
            if isinstance(event, td.NodeUp):
                print(f"EVENT up {event.node} -", flush=True)
            else:
                print(f"EVENT down {event.node} {event.reason}", flush=True)
                downs += 1
                if stop_after_downs is not None and downs >= stop_after_downs:
                    return


async def seed(port: int, joiners: int) -> None:
    async with td.open_node(
        "seed@127.0.0.1", cookie=COOKIE, port=port, config=td.NodeConfig.local()
    ) as node:
        print("READY", flush=True)
        with trio.move_on_after(60):
            await print_events(node, joiners)
        print("DONE", flush=True)


async def join(name: str, seed_port: int, hold: float) -> None:
    print("STARTED", flush=True)
    go_at = float(await trio.to_thread.run_sync(sys.stdin.readline))
    await trio.sleep(max(0.0, go_at - time.time()))
    async with td.open_node(
        name,
        cookie=COOKIE,
        config=td.NodeConfig.local(),
        seeds=[f"127.0.0.1:{seed_port}"],
    ) as node:
        with trio.move_on_after(hold):
            await print_events(node)


if __name__ == "__main__":
    # Start as a program started from a terminal would, whatever started us
    # (a test runner may ignore or block SIGINT, and children inherit both):
    # Ctrl-C raises KeyboardInterrupt.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.argv[1] == "seed":
        trio.run(seed, int(sys.argv[2]), int(sys.argv[3]))
    else:
        trio.run(join, sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
