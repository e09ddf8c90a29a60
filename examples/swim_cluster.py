"""SWIM membership across OS processes: converge, SIGKILL one, declare it
dead, restart it, see it alive again with a new incarnation.

Run the whole story (three child processes, orchestrated from this one)::

    python examples/swim_cluster.py            # or: ... both [base_port]

or run members yourself, in separate terminals::

    python examples/swim_cluster.py node n0 4380
    python examples/swim_cluster.py node n1 4381 4380     # joins through n0
    python examples/swim_cluster.py node n2 4382 4380

A member prints one line per membership event (``UP``, ``SUSPECT``,
``DEAD``, ``LEFT`` with the member and its incarnation) and ``MEMBERS``
with its full table whenever it changes.
"""

from __future__ import annotations

import sys
import time

import trio
from _children import Child

import trio_distribute as td

COOKIE = "swim-example"
HOST = "127.0.0.1"
BASE_PORT = 4380
KINDS: dict[type, str] = {
    td.MemberUp: "UP",
    td.MemberSuspect: "SUSPECT",
    td.MemberDown: "DEAD",
    td.MemberLeft: "LEFT",
}


def node_name(short: str) -> str:
    return f"{short}@{HOST}"


async def member(short: str, port: int, seed_port: int | None) -> None:
    seeds = [f"{HOST}:{seed_port}"] if seed_port else []
    config = td.NodeConfig.local()
    async with (
        td.open_node(node_name(short), cookie=COOKIE, port=port, config=config) as node,
        node.membership.subscribe() as events,
    ):
        if seeds:
            with trio.fail_after(10):
                while True:
                    try:
                        await node.membership.join(seeds)
                        break
                    except td.ConnectError:
                        await trio.sleep(0.1)  # the seed may still be starting
        print(f"READY {node.name} incarnation {node.membership.core.incarnation}", flush=True)
        last_table = ""
        while True:
            with trio.move_on_after(0.2):
                event = await events.receive()
                kind = KINDS[type(event)]
                print(f"{kind} {event.name} incarnation {event.incarnation}", flush=True)
            table = " ".join(
                f"{name}={status.value}/{incarnation}"
                for name, status, incarnation in node.membership.members_with_status()
            )
            if table != last_table:
                print(f"MEMBERS {table}", flush=True)
                last_table = table


def orchestrate(base_port: int) -> None:
    shorts = ["n0", "n1", "n2"]
    ports = dict(zip(shorts, range(base_port, base_port + 3), strict=True))
    children = {
        short: Child(__file__, short, ports[short], None if short == "n0" else ports["n0"])
        for short in shorts
    }
    try:
        everyone = {node_name(s): "alive" for s in shorts}
        for child in children.values():
            child.wait_table(everyone)
        print("[main] 3 processes converged: everyone sees everyone alive", flush=True)
        victim = children["n2"]
        started = time.monotonic()
        victim.process.kill()  # SIGKILL: no goodbye
        victim.process.wait(timeout=10)
        print("[main] SIGKILLed n2", flush=True)
        for short in ("n0", "n1"):
            line = children[short].wait_for(f"DEAD {node_name('n2')}")
            print(f"[main] {short} declared n2 dead ({line})", flush=True)
        bound = td.NodeConfig.local().membership.dead_bound(3)
        elapsed = time.monotonic() - started
        print(f"[main] detected in {elapsed:.2f}s (predicted worst case {bound:.2f}s)", flush=True)
        old = children["n0"].seen
        old_incarnation = max(
            int(line.split()[-1]) for line in old if line.startswith(f"UP {node_name('n2')}")
        )
        children["n2"] = Child(__file__, "n2", ports["n2"], ports["n0"])
        for short in ("n0", "n1"):
            line = children[short].wait_for(f"UP {node_name('n2')}")
            incarnation = int(line.split()[-1])
            assert incarnation > old_incarnation, (incarnation, old_incarnation)
            print(
                f"[main] {short} sees n2 alive again with incarnation {incarnation}"
                f" (was {old_incarnation})",
                flush=True,
            )
        children["n2"].wait_table(everyone)
        print("[main] the restarted n2 sees everyone alive; done", flush=True)
    finally:
        for child in children.values():
            child.stop()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    if mode == "node":
        short, port = sys.argv[2], int(sys.argv[3])
        seed_port = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "0" else None
        trio.run(member, short, port, seed_port)
    elif mode == "both":
        orchestrate(int(sys.argv[2]) if len(sys.argv) > 2 else BASE_PORT)
    else:
        sys.exit(f"usage: {sys.argv[0]} [both [base_port] | node SHORT PORT [SEED_PORT]]")


if __name__ == "__main__":
    main()
