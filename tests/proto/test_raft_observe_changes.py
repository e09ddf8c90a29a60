"""``ElectionCore.observe_changes`` (membership told member by member)
leaves the core exactly where ``observe`` with the full sets does: the same
known, alive, failed and departed members, voter set, version and actions,
for random histories of joins, suspicions, deaths, leaves and removals, on
a leader that reconfigures as the members come and go and on a follower."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from raft_helpers import make

from trio_distribute._proto.raft import ElectionCore, Heartbeat, HeartbeatAck, MemberView, Send
from trio_distribute._proto.swim import MemberStatus

ME = "m0"
OTHERS = [f"m{i}" for i in range(1, 9)]
STATUSES = [MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT]


def state(core: ElectionCore) -> tuple[object, ...]:
    return (
        core._known,
        core._alive,
        core._failed,
        core._departed,
        core.voters,
        core.version,
        core.role,
        core.leader,
        core.term,
        core.next_deadline(),
        core._retiring,
    )


def full_sets(table: dict[str, MemberStatus], removed: set[str]) -> dict[str, set[str]]:
    """The sets the election driver builds from the whole member table."""
    left = {n for n, s in table.items() if s is MemberStatus.LEFT}
    return {
        "known": set(table) - left,
        "alive": {n for n, s in table.items() if s is MemberStatus.ALIVE},
        "departed": left | removed,
        "failed": {n for n, s in table.items() if s is MemberStatus.DEAD},
    }


def view(name: str, status: MemberStatus, removed: set[str]) -> MemberView:
    """What the driver tells ``observe_changes`` of one changed member."""
    return MemberView(
        name,
        known=status is not MemberStatus.LEFT,
        alive=status is MemberStatus.ALIVE,
        departed=name in removed or status is MemberStatus.LEFT,
        failed=status is MemberStatus.DEAD,
    )


def deliver_acks(core: ElectionCore, actions: Sequence[object], now: float) -> None:
    """Every voter answers the heartbeats it was sent."""
    for action in actions:
        if (
            isinstance(action, Send)
            and isinstance(action.message, Heartbeat)
            and action.to in core.voters
        ):
            message = action.message
            core.receive(now, action.to, HeartbeatAck(message.term, message.stamp, core.version))


@pytest.mark.parametrize("leader", [True, False])
@pytest.mark.parametrize("seed", range(25))
def test_observe_changes_matches_observe(seed: int, leader: bool) -> None:
    rng = random.Random(seed)
    voters = [ME] if leader else [ME, "m1", "m2"]
    full = make(ME, voters, seed=seed, max_voters=3, learner_interval=2.0)
    incremental = make(ME, voters, seed=seed, max_voters=3, learner_interval=2.0)
    table: dict[str, MemberStatus] = {ME: MemberStatus.ALIVE}
    removed: set[str] = set()
    seen = {ME}
    now = 0.0
    sets = full_sets(table, removed)
    full.observe(now, **sets)
    incremental.observe(now, **sets)
    if leader:
        now = 2.5  # past the election timeout: a lone voter wins at once
        full.tick(now)
        incremental.tick(now)
        assert full.is_leader and incremental.is_leader
    for _ in range(60):
        now += rng.uniform(0.01, 0.3)
        batch: dict[str, MemberStatus] = {}
        removal = None
        for _ in range(rng.randint(1, 4)):
            name = rng.choice(
                OTHERS + [ME] * (0 if leader else 1) if rng.random() < 0.05 else OTHERS
            )
            if name in table and name != ME and rng.random() < 0.1:
                removal = name
                break
            status = rng.choice(STATUSES) if name != ME else MemberStatus.LEFT
            batch[name] = status
        if removal is not None:
            # A removal: the driver tells the core the whole table again.
            batch.clear()
            del table[removal]
            for core in (full, incremental):
                core.observe(now, **full_sets(table, removed | {removal}))
                core.request_removal(now, removal)
            removed.add(removal)
        else:
            for name, status in batch.items():
                table[name] = status
                seen.add(name)
                if status is MemberStatus.ALIVE:
                    removed.discard(name)
            full.observe(now, **full_sets(table, removed))
            incremental.observe_changes(
                now, [view(name, status, removed) for name, status in batch.items()]
            )
        actions_full = full.take_actions()
        assert incremental.take_actions() == actions_full
        assert incremental.take_events() == full.take_events()
        assert state(incremental) == state(full)
        if leader:
            deliver_acks(full, actions_full, now)
            deliver_acks(incremental, actions_full, now)
            assert incremental.take_actions() == full.take_actions()
            assert state(incremental) == state(full)
