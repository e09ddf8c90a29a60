"""Cluster scale: many nodes in several OS processes on loopback.

Usage, from the repository root::

    python -m benchmarks.cluster_scale --nodes 100 --procs 10 --duration 60
    python -m benchmarks.cluster_scale --nodes 1000 --procs 10 --no-connect-all

Every node binds its own loopback address (``127.0.X.Y``, one port shared
by all), so that, as on real hosts, each node's connections come from its
own address. The children are started together and start their nodes at the
same wall-clock moment; node ``i`` joins through node ``i mod --seeds``
(3 by default; the first ones through node 0).
Each child has a hard timeout and is killed if it overstays.

Measured, per run:

* **convergence**: seconds from the start until every node sees every
  member alive, a leader (the same one everywhere) and, with
  ``connect_all``, a connection to every other node;
* **false suspicions**: suspicions raised by a node's own failed probes
  (``suspicions_raised``), suspect and down events seen through gossip
  (no node fails during a run, so every one is false);
* **CPU per node**: CPU time of the child processes over the steady window
  (after ``--warmup`` seconds, for ``--duration`` seconds), divided by the
  nodes and the window, as % of one core;
* **datagrams per second per node**: membership datagrams sent and
  received, and connection frames in and out, over the same window.

``--label`` names the run in ``benchmarks/results/cluster_scale.json``
(runs are merged by label); ``--td-path DIR`` runs the children on the
``trio_distribute`` package found in ``DIR`` (a worktree of another commit,
for before/after in one sitting); ``--profile-child I`` writes a cProfile
of child I's steady window to ``benchmarks/results/``; ``--count-steps``
counts trio task steps (wakeups) per node per second with an instrument
(it costs CPU, so the CPU figures of such a run are not comparable).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

RESULTS = Path(__file__).parent / "results"
COOKIE = "cluster-scale-benchmark-cookie"
HERE = Path(__file__).resolve()


def node_host(index: int) -> str:
    """Node ``index``'s own loopback address (127.0.1.1, 127.0.1.2, ...)."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def node_name(index: int) -> str:
    return f"n{index}@{node_host(index)}"


# --------------------------------------------------------------------- child


class _CountingSocket:
    """Wraps a node's membership socket to count datagrams (works on any
    version of the package: nothing in it is needed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = 0
        self.received = 0

    async def sendto(self, data: bytes, host: str, port: int) -> None:
        self.sent += 1
        await self.inner.sendto(data, host, port)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        item = await self.inner.receive()
        self.received += 1
        return item  # type: ignore[no-any-return]

    async def __aenter__(self) -> _CountingSocket:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _CountingDials:
    """Wraps a node's network to count the streams it dials (every outgoing
    handshake starts with one; works on any version of the package)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dials = 0

    async def dial(self, host: str, port: int, *, local_host: str) -> Any:
        self.dials += 1
        return await self.inner.dial(host, port, local_host=local_host)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import attrs
    import trio

    import trio_distribute as td
    from trio_distribute.cluster.membership import MemberDown, MemberSuspect

    total = spec["total"]
    indexes: list[int] = spec["indexes"]
    port: int = spec["port"]
    go_at: float = spec["go_at"]
    warmup: float = spec["warmup"]
    duration: float = spec["duration"]
    connect_all: bool = spec["connect_all"]
    if spec["timers"] == "local":
        config = td.NodeConfig.local(connect_all=connect_all)
    else:
        config = td.NodeConfig(connect_all=connect_all)
    if not spec["election"]:
        config = attrs.evolve(config, election=td.ElectionConfig(enabled=False))
    seed_count: int = spec["seeds"]
    nodes: dict[int, Any] = {}
    sockets: dict[int, _CountingSocket] = {}
    dials: dict[int, _CountingDials] = {}
    # (seconds since the start, connections, dials so far) over our nodes.
    timeline: list[tuple[float, int, int]] = []
    events = {i: {"suspect": 0, "down": 0} for i in indexes}
    suspected: list[tuple[float, str]] = []
    converged: dict[int, float] = {}
    # When each part of convergence was first seen, per node.
    parts: dict[str, dict[int, float]] = {"members": {}, "mesh": {}, "leader": {}}
    stop = trio.Event()
    started_at: dict[int, float] = {}
    steps = [0]
    # Task steps by the task's name (its function), for the breakdown.
    steps_by_task: dict[str, int] = {}

    class StepCounter(trio.abc.Instrument):
        def before_task_step(self, task: Any) -> None:
            steps[0] += 1
            steps_by_task[task.name] = steps_by_task.get(task.name, 0) + 1

    if spec["count_steps"]:
        trio.lowlevel.add_instrument(StepCounter())

    async def watch(index: int, node: Any) -> None:
        async with node.membership.subscribe() as stream:
            async for event in stream:
                if isinstance(event, MemberSuspect):
                    events[index]["suspect"] += 1
                    if len(suspected) < 10_000:  # who, and when (s since the start)
                        suspected.append((round(time.time() - go_at, 2), event.name))
                elif isinstance(event, MemberDown):
                    events[index]["down"] += 1

    async def run_node(index: int) -> None:
        await trio.sleep(max(0.0, go_at - time.time()))
        # Node i joins through node i mod K (K = --seeds; the first K
        # through node 0), so no one node takes the whole join storm.
        through = index % seed_count if index >= seed_count else 0
        seeds = [] if index == 0 else [f"{node_host(through)}:{port}"]
        async with td.open_node(
            node_name(index), cookie=COOKIE, port=port, config=config, seeds=seeds
        ) as node:
            started_at[index] = time.time() - go_at
            membership = node.membership
            counting = _CountingSocket(membership._socket)
            membership._socket = counting
            sockets[index] = counting
            dials[index] = _CountingDials(node.transport.network)
            node.transport.network = dials[index]
            nodes[index] = node
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, index, node)
                await stop.wait()
                nursery.cancel_scope.cancel()

    def check(index: int, node: Any, now: float) -> None:
        if index in converged:
            return
        done = True
        for part, ok in (
            ("members", node.membership.core.alive_count() == total),
            ("mesh", not connect_all or len(node.transport.connections) == total - 1),
            ("leader", not node.election.enabled or node.election.core.leader is not None),
        ):
            if ok:
                parts[part].setdefault(index, now - go_at)
            done = done and ok
        if done:
            converged[index] = now - go_at

    def snapshot() -> dict[str, Any]:
        sent = sum(s.sent for s in sockets.values())
        received = sum(s.received for s in sockets.values())
        frames_in = frames_out = 0
        for node in nodes.values():
            stats = node.statistics()
            frames_in += stats.messages_in
            frames_out += stats.messages_out
        raised = sum(n.membership.core.counters["suspicions_raised"] for n in nodes.values())
        return {
            "raised": raised,
            "suspects": sum(e["suspect"] for e in events.values()),
            "cpu": _cpu_seconds(),
            "wall": time.time(),
            "sent": sent,
            "received": received,
            "frames_in": frames_in,
            "frames_out": frames_out,
            "steps": steps[0],
            "steps_by_task": dict(steps_by_task),
        }

    # Stretch the cookie (scrypt, about a second of CPU, once per process)
    # before the start: ten processes sharing two cores would otherwise
    # spend the first seconds on it, where real hosts each have their own.
    from trio_distribute._cookie import cookie_keys

    cookie_keys(COOKIE.encode())
    deadline = spec["deadline"]
    if spec.get("go_when_ready"):
        # --go-when-ready: tell the parent we are ready and take the common
        # start from it once every child is (a loaded machine can make
        # imports take tens of seconds, which is not what is measured).
        print("READY", flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        deadline += float(line) - go_at
        go_at = float(line)
    result: dict[str, Any] = {}
    # Imports are done: how late this child is for the common start (a
    # late child would make convergence look slower than it is).
    late = time.time() - go_at
    with trio.move_on_after(deadline - time.time()):
        async with trio.open_nursery() as nursery:
            for index in indexes:
                nursery.start_soon(run_node, index)
            await trio.sleep(max(0.0, go_at - time.time()))
            profiler = None
            if spec["profile"] and spec["profile_phase"] == "warmup":
                import cProfile

                profiler = cProfile.Profile(time.process_time)  # CPU: the machine is shared
                profiler.enable()
            # Convergence: polled finely until every node of ours converged.
            window_start = go_at + warmup
            settled_at = None
            next_sample = go_at
            while time.time() < window_start:
                now = time.time()
                for index, node in list(nodes.items()):
                    check(index, node, now)
                if now >= next_sample:
                    next_sample += 0.5
                    timeline.append(
                        (
                            round(now - go_at, 2),
                            sum(len(n.transport.connections) for n in nodes.values()),
                            sum(d.dials for d in dials.values()),
                        )
                    )
                if spec["settle"] and settled_at is None and len(converged) == len(indexes):
                    # --settle: the window starts 5 s after this child's
                    # nodes all converged (at most --warmup after the start).
                    settled_at = now
                    window_start = min(window_start, now + 5.0)
                await trio.sleep(0.05 if len(converged) < len(indexes) else 0.5)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(spec["profile"])
                profiler = None
            if spec["profile"] and spec["profile_phase"] == "steady":
                import cProfile

                profiler = cProfile.Profile(time.process_time)  # CPU: the machine is shared
                profiler.enable()
            before = snapshot()
            window_end = window_start + duration
            while time.time() < window_end:
                now = time.time()
                for index, node in list(nodes.items()):
                    check(index, node, now)
                await trio.sleep(min(1.0, max(0.0, window_end - time.time())))
            after = snapshot()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(spec["profile"])
            per_node: list[dict[str, Any]] = []
            for index in indexes:
                node = nodes.get(index)
                if node is None:
                    per_node.append({"index": index, "started": False})
                    continue
                core = node.membership.core
                election = node.election.core if node.election.enabled else None
                leader = election.leader if election is not None else None
                per_node.append(
                    {
                        "index": index,
                        "started": True,
                        "converged": converged.get(index),
                        "parts": {part: seen.get(index) for part, seen in parts.items()},
                        "alive": core.alive_count(),
                        "connections": len(node.transport.connections),
                        "leader": leader,
                        # Why a cluster formed no leader: a bootstrap needs
                        # every member's known set equal to the proposal.
                        "election": None
                        if election is None
                        else {
                            "role": election.role.name,
                            "term": election.term,
                            "configured": election.configured,
                            "known": sorted(election.known),
                        },
                        "suspicions_raised": core.counters["suspicions_raised"],
                        "suspect_events": events[index]["suspect"],
                        "down_events": events[index]["down"],
                        "drops": dict(node.statistics().drops),
                        "dials": dials[index].dials if index in dials else 0,
                    }
                )
            result = {
                "before": before,
                "after": after,
                "nodes": per_node,
                "late": late,
                "timeline": timeline,
                "suspected": suspected,
                "started_at": max(started_at.values(), default=None),
            }
            # Every child's window ends by then (a window starts at the
            # latest --warmup after the start). A child that stopped its
            # nodes at the end of its own, earlier window would have them
            # suspected, rightly, inside the others' windows, and counted
            # there as false suspicions.
            await trio.sleep(max(0.0, go_at + warmup + duration - time.time()))
            stop.set()
    return result


def child_main(spec_path: str) -> None:
    import trio

    # benchmarks/_gc.py beside this file, by path: a child runs this file as
    # a script, and with --td-path its import path leads to another checkout.
    runpy.run_path(str(HERE.with_name("_gc.py")))["apply_policy_from_environment"]()

    if os.environ.get("CLUSTER_SCALE_LOG"):
        # Diagnostics: the child's log (INFO and up) in FILE.<pid>.
        import logging

        logging.basicConfig(
            filename=f"{os.environ['CLUSTER_SCALE_LOG']}.{os.getpid()}",
            level=logging.INFO,
            format="%(created).3f %(name)s %(message)s",
        )

    spec = json.loads(Path(spec_path).read_text())
    result = trio.run(_child, spec)
    print("RESULT " + json.dumps(result), flush=True)


# -------------------------------------------------------------- orchestrator


def _free_port(hosts: list[str]) -> int:
    """A port free on every host, for both TCP and UDP (the nodes bind
    both)."""
    import socket

    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            with contextlib.ExitStack() as stack:
                for host in hosts:
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every node address")


def run(args: argparse.Namespace) -> dict[str, Any]:
    total, procs = args.nodes, args.procs
    hosts = [node_host(i) for i in range(total)]
    port = args.port or _free_port(hosts)
    start_margin = 4.0 + 0.3 * procs  # time for the children to import
    go_at = time.time() + start_margin
    deadline = go_at + args.warmup + args.duration + args.grace
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(args.td_path).resolve()) if args.td_path else str(HERE.parent.parent)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    children = []
    logs: list[IO[str]] = []
    log_lines: list[int] = []
    with tempfile.TemporaryDirectory() as scratch:
        for p in range(procs):
            spec = {
                "total": total,
                "indexes": list(range(p, total, procs)),
                "port": port,
                "go_at": go_at,
                "warmup": args.warmup,
                "duration": args.duration,
                "deadline": deadline,
                "connect_all": args.connect_all,
                "timers": args.timers,
                "seeds": args.seeds,
                "settle": args.settle,
                "election": args.election,
                "profile_phase": args.profile_phase,
                "count_steps": args.count_steps,
                "go_when_ready": args.go_when_ready,
                "profile": str(RESULTS / f"cluster_scale_child{p}.prof")
                if args.profile_child == p
                else "",
            }
            path = Path(scratch) / f"spec{p}.json"
            path.write_text(json.dumps(spec))
            # A child's log goes to a file: a pipe read only once the child
            # exits fills up (64 KiB), and a child blocked writing its log
            # stops its event loop, so its nodes stop answering and the
            # others suspect them (and log more).
            logs.append(open(Path(scratch) / f"child{p}.log", "w+"))  # noqa: SIM115
            children.append(
                subprocess.Popen(
                    [sys.executable, str(HERE), "--child", str(path)],
                    stdin=subprocess.PIPE if args.go_when_ready else None,
                    stdout=subprocess.PIPE,
                    stderr=logs[-1],
                    text=True,
                    env=env,
                )
            )
        if args.go_when_ready:
            for child in children:
                assert child.stdout is not None and child.stdin is not None
                while child.stdout.readline().strip() not in ("READY", ""):
                    pass
            shift = time.time() + 1.0 - go_at
            go_at += shift
            deadline += shift
            for child in children:
                assert child.stdin is not None
                child.stdin.write(f"{go_at!r}\n")
                child.stdin.flush()
        outputs: list[tuple[int | None, str, str]] = []
        hard = deadline + 15.0  # the children's own deadline plus a goodbye
        for child, log in zip(children, logs, strict=True):
            try:
                out, _ = child.communicate(timeout=max(1.0, hard - time.time()))
                err = ""
            except subprocess.TimeoutExpired:
                child.kill()
                out, _ = child.communicate()
                err = "\n[killed: overstayed its hard timeout]"
            log.seek(0)
            err = log.read() + err
            log.close()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                (args.logs / f"child{len(outputs)}.log").write_text(err)
            outputs.append((child.returncode, out, err))
            log_lines.append(err.count("\n"))
    results = []
    failures = []
    for p, (code, out, err) in enumerate(outputs):
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if line is None or not json.loads(line[7:]):
            failures.append(f"child {p} (exit {code}): {err.strip()[-2000:]}")
            continue
        results.append(json.loads(line[7:]))
    summary = summarise(args, results, failures)
    summary["log_lines_per_child"] = log_lines
    return summary


def steps_by_task(results: list[dict[str, Any]], per_node_s: float) -> dict[str, float]:
    """Task steps per node per second in the window, by task name (the
    function the task runs), largest first."""
    merged: dict[str, int] = {}
    for r in results:
        before = r["before"].get("steps_by_task", {})
        for name, count in r["after"].get("steps_by_task", {}).items():
            merged[name] = merged.get(name, 0) + count - before.get(name, 0)
    ranked = sorted(merged.items(), key=lambda item: -item[1])
    return {name: round(count / per_node_s, 3) for name, count in ranked if count}


def summarise(
    args: argparse.Namespace, results: list[dict[str, Any]], failures: list[str]
) -> dict[str, Any]:
    nodes = [n for r in results for n in r["nodes"]]
    started = [n for n in nodes if n.get("started")]
    times = [n["converged"] for n in started]
    all_converged = len(started) == args.nodes and all(t is not None for t in times)
    leaders = {n["leader"] for n in started}
    window = max(r["after"]["wall"] - r["before"]["wall"] for r in results) if results else 0.0

    def delta(key: str) -> float:
        return float(sum(r["after"][key] - r["before"][key] for r in results))

    per_node_s = max(1, len(started)) * max(window, 1e-9)
    drops: dict[str, int] = {}
    for n in started:
        for cause, count in n["drops"].items():
            drops[cause] = drops.get(cause, 0) + count
    # The children's samples, every 0.5 s from the start, summed:
    # [(seconds, connections, dials so far)].
    merged: dict[float, list[int]] = {}
    for step in range(int(args.warmup * 2) + 1):
        at = step / 2
        slot = merged.setdefault(at, [0, 0])
        for r in results:
            # Each child's last sample up to then (a starved child samples late).
            seen = [x for x in r.get("timeline", []) if x[0] <= at + 0.25]
            if seen:
                slot[0] += seen[-1][1]
                slot[1] += seen[-1][2]
    summary = {
        "children_late_s": max((r["late"] for r in results), default=None),
        "last_node_started_s": max(
            (r["started_at"] for r in results if r["started_at"] is not None), default=None
        ),
        "label": args.label,
        "gc": os.environ.get("BENCH_GC", "") or "default",
        "nodes": args.nodes,
        "procs": args.procs,
        "connect_all": args.connect_all,
        "timers": args.timers,
        "election": args.election,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "started": len(started),
        "converged": all_converged,
        "convergence_s": max(times) if all_converged else None,
        "converged_nodes": sum(1 for t in times if t is not None),
        "convergence_parts_s": {
            part: max(
                (n["parts"][part] for n in started if n["parts"][part] is not None),
                default=None,
            )
            for part in ("members", "mesh", "leader")
        },
        "leaders": sorted(str(x) for x in leaders),
        "min_alive_seen": min((n["alive"] for n in started), default=0),
        "alive_seen": sorted(n["alive"] for n in started),
        "connections_per_node": sorted(n["connections"] for n in started),
        "connections_total": sum(n["connections"] for n in started),
        "false_suspicions_raised": sum(n["suspicions_raised"] for n in started),
        "suspect_events": sum(n["suspect_events"] for n in started),
        "false_suspicions_raised_in_window": int(delta("raised")),
        "suspect_events_in_window": int(delta("suspects")),
        "down_events": sum(n["down_events"] for n in started),
        "cpu_pct_per_node": 100.0 * delta("cpu") / per_node_s,
        "datagrams_sent_per_node_s": delta("sent") / per_node_s,
        "datagrams_received_per_node_s": delta("received") / per_node_s,
        "frames_in_per_node_s": delta("frames_in") / per_node_s,
        "frames_out_per_node_s": delta("frames_out") / per_node_s,
        "task_steps_per_node_s": delta("steps") / per_node_s if args.count_steps else None,
        "task_steps_by_task_per_node_s": steps_by_task(results, per_node_s),
        "drops": drops,
        "dials_total": sum(n.get("dials", 0) for n in started),
        "timeline": [[t, c, d] for t, (c, d) in sorted(merged.items())],
        "loadavg": os.getloadavg(),
        "failures": failures,
        "election_state": election_summary(started),
        "suspected": suspected_summary(results, args.procs),
    }
    return summary


def suspected_summary(results: list[dict[str, Any]], procs: int) -> dict[str, Any]:
    """Who was suspected, by the child process that runs it (node ``i``
    runs in child ``i mod procs``: a stalled child's nodes are suspected
    together), and when (seconds since the start)."""
    seen = [(at, name) for r in results for at, name in r.get("suspected", [])]
    by_child: dict[int, int] = {}
    for _, name in seen:
        index = int(name.split("@")[0][1:])
        by_child[index % procs] = by_child.get(index % procs, 0) + 1
    times = sorted(at for at, _ in seen)
    return {
        "events_by_child": dict(sorted(by_child.items())),
        "first_s": times[0] if times else None,
        "last_s": times[-1] if times else None,
        "most_suspected": sorted(_count(name for _, name in seen).items(), key=lambda x: -x[1])[
            :10
        ],
    }


def election_summary(started: list[dict[str, Any]]) -> dict[str, Any] | None:
    """At the end: the election's roles and terms, and whether every node
    knows the same members (a bootstrap needs that)."""
    views = [n["election"] for n in started if n.get("election") is not None]
    if not views:
        return None
    known_sets = {tuple(v["known"]) for v in views}
    everyone = set().union(*(set(k) for k in known_sets))
    return {
        "roles": dict(sorted(_count(v["role"] for v in views).items())),
        "terms": [min(v["term"] for v in views), max(v["term"] for v in views)],
        "configured": sum(1 for v in views if v["configured"]),
        "distinct_known_sets": len(known_sets),
        "known_sizes": dict(sorted(_count(len(v["known"]) for v in views).items())),
        "missing_somewhere": sorted(
            name for name in everyone if any(name not in k for k in known_sets)
        )[:20],
    }


def _count(items: Any) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def table(summary: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str = "") -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        ("nodes x procs", f"{summary['nodes']} in {summary['procs']} processes"),
        (
            "connect_all / timers / election",
            f"{summary['connect_all']} / {summary['timers']} / {summary['election']}",
        ),
        ("started / converged", f"{summary['started']} / {summary['converged_nodes']}"),
        ("convergence (s)", fmt(summary["convergence_s"], ".2f")),
        (
            "  members / mesh / leader (s)",
            " / ".join(
                fmt(summary["convergence_parts_s"][p], ".2f") for p in ("members", "mesh", "leader")
            ),
        ),
        (
            "  child late / last node up (s)",
            f"{fmt(summary['children_late_s'], '.2f')} / "
            f"{fmt(summary['last_node_started_s'], '.2f')}",
        ),
        ("leaders seen", ", ".join(summary["leaders"]) or "-"),
        ("connections (sum)", str(summary["connections_total"])),
        ("false suspicions raised", str(summary["false_suspicions_raised"])),
        ("suspect / down events", f"{summary['suspect_events']} / {summary['down_events']}"),
        (
            "  in the steady window",
            f"{summary['false_suspicions_raised_in_window']} raised, "
            f"{summary['suspect_events_in_window']} suspect events",
        ),
        ("CPU per node (% core)", fmt(summary["cpu_pct_per_node"], ".3f")),
        (
            "datagrams/s per node (out/in)",
            f"{summary['datagrams_sent_per_node_s']:.2f} / "
            f"{summary['datagrams_received_per_node_s']:.2f}",
        ),
        (
            "frames/s per node (out/in)",
            f"{summary['frames_out_per_node_s']:.2f} / {summary['frames_in_per_node_s']:.2f}",
        ),
        ("task steps/s per node", fmt(summary["task_steps_per_node_s"], ".1f")),
        *[
            (f"  {name}", f"{rate:.2f}")
            for name, rate in list(summary["task_steps_by_task_per_node_s"].items())[:8]
        ],
        (
            "election at the end",
            "-"
            if summary["election_state"] is None
            else "{roles}, terms {terms[0]}-{terms[1]}, {configured} configured, "
            "{distinct_known_sets} distinct known sets".format(**summary["election_state"]),
        ),
        (
            "suspect events by child",
            " ".join(f"{k}:{v}" for k, v in summary["suspected"]["events_by_child"].items()) or "-",
        ),
        ("log lines per child", " ".join(str(n) for n in summary.get("log_lines_per_child", []))),
        ("steady window (s)", f"{summary['duration_s']:.0f} after {summary['warmup_s']:.0f}"),
        ("load average", " ".join(f"{x:.2f}" for x in summary["loadavg"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"cluster_scale {summary['label']}", ""]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    if summary["drops"]:
        lines.append(f"{'drops'.ljust(width)}  {summary['drops']}")
    for failure in summary["failures"]:
        lines.append(f"FAILED {failure}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--procs", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0, help="steady window (s)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the window")
    parser.add_argument("--grace", type=float, default=30.0, help="extra time before a kill")
    parser.add_argument(
        "--connect-all", action=argparse.BooleanOptionalAction, default=True, help="full mesh"
    )
    parser.add_argument("--timers", choices=["lan", "local"], default="lan")
    parser.add_argument(
        "--election", action=argparse.BooleanOptionalAction, default=True, help="run the election"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--seeds", type=int, default=3, help="node i joins through node i mod SEEDS"
    )
    parser.add_argument("--label", default="")
    parser.add_argument("--td-path", default="", help="directory holding trio_distribute")
    parser.add_argument("--profile-child", type=int, default=-1)
    parser.add_argument(
        "--settle",
        action="store_true",
        help="start each child's window 5 s after its nodes converged (--warmup is the cap)",
    )
    parser.add_argument("--profile-phase", choices=["warmup", "steady"], default="steady")
    parser.add_argument("--count-steps", action="store_true")
    parser.add_argument(
        "--go-when-ready",
        action="store_true",
        help="start the nodes 1 s after the last child finished its imports",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "cluster_scale.json")
    parser.add_argument("--logs", type=Path, default=None, help="keep each child's log here")
    args = parser.parse_args(argv)
    if not args.label:
        mesh = "mesh" if args.connect_all else "on-demand"
        args.label = f"{args.nodes}x{args.procs}-{mesh}-{args.timers}"
    summary = run(args)
    print(table(summary))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        existing = json.loads(args.output.read_text())
    existing[args.label] = summary
    args.output.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    return 0 if summary["converged"] and not summary["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
