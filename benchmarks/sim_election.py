"""Raft-lite election targets R1-R8 measured on the deterministic simulator.

Usage, from the repository root::

    python -m benchmarks.sim_election [--full]

Prints a markdown table ``target | criterion | measured | pass`` and writes it
to ``benchmarks/results/sim_election.md`` (``sim_election_full.md`` with
``--full``, which runs ten times more schedules and trials). Everything runs
in virtual time, so the numbers are the same on every machine; only the
elapsed time printed at the end depends on the CPU.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from trio_distribute.testing import election_sim as sim

RESULTS = pathlib.Path(__file__).parent / "results"


class Sizes(NamedTuple):
    r1_schedules: int
    failover_trials: int
    r3_rounds: int
    r4_trials: int
    r5_trials: int
    r6_seconds: float
    r7_schedules: int
    r8_trials: int
    formation_schedules: int


CI = Sizes(1000, 300, 1000, 50, 50, 3600.0, 300, 50, 700)
FULL = Sizes(10_000, 1000, 1000, 500, 500, 3600.0, 3000, 500, 10_000)


class Row(NamedTuple):
    target: str
    criterion: str
    measured: str
    passed: bool | None  # None: informational, no pass/fail criterion


def _yes(passed: bool | None) -> str:
    return "—" if passed is None else ("yes" if passed else "**NO**")


def measure(sizes: Sizes, log: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []

    log("R1 ...")
    r1 = sim.r1_safety(sizes.r1_schedules)
    rows.append(
        Row(
            "R1 election safety",
            "0 terms with >1 leader over ≥ 1000 seeded fault schedules (persisted state)",
            f"{r1.two_leader_terms} of {r1.terms_with_leader} terms "
            f"({r1.concurrent_two_leader_terms} with two live leaders at once) over "
            f"{r1.schedules} schedules; {r1.double_votes} double votes; {r1.no_leader_after_heal} "
            "without a leader 12 E after the final heal",
            r1.two_leader_terms == 0 and r1.double_votes == 0 and r1.schedules >= 1000,
        )
    )

    log("R1 at cluster formation ...")
    for persist in (True, False):
        f = sim.formation_safety(sizes.formation_schedules, persist=persist)
        t = sim.summary(f.formation_times)
        rows.append(
            Row(
                f"R1 at cluster formation ({'persisted state' if persist else 'no state_dir'})",
                "0 terms with >1 leader over seeded start orders (all at once, staggered over "
                "3 s, one node mute 0-10 s, 1-2 nodes isolated then connected, partitions and "
                "restarts while forming, mixes); every schedule ends with one cluster of all 5",
                f"{f.two_leader_terms} of {f.terms_with_leader} terms over {f.schedules} "
                f"schedules; {f.double_votes} double votes; {f.no_leader_at_end} without a "
                f"leader and {f.incomplete_voter_sets} without the full voter set 30 E after the "
                f"last fault; formed p50 {t['p50']:.1f} E, p99 {t['p99']:.1f} E, max "
                f"{t['max']:.1f} E after it",
                f.two_leader_terms == 0
                and f.double_votes == 0
                and f.no_leader_at_end == 0
                and f.incomplete_voter_sets == 0,
            )
        )
    control = sim.formation_safety(
        max(70, sizes.formation_schedules // 10), bootstrap_expect=1, hold=False
    )
    rows.append(
        Row(
            "R1 at formation, control",
            "informational: the same schedules with bootstrap_expect = 1 and no hold while "
            "joining (what the election did before)",
            f"{control.two_leader_terms} terms with two leaders "
            f"({control.concurrent_two_leader_terms} leading at once) over "
            f"{control.schedules} schedules",
            None,
        )
    )

    log("R2 ...")
    plain = sim.r2_failover(sizes.failover_trials)
    adversarial = sim.r2_failover(sizes.failover_trials, adversarial=True)
    e, rtt = plain.election_timeout, plain.rtt
    p = sim.summary(plain.latencies)
    rows.append(
        Row(
            "R2 failover (plain crash)",
            f"p50 ≤ 1.5E+RTT, p99 ≤ 2E+2RTT, max ≤ 3E+RTT (E = {e:g} s, RTT ≤ {rtt * 1e3:g} ms)",
            f"p50 {p['p50'] / e:.3f} E, p99 {p['p99'] / e:.3f} E, max {p['max'] / e:.3f} E "
            f"over {plain.trials} crashes ({plain.failed} without a new leader in 10 E)",
            p["p50"] <= 1.5 * e + rtt
            and p["p99"] <= 2 * e + 2 * rtt
            and p["max"] <= 3 * e + rtt
            and plain.failed == 0,
        )
    )
    a = sim.summary(adversarial.latencies)
    rows.append(
        Row(
            "R2 failover (adversarial)",
            "synchronized heartbeat just before the crash: p50 ≤ 2E, max ≤ 4E",
            f"p50 {a['p50'] / e:.3f} E, p99 {a['p99'] / e:.3f} E, max {a['max'] / e:.3f} E "
            f"over {adversarial.trials} crashes ({adversarial.failed} failed)",
            a["p50"] <= 2 * e and a["max"] <= 4 * e and adversarial.failed == 0,
        )
    )

    log("R3 ...")
    conflict = sim.r3_timeout_conflicts(sizes.r3_rounds)
    rows.append(
        Row(
            "R3 split votes (timeouts)",
            "5 nodes, 10-tick granularity: ≥ 2 simultaneous first timeouts in ≤ 30% of rounds",
            f"{conflict:.1%} of {sizes.r3_rounds} rounds",
            conflict <= 0.30,
        )
    )
    ticked = sim.r2_failover(sizes.failover_trials, ticks=10)
    ticked_adversarial = sim.r2_failover(sizes.failover_trials, ticks=10, adversarial=True)
    rounds = ticked.election_rounds + ticked_adversarial.election_rounds
    mean_rounds = sum(rounds) / len(rounds)
    exact = plain.election_rounds + adversarial.election_rounds
    t = sim.summary(ticked.latencies + ticked_adversarial.latencies)
    rows.append(
        Row(
            "R3 split votes (rounds)",
            "mean election rounds (terms) per failover ≤ 1.3, timers on a 10-tick (E/10) grid",
            f"{mean_rounds:.3f} (max {max(rounds)}) over {len(rounds)} failovers, plain and "
            f"adversarial (failover there: p50 {t['p50'] / e:.2f} E, max {t['max'] / e:.2f} E); "
            f"exact timers: {sum(exact) / len(exact):.3f} (max {max(exact)})",
            mean_rounds <= 1.3 and ticked.failed + ticked_adversarial.failed == 0,
        )
    )

    log("R4 ...")
    r4 = sim.r4_rejoin(sizes.r4_trials)
    r4_off = sim.r4_rejoin(max(5, sizes.r4_trials // 10), pre_vote=False)
    rows.append(
        Row(
            "R4 no disruption on rejoin",
            "follower isolated 10 E then healed: majority term unchanged, 0 leader changes",
            f"{r4.term_changed} of {r4.trials} trials changed the term, "
            f"{r4.leader_changes} leader changes; isolated node's term +{r4.isolated_term_bumps} "
            f"(control without pre-vote: {r4_off.term_changed}/{r4_off.trials} terms changed, "
            f"{r4_off.leader_changes} leader changes)",
            r4.term_changed == 0 and r4.leader_changes == 0,
        )
    )

    log("R5 ...")
    r5 = sim.r5_step_down(sizes.r5_trials)
    d = sim.summary(r5.delays)
    lease = r5.lease
    rows.append(
        Row(
            "R5 deposed leader steps down",
            f"minority-side leader steps down within 2L (L = {lease:g} s = {lease / e:g} E)",
            f"p50 {d['p50']:.3f} s, max {d['max']:.3f} s (≤ L: "
            f"{sum(x <= lease for x in r5.delays)}/{len(r5.delays)}); new leader elected "
            f"{min(r5.gaps, default=0.0):.3f} s after the step-down at the earliest "
            f"({r5.never_stepped_down} never stepped down)",
            d["max"] <= 2 * lease and r5.never_stepped_down == 0 and min(r5.gaps) > 0,
        )
    )

    log("R6 ...")
    changes, elected = sim.r6_stability(sizes.r6_seconds)
    per_fault = plain.leader_changes + adversarial.leader_changes
    rows.append(
        Row(
            "R6 steady-state stability",
            f"0 leader changes in {sizes.r6_seconds / 3600:g} h virtual time without faults",
            f"{changes} changes ({elected} term(s) with a leader in the run)",
            changes == 0,
        )
    )
    rows.append(
        Row(
            "R6 changes per leader fault",
            "≤ 1 new leader per injected leader crash",
            f"max {max(per_fault)}, mean {sum(per_fault) / len(per_fault):.3f} over "
            f"{len(per_fault)} crashes",
            max(per_fault) <= 1,
        )
    )

    log("R7 ...")
    with_state = sim.r7_restart_safety(sizes.r7_schedules, persist=True)
    without = sim.r7_restart_safety(sizes.r7_schedules, persist=False)
    rows.append(
        Row(
            "R7 restart safety (persisted)",
            "kill/restart voters mid-election with (term, voted_for) persisted: 0 double votes, "
            "0 two-leader terms",
            f"{with_state.double_votes} double votes, {with_state.two_leader_terms} two-leader "
            f"terms over {with_state.schedules} schedules",
            with_state.double_votes == 0 and with_state.two_leader_terms == 0,
        )
    )
    rows.append(
        Row(
            "R7 restart without state",
            "informational: no persisted state, restarted voters abstain 2 E (narrows, "
            "cannot close the window)",
            f"{without.double_votes} double votes, {without.two_leader_terms} two-leader "
            f"terms over {without.schedules} schedules, of which "
            f"{without.concurrent_two_leader_terms} had both leaders leading at one instant "
            "(the others reused a term after the voters that elected the first forgot it)",
            None,
        )
    )

    log("R8 ...")
    r8 = sim.r8_fencing(sizes.r8_trials)
    rows.append(
        Row(
            "R8 fencing",
            "pause nemesis on leaders and their apps; the store rejects lower terms: no stale "
            "write applied, one writer per term, and that writer led the term",
            f"{r8.writes} writes, {r8.stale_arrivals} stale arrivals refused (an unfenced store "
            f"would have applied them), {r8.token_conflicts} terms with two writers, "
            f"{r8.not_the_leader} writes by a non-leader, applied terms monotone: "
            f"{r8.history_monotone}",
            r8.token_conflicts == 0 and r8.not_the_leader == 0 and r8.history_monotone,
        )
    )

    log("Voter cap ...")
    trials = max(10, sizes.r1_schedules // 50)
    rep = sim.voter_replacement(trials)
    t = sim.summary(rep.replacement_times)
    rows.append(
        Row(
            "R1 with a voter cap",
            "9 nodes, max_voters 5: a dead voter (a third of the time the leader) is replaced by "
            "a learner; 0 terms with >1 leader, 0 double votes, every replacement completes",
            f"{rep.replaced} of {rep.kills} kills replaced over {rep.trials} trials, kill to "
            f"five live committed voters p50 {t['p50']:.2f} E / max {t['max']:.2f} E (detection "
            f"delay of up to 3 E included); {rep.two_leader_terms} two-leader terms, "
            f"{rep.double_votes} double votes; {rep.changes_after_rejoin} leader changes after "
            f"the victims came back; messages/s received: learner {rep.learner_msgs_per_s:.2f}, "
            f"voter {rep.voter_msgs_per_s:.1f}",
            rep.replaced == rep.kills and rep.two_leader_terms == 0 and rep.double_votes == 0,
        )
    )
    capped = sim.r1_safety(max(100, sizes.r1_schedules // 5), n=7, max_voters=3)
    rows.append(
        Row(
            "R1 with learners",
            "7 nodes, max_voters 3, crashed nodes reported failed at once (voters replaced "
            "during the faults): 0 terms with >1 leader",
            f"{capped.two_leader_terms} of {capped.terms_with_leader} terms over "
            f"{capped.schedules} schedules; {capped.double_votes} double votes; "
            f"{capped.no_leader_after_heal} without a leader 12 E after the final heal",
            capped.two_leader_terms == 0 and capped.double_votes == 0,
        )
    )
    return rows


def render(rows: list[Row], *, full: bool, elapsed: float) -> str:
    lines = [
        f"# Raft-lite election on the simulator ({'full' if full else 'CI-sized'} run)",
        "",
        "Generated by `python -m benchmarks.sim_election"
        + (" --full`" if full else "`")
        + f" in {elapsed:.0f} s of CPU. Virtual time, seeded: the numbers are reproducible.",
        "Five voters, 0.5-2 ms stream latency; E = 1 s, heartbeat 0.1 s (R1, formation and R7:",
        "E = 0.3 s, heartbeat 0.05 s, and half the schedules with up to E/6 latency). Formation:",
        "nodes start unconfigured with bootstrap_expect 5 or 3 (by seed), seeds all on the first",
        "node or a random earlier one, and learn each other by push-pull exchanges.",
        "",
        "| target | criterion | measured | pass |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.target} | {r.criterion} | {r.measured} | {_yes(r.passed)} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="ten times more trials")
    args = parser.parse_args(argv)
    started = time.process_time()
    rows = measure(FULL if args.full else CI, lambda s: print(s, file=sys.stderr, flush=True))
    text = render(rows, full=args.full, elapsed=time.process_time() - started)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("sim_election_full.md" if args.full else "sim_election.md")).write_text(text)
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
