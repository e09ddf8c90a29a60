"""Socket errors made by the kernel: a node whose own sends are refused.

Run by ``tests/test_netns.py`` inside a private network namespace
(``unshare -n``): three nodes on 127.0.0.1-3, then ``nft`` *output* rules on
n1 that ``drop`` its UDP to n2 and ``reject`` its UDP to n3 (``sendto``
fails with EPERM, as under a host firewall) and reject its TCP to both.
n1 must keep running (the errors counted, not raised), the mesh must come
back when the rules go, and every node must leave its block within the
shutdown bound. Prints one ``CHECK`` line per verified property and exits
non-zero at the first one that fails.
"""

from __future__ import annotations

import os
import subprocess
import time

import anyio
import anyio.abc
import trio
from netns_common import eventually, nft

import trio_distribute as td

COOKIE = "netns-cookie"
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def check(label: str, condition: bool) -> None:
    print(f"CHECK {label}: {'ok' if condition else 'FAILED'}", flush=True)
    if not condition:
        # A node that hangs on exit would hang this script too: leave now.
        os._exit(1)


class Runner:
    """One node in a cancel scope of its own; records how it ended."""

    def __init__(self) -> None:
        self.node: td.Node | None = None
        self.error: BaseException | None = None
        self.finished = trio.Event()
        self.scope = trio.CancelScope()

    async def run(
        self,
        name: str,
        config: td.NodeConfig,
        seeds: list[str],
        *,
        task_status: anyio.abc.TaskStatus[td.Node] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with self.scope:
                async with td.open_node(name, cookie=COOKIE, config=config, seeds=seeds) as node:
                    self.node = node
                    task_status.started(node)
                    await trio.sleep_forever()
        except Exception as exc:  # the node ended by itself: what this checks against
            self.error = exc
        finally:
            self.finished.set()


async def main() -> None:
    # Set-up before any node exists: nothing else runs yet, blocking is fine.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # noqa: ASYNC221
    nft("add table inet td", "add chain inet td output { type filter hook output priority 0 ; }")
    config = td.NodeConfig.local()
    async with trio.open_nursery() as nursery:
        runners = [Runner() for _ in HOSTS]
        nodes: list[td.Node] = []
        for index, (host, runner) in enumerate(zip(HOSTS, runners, strict=True)):
            seeds = [] if index == 0 else [f"{HOSTS[0]}:{nodes[0].address[1]}"]
            nodes.append(await nursery.start(runner.run, f"n{index + 1}@{host}", config, seeds))
        everyone = sorted(n.name for n in nodes)

        def full_mesh() -> bool:
            return all(sorted([*n.nodes(), n.name]) == everyone for n in nodes)

        check("three nodes form a full mesh", await eventually(full_mesh, 10))
        n1 = nodes[0]
        nft(
            "add rule inet td output ip saddr 127.0.0.1 ip daddr 127.0.0.2 meta l4proto udp drop",
            "add rule inet td output ip saddr 127.0.0.1 ip daddr 127.0.0.3 meta l4proto udp reject",
            "add rule inet td output ip saddr 127.0.0.1 ip daddr 127.0.0.2 meta l4proto tcp reject",
            "add rule inet td output ip saddr 127.0.0.1 ip daddr 127.0.0.3 meta l4proto tcp reject",
        )

        def refused() -> int:
            return n1.statistics().drops.get("membership_send_failed", 0)

        check("n1's refused sends are counted", await eventually(lambda: refused() >= 5, 10))
        await trio.sleep(3)  # several probe rounds and redials into the refusal
        check(f"n1 still runs ({runners[0].error!r})", not runners[0].finished.is_set())
        print(f"n1 drops: {dict(n1.statistics().drops)}", flush=True)

        nft("flush chain inet td output")
        started = time.monotonic()
        check("healed: full mesh again", await eventually(full_mesh, 30))
        print(f"mesh back {time.monotonic() - started:.2f}s after the rules went", flush=True)

        bound = config.shutdown_timeout + 3.0
        for name, runner in zip(everyone, runners, strict=True):
            started = time.monotonic()
            runner.scope.cancel()
            with trio.move_on_after(bound):
                await runner.finished.wait()
            took = time.monotonic() - started
            check(
                f"{name} left its block in {took:.2f}s (bound {bound}s)", runner.finished.is_set()
            )
            check(f"{name} ended by cancellation only ({runner.error!r})", runner.error is None)
    print("ALL CHECKS PASSED", flush=True)


if __name__ == "__main__":
    trio.run(main)
