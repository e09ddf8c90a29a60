"""A member holding the cookie attacks the registry and the process groups.

Each test drives a misbehaving peer through the real wire format
(tests/hostile_peer.py) and checks that the bound holds while a legitimate
peer keeps being served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest
import trio.testing
from hostile_peer import HostilePeer
from virtual import anyio_backend, fake_network, hostile_member, open_cluster

import trio_distribute as td
from trio_distribute._proto.frames import TICK
from trio_distribute._proto.kinds import Kind
from trio_distribute.config import NodeConfig, RegistryConfig
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

MALLORY = "mallory@127.0.0.1"
CREATION = 7  # the creation hostile_peer announces for mallory


def own(i: int) -> td.Pid:
    """A pid of mallory's own current run."""
    return td.Pid(MALLORY, i, CREATION)


async def wait_forever(proc: td.Process) -> None:
    await anyio.sleep_forever()


class Mallory:
    """A hostile peer that keeps its connection alive with ticks (so only
    what it sends, not its silence, decides what happens to it)."""

    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer
        self._lock = anyio.Lock()

    async def send(self, item: list[Any]) -> None:
        async with self._lock:
            await self.peer.send(item)

    async def send_raw(self, data: bytes) -> None:
        async with self._lock:
            await self.peer.send_raw(data)

    async def tick(self) -> None:
        while True:
            await anyio.sleep(0.25)
            try:
                await self.send_raw(TICK)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return

    async def reply_to(
        self, kind: Kind | None, answer: Callable[[list[Any]], list[Any] | None]
    ) -> None:
        """Read frames; answer each of ``kind`` (None: any) with ``answer(frame)``
        (nothing if it returns None)."""
        # Not HostilePeer.receive: it returns the first frame of a read and
        # loses the others that came with it.
        from trio_distribute import codec

        peer = self.peer
        data, peer._pending = peer._pending, b""
        try:
            while True:
                for payload in peer._decoder.feed(data):
                    item = codec.decode(payload) if payload else None
                    if isinstance(item, list) and item and kind in (None, item[0]):
                        response = answer(item)
                        if response is not None:
                            await self.send(response)
                data = await peer.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return


@asynccontextmanager
async def mallory(node: td.Node) -> AsyncIterator[tuple[Mallory, anyio.abc.TaskGroup]]:
    async with hostile_member(node, name=MALLORY, creation=CREATION) as peer:
        m = Mallory(peer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(m.tick)
            yield m, tg
            tg.cancel_scope.cancel()


async def still_served(a: td.Node, b: td.Node, name: str) -> None:
    """A legitimate peer keeps being served: a registers, b sees it."""
    pid = await a.spawn(wait_forever)
    await a.registry.register(name, pid)
    # (At once unless b was too slow to acknowledge on a loaded machine.)
    await wait_until(lambda: b.registry.whereis(name) == pid)
    await a.groups.join("still-served", pid)
    await wait_until(lambda: pid in b.groups.members("still-served"))
    assert b.name in a.nodes() and a.name in b.nodes()


# ------------------------------------------------------------------ ownership


async def test_a_sync_naming_another_nodes_pid_is_refused_and_closes_the_connection() -> None:
    with anyio.fail_after(30):
        async with open_cluster(2) as (a, b), a.open_process() as pa:
            # A name for a process of a (the issue's `{"billing": <pid on a>}`),
            # and a name for one of b's own processes.
            pb = await b.spawn(wait_forever)
            for forged in ({"billing": pa.pid}, {"mine": pb}, {"old": td.Pid(MALLORY, 1, 99)}):
                async with mallory(b) as (m, _):
                    await m.send([int(Kind.REG_SYNC), forged])
                    await wait_until(lambda: MALLORY not in b.nodes())
                assert b.registry.names() == []
            assert b.statistics().drops["registry_foreign_pid"] == 3
            # The real owner registers the name as usual.
            await a.registry.register("billing", pa.pid)
            assert b.registry.whereis("billing") == pa.pid
            await still_served(a, b, "after-forgery")


async def test_names_and_groups_from_a_peer_vanish_with_it() -> None:
    with anyio.fail_after(30):
        async with open_cluster(2) as (a, b):
            async with mallory(b) as (m, _):
                # Its own names are fine while it is up...
                await m.send([int(Kind.REG_SYNC), {f"n{i}": own(i) for i in range(20_000)}])
                await m.send([int(Kind.GROUP_SYNC), {"g": [own(i) for i in range(5_000)]}])
                await wait_until(lambda: len(b.registry.names()) == 20_000)
                await wait_until(lambda: len(b.groups.members("g")) == 5_000)
                # ...but phantom names for a node that never connects are not.
                await m.send([int(Kind.REG_SYNC), {"ghost": td.Pid("ghost@127.0.0.1", 1, 1)}])
                await wait_until(lambda: MALLORY not in b.nodes())
            assert b.registry.names() == []
            assert b.groups.members("g") == []
            await still_served(a, b, "after-phantoms")


async def test_group_frames_about_foreign_or_stale_pids_are_refused() -> None:
    with anyio.fail_after(30):
        async with open_cluster(2) as (a, b):
            pa = await a.spawn(wait_forever)
            frames: list[list[Any]] = [
                [int(Kind.GROUP_SYNC), {"g": [own(1), pa]}],
                [int(Kind.GROUP_SYNC), {"g": [td.Pid(MALLORY, 1, CREATION + 1)]}],
                [int(Kind.GROUP_JOIN), "g", [own(1), pa]],
                [int(Kind.GROUP_LEAVE), "g", [pa]],
            ]
            for item in frames:
                async with mallory(b) as (m, _):
                    await m.send(item)
                    await wait_until(lambda: MALLORY not in b.nodes())
                assert b.groups.members("g") == []
            assert b.statistics().drops["group_foreign_pid"] == len(frames)
            await still_served(a, b, "after-group-forgery")


# ---------------------------------------------------------- chunked node-up


async def test_a_table_bigger_than_the_frame_limit_reaches_a_new_node() -> None:
    config = NodeConfig.local(max_message_size=16 * 1024)
    with anyio.fail_after(60):
        async with open_cluster(["a", "z"], config=config, connect=False) as (a, z):
            pids = [await a.spawn(wait_forever) for _ in range(1500)]
            for i, pid in enumerate(pids):
                await a.registry.register(f"service-{i:05d}-" + "x" * 40, pid)
                await a.groups.join("workers", pid)
                await a.groups.join("workers", pid)
            await z.connect(f"{a.name}:{a.address[1]}")
            await wait_until(lambda: len(z.registry.names()) == 1500)
            await wait_until(lambda: len(z.groups.members("workers")) == 3000)
            assert sorted(z.groups.members("workers")) == sorted(pids * 2)
            assert z.registry.names() == a.registry.names()
            assert "protocol_error" not in z.statistics().drops
            assert z.nodes() == [a.name]
            # The other way round too, and changes made meanwhile keep order.
            await a.groups.leave("workers", pids[0])
            await wait_until(lambda: len(z.groups.members("workers")) == 2999)


# -------------------------------------------------------------------- locks


async def test_an_abandoned_lock_is_released_after_its_lease() -> None:
    lease = NodeConfig.local().registry.lock_lease
    with anyio.fail_after(60):
        async with open_cluster(2) as (a, b), a.open_process() as pa:
            async with mallory(b) as (m, tg):
                tg.start_soon(m.reply_to, Kind.REG_REPLY, lambda item: None)
                await m.send([int(Kind.REG_LOCK), 1, "x"])  # granted, never released
                locked_at = anyio.current_time()
                # Mallory asks again and again: a repeated request neither
                # renews the lease nor takes the lock back once it lapsed.

                async def relock() -> None:
                    for request in range(2, 10_000):
                        await m.send([int(Kind.REG_LOCK), request, "x"])
                        await anyio.sleep(0.05)

                tg.start_soon(relock)
                await a.registry.register("x", pa.pid)
                waited = anyio.current_time() - locked_at
                # It was the lease that let it through (not an earlier release).
                assert waited >= lease * 0.9
                assert b.registry.whereis("x") == pa.pid
                assert b.statistics().drops["registry_lock_expired"] >= 1
                assert MALLORY in b.nodes()
            await still_served(a, b, "after-lock")


VIRTUAL = trio.testing.MockClock()


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": VIRTUAL})])
async def test_the_lease_is_exactly_the_configured_one_in_virtual_time() -> None:
    # Virtual time that moves only when the test says: the node's own
    # timers never fire, and the lease is checked to the hundredth.
    config = NodeConfig.local(
        registry=RegistryConfig(lock_timeout=3.0, lock_lease=7.0, max_locks_per_node=2)
    )
    async with td.open_node("b@127.0.0.1", cookie="trio-distribute-test", config=config) as b:
        registry = b.registry
        # A stand-in for a peer's REG_LOCK that is never released.
        assert registry._grant("x", "c@127.0.0.1") == "granted"
        VIRTUAL.jump(6.99)
        assert registry._grant("x", "d@127.0.0.1") == "busy"
        assert registry._grant("x", "c@127.0.0.1") == "granted"  # re-entrant, not renewed
        VIRTUAL.jump(0.02)
        assert registry._grant("x", "d@127.0.0.1") == "granted"
        assert b.statistics().drops["registry_lock_expired"] == 1
        registry._release("d@127.0.0.1", "x")  # not connected: nothing to send
        registry._drop_lock("x")
        # The lapsed holder may not take it straight back for one lease.
        assert registry._grant("x", "c@127.0.0.1") == "busy"
        VIRTUAL.jump(7.01)
        assert registry._grant("x", "c@127.0.0.1") == "granted"
        # At most max_locks_per_node locks per peer at once.
        assert registry._grant("y", "c@127.0.0.1") == "granted"
        assert registry._grant("z", "c@127.0.0.1") == "busy"
        assert b.statistics().drops["registry_lock_limit"] == 1
        registry._drop_lock("y")
        assert registry._grant("z", "c@127.0.0.1") == "granted"


async def test_a_peer_that_never_answers_a_lock_request_cannot_block_register() -> None:
    timeout = NodeConfig.local().registry.lock_timeout
    with anyio.fail_after(60):
        async with open_cluster(2) as (a, b), a.open_process() as pa:
            async with mallory(a) as _:  # connected to the registering node; reads nothing
                started = anyio.current_time()
                await a.registry.register("x", pa.pid)
                assert anyio.current_time() - started >= timeout * 0.9
                assert MALLORY not in a.nodes()
            assert a.statistics().drops["registry_unanswered"] == 1
            assert b.registry.whereis("x") == pa.pid
            await still_served(a, b, "after-silence")


async def test_an_unacknowledged_commit_is_bounded_even_when_cancelled() -> None:
    timeout = NodeConfig.local().registry.commit_timeout
    with anyio.fail_after(60):
        async with open_cluster(2) as (a, b), a.open_process() as pa:
            async with mallory(a) as (m, tg):
                scope = anyio.CancelScope()
                committing = anyio.Event()
                committed_at: list[float] = []

                def answer(item: list[Any]) -> list[Any] | None:
                    if item[0] == Kind.REG_LOCK:
                        return [int(Kind.REG_REPLY), item[1], "granted"]
                    if item[0] == Kind.REG_COMMIT:
                        committed_at.append(anyio.current_time())
                        committing.set()
                        scope.cancel()  # the caller gives up mid-commit
                    return None  # and nothing is ever acknowledged

                tg.start_soon(m.reply_to, None, answer)
                with scope:
                    await a.registry.register("x", pa.pid)
                assert committing.is_set()
                # The commit went on (shielded), waiting for mallory's
                # acknowledgement until commit_timeout, no longer.
                waited = anyio.current_time() - committed_at[0]
                assert waited >= timeout * 0.9
                assert a.statistics().drops["registry_unacknowledged"] == 1
                assert a.registry.whereis("x") == pa.pid
            assert b.registry.whereis("x") == pa.pid
            await still_served(a, b, "after-unacknowledged")


# --------------------------------------------------------------- loop stalls


class StepProbe:
    """Counts the work of applying peers' frames, one entry at a time (each
    pid checked, each name applied), and a task that runs at every pass of
    the scheduler records the most entries done between two of its runs:
    the longest step anything else had to wait for, in entries, not in
    seconds (on a loaded machine seconds say nothing).

    Between two runs of the probe every other task runs at most twice (once
    per scheduler pass; trio may reverse a pass's order), and the two that
    apply a frame (the connection's reader, which applies a frame's first
    slice, and the node's applier) each do at most one slice per run: so
    four slices is the most a sliced apply can show, and a frame applied in
    one step shows all of it."""

    def __init__(self, partial: Callable[[], bool]) -> None:
        self.partial = partial
        self.entries = 0
        self.longest_step = 0
        self.ran_while_partial = 0
        #: ``Pid.__eq__`` calls while the frames were applied: linear work
        #: compares each pid a bounded number of times, quadratic work
        #: (a list scanned per pid) about ``n * n / 2`` times.
        self.comparisons = 0

    async def run(self) -> None:
        while True:
            before = self.entries
            await anyio.lowlevel.checkpoint()
            self.longest_step = max(self.longest_step, self.entries - before)
            if self.partial():
                self.ran_while_partial += 1

    def counting(self, method: Callable[..., _T]) -> Callable[..., _T]:
        def counted(*args: Any) -> _T:
            self.entries += 1
            return method(*args)

        return counted


_T = TypeVar("_T")


async def probe_frames(
    m: Mallory,
    frames: list[list[Any]],
    partial: Callable[[], bool],
    done: Callable[[], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> StepProbe:
    from trio_distribute import codec
    from trio_distribute._proto.frames import frame
    from trio_distribute.groups import Groups
    from trio_distribute.registry import Registry

    data = b"".join(frame(codec.encode(item)) for item in frames)
    probe = StepProbe(partial)
    with monkeypatch.context() as patch:
        # The units of work: every pid a frame carries is checked, every
        # name of a registry sync applied, one by one.
        patch.setattr(Groups, "_check_own", probe.counting(Groups._check_own))
        patch.setattr(Registry, "_check_own", probe.counting(Registry._check_own))
        patch.setattr(Registry, "_apply", probe.counting(Registry._apply))
        equal = td.Pid.__eq__

        def compared(pid: td.Pid, other: object) -> bool:
            probe.comparisons += 1
            return equal(pid, other)

        patch.setattr(td.Pid, "__eq__", compared)
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe.run)
            await m.send_raw(data)
            await wait_until(done)
            tg.cancel_scope.cancel()
    print(
        f"longest step {probe.longest_step} entries of {probe.entries},"
        f" probe ran {probe.ran_while_partial} times mid-frame,"
        f" {probe.comparisons} pid comparisons"
    )
    return probe


def assert_sliced(probe: StepProbe, apply_slice: int) -> None:
    # Other tasks ran while the frames were half applied...
    assert probe.ran_while_partial >= 2
    # ...and none waited longer than a few slices of work.
    assert 0 < probe.longest_step <= 4 * apply_slice < probe.entries
    # Linear: each entry is compared a bounded number of times.
    assert probe.comparisons <= 4 * probe.entries


# Real time: the probe yields at every scheduler pass, so a virtual clock
# would never find the loop idle and never move.
@pytest.mark.real_network
async def test_big_group_frames_are_linear_and_applied_in_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = NodeConfig.local().groups.apply_slice
    with anyio.fail_after(60):
        async with open_cluster(2) as (a, b), mallory(b) as (m, _):
            pids = [own(i) for i in range(20_000)]
            # The second sync lists the same pids in the other order (the
            # old code's quadratic case), then a join marks the end.
            probe = await probe_frames(
                m,
                [
                    [int(Kind.GROUP_SYNC), {"g": pids}],
                    [int(Kind.GROUP_SYNC), {"g": pids[::-1]}],
                    [int(Kind.GROUP_JOIN), "end", [own(1)]],
                ],
                lambda: sum(b.groups._work._backlog.values()) > 0,
                lambda: bool(b.groups.members("end")),
                monkeypatch,
            )
            assert b.groups.members("end") == [own(1)]
            assert len(b.groups.members("g")) == 20_000
            assert_sliced(probe, step)
            probe = await probe_frames(
                m,
                [[int(Kind.GROUP_LEAVE), "g", pids[::-1]]],
                lambda: 0 < len(b.groups.members("g")) < 20_000,
                lambda: not b.groups.members("g"),
                monkeypatch,
            )
            assert b.groups.members("g") == []
            assert_sliced(probe, step)
            await still_served(a, b, "after-group-stall")


# Real time: the probe yields at every scheduler pass, so a virtual clock
# would never find the loop idle and never move.
@pytest.mark.real_network
async def test_a_big_registry_sync_is_applied_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    step = NodeConfig.local().registry.apply_slice
    with anyio.fail_after(60):
        async with open_cluster(2) as (a, b), mallory(b) as (m, _):
            n = 50_000
            probe = await probe_frames(
                m,
                [[int(Kind.REG_SYNC), {f"n{i}": own(i) for i in range(n)}]],
                lambda: 0 < len(b.registry._names) < n,
                lambda: len(b.registry._names) == n,
                monkeypatch,
            )
            assert len(b.registry._names) == n
            assert_sliced(probe, step)
            await still_served(a, b, "after-registry-stall")


async def test_a_peer_queueing_more_than_the_backlog_is_disconnected() -> None:
    from trio_distribute import codec
    from trio_distribute._proto.frames import frame
    from trio_distribute.config import GroupsConfig

    config = NodeConfig.local(groups=GroupsConfig(apply_slice=10, max_backlog=500))
    with anyio.fail_after(30):
        async with open_cluster(2, config=config) as (a, b), mallory(b) as (m, _):
            big = [int(Kind.GROUP_JOIN), "g", [own(i) for i in range(1000)]]
            more = [int(Kind.GROUP_JOIN), "g", [own(i) for i in range(1000, 1600)]]
            # Both in one write: the second arrives while the first is applied.
            await m.send_raw(frame(codec.encode(big)) + frame(codec.encode(more)))
            await wait_until(lambda: MALLORY not in b.nodes())
            assert b.statistics().drops["group_backlog"] == 1
            assert b.groups.members("g") == []
            await still_served(a, b, "after-backlog")


def test_registry_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="lock_lease"):
        RegistryConfig(lock_timeout=5.0, lock_lease=5.0)
    with pytest.raises(ValueError, match="contention_timeout"):
        RegistryConfig(lock_timeout=1.0, lock_lease=2.0, contention_timeout=2.5)
    defaults = RegistryConfig()
    assert (defaults.lock_timeout, defaults.lock_lease, defaults.commit_timeout) == (5.0, 10.0, 5.0)
    assert defaults.contention_timeout == 30.0


async def test_changes_made_while_the_table_is_sent_follow_it() -> None:
    from trio_distribute.config import GroupsConfig

    # One entry per frame: the table takes hundreds of loop turns to send.
    config = NodeConfig.local(
        registry=RegistryConfig(lock_timeout=2.0, lock_lease=4.0, sync_chunk=1),
        groups=GroupsConfig(sync_chunk=1),
    )
    with anyio.fail_after(60):
        async with open_cluster(["a", "z"], config=config, connect=False) as (a, z):
            stop = anyio.Event()

            async def member(proc: td.Process) -> None:
                await stop.wait()

            pids = [await a.spawn(member) for _ in range(300)]
            for i, pid in enumerate(pids):
                await a.registry.register(f"n{i}", pid)
                await a.groups.join("g", pid)
            await a.connect(f"{z.name}:{z.address[1]}")
            stop.set()  # every process exits while a's table is on its way
            await wait_until(lambda: not a.registry.names() and not a.groups.members("g"))
            await anyio.sleep(0.5)
            # The leaves and unregisters reached z after the table, not before it.
            assert z.registry.names() == []
            assert z.groups.members("g") == []
