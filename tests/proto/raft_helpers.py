"""Election cores for the raft tests: the timing they share and a way to
build and tick one."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from trio_distribute._proto.raft import ElectionCore

#: Election timeout and heartbeat interval of every test core.
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
    """A core named ``name`` among ``voters``, seeded, at time ``now``."""
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
