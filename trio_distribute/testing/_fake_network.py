"""``FakeNetwork``: an in-memory network for whole nodes in one process.

Nodes started with ``open_node(..., network=fake)`` listen, dial and send
datagrams through it instead of the operating system. Their real drivers
run unchanged (transport, membership, election, registry, groups, RPC) and
every delay is a sleep on the backend's clock, so under
``trio.testing.MockClock(autojump_threshold=0)`` minutes of cluster life
pass in a fraction of a second, and the same seed gives the same run.

The model, per ordered link ``a -> b`` (:class:`LinkConditions`):

* Streams behave like TCP: bytes arrive in order, after ``latency`` plus a
  random share of ``jitter`` plus their transmission time at ``bandwidth``;
  they are never lost or duplicated. While the link is cut (or either end
  is paused) bytes wait, as TCP retransmits them, and arrive once it heals.
  A sender waits (backpressure) while ``stream_buffer`` bytes are in flight
  on one direction of a stream. A dial across a cut link hangs until the
  link heals (the caller's timeout ends it); a dial to an address where
  nothing listens is refused after one round trip.
* Datagrams behave like UDP: each is lost with probability ``loss``,
  duplicated with probability ``duplicate``, delayed like stream bytes
  (so jitter reorders them), dropped while the link is cut or the sender
  is paused, and dropped when ``datagram_buffer`` of them wait at a
  receiver (a paused node's socket buffer fills up).
* :meth:`FakeNetwork.reset` breaks streams as a TCP reset does: both ends
  fail at once and bytes in flight are lost.
* :meth:`FakeNetwork.pause` freezes a node's network (both ways), like a
  stopped process seen from outside. Its own tasks keep running.

Hosts are opaque labels: ``"10.0.0.7"`` and ``"db"`` are both fine, and a
listener bound to ``0.0.0.0`` (or ``::``) receives for any host. Every
loss the network causes is counted in :attr:`FakeNetwork.drops`.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.abc
import attrs
import trio
import trio.lowlevel

__all__ = [
    "FakeNetwork",
    "LinkConditions",
    "VirtualTimeEventLoop",
    "seed_scheduler",
    "virtual_time",
]

_T = TypeVar("_T")

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: Ports handed out for port 0 (listeners) and for the dialling side of
#: streams start here, as ephemeral ports do.
_FIRST_PORT = 20000
_FIRST_EPHEMERAL_PORT = 40000


def _name_of(node: object) -> str:
    name = getattr(node, "name", node)
    if not isinstance(name, str):
        raise TypeError(f"expected a node or a node name, got {node!r}")
    return name


def _names(nodes: object) -> list[str]:
    if isinstance(nodes, str) or hasattr(nodes, "name"):
        return [_name_of(nodes)]
    if isinstance(nodes, Iterable):
        return [_name_of(node) for node in nodes]
    raise TypeError(f"expected a node, a node name or several of them, got {nodes!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _probability(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _bandwidth(instance: object, attribute: attrs.Attribute[float | None], value: object) -> None:
    if value is not None and (
        not isinstance(value, int | float) or isinstance(value, bool) or not value > 0
    ):
        raise ValueError(f"bandwidth must be None (unlimited) or bytes/s > 0, got {value!r}")


@attrs.define(kw_only=True)
class LinkConditions:
    """What one direction of a link does to traffic (mutable)."""

    #: Seconds every byte and datagram takes, at least.
    latency: float = attrs.field(default=0.0005, validator=_non_negative)
    #: Up to this many seconds more, drawn per send (reorders datagrams).
    jitter: float = attrs.field(default=0.0005, validator=_non_negative)
    #: Probability that a datagram is lost.
    loss: float = attrs.field(default=0.0, validator=_probability)
    #: Probability that a datagram arrives twice.
    duplicate: float = attrs.field(default=0.0, validator=_probability)
    #: Bytes per second, or ``None`` for no limit.
    bandwidth: float | None = attrs.field(default=None, validator=_bandwidth)
    #: Nothing gets through while cut.
    cut: bool = False

    def delay(self, rng: random.Random, size: int) -> float:
        extra = rng.random() * self.jitter if self.jitter else 0.0
        wire = size / self.bandwidth if self.bandwidth else 0.0
        return self.latency + extra + wire


class _Signal:
    """A reusable wake-up for the (few) tasks waiting on one thing.

    ``fire`` wakes them now; ``wake_at`` moves their wake-up earlier, so a
    reader waiting for bytes due at a known time wakes once, then, instead
    of once when they are sent and again when they arrive.
    """

    __slots__ = ("_parked", "_scopes")

    def __init__(self) -> None:
        self._scopes: list[anyio.CancelScope] = []
        #: On trio: each parked task and the scope that holds its deadline.
        self._parked: dict[trio.lowlevel.Task, trio.CancelScope] = {}

    def fire(self) -> None:
        if self._parked:
            # Rescheduled, not cancelled: a cancellation raises and catches
            # an exception in the waiter, and the fake network wakes a
            # reader once per frame.
            parked, self._parked = self._parked, {}
            for task in parked:
                trio.lowlevel.reschedule(task)
        for scope in self._scopes:
            scope.cancel()

    def wake_at(self, at: float) -> None:
        for trio_scope in self._parked.values():
            if at < trio_scope.deadline:
                trio_scope.deadline = at
        for scope in self._scopes:
            if at < scope.deadline:
                scope.deadline = at

    async def wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        if _on_trio():
            await self._park(timeout)
            return
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            self._scopes.append(scope)
            try:
                await anyio.sleep_forever()
            finally:
                self._scopes.remove(scope)

    async def _park(self, timeout: float) -> None:
        """trio directly: park until ``fire`` reschedules this task or the
        deadline (which ``wake_at`` may move) passes."""
        task = trio.lowlevel.current_task()
        parked = self._parked

        def abort(_: Any) -> trio.lowlevel.Abort:
            # Cancelled (the deadline, or an outer scope): no longer parked,
            # so a later fire does not reschedule this task twice.
            parked.pop(task, None)
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.CancelScope(deadline=trio.current_time() + timeout) as trio_scope:
            parked[task] = trio_scope
            await trio.lowlevel.wait_task_rescheduled(abort)


def _on_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


class FakeNetwork:
    """An in-memory network, deterministic under ``seed``.

    Args:
        seed: every random choice (jitter, loss, duplication, the nodes'
            own protocol randomness and creation numbers) derives from it.
        latency, jitter, loss, duplicate, bandwidth: the default
            :class:`LinkConditions` of every link.
        stream_buffer: bytes one direction of a stream holds in flight
            before its sender waits (default 4 MiB).
        datagram_buffer: datagrams that may wait at one endpoint before
            more are dropped (default 256).

    TLS is not supported: a node given an ``ssl_context`` on this network
    fails to start with ``ValueError``.
    """

    supports_tls = False

    def __init__(
        self,
        seed: int | str = 0,
        *,
        latency: float = 0.0005,
        jitter: float = 0.0005,
        loss: float = 0.0,
        duplicate: float = 0.0,
        bandwidth: float | None = None,
        stream_buffer: int = 4 * 1024 * 1024,
        datagram_buffer: int = 256,
    ) -> None:
        if type(stream_buffer) is not int or stream_buffer < 1:
            raise ValueError(f"stream_buffer must be a positive int, got {stream_buffer!r}")
        if type(datagram_buffer) is not int or datagram_buffer < 1:
            raise ValueError(f"datagram_buffer must be a positive int, got {datagram_buffer!r}")
        self.seed = seed
        self.defaults = LinkConditions(
            latency=latency, jitter=jitter, loss=loss, duplicate=duplicate, bandwidth=bandwidth
        )
        self.stream_buffer = stream_buffer
        self.datagram_buffer = datagram_buffer
        #: Traffic the network lost, by cause.
        self.drops: dict[str, int] = {}
        self._rng = random.Random(f"trio_distribute.FakeNetwork/{seed}")
        self._links: dict[tuple[str, str], LinkConditions] = {}
        self._paused: set[str] = set()
        self._attached: dict[str, int] = {}
        self._listeners: dict[tuple[str, int], _FakeListener] = {}
        self._endpoints: dict[tuple[str, int], _FakeEndpoint] = {}
        self._owners: dict[tuple[str, int], str] = {}
        #: Name resolution: host names and the addresses they stand for.
        self._hosts: dict[str, str] = {"localhost": "127.0.0.1"}
        self._next_port = _FIRST_PORT
        self._next_ephemeral = _FIRST_EPHEMERAL_PORT
        # Everything that may be waiting for a link to heal or a node to
        # resume: woken on every such change.
        # Insertion-ordered (dicts, not sets) so that wake-ups happen in the
        # same order on every run.
        self._waiters: dict[_Signal, None] = {}
        self._streams: dict[_FakeStream, None] = {}

    def __repr__(self) -> str:
        return f"FakeNetwork(seed={self.seed!r}, nodes={len(self._attached)})"

    # ------------------------------------------------------------- attaching

    def attach(self, name: str) -> _FakeHost:
        """The network as the node ``name`` sees it (``open_node`` calls this)."""
        count = self._attached.get(name, 0) + 1
        self._attached[name] = count
        return _FakeHost(self, name, random.Random(f"{self.seed}/{name}/{count}"))

    # ------------------------------------------------------------ conditions

    def link(self, a: object, b: object) -> LinkConditions:
        """The conditions of the link from ``a`` to ``b`` (nodes or names);
        change its fields to change the link."""
        key = (_name_of(a), _name_of(b))
        conditions = self._links.get(key)
        if conditions is None:
            conditions = self._links[key] = attrs.evolve(self.defaults)
        return conditions

    def set_link(self, a: object, b: object, *, both_ways: bool = True, **fields: Any) -> None:
        """Set fields of :class:`LinkConditions` on the link from ``a`` to
        ``b`` (and back, unless ``both_ways=False``)."""
        for x, y in [(a, b), (b, a)] if both_ways else [(a, b)]:
            for field, value in fields.items():
                conditions = self.link(x, y)
                attrs.validate(attrs.evolve(conditions, **{field: value}))
                setattr(conditions, field, value)
        self._changed()

    def partition(self, a: object, b: object) -> None:
        """Cut every link between ``a`` and ``b`` both ways (each a node, a
        name, or several of them) until :meth:`heal`."""
        for x in _names(a):
            for y in _names(b):
                self.link(x, y).cut = True
                self.link(y, x).cut = True
        self._changed()

    def cut(self, a: object, b: object) -> None:
        """Cut the links from ``a`` to ``b`` only (a one-way failure)."""
        for x in _names(a):
            for y in _names(b):
                self.link(x, y).cut = True
        self._changed()

    def heal(self, a: object | None = None, b: object | None = None) -> None:
        """Lift the cuts between ``a`` and ``b`` (both ways), or every cut."""
        if a is None or b is None:
            for conditions in self._links.values():
                conditions.cut = False
        else:
            for x in _names(a):
                for y in _names(b):
                    self.link(x, y).cut = False
                    self.link(y, x).cut = False
        self._changed()

    def isolate(self, node: object) -> None:
        """Cut ``node`` off from every other node attached so far."""
        name = _name_of(node)
        self.partition(name, [other for other in self._attached if other != name])

    def pause(self, node: object) -> None:
        """Freeze ``node``'s network both ways (a stopped process, seen from
        outside) until ``resume(node)``."""
        self._paused.add(_name_of(node))
        self._changed()

    def resume(self, node: object) -> None:
        self._paused.discard(_name_of(node))
        self._changed()

    def reset(self, a: object, b: object | None = None) -> int:
        """Reset every stream between ``a`` and ``b`` (or every stream of
        ``a``); both ends fail and bytes in flight are lost. Returns how
        many streams were reset."""
        first = set(_names(a))
        second = None if b is None else set(_names(b))
        count = 0
        for stream in list(self._streams):
            ends = {stream.local_node, stream.remote_node}
            if ends & first and (second is None or ends & second) and not stream.broken:
                stream.break_pair()
                count += 1
        if count:
            self.count_drop("reset", count)
        return count

    def deliverable(self, source: str, target: str) -> bool:
        """Whether traffic from ``source`` to ``target`` moves right now."""
        if source in self._paused or target in self._paused:
            return False
        conditions = self._links.get((source, target))
        return conditions is None or not conditions.cut

    def count_drop(self, cause: str, count: int = 1) -> None:
        self.drops[cause] = self.drops.get(cause, 0) + count

    def _changed(self) -> None:
        for signal in list(self._waiters):
            signal.fire()

    def _conditions(self, source: str, target: str) -> LinkConditions:
        return self._links.get((source, target)) or self.defaults

    # ------------------------------------------------------------- addresses

    def _take_port(self, host: str, port: int, kind: Mapping[tuple[str, int], object]) -> int:
        # Streams and datagrams have separate port spaces (TCP and UDP), but
        # a port picked for one is free in both, so a node can bind its
        # datagram endpoint on its listener's port.
        if port:
            if (host, port) in kind:
                raise OSError(errno.EADDRINUSE, f"address {host}:{port} already in use")
            return port
        while any(
            (h, self._next_port) in table
            for table in (self._listeners, self._endpoints)
            for h in (host, "*")
        ):
            self._next_port += 1
        port = self._next_port
        self._next_port += 1
        return port

    def add_host(self, name: str, address: str) -> None:
        """Resolve the host name ``name`` to ``address`` from now on (the
        fake's ``/etc/hosts``; ``localhost`` is ``127.0.0.1``)."""
        self._hosts[name] = address

    def resolve(self, host: str) -> str:
        """The address ``host`` stands for (itself unless added)."""
        return self._hosts.get(host, host)

    def _lookup(self, table: Mapping[tuple[str, int], _T], host: str, port: int) -> _T | None:
        host = self.resolve(host)
        found = table.get((host, port))
        return found if found is not None else table.get(("*", port))

    def _ephemeral_port(self) -> int:
        port = self._next_ephemeral
        self._next_ephemeral = _FIRST_EPHEMERAL_PORT + (port + 1 - _FIRST_EPHEMERAL_PORT) % 20000
        return port


def _key_host(network: FakeNetwork, host: str) -> str:
    return "*" if host in _WILDCARD_HOSTS else network.resolve(host)


class _FakeHost:
    """One node's view of a :class:`FakeNetwork`."""

    supports_tls = False

    def __init__(self, network: FakeNetwork, name: str, rng: random.Random) -> None:
        self.network = network
        self.name = name
        self._rng = rng

    def __repr__(self) -> str:
        return f"<FakeNetwork host {self.name}>"

    def random(self) -> random.Random:
        return random.Random(self._rng.getrandbits(64))

    async def listen(self, host: str, port: int) -> _FakeListener:
        await anyio.lowlevel.checkpoint()
        net = self.network
        bound = _key_host(net, host)
        key = (bound, net._take_port(bound, port, net._listeners))
        listener = _FakeListener(self, key, (host or "0.0.0.0" if bound == "*" else bound, key[1]))
        net._listeners[key] = listener
        net._owners[key] = self.name
        return listener

    async def open_datagram(self, host: str, port: int) -> _FakeEndpoint:
        await anyio.lowlevel.checkpoint()
        net = self.network
        bound = _key_host(net, host)
        key = (bound, net._take_port(bound, port, net._endpoints))
        endpoint = _FakeEndpoint(self, key, (host or "0.0.0.0" if bound == "*" else bound, key[1]))
        net._endpoints[key] = endpoint
        return endpoint

    async def dial(self, host: str, port: int, *, local_host: str) -> anyio.abc.ByteStream:
        net = self.network
        listener = net._lookup(net._listeners, host, port)
        if listener is None:
            await anyio.sleep(2 * net.defaults.latency)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connect to {host}:{port} refused")
        target = listener.host.name
        signal = _Signal()
        net._waiters[signal] = None
        try:
            # A SYN or its answer lost on a cut link: TCP retries until the
            # caller gives up, and gets through once the link heals.
            while not (net.deliverable(self.name, target) and net.deliverable(target, self.name)):
                await signal.wait(math.inf)
        finally:
            net._waiters.pop(signal, None)
        rtt = net._conditions(self.name, target).delay(net._rng, 0) + net._conditions(
            target, self.name
        ).delay(net._rng, 0)
        await anyio.sleep(rtt)
        if net._listeners.get(listener.key) is not listener:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connect to {host}:{port} refused")
        local = (local_host or "127.0.0.1", net._ephemeral_port())
        outbound = _Pipe(self.name, target)
        inbound = _Pipe(target, self.name)
        client = _FakeStream(net, self.name, target, inbound, outbound, local, listener.address)
        server = _FakeStream(net, target, self.name, outbound, inbound, listener.address, local)
        client.peer = server
        server.peer = client
        listener.offer(server)
        return client


class _Pipe:
    """One direction of a stream: chunks waiting to be read, in order."""

    __slots__ = (
        "buffered",
        "chunks",
        "last_at",
        "receiver_closed",
        "signal",
        "source",
        "space",
        "target",
    )

    def __init__(self, source: str, target: str) -> None:
        self.source = source
        self.target = target
        #: ``(arrival time, bytes)``; ``b""`` is the end of the stream.
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.last_at = -math.inf
        self.receiver_closed = False
        #: Wakes the reader (bytes due, the end, a reset).
        self.signal = _Signal()
        #: Wakes senders waiting for room.
        self.space = _Signal()


class _FakeStream(anyio.abc.ByteStream):
    def __init__(
        self,
        network: FakeNetwork,
        local_node: str,
        remote_node: str,
        inbound: _Pipe,
        outbound: _Pipe,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        self.network = network
        self.local_node = local_node
        self.remote_node = remote_node
        self._in = inbound
        self._out = outbound
        self._local = local
        self._remote = remote
        self.peer: _FakeStream | None = None
        self.broken = False
        self._closed = False
        self._eof_sent = False
        network._streams[self] = None

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            anyio.abc.SocketAttribute.local_address: lambda: self._local,
            anyio.abc.SocketAttribute.remote_address: lambda: self._remote,
        }

    def break_pair(self) -> None:
        for stream in (self, self.peer):
            if stream is not None:
                stream.broken = True
                stream._in.chunks.clear()
                stream._in.buffered = 0
                for pipe in (stream._in, stream._out):
                    pipe.signal.fire()
                    pipe.space.fire()

    async def _wait(self, signal: _Signal, timeout: float) -> None:
        waiters = self.network._waiters
        waiters[signal] = None
        try:
            await signal.wait(timeout)
        finally:
            waiters.pop(signal, None)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint_if_cancelled()
        pipe = self._in
        net = self.network
        waited = False
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self.broken:
                raise anyio.BrokenResourceError
            wait = math.inf
            if pipe.chunks and net.deliverable(pipe.source, pipe.target):
                at, data = pipe.chunks[0]
                wait = at - anyio.current_time()
                if wait <= 0:
                    if not data:
                        raise anyio.EndOfStream
                    if len(data) > max_bytes:
                        pipe.chunks[0] = (at, data[max_bytes:])
                        data = data[:max_bytes]
                    else:
                        pipe.chunks.popleft()
                    pipe.buffered -= len(data)
                    pipe.space.fire()
                    if not waited:
                        # Yield like a socket read, without losing the bytes.
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                    return data
            waited = True
            await self._wait(pipe.signal, wait)

    def _enqueue(self, data: bytes) -> None:
        pipe = self._out
        net = self.network
        conditions = net._conditions(pipe.source, pipe.target)
        at = max(anyio.current_time() + conditions.delay(net._rng, len(data)), pipe.last_at)
        if conditions.bandwidth:
            # The link carries one chunk at a time.
            at = max(at, pipe.last_at + len(data) / conditions.bandwidth)
        pipe.last_at = at
        pipe.chunks.append((at, data))
        pipe.buffered += len(data)
        pipe.signal.wake_at(at)

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        pipe = self._out
        while True:
            if self._closed or self._eof_sent:
                raise anyio.ClosedResourceError
            if self.broken or pipe.receiver_closed:
                raise anyio.BrokenResourceError
            if pipe.buffered < self.network.stream_buffer:
                break
            await self._wait(pipe.space, math.inf)
        if item:
            self._enqueue(bytes(item))

    def send_nowait(self, data: bytes) -> bool:
        """Send ``data`` without waiting, as a socket's non-blocking send
        would, if the stream can take it all now; ``False`` (nothing sent):
        it is full, closed or broken, and :meth:`send` waits or raises."""
        pipe = self._out
        if (
            self._closed
            or self._eof_sent
            or self.broken
            or pipe.receiver_closed
            or pipe.buffered >= self.network.stream_buffer
        ):
            return False
        if data:
            self._enqueue(data)
        return True

    async def send_eof(self) -> None:
        await anyio.lowlevel.checkpoint()
        if not self._eof_sent and not self._closed and not self.broken:
            self._eof_sent = True
            self._enqueue(b"")

    async def aclose(self) -> None:
        if self._closed:
            return
        if not self._eof_sent and not self.broken:
            self._eof_sent = True
            self._enqueue(b"")  # the FIN follows the bytes already sent
        self._closed = True
        self._in.receiver_closed = True
        self._in.chunks.clear()
        self._in.buffered = 0
        self._in.signal.fire()
        self._in.space.fire()
        self.network._streams.pop(self, None)
        await anyio.lowlevel.checkpoint()


class _FakeListener(anyio.abc.Listener[anyio.abc.ByteStream]):
    def __init__(self, host: _FakeHost, key: tuple[str, int], address: tuple[str, int]) -> None:
        self.host = host
        self.key = key
        self.address = address
        self._queue: deque[_FakeStream] = deque()
        self._signal = _Signal()
        self._closed = False

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {anyio.abc.SocketAttribute.local_address: lambda: self.address}

    def offer(self, stream: _FakeStream) -> None:
        self._queue.append(stream)
        self._signal.fire()

    async def accept(self) -> anyio.abc.ByteStream:
        await anyio.lowlevel.checkpoint()
        net = self.host.network
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._queue and self.host.name not in net._paused:
                return self._queue.popleft()
            net._waiters[self._signal] = None
            try:
                await self._signal.wait(math.inf)
            finally:
                net._waiters.pop(self._signal, None)

    async def serve(
        self,
        handler: Callable[[anyio.abc.ByteStream], Any],
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        async with AsyncExitStack() as stack:
            if task_group is None:
                task_group = await stack.enter_async_context(anyio.create_task_group())
            while True:
                stream = await self.accept()
                task_group.start_soon(handler, stream)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        net = self.host.network
        if net._listeners.get(self.key) is self:
            del net._listeners[self.key]
            net._owners.pop(self.key, None)
        while self._queue:
            self._queue.popleft().break_pair()  # never accepted: reset
        self._signal.fire()
        await anyio.lowlevel.checkpoint()


class _FakeEndpoint:
    """A bound datagram endpoint (the shape of ``anyio.abc.UDPSocket``)."""

    def __init__(self, host: _FakeHost, key: tuple[str, int], address: tuple[str, int]) -> None:
        self.host = host
        self.key = key
        self.address = address
        self._queue: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._sequence = 0
        self._signal = _Signal()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def sendto(self, data: bytes, host: str, port: int) -> None:
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise anyio.ClosedResourceError
        net = self.host.network
        target = net._lookup(net._endpoints, host, port)
        if target is None:
            net.count_drop("datagram_no_receiver")
            return
        source, destination = self.host.name, target.host.name
        if source in net._paused:
            net.count_drop("datagram_paused")
            return
        conditions = net._conditions(source, destination)
        if conditions.cut:
            net.count_drop("datagram_cut")
            return
        if conditions.loss and net._rng.random() < conditions.loss:
            net.count_drop("datagram_loss")
            return
        copies = 2 if conditions.duplicate and net._rng.random() < conditions.duplicate else 1
        for _ in range(copies):
            target.deliver(
                anyio.current_time() + conditions.delay(net._rng, len(data)),
                bytes(data),
                self.address,
            )

    def deliver(self, at: float, data: bytes, source: tuple[str, int]) -> None:
        net = self.host.network
        if self._closed:
            net.count_drop("datagram_no_receiver")
            return
        if len(self._queue) >= net.datagram_buffer:
            net.count_drop("datagram_buffer_full")
            return
        self._sequence += 1
        heapq.heappush(self._queue, (at, self._sequence, data, source))
        self._signal.wake_at(at)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        await anyio.lowlevel.checkpoint_if_cancelled()
        net = self.host.network
        waited = False
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            wait = math.inf
            if self._queue and self.host.name not in net._paused:
                at, _, data, source = self._queue[0]
                wait = at - anyio.current_time()
                if wait <= 0:
                    heapq.heappop(self._queue)
                    if not waited:
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                    return data, source
            waited = True
            net._waiters[self._signal] = None
            try:
                await self._signal.wait(wait)
            finally:
                net._waiters.pop(self._signal, None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        net = self.host.network
        if net._endpoints.get(self.key) is self:
            del net._endpoints[self.key]
        self._queue.clear()
        self._signal.fire()
        await anyio.lowlevel.checkpoint()


def seed_scheduler(seed: int | str) -> None:
    """Make trio's scheduler repeat its choices for ``seed``.

    trio runs the tasks that became ready together in an order it draws at
    random (to shake out races), starting from the order they became ready
    in -- which, for timers that expire at the same instant, follows memory
    addresses. For a run to repeat exactly, this switches trio to the
    deterministic mode its Hypothesis integration uses (ready tasks sorted
    by creation, then shuffled by a seeded generator) and seeds that
    generator. It stays on for the rest of the process (as it does whenever
    Hypothesis is imported); on other backends this does nothing.
    """
    try:
        from trio._core import _run
    except ImportError:  # pragma: no cover - trio is a dependency
        return
    rng = getattr(_run, "_r", None)
    if isinstance(rng, random.Random) and hasattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
        rng.seed(f"trio_distribute.scheduler/{seed}")


def virtual_time(
    autojump_threshold: float = 0.0, *, backend: str = "trio"
) -> tuple[str, dict[str, Any]]:
    """The ``anyio_backend`` value for tests in virtual time.

    On ``"trio"`` (the default): trio with a ``MockClock`` that jumps to the
    next timer as soon as every task waits (after ``autojump_threshold``
    seconds of real time). On ``"asyncio"``: an asyncio event loop whose
    clock does the same (:class:`~trio_distribute.testing.VirtualTimeEventLoop`; it always jumps at
    once). In a test module or ``conftest.py``::

        @pytest.fixture
        def anyio_backend():
            return trio_distribute.testing.virtual_time()

    Raises:
        ValueError: ``backend`` is neither ``"trio"`` nor ``"asyncio"``.
    """
    if backend == "asyncio":
        return "asyncio", {"loop_factory": VirtualTimeEventLoop}
    if backend != "trio":
        raise ValueError(f"virtual time runs on 'trio' or 'asyncio', got {backend!r}")
    import trio.testing

    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=autojump_threshold)}


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on a virtual clock (asyncio's ``MockClock``).

    ``loop.time()`` starts at 0 and stands still while callbacks run; when
    none is ready, the clock jumps straight to the earliest timer instead of
    waiting for it. As with trio's ``MockClock(autojump_threshold=0)``, only
    in-process work may be waited on: a thread or a real socket whose
    answer arrives later in real time finds the timers that should have
    waited for it already fired. Use it with :class:`FakeNetwork`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        # Internals shared by every CPython asyncio loop since 3.4: the
        # ready queue and the heap of timers. Only a jump forward, and only
        # when nothing can run now, so the order of events is the real one.
        ready: Any = getattr(self, "_ready")  # noqa: B009 - private, read only
        scheduled: Any = getattr(self, "_scheduled")  # noqa: B009
        if not ready and scheduled and not self._stopping:  # type: ignore[attr-defined]
            when = scheduled[0].when()
            if when > self._virtual_now:
                self._virtual_now = when
        super()._run_once()  # type: ignore[misc]
