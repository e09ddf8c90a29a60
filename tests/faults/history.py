"""The history checker: invariants over every node's recorded history.

Pure functions over the JSON lines written by ``tests.faults.node`` and the
fault timeline kept by the orchestrator; no I/O beyond reading the files,
so it can be tested on hand-made histories.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .node import GROUP, global_name

#: After the last fault is lifted, full mesh, one leader and equal registry
#: and group views on every node must hold within this many seconds (with
#: ``NodeConfig.local()`` timers) and keep holding to the end of the run.
#: The product's own target for the mesh is 2 s; the measured values are
#: printed beside the verdict.
HEAL_BOUND = 10.0
#: A heal counts once it has held this long without a break.
STABLE_WINDOW = 2.0
#: Every node process must exit within this many seconds of SIGINT.
EXIT_BOUND = 5.0
#: A leader cut off from its majority may believe it leads until its
#: check-quorum lease (0.75 x 0.3 s with ``local()``) runs out; a minority
#: leader seen later than this after a cut starts is a violation.
MINORITY_GRACE = 1.0
#: Snapshots are taken every 0.1 s; a gap longer than this while the process
#: was not stopped on purpose means its event loop stalled.
STALL_BOUND = 5.0
#: After the heal, every sender must have delivered to every receiver
#: within this many seconds before the end.
TRAFFIC_WINDOW = 3.0

Record = dict[str, Any]

PASS, FAIL, NA = "PASS", "FAIL", "n/a"

INVARIANTS = (
    "no crash/hang",
    "1 leader/term",
    "no minority leader",
    "heal: mesh",
    "heal: leader",
    "heal: registry",
    "heal: groups",
    "no loss/reorder",
    "traffic after heal",
    "honest node events",
)

#: What a node killed with SIGKILL may be reported as (it said no goodbye).
KILLED_REASONS = frozenset({"connection_closed", "tick_timeout", "member_dead", "replaced"})

#: Nodes write event times rounded to this (see ``node.py``): an event just
#: after a kill may carry a time up to half of it before the kill.
RECORD_RESOLUTION = 1e-4


@attrs.frozen
class Cut:
    """Packets between ``minority`` and the rest were blocked in ``[start,
    end]``. An empty minority: a fault with no minority side (one-way)."""

    start: float
    end: float
    minority: frozenset[str] = frozenset()


@attrs.define(kw_only=True)
class Timeline:
    """What the orchestrator did, with wall-clock times."""

    names: list[str]
    started: float = 0.0
    formed: float | None = None
    fault_start: float = 0.0
    last_heal: float = 0.0
    stop: float = 0.0
    cuts: list[Cut] = attrs.field(factory=list)
    #: (node, start, end): stopped on purpose (SIGSTOP) or dead after a SIGKILL.
    absent: list[tuple[str, float, float]] = attrs.field(factory=list)
    #: (node, time): killed with SIGKILL on purpose.
    killed: list[tuple[str, float]] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)


@attrs.define(kw_only=True)
class Exit:
    """How one node process ended (one per incarnation)."""

    node: str
    incarnation: int
    returncode: int | None
    #: seconds from SIGINT to exit; None: SIGKILLed by the orchestrator
    #: (on purpose mid-run, or because it hung).
    took: float | None
    killed_on_purpose: bool = False
    hung: bool = False
    #: it exited before the orchestrator asked it to.
    early: bool = False
    dump: str = ""


@attrs.frozen
class Result:
    invariant: str
    status: str
    detail: str = ""
    #: time to heal in seconds, for the heal invariants.
    seconds: float | None = None


def load(path: Path) -> list[Record]:
    """Records of one history file; a torn last line (SIGKILL) is skipped."""
    out: list[Record] = []
    with path.open() as file:
        for line in file:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


@attrs.define(kw_only=True)
class History:
    """Every incarnation of every node: ``files[name]`` is a list of record
    lists, one per process run, in start order."""

    files: dict[str, list[list[Record]]]

    def records(self, name: str) -> list[Record]:
        return [r for run in self.files.get(name, []) for r in run]

    def merged(self) -> list[tuple[str, Record]]:
        """Every record of every node, ordered by time."""
        out = [(name, r) for name in self.files for r in self.records(name)]
        out.sort(key=lambda item: item[1]["t"])
        return out


# ---------------------------------------------------------------- invariants


def check_exits(history: History, timeline: Timeline, exits: Sequence[Exit]) -> Result:
    problems: list[str] = []
    for e in exits:
        label = f"{e.node}#{e.incarnation}"
        if e.hung:
            problems.append(f"{label} did not exit within {EXIT_BOUND:g} s of SIGINT (hang)")
        elif e.early:
            problems.append(f"{label} exited on its own mid-run (code {e.returncode})")
        elif not e.killed_on_purpose and e.returncode != 0:
            problems.append(f"{label} exited with code {e.returncode}")
        elif e.took is not None and e.took > EXIT_BOUND:
            problems.append(f"{label} took {e.took:.1f} s to exit")
    for name in timeline.names:
        for index, run in enumerate(history.files.get(name, [])):
            label = f"{name}#{index}"
            for r in run:
                if r["k"] == "crash":
                    problems.append(f"{label} crashed: {r['error']}")
                elif r["k"] == "cancelled":
                    problems.append(
                        f"{label}: node block cancelled from inside at {_at(r, timeline)}"
                    )
                elif r["k"] == "err":
                    problems.append(f"{label}: {r['call']} raised {r['error']}")
            problems.extend(_stalls(label, name, run, timeline))
    took = [e.took for e in exits if e.took is not None]
    slowest = f"slowest exit {max(took):.2f} s after SIGINT" if took else ""
    return _result("no crash/hang", problems, slowest)


def _stalls(label: str, name: str, run: list[Record], timeline: Timeline) -> list[str]:
    out: list[str] = []
    snaps = [r["t"] for r in run if r["k"] == "s" and r["t"] <= timeline.stop]
    for before, after in itertools.pairwise(snaps):
        if after - before <= STALL_BOUND:
            continue
        excused = any(
            node == name and start - 0.5 <= before and after <= end + 1.5
            for node, start, end in timeline.absent
        )
        if not excused:
            out.append(f"{label} took no snapshot for {after - before:.1f} s (event loop stalled)")
    return out


def leader_claims(history: History) -> dict[int, set[str]]:
    """term -> every name anyone saw as leader of it (its own claim or a
    follower's view)."""
    claims: dict[int, set[str]] = {}
    for name, r in history.merged():
        if r["k"] == "s":
            if r.get("il"):
                claims.setdefault(int(r["term"]), set()).add(name)
            if r.get("lead"):
                leader, term = r["lead"]
                claims.setdefault(int(term), set()).add(leader)
        elif r["k"] == "lc" and r.get("leader"):
            claims.setdefault(int(r["term"]), set()).add(r["leader"])
    return claims


def check_one_leader_per_term(history: History) -> Result:
    claims = leader_claims(history)
    problems = [
        f"term {t}: {sorted(names)}" for t, names in sorted(claims.items()) if len(names) > 1
    ]
    detail = "; ".join(problems) if problems else f"{len(claims)} terms with a leader"
    return Result("1 leader/term", FAIL if problems else PASS, detail)


def check_minority_leader(history: History, timeline: Timeline) -> Result:
    cuts = [c for c in timeline.cuts if c.minority and c.end - c.start > MINORITY_GRACE]
    if not cuts:
        return Result("no minority leader", NA, "no cut with a minority side outlasted the grace")
    problems: list[str] = []
    for cut in cuts:
        for name, r in history.merged():
            if name not in cut.minority or not cut.start + MINORITY_GRACE <= r["t"] <= cut.end:
                continue
            leads = (r["k"] == "s" and r.get("il")) or (r["k"] == "lc" and r.get("leader") == name)
            if leads:
                problems.append(
                    f"{name} led term {r.get('term')} on the minority side at "
                    f"{r['t'] - cut.start:.1f} s into a {cut.end - cut.start:.1f} s cut"
                )
                break
    return _result("no minority leader", problems, f"{len(cuts)} cuts checked")


def _components(
    latest: Mapping[str, Record], names: Sequence[str], now: float
) -> dict[str, str | None]:
    """For each heal component, None when it holds over the latest
    snapshots, else why not."""
    out: dict[str, str | None] = {}
    missing = [n for n in names if n not in latest or now - latest[n]["t"] > 1.5]
    if missing:
        why = f"no fresh snapshot from {missing}"
        return dict.fromkeys(("mesh", "leader", "registry", "groups"), why)
    everyone = sorted(names)
    bad = [
        f"{n} connected to {latest[n]['conn']}, alive {latest[n]['alive']}"
        for n in names
        if latest[n]["conn"] != [m for m in everyone if m != n] or latest[n]["alive"] != everyone
    ]
    out["mesh"] = "; ".join(bad) or None
    views = {n: tuple(latest[n]["lead"]) if latest[n]["lead"] else None for n in names}
    distinct = set(views.values())
    leaders = [n for n in names if latest[n]["il"]]
    agreed = next(iter(distinct)) if len(distinct) == 1 else None
    if agreed is None:
        out["leader"] = f"views {views}"
    elif leaders != [agreed[0]]:
        out["leader"] = f"all see {agreed}, but these believe they lead: {leaders}"
    else:
        out["leader"] = None
    creations = {n: latest[n]["c"] for n in names}
    expected = {global_name(n): (n, creations[n]) for n in names}
    registry_bad: list[str] = []
    reference = latest[names[0]]["names"]
    for n in names:
        view = latest[n]["names"]
        got = {k: (v[0], v[2]) for k, v in view.items()}
        if got != expected:
            registry_bad.append(f"{n} sees {sorted(got)}")
        elif view != reference:
            registry_bad.append(f"{n} differs from {names[0]}")
    out["registry"] = "; ".join(registry_bad) or None
    group_bad: list[str] = []
    want = sorted([n, creations[n]] for n in names)
    group_ref = latest[names[0]]["groups"].get(GROUP)
    for n in names:
        members = latest[n]["groups"].get(GROUP, [])
        got_members = sorted([m[0], m[2]] for m in members)
        if got_members != want:
            group_bad.append(
                f"{n} sees {len(members)} members of {sorted({m[0] for m in members})}"
            )
        elif members != group_ref:
            group_bad.append(f"{n} differs from {names[0]}")
    out["groups"] = "; ".join(group_bad) or None
    return out


def converged(latest: Mapping[str, Record], names: Sequence[str], now: float) -> bool:
    """All heal components hold over these snapshots."""
    return all(v is None for v in _components(latest, names, now).values())


def check_heal(history: History, timeline: Timeline) -> list[Result]:
    """Sweep the merged snapshots after the last heal: each component must
    start holding within ``HEAL_BOUND`` and then hold for ``STABLE_WINDOW``
    without a break; the time to heal is when that window began. A break
    later on (a leader that steps down in a quiet cluster) is reported in
    the detail."""
    names = timeline.names
    latest: dict[str, Record] = {}
    since: dict[str, float | None] = dict.fromkeys(("mesh", "leader", "registry", "groups"))
    healed: dict[str, float | None] = dict.fromkeys(since)
    relapses: dict[str, list[str]] = {c: [] for c in since}
    state: dict[str, str | None] = dict.fromkeys(since, "no snapshot")
    for name, r in history.merged():
        if r["k"] != "s" or r["t"] > timeline.stop:
            continue
        latest[name] = r
        if r["t"] < timeline.last_heal:
            continue
        state = _components(latest, names, r["t"])
        for component, why in state.items():
            start = since[component]
            if why is not None:
                if healed[component] is not None and start is not None:
                    relapses[component].append(f"{r['t'] - timeline.last_heal:.1f} s: {why}")
                since[component] = None
            elif start is None:
                since[component] = r["t"]
            elif healed[component] is None and r["t"] - start >= STABLE_WINDOW:
                healed[component] = start
    out: list[Result] = []
    for component, start in healed.items():
        invariant = f"heal: {component}"
        if start is None:
            out.append(Result(invariant, FAIL, f"not healed at the end: {state[component]}"))
            continue
        took = max(0.0, start - timeline.last_heal)
        status = PASS if took <= HEAL_BOUND else FAIL
        detail = f"healed {took:.2f} s after the last heal (bound {HEAL_BOUND:g} s)"
        if relapses[component]:
            detail += f"; broke again later at {relapses[component][:3]}"
        out.append(Result(invariant, status, detail, took))
    return out


def check_messages(history: History, timeline: Timeline) -> list[Result]:
    lost = reordered = delivered = runs = 0
    examples: list[str] = []
    last_seen: dict[tuple[str, str], float] = {}
    for receiver in timeline.names:
        for index, run in enumerate(history.files.get(receiver, [])):
            # (sender, sender creation) -> (last seq, sender epoch, receiver epoch)
            state: dict[tuple[str, int], tuple[int, int, int]] = {}
            for r in run:
                if r["k"] != "r":
                    continue
                delivered += 1
                key = (str(r["f"]), int(r["c"]))
                seq, se, re = int(r["s"]), int(r["se"]), int(r["re"])
                last_seen[(key[0], receiver)] = r["t"]
                previous = state.get(key)
                state[key] = (seq, se, re)
                if previous is None or previous[1:] != (se, re):
                    runs += 1
                    continue  # a new connection: a gap here is allowed
                if seq == previous[0] + 1:
                    continue
                if seq > previous[0] + 1:
                    lost += seq - previous[0] - 1
                    kind = f"lost {seq - previous[0] - 1}"
                else:
                    reordered += 1
                    kind = "reordered/duplicated"
                if len(examples) < 5:
                    examples.append(
                        f"{key[0]} -> {receiver}#{index}: {kind} after seq {previous[0]} "
                        f"(got {seq}, epochs {se}/{re}) at {_at(r, timeline)}"
                    )
    detail = f"{delivered} delivered in {runs} connection runs"
    problems = [f"{lost} lost, {reordered} reordered on live connections", *examples]
    order = Result(
        "no loss/reorder",
        FAIL if lost or reordered else PASS,
        "; ".join(problems) if lost or reordered else detail,
    )
    quiet = [
        f"{s}->{r}"
        for s in timeline.names
        for r in timeline.names
        if s != r and last_seen.get((s, r), 0.0) < timeline.stop - TRAFFIC_WINDOW
    ]
    traffic = Result(
        "traffic after heal",
        FAIL if quiet else PASS,
        f"nothing delivered in the last {TRAFFIC_WINDOW:g} s on {quiet}" if quiet else "",
    )
    return [order, traffic]


def check_node_events(history: History, timeline: Timeline) -> Result:
    """Node events are honest: while the cluster forms, one ``NodeUp`` per
    peer and no ``NodeDown``; nobody calls ``disconnect``, so no
    ``disconnect`` reason ever; a SIGKILLed node is never reported as a
    graceful ``shutdown``."""
    problems: list[str] = []
    for name in timeline.names:
        runs = history.files.get(name, [])
        first = runs[0] if runs else []
        ups: dict[str, int] = {}
        for r in first:
            if r["k"] != "ne" or r["t"] >= timeline.fault_start:
                continue
            if r["up"]:
                ups[r["peer"]] = ups.get(r["peer"], 0) + 1
            else:
                problems.append(
                    f"{name} saw NodeDown({r['peer']}, {r['reason']}) while the cluster formed"
                )
        problems.extend(
            f"{name} saw {count} NodeUp for {peer} while the cluster formed"
            for peer, count in sorted(ups.items())
            if count > 1
        )
        for r in history.records(name):
            if r["k"] == "ne" and r["reason"] == "disconnect" and r["t"] <= timeline.stop:
                problems.append(
                    f"{name} saw NodeDown({r['peer']}, disconnect): nobody disconnected"
                )
    for victim, at in timeline.killed:
        for name in timeline.names:
            if name == victim:
                continue
            downs = [
                r
                for r in history.records(name)
                if r["k"] == "ne"
                and not r["up"]
                and r["peer"] == victim
                and r["t"] >= at - RECORD_RESOLUTION
            ]
            if downs and downs[0]["reason"] not in KILLED_REASONS:
                problems.append(
                    f"{name} saw the SIGKILLed {victim} go down as {downs[0]['reason']!r}"
                )
    return _result("honest node events", problems)


def check_all(history: History, timeline: Timeline, exits: Sequence[Exit]) -> list[Result]:
    return [
        check_exits(history, timeline, exits),
        check_one_leader_per_term(history),
        check_minority_leader(history, timeline),
        *check_heal(history, timeline),
        *check_messages(history, timeline),
        check_node_events(history, timeline),
    ]


def _result(invariant: str, problems: Iterable[str], ok_detail: str = "") -> Result:
    found = list(problems)
    if found:
        return Result(invariant, FAIL, "; ".join(found))
    return Result(invariant, PASS, ok_detail)


def _at(r: Record, timeline: Timeline) -> str:
    return f"t={r['t'] - timeline.fault_start:+.2f} s from the fault"


# -------------------------------------------------------------------- table


def table(rows: Sequence[tuple[str, Sequence[Result]]]) -> str:
    """fault x invariant, with the time to heal (slowest component)."""
    headers = ["fault", *INVARIANTS, "time to heal"]
    body: list[list[str]] = []
    for fault, results in rows:
        by = {r.invariant: r for r in results}
        cells = [fault]
        for invariant in INVARIANTS:
            r = by.get(invariant)
            if r is None:
                cells.append("-")
            elif r.seconds is not None and r.status == PASS:
                cells.append(f"{r.status} {r.seconds:.1f}s")
            else:
                cells.append(r.status)
        heal = [r.seconds for r in results if r.seconds is not None]
        healed = all(r.status == PASS for r in results if r.invariant.startswith("heal"))
        cells.append(f"{max(heal):.2f} s" if heal and healed else "not healed")
        body.append(cells)
    widths = [max(len(row[i]) for row in [headers, *body]) for i in range(len(headers))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines.extend(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body)
    return "\n".join(lines)
