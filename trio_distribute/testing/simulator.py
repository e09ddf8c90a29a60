"""A deterministic network simulator for sans-IO protocol cores.

Hosts are small adapters around one protocol core (see :class:`SimHost`).
The simulator owns virtual time and a seeded network: datagrams get a random
latency (so they may reorder), can be lost or duplicated; streams model TCP
(reliable and FIFO per direction while the link is up). Faults are injected
by calling methods between ``run_*`` calls: partitions, one-way blocks,
crashes and restarts, loss, duplication, slow hosts and paused hosts.

Every event sits in one heap ordered by ``(time, insertion sequence)`` and
all randomness comes from the seeded network rng, so a run is a pure function
of the seed and the calls made. There is no wall clock anywhere.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Collection
from typing import Literal, NamedTuple, Protocol

import attrs

__all__ = ["HostStats", "Outgoing", "SimHost", "SimStats", "Simulator", "TraceEntry"]


class Outgoing(NamedTuple):
    """Something a host wants to send."""

    channel: Literal["datagram", "stream"]
    destination: str
    payload: object


class SimHost(Protocol):
    """An adapter around one protocol core, driven by the simulator."""

    def datagram_received(self, now: float, source: str, payload: object) -> None: ...

    def stream_received(self, now: float, source: str, payload: object) -> None: ...

    def timer(self, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...

    def take_outgoing(self) -> list[Outgoing]: ...


class TraceEntry(NamedTuple):
    """One handled event, recorded when the simulator runs with ``trace=True``."""

    time: float
    kind: str  # "datagram", "stream", "timer" or "drop:<cause>"
    source: str
    destination: str


@attrs.define(eq=False, kw_only=True)
class HostStats:
    """Counters for one address. Drops are counted at the sender, by cause."""

    datagrams_sent: int = 0
    datagram_bytes_sent: int = 0
    streams_sent: int = 0
    stream_bytes_sent: int = 0
    datagrams_delivered: int = 0
    streams_delivered: int = 0
    timers: int = 0
    dropped: Counter[str] = attrs.field(factory=Counter)

    @property
    def delivered(self) -> int:
        """Messages (datagrams and streams) handed to this address's host."""
        return self.datagrams_delivered + self.streams_delivered


@attrs.define(eq=False, kw_only=True)
class SimStats:
    """Per-address counters; ``stats[address]`` creates an empty entry on demand."""

    by_address: dict[str, HostStats] = attrs.field(factory=dict)

    def __getitem__(self, address: str) -> HostStats:
        entry = self.by_address.get(address)
        if entry is None:
            entry = self.by_address[address] = HostStats()
        return entry

    def total(self) -> HostStats:
        """The sum over all addresses."""
        out = HostStats()
        for entry in self.by_address.values():
            out.datagrams_sent += entry.datagrams_sent
            out.datagram_bytes_sent += entry.datagram_bytes_sent
            out.streams_sent += entry.streams_sent
            out.stream_bytes_sent += entry.stream_bytes_sent
            out.datagrams_delivered += entry.datagrams_delivered
            out.streams_delivered += entry.streams_delivered
            out.timers += entry.timers
            out.dropped.update(entry.dropped)
        return out

    def reset(self) -> None:
        """Forget every counter (to measure a steady-state window)."""
        self.by_address.clear()


# Event kinds, stored as small ints in heap tuples.
_DATAGRAM = 0
_STREAM = 1
_TIMER = 2

# A host whose timer keeps asking to be called at the same instant is broken;
# fail loudly instead of spinning forever.
_MAX_TIMERS_AT_ONE_INSTANT = 10_000


def _size(payload: object) -> int:
    if isinstance(payload, bytes | bytearray | memoryview):
        return len(payload)
    return 0


class Simulator:
    """Virtual time plus a seeded network between
    :class:`~trio_distribute.testing.simulator.SimHost` adapters."""

    def __init__(
        self,
        seed: int,
        *,
        latency: tuple[float, float] = (0.0005, 0.002),
        loss: float = 0.0,
        duplicate: float = 0.0,
        start: float = 0.0,
        trace: bool = False,
    ) -> None:
        low, high = latency
        if not 0.0 <= low <= high:
            raise ValueError(f"latency must be (low, high) with 0 <= low <= high, got {latency}")
        self.now: float = float(start)
        self.rng = random.Random(seed)
        self._rng_seeds = random.Random(seed ^ 0x5EED_5EED)
        self.latency = (float(low), float(high))
        self.loss = self._probability("loss", loss)
        self.duplicate = self._probability("duplicate", duplicate)
        self.stats = SimStats()
        self.trace: list[TraceEntry] | None = [] if trace else None
        self._heap: list[tuple[float, int, int, tuple[object, ...]]] = []
        self._seq = 0
        self._hosts: dict[str, SimHost] = {}
        # Bumped on crash and restart: in-flight deliveries to an older
        # generation are dropped, and an older timer is stale.
        self._generation: dict[str, int] = {}
        self._timer_at: dict[str, float | None] = {}
        self._timer_token: dict[str, int] = {}
        self._timer_repeat: dict[str, tuple[float, int]] = {}
        self._group: dict[str, int] | None = None
        self._blocked: set[tuple[str, str]] = set()
        self._slow: dict[str, float] = {}
        self._paused_until: dict[str, float] = {}
        self._stream_tail: dict[tuple[str, str], float] = {}
        self._observers: list[Callable[[], None]] = []

    # -- setup -------------------------------------------------------------

    @staticmethod
    def _probability(name: str, p: float) -> float:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        return float(p)

    def spawn_rng(self) -> random.Random:
        """An independent rng for a core, derived deterministically from the seed."""
        return random.Random(self._rng_seeds.getrandbits(64))

    def add(self, address: str, host: SimHost) -> None:
        """Attach a host at ``address`` (which must not be up already)."""
        if address in self._hosts:
            raise ValueError(f"{address!r} is already up")
        self._hosts[address] = host
        self._generation[address] = self._generation.get(address, 0) + 1
        self._timer_at[address] = None
        self._after_callback(address, host)

    def crash(self, address: str) -> None:
        """The host disappears; deliveries queued for it are dropped."""
        if self._hosts.pop(address, None) is None:
            raise ValueError(f"{address!r} is not up")
        self._generation[address] += 1
        self._timer_at[address] = None
        self._paused_until.pop(address, None)

    def restart(self, address: str, host: SimHost) -> None:
        """A new host at ``address`` (the old one, if still up, crashes first)."""
        if address in self._hosts:
            self.crash(address)
        self.add(address, host)

    def wake(self, address: str) -> None:
        """Collect the host's outgoing messages and re-read its deadline.

        Call this after code outside the simulator drove the host's core
        directly (a test calling ``join()`` or ``leave()``), since the
        simulator otherwise only looks after its own callbacks.
        """
        self._after_callback(address, self._hosts[address])

    def is_up(self, address: str) -> bool:
        return address in self._hosts

    def host(self, address: str) -> SimHost:
        """The host currently up at ``address``."""
        return self._hosts[address]

    def addresses(self) -> list[str]:
        """Addresses of the hosts that are up, in the order they were added."""
        return list(self._hosts)

    # -- faults ------------------------------------------------------------

    def partition(self, *groups: Collection[str]) -> None:
        """No traffic between groups; unlisted addresses form one more group."""
        mapping: dict[str, int] = {}
        for index, group in enumerate(groups):
            for address in group:
                if address in mapping:
                    raise ValueError(f"{address!r} is in two partition groups")
                mapping[address] = index
        self._group = mapping

    def heal(self) -> None:
        """Undo :meth:`partition` and every :meth:`block`."""
        self._group = None
        self._blocked.clear()

    def block(self, source: str, destination: str) -> None:
        """Drop everything sent from ``source`` to ``destination`` (one way)."""
        self._blocked.add((source, destination))

    def unblock(self, source: str, destination: str) -> None:
        self._blocked.discard((source, destination))

    def set_loss(self, loss: float) -> None:
        self.loss = self._probability("loss", loss)

    def set_duplicate(self, p: float) -> None:
        self.duplicate = self._probability("duplicate", p)

    def set_slow(self, address: str, delay: float) -> None:
        """Handle every delivery and timer at ``address`` ``delay`` later (0 = normal)."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        if delay:
            self._slow[address] = float(delay)
        else:
            self._slow.pop(address, None)

    def pause(self, address: str, duration: float) -> None:
        """Like SIGSTOP: nothing is handled at ``address`` until ``now + duration``."""
        if duration < 0:
            raise ValueError(f"duration must be >= 0, got {duration}")
        until = self.now + duration
        self._paused_until[address] = max(until, self._paused_until.get(address, until))

    def linked(self, source: str, destination: str) -> bool:
        """Whether the network currently carries traffic from source to destination."""
        return self._cut(source, destination) is None

    def _cut(self, source: str, destination: str) -> str | None:
        """Why the link from source to destination is cut, or None if it is up."""
        if (source, destination) in self._blocked:
            return "blocked"
        group = self._group
        if group is not None and group.get(source, -1) != group.get(destination, -1):
            return "partition"
        return None

    # -- running -----------------------------------------------------------

    def observe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every handled event (it may raise to fail the run)."""
        self._observers.append(callback)

    def run_until(self, t: float) -> None:
        """Handle every event due at or before ``t``; then ``now == t``."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            self._step()
        if t > self.now:
            self.now = t

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Run until ``predicate()`` holds (checked after every event) or
        ``timeout`` virtual seconds pass. Returns whether it held."""
        if predicate():
            return True
        deadline = self.now + timeout
        heap = self._heap
        while heap and heap[0][0] <= deadline:
            if self._step() and predicate():
                return True
        self.now = max(self.now, deadline)
        return predicate()

    # -- internals ---------------------------------------------------------

    def _push(self, time: float, kind: int, data: tuple[object, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, data))

    def _latency(self) -> float:
        low, high = self.latency
        return low if low == high else self.rng.uniform(low, high)

    def _drop(self, source: str, destination: str, cause: str) -> None:
        self.stats[source].dropped[cause] += 1
        if self.trace is not None:
            self.trace.append(TraceEntry(self.now, "drop:" + cause, source, destination))

    def _after_callback(self, address: str, host: SimHost) -> None:
        send = self._send
        for item in host.take_outgoing():
            send(address, item)
        self._schedule_timer(address, host)

    def _schedule_timer(self, address: str, host: SimHost) -> None:
        deadline = host.next_deadline()
        if deadline == self._timer_at[address]:
            return
        self._timer_at[address] = deadline
        token = self._timer_token.get(address, 0) + 1
        self._timer_token[address] = token
        if deadline is not None:
            # A slow host handles its timers late too; applying the delay here
            # (rather than on firing) means a deadline that keeps moving
            # cannot postpone the timer forever.
            delay = self._slow.get(address, 0.0)
            when = max(deadline, self.now) + delay
            data = (address, self._generation[address], token, bool(delay))
            self._push(when, _TIMER, data)

    def _send(self, source: str, item: Outgoing) -> None:
        channel, destination, payload = item
        # (SimStats.__getitem__ inlined: this runs for every message.)
        stats = self.stats.by_address.get(source) or self.stats[source]
        size = _size(payload)
        if channel == "datagram":
            stats.datagrams_sent += 1
            stats.datagram_bytes_sent += size
            copies = 1
            if self.duplicate and self.rng.random() < self.duplicate:
                copies = 2
            for _ in range(copies):
                if self.loss and self.rng.random() < self.loss:
                    self._drop(source, destination, "loss")
                    continue
                generation = self._generation.get(destination, 0)
                self._push(
                    self.now + self._latency(),
                    _DATAGRAM,
                    (source, destination, payload, generation, False),
                )
        elif channel == "stream":
            stats.streams_sent += 1
            stats.stream_bytes_sent += size
            if destination not in self._hosts:
                self._drop(source, destination, "down")
                return
            cut = self._cut(source, destination)
            if cut is not None:
                self._drop(source, destination, cut)
                return
            pair = (source, destination)
            # FIFO per direction: never deliver before an earlier stream message.
            when = max(self.now + self._latency(), self._stream_tail.get(pair, 0.0))
            self._stream_tail[pair] = when
            generations = (self._generation.get(source, 0), self._generation[destination])
            self._push(when, _STREAM, (source, destination, payload, generations, False))
        else:
            raise ValueError(f"unknown channel {channel!r}")

    def _postpone(self, address: str, time: float, kind: int, data: tuple[object, ...]) -> bool:
        """Delay an event for a paused or slow host; True if it was postponed."""
        paused = self._paused_until.get(address)
        if paused is not None:
            if time < paused:
                self._push(paused, kind, data)
                return True
            del self._paused_until[address]
        delay = self._slow.get(address)
        if delay and not data[-1]:
            # Mark it as already delayed (last field) so it is delayed only once.
            self._push(time + delay, kind, (*data[:-1], True))
            return True
        return False

    def _step(self) -> bool:
        """Handle one event; True if a host callback ran."""
        time, _, kind, data = heapq.heappop(self._heap)
        if time > self.now:
            self.now = time
        if kind == _TIMER:
            handled = self._handle_timer(time, data)
        else:
            handled = self._handle_delivery(time, kind, data)
        if handled:
            for observer in self._observers:
                observer()
        return handled

    def _handle_timer(self, time: float, data: tuple[object, ...]) -> bool:
        address, generation, token, _ = data
        assert isinstance(address, str)
        if self._generation.get(address) != generation or self._timer_token[address] != token:
            return False
        if self._postpone(address, time, _TIMER, data):
            return False
        host = self._hosts[address]
        deadline = host.next_deadline()
        if deadline is None:
            self._timer_at[address] = None
            return False
        if deadline > self.now:
            self._timer_at[address] = None
            self._schedule_timer(address, host)
            return False
        last_time, repeats = self._timer_repeat.get(address, (-1.0, 0))
        repeats = repeats + 1 if last_time == self.now else 1
        if repeats > _MAX_TIMERS_AT_ONE_INSTANT:
            raise RuntimeError(f"host {address!r} keeps asking for a timer at {self.now}")
        self._timer_repeat[address] = (self.now, repeats)
        self.stats[address].timers += 1
        if self.trace is not None:
            self.trace.append(TraceEntry(self.now, "timer", address, address))
        # Force a fresh timer event afterwards even if the deadline is unchanged.
        self._timer_at[address] = None
        host.timer(self.now)
        self._after_callback(address, host)
        return True

    def _handle_delivery(self, time: float, kind: int, data: tuple[object, ...]) -> bool:
        source, destination, payload, generation, _ = data
        assert isinstance(source, str) and isinstance(destination, str)
        if kind == _DATAGRAM:
            if self._generation.get(destination) != generation or destination not in self._hosts:
                self._drop(source, destination, "down")
                return False
        else:
            assert isinstance(generation, tuple)
            source_generation, destination_generation = generation
            if (
                self._generation.get(destination) != destination_generation
                or destination not in self._hosts
                or self._generation.get(source, 0) != source_generation
                or source not in self._hosts
            ):
                self._drop(source, destination, "down")
                return False
        cut = self._cut(source, destination)
        if cut is not None:
            self._drop(source, destination, cut)
            return False
        if self._postpone(destination, time, kind, data):
            return False
        host = self._hosts[destination]
        channel = "datagram" if kind == _DATAGRAM else "stream"
        if self.trace is not None:
            self.trace.append(TraceEntry(self.now, channel, source, destination))
        stats = self.stats.by_address.get(destination) or self.stats[destination]
        if kind == _DATAGRAM:
            stats.datagrams_delivered += 1
            host.datagram_received(self.now, source, payload)
        else:
            stats.streams_delivered += 1
            host.stream_received(self.now, source, payload)
        self._after_callback(destination, host)
        return True
