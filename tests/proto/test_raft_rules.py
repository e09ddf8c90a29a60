"""The election core's rules on voter sets and quorums
(trio_distribute._proto.raft), each pinned on both sides of its edge.

tests/proto/test_raft.py covers the election's behaviour and
tests/proto/test_raft_wire_rules.py the wire decoder's bounds; this file
holds the cases that mutation testing (tests/mutation/mutate.py) showed no
other test pinned: who may be granted a vote, what a majority is, and how
a leader changes its voter set."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from trio_distribute._proto.raft import (
    STATIC,
    UNCONFIGURED,
    ElectionCore,
    PreVoteReply,
    Role,
    VoteReply,
)

E = 1.0
H = 0.1


def make(
    name: str = "a",
    voters: Iterable[str] = ("a", "b", "c"),
    *,
    now: float = 0.0,
    seed: int = 0,
    **options: Any,
) -> ElectionCore:
    return ElectionCore(
        name=name,
        voters=voters,
        election_timeout=E,
        heartbeat_interval=H,
        rng=random.Random(seed),
        now=now,
        **options,
    )


def fire(core: ElectionCore) -> float:
    """Tick the core at its next deadline; return that time."""
    deadline = core.next_deadline()
    assert deadline is not None
    core.tick(deadline)
    return deadline


def win(core: ElectionCore, *helpers: str) -> float:
    """Drive ``core`` to leadership with the votes of ``helpers``; the time."""
    now = fire(core)
    for helper in helpers:
        core.receive(now, helper, PreVoteReply(core.term, core.term + 1, granted=True))
    for helper in helpers:
        core.receive(now, helper, VoteReply(core.term, granted=True))
    assert core.role is Role.LEADER
    core.take_actions()
    core.take_events()
    return now


# -- a static voter set ------------------------------------------------------------


def test_a_static_voter_set_given_to_an_unconfigured_node_configures_it() -> None:
    core = make("a", ())
    assert core.version == UNCONFIGURED and not core.configured
    core.set_voters(0.0, [])  # an empty set configures nothing
    assert core.version == UNCONFIGURED and not core.configured
    core.set_voters(0.0, ["a", "b", "c"])
    assert core.version == STATIC and core.configured
    assert core.voters == {"a", "b", "c"}
