"""Processes on one node: what an idle process costs, beside raw tasks.

Usage, from the repository root::

    python -m benchmarks.processes [--count 100000] [--quick]
        [--sends 20000] [--backends trio,asyncio] [--compare PATH]
        [--rounds 1] [--output benchmarks/results/processes.json]

Every measurement runs in a child OS process of its own (a fresh
interpreter, so its RSS holds nothing but what is measured):

``raw``
    ``count`` plain tasks started in one nursery (trio: ``trio.open_nursery``
    and one ``trio.Event``; asyncio: an anyio task group and one
    ``anyio.Event``, the primitives a node's own task group uses; plus
    ``asyncio.TaskGroup`` and ``asyncio.Event`` for reference, as
    ``raw_asyncio``), each parked on the event.
``td``
    ``count`` processes spawned with ``await node.spawn(fn)`` on one node,
    each waiting in ``await proc.receive()``.

Measured in each child: RSS per idle unit (the growth of the process's
resident set from before the first spawn to when all are parked, divided by
``count``), spawn time (from the first spawn until every unit has run up to
its wait), stop time (raw: cancelling the nursery until it has exited; td:
leaving the node's block until it has returned, which cancels and ends every
process), and for td the cost of a local send to one of ``count`` processes
picked at random: a one-way send (``sends`` sends, until all are received,
per message) and a round trip p50 (the target answers the sender). ``gc_s``
is how long CPython's cyclic garbage collector paused the child in all
(``benchmarks/_gc.py``; ``BENCH_GC=held`` or ``off`` in the environment
changes its setting for every child). The send
children run at 10, at ``count`` and at 1,000,000 processes (``--quick``: 10
and ``count``).

The table shows td / raw ratios measured in the same invocation, and the
JSON goes to ``--output``. With ``--compare PATH`` (a checkout of another
revision), its trio_distribute runs too, alternating with this one, for a
before/after table. Nothing here judges a number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
RESULT = "RESULT "
_PAGE = os.sysconf("SC_PAGE_SIZE")
# benchmarks/_gc.py beside this file, by path: a child runs this file as a
# script, and with --compare its import path leads to another checkout.
_GC = runpy.run_path(str(Path(__file__).with_name("_gc.py")))


def _rss() -> int:
    """The resident set now, in bytes (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


#: The collector's pauses in this child (the ``gc.collect()`` of a
#: settled RSS is not one).
_PAUSES = _GC["GcPauses"]()


def _settled_rss() -> int:
    _PAUSES.collect()
    return _rss()


# ------------------------------------------------------------------ children


async def _child_raw_trio(count: int) -> dict[str, Any]:
    import trio

    started = [0]
    event = trio.Event()

    async def parked() -> None:
        started[0] += 1
        await event.wait()

    before = _settled_rss()
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        for _ in range(count):
            nursery.start_soon(parked)
        while started[0] < count:
            await trio.lowlevel.checkpoint()
        spawn = time.perf_counter() - t0
        after = _settled_rss()
        t1 = time.perf_counter()
        nursery.cancel_scope.cancel()
    stop = time.perf_counter() - t1
    return {"rss_per_unit": (after - before) / count, "spawn_s": spawn, "stop_s": stop}


async def _child_raw_anyio(count: int) -> dict[str, Any]:
    import anyio

    started = [0]
    event = anyio.Event()

    async def parked() -> None:
        started[0] += 1
        await event.wait()

    before = _settled_rss()
    async with anyio.create_task_group() as tg:
        t0 = time.perf_counter()
        for _ in range(count):
            tg.start_soon(parked)
        while started[0] < count:
            await anyio.lowlevel.checkpoint()
        spawn = time.perf_counter() - t0
        after = _settled_rss()
        t1 = time.perf_counter()
        tg.cancel_scope.cancel()
    stop = time.perf_counter() - t1
    return {"rss_per_unit": (after - before) / count, "spawn_s": spawn, "stop_s": stop}


async def _child_raw_asyncio(count: int) -> dict[str, Any]:
    import asyncio

    started = [0]
    event = asyncio.Event()

    async def parked() -> None:
        started[0] += 1
        await event.wait()

    before = _settled_rss()
    tasks = []
    t0 = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                tasks.append(tg.create_task(parked()))
            while started[0] < count:  # noqa: ASYNC110 (no event per unit)
                await asyncio.sleep(0)
            spawn = time.perf_counter() - t0
            after = _settled_rss()
            t1 = time.perf_counter()
            for task in tasks:
                task.cancel()
    except BaseException:
        raise
    stop = time.perf_counter() - t1
    del tasks
    return {"rss_per_unit": (after - before) / count, "spawn_s": spawn, "stop_s": stop}


async def _child_td(count: int, sends: int, measure_sends: bool) -> dict[str, Any]:
    import anyio

    import trio_distribute as td

    Pid = td.Pid
    counter = [0, 0]

    node: td.Node

    # Like the raw task, it takes no arguments (what it needs is in its
    # closure): the arguments would be counted in its frame.
    async def idle(proc: td.Process) -> None:
        counter[0] += 1
        while True:
            message = await proc.receive()
            counter[1] += 1
            if type(message) is Pid:
                await node.send(message, None)

    config = td.NodeConfig(max_mailbox=max(1000, sends + 1))
    result: dict[str, Any] = {}
    before = _settled_rss()
    node_cm = td.open_node("bench@127.0.0.1", cookie="local-bench", config=config)
    node = await node_cm.__aenter__()
    try:
        before = _settled_rss()
        pids = []
        t0 = time.perf_counter()
        spawn = node.spawn
        for _ in range(count):
            pids.append(await spawn(idle))
        while counter[0] < count:
            await anyio.lowlevel.checkpoint()
        result["spawn_s"] = time.perf_counter() - t0
        after = _settled_rss()
        # The list of pids is the benchmark's own, not the node's.
        result["rss_per_unit"] = (after - before - sys.getsizeof(pids)) / count
        if measure_sends:
            rng = random.Random(count)
            targets = [rng.choice(pids) for _ in range(sends)]
            send = node.send
            for pid in targets[:100]:  # warm-up: caches, first-call costs
                await send(pid, -1)
            while counter[1] < 100:
                await anyio.lowlevel.checkpoint()
            counter[1] = 0
            t = time.perf_counter()
            for i, pid in enumerate(targets):
                await send(pid, i)
            while counter[1] < sends:
                await anyio.lowlevel.checkpoint()
            result["send_us"] = (time.perf_counter() - t) / sends * 1e6
            rounds = max(1, sends // 4)
            samples = []
            async with node.open_process() as me:
                for pid in targets[:rounds]:
                    t = time.perf_counter_ns()
                    await send(pid, me.pid)
                    await me.receive()
                    samples.append(time.perf_counter_ns() - t)
            result["rtt_p50_us"] = statistics.median(samples) / 1000
        del pids
    finally:
        t1 = time.perf_counter()
        await node_cm.__aexit__(None, None, None)
        result["stop_s"] = time.perf_counter() - t1
    return result


def _child(kind: str, backend: str, count: int, sends: int, measure_sends: bool) -> None:
    import anyio

    _GC["apply_policy_from_environment"]()
    with _PAUSES:
        if kind == "raw":
            fn: Any = _child_raw_trio if backend == "trio" else _child_raw_anyio
            result = anyio.run(fn, count, backend=backend)
        elif kind == "raw_asyncio":
            result = anyio.run(_child_raw_asyncio, count, backend="asyncio")
        else:
            result = anyio.run(_child_td, count, sends, measure_sends, backend=backend)
    result["peak_rss_mb"] = _peak_rss_mb()
    result.update(_PAUSES.summary())
    print(RESULT + json.dumps(result), flush=True)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------- orchestrator


def _run_child(
    root: Path, kind: str, backend: str, count: int, sends: int, measure_sends: bool
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(root))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--backends",
        backend,
        "--count",
        str(count),
        "--sends",
        str(sends),
    ]
    if not measure_sends:
        command.append("--no-sends")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind}/{backend}/{count} failed:\n{done.stdout}\n{done.stderr}")
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    raise RuntimeError(f"{kind}/{backend}/{count} printed no result:\n{done.stdout}")


def _median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def _save_partial(path: Path | None, runs: dict[str, list[dict[str, Any]]]) -> None:
    """What has been measured so far (a long run can be cut short)."""
    if path is not None:
        path.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


def measure(
    count: int,
    sends: int,
    backends: list[str],
    send_counts: list[int],
    rounds: int,
    compare: Path | None,
    log: Any = print,
    raw_big: bool = True,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Run every child (alternating the revisions each round) and gather
    the medians per (revision, kind, backend, count)."""
    revisions = {"td": ROOT}
    if compare is not None:
        revisions["base"] = compare
    raw_kinds = {"trio": ["raw"], "asyncio": ["raw", "raw_asyncio"]}
    runs: dict[str, list[dict[str, Any]]] = {}
    big = [n for n in send_counts if n > count] if raw_big else []
    for round_no in range(rounds):
        for backend in backends:
            for n in (count, *big):
                for kind in raw_kinds[backend] if n == count else ["raw"]:
                    key = f"{kind}/{backend}/{n}"
                    log(f"round {round_no + 1}: {key}", file=sys.stderr)
                    runs.setdefault(key, []).append(
                        _run_child(ROOT, kind, backend, n, sends, False)
                    )
            for label, root in revisions.items():
                # The other revision runs at the main count and the small
                # one (a million of its processes may take many minutes).
                sizes = (
                    sorted({count, *send_counts})
                    if label == "td"
                    else sorted({count, *(n for n in send_counts if n <= count)})
                )
                for n in sizes:
                    key = f"{label}/{backend}/{n}"
                    log(f"round {round_no + 1}: {key}", file=sys.stderr)
                    runs.setdefault(key, []).append(_run_child(root, "td", backend, n, sends, True))
                    _save_partial(partial, runs)
    return {key: _median_of(values) for key, values in runs.items()}


def _table(results: dict[str, Any], count: int, backends: list[str], send_counts: list[int]) -> str:
    lines = []
    labels = [label for label in ("base", "td") if f"{label}/{backends[0]}/{count}" in results]
    for backend in backends:
        raw = results[f"raw/{backend}/{count}"]
        lines.append(f"== {backend}: {count:,} idle units ==")
        header = f"{'':>14} {'raw':>10}"
        for label in labels:
            header += f" {label:>10} {label + ' / raw':>10}"
        lines.append(header)
        for metric, unit, scale in (
            ("rss_per_unit", "B", 1.0),
            ("spawn_s", "s", 1.0),
            ("stop_s", "s", 1.0),
            ("gc_s", "s", 1.0),
        ):
            row = f"{metric + ' (' + unit + ')':>14} {raw[metric] * scale:>10.3f}"
            if unit == "B":
                row = f"{metric + ' (' + unit + ')':>14} {raw[metric]:>10.0f}"
            for label in labels:
                value = results[f"{label}/{backend}/{count}"][metric]
                shown = f"{value:>10.0f}" if unit == "B" else f"{value:>10.3f}"
                ratio = f"{value / raw[metric]:>9.2f}x" if raw[metric] else f"{'-':>10}"
                row += f" {shown} {ratio}"
            lines.append(row)
        if backend == "asyncio" and f"raw_asyncio/{backend}/{count}" in results:
            plain = results[f"raw_asyncio/{backend}/{count}"]
            lines.append(
                f"{'(asyncio.TaskGroup: ':>14}{plain['rss_per_unit']:.0f} B, spawn "
                f"{plain['spawn_s']:.3f} s, stop {plain['stop_s']:.3f} s)"
            )
        for n in send_counts:
            if n > count and f"td/{backend}/{n}" in results and f"raw/{backend}/{n}" in results:
                big, raw_big = results[f"td/{backend}/{n}"], results[f"raw/{backend}/{n}"]
                lines.append(
                    f"{n:,} idle: td {big['rss_per_unit']:.0f} B each "
                    f"({big['rss_per_unit'] / raw_big['rss_per_unit']:.2f}x raw), peak RSS "
                    f"{big['peak_rss_mb']:.0f} MB, spawn {big['spawn_s']:.1f} s "
                    f"({big['spawn_s'] / raw_big['spawn_s']:.2f}x), stop {big['stop_s']:.1f} s "
                    f"({big['stop_s'] / raw_big['stop_s']:.2f}x)"
                )
        lines.append(f"-- {backend}: local send to one of N processes (random targets) --")
        lines.append(
            f"{'N':>10}"
            + "".join(f" {label + ' send µs':>14} {label + ' rtt p50 µs':>16}" for label in labels)
        )
        for n in sorted({count, *send_counts}):
            row = f"{n:>10,}"
            for label in labels:
                r = results.get(f"{label}/{backend}/{n}")
                row += (
                    f" {r['send_us']:>14.2f} {r['rtt_p50_us']:>16.1f}"
                    if r
                    else f" {'-':>14} {'-':>16}"
                )
            lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes")
    parser.add_argument("--count", type=int, default=100_000, help="idle units per run")
    parser.add_argument("--sends", type=int, default=20_000, help="messages per send run")
    parser.add_argument("--quick", action="store_true", help="small counts, no 1M run")
    parser.add_argument("--backends", default="trio,asyncio")
    parser.add_argument("--rounds", type=int, default=1, help="runs per child (median)")
    parser.add_argument("--compare", type=Path, default=None, help="another checkout to run too")
    parser.add_argument(
        "--million", action=argparse.BooleanOptionalAction, default=True, help="the 1M send run"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "processes.json"
    )
    parser.add_argument(
        "--raw-million",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="raw tasks at a million too",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-sends", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if args.child is not None:
        _child(args.child, backends[0], args.count, args.sends, not args.no_sends)
        return
    if args.quick:
        args.count = min(args.count, 2_000)
        args.sends = min(args.sends, 500)
    send_counts = [10]
    if args.million and not args.quick:
        send_counts.append(1_000_000)
    results = measure(
        args.count,
        args.sends,
        backends,
        send_counts,
        args.rounds,
        args.compare,
        raw_big=args.raw_million,
        partial=args.output.with_suffix(".partial.json"),
    )
    table = _table(results, args.count, backends, send_counts)
    print(table)
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "count": args.count,
                "sends": args.sends,
                "backends": backends,
                "load_average": load,
                "python": sys.version.split()[0],
                "results": results,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    args.output.with_suffix(".partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
