"""Orchestrator of the kernel-level fault suite.

``python -m tests.faults.run`` runs every scenario in its short form (a few
minutes: what CI runs; ``--short`` says so explicitly); ``--full`` runs the
long forms (``nox -s faults``); ``--scenario NAME`` (repeatable) runs only
those; ``--list`` names them.
Each scenario starts five fresh node processes (``tests.faults.node``) in
five network namespaces at the same moment, waits for the cluster to form,
applies its fault, lifts it, waits for the cluster to heal, stops every
process with SIGINT and checks the histories (``tests.faults.history``).
It prints a table of fault x invariant and exits 1 if any invariant
failed, 0 if all held, and 0 with ``SKIPPED: <reason>`` where namespaces,
``nft`` or root are not available. Histories, logs and the table are kept
under ``--out`` (default ``/tmp/td-faults``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from . import history as hist
from .history import Cut, Exit, History, Result, Timeline
from .netns import TABLE, Topology, unavailable

ROOT = Path(__file__).resolve().parent.parent.parent
N = 5
#: The cluster must form (mesh, leader, registry, groups) within this.
FORM_BOUND = 30.0
#: Once healed, the run goes on this long to see that it stays so.
STABLE_FOR = 3.0


def name_of(i: int) -> str:
    return f"n{i}@{Topology.addr(i)}"


@attrs.define(eq=False, kw_only=True)
class Cluster:
    """The node processes of one scenario and their history files."""

    topo: Topology
    out: Path
    timeline: Timeline
    backend: str = "trio"
    procs: dict[int, subprocess.Popen[bytes]] = attrs.field(factory=dict)
    runs: dict[int, int] = attrs.field(factory=dict)
    exits: list[Exit] = attrs.field(factory=list)
    _offsets: dict[Path, int] = attrs.field(factory=dict)
    _latest: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def history_file(self, i: int, run: int) -> Path:
        return self.out / f"n{i}.{run}.jsonl"

    def start(self, i: int, start_at: float) -> None:
        run = self.runs.get(i, -1) + 1
        self.runs[i] = run
        state = self.out / f"state-n{i}"
        state.mkdir(exist_ok=True)
        argv = self.topo.exec_argv(
            i,
            [
                sys.executable,
                "-X",
                "faulthandler",
                "-m",
                "tests.faults.node",
                "--name",
                name_of(i),
                "--peers",
                ",".join(name_of(j) for j in range(1, N + 1)),
                "--history",
                str(self.history_file(i, run)),
                "--state-dir",
                str(state),
                "--start-at",
                repr(start_at),
                "--backend",
                self.backend,
            ],
        )
        log = (self.out / f"n{i}.{run}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs[i] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()

    def start_all(self) -> None:
        # The same start moment for everyone: each process sleeps until then.
        start_at = time.time() + 2.0
        for i in range(1, N + 1):
            self.start(i, start_at)
        self.timeline.started = start_at

    def kill(self, i: int) -> float:
        """SIGKILL node ``i``; returns the moment just before the signal.

        Peers may see the socket close before ``wait`` returns here, so the
        kill moment is taken before the signal, not after."""
        proc = self.procs.pop(i)
        at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.exits.append(
            Exit(
                node=name_of(i),
                incarnation=self.runs[i],
                returncode=proc.returncode,
                took=None,
                killed_on_purpose=True,
            )
        )
        return at

    def signal(self, i: int, signum: int) -> None:
        self.procs[i].send_signal(signum)

    def early_exits(self) -> None:
        """Processes that ended without being asked: recorded as such."""
        for i, proc in list(self.procs.items()):
            if proc.poll() is not None:
                del self.procs[i]
                self.exits.append(
                    Exit(
                        node=name_of(i),
                        incarnation=self.runs[i],
                        returncode=proc.returncode,
                        took=None,
                        early=True,
                    )
                )

    # -------------------------------------------------------- observation

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest snapshot of each node (current run), read incrementally."""
        for i, run in self.runs.items():
            path = self.history_file(i, run)
            if not path.exists():
                continue
            with path.open("rb") as file:
                file.seek(self._offsets.get(path, 0))
                data = file.read()
            end = data.rfind(b"\n") + 1
            self._offsets[path] = self._offsets.get(path, 0) + end
            for line in data[:end].splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("k") == "s":
                    self._latest[name_of(i)] = record
        return self._latest

    def leader(self) -> int | None:
        """The node everyone agrees leads right now, if any."""
        views = {tuple(r["lead"]) if r.get("lead") else None for r in self.latest().values()}
        if len(views) != 1 or len(self._latest) != N:
            return None
        agreed = views.pop()
        if agreed is None:
            return None
        return int(str(agreed[0]).partition("@")[0][1:])

    def converged(self) -> bool:
        return hist.converged(self.latest(), self.timeline.names, time.time())

    def wait_converged(self, bound: float, stable: float) -> float | None:
        """Wait until converged and stays so for ``stable`` s; return when it
        became so (None: not within ``bound``)."""
        deadline = time.time() + bound + stable
        since: float | None = None
        while time.time() < deadline:
            self.early_exits()
            now = time.time()
            if self.converged():
                since = now if since is None else since
                if now - since >= stable:
                    return since
            else:
                since = None
            time.sleep(0.1)
        return since

    # ---------------------------------------------------------------- stop

    def stop_all(self) -> None:
        self.early_exits()
        self.timeline.stop = time.time()
        for proc in self.procs.values():
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGINT)
        asked = time.time()
        waiting = dict(self.procs)
        while waiting and time.time() - asked < hist.EXIT_BOUND:
            for i, proc in list(waiting.items()):
                if proc.poll() is not None:
                    del waiting[i]
                    self._record_exit(i, proc, time.time() - asked)
            time.sleep(0.02)
        for i, proc in waiting.items():
            # Hung: ask for trio's task tree and every thread's stack, then kill.
            proc.send_signal(signal.SIGUSR2)
            time.sleep(0.5)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            proc.kill()
            proc.wait()
            log = self.out / f"n{i}.{self.runs[i]}.log"
            self.exits.append(
                Exit(
                    node=name_of(i),
                    incarnation=self.runs[i],
                    returncode=proc.returncode,
                    took=None,
                    hung=True,
                    dump=str(log),
                )
            )
        self.procs.clear()

    def _record_exit(self, i: int, proc: subprocess.Popen[bytes], took: float) -> None:
        self.exits.append(
            Exit(node=name_of(i), incarnation=self.runs[i], returncode=proc.returncode, took=took)
        )

    def history(self) -> History:
        files: dict[str, list[list[dict[str, Any]]]] = {}
        for i, last in self.runs.items():
            runs = [self.history_file(i, r) for r in range(last + 1)]
            files[name_of(i)] = [hist.load(p) if p.exists() else [] for p in runs]
        return History(files=files)


# ----------------------------------------------------------------- faults


@attrs.define(eq=False, kw_only=True)
class Ctx:
    cluster: Cluster
    rng: random.Random
    full: bool

    @property
    def topo(self) -> Topology:
        return self.cluster.topo

    @property
    def timeline(self) -> Timeline:
        return self.cluster.timeline

    def note(self, text: str) -> None:
        at = time.time() - self.timeline.fault_start
        self.timeline.notes.append(f"{at:+.2f} s {text}")

    def sides(self) -> tuple[list[int], list[int]]:
        """A minority of two holding the current leader, and the other three."""
        leader = self.cluster.leader() or 1
        other = leader % N + 1
        minority = [leader, other]
        return minority, [i for i in range(1, N + 1) if i not in minority]

    def cut(self, kind: str, minority: list[int], majority: list[int]) -> float:
        """Block every packet between the two sides. ``kind``: ``output``
        (drop on the output hook: sends fail with EPERM), ``input`` (drop on
        the input hook: sends vanish), ``reject`` (ICMP port unreachable
        back to the sender) or ``reset`` (TCP answered with a reset, so live
        connections break at once; UDP dropped)."""
        for mine, theirs in ((minority, majority), (majority, minority)):
            addrs = ", ".join(Topology.addr(j) for j in theirs)
            src = f"add rule {TABLE} input ip saddr {{ {addrs} }}"
            if kind == "output":
                rules = [f"add rule {TABLE} output ip daddr {{ {addrs} }} drop"]
            elif kind == "input":
                rules = [f"{src} drop"]
            elif kind == "reject":
                # ICMP passes so that the other side's errors reach the sender.
                rules = [f"{src} ip protocol != icmp reject"]
            else:
                # Resets pass so that the other side's resets reach the sender.
                rules = [
                    f"{src} tcp flags & rst == rst accept",
                    f"{src} meta l4proto tcp reject with tcp reset",
                    f"{src} drop",
                ]
            for i in mine:
                self.topo.nft(i, *rules)
        return time.time()

    def heal(self) -> float:
        self.topo.flush_all()
        healed = time.time()
        self.timeline.last_heal = healed
        return healed

    def hold_cut(self, kind: str, seconds: float) -> None:
        minority, majority = self.sides()
        start = self.cut(kind, minority, majority)
        self.note(f"{kind} cut {names(minority)} | {names(majority)} for {seconds:.1f} s")
        time.sleep(seconds)
        end = self.heal()
        self.timeline.cuts.append(Cut(start, end, frozenset(names(minority))))


def names(indexes: list[int]) -> list[str]:
    return [name_of(i) for i in indexes]


def scenario_none(ctx: Ctx) -> None:
    """No fault: the control run."""
    time.sleep(10 if ctx.full else 3)
    ctx.timeline.last_heal = time.time()


def scenario_output_drop(ctx: Ctx) -> None:
    """Two nodes (the leader among them) and three cut apart by ``drop`` on
    the output hook of every node: sends fail with EPERM."""
    ctx.hold_cut("output", 12 if ctx.full else 6)


def scenario_input_drop(ctx: Ctx) -> None:
    """The same partition, made by ``drop`` on the input hook: sends succeed
    and vanish."""
    ctx.hold_cut("input", 12 if ctx.full else 6)


def scenario_reject(ctx: Ctx) -> None:
    """The same partition with ``reject``: each side answers the other with
    ICMP port unreachable (refused connects, errors on the UDP socket)."""
    ctx.hold_cut("reject", 12 if ctx.full else 6)


def scenario_one_way(ctx: Ctx) -> None:
    """Packets from the leader to one follower dropped (input hook of the
    follower); the other direction and everyone else unharmed."""
    a = ctx.cluster.leader() or 1
    b = a % N + 1
    start = time.time()
    ctx.topo.nft(b, f"add rule {TABLE} input ip saddr {Topology.addr(a)} drop")
    seconds = 15 if ctx.full else 6
    ctx.note(f"one-way drop {name_of(a)} -> {name_of(b)} for {seconds} s")
    time.sleep(seconds)
    ctx.timeline.cuts.append(Cut(start, ctx.heal()))


def scenario_short_cut(ctx: Ctx) -> None:
    """A 0.3 s partition, far shorter than failure detection, that breaks
    the TCP connections across it (resets): membership still sees
    everyone alive, so only the redial rebuilds the mesh."""
    ctx.hold_cut("reset", 0.3)


def scenario_flapping(ctx: Ctx) -> None:
    """The partition cut and healed at random every 0.2-3 s (each cut
    either drops silently or resets TCP)."""
    duration = 60 if ctx.full else 15
    minority, majority = ctx.sides()
    ctx.note(f"flapping {names(minority)} | {names(majority)} for {duration} s")
    end = time.time() + duration
    flips = 0
    while time.time() < end:
        start = ctx.cut(ctx.rng.choice(["input", "reset"]), minority, majority)
        time.sleep(ctx.rng.uniform(0.2, 3.0))
        ctx.timeline.cuts.append(Cut(start, ctx.heal(), frozenset(names(minority))))
        time.sleep(ctx.rng.uniform(0.2, 3.0))
        flips += 1
    ctx.note(f"{flips} cuts")


def scenario_pause(ctx: Ctx) -> None:
    """The leader stopped with SIGSTOP for 2-10 s, then continued."""
    i = ctx.cluster.leader() or 1
    seconds = ctx.rng.uniform(2, 10) if ctx.full else 3.0
    ctx.cluster.signal(i, signal.SIGSTOP)
    start = time.time()
    ctx.note(f"{name_of(i)} paused for {seconds:.1f} s")
    time.sleep(seconds)
    ctx.cluster.signal(i, signal.SIGCONT)
    end = time.time()
    ctx.timeline.absent.append((name_of(i), start, end))
    ctx.timeline.last_heal = end


def scenario_tcp_reset(ctx: Ctx) -> None:
    """A live TCP connection between the leader and a follower reset with
    ``ss -K`` inside the leader's namespace (the full run resets five)."""
    count = 5 if ctx.full else 1
    for k in range(count):
        a = ctx.cluster.leader() or 1
        b = ctx.rng.choice([j for j in range(1, N + 1) if j != a])
        killed = ctx.topo.reset_tcp(a, b)
        lines = [ln for ln in killed.splitlines() if ln.strip() and "State" not in ln]
        ctx.note(f"ss -K {name_of(a)} -> {name_of(b)}: {len(lines)} socket(s) {lines}")
        if k + 1 < count:
            time.sleep(2)
    ctx.timeline.last_heal = time.time()


def scenario_loss(ctx: Ctx) -> None:
    """10 % of every packet (TCP and UDP) dropped at every node's input."""
    seconds = 30 if ctx.full else 10
    for i in range(1, N + 1):
        ctx.topo.nft(i, f"add rule {TABLE} input numgen random mod 100 < 10 drop")
    ctx.note(f"10 % loss for {seconds} s")
    time.sleep(seconds)
    ctx.heal()


def scenario_kill_restart(ctx: Ctx) -> None:
    """The leader SIGKILLed mid-traffic and restarted 1 s later with the
    same ``state_dir`` (the full run then does it again to a follower)."""
    victims = [ctx.cluster.leader() or 1]
    if ctx.full:
        victims.append(0)
    for victim in victims:
        if victim == 0:
            time.sleep(5)
            leader = ctx.cluster.leader()
            victim = ctx.rng.choice([j for j in range(1, N + 1) if j != leader])
        killed = ctx.cluster.kill(victim)
        ctx.timeline.killed.append((name_of(victim), killed))
        ctx.note(f"SIGKILL {name_of(victim)}")
        time.sleep(1.0)
        ctx.cluster.start(victim, time.time())
        ctx.timeline.absent.append((name_of(victim), killed, time.time() + 2))
        ctx.note(f"restarted {name_of(victim)}")
    ctx.timeline.last_heal = time.time()


SCENARIOS: dict[str, Callable[[Ctx], None]] = {
    "none": scenario_none,
    "output-drop": scenario_output_drop,
    "input-drop": scenario_input_drop,
    "reject": scenario_reject,
    "one-way": scenario_one_way,
    "short-cut": scenario_short_cut,
    "flapping": scenario_flapping,
    "pause": scenario_pause,
    "tcp-reset": scenario_tcp_reset,
    "loss": scenario_loss,
    "kill-restart": scenario_kill_restart,
}


# ------------------------------------------------------------------ driver


def run_scenario(
    name: str, out: Path, seed: int, full: bool, backend: str = "trio"
) -> tuple[list[Result], Timeline]:
    directory = out / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    timeline = Timeline(names=[name_of(i) for i in range(1, N + 1)])
    topo = Topology(n=N)
    cluster = Cluster(topo=topo, out=directory, timeline=timeline, backend=backend)
    rng = random.Random(f"{seed}:{name}")
    try:
        topo.create()
        cluster.start_all()
        formed = cluster.wait_converged(FORM_BOUND, 1.0)
        timeline.formed = formed
        if formed is None:
            timeline.notes.append(f"the cluster did not form within {FORM_BOUND:g} s")
        else:
            timeline.notes.append(f"formed {formed - timeline.started:.2f} s after the start")
        time.sleep(1.0)  # traffic on a healthy cluster before the fault
        timeline.fault_start = time.time()
        timeline.last_heal = timeline.fault_start
        SCENARIOS[name](Ctx(cluster=cluster, rng=rng, full=full))
        cluster.early_exits()
        healed = cluster.wait_converged(hist.HEAL_BOUND, STABLE_FOR)
        if healed is not None:
            timeline.notes.append(
                f"orchestrator saw convergence {healed - timeline.last_heal:.2f} s after the heal"
            )
        time.sleep(0.5)
        cluster.stop_all()
    finally:
        for proc in cluster.procs.values():
            proc.kill()
            proc.wait()
        topo.destroy()
    results = hist.check_all(cluster.history(), timeline, cluster.exits)
    report = {
        "scenario": name,
        "seed": seed,
        "full": full,
        "backend": backend,
        "results": [attrs.asdict(r) for r in results],
        "notes": timeline.notes,
        "exits": [attrs.asdict(e) for e in cluster.exits],
        "timeline": attrs.asdict(timeline),
        "runs": cluster.runs,
    }
    (directory / "result.json").write_text(json.dumps(report, indent=2, default=sorted))
    return results, timeline


def recheck(directory: Path) -> tuple[list[Result], Timeline]:
    """Check the histories an earlier run left in ``directory`` again (with
    this checker), from the timeline and exits it saved."""
    report = json.loads((directory / "result.json").read_text())
    raw = report["timeline"]
    raw["cuts"] = [Cut(c["start"], c["end"], frozenset(c["minority"])) for c in raw["cuts"]]
    raw["absent"] = [tuple(a) for a in raw["absent"]]
    raw["killed"] = [tuple(k) for k in raw.get("killed", [])]
    timeline = Timeline(**raw)
    exits = [Exit(**e) for e in report["exits"]]
    files: dict[str, list[list[dict[str, Any]]]] = {}
    for i, last in report["runs"].items():
        paths = [directory / f"n{i}.{r}.jsonl" for r in range(int(last) + 1)]
        files[name_of(int(i))] = [hist.load(p) if p.exists() else [] for p in paths]
    return hist.check_all(History(files=files), timeline, exits), timeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--full", action="store_true", help="the long versions (nox -s faults)")
    length.add_argument("--short", action="store_true", help="the short versions (the default)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("/tmp/td-faults"))
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--backend", choices=["trio", "asyncio"], default="trio", help="what the nodes run on"
    )
    parser.add_argument(
        "--recheck", action="store_true", help="check the histories already under --out again"
    )
    args = parser.parse_args(argv)
    if args.list:
        for key, fn in SCENARIOS.items():
            print(f"{key:14} {(fn.__doc__ or '').splitlines()[0]}")
        return 0
    reason = None if args.recheck else unavailable()
    if reason is not None:
        print(f"SKIPPED: the kernel fault suite cannot run here: {reason}", flush=True)
        return 0
    chosen = args.scenario or list(SCENARIOS)
    rows: list[tuple[str, list[Result]]] = []
    details: list[str] = []
    began = time.time()
    for name in chosen:
        t0 = time.time()
        print(f"== {name}: {(SCENARIOS[name].__doc__ or '').split(chr(10))[0]}", flush=True)
        if args.recheck:
            if not (args.out / name / "result.json").exists():
                continue
            results, timeline = recheck(args.out / name)
        else:
            try:
                results, timeline = run_scenario(name, args.out, args.seed, args.full, args.backend)
            except Exception as exc:
                # The suite's own failure: reported as such, and the other
                # scenarios still run.
                timeline = Timeline(names=[])
                results = [Result("no crash/hang", hist.FAIL, f"the orchestrator failed: {exc!r}")]
                traceback.print_exc()
        rows.append((name, results))
        for note in timeline.notes:
            print(f"   {note}", flush=True)
        for r in results:
            line = f"   {r.status:4} {r.invariant}: {r.detail}"
            print(line, flush=True)
            if r.status == hist.FAIL:
                details.append(f"{name} / {line.strip()}")
        print(f"   ({time.time() - t0:.0f} s; files in {args.out / name})", flush=True)
    text = hist.table(rows)
    mode = "full" if args.full else "short"
    took = time.time() - began
    print(f"\nKernel fault suite ({mode}, {args.backend}, seed {args.seed}, {took:.0f} s)")
    print(text)
    (args.out / f"table-{mode}.txt").write_text(text + "\n\n" + "\n".join(details) + "\n")
    failed = any(r.status == hist.FAIL for _, results in rows for r in results)
    if failed:
        print("\nFAILED invariants:\n" + "\n".join(details))
        return 1
    print("\nALL INVARIANTS HELD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
