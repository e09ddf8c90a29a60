"""Tests for the deterministic network simulator (trio_distribute.testing.simulator)."""

from __future__ import annotations

import pytest

from trio_distribute.testing.simulator import Outgoing, Simulator, TraceEntry


class Recorder:
    """A host that records what it receives and sends what it is told to."""

    def __init__(self, *, echo: bool = False) -> None:
        self.received: list[tuple[float, str, str, object]] = []
        self.timers: list[float] = []
        self.deadlines: list[float] = []
        self.outgoing: list[Outgoing] = []
        self.echo = echo

    def datagram_received(self, now: float, source: str, payload: object) -> None:
        self.received.append((now, "datagram", source, payload))
        if self.echo:
            self.outgoing.append(Outgoing("datagram", source, payload))

    def stream_received(self, now: float, source: str, payload: object) -> None:
        self.received.append((now, "stream", source, payload))

    def timer(self, now: float) -> None:
        self.timers.append(now)
        self.deadlines = [d for d in self.deadlines if d > now]

    def next_deadline(self) -> float | None:
        return min(self.deadlines, default=None)

    def take_outgoing(self) -> list[Outgoing]:
        out, self.outgoing = self.outgoing, []
        return out

    def payloads(self) -> list[object]:
        return [payload for _, _, _, payload in self.received]


def send(sim: Simulator, host: Recorder, source: str, item: Outgoing) -> None:
    """Queue ``item`` at ``host`` and have the simulator collect it now."""
    host.outgoing.append(item)
    sim.wake(source)


def pair(**kwargs: object) -> tuple[Simulator, Recorder, Recorder]:
    sim = Simulator(1, **kwargs)  # type: ignore[arg-type]
    a, b = Recorder(), Recorder()
    sim.add("a", a)
    sim.add("b", b)
    return sim, a, b


def test_latency_within_range_and_datagrams_reorder() -> None:
    sim, a, b = pair(latency=(0.01, 0.02))
    a.outgoing.extend(Outgoing("datagram", "b", i) for i in range(200))
    sim.wake("a")
    sim.run_until(1.0)
    times = [t for t, *_ in b.received]
    assert len(times) == 200
    assert all(0.01 <= t <= 0.02 for t in times)
    assert b.payloads() != list(range(200))  # uniform latency reorders datagrams
    assert sorted(b.payloads()) == list(range(200))  # type: ignore[type-var]
    assert sim.now == 1.0


def test_streams_are_fifo_per_direction() -> None:
    sim, a, b = pair(latency=(0.01, 0.02))
    a.outgoing.extend(Outgoing("stream", "b", i) for i in range(200))
    sim.wake("a")
    sim.run_until(1.0)
    assert b.payloads() == list(range(200))
    assert sim.stats["a"].streams_sent == 200
    assert sim.stats["b"].streams_delivered == 200


def test_loss_drops_about_the_configured_fraction_but_never_streams() -> None:
    sim, a, b = pair(loss=0.3)
    a.outgoing.extend(Outgoing("datagram", "b", i) for i in range(2000))
    a.outgoing.extend(Outgoing("stream", "b", -i) for i in range(1, 101))
    sim.wake("a")
    sim.run_until(1.0)
    datagrams = [p for _, kind, _, p in b.received if kind == "datagram"]
    streams = [p for _, kind, _, p in b.received if kind == "stream"]
    assert 0.25 * 2000 < 2000 - len(datagrams) < 0.35 * 2000
    assert sim.stats["a"].dropped["loss"] == 2000 - len(datagrams)
    assert len(streams) == 100


def test_duplication() -> None:
    sim, a, b = pair(duplicate=0.5)
    a.outgoing.extend(Outgoing("datagram", "b", i) for i in range(1000))
    sim.wake("a")
    sim.run_until(1.0)
    extra = len(b.received) - 1000
    assert 400 < extra < 600
    assert set(b.payloads()) == set(range(1000))


def test_bytes_are_counted() -> None:
    sim, a, _ = pair()
    a.outgoing.extend([Outgoing("datagram", "b", b"12345"), Outgoing("stream", "b", b"123")])
    sim.wake("a")
    sim.run_until(1.0)
    stats = sim.stats["a"]
    assert (stats.datagrams_sent, stats.datagram_bytes_sent) == (1, 5)
    assert (stats.streams_sent, stats.stream_bytes_sent) == (1, 3)
    assert sim.stats.total().delivered == 2


def test_partition_isolates_groups_and_heal_restores() -> None:
    sim = Simulator(2)
    hosts = {name: Recorder() for name in "abcd"}
    for name, host in hosts.items():
        sim.add(name, host)
    sim.partition({"a", "b"}, {"c"})  # "d" is in the implicit extra group
    for target in "bcd":
        send(sim, hosts["a"], "a", Outgoing("datagram", target, "x"))
        send(sim, hosts["a"], "a", Outgoing("stream", target, "y"))
    sim.run_for(1.0)
    assert sorted(hosts["b"].payloads()) == ["x", "y"]  # type: ignore[type-var]
    assert hosts["c"].received == [] and hosts["d"].received == []
    assert sim.stats["a"].dropped["partition"] == 4
    sim.heal()
    send(sim, hosts["a"], "a", Outgoing("datagram", "c", "z"))
    sim.run_for(1.0)
    assert hosts["c"].payloads() == ["z"]


def test_partition_drops_datagrams_in_flight() -> None:
    sim, a, b = pair(latency=(0.1, 0.1))
    send(sim, a, "a", Outgoing("datagram", "b", "late"))
    sim.partition({"a"}, {"b"})
    sim.run_for(1.0)
    assert b.received == []


def test_one_way_block() -> None:
    sim, a, b = pair()
    sim.block("a", "b")
    send(sim, a, "a", Outgoing("datagram", "b", "a->b"))
    send(sim, b, "b", Outgoing("datagram", "a", "b->a"))
    sim.run_for(1.0)
    assert b.received == []
    assert a.payloads() == ["b->a"]
    assert sim.stats["a"].dropped["blocked"] == 1
    sim.unblock("a", "b")
    send(sim, a, "a", Outgoing("datagram", "b", "again"))
    sim.run_for(1.0)
    assert b.payloads() == ["again"]


def test_crash_drops_queued_and_restart_gets_new_traffic() -> None:
    sim, a, b = pair(latency=(0.1, 0.1))
    send(sim, a, "a", Outgoing("datagram", "b", "in flight"))
    send(sim, a, "a", Outgoing("stream", "b", "stream in flight"))
    sim.crash("b")
    assert not sim.is_up("b")
    sim.run_for(0.05)
    fresh = Recorder()
    sim.restart("b", fresh)  # restarted before the old deliveries were due
    sim.run_for(1.0)
    assert b.received == [] and fresh.received == []
    assert sim.stats["a"].dropped["down"] == 2
    send(sim, a, "a", Outgoing("datagram", "b", "hello"))
    sim.run_for(1.0)
    assert fresh.payloads() == ["hello"]
    with pytest.raises(ValueError, match="already up"):
        sim.add("b", Recorder())


def test_stream_dropped_when_sender_crashes_before_delivery() -> None:
    sim, a, b = pair(latency=(0.1, 0.1))
    send(sim, a, "a", Outgoing("stream", "b", "s"))
    send(sim, a, "a", Outgoing("datagram", "b", "d"))
    sim.crash("a")
    sim.run_for(1.0)
    assert b.payloads() == ["d"]  # a datagram already sent still arrives; the stream breaks


def test_timers_fire_at_deadline_and_stale_ones_are_ignored() -> None:
    sim = Simulator(3)
    host = Recorder()
    host.deadlines = [0.5, 0.25]
    sim.add("h", host)
    sim.run_until(0.3)
    assert host.timers == [0.25]
    host.deadlines = [0.9]
    sim.wake("h")  # the pending 0.5 timer is now stale
    sim.run_until(2.0)
    assert host.timers == [0.25, 0.9]


def test_slow_host_handles_everything_late() -> None:
    sim, a, b = pair(latency=(0.01, 0.01))
    sim.set_slow("b", 0.2)
    send(sim, a, "a", Outgoing("datagram", "b", 1))
    b.deadlines.append(0.05)
    sim.wake("b")
    sim.run_for(1.0)
    assert b.received[0][0] == pytest.approx(0.21)
    assert b.timers == [pytest.approx(0.25)]
    sim.set_slow("b", 0.0)
    start = sim.now
    send(sim, a, "a", Outgoing("datagram", "b", 2))
    sim.run_for(1.0)
    assert b.received[1][0] == pytest.approx(start + 0.01)


def test_pause_holds_everything_then_handles_it_in_order() -> None:
    sim, a, b = pair(latency=(0.01, 0.01))
    sim.pause("b", 1.0)
    for i in range(5):
        send(sim, a, "a", Outgoing("stream", "b", i))
    b.deadlines.append(0.5)
    sim.wake("b")
    sim.run_until(0.99)
    assert b.received == [] and b.timers == []
    sim.run_until(1.5)
    assert b.payloads() == [0, 1, 2, 3, 4]
    assert all(t == 1.0 for t, *_ in b.received)
    assert b.timers == [1.0]


def test_run_until_true_stops_at_the_event() -> None:
    sim, a, b = pair(latency=(0.3, 0.3))
    send(sim, a, "a", Outgoing("datagram", "b", "x"))
    assert sim.run_until_true(lambda: bool(b.received), timeout=5.0)
    assert sim.now == pytest.approx(0.3)
    assert not sim.run_until_true(lambda: len(b.received) > 1, timeout=2.0)
    assert sim.now == pytest.approx(2.3)


def test_observer_runs_after_every_handled_event_and_can_fail_the_run() -> None:
    sim, a, b = pair()
    seen: list[int] = []
    sim.observe(lambda: seen.append(len(b.received)))
    a.outgoing.extend(Outgoing("datagram", "b", i) for i in range(3))
    sim.wake("a")
    sim.run_for(1.0)
    assert seen == [1, 2, 3]  # one call per delivery

    def invariant() -> None:
        if len(b.received) > 3:
            raise AssertionError("too many")

    sim.observe(invariant)
    send(sim, a, "a", Outgoing("datagram", "b", "boom"))
    with pytest.raises(AssertionError, match="too many"):
        sim.run_for(1.0)


def test_a_host_spinning_on_its_timer_is_reported() -> None:
    class Spinner(Recorder):
        def next_deadline(self) -> float | None:
            return 0.0

    sim = Simulator(4)
    sim.add("s", Spinner())
    with pytest.raises(RuntimeError, match="keeps asking"):
        sim.run_for(1.0)


def chatter(seed: int) -> list[TraceEntry]:
    sim = Simulator(seed, loss=0.2, duplicate=0.1, latency=(0.001, 0.05), trace=True)
    hosts = [Recorder(echo=True) for _ in range(5)]
    for i, host in enumerate(hosts):
        sim.add(str(i), host)
    rng = sim.spawn_rng()
    for step in range(50):
        source = rng.randrange(5)
        hosts[source].outgoing.append(Outgoing("datagram", str(rng.randrange(5)), step))
        sim.wake(str(source))
        sim.run_for(0.01)
    sim.pause("3", 0.1)
    sim.set_slow("2", 0.03)
    sim.run_for(1.0)
    assert sim.trace is not None
    return sim.trace


def test_same_seed_same_trace() -> None:
    first = chatter(7)
    assert len(first) > 100
    assert first == chatter(7)
    assert first != chatter(8)


def test_spawned_rngs_are_independent_and_deterministic() -> None:
    one, two = Simulator(5), Simulator(5)
    values = [one.spawn_rng().random() for _ in range(3)]
    assert values == [two.spawn_rng().random() for _ in range(3)]
    assert len(set(values)) == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="loss"):
        Simulator(1, loss=1.5)
    with pytest.raises(ValueError, match="latency"):
        Simulator(1, latency=(0.2, 0.1))
    sim = Simulator(1)
    with pytest.raises(ValueError, match="not up"):
        sim.crash("nobody")
    with pytest.raises(ValueError, match="two partition groups"):
        sim.partition({"a"}, {"a"})
