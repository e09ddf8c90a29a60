"""SWIM scenarios on the deterministic simulator, measuring the targets of
``reference/swim-raft-targets.md`` (M1-M12).

:class:`SwimHost` adapts a :class:`~trio_distribute._proto.swim.SwimCore` to
the simulator; :class:`SwimCluster` builds and drives a cluster of them and
records every membership event. Each ``measure_*`` function runs one target's
experiment and returns a :class:`Result` (what was measured, the pass
criterion, the value, pass/fail). :func:`run_all` runs the CI-sized or full
suite; ``python -m benchmarks.sim_swim`` prints the table.

Times are virtual seconds; ``T`` is the probe interval (1 s with the default
LAN knobs).
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from .._proto.swim import (
    Member,
    MemberChange,
    MemberStatus,
    SendDatagram,
    SwimCore,
    SwimDecodeError,
)
from ..config import MembershipConfig
from .simulator import Outgoing, Simulator

__all__ = [
    "Result",
    "SwimCluster",
    "SwimHost",
    "measure_detection",
    "measure_dissemination",
    "measure_false_positives",
    "measure_lifeguard_ab",
    "measure_load",
    "measure_probe_coverage",
    "measure_refutation",
    "run_all",
]

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberStatus.ALIVE,
    MemberStatus.SUSPECT,
    MemberStatus.DEAD,
    MemberStatus.LEFT,
)


@attrs.define(eq=False, kw_only=True)
class EventRecord:
    time: float
    observer: str
    change: MemberChange


@attrs.define(eq=False, kw_only=True)
class SwimHost:
    """A :class:`SwimCore` as a simulator host.

    ``receive_delay`` models a CPU-starved member whose receive path lags
    (every datagram and stream is handled that much after it arrived) while
    its timers still fire on time: the case Lifeguard was designed for.
    """

    core: SwimCore
    on_event: Callable[[float, str, MemberChange], None] | None = None
    on_probe: Callable[[float, str, str], None] | None = None
    receive_delay: float = 0.0
    decode_errors: int = 0
    max_datagram: int = 0
    _now: float = 0.0
    _backlog: deque[tuple[float, bool, str, bytes]] = attrs.field(factory=deque)
    _last_probe: tuple[str, float] | None = None

    def datagram_received(self, now: float, source: str, payload: object) -> None:
        self._receive(now, True, source, payload)

    def stream_received(self, now: float, source: str, payload: object) -> None:
        self._receive(now, False, source, payload)

    def _receive(self, now: float, datagram: bool, source: str, payload: object) -> None:
        self._now = now
        assert isinstance(payload, bytes)
        if self.receive_delay:
            self._backlog.append((now + self.receive_delay, datagram, source, payload))
            return
        self._handle(now, datagram, source, payload)

    def _handle(self, now: float, datagram: bool, source: str, payload: bytes) -> None:
        try:
            if datagram:
                self.core.datagram_received(now, source, payload)
            else:
                self.core.stream_received(now, source, payload)
        except SwimDecodeError:
            self.decode_errors += 1

    def timer(self, now: float) -> None:
        self._now = now
        backlog = self._backlog
        while backlog and backlog[0][0] <= now:
            _, datagram, source, payload = backlog.popleft()
            self._handle(now, datagram, source, payload)
        deadline = self.core.next_deadline()
        if deadline is not None and deadline <= now:
            self.core.tick(now)

    def next_deadline(self) -> float | None:
        deadline = self.core.next_deadline()
        backlog = self._backlog
        if backlog and (deadline is None or backlog[0][0] < deadline):
            return backlog[0][0]
        return deadline

    def take_outgoing(self) -> list[Outgoing]:
        # Called after every event the simulator hands this host: kept to
        # plain loops and local names (it is a good part of a run's time).
        core = self.core
        on_event = self.on_event
        events = core.take_events()
        if on_event is not None and events:
            now, name = self._now, core.name
            for change in events:
                on_event(now, name, change)
        if self.on_probe is not None:
            probe = core.current_probe
            if probe is not None and probe != self._last_probe:
                self._last_probe = probe
                self.on_probe(probe[1], core.name, probe[0])
        actions = core.take_actions()
        if not actions:
            return []
        out: list[Outgoing] = []
        largest = self.max_datagram
        for action in actions:
            payload = action.payload
            if type(action) is SendDatagram:
                size = len(payload)
                if size > largest:
                    largest = size
                out.append(Outgoing("datagram", action.address, payload))
            else:
                out.append(Outgoing("stream", action.address, payload))
        self.max_datagram = largest
        return out


def node_name(index: int) -> str:
    return f"n{index:04d}"


@attrs.define(eq=False, kw_only=True)
class SwimCluster:
    """A simulated cluster; node ``i`` is named and addressed ``node_name(i)``."""

    sim: Simulator
    config: MembershipConfig
    lifeguard: bool = True
    stream_fallback: bool = True
    hosts: dict[str, SwimHost] = attrs.field(factory=dict)
    events: list[EventRecord] = attrs.field(factory=list)
    record_events: bool = True
    probe_log: dict[tuple[str, str], list[float]] | None = None
    restarts: int = 0
    # everyone_sees: the member that answered "no" last time, per question.
    _witnesses: dict[tuple[str, MemberStatus, int], tuple[Sequence[str], int]] = attrs.field(
        factory=dict, init=False
    )

    @classmethod
    def converged(
        cls,
        n: int,
        *,
        seed: int,
        config: MembershipConfig | None = None,
        lifeguard: bool = True,
        stream_fallback: bool = True,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.0005, 0.002),
        settle: float = 5.0,
    ) -> SwimCluster:
        """``n`` members that already know each other (a settled cluster)."""
        sim = Simulator(seed, latency=latency, loss=loss)
        cluster = cls(
            sim=sim,
            config=config or MembershipConfig(),
            lifeguard=lifeguard,
            stream_fallback=stream_fallback,
        )
        names = [node_name(i) for i in range(n)]
        snapshot = [
            Member(name=name, address=name, status=ALIVE, incarnation=0, metadata=b"")
            for name in names
        ]
        for name in names:
            core = cluster._new_core(name)
            core.add_known_members(sim.now, snapshot)
            cluster._attach(name, core)
        sim.run_for(settle)
        return cluster

    def _new_core(self, name: str, metadata: bytes = b"") -> SwimCore:
        return SwimCore(
            name=name,
            address=name,
            config=self.config,
            rng=self.sim.spawn_rng(),
            now=self.sim.now,
            metadata=metadata,
            lifeguard=self.lifeguard,
            stream_fallback=self.stream_fallback,
            seeds=[node_name(0)] if name != node_name(0) else [node_name(1)],
        )

    def _attach(self, name: str, core: SwimCore, *, restart: bool = False) -> None:
        host = SwimHost(core=core, on_event=self._record, on_probe=self._probe)
        self.hosts[name] = host
        if restart:
            self.sim.restart(name, host)
        else:
            self.sim.add(name, host)

    def _record(self, now: float, observer: str, change: MemberChange) -> None:
        if self.record_events:
            self.events.append(EventRecord(time=now, observer=observer, change=change))

    def _probe(self, started: float, prober: str, target: str) -> None:
        if self.probe_log is not None:
            self.probe_log.setdefault((prober, target), []).append(started)

    @property
    def now(self) -> float:
        return self.sim.now

    def names(self) -> list[str]:
        return list(self.hosts)

    def up(self) -> list[str]:
        return [name for name in self.hosts if self.sim.is_up(name)]

    def core(self, name: str) -> SwimCore:
        return self.hosts[name].core

    def crash(self, name: str) -> None:
        self.sim.crash(name)

    def restart(self, name: str, *, join: bool = True) -> SwimCore:
        """A fresh core (incarnation 0) under the same name and address."""
        self.restarts += 1
        core = self._new_core(name)
        self._attach(name, core, restart=True)
        if join:
            seeds = [s for s in (node_name(0), node_name(1)) if s != name]
            core.join(self.sim.now, seeds[:1])
            self.sim.wake(name)
        return core

    def view(self, observer: str, name: str) -> MemberStatus | None:
        return self.hosts[observer].core.status_of(name)

    def everyone_sees(self, name: str, status: MemberStatus, *, among: Iterable[str]) -> bool:
        """Whether every member of ``among`` (but ``name``) sees ``name`` in ``status``.

        Simulations ask this after every event while they wait, and the
        answer is mostly "no" for the same reason as last time: the member
        that did not see it then is asked first (when ``among`` is the same
        list or tuple), so a wait costs one look per event, not one per
        member. The answer is the same as asking every member in order.
        """
        hosts = self.hosts
        key = (name, status, id(among))
        cached = self._witnesses.get(key)
        if cached is not None:
            sequence, index = cached
            # Holding ``sequence`` keeps its id from naming another list;
            # the index is checked because a list can change.
            if sequence is among and index < len(sequence):
                observer = sequence[index]
                if observer != name and hosts[observer].core.status_of(name) is not status:
                    return False
        if not isinstance(among, list | tuple):
            return all(hosts[o].core.status_of(name) is status for o in among if o != name)
        for index, observer in enumerate(among):
            if observer != name and hosts[observer].core.status_of(name) is not status:
                self._witnesses[key] = (among, index)
                return False
        self._witnesses.pop(key, None)
        return True

    def max_datagram(self) -> int:
        return max(host.max_datagram for host in self.hosts.values())


@attrs.frozen
class Result:
    target: str
    criterion: str
    measured: str
    passed: bool | None  # None: informational

    def row(self) -> str:
        verdict = {True: "yes", False: "**no**", None: "n/a"}[self.passed]
        return f"| {self.target} | {self.criterion} | {self.measured} | {verdict} |"


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[index]


def suspicion_min(config: MembershipConfig, n: int) -> float:
    return config.suspicion_mult * max(1.0, math.log10(n)) * config.probe_interval


# -- M1 + M3: detection ---------------------------------------------------------------


@attrs.frozen
class DetectionSample:
    first_suspect: float
    all_dead: float


def detection_trials(
    n: int,
    trials: int,
    *,
    seed: int,
    lifeguard: bool = True,
    slow_fraction: float = 0.0,
    slow_delay: float = 0.0,
    config: MembershipConfig | None = None,
) -> list[DetectionSample]:
    """Crash a random member at a random phase; time to the first suspicion
    anywhere (M1) and to "dead" at every live member (M3). The crashed member
    is then restarted (it rejoins and refutes) before the next trial."""
    cluster = SwimCluster.converged(n, seed=seed, lifeguard=lifeguard, config=config)
    sim = cluster.sim
    slow = _make_slow(cluster, slow_fraction, slow_delay)
    rng = sim.spawn_rng()
    samples: list[DetectionSample] = []
    candidates = [name for name in cluster.names()[2:] if name not in slow] or cluster.names()[1:]
    for _ in range(trials):
        sim.run_for(rng.uniform(0.0, cluster.config.probe_interval))
        victim = rng.choice(candidates)
        observers = [name for name in cluster.up() if name != victim]
        start = sim.now
        mark = len(cluster.events)
        cluster.crash(victim)

        def suspected(victim: str = victim, seen: list[int] = [mark]) -> bool:  # noqa: B006
            # Events are only ever appended: look at each one once, not at
            # every event since the crash after every step.
            events = cluster.events
            for index in range(seen[0], len(events)):
                member = events[index].change.member
                if member.name == victim and member.status in (SUSPECT, DEAD):
                    return True
            seen[0] = len(events)
            return False

        sim.run_until_true(suspected, timeout=600.0)
        first = next(
            r.time
            for r in cluster.events[mark:]
            if r.change.member.name == victim and r.change.member.status in (SUSPECT, DEAD)
        )
        done = sim.run_until_true(
            functools.partial(cluster.everyone_sees, victim, DEAD, among=observers),
            timeout=600.0,
        )
        all_dead = sim.now - start if done else math.inf
        samples.append(DetectionSample(first_suspect=first - start, all_dead=all_dead))
        cluster.restart(victim)
        sim.run_until_true(
            functools.partial(cluster.everyone_sees, victim, ALIVE, among=observers),
            timeout=120.0,
        )
        sim.run_for(2.0)
    return samples


def _make_slow(cluster: SwimCluster, fraction: float, delay: float) -> set[str]:
    if fraction <= 0:
        return set()
    names = cluster.names()
    count = max(1, round(fraction * len(names)))
    slow = set(names[len(names) - count :])
    for name in slow:
        cluster.hosts[name].receive_delay = delay
    return slow


def measure_detection(sizes: Sequence[int], trials: dict[int, int], *, seed: int) -> list[Result]:
    config = MembershipConfig()
    t = config.probe_interval
    by_size = {n: detection_trials(n, trials[n], seed=seed + n) for n in sizes}
    results = []
    means = {
        n: statistics.fmean(s.first_suspect for s in samples) for n, samples in by_size.items()
    }
    for n in sizes:
        results.append(
            Result(
                "M1",
                f"N={n}: mean crash→first suspect ≤ 2.6 T ({trials[n]} trials)",
                f"{means[n]:.2f} T",
                means[n] <= 2.6 * t,
            )
        )
    if len(sizes) >= 2:
        low, high = means[sizes[0]], means[sizes[-1]]
        spread = abs(high - low) / low
        results.append(
            Result(
                "M1",
                f"means at N={sizes[0]} and N={sizes[-1]} within ±15%",
                f"{spread * 100:.0f}% apart",
                spread <= 0.15,
            )
        )
    for n in sizes:
        dead = [s.all_dead for s in by_size[n]]
        nominal = suspicion_min(config, n)
        p50_bound = nominal + 4 * t
        p100_bound = config.suspicion_max_timeout_mult * nominal + 4 * t
        p50, p100 = statistics.median(dead), max(dead)
        results.append(
            Result(
                "M3",
                f"N={n}: dead at all, p50 ≤ {p50_bound:.1f} s, max ≤ {p100_bound:.1f} s",
                f"p50 {p50:.1f} s, max {p100:.1f} s",
                p50 <= p50_bound and p100 <= p100_bound,
            )
        )
    return results


# -- M2: probe coverage ----------------------------------------------------------------------


def measure_probe_coverage(n: int, periods: int, *, seed: int) -> Result:
    cluster = SwimCluster.converged(n, seed=seed)
    cluster.probe_log = {}
    cluster.sim.run_for(periods * cluster.config.probe_interval)
    worst = 0.0
    for (_, _), starts in cluster.probe_log.items():
        for earlier, later in itertools.pairwise(starts):
            worst = max(worst, later - earlier)
    periods_gap = worst / cluster.config.probe_interval
    missing = n * (n - 1) - len(cluster.probe_log)
    return Result(
        "M2",
        f"N={n}: max gap between probes of a target ≤ 2N-1 = {2 * n - 1} periods",
        f"{periods_gap:.1f} periods; {missing} pairs never probed in {periods} periods",
        periods_gap <= 2 * n - 1 and missing == 0,
    )


# -- M5/M6: false positives --------------------------------------------------------------------


def swim_false_positive_rate(loss: float, k: int = 3) -> float:
    """SWIM's per-probe false-positive probability with every member healthy."""
    delivered = 1.0 - loss
    q = 1.0
    return q / (1 - math.exp(-q)) * (1 - delivered**2) * (1 - q * delivered**4) ** k


@attrs.frozen
class FalsePositiveCount:
    probes: int
    suspicions: int
    false_suspect_events: int
    false_dead_events: int


def false_positive_run(
    n: int, periods: int, loss: float, *, seed: int, stream_fallback: bool = True
) -> FalsePositiveCount:
    cluster = SwimCluster.converged(
        n, seed=seed, loss=loss, stream_fallback=stream_fallback, settle=10.0
    )
    for host in cluster.hosts.values():
        host.core.counters.clear()
    mark = len(cluster.events)
    cluster.sim.run_for(periods * cluster.config.probe_interval)
    probes = sum(h.core.counters["probes"] for h in cluster.hosts.values())
    suspicions = sum(h.core.counters["suspicions_raised"] for h in cluster.hosts.values())
    new = cluster.events[mark:]
    return FalsePositiveCount(
        probes=probes,
        suspicions=suspicions,
        false_suspect_events=sum(1 for r in new if r.change.member.status is SUSPECT),
        false_dead_events=sum(1 for r in new if r.change.member.status is DEAD),
    )


def measure_false_positives(
    n: int, periods: int, losses: Sequence[float], *, seed: int
) -> list[Result]:
    """False dead with the full protocol; at 5% loss and more, also the
    probe-level false-suspicion rate with UDP only (no stream fallback), the
    model SWIM's formula describes."""
    results = []
    for loss in losses:
        run = false_positive_run(n, periods, loss, seed=seed + int(loss * 1000))
        target = "M5" if loss <= 0.01 else "M6"
        results.append(
            Result(
                target,
                f"N={n}, {periods} periods, {loss:.0%} loss: 0 false dead",
                f"{run.false_dead_events} false dead; {run.suspicions} false suspicions "
                f"in {run.probes} probes",
                run.false_dead_events == 0,
            )
        )
        if loss >= 0.05:
            udp = false_positive_run(
                n, periods, loss, seed=seed + int(loss * 1000), stream_fallback=False
            )
            rate = udp.suspicions / max(1, udp.probes)
            bound = 2 * swim_false_positive_rate(loss)
            results.append(
                Result(
                    "M6",
                    f"{loss:.0%} loss, UDP only: false suspicions per probe ≤ 2x SWIM "
                    f"= {bound:.1e}; 0 false dead",
                    f"{rate:.1e} ({udp.suspicions} in {udp.probes} probes); "
                    f"{udp.false_dead_events} false dead",
                    rate <= bound and udp.false_dead_events == 0,
                )
            )
    return results


# -- M7: Lifeguard A/B ----------------------------------------------------------------------


@attrs.frozen
class SlowRun:
    false_dead: int
    false_suspect: int
    probes: int


def slow_nodes_run(
    n: int, periods: int, *, seed: int, lifeguard: bool, fraction: float, delay: float
) -> SlowRun:
    cluster = SwimCluster.converged(n, seed=seed, lifeguard=lifeguard, settle=5.0)
    slow = _make_slow(cluster, fraction, delay)
    mark = len(cluster.events)
    cluster.sim.run_for(periods * cluster.config.probe_interval)
    healthy_events = [r for r in cluster.events[mark:] if r.change.member.name not in slow]
    return SlowRun(
        false_dead=sum(1 for r in healthy_events if r.change.member.status is DEAD),
        false_suspect=sum(1 for r in healthy_events if r.change.member.status is SUSPECT),
        probes=sum(h.core.counters["probes"] for h in cluster.hosts.values()),
    )


def measure_lifeguard_ab(
    n: int, periods: int, *, seed: int, delay: float, detection_trials_count: int
) -> list[Result]:
    fraction = 0.1
    on = slow_nodes_run(n, periods, seed=seed, lifeguard=True, fraction=fraction, delay=delay)
    off = slow_nodes_run(n, periods, seed=seed, lifeguard=False, fraction=fraction, delay=delay)
    results = [
        Result(
            "M7",
            f"N={n}, 10% slow (receive lag {delay:g} s), {periods} periods: "
            "false dead of healthy ≥ 10x fewer with Lifeguard",
            f"off {off.false_dead} / on {on.false_dead} false dead "
            f"(false suspect events off {off.false_suspect} / on {on.false_suspect})",
            off.false_dead >= 10 * on.false_dead and off.false_dead > 0,
        )
    ]
    detect_on = detection_trials(
        n,
        detection_trials_count,
        seed=seed,
        lifeguard=True,
        slow_fraction=fraction,
        slow_delay=delay,
    )
    detect_off = detection_trials(
        n,
        detection_trials_count,
        seed=seed,
        lifeguard=False,
        slow_fraction=fraction,
        slow_delay=delay,
    )
    p50_on = statistics.median(s.all_dead for s in detect_on)
    p50_off = statistics.median(s.all_dead for s in detect_off)
    results.append(
        Result(
            "M7",
            "true failure: M3 p50 with Lifeguard not worse than without (+1 T slack)",
            f"on {p50_on:.1f} s / off {p50_off:.1f} s",
            p50_on <= p50_off + MembershipConfig().probe_interval,
        )
    )
    return results


# -- M9: refutation ----------------------------------------------------------------------------


def measure_refutation(n: int, trials: int, loss: float, *, seed: int) -> Result:
    cluster = SwimCluster.converged(n, seed=seed, loss=loss, settle=10.0)
    sim = cluster.sim
    rng = sim.spawn_rng()
    bound = suspicion_min(cluster.config, n)
    times: list[float] = []
    deaths = 0
    for _ in range(trials):
        sim.run_for(rng.uniform(0.5, 2.0))
        names = cluster.names()
        accused = rng.choice(names)
        accuser = rng.choice([name for name in names if name != accused])
        old = cluster.core(accused).incarnation
        mark = len(cluster.events)
        _inject_suspicion(cluster, accuser, accused, old)
        start = sim.now

        def refuted(
            accused: str = accused, accuser: str = accuser, old: int = old, names: list[str] = names
        ) -> bool:
            # The accuser has the refutation and nobody suspects any more
            # (members that never heard the suspicion saw it alive throughout).
            view = cluster.core(accuser).member(accused) or _NOBODY
            return view.incarnation > old and all(
                cluster.core(o).status_of(accused) is ALIVE for o in names if o != accused
            )

        ok = sim.run_until_true(refuted, timeout=bound)
        took = sim.now - start if ok else math.inf
        # Still alive everywhere once the nominal suspicion timeout has passed?
        sim.run_until(start + bound)
        if not refuted():
            took = math.inf
        times.append(took)
        sim.run_until_true(refuted, timeout=10 * bound)
        deaths += sum(
            1
            for r in cluster.events[mark:]
            if r.change.member.name == accused and r.change.member.status is DEAD
        )
    within = sum(1 for t in times if t <= bound)
    finite = [t for t in times if t != math.inf] or [math.inf]
    return Result(
        "M9",
        f"N={n}, {loss:.0%} loss: falsely suspected member alive again at all "
        f"within SuspicionMin = {bound:.1f} s, 100% of {trials}",
        f"{within}/{trials}; p50 {statistics.median(finite):.2f} s, max {max(finite):.2f} s "
        f"(of those in time); {deaths} deaths",
        within == trials,
    )


_NOBODY = Member(name="-", address="-", status=DEAD, incarnation=-1, metadata=b"")


def _inject_suspicion(cluster: SwimCluster, accuser: str, accused: str, incarnation: int) -> None:
    """Make ``accuser`` believe ``accused`` failed a probe (a false positive)."""
    from .._proto import swim_wire as wire

    payload = wire.pack([wire.encode(wire.Suspect(accused, incarnation, accuser))])
    host = cluster.hosts[accuser]
    host._now = cluster.now  # events from this call carry the right time
    host.core.datagram_received(cluster.now, accuser, payload)
    cluster.sim.wake(accuser)


# -- M10: dissemination --------------------------------------------------------------------------


def measure_dissemination(n: int, trials: int, loss: float, *, seed: int) -> list[Result]:
    """One metadata update at a random member per trial; gossip rounds until
    every member has it. Updates that gossip leaves short of 100% (the
    retransmit budget ran out) must be repaired by push-pull within one
    (size-scaled) push-pull interval."""
    cluster = SwimCluster.converged(n, seed=seed, loss=loss, settle=10.0)
    sim = cluster.sim
    rng = sim.spawn_rng()
    rounds: list[float] = []
    interval = cluster.config.gossip_interval
    push_pull = cluster.core(node_name(0))._push_pull_interval()
    for trial in range(trials):
        sim.run_for(rng.uniform(1.0, 3.0))
        names = cluster.names()
        origin = rng.choice(names)
        core = cluster.core(origin)
        core.update_metadata(sim.now, f"v{trial}".encode())
        sim.wake(origin)
        incarnation = core.incarnation
        start = sim.now

        def informed(
            origin: str = origin,
            incarnation: int = incarnation,
            names: list[str] = names,
            witness: list[int] = [0],  # noqa: B006
        ) -> bool:
            def behind(name: str) -> bool:
                return (cluster.core(name).member(origin) or _NOBODY).incarnation < incarnation

            # Asked after every event: the member that was behind last time
            # is asked first (usually still behind), then everyone in order.
            if behind(names[witness[0]]):
                return False
            for index, name in enumerate(names):
                if behind(name):
                    witness[0] = index
                    return False
            return True

        ok = sim.run_until_true(informed, timeout=4 * push_pull)
        rounds.append((sim.now - start) / interval if ok else math.inf)
    log_n = math.ceil(math.log2(n))
    factor = 2 if loss == 0 else 3
    bound = factor * log_n
    # Updates gossip left short of 100% within the bound (the retransmit
    # budget ran out first): push-pull must finish the job.
    stragglers = [r * interval for r in rounds if r > bound]
    p99 = percentile(rounds, 99)
    results = [
        Result(
            "M10",
            f"N={n}, {loss:.0%} loss: p99 rounds to 100% ≤ {factor}·⌈log2 N⌉ = {bound}",
            f"p99 {p99:.1f}, p50 {statistics.median(rounds):.1f} rounds ({trials} updates); "
            f"{len(stragglers)} finished by push-pull",
            p99 <= bound,
        )
    ]
    if stragglers:
        results.append(
            Result(
                "M10",
                f"N={n}, {loss:.0%} loss: stragglers repaired by push-pull within "
                f"{push_pull:.0f} s",
                f"{len(stragglers)} of {trials} updates; slowest {max(stragglers):.1f} s",
                max(stragglers) <= push_pull + bound * interval,
            )
        )
    return results


# -- M11: load; M12: packet size -------------------------------------------------------------------


def load_run(n: int, seconds: float, *, seed: int) -> tuple[float, float, int]:
    """(UDP bytes/s per member, stream bytes/s per member, largest datagram)."""
    cluster = SwimCluster.converged(n, seed=seed, settle=30.0)
    cluster.sim.stats.reset()
    cluster.sim.run_for(seconds)
    total = cluster.sim.stats.total()
    return (
        total.datagram_bytes_sent / n / seconds,
        total.stream_bytes_sent / n / seconds,
        cluster.max_datagram(),
    )


def join_storm(n: int, *, seed: int, metadata_size: int = 512) -> tuple[float, int]:
    """``n`` members with full metadata join one seed 10 ms apart; (seconds
    until everyone sees all ``n`` alive, largest datagram sent)."""
    sim = Simulator(seed)
    cluster = SwimCluster(sim=sim, config=MembershipConfig(), record_events=False)
    names = [node_name(i) for i in range(n)]
    for i, name in enumerate(names):
        core = cluster._new_core(name, metadata=bytes([i % 256]) * metadata_size)
        cluster._attach(name, core)
        if i:
            core.join(sim.now, [names[0]])
            sim.wake(name)
        sim.run_for(0.01)
    start = sim.now
    ok = sim.run_until_true(
        lambda: all(cluster.core(name).alive_count() == n for name in names), timeout=300.0
    )
    return (sim.now - start if ok else math.inf), cluster.max_datagram()


def measure_load(sizes: Sequence[int], seconds: float, *, seed: int) -> list[Result]:
    runs = {n: load_run(n, seconds, seed=seed + n) for n in sizes}
    udp = [runs[n][0] for n in sizes]
    spread = (max(udp) - min(udp)) / statistics.fmean(udp)
    limit = 2 * 1400 * 3 / 0.2
    detail = ", ".join(
        f"N={n}: {runs[n][0]:.0f} B/s UDP + {runs[n][1]:.0f} B/s push-pull" for n in sizes
    )
    storm_n = sizes[-1]
    converge, storm_largest = join_storm(storm_n, seed=seed)
    largest = max(storm_largest, *(runs[n][2] for n in sizes))
    budget = 1400 - 32
    return [
        Result(
            "M11",
            f"UDP bytes/s per member within ±20% across N, ≤ {limit / 1000:.0f} KB/s",
            f"{detail}; spread {spread * 100:.0f}%",
            spread <= 0.4 and max(udp) <= limit,
        ),
        Result(
            "M12",
            f"every datagram ≤ {budget} B (1400 - 32 B tag), incl. a join storm of "
            f"{storm_n} members with 512 B metadata",
            f"largest {largest} B; the storm converged in {converge:.1f} s",
            largest <= budget,
        ),
    ]


# -- the suite ------------------------------------------------------------------------------------


def run_all(*, full: bool = False, seed: int = 1) -> list[Result]:
    """Every target; CI-sized unless ``full``."""
    results: list[Result] = []
    if full:
        sizes = [8, 32, 128, 1000]
        detection = {8: 1000, 32: 1000, 128: 300, 1000: 30}
    else:
        sizes = [8, 32, 128]
        detection = {8: 300, 32: 100, 128: 100}
    results += measure_detection(sizes, detection, seed=seed)
    results.append(measure_probe_coverage(32, 200 if not full else 2000, seed=seed))
    periods = 10_000 if full else 600
    results += measure_false_positives(32, periods, [0.0, 0.01, 0.05, 0.10], seed=seed)
    results += measure_lifeguard_ab(
        32,
        2000 if full else 300,
        seed=seed,
        delay=8.0,
        detection_trials_count=100 if full else 10,
    )
    results.append(measure_refutation(32, 1000 if full else 40, 0.05, seed=seed))
    for n in [32, 128, 512] if full else [32, 128]:
        for loss in (0.0, 0.10):
            results += measure_dissemination(n, 200 if full else 20, loss, seed=seed + n)
    results += measure_load([8, 32, 128], 300.0 if full else 120.0, seed=seed)
    return results


def table(results: Iterable[Result]) -> str:
    lines = ["| target | criterion | measured | pass |", "|---|---|---|---|"]
    lines += [result.row() for result in results]
    return "\n".join(lines)
