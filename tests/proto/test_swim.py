"""The SWIM + Lifeguard core (trio_distribute._proto.swim), driven by hand
with explicit times. Messages between cores are passed by a tiny pump that
delivers every action at once (or drops what a test says to drop)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swim_helpers import ALIVE, CONFIG, DEAD, LEFT, SUSPECT

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.suspicion import suspicion_bounds
from trio_distribute._proto.swim import (
    CEILING,
    Member,
    MemberChange,
    MemberStatus,
    SendDatagram,
    SendStream,
    SwimCore,
    SwimDecodeError,
    newer,
)
from trio_distribute.config import MembershipConfig


def make(name: str, *, seed: int = 0, now: float = 0.0, **kwargs: object) -> SwimCore:
    return SwimCore(
        name=name,
        address=name,
        config=kwargs.pop("config", CONFIG),  # type: ignore[arg-type]
        rng=random.Random(seed),
        now=now,
        **kwargs,  # type: ignore[arg-type]
    )


def datagram(*messages: wire.DatagramMessage) -> bytes:
    return wire.pack([wire.encode(m) for m in messages])


def decoded(action: SendDatagram | SendStream) -> list[object]:
    if isinstance(action, SendDatagram):
        return list(wire.decode_datagram(action.payload))
    return [wire.decode_stream(action.payload)]


Drop = Callable[[str, SendDatagram | SendStream], bool]


class Net:
    """Cores by address; ``pump`` delivers queued actions until quiet."""

    def __init__(self, cores: Iterable[SwimCore]) -> None:
        self.cores = {core.address: core for core in cores}
        self.sent: list[tuple[str, SendDatagram | SendStream]] = []
        self.events: dict[str, list[MemberChange]] = {a: [] for a in self.cores}

    def pump(self, now: float, drop: Drop = lambda source, action: False) -> None:
        for _ in range(1000):
            pending = [
                (address, action)
                for address, core in self.cores.items()
                for action in core.take_actions()
            ]
            for address, core in self.cores.items():
                self.events[address].extend(core.take_events())
            if not pending:
                return
            for source, action in pending:
                self.sent.append((source, action))
                if isinstance(action, SendDatagram):
                    assert len(action.payload) <= self.cores[source].datagram_budget
                target = self.cores.get(action.address)
                if target is None or drop(source, action):
                    continue
                if isinstance(action, SendDatagram):
                    target.datagram_received(now, source, action.payload)
                else:
                    target.stream_received(now, source, action.payload)
        raise AssertionError("the cores never went quiet")

    def run(self, until: float, drop: Drop = lambda source, action: False) -> float:
        """Tick every core at its deadlines (pumping after each) up to ``until``."""
        now = 0.0
        while True:
            deadlines = [d for c in self.cores.values() if (d := c.next_deadline()) is not None]
            now = min(deadlines, default=until)
            if now > until:
                return until
            for core in self.cores.values():
                deadline = core.next_deadline()
                if deadline is not None and deadline <= now:
                    core.tick(now)
            self.pump(now, drop)


def joined(names: list[str], **kwargs: object) -> Net:
    cores = [make(name, seed=i, **kwargs) for i, name in enumerate(names)]  # type: ignore[arg-type]
    net = Net(cores)
    for core in cores[1:]:
        core.join(0.0, [names[0]])
    net.pump(0.0)
    for core in cores:
        core.take_events()
    return net


# -- construction ---------------------------------------------------------------


def test_metadata_over_512_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="512"):
        make("a", metadata=b"x" * 513)
    core = make("a", metadata=b"x" * 512)
    with pytest.raises(ValueError, match="512"):
        core.update_metadata(0.0, b"y" * 513)
    assert core.metadata == b"x" * 512


def test_bad_names_and_incarnations_are_refused() -> None:
    with pytest.raises(ValueError, match="name"):
        make("")
    with pytest.raises(ValueError, match="name"):
        make("x" * 256)
    with pytest.raises(ValueError, match="incarnation"):
        make("a", incarnation=2**63)


def test_fresh_core_knows_only_itself() -> None:
    core = make("a", metadata=b"m")
    assert core.members() == [
        Member(name="a", address="a", status=ALIVE, incarnation=0, metadata=b"m")
    ]
    assert core.alive_count() == 1
    assert core.health_multiplier == 0
    assert core.next_deadline() is not None


# -- join, gossip, leave ------------------------------------------------------------


def test_join_exchanges_state_both_ways() -> None:
    net = Net([make("a"), make("b", seed=1, metadata=b"meta")])
    net.cores["b"].join(0.0, ["a"])
    net.pump(0.0)
    a, b = net.cores["a"], net.cores["b"]
    assert a.member("b") == Member(
        name="b", address="b", status=ALIVE, incarnation=0, metadata=b"meta"
    )
    assert b.status_of("a") is ALIVE
    assert [e.previous for e in net.events["a"]] == [None]
    assert net.events["a"][0].member.name == "b"
    streams = [action for _, action in net.sent if isinstance(action, SendStream)]
    assert [s.name for s in streams] == ["", "b"]  # seed name unknown; reply names b


def test_news_spreads_to_a_member_that_only_knows_the_seed() -> None:
    net = joined(["a", "b", "c", "d"])
    net.run(5.0)
    for core in net.cores.values():
        assert core.alive_count() == 4


def test_graceful_leave() -> None:
    net = joined(["a", "b", "c"])
    net.run(2.0)
    c = net.cores["c"]
    c.leave(2.0)
    assert c.leaving and not c.left_complete(2.0)
    assert c.status_of("c") is LEFT
    net.run(6.0)
    assert c.left_complete(6.0)
    for name in "ab":
        assert net.cores[name].status_of("c") is LEFT
        changes = [e for e in net.events[name] if e.member.name == "c"]
        assert changes[-1].previous is ALIVE and changes[-1].member.status is LEFT
    # A left member does not refute news of its departure, nor probe anyone.
    assert c.incarnation == 0
    probes = c.counters["probes"]
    net.run(10.0)
    assert c.counters["probes"] == probes


def test_remove_forgets_only_down_members() -> None:
    core = make("a")
    core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 1, b"")))
    with pytest.raises(ValueError, match="dead or left"):
        core.remove(0.0, "b")
    core.datagram_received(0.0, "b", datagram(wire.Dead("b", 1, "c")))
    core.remove(0.0, "b")
    assert core.member("b") is None
    core.remove(0.0, "nobody")  # a no-op


# -- precedence rules (SWIM §4.2) ---------------------------------------------------


def put(core: SwimCore, status: MemberStatus, incarnation: int) -> None:
    core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", incarnation, b"")))
    message: wire.DatagramMessage | None = {
        ALIVE: None,
        SUSPECT: wire.Suspect("b", incarnation, "x"),
        DEAD: wire.Dead("b", incarnation, "x"),
        LEFT: wire.Left("b", incarnation),
    }[status]
    if message is not None:
        core.datagram_received(0.0, "x", datagram(message))
    assert core.member("b") == Member(
        name="b", address="b", status=status, incarnation=incarnation, metadata=b""
    )


def alive(inc: int) -> wire.DatagramMessage:
    return wire.Alive("b", "b", inc, b"")


def suspect(inc: int) -> wire.DatagramMessage:
    return wire.Suspect("b", inc, "y")


def dead(inc: int) -> wire.DatagramMessage:
    return wire.Dead("b", inc, "y")


def left(inc: int) -> wire.DatagramMessage:
    return wire.Left("b", inc)


PRECEDENCE = [
    # (known status, known incarnation, message, expected status, expected incarnation)
    (ALIVE, 1, alive(2), ALIVE, 2),
    (ALIVE, 1, alive(1), ALIVE, 1),
    (ALIVE, 2, alive(1), ALIVE, 2),
    (ALIVE, 1, suspect(1), SUSPECT, 1),
    (ALIVE, 1, suspect(2), SUSPECT, 2),
    (ALIVE, 2, suspect(1), ALIVE, 2),
    (SUSPECT, 1, alive(1), SUSPECT, 1),
    (SUSPECT, 1, alive(2), ALIVE, 2),
    (SUSPECT, 1, suspect(1), SUSPECT, 1),
    (SUSPECT, 1, suspect(2), SUSPECT, 2),
    (SUSPECT, 1, dead(1), DEAD, 1),
    (SUSPECT, 2, dead(1), SUSPECT, 2),
    (ALIVE, 1, dead(1), DEAD, 1),
    (ALIVE, 2, dead(1), ALIVE, 2),
    (ALIVE, 1, left(1), LEFT, 1),
    (DEAD, 1, alive(1), DEAD, 1),
    (DEAD, 1, suspect(1), DEAD, 1),
    (DEAD, 1, suspect(5), DEAD, 1),
    (DEAD, 1, alive(2), ALIVE, 2),
    (DEAD, 1, left(1), DEAD, 1),
    (DEAD, 3, dead(5), DEAD, 5),  # stored incarnation stays monotone
    (DEAD, 3, alive(3), DEAD, 3),
    (LEFT, 1, alive(1), LEFT, 1),
    (LEFT, 1, dead(1), LEFT, 1),
    (LEFT, 1, alive(2), ALIVE, 2),
]


@pytest.mark.parametrize(("status", "inc", "message", "expected", "expected_inc"), PRECEDENCE)
def test_precedence(
    status: MemberStatus,
    inc: int,
    message: wire.DatagramMessage,
    expected: MemberStatus,
    expected_inc: int,
) -> None:
    core = make("a")
    put(core, status, inc)
    core.take_events()
    core.datagram_received(1.0, "y", datagram(message))
    member = core.member("b")
    assert member is not None
    assert (member.status, member.incarnation) == (expected, expected_inc)
    events = core.take_events()
    if expected is status:
        assert events == []
    else:
        assert [(e.previous, e.member.status) for e in events] == [(status, expected)]


def test_dead_after_monotone_bump_rejects_the_old_alive() -> None:
    core = make("a")
    put(core, DEAD, 3)
    core.datagram_received(1.0, "y", datagram(dead(5)))
    core.datagram_received(1.0, "y", datagram(alive(4)))
    assert core.status_of("b") is DEAD
    core.datagram_received(1.0, "y", datagram(alive(6)))
    assert core.status_of("b") is ALIVE


def test_metadata_change_is_an_event() -> None:
    core = make("a")
    put(core, ALIVE, 1)
    core.take_events()
    core.datagram_received(1.0, "b", datagram(wire.Alive("b", "b", 2, b"new")))
    [event] = core.take_events()
    assert event.previous is ALIVE and event.member.metadata == b"new"


def test_address_conflict_keeps_the_known_live_member() -> None:
    core = make("a")
    put(core, ALIVE, 1)
    core.datagram_received(1.0, "z", datagram(wire.Alive("b", "elsewhere", 2, b"")))
    member = core.member("b")
    assert member is not None and member.address == "b" and member.incarnation == 1
    assert core.counters["address_conflicts"] == 1
    # Once it is dead, a new address is believed (the member moved).
    core.datagram_received(1.0, "y", datagram(dead(1)))
    core.datagram_received(1.0, "z", datagram(wire.Alive("b", "elsewhere", 2, b"")))
    member = core.member("b")
    assert member is not None and member.address == "elsewhere" and member.status is ALIVE


# -- refutation ------------------------------------------------------------------


def broadcasts_about(core: SwimCore, name: str, now: float) -> list[object]:
    """Queued news about ``name`` as seen in the next datagram the core sends."""
    core.datagram_received(now, "q", datagram(wire.Ping(1, core.name)))
    [ack] = core.take_actions()
    return [m for m in decoded(ack) if getattr(m, "name", None) == name]


@pytest.mark.parametrize(
    "accusation",
    [wire.Suspect("a", 3, "b"), wire.Dead("a", 3, "b"), wire.Alive("a", "a", 3, b"")],
)
def test_refutes_with_a_higher_incarnation(accusation: wire.DatagramMessage) -> None:
    core = make("a")
    core.datagram_received(1.0, "b", datagram(accusation))
    assert core.incarnation == 4
    assert core.status_of("a") is ALIVE
    assert core.counters["refutes"] == 1
    assert core.health_multiplier == 1  # Lifeguard: having to refute is a bad sign
    assert broadcasts_about(core, "a", 1.0) == [wire.Alive("a", "a", 4, b"")]


def test_suspicion_echo_is_not_refuted_twice() -> None:
    core = make("a")
    core.datagram_received(1.0, "b", datagram(wire.Suspect("a", 0, "b")))
    assert core.incarnation == 1
    for _ in range(3):  # the same suspicion keeps coming back through gossip
        core.datagram_received(1.0, "c", datagram(wire.Suspect("a", 0, "c")))
    assert core.incarnation == 1
    assert core.counters["refutes"] == 1


def test_stale_accusation_after_the_refutation_faded_repeats_it() -> None:
    """A member that missed our refutation still gossips the old suspicion;
    once our own alive has had its transmissions, we queue it again."""
    core = make("a")
    core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 0, b"")))
    core.datagram_received(1.0, "b", datagram(wire.Suspect("a", 0, "b")))
    assert core.incarnation == 1
    for i in range(20):  # send everything queued until the refutation is spent
        core.datagram_received(1.0, "b", datagram(wire.Ping(i, "a")))
    core.take_actions()
    assert broadcasts_about(core, "a", 1.0) == []
    core.datagram_received(2.0, "c", datagram(wire.Dead("a", 0, "c")))
    assert core.incarnation == 1  # no new incarnation...
    assert broadcasts_about(core, "a", 2.0) == [wire.Alive("a", "a", 1, b"")]  # ...just repeated
    assert core.counters["stale_news_of_self"] == 1


def test_higher_incarnation_suspicion_restarts_the_timer() -> None:
    core = make("a")
    for name in "bcdefg":
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 1, b"")))
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    core.datagram_received(0.0, "y", datagram(wire.Suspect("b", 1, "y")))
    core.datagram_received(0.0, "z", datagram(wire.Suspect("b", 1, "z")))
    assert core.suspicion_deadline("b") == pytest.approx(4.0)
    # b refuted (incarnation 2) and someone suspects it again: not a
    # confirmation of the old suspicion but a new one, from the start.
    core.datagram_received(3.0, "y", datagram(wire.Suspect("b", 2, "y")))
    assert core.suspicion_deadline("b") == pytest.approx(3.0 + 24.0)
    core.tick(4.0)
    assert core.status_of("b") is SUSPECT


def test_conflicting_alive_at_same_incarnation_is_refuted() -> None:
    core = make("a", incarnation=2)
    core.datagram_received(1.0, "b", datagram(wire.Alive("a", "a", 2, b"forged")))
    assert core.incarnation == 3
    core.datagram_received(1.0, "b", datagram(wire.Alive("a", "a", 3, b"")))
    assert core.incarnation == 3  # our own current alive: nothing to do


@pytest.mark.parametrize(
    ("own", "accusation", "refuted_with"),
    [
        (6, wire.Suspect("a", 6 + 2**62 - 1, "b"), 6 + 2**62),  # the farthest newer value
        (CEILING - 3, wire.Dead("a", CEILING, "b"), 0),
        (CEILING - 3, wire.Left("a", CEILING), 0),
        (CEILING - 3, wire.Alive("a", "a", CEILING, b"forged"), 0),
        (CEILING - 1, wire.Suspect("a", CEILING - 1, "b"), CEILING),
        (6, wire.Dead("a", 2**62 + 6, "b"), 2**62 + 7),  # exactly 2**62 ahead: not older
    ],
)
def test_no_incarnation_is_too_high_to_refute(
    own: int, accusation: wire.DatagramMessage, refuted_with: int
) -> None:
    # Incarnations wrap: after 2**63 - 1 (the largest on the wire) comes 0,
    # which is newer. A forger cannot name a value the member cannot outbid.
    assert CEILING == 2**63 - 1 == wire.MAX_INCARNATION - 1
    core = make("a", incarnation=own)
    core.datagram_received(1.0, "b", datagram(accusation))
    assert core.incarnation == refuted_with
    assert core.status_of("a") is ALIVE
    assert core.counters["refutes"] == 1
    assert core.counters["incarnation_wraps"] == (refuted_with == 0)
    assert broadcasts_about(core, "a", 1.0) == [wire.Alive("a", "a", refuted_with, b"")]


def test_news_more_than_half_the_range_ahead_is_old_news() -> None:
    # 2**63 - 1 is 2**63 - 7 ahead of 6: in serial order that is 6 behind.
    core = make("a", incarnation=6)
    core.datagram_received(1.0, "b", datagram(wire.Left("a", CEILING)))
    assert core.incarnation == 6
    assert core.counters["stale_news_of_self"] == 1
    assert core.counters["refutes"] == 0


def test_serial_number_order() -> None:
    assert newer(1, 0) and not newer(0, 1) and not newer(5, 5)
    assert newer(0, CEILING) and newer(3, CEILING - 3) and not newer(CEILING, 0)
    assert newer(2**62 - 1, 0) and not newer(2**62, 0) and not newer(0, 2**62)
    assert newer(0, 2**62 + 1)


def test_old_news_below_our_incarnation_is_stale_even_across_the_wrap() -> None:
    core = make("a", incarnation=CEILING - 1)
    core.datagram_received(1.0, "b", datagram(wire.Suspect("a", CEILING, "b")))
    assert core.incarnation == 0
    core.datagram_received(1.0, "c", datagram(wire.Dead("a", CEILING, "c")))  # the echo
    assert core.incarnation == 0
    assert core.counters["stale_news_of_self"] == 1


def test_metadata_update_at_the_top_wraps() -> None:
    core = make("a", incarnation=CEILING)
    core.update_metadata(1.0, b"new")
    assert core.incarnation == 0
    assert broadcasts_about(core, "a", 1.0) == [wire.Alive("a", "a", 0, b"new")]


WRAP_PRECEDENCE = [
    (LEFT, CEILING, alive(0), ALIVE, 0),
    (DEAD, CEILING, alive(5), ALIVE, 5),
    (SUSPECT, CEILING, alive(0), ALIVE, 0),
    (ALIVE, CEILING, alive(0), ALIVE, 0),
    (LEFT, CEILING, alive(CEILING), LEFT, CEILING),
    (LEFT, CEILING, suspect(0), LEFT, CEILING),
    (ALIVE, CEILING, dead(0), DEAD, 0),
    (LEFT, CEILING - 1, alive(0), ALIVE, 0),
    (LEFT, 2**62, alive(0), LEFT, 2**62),  # 2**62 apart: neither is newer
    (ALIVE, 0, left(CEILING), ALIVE, 0),  # the wrapped order: 2**63 - 1 is older
    (ALIVE, 2**62 + 1, dead(0), DEAD, 0),
]


@pytest.mark.parametrize(("status", "inc", "message", "expected", "expected_inc"), WRAP_PRECEDENCE)
def test_precedence_across_the_wrap(
    status: MemberStatus,
    inc: int,
    message: wire.DatagramMessage,
    expected: MemberStatus,
    expected_inc: int,
) -> None:
    test_precedence(status, inc, message, expected, expected_inc)


FAR = 2**62 - 1  # the farthest ahead a value can be and still be newer

Forgery = Callable[[int], list[wire.DatagramMessage]]
FORGERIES: dict[str, Forgery] = {
    "left-far": lambda inc: [wire.Left("b", (inc + FAR) % 2**63)],
    "dead-far": lambda inc: [wire.Dead("b", (inc + FAR) % 2**63, "x")],
    "suspect-far": lambda inc: [wire.Suspect("b", (inc + FAR) % 2**63, "x")],
    "left-next": lambda inc: [wire.Left("b", inc + 1)],
    "alive+left-far": lambda inc: [
        wire.Alive("b", "b", (inc + FAR) % 2**63, b""),
        wire.Left("b", (inc + FAR) % 2**63),
    ],
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_live_member_refutes_forged_news_of_its_departure_or_death(forgery: str) -> None:
    names = ["a", "b", "c", "d", "e"]
    net = joined(names)
    net.run(3.0)
    assert all(core.status_of("b") is ALIVE for core in net.cores.values())
    _, longest = suspicion_bounds(
        suspicion_mult=CONFIG.suspicion_mult,
        max_timeout_mult=CONFIG.suspicion_max_timeout_mult,
        probe_interval=CONFIG.probe_interval,
        cluster_size=len(names),
    )
    now = 3.0
    # A member holding the cookie (not one of the cores) tells a, c, d, e,
    # each time at the incarnation that is hardest to outbid; 4 rounds take
    # the incarnation all the way round the 2**63 range.
    for _ in range(4):
        incarnation = net.cores["a"].member("b").incarnation  # type: ignore[union-attr]
        for name in "acde":
            net.cores[name].datagram_received(now, "x", datagram(*FORGERIES[forgery](incarnation)))
        net.pump(now)
        if not forgery.startswith("suspect"):
            assert all(net.cores[name].status_of("b") is not ALIVE for name in "acde")
        # Back within the suspicion bound (the longest a false suspicion stands).
        now += longest
        net.run(now)
        for name in names:
            assert net.cores[name].status_of("b") is ALIVE, name


def test_the_original_ceiling_forgery_is_old_news() -> None:
    # "b left at 2**63 - 1" while everyone holds b at a small incarnation:
    # in serial order that value is behind, so nobody believes it.
    net = joined(["a", "b", "c"])
    net.run(3.0)
    for name in "ac":
        net.cores[name].datagram_received(3.0, "x", datagram(wire.Left("b", CEILING)))
    net.run(6.0)
    assert all(core.status_of("b") is ALIVE for core in net.cores.values())
    assert [e for e in net.events["a"] if e.member.name == "b" and e.previous is not None] == []


def test_restarted_member_comes_back_alive_with_a_new_incarnation() -> None:
    net = joined(["a", "b", "c"])
    net.run(3.0)
    # b crashed long ago: everyone recorded it dead at incarnation 5.
    for name in "ac":
        net.cores[name].datagram_received(3.0, "x", datagram(wire.Alive("b", "b", 5, b"")))
        net.cores[name].datagram_received(3.0, "x", datagram(wire.Dead("b", 5, "x")))
    net.pump(3.0)
    assert net.cores["a"].status_of("b") is DEAD
    fresh = make("b", seed=9, now=3.0)  # same name and address, incarnation 0
    net.cores["b"] = fresh
    net.events["b"] = []
    fresh.join(3.0, ["a"])
    net.pump(3.0)
    assert fresh.incarnation == 6
    net.run(8.0)
    for name in "ac":
        member = net.cores[name].member("b")
        assert member is not None
        assert (member.status, member.incarnation) == (ALIVE, 6)


# -- probing ------------------------------------------------------------------------


def drop_to(*targets: str, streams: bool = True) -> Drop:
    def drop(source: str, action: SendDatagram | SendStream) -> bool:
        if isinstance(action, SendStream) and not streams:
            return False
        return action.address in targets

    return drop


def test_unanswered_probe_leads_to_suspect_then_dead() -> None:
    net = joined(["a", "b", "c", "d"])
    net.run(2.0)
    del net.cores["d"]  # crashed
    net.run(40.0)
    for name in "abc":
        assert net.cores[name].status_of("d") is DEAD
        statuses = [e.member.status for e in net.events[name] if e.member.name == "d"]
        assert statuses[-2:] in ([SUSPECT, DEAD], [DEAD])
    assert any(net.cores[n].counters["suspicions_raised"] for n in "abc")


def test_probe_goes_indirect_with_nacks_and_a_stream_fallback() -> None:
    net = joined(["a", "b", "c", "d"])
    a = net.cores["a"]
    # Let a probe until its target is d, then watch that probe.
    now = 0.0
    while True:
        now = a.next_deadline() or 0.0
        a.tick(now)
        actions = a.take_actions()
        pings = [x for x in actions if any(isinstance(m, wire.Ping) for m in decoded(x))]
        if pings and pings[0].address == "d":
            break
        for action in actions:
            if isinstance(action, SendDatagram):
                target = net.cores[action.address]
                target.datagram_received(now, "a", action.payload)
                for reply in target.take_actions():
                    if reply.address == "a" and isinstance(reply, SendDatagram):
                        a.datagram_received(now, action.address, reply.payload)
    [ping] = [m for m in decoded(pings[0]) if isinstance(m, wire.Ping)]
    start = now
    assert a.next_deadline() == pytest.approx(start + 0.5)  # the probe timeout
    a.tick(start + 0.5)
    actions = a.take_actions()
    requests = [(x.address, m) for x in actions for m in decoded(x) if isinstance(m, wire.PingReq)]
    assert sorted(address for address, _ in requests) == ["b", "c"]
    assert all(m == wire.PingReq(ping.seq, "d", "d") for _, m in requests)
    [fallback] = [x for x in actions if isinstance(x, SendStream)]
    assert fallback.name == "d" and decoded(fallback) == [wire.StreamPing(ping.seq, "d", "a", "a")]
    # Helper b pings d for a; d stays silent, so b sends a nack at 0.8 x timeout.
    b = net.cores["b"]
    b.take_actions()
    b.datagram_received(start + 0.5, "a", next(x for x in actions if x.address == "b").payload)
    [relayed] = b.take_actions()
    assert relayed.address == "d"

    def nacks() -> list[SendDatagram | SendStream]:
        return [x for x in b.take_actions() if any(isinstance(m, wire.Nack) for m in decoded(x))]

    b.tick(start + 0.5 + 0.399)
    assert nacks() == []
    b.tick(start + 0.5 + 0.4)
    [nack] = nacks()
    assert nack.address == "a" and wire.Nack(ping.seq) in decoded(nack)
    a.datagram_received(start + 0.95, "b", nack.payload)
    # c never answers at all: one missed nack raises local health by one.
    a.tick(start + 1.0)
    assert a.status_of("d") is SUSPECT
    assert a.health_multiplier == 1


def test_helper_relays_the_ack_and_sends_no_nack() -> None:
    helper = make("h")
    helper.datagram_received(0.0, "p", datagram(wire.PingReq(77, "t", "t")))
    [ping] = helper.take_actions()
    message = decoded(ping)[0]  # then piggybacked news
    assert isinstance(message, wire.Ping) and message.target == "t"
    helper.datagram_received(0.1, "t", datagram(wire.Ack(message.seq)))
    [relayed] = helper.take_actions()
    assert relayed.address == "p" and decoded(relayed)[0] == wire.Ack(77)
    helper.tick(0.5)
    assert not [m for x in helper.take_actions() for m in decoded(x) if isinstance(m, wire.Nack)]


def test_ping_for_another_name_is_not_answered() -> None:
    core = make("a")
    core.datagram_received(0.0, "p", datagram(wire.Ping(5, "someone-else")))
    assert core.take_actions() == []
    core.datagram_received(0.0, "p", datagram(wire.Ping(5, "a")))
    [ack] = core.take_actions()
    assert decoded(ack)[0] == wire.Ack(5)


def test_stream_fallback_keeps_a_udp_blocked_member_alive() -> None:
    net = joined(["a", "b", "c", "d"])
    net.run(1.0)

    def udp_to_d_lost(source: str, action: SendDatagram | SendStream) -> bool:
        return isinstance(action, SendDatagram) and action.address == "d"

    net.run(30.0, drop=udp_to_d_lost)
    for name in "abc":
        assert net.cores[name].status_of("d") is ALIVE
    assert sum(net.cores[n].counters["stream_acks"] for n in "abc") > 0


def tick_until_ping(core: SwimCore) -> tuple[float, SendDatagram]:
    """Tick ``core`` at its deadlines until it sends a ping; (time, datagram)."""
    for _ in range(100):
        deadline = core.next_deadline()
        assert deadline is not None
        core.tick(deadline)
        for action in core.take_actions():
            if isinstance(action, SendDatagram) and isinstance(decoded(action)[0], wire.Ping):
                return deadline, action
    raise AssertionError("no ping sent")


def test_buddy_system_puts_the_suspicion_in_the_ping() -> None:
    for lifeguard in (True, False):
        core = make("a", lifeguard=lifeguard)
        put(core, SUSPECT, 1)
        core.take_actions()
        _, ping = tick_until_ping(core)
        messages = decoded(ping)
        assert (wire.Suspect("b", 1, "a") in messages) is lifeguard
        assert ping.address == "b"


def test_suspect_refutes_through_the_buddy_ping() -> None:
    net = joined(["a", "b"])
    net.run(1.0)
    net.cores["a"].datagram_received(1.0, "x", datagram(wire.Suspect("b", 0, "x")))
    net.run(4.0)
    assert net.cores["b"].incarnation == 1
    assert net.cores["a"].status_of("b") is ALIVE


def test_rtt_is_measured_on_direct_acks() -> None:
    core = make("a")
    put(core, ALIVE, 1)
    core.take_actions()
    deadline, action = tick_until_ping(core)
    ping = decoded(action)[0]
    assert isinstance(ping, wire.Ping)
    core.datagram_received(deadline + 0.02, "b", datagram(wire.Ack(ping.seq)))
    assert core.last_rtt("b") == pytest.approx(0.02)
    assert core.last_rtt("nobody") is None


# -- Lifeguard: local health (M8) ---------------------------------------------------------


def acks_to(address: str) -> Drop:
    """Drop acks and nacks to ``address``: its probes all fail, but it still
    hears gossip (and so can refute)."""

    def drop(source: str, action: SendDatagram | SendStream) -> bool:
        if action.address != address:
            return False
        if isinstance(action, SendStream):
            return True
        return any(isinstance(m, wire.Ack | wire.Nack) for m in decoded(action))

    return drop


def probe_starts(net: Net, name: str, count: int, until: float) -> list[float]:
    """Run the whole net and record when ``name`` starts its next ``count`` probes."""
    core = net.cores[name]
    starts: list[float] = []
    now = 0.0
    while len(starts) < count and now < until:
        now = min(d for c in net.cores.values() if (d := c.next_deadline()) is not None)
        before = core.counters["probes"]
        for c in net.cores.values():
            d = c.next_deadline()
            if d is not None and d <= now:
                c.tick(now)
        if core.counters["probes"] > before:
            starts.append(now)
        net.pump(now, acks_to(name))
    return starts


def test_local_health_saturates_and_recovers_within_eight_good_probes() -> None:
    """M8: the score saturates at 7 (probe interval x8) and returns to 0
    within at most 8 good probes once the starvation ends."""
    net = joined(["a", "b", "c", "d", "e"])
    a = net.cores["a"]
    net.run(2.0)
    net.run(60.0, drop=acks_to("a"))
    assert a.health_multiplier == CONFIG.awareness_max_multiplier - 1 == 7
    starts = probe_starts(net, "a", 3, until=120.0)
    assert [later - earlier for earlier, later in itertools.pairwise(starts)] == [
        pytest.approx(8.0),
        pytest.approx(8.0),
    ]
    # Starvation ends: every good probe lowers the score by one.
    probes = a.counters["probes"]
    now = starts[-1]
    while a.health_multiplier and now < 400.0:
        now = min(d for c in net.cores.values() if (d := c.next_deadline()) is not None)
        for core in net.cores.values():
            d = core.next_deadline()
            if d is not None and d <= now:
                core.tick(now)
        net.pump(now)
    assert a.health_multiplier == 0
    assert a.counters["probes"] - probes <= 8
    for name in "bcde":
        assert a.status_of(name) is ALIVE


def test_plain_swim_keeps_no_local_health_and_a_fixed_timeout() -> None:
    core = make("a", lifeguard=False)
    for name in "bcdefg":
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 1, b"")))
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    minimum = 4.0  # suspicion_mult 4 x max(1, log10 7) x 1 s
    assert core.suspicion_deadline("b") == pytest.approx(minimum)
    core.datagram_received(0.0, "y", datagram(wire.Suspect("b", 1, "y")))
    assert core.suspicion_deadline("b") == pytest.approx(minimum)
    core.datagram_received(0.0, "x", datagram(wire.Suspect("a", 0, "x")))
    assert core.health_multiplier == 0


def test_lifeguard_timeout_starts_long_and_shrinks_with_confirmations() -> None:
    core = make("a")
    for name in "bcdefg":
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 1, b"")))
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    assert core.suspicion_deadline("b") == pytest.approx(24.0)  # 6 x 4 s; k = 2
    core.take_actions()
    core.datagram_received(1.0, "y", datagram(wire.Suspect("b", 1, "y")))
    assert core.suspicion_deadline("b") == pytest.approx(24.0 - 20.0 * 0.6309, abs=0.01)
    # The new confirmation is gossiped on so others' timers shrink too.
    assert wire.Suspect("b", 1, "y") in broadcasts_about(core, "b", 1.0)
    core.datagram_received(1.0, "z", datagram(wire.Suspect("b", 1, "z")))
    assert core.suspicion_deadline("b") == pytest.approx(4.0)
    core.tick(4.0)
    assert core.status_of("b") is DEAD


# -- robustness (M12 and garbage) -------------------------------------------------------


def snapshot(core: SwimCore) -> tuple[object, ...]:
    return (core.members(), core.incarnation, core.next_deadline(), core.health_multiplier)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_datagrams_raise_the_typed_error_and_change_nothing(data: bytes) -> None:
    core = make("a")
    put(core, SUSPECT, 1)
    core.take_actions()
    core.take_events()
    before = snapshot(core)
    for receive in (core.datagram_received, core.stream_received):
        try:
            receive(1.0, "x", data)
        except SwimDecodeError:
            assert snapshot(core) == before
            assert core.take_actions() == [] and core.take_events() == []


def test_a_bad_message_late_in_a_datagram_spoils_the_whole_datagram() -> None:
    core = make("a")
    good = wire.encode(wire.Alive("b", "b", 1, b""))
    bad = bytes([0x82, 0x18, 99, 0x01])  # [99, 1]: unknown kind
    with pytest.raises(SwimDecodeError):
        core.datagram_received(0.0, "b", wire.pack([good, bad]))
    assert core.member("b") is None


big_names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), min_size=1, max_size=60
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(big_names, st.binary(max_size=512)), min_size=1, max_size=40),
    st.integers(200, 1400),
)
def test_every_datagram_fits_the_budget(members: list[tuple[str, bytes]], budget: int) -> None:
    """M12: news of members with long names and full metadata never
    overflows the datagram budget, whatever the budget."""
    core = make("a", datagram_budget=budget)
    for i, (name, meta) in enumerate(members):
        core.datagram_received(0.0, "x", datagram(wire.Alive(f"{name}{i}", f"{i}", 1, meta)))
        if i % 3 == 0:
            core.datagram_received(0.0, "x", datagram(wire.Suspect(f"{name}{i}", 1, name)))
    now = 0.0
    for _ in range(60):
        deadline = core.next_deadline()
        assert deadline is not None
        now = deadline
        core.tick(now)
        core.datagram_received(now, "x", datagram(wire.Ping(1, "a")))
        core.datagram_received(now, "y", datagram(wire.PingReq(2, "t", "t")))
        for action in core.take_actions():
            if isinstance(action, SendDatagram):
                assert len(action.payload) <= budget
                wire.decode_datagram(action.payload)
    # Members whose alive news could never fit are refused, not queued forever.
    assert core.counters["alive_too_large"] >= 0


# -- healing and push-pull ------------------------------------------------------------


def streams(actions: list[SendDatagram | SendStream]) -> list[SendStream]:
    """The push-pull streams among ``actions`` (not fallback pings)."""
    return [
        a
        for a in actions
        if isinstance(a, SendStream) and isinstance(wire.decode_stream(a.payload), wire.PushPull)
    ]


def test_reconnect_retries_the_dead_and_rejoins_seeds_then_gives_up() -> None:
    config = MembershipConfig(
        push_pull_interval=1000.0, reconnect_interval=10.0, reconnect_timeout=25.0
    )
    core = make("a", config=config, seeds=["seed"])
    for name in ("b", "c"):
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 1, b"")))
    core.datagram_received(1.0, "x", datagram(wire.Dead("b", 1, "x")))
    core.take_actions()
    core.tick(10.0)
    pushed = {(s.name, s.address) for s in streams(core.take_actions())}
    # One random dead member, and the seed since fewer are alive than were.
    assert pushed == {("b", "b"), ("", "seed")}
    core.tick(20.0)
    assert {s.address for s in streams(core.take_actions())} == {"b", "seed"}
    core.tick(30.0)  # b has been dead for longer than reconnect_timeout: forgotten
    assert core.member("b") is None
    assert "b" not in {s.address for s in streams(core.take_actions())}


def test_push_pull_period_scales_beyond_32_members() -> None:
    config = MembershipConfig(push_pull_interval=30.0, reconnect_interval=1000.0)
    core = make("a", config=config)
    members = [
        Member(name=f"m{i}", address=f"m{i}", status=ALIVE, incarnation=0, metadata=b"")
        for i in range(99)
    ]
    core.add_known_members(0.0, members)
    assert core.cluster_size() == 100
    assert core.take_events() == []  # learned out of band: no events, no gossip
    times: list[float] = []
    now = 0.0
    while len(times) < 3:
        deadline = core.next_deadline()
        assert deadline is not None
        now = deadline
        core.tick(now)
        if streams(core.take_actions()):
            times.append(now)
    # 30 s x (ceil(log2(100) - 5) + 1) = 90 s
    assert times[2] - times[1] == pytest.approx(90.0)


def test_push_pull_reports_remote_dead_as_suspect_so_it_can_refute() -> None:
    core = make("a")
    core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 1, b"")))
    state = wire.PushPull(
        reply=True,
        name="c",
        address="c",
        members=(wire.MemberState("b", "b", 1, wire.STATUS_DEAD, b""),),
    )
    core.stream_received(1.0, "c", wire.encode(state))
    assert core.status_of("b") is SUSPECT
    assert core.status_of("c") is None  # its sender only lists members; c was not in it
    assert streams(core.take_actions()) == []  # a reply is not answered


def test_join_to_own_address_is_skipped() -> None:
    core = make("a")
    core.join(0.0, ["a"])
    assert streams(core.take_actions()) == []


def test_a_timely_ack_counts_as_direct_even_from_another_source_address() -> None:
    """The driver may report a peer's address differently from how the peer
    advertises it (e.g. 0.0.0.0 vs 127.0.0.1); before the ping-reqs go out
    only the target can have answered."""
    core = make("a")
    put(core, ALIVE, 1)
    core.datagram_received(0.0, "x", datagram(wire.Suspect("a", 0, "x")))  # refute: LHM 1
    assert core.health_multiplier == 1
    core.take_actions()
    start, action = tick_until_ping(core)
    ping = decoded(action)[0]
    assert isinstance(ping, wire.Ping)
    core.datagram_received(start + 0.01, "b-as-seen-by-the-driver", datagram(wire.Ack(ping.seq)))
    assert core.last_rtt("b") == pytest.approx(0.01)
    core.tick(start + 2.0)  # the probe period ends: a good probe
    assert core.health_multiplier == 0


def test_hearing_a_suspicion_pings_the_suspect_which_refutes_in_its_ack() -> None:
    net = joined(["a", "b", "c"])
    net.run(1.0)
    a, b = net.cores["a"], net.cores["b"]
    a.datagram_received(1.0, "c", datagram(wire.Suspect("b", 0, "c")))
    [check] = [x for x in a.take_actions() if x.address == "b"]
    assert isinstance(check, SendDatagram)
    messages = decoded(check)
    assert isinstance(messages[0], wire.Ping) and wire.Suspect("b", 0, "a") in messages
    b.datagram_received(1.0, "a", check.payload)
    [ack] = [x for x in b.take_actions() if x.address == "a"]
    reply = decoded(ack)
    assert isinstance(reply[0], wire.Ack) and wire.Alive("b", "b", 1, b"") in reply
    a.datagram_received(1.001, "b", ack.payload)
    assert a.status_of("b") is ALIVE
    assert a.counters["suspect_checks"] == 1
    # Plain SWIM does not do this.
    plain = make("p", lifeguard=False)
    put(plain, ALIVE, 1)
    plain.take_actions()
    plain.datagram_received(1.0, "c", datagram(wire.Suspect("b", 1, "c")))
    assert plain.take_actions() == []


def test_suspect_check_is_repeated_while_no_refutation_arrives() -> None:
    core = make("a")
    put(core, ALIVE, 1)
    core.take_actions()
    core.datagram_received(0.0, "c", datagram(wire.Suspect("b", 1, "c")))
    checks: list[float] = []
    now = 0.0
    while now < 6.0:
        for action in core.take_actions():
            messages = decoded(action)
            if action.address == "b" and wire.Suspect("b", 1, "a") in messages:
                checks.append(now)
        deadline = core.next_deadline()
        assert deadline is not None
        now = deadline
        core.tick(now)
    # Three checks a probe interval apart (regular probes of b carry the
    # suspicion too: those are the buddy system, not counted here).
    assert core.counters["suspect_checks"] == 3
    assert checks[0] == 0.0


def test_gossip_walks_a_shuffled_round_of_all_live_members() -> None:
    config = MembershipConfig(
        gossip_nodes=3, retransmit_mult=4, push_pull_interval=1000.0, reconnect_interval=1000.0
    )
    core = make("a", config=config)
    peers = [f"p{i}" for i in range(9)]
    core.add_known_members(
        0.0,
        [Member(name=p, address=p, status=ALIVE, incarnation=0, metadata=b"") for p in peers],
    )
    targets: list[str] = []
    now = 0.0
    for round_number in range(6):
        # Fresh news every round, so every gossip round sends something.
        news = wire.Alive(f"new{round_number}", f"new{round_number}", 0, b"")
        core.datagram_received(now, "x", datagram(news))
        core.take_actions()
        now = (round_number + 1) * config.gossip_interval
        core.tick(now)
        for action in core.take_actions():
            if isinstance(decoded(action)[0], wire.Alive):  # gossip, not a probe
                targets.append(action.address)
    first_round = [t for t in targets if t in peers][:9]
    assert sorted(first_round) == peers  # no member twice before all had one


def test_a_join_not_remembered_is_not_rejoined() -> None:
    config = MembershipConfig(push_pull_interval=1000.0, reconnect_interval=10.0)
    core = make("a", config=config)
    core.join(0.0, ["passer-by"], remember=False)
    assert {s.address for s in streams(core.take_actions())} == {"passer-by"}
    for name in ("b", "c"):
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 1, b"")))
    core.datagram_received(1.0, "x", datagram(wire.Dead("b", 1, "x")))
    core.take_actions()
    core.tick(10.0)  # fewer alive than were: seeds would be rejoined now
    assert "passer-by" not in {s.address for s in streams(core.take_actions())}


def test_swim_core_keeps_its_own_frozen_config() -> None:
    import attrs as _attrs

    from trio_distribute._proto.swim import SwimConfig

    source = MembershipConfig.local()
    core = SwimCore(name="me", address="me", config=source, rng=random.Random(1), now=0.0)
    assert type(core.config) is SwimConfig
    for field in _attrs.fields(SwimConfig):
        assert getattr(core.config, field.name) == getattr(source, field.name)
    with pytest.raises(_attrs.exceptions.FrozenInstanceError):
        core.config.probe_interval = 5.0  # type: ignore[misc]
    assert SwimConfig.of(core.config) is core.config
