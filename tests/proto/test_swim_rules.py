"""The rules of the SWIM core (trio_distribute._proto.swim) that judge what a
peer sends, each pinned on both sides of its edge: text and metadata
bounds, the serial order of incarnations, news of ourselves (forged, stale
or conflicting), and how each kind of message changes the member table.

tests/proto/test_swim.py covers the protocol's behaviour; this file holds
the exact-boundary and hostile-input cases that mutation testing
(tests/mutation/mutate.py) showed no other test pinned."""

from __future__ import annotations

import random

import pytest
from swim_helpers import ALIVE, CONFIG, DEAD, LEFT, SUSPECT

from trio_distribute._proto import swim_wire as wire
from trio_distribute._proto.swim import (
    MAX_METADATA,
    Member,
    MemberStatus,
    SendDatagram,
    SendStream,
    SwimCore,
)
from trio_distribute.config import MembershipConfig

EMOJI = "\N{GRINNING FACE}"  # 4 bytes in UTF-8, one character

# Probes far apart, so that the gossip ticker is the next thing due.
QUIET = MembershipConfig(
    probe_interval=100.0,
    probe_timeout=50.0,
    gossip_interval=0.2,
    push_pull_interval=1000.0,
    reconnect_interval=1000.0,
)


def make(name: str = "a", *, address: str | None = None, **kwargs: object) -> SwimCore:
    return SwimCore(
        name=name,
        address=name if address is None else address,
        config=kwargs.pop("config", CONFIG),  # type: ignore[arg-type]
        rng=random.Random(kwargs.pop("seed", 0)),  # type: ignore[arg-type]
        now=0.0,
        **kwargs,  # type: ignore[arg-type]
    )


def datagram(*messages: wire.DatagramMessage) -> bytes:
    return wire.pack([wire.encode(m) for m in messages])


def decoded(action: SendDatagram | SendStream) -> list[object]:
    if isinstance(action, SendDatagram):
        return list(wire.decode_datagram(action.payload))
    return [wire.decode_stream(action.payload)]


def drain(core: SwimCore, now: float) -> None:
    """Send everything queued (piggybacked on acks) until nothing is left."""
    for seq in range(40):
        core.datagram_received(now, "drain", datagram(wire.Ping(seq, core.name)))
    core.take_actions()
    core.datagram_received(now, "drain", datagram(wire.Ping(99, core.name)))
    [ack] = core.take_actions()
    assert decoded(ack) == [wire.Ack(99)]


# -- bounds on what a member may be ------------------------------------------------


def test_names_and_addresses_of_exactly_255_characters_are_accepted() -> None:
    assert wire.MAX_NAME == 255
    for text in ("x" * 255, EMOJI * 255):
        core = make(text, address="addr")
        assert core.member(text) is not None
        core = make("a", address=text)
        assert core.address == text
        core.join(0.0, [text])  # a seed address of the same length
    for text in ("x" * 256, EMOJI * 256, ""):
        with pytest.raises(ValueError, match="name must be"):
            make(text, address="addr")
        with pytest.raises(ValueError, match="address must be"):
            make("a", address=text)
        with pytest.raises(ValueError, match="seed address must be"):
            make("a").join(0.0, [text])


def test_metadata_must_be_bytes_not_text_or_a_mutable_buffer() -> None:
    # Text metadata would be gossiped as a CBOR string that every receiver
    # refuses; a bytearray could change under the core after the check.
    for bad in ("text", bytearray(b"x"), memoryview(b"x")):
        with pytest.raises(TypeError, match="metadata must be bytes"):
            make("a", metadata=bad)
        core = make("a")
        with pytest.raises(TypeError, match="metadata must be bytes"):
            core.update_metadata(0.0, bad)  # type: ignore[arg-type]
        assert core.metadata == b"" and core.incarnation == 0
        with pytest.raises(TypeError, match="metadata must be bytes"):
            core.add_known_members(
                0.0,
                [Member(name="b", address="b", status=ALIVE, incarnation=0, metadata=bad)],  # type: ignore[arg-type]
            )
        assert core.member("b") is None


def test_metadata_of_exactly_512_bytes_is_accepted() -> None:
    assert MAX_METADATA == 512
    core = make("a", metadata=b"m" * 512)
    core.update_metadata(0.0, b"n" * 512)
    assert core.metadata == b"n" * 512
    with pytest.raises(ValueError, match="at most 512 bytes"):
        core.update_metadata(0.0, b"n" * 513)
    with pytest.raises(ValueError, match="at most 512 bytes"):
        make("b", metadata=b"m" * 513)


# -- news heard while the gossip ticker idles ------------------------------------------


def idle_core() -> SwimCore:
    """A core whose queue is empty at time 0, so its gossip ticker idles
    (its next gossip tick, 0.2, passes unobserved)."""
    core = make("a", config=QUIET, seed=3)
    core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 0, b"")))
    drain(core, 0.0)
    deadline = core.next_deadline()
    assert deadline is not None and deadline > 2.0  # nothing to gossip, no probe soon
    return core


def test_news_in_a_datagram_waits_for_the_next_gossip_tick_on_the_grid() -> None:
    # Heard at 1.05 while idle: gossiped at 1.2 (the ticker's own grid), not
    # at once and not at a tick long past.
    core = idle_core()
    core.datagram_received(1.05, "c", datagram(wire.Alive("c", "c", 0, b"")))
    assert core.next_deadline() == pytest.approx(1.2)


def test_news_in_a_push_pull_waits_for_the_next_gossip_tick_on_the_grid() -> None:
    core = idle_core()
    state = wire.PushPull(
        reply=True,
        name="c",
        address="c",
        members=(wire.MemberState("c", "c", 0, wire.STATUS_ALIVE, b""),),
    )
    core.stream_received(1.05, "c", wire.encode(state))
    assert core.status_of("c") is ALIVE
    assert core.next_deadline() == pytest.approx(1.2)


# -- acks: only the answer to the probe running now counts -------------------------


def probing(
    target: str = "b", others: str = "", *, refuted: bool = False
) -> tuple[SwimCore, float, int]:
    """A core that knows ``target`` (and ``others``) and has just pinged
    ``target``: (core, time, probe seq). ``refuted``: it had to refute a
    suspicion first (local health score 1)."""
    core = make("a")
    if refuted:
        core.datagram_received(0.0, "x", datagram(wire.Suspect("a", 0, "x")))
        assert core.health_multiplier == 1
    for name in target + others:
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 0, b"")))
    core.take_actions()
    for _ in range(100):
        deadline = core.next_deadline()
        assert deadline is not None
        core.tick(deadline)
        for action in core.take_actions():
            first = decoded(action)[0]
            if isinstance(first, wire.Ping) and action.address == target:
                return core, deadline, first.seq
            # Everyone else answers at once, so only the target's probe fails.
            if isinstance(first, wire.Ping):
                core.datagram_received(deadline, action.address, datagram(wire.Ack(first.seq)))
    raise AssertionError(f"{target} was never probed")


def probing_b() -> tuple[SwimCore, float, int]:
    return probing("b")


def finish_probe(core: SwimCore, start: float) -> None:
    core.tick(start + CONFIG.probe_timeout)  # indirect probes (nobody to ask)
    core.tick(start + CONFIG.probe_interval)  # the probe period ends


def test_a_stream_ack_for_another_probe_does_not_count() -> None:
    core, start, seq = probing_b()
    for stale in ((seq - 1) % wire.MAX_SEQ, (seq + 1) % wire.MAX_SEQ):
        core.stream_received(start + 0.1, "b", wire.encode(wire.StreamAck(stale)))
    assert core.counters["stream_acks"] == 0
    finish_probe(core, start)
    assert core.status_of("b") is SUSPECT


def test_the_stream_ack_of_the_running_probe_counts_once() -> None:
    core, start, seq = probing_b()
    core.stream_received(start + 0.7, "b", wire.encode(wire.StreamAck(seq)))
    assert core.counters["stream_acks"] == 1
    finish_probe(core, start)
    assert core.status_of("b") is ALIVE


def test_a_stream_ack_with_no_probe_running_is_ignored() -> None:
    core = make("a")
    core.stream_received(0.0, "b", wire.encode(wire.StreamAck(5)))
    assert core.counters["stream_acks"] == 0
    assert core.take_actions() == [] and core.take_events() == []


def test_a_ping_for_another_name_is_counted_and_not_answered() -> None:
    # The address now belongs to someone else (a restart under a new name).
    core = make("a")
    core.datagram_received(0.0, "p", datagram(wire.Ping(5, "someone-else")))
    assert core.take_actions() == []
    assert core.counters["pings_for_other_names"] == 1
    core.datagram_received(0.0, "p", datagram(wire.Ping(6, "a")))
    assert core.counters["pings_for_other_names"] == 1


def test_only_nacks_for_the_running_probe_spare_the_local_health_score() -> None:
    # Lifeguard: a failed probe raises the score by the helpers that did not
    # nack (2 asked here); a nack for another probe is no nack at all.
    for seq_offset, expected in ((1, 2), (-1, 2), (0, 0)):
        core, start, seq = probing("d", others="bc")
        core.tick(start + CONFIG.probe_timeout)  # ping-req to b and c
        assert core.health_multiplier == 0
        for helper in "bc":
            nack = wire.Nack((seq + seq_offset) % wire.MAX_SEQ)
            core.datagram_received(start + 0.9, helper, datagram(nack))
        core.tick(start + CONFIG.probe_interval)
        assert core.status_of("d") is SUSPECT
        assert core.health_multiplier == expected, seq_offset


def test_a_nack_with_no_probe_running_is_ignored() -> None:
    core = make("a")
    core.datagram_received(0.0, "b", datagram(wire.Nack(5)))
    assert core.take_actions() == [] and core.health_multiplier == 0


def end_probe(core: SwimCore, start: float) -> None:
    """Tick until the probe that started at ``start`` has ended."""
    while (probe := core.current_probe) is not None and probe[1] == start:
        deadline = core.next_deadline()
        assert deadline is not None
        core.tick(deadline)


def test_an_ack_up_to_the_probe_timeout_is_a_good_direct_probe() -> None:
    # Lifeguard lowers the score only for an ack within probe_timeout.
    for delay, score in ((CONFIG.probe_timeout, 0), (CONFIG.probe_timeout + 1e-6, 1)):
        core, start, seq = probing("b", refuted=True)
        core.datagram_received(start + delay, "b", datagram(wire.Ack(seq)))
        end_probe(core, start)
        assert core.status_of("b") is ALIVE
        assert core.health_multiplier == score, delay


def test_a_late_ack_from_the_target_measures_its_round_trip_a_relayed_one_does_not() -> None:
    for source, rtt in (("b", 0.7), ("c", None)):
        core, start, seq = probing("b", others="c")
        core.tick(start + CONFIG.probe_timeout)  # ping-req to c
        requests = [m for x in core.take_actions() for m in decoded(x)]
        assert wire.PingReq(seq, "b", "b") in requests
        core.datagram_received(start + 0.7, source, datagram(wire.Ack(seq)))
        assert core.last_rtt("b") == (None if rtt is None else pytest.approx(rtt)), source
        end_probe(core, start)
        assert core.status_of("b") is ALIVE


def test_a_ping_req_that_names_us_is_answered_at_once_not_relayed() -> None:
    # Whatever target address the requester gives, we are the target.
    core = make("a")
    core.datagram_received(0.0, "p", datagram(wire.PingReq(41, "a", "elsewhere")))
    [ack] = core.take_actions()
    assert isinstance(ack, SendDatagram) and ack.address == "p"
    assert decoded(ack)[0] == wire.Ack(41)
    core.tick(0.45)  # no relay: no nack later either
    assert not [x for x in core.take_actions() if x.address in ("p", "elsewhere")]


def relayed_acks(core: SwimCore, origin: str) -> list[object]:
    return [
        m
        for x in core.take_actions()
        if x.address == origin
        for m in decoded(x)
        if isinstance(m, wire.Ack)
    ]


def test_a_helper_relays_a_late_ack_until_one_probe_interval_after_the_request() -> None:
    # The nack goes at 0.8 x probe_timeout; an ack after it is still relayed
    # until the relay expires one probe interval after the request.
    for arrival, relayed in ((0.6, True), (0.99, True), (1.01, False)):
        helper = make("h")
        helper.datagram_received(0.0, "p", datagram(wire.PingReq(77, "t", "t")))
        [ping] = helper.take_actions()
        message = decoded(ping)[0]
        assert isinstance(message, wire.Ping) and ping.address == "t"
        helper.tick(0.4)  # the nack
        nacks = [m for x in helper.take_actions() for m in decoded(x) if isinstance(m, wire.Nack)]
        assert nacks == [wire.Nack(77)]
        helper.tick(arrival - 0.005)  # past 1.0: the relay has expired
        helper.take_actions()
        helper.datagram_received(arrival, "t", datagram(wire.Ack(message.seq)))
        assert relayed_acks(helper, "p") == ([wire.Ack(77)] if relayed else []), arrival


def test_a_leaving_member_does_not_refute_news_of_itself() -> None:
    # Refuting would undo the departure it is announcing.
    for news in (
        wire.Alive("a", "a", 5, b""),
        wire.Alive("a", "a", 0, b"forged"),
        wire.Alive("a", "elsewhere", 0, b""),
        wire.Suspect("a", 0, "x"),
        wire.Dead("a", 3, "x"),
        wire.Left("a", 3),
    ):
        core = make("a")
        core.leave(0.0)
        core.take_actions()
        core.datagram_received(0.5, "x", datagram(news))
        assert core.incarnation == 0, news
        assert core.counters["refutes"] == 0
        assert core.status_of("a") is LEFT


def alive_size(meta: bytes, incarnation: int = 0) -> int:
    return len(wire.encode(wire.Alive("b", "b", incarnation, meta)))


def test_a_newcomer_whose_alive_cannot_fit_our_datagrams_is_refused() -> None:
    # Its news could never be gossiped within the budget (16 bytes kept for
    # the compound header and a probe): refused exactly past that size.
    meta = b"m" * 300
    for budget, fits in ((alive_size(meta) + 16, True), (alive_size(meta) + 15, False)):
        core = make("a", datagram_budget=budget)
        core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 0, meta)))
        assert (core.status_of("b") is ALIVE) is fits, budget
        assert core.counters["alive_too_large"] == (not fits)
        assert [e.member.name for e in core.take_events()] == (["b"] if fits else [])


def test_an_update_whose_alive_cannot_fit_our_datagrams_is_refused() -> None:
    meta = b"m" * 300
    for budget, fits in ((alive_size(meta, 1) + 16, True), (alive_size(meta, 1) + 15, False)):
        core = make("a", datagram_budget=budget)
        core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 0, b"")))
        core.take_events()
        core.datagram_received(0.0, "b", datagram(wire.Alive("b", "b", 1, meta)))
        member = core.member("b")
        assert member is not None
        assert (member.incarnation, member.metadata) == ((1, meta) if fits else (0, b""))
        assert core.counters["alive_too_large"] == (not fits)
        assert len(core.take_events()) == fits


def test_a_single_nack_spares_one_point_of_the_local_health_score() -> None:
    core, start, seq = probing("d", others="bc")
    core.tick(start + CONFIG.probe_timeout)  # ping-req to b and c
    core.datagram_received(start + 0.9, "b", datagram(wire.Nack(seq)))
    core.tick(start + CONFIG.probe_interval)
    assert core.health_multiplier == 1  # c did not nack


def test_a_duplicate_ack_does_not_measure_the_round_trip_again() -> None:
    core, start, seq = probing("b", refuted=True)
    core.datagram_received(start + 0.1, "b", datagram(wire.Ack(seq)))
    core.datagram_received(start + 0.8, "b", datagram(wire.Ack(seq)))  # late duplicate
    assert core.last_rtt("b") == pytest.approx(0.1)
    end_probe(core, start)
    assert core.health_multiplier == 0  # still a timely direct ack


def test_a_stream_ping_for_another_name_is_not_answered() -> None:
    core = make("a")
    ping = wire.StreamPing(9, "someone-else", "p", "p")
    core.stream_received(0.0, "p", wire.encode(ping))
    assert core.take_actions() == []
    core.stream_received(0.0, "p", wire.encode(wire.StreamPing(9, "a", "p", "p")))
    [ack] = core.take_actions()
    assert isinstance(ack, SendStream) and (ack.name, ack.address) == ("p", "p")
    assert decoded(ack) == [wire.StreamAck(9)]


# -- the member table ------------------------------------------------------------------


def test_status_counts_follow_every_change_heard() -> None:
    core = make("a")
    assert core.counts() == {ALIVE: 1, SUSPECT: 0, DEAD: 0, LEFT: 0}
    for name in "bcd":
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 0, b"")))
    assert core.counts() == {ALIVE: 4, SUSPECT: 0, DEAD: 0, LEFT: 0}
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 0, "x")))
    core.datagram_received(0.0, "x", datagram(wire.Dead("c", 0, "x")))
    core.datagram_received(0.0, "x", datagram(wire.Left("d", 0)))
    assert core.counts() == {ALIVE: 1, SUSPECT: 1, DEAD: 1, LEFT: 1}
    core.datagram_received(0.0, "x", datagram(wire.Alive("c", "c", 1, b"")))
    assert core.counts() == {ALIVE: 2, SUSPECT: 1, DEAD: 0, LEFT: 1}


def test_news_of_an_unknown_member_other_than_alive_is_ignored() -> None:
    core = make("a")
    for news in (wire.Suspect("z", 3, "x"), wire.Dead("z", 3, "x"), wire.Left("z", 3)):
        core.datagram_received(0.0, "x", datagram(news))
        assert core.member("z") is None
    assert core.take_events() == []


def probe_targets(core: SwimCore, count: int) -> list[str]:
    """Tick ``core`` until it has started ``count`` more probes; their
    targets (every probe acked at once)."""
    targets: list[str] = []
    while len(targets) < count:
        deadline = core.next_deadline()
        assert deadline is not None
        core.tick(deadline)
        for action in core.take_actions():
            first = decoded(action)[0]
            if isinstance(first, wire.Ping):
                targets.append(first.target)
                core.datagram_received(deadline, first.target, datagram(wire.Ack(first.seq)))
    return targets


@pytest.mark.parametrize("seed", range(6))
def test_a_newcomer_is_probed_within_the_current_round(seed: int) -> None:
    # SWIM §4.3: each member is probed once per round; a newcomer takes a
    # random place in the rest of the round, not the next round.
    core = make("a", seed=seed)
    for name in "bcd":
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 0, b"")))
    first = probe_targets(core, 1)
    core.datagram_received(0.0, "e", datagram(wire.Alive("e", "e", 0, b"")))
    rest = probe_targets(core, 3)
    assert sorted(first + rest) == ["b", "c", "d", "e"]


@pytest.mark.parametrize("seed", range(6))
def test_a_newcomer_gets_gossip_within_the_current_round(seed: int) -> None:
    config = MembershipConfig(
        gossip_nodes=1,
        retransmit_mult=10,
        probe_interval=100.0,
        probe_timeout=50.0,
        push_pull_interval=1000.0,
        reconnect_interval=1000.0,
    )
    core = make("a", config=config, seed=seed)
    for name in "bcd":
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 0, b"")))
    core.take_actions()
    targets: list[str] = []
    now = 0.0
    while len(targets) < 4:
        now += config.gossip_interval
        core.tick(now)
        for action in core.take_actions():
            if isinstance(action, SendDatagram) and isinstance(decoded(action)[0], wire.Alive):
                targets.append(action.address)
        if len(targets) == 1 and core.member("e") is None:
            core.datagram_received(now, "e", datagram(wire.Alive("e", "e", 0, b"")))
    assert sorted(targets) == ["b", "c", "d", "e"]


def broadcasts_about(core: SwimCore, name: str, now: float) -> list[object]:
    """Queued news about ``name`` as seen in the next datagram the core sends."""
    core.datagram_received(now, "q", datagram(wire.Ping(1, core.name)))
    [ack] = core.take_actions()
    return [m for m in decoded(ack) if getattr(m, "name", None) == name]


def knows(*names: str, config: MembershipConfig = CONFIG) -> SwimCore:
    """A core ``a`` that knows ``names`` (alive at incarnation 1), with its
    own news already sent."""
    core = make("a", config=config)
    for name in names:
        core.datagram_received(0.0, name, datagram(wire.Alive(name, name, 1, b"")))
    drain(core, 0.0)
    return core


def test_a_refutation_heard_clears_the_suspicion_and_is_passed_on() -> None:
    core = knows("b", "c", "d", "e", "f", "g")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    deadline = core.suspicion_deadline("b")
    assert deadline is not None
    core.take_actions()
    core.datagram_received(1.0, "b", datagram(wire.Alive("b", "b", 2, b"")))
    assert core.suspicion_deadline("b") is None
    assert broadcasts_about(core, "b", 1.0) == [wire.Alive("b", "b", 2, b"")]
    core.tick(deadline + 1.0)  # the old suspicion's timer is void
    assert core.status_of("b") is ALIVE


def test_a_suspicion_at_a_newer_incarnation_is_a_new_one_gossiped_and_checked() -> None:
    core = knows("b", "c", "d", "e", "f", "g")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    drain(core, 0.0)
    checks = core.counters["suspect_checks"]
    core.datagram_received(3.0, "y", datagram(wire.Suspect("b", 2, "y")))
    member = core.member("b")
    assert member is not None and (member.status, member.incarnation) == (SUSPECT, 2)
    # Checked: a ping to b with the suspicion attached, so b can refute.
    [check] = [x for x in core.take_actions() if x.address == "b"]
    assert wire.Suspect("b", 2, "a") in decoded(check)
    assert core.counters["suspect_checks"] == checks + 1
    assert wire.Suspect("b", 2, "y") in broadcasts_about(core, "b", 3.0)
    deadline = core.suspicion_deadline("b")
    assert deadline is not None and deadline > 4.0
    core.tick(deadline)  # the new suspicion's own timer
    assert core.status_of("b") is DEAD


def test_an_echo_of_our_own_suspicion_is_not_checked() -> None:
    # "Hearing someone else suspect b" is what the check is for; news that
    # names us as its source (an echo, or a forgery) is not.
    core = knows("b", "c", "d")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "a")))
    assert core.status_of("b") is SUSPECT
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 2, "a")))
    assert core.member("b").incarnation == 2  # type: ignore[union-attr]
    assert core.counters["suspect_checks"] == 0
    assert [x for x in core.take_actions() if x.address == "b"] == []


def test_our_own_failed_probe_raises_a_suspicion_without_a_check() -> None:
    # The probe itself already carried the suspicion (buddy system).
    core, start, _ = probing("b")
    finish_probe(core, start)
    assert core.status_of("b") is SUSPECT
    assert core.counters["suspect_checks"] == 0


@pytest.mark.parametrize(
    ("news", "status", "passed_on"),
    [
        (wire.Dead("b", 1, "x"), DEAD, wire.Dead("b", 1, "a")),
        (wire.Left("b", 1), LEFT, wire.Left("b", 1)),
    ],
)
def test_news_of_a_death_or_departure_ends_the_suspicion_and_is_passed_on(
    news: wire.DatagramMessage, status: MemberStatus, passed_on: wire.DatagramMessage
) -> None:
    core = knows("b", "c", "d", "e", "f", "g")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    drain(core, 0.0)
    core.datagram_received(1.0, "x", datagram(news))
    assert core.status_of("b") is status
    assert core.suspicion_deadline("b") is None
    assert broadcasts_about(core, "b", 1.0) == [passed_on]


def test_stale_news_of_ourselves_does_not_restart_a_refutation_still_queued() -> None:
    # Echoes of a refuted suspicion arrive while our alive is still being
    # sent: it is sent the usual number of times, not restarted by each.
    core = knows("b")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("a", 1, "x")))
    assert core.incarnation == 2
    refutation = wire.Alive("a", "a", 2, b"")
    sent = 0
    for seq in range(20):
        if seq < 3:
            core.datagram_received(1.0, "x", datagram(wire.Suspect("a", 1, "x")))  # the echo
        core.datagram_received(1.0, "b", datagram(wire.Ping(seq, "a")))
        sent += sum(refutation in decoded(x) for x in core.take_actions())
    assert core.counters["stale_news_of_self"] == 3
    assert sent == 4  # retransmit_mult 4 x ceil(log10(2 + 1))


def test_a_push_pull_reports_a_departure_as_left() -> None:
    core = knows("b")
    state = wire.PushPull(
        reply=True,
        name="c",
        address="c",
        members=(
            wire.MemberState("b", "b", 1, wire.STATUS_LEFT, b""),
            wire.MemberState("c", "c", 0, wire.STATUS_ALIVE, b""),
        ),
    )
    core.stream_received(1.0, "c", wire.encode(state))
    assert core.status_of("b") is LEFT
    assert core.status_of("c") is ALIVE


def test_suspect_checks_go_one_probe_interval_apart_for_each_suspect() -> None:
    # Two suspicions heard half an interval apart: each suspect is checked
    # at once and then every probe interval, on its own schedule (the
    # check timers are a heap: the earliest is due first, whatever is
    # behind it). Regular probes carry the suspicion too; only checks count.
    core = knows("b", "c", "d", "e", "f", "g")
    checks: list[float] = []

    def note(now: float) -> None:
        checks.extend([now] * (core.counters["suspect_checks"] - len(checks)))
        core.take_actions()

    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    note(0.0)
    core.datagram_received(0.5, "x", datagram(wire.Suspect("c", 1, "x")))
    note(0.5)
    for tenth in range(1, 40):
        core.tick(tenth / 10)
        note(tenth / 10)
    interval = CONFIG.probe_interval
    assert checks == [0.0, 0.5, interval, 0.5 + interval, 2 * interval, 0.5 + 2 * interval]


def test_a_relay_that_expires_without_an_ack_sends_its_one_nack_and_no_other() -> None:
    helper = make("h")
    helper.datagram_received(0.0, "p", datagram(wire.PingReq(77, "t", "t")))
    helper.take_actions()
    nacks: list[float] = []
    for hundredth in range(1, 300):
        now = hundredth / 100
        helper.tick(now)
        for action in helper.take_actions():
            if any(isinstance(m, wire.Nack) for m in decoded(action)):
                nacks.append(now)
    assert nacks == [pytest.approx(0.8 * CONFIG.probe_timeout)]


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_a_suspect_is_checked_exactly_suspect_checks_times(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    from trio_distribute._proto import swim

    monkeypatch.setattr(swim, "SUSPECT_CHECKS", limit)
    core = knows("b", "c", "d", "e", "f", "g")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    for tenth in range(1, 60):  # past every check, before the suspicion ends
        core.tick(tenth / 10)
    assert core.status_of("b") is SUSPECT
    assert core.counters["suspect_checks"] == limit


def test_a_confirmed_suspicion_ends_at_its_shortened_deadline() -> None:
    # Independent confirmations shorten the suspicion timer (Lifeguard);
    # the member is declared dead at the new deadline, not at the old one
    # and not never.
    core = knows("b", "c", "d", "e", "f", "g")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    first = core.suspicion_deadline("b")
    for source in ("y", "z"):
        core.datagram_received(0.1, source, datagram(wire.Suspect("b", 1, source)))
    shortened = core.suspicion_deadline("b")
    assert first is not None and shortened is not None and shortened < first
    core.tick(shortened - 0.001)
    assert core.status_of("b") is SUSPECT
    core.tick(shortened)
    assert core.status_of("b") is DEAD


def test_an_unconfirmed_suspicion_ends_at_its_deadline() -> None:
    core = knows("b", "c", "d", "e", "f", "g")
    core.datagram_received(0.0, "x", datagram(wire.Suspect("b", 1, "x")))
    deadline = core.suspicion_deadline("b")
    assert deadline is not None
    core.tick(deadline - 0.001)
    assert core.status_of("b") is SUSPECT
    core.tick(deadline)
    assert core.status_of("b") is DEAD


# -- the periodic push-pull and the members a stream can reach ------------------


def push_pull_targets(core: SwimCore, rounds: int, since: float = 0.0) -> list[str]:
    """Where the next ``rounds`` periodic push-pulls after ``since`` go."""
    targets: list[str] = []
    now = since
    for _ in range(rounds):
        now += 2 * PUSH_PULL.push_pull_interval  # past the (jittered) next one
        core.tick(now)
        for action in core.take_actions():
            if isinstance(action, SendStream):
                [message] = decoded(action)
                if isinstance(message, wire.PushPull) and not message.reply:
                    targets.append(action.name)
    return targets


# Push-pull every 10 s; probes and reconnects far apart.
PUSH_PULL = MembershipConfig(
    probe_interval=100.0,
    probe_timeout=50.0,
    push_pull_interval=10.0,
    reconnect_interval=1000.0,
)


def test_the_periodic_push_pull_goes_to_a_member_a_stream_reaches() -> None:
    """Where nodes connect on demand, a push-pull to a member the node is
    not connected to fails: it picks among the reachable members."""
    names = [f"m{i}" for i in range(20)]
    reachable = {"m3", "m17"}
    core = knows(*names, config=PUSH_PULL)
    core._stream_reachable = reachable.__contains__
    targets = push_pull_targets(core, 30)
    assert len(targets) == 30 and set(targets) == reachable
    # A reachable member that is suspect is not asked (only alive ones are).
    now = 30 * 2 * PUSH_PULL.push_pull_interval
    core.datagram_received(now, "x", datagram(wire.Suspect("m3", 1, "x")))
    assert core.status_of("m3") is SUSPECT
    assert push_pull_targets(core, 10, since=now) == ["m17"] * 10


def test_with_no_member_reachable_the_push_pull_goes_to_any_alive_member() -> None:
    names = [f"m{i}" for i in range(20)]
    core = knows(*names, config=PUSH_PULL)
    core._stream_reachable = lambda name: False
    targets = push_pull_targets(core, 30)
    assert len(targets) == 30 and len(set(targets)) > 5
    # Alive ones only: with 15 of the 20 suspect, only the other 5.
    now = 30 * 2 * PUSH_PULL.push_pull_interval
    for name in names[5:]:
        core.datagram_received(now, "x", datagram(wire.Suspect(name, 1, "x")))
    targets = push_pull_targets(core, 30, since=now)
    # (The sampling gives up after a few draws that hit suspects: a round
    # may send none.)
    assert len(targets) >= 20 and set(targets) <= set(names[:5])
    # Without the predicate (every member reachable): any alive member too.
    core = knows(*names, config=PUSH_PULL)
    assert len(set(push_pull_targets(core, 30))) > 5
