"""How long one big frame holds the receiving node's event loop.

``python -m benchmarks.loop_lag`` starts a receiving node in this process
and a sending node in another OS process (so the sender's encoding does
not run on the loop being measured). The sender sends frames of about
16 MiB of the slowest kinds to decode per byte; a probe task on the
receiver sleeps 1 ms in a loop and records the longest gap between its
wake-ups, in CPU time of the receiving thread, while each frame arrives
and is decoded (CPU time, so that other processes on a busy machine do
not count as stalls). The same frames are then
sent again with slicing turned off (every frame decoded in one cbor2 call,
as before), in the same run, for comparison.

``--check`` exits 1 if any sliced frame let the loop stall for more than
``--bound`` ms (50 by default).
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
from typing import Any

import anyio

import trio_distribute as td
from trio_distribute import _connection

COOKIE = "loop-lag-8b3e5f1a9c7d2e4b6a0c8f3d1e5b7a9c"
# Encoding a 16 MiB structure holds the sender's loop for seconds, and the
# one-call decode does the same to the receiver: timers long enough that
# neither declares the other dead in the middle of the measurement.
CONFIG = td.NodeConfig(
    membership=td.MembershipConfig(probe_interval=20.0, probe_timeout=10.0, suspicion_mult=10),
    tick_timeout=120.0,
)
BUDGET = [16 * 1024 * 1024 - 4096]


def payloads() -> dict[str, Any]:
    """Honest payloads just under 16 MiB, the slowest per byte to decode."""
    (budget,) = BUDGET
    return {
        "warm-up": "x",  # not reported: the first frame meets a cold node
        "bytes": b"x" * budget,
        "small ints": list(range(24)) * (budget // 24),
        "short strings": [f"s{i % 1000}" for i in range(budget // 6)],
        "records": [{"id": i, "name": f"user{i}", "ok": True} for i in range(budget // 32)],
        "pids": [td.Pid("send@127.0.0.1", i, 1) for i in range(budget // 40)],
    }


SINK = ("sink", "recv@127.0.0.1")


async def send(port: int, rounds: int) -> None:
    async with td.open_node("send@127.0.0.1", cookie=COOKIE, config=CONFIG) as node:
        await node.connect(f"recv@127.0.0.1:{port}")
        async with node.open_process() as proc:
            for round_no in range(rounds):
                for kind, payload in payloads().items():
                    # Announce the frame and wait until the receiver has
                    # reset its probe, so each measurement covers one frame.
                    await node.send(SINK, [round_no, kind, proc.pid])
                    with anyio.fail_after(600):
                        await proc.receive()
                    await node.send(SINK, payload)
            await node.send(SINK, [rounds, "done", proc.pid])
            with anyio.fail_after(600):
                await proc.receive()


Stalls = dict[tuple[int, str], float]


async def receive(rounds: int) -> tuple[Stalls, Stalls]:
    """The longest loop stall, and the longest garbage collection pass
    (seconds of CPU time), while each (round, kind) frame arrived."""
    stalls: Stalls = {}
    gc_passes: Stalls = {}
    worst = [0.0]
    longest_gc = [0.0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            longest_gc[0] = max(longest_gc[0], time.thread_time() - gc_started[0])

    async def probe() -> None:
        # CPU time of this thread between two wake-ups of the probe: how
        # long the loop ran other code before letting it run (wall time
        # would also count every moment another process had the CPU).
        last = time.thread_time()
        while True:
            await anyio.sleep(0.001)
            now = time.thread_time()
            worst[0] = max(worst[0], now - last)
            last = now

    gc.callbacks.append(on_gc)
    async with td.open_node("recv@127.0.0.1", cookie=COOKIE, config=CONFIG) as node:
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            async with node.open_process("sink") as sink:
                sender = subprocess.Popen(  # noqa: ASYNC220 (starting it is quick)
                    [
                        *(sys.executable, "-m", "benchmarks.loop_lag", "--send"),
                        *(str(node.address[1]), "--rounds", str(rounds)),
                        *("--mib", str(BUDGET[0] // 2**20 + 1)),
                    ]
                )
                try:
                    while True:
                        with anyio.fail_after(600):
                            round_no, kind, reply_to = await sink.receive()
                        if round_no == rounds // 2:
                            # The second half: the old way, one cbor2 call a frame.
                            vars(_connection)["SLICED_ABOVE"] = 1 << 62
                        await anyio.sleep(0.05)  # the previous frame is freed
                        worst[0] = longest_gc[0] = 0.0
                        await node.send(reply_to, "go")
                        if kind == "done":
                            break
                        with anyio.fail_after(600):
                            got = await sink.receive()
                        await anyio.sleep(0.01)  # the probe wakes and counts the last gap
                        stalls[round_no, kind] = worst[0]
                        gc_passes[round_no, kind] = longest_gc[0]
                        # Freeing millions of objects is one long step too, but
                        # the application's, not the frame's: outside the window.
                        del got
                finally:
                    with anyio.move_on_after(30, shield=True):
                        await anyio.to_thread.run_sync(sender.wait)
            tg.cancel_scope.cancel()
    return stalls, gc_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode (default 2)")
    parser.add_argument("--bound", type=float, default=50.0, help="stall bound in ms")
    parser.add_argument("--check", action="store_true", help="exit 1 if the bound is broken")
    parser.add_argument("--mib", type=int, default=16, help="frame size in MiB (default 16)")
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    BUDGET[0] = args.mib * 1024 * 1024 - 4096
    if args.send:
        anyio.run(send, args.send, args.rounds * 2)
        return
    stalls, gc_passes = anyio.run(receive, args.rounds * 2)
    print(f"{args.mib} MiB frames; longest loop stall in ms of CPU time (longest GC pass)")
    print(f"{'frame':<16} {'sliced':>18} {'one cbor2 call':>18}")
    broken = False
    for kind in list(payloads())[1:]:
        cells = []
        for sliced in (True, False):
            runs = [key for key in stalls if key[1] == kind and (key[0] < args.rounds) == sliced]
            stall = max(stalls[key] for key in runs)
            collect = max(gc_passes[key] for key in runs)
            cells.append(f"{stall * 1000:7.1f} ({collect * 1000:5.1f})")
            if sliced:
                broken |= stall * 1000 > args.bound
        print(f"{kind:<16} {cells[0]:>18} {cells[1]:>18}")
    if args.check and broken:
        print(f"a sliced frame stalled the loop for more than {args.bound} ms")
        sys.exit(1)


if __name__ == "__main__":
    main()
