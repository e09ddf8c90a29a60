"""Raft-lite election scenarios on the deterministic simulator (targets R1-R8).

:class:`ElectionHost` adapts one :class:`~trio_distribute._proto.raft.ElectionCore`
to the simulator: messages travel encoded on the ``"stream"`` channel (they
go over TCP in a real node), :class:`~trio_distribute._proto.raft.Persist`
actions are written at once to an in-simulation "disk" (a dict that survives
restarts when the cluster runs with state-dir semantics), and a restarted
node without a disk abstains for ``2E``, as the node driver does.

:class:`Oracle` checks, after every simulator event, that no term has two
leaders (a node "acts as leader" when it sends heartbeats or reports itself
leader, as hashicorp/raft's fuzzy ``appendEntriesVerifier`` does) and that no
voter grants two candidates a vote in one term, across restarts.

Each ``r*`` function runs one target's scenario and returns plain numbers;
:mod:`benchmarks.sim_election` turns them into the results table and
``tests/sim/test_election_sim.py`` asserts CI-sized versions. Times in the
results are in units of ``E`` (the election timeout) unless a name says
otherwise.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from trio_distribute._proto.raft import (
    ElectionCore,
    Heartbeat,
    LeaderChange,
    Message,
    Persist,
    Role,
    Send,
    VoteReply,
    decode_message,
    encode_message,
)
from trio_distribute.testing.simulator import Outgoing, Simulator

#: How many decoded messages the hosts of one cluster keep (then start over).
_DECODED_KEPT: Final = 4096

__all__ = [
    "FLAVORS",
    "FORMATIONS",
    "ElectionCluster",
    "ElectionHost",
    "FailoverResult",
    "FencingResult",
    "FormationResult",
    "Oracle",
    "RejoinResult",
    "ReplacementResult",
    "SafetyResult",
    "StepDownResult",
    "election_scale",
    "formation_safety",
    "r1_safety",
    "r2_failover",
    "r3_timeout_conflicts",
    "r4_rejoin",
    "r5_step_down",
    "r6_stability",
    "r7_restart_safety",
    "r8_fencing",
    "run_formation",
    "run_schedule",
    "voter_replacement",
]

NAMES: Final = ("n1", "n2", "n3", "n4", "n5")
STORE: Final = "store"


# ------------------------------------------------------------------ oracle


@attrs.define(eq=False, kw_only=True)
class Oracle:
    """Election safety (R1) and one vote per term (R7), checked continuously."""

    leaders_by_term: dict[int, set[str]] = attrs.field(factory=dict)
    grants: dict[tuple[str, int], set[str]] = attrs.field(factory=dict)
    violations: list[str] = attrs.field(factory=list)
    #: Terms in which two up nodes believed they led at the same instant
    #: (the sharper failure: not just a reused term, two live leaders).
    concurrent_terms: set[int] = attrs.field(factory=set)

    def leader_acted(self, now: float, term: int, name: str) -> None:
        leaders = self.leaders_by_term.setdefault(term, set())
        if name not in leaders:
            leaders.add(name)
            if len(leaders) > 1:
                self.violations.append(f"t={now:.4f}: term {term} has leaders {sorted(leaders)}")

    def vote_granted(self, now: float, voter: str, term: int, candidate: str) -> None:
        granted = self.grants.setdefault((voter, term), set())
        if candidate not in granted:
            granted.add(candidate)
            if len(granted) > 1:
                self.violations.append(
                    f"t={now:.4f}: {voter} voted for {sorted(granted)} in term {term}"
                )

    @property
    def two_leader_terms(self) -> int:
        return sum(len(leaders) > 1 for leaders in self.leaders_by_term.values())

    @property
    def double_votes(self) -> int:
        return sum(len(granted) > 1 for granted in self.grants.values())


# ------------------------------------------------------------------ host


@attrs.define(eq=False, kw_only=True)
class ElectionHost:
    """A :class:`~trio_distribute.testing.simulator.SimHost` around one core."""

    name: str
    core: ElectionCore
    oracle: Oracle
    disk: dict[str, Persist] | None
    #: If set, the address of this node's application: whenever the node
    #: sends heartbeats as leader it tells the application ``(term, name)``
    #: (the moment an application would act on its leadership).
    app: str | None = None
    events: list[tuple[float, LeaderChange]] = attrs.field(factory=list)
    #: If set, timers fire only on multiples of this (a driver that ticks
    #: the core periodically, as etcd's does), not at the exact deadline.
    tick: float | None = None
    #: Messages already decoded, by their bytes, shared by the cluster's
    #: hosts: a leader sends the same heartbeat bytes to every voter, and
    #: decoding is a pure function of the bytes (the messages are frozen).
    decoded: dict[bytes, Message] = attrs.field(factory=dict)
    decode_errors: int = 0
    _outgoing: list[Outgoing] = attrs.field(factory=list)

    def datagram_received(self, now: float, source: str, payload: object) -> None:
        self.decode_errors += 1  # elections never use datagrams

    def stream_received(self, now: float, source: str, payload: object) -> None:
        assert isinstance(payload, bytes)
        message = self.decoded.get(payload)
        if message is None:
            if len(self.decoded) >= _DECODED_KEPT:
                self.decoded.clear()
            message = self.decoded[payload] = decode_message(payload)
        self.core.receive(now, source, message)
        self._drain(now)

    def timer(self, now: float) -> None:
        self.core.tick(now)
        self._drain(now)

    def next_deadline(self) -> float | None:
        deadline = self.core.next_deadline()
        if deadline is None or self.tick is None:
            return deadline
        due = math.ceil(deadline / self.tick) * self.tick
        return due if due >= deadline else due + self.tick  # rounding in the division

    def take_outgoing(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        return out

    def flush(self, now: float) -> None:
        """Queue what the core did outside a simulator callback (``observe``)."""
        self._drain(now)

    def _drain(self, now: float) -> None:
        led = False
        # A leader sends one heartbeat object to every voter: encode it once.
        last: object = None
        encoded = b""
        for action in self.core.take_actions():
            if isinstance(action, Persist):
                if self.disk is not None:
                    self.disk[self.name] = action
                continue
            assert isinstance(action, Send)
            message = action.message
            if isinstance(message, Heartbeat):
                self.oracle.leader_acted(now, message.term, self.name)
                led = True
            elif isinstance(message, VoteReply) and message.granted:
                self.oracle.vote_granted(now, self.name, message.term, action.to)
            if message is not last:
                last, encoded = message, encode_message(message)
            self._outgoing.append(Outgoing("stream", action.to, encoded))
        for event in self.core.take_events():
            self.events.append((now, event))
        if led and self.app is not None:
            self._outgoing.append(Outgoing("stream", self.app, (self.core.term, self.name)))


# ------------------------------------------------------------------ cluster


@attrs.define(eq=False, kw_only=True)
class ElectionCluster:
    """``n`` voters on one simulator, with crash/restart and invariant checks.

    ``persist=True`` models ``config.state_dir``: ``(term, voted_for)``
    survives a restart. Otherwise a restarted node starts at term 0 and
    abstains until ``now + 2E``.
    """

    seed: int
    n: int = 5
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    persist: bool = True
    pre_vote: bool = True
    check_quorum: bool = True
    latency: tuple[float, float] = (0.0005, 0.002)
    sim: Simulator = attrs.field(init=False)
    oracle: Oracle = attrs.field(factory=Oracle, init=False)
    disk: dict[str, Persist] = attrs.field(factory=dict, init=False)
    hosts: dict[str, ElectionHost] = attrs.field(factory=dict, init=False)
    names: list[str] = attrs.field(init=False)
    #: Leaders tell an application host at "<name>/app" (see r8_fencing).
    with_apps: bool = False
    #: Without ``persist``, restarted nodes abstain for 2 E; False models a
    #: broken driver that forgets its vote and votes again at once.
    abstain: bool = True
    #: Timer granularity of every host (None: exact deadlines).
    tick: float | None = None
    #: The voter cap (None: all ``n`` vote). With a cap the first
    #: ``max_voters`` names start as the static voter set, the rest as
    #: learners, and the cluster plays membership: every up core is told
    #: who is up (``alive``) and who crashed (``failed``) at each crash and
    #: restart, so leaders replace dead voters.
    max_voters: int | None = None
    learner_interval: float | None = None
    #: Run the oracle's check after every event (it looks at every node:
    #: off for the scale runs, where the per-message oracle still runs).
    check: bool = True
    _decoded: dict[bytes, Message] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.sim = Simulator(self.seed, latency=self.latency)
        self.names = [f"n{i + 1}" for i in range(self.n)]
        if self.check:
            self.sim.observe(self._check)

    @property
    def e(self) -> float:
        return self.election_timeout

    def start(self) -> None:
        for name in self.names:
            self.sim.add(name, self._host(name, persisted=None, abstain_until=None))
        self.tell()

    def tell(self) -> None:
        """With a cap: membership's view (who is up, who crashed) to every up core."""
        if self.max_voters is None:
            return
        up = frozenset(self.up())
        failed = frozenset(self.names) - up
        for name in sorted(up):
            self.core(name).observe(self.sim.now, known=self.names, alive=up, failed=failed)
            self.hosts[name].flush(self.sim.now)
            self.sim.wake(name)

    def _host(
        self,
        name: str,
        *,
        persisted: Persist | None,
        abstain_until: float | None,
        voters: Iterable[str] | None = None,
        bootstrap_expect: int = 1,
    ) -> ElectionHost:
        if voters is None:
            voters = self.names if self.max_voters is None else self.names[: self.max_voters]
        core = ElectionCore(
            bootstrap_expect=bootstrap_expect,
            max_voters=self.max_voters,
            learner_interval=self.learner_interval,
            name=name,
            voters=voters,
            election_timeout=self.election_timeout,
            heartbeat_interval=self.heartbeat_interval,
            rng=self.sim.spawn_rng(),
            now=self.sim.now,
            persisted=persisted,
            abstain_until=abstain_until,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
        )
        host = ElectionHost(
            name=name,
            core=core,
            oracle=self.oracle,
            decoded=self._decoded,
            disk=self.disk if self.persist else None,
            app=f"{name}/app" if self.with_apps else None,
            tick=self.tick,
        )
        self.hosts[name] = host
        return host

    def crash(self, name: str) -> None:
        self.sim.crash(name)
        self.tell()

    def restart(self, name: str) -> None:
        if self.persist:
            host = self._host(name, persisted=self.disk.get(name), abstain_until=None)
        else:
            abstain_until = self.sim.now + 2 * self.e if self.abstain else None
            host = self._host(name, persisted=None, abstain_until=abstain_until)
        self.sim.restart(name, host)
        self.tell()

    def up(self) -> list[str]:
        return [name for name in self.names if self.sim.is_up(name)]

    def core(self, name: str) -> ElectionCore:
        return self.hosts[name].core

    def leader(self) -> str | None:
        """The up node that believes it leads, in the highest term."""
        leaders = [n for n in self.up() if self.core(n).is_leader]
        return max(leaders, key=lambda n: self.core(n).term, default=None)

    def acknowledged_leader(self) -> str | None:
        """A leader that a majority of the voters (itself included) follows."""
        leader = self.leader()
        if leader is None:
            return None
        term = self.core(leader).term
        followers = sum(
            1 for n in self.up() if self.core(n).leader == leader and self.core(n).term == term
        )
        return leader if followers >= self.n // 2 + 1 else None

    def wait_for_leader(self, timeout: float) -> bool:
        """Run until a leader is acknowledged by a majority (or ``timeout``)."""
        return self.sim.run_until_true(
            lambda: self.acknowledged_leader() is not None, timeout=timeout
        )

    def wait_for_leader_among(self, names: Sequence[str], timeout: float) -> bool:
        """Run until one of ``names`` believes it leads (or ``timeout``)."""
        group = [n for n in names if self.sim.is_up(n)]
        return self.sim.run_until_true(
            lambda: any(self.core(n).is_leader for n in group), timeout=timeout
        )

    def wait_for_step_down(self, name: str, timeout: float) -> bool:
        """Run until ``name`` no longer believes it leads (or ``timeout``)."""
        core = self.core(name)
        return self.sim.run_until_true(lambda: not core.is_leader, timeout=timeout)

    def heal(self) -> None:
        """Undo every network fault and restart every crashed voter."""
        self.sim.heal()
        for name in self.names:
            if not self.sim.is_up(name):
                self.restart(name)

    def leader_changes(self, names: Sequence[str], since: float) -> int:
        """LeaderChange events seen by ``names`` after ``since``."""
        return sum(1 for n in names for t, _ in self.hosts[n].events if t > since)

    def _check(self) -> None:
        terms: set[int] = set()
        for name in self.sim.addresses():
            host = self.hosts.get(name)
            if host is not None and host.core.role is Role.LEADER:
                term = host.core.term
                self.oracle.leader_acted(self.sim.now, term, name)
                if term in terms:
                    self.oracle.concurrent_terms.add(term)
                terms.add(term)


# ------------------------------------------------------------------ R1: safety under faults

FLAVORS: Final = (
    "halves",
    "isolate-leader",
    "majorities-ring",
    "bridge",
    "one-way",
    "pause",
    "kill-restart",
    "mixed",
)


@attrs.frozen
class SafetyResult:
    schedules: int
    terms_with_leader: int
    two_leader_terms: int
    double_votes: int
    no_leader_after_heal: int
    violations: tuple[str, ...]
    #: Of the two-leader terms, those whose two leaders were alive and
    #: leading at the same instant (the rest reused a term after restarts).
    concurrent_two_leader_terms: int = 0


def _apply_fault(cluster: ElectionCluster, kind: str, rng: random.Random) -> None:
    sim, names, e = cluster.sim, cluster.names, cluster.e
    if kind == "halves":
        sim.partition(rng.sample(names, len(names) // 2))
    elif kind == "isolate-leader":
        sim.partition([cluster.leader() or rng.choice(names)])
    elif kind == "majorities-ring":
        ring = rng.sample(names, len(names))
        reach = len(names) // 2 // 2 or 1
        for i, j in itertools.permutations(range(len(ring)), 2):
            distance = min((i - j) % len(ring), (j - i) % len(ring))
            if distance > reach:
                sim.block(ring[i], ring[j])
    elif kind == "bridge":
        order = rng.sample(names, len(names))
        half = len(order) // 2
        left, right = order[:half], order[half + 1 :]
        for a, b in itertools.product(left, right):
            sim.block(a, b)
            sim.block(b, a)
    elif kind == "one-way":
        for _ in range(rng.randint(1, 4)):
            source, destination = rng.sample(names, 2)
            leader = cluster.leader()
            if leader is not None and rng.random() < 0.5:
                source = leader if rng.random() < 0.5 else source
            if source != destination:
                sim.block(source, destination)
    elif kind == "pause":
        up = cluster.up()
        victim = cluster.leader() if rng.random() < 0.5 else None
        victim = victim or rng.choice(up)
        sim.pause(victim, rng.uniform(0.2 * e, 3 * e))
    elif kind == "kill-restart":
        # Aim at an election in progress: wait for a (pre-)candidate, then
        # kill it or a voter, and bring the victim back soon after.
        sim.run_until_true(
            lambda: any(
                cluster.core(n).role in (Role.CANDIDATE, Role.PRE_CANDIDATE) for n in cluster.up()
            ),
            timeout=3 * e,
        )
        up = cluster.up()
        if len(up) > 1:
            candidates = [n for n in up if cluster.core(n).role is not Role.FOLLOWER]
            victim = rng.choice(candidates if candidates and rng.random() < 0.5 else up)
            cluster.crash(victim)
            sim.run_for(rng.uniform(0.0, e))
            if rng.random() < 0.8:
                cluster.restart(victim)
    else:  # pragma: no cover - a typo in a scenario
        raise ValueError(f"unknown fault {kind!r}")


def run_schedule(
    seed: int,
    *,
    persist: bool = True,
    abstain: bool = True,
    n: int = 5,
    phases: int = 5,
    flavor: str | None = None,
    max_voters: int | None = None,
) -> ElectionCluster:
    """One seeded fault schedule; returns the cluster (its oracle has the
    verdict). With ``max_voters`` the cluster has learners and plays
    membership (crashed nodes are reported failed), so voters are replaced
    while the faults go on."""
    rng = random.Random(seed)
    flavor = flavor or FLAVORS[seed % len(FLAVORS)]
    e = 0.3
    latency = (0.0005, 0.002) if rng.random() < 0.5 else (0.001, e / 6)
    cluster = ElectionCluster(
        seed=seed, n=n, election_timeout=e, heartbeat_interval=0.05, persist=persist,
        abstain=abstain, latency=latency, max_voters=max_voters,
        learner_interval=None if max_voters is None else 2 * e,
    )  # fmt: skip
    cluster.start()
    cluster.sim.run_for(rng.uniform(0.5 * e, 3 * e))
    for _ in range(phases):
        kind = rng.choice(FLAVORS[:-1]) if flavor == "mixed" else flavor
        _apply_fault(cluster, kind, rng)
        cluster.sim.run_for(rng.uniform(0.5 * e, 4 * e))
        if rng.random() < 0.4:
            cluster.heal()
            cluster.sim.run_for(rng.uniform(0.0, 2 * e))
    cluster.heal()
    cluster.wait_for_leader(12 * e)
    return cluster


def r1_safety(
    schedules: int,
    *,
    first_seed: int = 0,
    persist: bool = True,
    n: int = 5,
    max_voters: int | None = None,
) -> SafetyResult:
    return _safety(
        run_schedule(seed, persist=persist, n=n, max_voters=max_voters)
        for seed in range(first_seed, first_seed + schedules)
    )


def _safety(clusters: Iterable[ElectionCluster]) -> SafetyResult:
    """Sum the oracles' verdicts, one cluster at a time (they are dropped as we go)."""
    violations: list[str] = []
    count = terms = two = double = leaderless = concurrent = 0
    for cluster in clusters:
        count += 1
        oracle = cluster.oracle
        terms += len(oracle.leaders_by_term)
        two += oracle.two_leader_terms
        double += oracle.double_votes
        concurrent += len(oracle.concurrent_terms)
        leaderless += cluster.acknowledged_leader() is None
        violations += [f"seed {cluster.seed}: {v}" for v in oracle.violations]
    return SafetyResult(count, terms, two, double, leaderless, tuple(violations), concurrent)


# ------------------------------------------------------------------ R2/R3/R6: failover


@attrs.frozen
class FailoverResult:
    trials: int
    latencies: tuple[float, ...]  # seconds from crash to a majority-acknowledged new leader
    failed: int  # no new leader within 10 E
    election_rounds: tuple[int, ...]  # terms used per failover
    leader_changes: tuple[int, ...]  # distinct new leaders seen per failover
    election_timeout: float
    rtt: float

    def quantile(self, q: float) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(q * len(values)))]


def r2_failover(
    trials: int,
    *,
    adversarial: bool = False,
    first_seed: int = 0,
    n: int = 5,
    ticks: int | None = None,
) -> FailoverResult:
    """Crash a settled leader; time until a new leader is acknowledged by a majority.

    Plain: the crash falls at a random point of the heartbeat period, with
    0.5-2 ms link latency. Adversarial (Raft paper Fig. 16): links have a
    fixed latency, so every heartbeat restarts all follower timers at the
    same instant, and the leader crashes at the instant of a heartbeat
    broadcast (that last burst dies with it, as TCP data in flight does when
    the simulator's sender goes down: the previous one was the last heard).
    ``ticks``: timers fire only every ``E / ticks`` (etcd-style tick driver),
    which makes simultaneous timeouts, hence split votes, far more likely.
    """
    e, h = 1.0, 0.1
    latency = (0.001, 0.001) if adversarial else (0.0005, 0.002)
    latencies: list[float] = []
    rounds: list[int] = []
    changes: list[int] = []
    failed = 0
    for seed in range(first_seed, first_seed + trials):
        rng = random.Random(seed)
        cluster = ElectionCluster(
            seed=seed,
            n=n,
            election_timeout=e,
            heartbeat_interval=h,
            latency=latency,
            tick=None if ticks is None else e / ticks,
        )
        cluster.start()
        cluster.wait_for_leader(20)
        cluster.sim.run_for(rng.uniform(2 * e, 4 * e))
        old = cluster.leader()
        assert old is not None
        old_term = cluster.core(old).term
        if adversarial:
            # Run to the leader's next heartbeat, crash just after it went out.
            deadline = cluster.core(old).next_deadline()
            assert deadline is not None
            cluster.sim.run_until(deadline)
        else:
            cluster.sim.run_for(rng.uniform(0, h))
        crashed_at = cluster.sim.now
        cluster.crash(old)
        survivors = [x for x in cluster.names if x != old]
        if cluster.wait_for_leader(10 * e):
            latencies.append(cluster.sim.now - crashed_at)
            new = cluster.leader()
            assert new is not None
            rounds.append(cluster.core(new).term - old_term)
            cluster.sim.run_for(2 * e)
            seen = {
                ev.leader
                for x in survivors
                for t, ev in cluster.hosts[x].events
                if t > crashed_at and ev.leader is not None
            }
            changes.append(len(seen))
        else:
            failed += 1
    return FailoverResult(
        trials, tuple(latencies), failed, tuple(rounds), tuple(changes), e, 2 * latency[1]
    )


def r3_timeout_conflicts(rounds: int, *, n: int = 5, ticks: int = 10, seed: int = 0) -> float:
    """etcd's testNonleadersElectionTimeoutNonconflict: the share of rounds in
    which two or more of ``n`` fresh followers time out on the same first tick
    (timeouts drawn by the core, quantized to ``E / ticks``)."""
    rng = random.Random(seed)
    e = 1.0
    tick = e / ticks
    conflicts = 0
    for _ in range(rounds):
        first_ticks = []
        for i in range(n):
            core = ElectionCore(
                name=f"n{i}",
                voters=[f"n{j}" for j in range(n)],
                election_timeout=e,
                heartbeat_interval=0.1,
                rng=random.Random(rng.getrandbits(64)),
                now=0.0,
            )
            deadline = core.next_deadline()
            assert deadline is not None
            first_ticks.append(int(deadline // tick) + 1)  # the tick that notices it
        earliest = min(first_ticks)
        conflicts += first_ticks.count(earliest) >= 2
    return conflicts / rounds


def r6_stability(duration: float, *, seed: int = 0, n: int = 5) -> tuple[int, int]:
    """Fault-free run for ``duration`` virtual seconds at E = 1 s:
    (leader changes after the first election, elections won)."""
    cluster = ElectionCluster(seed=seed, n=n)
    cluster.start()
    cluster.wait_for_leader(20)
    settled = cluster.sim.now + 1.0
    cluster.sim.run_until(settled)
    cluster.sim.run_until(settled + duration)
    return (
        cluster.leader_changes(cluster.names, settled),
        len(cluster.oracle.leaders_by_term),
    )


# ------------------------------------------------------------------ R4: rejoin


@attrs.frozen
class RejoinResult:
    trials: int
    term_changed: int
    leader_changes: int
    isolated_term_bumps: int  # how far the isolated node's term moved (pre-vote: 0)


def r4_rejoin(trials: int, *, first_seed: int = 0, pre_vote: bool = True) -> RejoinResult:
    """Isolate a follower for 10 E, heal, watch the majority for 5 E."""
    term_changed = changes = bumps = 0
    for seed in range(first_seed, first_seed + trials):
        rng = random.Random(seed)
        cluster = ElectionCluster(seed=seed, pre_vote=pre_vote)
        cluster.start()
        cluster.wait_for_leader(20)
        cluster.sim.run_for(rng.uniform(1.0, 2.0))
        leader = cluster.leader()
        assert leader is not None
        term = cluster.core(leader).term
        isolated = rng.choice([x for x in cluster.names if x != leader])
        majority = [x for x in cluster.names if x != isolated]
        cluster.sim.partition([isolated])
        cluster.sim.run_for(10 * cluster.e)
        bumps += cluster.core(isolated).term - term
        healed = cluster.sim.now
        cluster.sim.heal()
        cluster.sim.run_for(5 * cluster.e)
        term_changed += any(cluster.core(x).term != term for x in majority)
        changes += cluster.leader_changes(majority, healed)
    return RejoinResult(trials, term_changed, changes, bumps)


# ------------------------------------------------------------------ R5: deposed leader


@attrs.frozen
class StepDownResult:
    trials: int
    lease: float
    delays: tuple[float, ...]  # partition -> old leader steps down (s)
    gaps: tuple[float, ...]  # old leader stepped down -> new leader elected (s)
    never_stepped_down: int


def r5_step_down(trials: int, *, first_seed: int = 0) -> StepDownResult:
    """Cut the leader (with one follower) off from the majority of 5."""
    delays: list[float] = []
    gaps: list[float] = []
    never = 0
    lease = 0.0
    for seed in range(first_seed, first_seed + trials):
        rng = random.Random(seed)
        cluster = ElectionCluster(seed=seed)
        cluster.start()
        cluster.wait_for_leader(20)
        cluster.sim.run_for(rng.uniform(1.0, 2.0))
        old = cluster.leader()
        assert old is not None
        lease = cluster.core(old).lease_timeout
        minority = [old, *rng.sample([x for x in cluster.names if x != old], rng.randint(0, 1))]
        cluster.sim.partition(minority)
        cut = cluster.sim.now
        if not cluster.wait_for_step_down(old, 10):
            never += 1
            continue
        stepped = cluster.sim.now
        delays.append(stepped - cut)
        # A majority-side leader elected before this instant would make the
        # gap 0 (run_until_true checks first): the lease windows overlapped.
        if cluster.wait_for_leader_among([x for x in cluster.names if x not in minority], 10):
            gaps.append(cluster.sim.now - stepped)
    return StepDownResult(trials, lease, tuple(delays), tuple(gaps), never)


# ------------------------------------------------------------------ R7: restarts


def r7_restart_safety(
    schedules: int, *, persist: bool, abstain: bool = True, first_seed: int = 0
) -> SafetyResult:
    """Kill/restart voters mid-election (the kill-restart and mixed flavors)."""
    return _safety(
        run_schedule(
            seed,
            persist=persist,
            abstain=abstain,
            flavor="kill-restart" if seed % 2 == 0 else "mixed",
            phases=8,
        )
        for seed in range(first_seed, first_seed + schedules)
    )


# ------------------------------------------------------------------ R8: fencing


@attrs.frozen
class FencingResult:
    trials: int
    writes: int  # writes that reached the store
    stale_arrivals: int  # arrived after a write of a higher term: refused by fencing
    token_conflicts: int  # terms whose writes came from two nodes (must be 0)
    not_the_leader: int  # writes whose term the oracle saw led by someone else (must be 0)
    history_monotone: bool  # the terms the store applied never decrease


@attrs.define(eq=False, kw_only=True)
class _Store:
    """A consumer of leadership-dependent writes that fences by term.

    Without fencing it would apply every write it receives; ``stale`` counts
    the ones that would have overwritten a newer leader's write.
    """

    highest: int = -1
    applied: list[int] = attrs.field(factory=list)
    writers: dict[int, set[str]] = attrs.field(factory=dict)
    writes: int = 0
    stale: int = 0

    def datagram_received(self, now: float, source: str, payload: object) -> None:
        raise AssertionError("the store only takes stream writes")

    def stream_received(self, now: float, source: str, payload: object) -> None:
        assert isinstance(payload, tuple)
        term, writer = payload
        assert isinstance(term, int) and isinstance(writer, str)
        self.writes += 1
        self.writers.setdefault(term, set()).add(writer)
        if term < self.highest:
            self.stale += 1
            return
        self.highest = term
        self.applied.append(term)

    def timer(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def take_outgoing(self) -> list[Outgoing]:
        return []


@attrs.define(eq=False, kw_only=True)
class _App:
    """The application beside a node: told "you lead term T" by its node, it
    writes to the store carrying T. Pausing it (a GC pause between deciding
    and writing) is what makes writes stale."""

    outgoing: list[Outgoing] = attrs.field(factory=list)

    def datagram_received(self, now: float, source: str, payload: object) -> None:
        raise AssertionError("apps only take streams")

    def stream_received(self, now: float, source: str, payload: object) -> None:
        self.outgoing.append(Outgoing("stream", STORE, payload))

    def timer(self, now: float) -> None:
        pass

    def next_deadline(self) -> float | None:
        return None

    def take_outgoing(self) -> list[Outgoing]:
        out, self.outgoing = self.outgoing, []
        return out


def r8_fencing(trials: int, *, first_seed: int = 0) -> FencingResult:
    """Jepsen-style pause nemesis: pause the leader (its check-quorum must stop
    it acting) or the leader's application (a pause between deciding and
    writing, which no lease can prevent: only the term fences it)."""
    writes = stale = conflicts = imposters = 0
    monotone = True
    for seed in range(first_seed, first_seed + trials):
        rng = random.Random(seed)
        store = _Store()
        cluster = ElectionCluster(seed=seed, with_apps=True)
        cluster.sim.add(STORE, store)
        for name in cluster.names:
            cluster.sim.add(f"{name}/app", _App())
        cluster.start()
        cluster.wait_for_leader(20)
        for _ in range(6):
            cluster.sim.run_for(rng.uniform(0.5, 2.0))
            leader = cluster.leader() or rng.choice(cluster.names)
            victim = f"{leader}/app" if rng.random() < 0.6 else leader
            cluster.sim.pause(victim, rng.uniform(1.0, 4.0))
        cluster.sim.run_for(8.0)
        writes += store.writes
        stale += store.stale
        conflicts += sum(len(w) > 1 for w in store.writers.values())
        imposters += sum(
            not w <= cluster.oracle.leaders_by_term.get(t, set()) for t, w in store.writers.items()
        )
        monotone &= all(a <= b for a, b in itertools.pairwise(store.applied))
    return FencingResult(trials, writes, stale, conflicts, imposters, monotone)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean of ``values`` (0 for all if empty)."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


# ------------------------------------------------------------------ formation

FORMATIONS: Final = (
    "together",
    "staggered",
    "slow-sender",
    "isolated",
    "partitioned",
    "restarts",
    "mixed",
)


@attrs.define(eq=False, kw_only=True)
class _Discovery:
    """Membership as the election sees it while a cluster forms: nodes know
    only themselves (and their seed's address) at start; two nodes that can
    reach each other both ways, where one knows the other (or is its seed),
    exchange what they know (push-pull) with probability ``p`` per step.
    Crashed members stay known (SWIM keeps them as dead)."""

    cluster: ElectionCluster
    seeds: dict[str, str | None]
    p: float
    rng: random.Random
    known: dict[str, set[str]] = attrs.field(factory=dict)
    joined: set[str] = attrs.field(factory=set)
    told: dict[str, tuple[frozenset[str], frozenset[str]]] = attrs.field(factory=dict)
    mute_until: dict[str, float] = attrs.field(factory=dict)

    def started(self, name: str, *, remembered: Iterable[str] = ()) -> None:
        self.known[name] = {name, *remembered}
        self.told.pop(name, None)
        if self.seeds.get(name) is None:
            self.joined.add(name)
        else:
            self.joined.discard(name)
        self._tell(name)

    def _can_send(self, name: str) -> bool:
        return self.cluster.sim.now >= self.mute_until.get(name, 0.0)

    def step(self) -> None:
        sim = self.cluster.sim
        up = [n for n in self.cluster.names if sim.is_up(n)]
        for a, b in itertools.combinations(up, 2):
            if not (self._can_send(a) and self._can_send(b)):
                continue
            if not (sim.linked(a, b) and sim.linked(b, a)):
                continue
            ka, kb = self.known[a], self.known[b]
            if not (b in ka or a in kb or self.seeds.get(a) == b or self.seeds.get(b) == a):
                continue
            if self.rng.random() >= self.p:
                continue
            merged = ka | kb
            self.known[a], self.known[b] = set(merged), set(merged)
            self.joined |= {a, b}
        for name in up:
            self._tell(name)

    def _tell(self, name: str) -> None:
        sim = self.cluster.sim
        known = frozenset(self.known[name])
        alive = frozenset(n for n in known if sim.is_up(n))
        if self.told.get(name) == (known, alive):
            return
        self.told[name] = (known, alive)
        core = self.cluster.core(name)
        core.hold_bootstrap(sim.now, name not in self.joined)
        core.observe(sim.now, known=known, alive=alive)
        sim.wake(name)


@attrs.frozen
class FormationResult:
    schedules: int
    terms_with_leader: int
    two_leader_terms: int
    concurrent_two_leader_terms: int
    double_votes: int
    #: Leader acknowledged by a majority of all n, after every fault was undone.
    no_leader_at_end: int
    #: Schedules where some up node does not hold the full voter set at the end.
    incomplete_voter_sets: int
    #: Virtual seconds (in E) from the last fault's end to an acknowledged leader.
    formation_times: tuple[float, ...]
    violations: tuple[str, ...]
    by_flavor: dict[str, int]


def run_formation(
    seed: int,
    *,
    flavor: str | None = None,
    persist: bool = True,
    n: int = 5,
    bootstrap_expect: int | None = None,
    hold: bool = True,
) -> tuple[ElectionCluster, float | None]:
    """One seeded cluster formation; returns the cluster and the time (in E)
    from the end of the last fault to an acknowledged leader (``None``: none
    within 30 E).

    Every node starts unconfigured with ``bootstrap_expect`` (default: ``n``
    or a bare majority of ``n``, by seed), abstaining ``2E`` as the driver
    does on every start, and learns of the others through :class:`_Discovery`.
    Seeds: every node names the first (an orchestrator's habit) or a random
    other node. ``hold=False`` models a driver that bootstraps before it has
    joined (the control).
    """
    rng = random.Random(seed ^ 0x5EED)
    flavor = flavor or FORMATIONS[seed % len(FORMATIONS)]
    e = 0.3
    latency = (0.0005, 0.002) if rng.random() < 0.5 else (0.001, e / 6)
    cluster = ElectionCluster(
        seed=seed, n=n, election_timeout=e, heartbeat_interval=0.05, persist=persist,
        latency=latency,
    )  # fmt: skip
    names = cluster.names
    if bootstrap_expect is None:
        bootstrap_expect = n if rng.random() < 0.5 else n // 2 + 1
    expect = bootstrap_expect
    if rng.random() < 0.5:
        seeds: dict[str, str | None] = {x: (None if x == names[0] else names[0]) for x in names}
    else:
        # Each names a random node before it in a random order: every node
        # is reachable through seeds (disconnected seeds make two clusters).
        order = rng.sample(names, n)
        seeds = {x: (rng.choice(order[:i]) if i else None) for i, x in enumerate(order)}
    discovery = _Discovery(
        cluster=cluster, seeds=seeds if hold else {}, p=rng.uniform(0.05, 0.5), rng=rng
    )
    step = e / 10

    def boot(name: str) -> None:
        remembered: set[str] = set()
        persisted = None
        if persist:
            persisted = cluster.disk.get(name)
            remembered = set(discovery.known.get(name, ()))  # the membership snapshot
        host = cluster._host(
            name,
            persisted=persisted,
            abstain_until=cluster.sim.now + 2 * e,
            voters=(),
            bootstrap_expect=expect,
        )
        if cluster.sim.is_up(name):
            cluster.sim.restart(name, host)
        else:
            cluster.sim.add(name, host)
        discovery.started(name, remembered=remembered)

    # (time, action, argument) events; the discovery steps run in between.
    plan: list[tuple[float, str, object]] = []
    kinds = [flavor] if flavor != "mixed" else rng.sample(FORMATIONS[:-1], 2)
    starts = dict.fromkeys(names, 0.0)
    if "staggered" in kinds:
        starts = {x: rng.uniform(0.0, 10 * e) for x in names}
    for name, t in starts.items():
        plan.append((t, "boot", name))
    if "slow-sender" in kinds:
        victim = rng.choice(names)
        until = rng.uniform(0.0, 10.0)
        discovery.mute_until[victim] = until
        plan.append((0.0, "mute", victim))
        plan.append((until, "unmute", victim))
    if "isolated" in kinds:
        alone = rng.sample(names, rng.randint(1, 2))
        plan.append((0.0, "partition", [[x] for x in alone]))
        plan.append((rng.uniform(1.0, 6.0), "heal", None))
    if "partitioned" in kinds:
        t = 0.0
        for _ in range(rng.randint(1, 3)):
            t += rng.uniform(0.0, 4 * e)
            group = rng.sample(names, rng.randint(1, n // 2))
            plan.append((t, "partition", [group]))
            t += rng.uniform(0.5 * e, 6 * e)
            plan.append((t, "heal", None))
    if "restarts" in kinds:
        for _ in range(rng.randint(1, 3)):
            t = rng.uniform(0.0, 8 * e)
            victim = rng.choice(names)
            plan.append((t, "crash", victim))
            plan.append((t + rng.uniform(0.0, 3 * e), "boot", victim))
    plan.sort(key=lambda item: item[0])
    sim = cluster.sim

    def run_to(t: float) -> None:
        while sim.now + step <= t:
            sim.run_for(step)
            discovery.step()
        sim.run_until(t)

    for t, action, argument in plan:
        run_to(t)
        if action == "boot":
            assert isinstance(argument, str)
            boot(argument)
        elif action == "crash":
            assert isinstance(argument, str)
            if sim.is_up(argument):
                cluster.crash(argument)
        elif action == "partition":
            assert isinstance(argument, list)
            sim.partition(*argument)
        elif action == "heal":
            sim.heal()
        elif action in ("mute", "unmute"):
            # Slowed before it can send: nothing it sends gets out.
            for other in names:
                if other != argument:
                    if action == "mute":
                        sim.block(str(argument), other)
                    else:
                        sim.unblock(str(argument), other)
    # Undo what is left: heal, boot anyone still down.
    sim.heal()
    for name in names:
        if not sim.is_up(name):
            boot(name)
    settled_from = sim.now
    formed: float | None = None
    deadline = sim.now + 30 * e
    while sim.now < deadline:
        if cluster.acknowledged_leader() is not None and all(
            cluster.core(x).voters == frozenset(names) for x in names
        ):
            formed = (sim.now - settled_from) / e
            break
        sim.run_for(step)
        discovery.step()
    run_to(sim.now + 2 * e)
    return cluster, formed


def formation_safety(
    schedules: int,
    *,
    persist: bool = True,
    first_seed: int = 0,
    hold: bool = True,
    bootstrap_expect: int | None = None,
    flavors: Sequence[str] | None = None,
) -> FormationResult:
    """Sum :func:`run_formation` over seeds (flavors in turn, or ``flavors``)."""
    violations: list[str] = []
    count = terms = two = concurrent = double = leaderless = incomplete = 0
    times: list[float] = []
    by_flavor: dict[str, int] = {}
    for seed in range(first_seed, first_seed + schedules):
        flavor = None if flavors is None else flavors[seed % len(flavors)]
        cluster, formed = run_formation(
            seed, flavor=flavor, persist=persist, hold=hold, bootstrap_expect=bootstrap_expect
        )
        name = flavor or FORMATIONS[seed % len(FORMATIONS)]
        oracle = cluster.oracle
        count += 1
        terms += len(oracle.leaders_by_term)
        two += oracle.two_leader_terms
        by_flavor[name] = by_flavor.get(name, 0) + oracle.two_leader_terms
        concurrent += len(oracle.concurrent_terms)
        double += oracle.double_votes
        if formed is None:
            if cluster.acknowledged_leader() is None:
                leaderless += 1
            else:
                incomplete += 1
        else:
            times.append(formed)
        violations += [f"seed {seed} ({name}): {v}" for v in oracle.violations]
    return FormationResult(
        count, terms, two, concurrent, double, leaderless, incomplete, tuple(times),
        tuple(violations), by_flavor,
    )  # fmt: skip


# ------------------------------------------------------------------ voter cap: replacement


@attrs.frozen
class ReplacementResult:
    trials: int
    kills: int
    #: Kills after which the leader's set was back to ``max_voters`` live
    #: members, committed and held by every up node, within 20 E.
    replaced: int
    #: Seconds (in E) from the kill to that state (detection delay included).
    replacement_times: tuple[float, ...]
    #: Terms in which the restarted former voters disrupted nothing: leader
    #: changes seen after a former voter came back as a learner.
    changes_after_rejoin: int
    two_leader_terms: int
    double_votes: int
    violations: tuple[str, ...]
    #: Election messages per second received by a learner and by a voter
    #: (excluding the leader) in a quiet minute.
    learner_msgs_per_s: float
    voter_msgs_per_s: float


def _replaced(cluster: ElectionCluster, cap: int) -> bool:
    leader = cluster.acknowledged_leader()
    if leader is None:
        return False
    core = cluster.core(leader)
    voters = core.voters
    up = set(cluster.up())
    return (
        len(voters) == min(cap, len(up))
        and voters <= up
        and core.committed
        and all(cluster.core(x).voters == voters and cluster.core(x).leader == leader for x in up)
    )


def voter_replacement(
    trials: int, *, first_seed: int = 0, n: int = 9, max_voters: int = 5, kills: int = 3
) -> ReplacementResult:
    """``n`` nodes with ``max_voters`` voters (E = 0.3 s): kill a voter (the
    leader one time in three), tell membership it failed after a random
    detection delay of up to 3 E, and wait for the leader to put a learner
    in its place; ``kills`` times per trial, each victim restarted (with its
    persisted state, so it still believes it votes) once replaced."""
    e = 0.3
    replaced = kills_done = changes = 0
    times: list[float] = []
    violations: list[str] = []
    two = double = 0
    learner_rate = voter_rate = 0.0
    for seed in range(first_seed, first_seed + trials):
        rng = random.Random(seed ^ 0xCA9)
        cluster = ElectionCluster(
            seed=seed, n=n, election_timeout=e, heartbeat_interval=0.05,
            max_voters=max_voters, learner_interval=2 * e,
        )  # fmt: skip
        cluster.start()
        sim = cluster.sim
        cluster.wait_for_leader(20 * e)
        sim.run_for(5 * e)
        if seed == first_seed:
            # Load per node in a quiet period of 200 E.
            before = {x: sim.stats[x].delivered for x in cluster.names}
            sim.run_for(200 * e)
            leader = cluster.leader()
            voters = cluster.core(leader).voters if leader else frozenset()
            got = {x: sim.stats[x].delivered - before[x] for x in cluster.names}
            learners = [x for x in cluster.names if x not in voters]
            followers = [x for x in voters if x != leader]
            learner_rate = sum(got[x] for x in learners) / len(learners) / (200 * e)
            voter_rate = sum(got[x] for x in followers) / max(1, len(followers)) / (200 * e)
        for _ in range(kills):
            leader = cluster.leader()
            if leader is None:
                cluster.wait_for_leader(20 * e)
                leader = cluster.leader()
            assert leader is not None
            followers = sorted(cluster.core(leader).voters - {leader})
            victim = leader if rng.random() < 1 / 3 else rng.choice(followers)
            killed_at = sim.now
            sim.crash(victim)  # membership has not noticed yet
            sim.run_for(rng.uniform(0.0, 3 * e))
            cluster.tell()
            kills_done += 1
            if sim.run_until_true(
                lambda c=cluster: _replaced(c, max_voters),  # type: ignore[misc]
                timeout=20 * e,
            ):
                replaced += 1
                times.append((sim.now - killed_at) / e)
            cluster.restart(victim)
            settled = sim.now
            sim.run_for(10 * e)
            changes += cluster.leader_changes(cluster.names, settled + 2 * e)
        oracle = cluster.oracle
        two += oracle.two_leader_terms
        double += oracle.double_votes
        violations += [f"seed {seed}: {v}" for v in oracle.violations]
    return ReplacementResult(
        trials, kills_done, replaced, tuple(times), changes, two, double, tuple(violations),
        learner_rate, voter_rate,
    )  # fmt: skip


def election_scale(
    n: int, *, max_voters: int | None, seconds: float = 30.0, seed: int = 0
) -> dict[str, float]:
    """The election alone at ``n`` nodes (E = 1 s, heartbeats 0.1 s, learners
    told every 2 s): virtual seconds until every node knows the leader, then
    over ``seconds`` the messages received per second by the leader, an
    average voter and an average learner, and the process CPU time per node
    (% of a core; the simulator's own work included). ``max_voters=None``:
    every node votes (the behaviour without a cap)."""
    import time

    cluster = ElectionCluster(
        seed=seed, n=n, max_voters=max_voters,
        learner_interval=None if max_voters is None else 2.0, check=False,
    )  # fmt: skip
    sim = cluster.sim
    cpu = time.process_time()
    cluster.start()

    def everyone_knows() -> bool:
        leader = cluster.leader()
        return leader is not None and all(cluster.core(x).leader == leader for x in cluster.names)

    known = sim.run_until_true(everyone_knows, timeout=60.0)
    converged = sim.now if known else math.inf
    startup_cpu = time.process_time() - cpu
    leader = cluster.leader()
    voters = cluster.core(leader).voters if leader else frozenset()
    before = {x: sim.stats[x].delivered for x in cluster.names}
    cpu = time.process_time()
    sim.run_for(seconds)
    cpu = time.process_time() - cpu
    got = {x: (sim.stats[x].delivered - before[x]) / seconds for x in cluster.names}
    followers = [x for x in voters if x != leader]
    learners = [x for x in cluster.names if x not in voters]
    return {
        "nodes": n,
        "max_voters": -1 if max_voters is None else max_voters,
        "converged_s": converged,
        "startup_cpu_s": startup_cpu,
        "leader_msgs_in_per_s": got[leader] if leader else 0.0,
        "voter_msgs_in_per_s": statistics.fmean([got[x] for x in followers]) if followers else 0.0,
        "learner_msgs_in_per_s": statistics.fmean([got[x] for x in learners]) if learners else 0.0,
        "cpu_pct_per_node": 100.0 * cpu / (n * seconds),
        "leader_changes": cluster.leader_changes(cluster.names, converged + 1.0),
    }
