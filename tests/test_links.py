"""Links and exit signals, local and across nodes, with Erlang semantics."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hostile_peer import hostile_peer
from process_helpers import COOKIE, FAST, cluster, drops_at
from virtual import anyio_backend, fake_network, start_node

import trio_distribute as td
from trio_distribute._node_events import ProcessExited
from trio_distribute._proto.kinds import Kind
from trio_distribute.monitor import ExitKind
from trio_distribute.testing import crash, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures


async def wait_forever(proc: td.Process) -> None:
    await anyio.sleep_forever()


async def exit_on_message(proc: td.Process) -> None:
    message = await proc.receive()
    if message == "raise":
        raise ValueError("asked to fail")


def trapper(node: td.Node, report: td.Pid) -> Any:
    """A process body that traps exits and forwards every message to ``report``."""

    async def body(proc: td.Process) -> None:
        proc.trap_exits = True
        await node.send(report, ["ready", proc.pid])
        async for message in proc:
            await node.send(report, message)

    return body


async def down_of(node: td.Node, pid: td.Pid) -> td.ExitReason:
    """Wait for ``pid`` to end; its exit reason."""
    async with node.monitor(pid) as down:
        event = await down.receive()
    return event.reason


def link_tables_empty(*nodes: td.Node) -> bool:
    return all(
        node.statistics().links == 0 and not any(node._links.sizes().values()) for node in nodes
    )


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_an_abnormal_exit_ends_the_linked_process_naming_the_origin(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            crasher = await host.spawn(exit_on_message)
            linked: list[td.Pid] = []

            async def linker(proc: td.Process) -> None:
                await proc.link(crasher)
                linked.append(proc.pid)
                await anyio.sleep_forever()

            victim = await a.spawn(linker)
            await wait_until(lambda: bool(linked))
            async with a.monitor(victim) as down:
                await a.send(crasher, "raise")
                reason = (await down.receive()).reason
            assert reason.kind == ExitKind.EXIT
            assert str(crasher) in reason.detail
            assert "ValueError: asked to fail" in reason.detail
            await wait_until(lambda: link_tables_empty(a, b))


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_links_are_bidirectional(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            target = await host.spawn(wait_forever)
            # The linker links to the target, then crashes: the target, which
            # did not link, ends too.
            async with host.monitor(target) as down:

                async def link_then_crash(proc: td.Process) -> None:
                    await proc.link(target)
                    raise RuntimeError("linker crashed")

                linker = await a.spawn(link_then_crash)
                reason = (await down.receive()).reason
            assert reason.kind == ExitKind.EXIT
            assert reason.detail.startswith(f"exit signal from {linker}: ")
            assert "RuntimeError: linker crashed" in reason.detail
            await wait_until(lambda: link_tables_empty(a, b))


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_trapping_process_gets_exit_signals_as_messages(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            async with a.open_process() as me:
                me.trap_exits = True
                normal = await host.spawn(exit_on_message)
                crasher = await host.spawn(exit_on_message)
                await me.link(normal)
                await me.link(crasher)
                await a.send(normal, "stop")
                first = await me.receive()
                # Erlang: a trapping process sees normal exits too.
                assert first == td.ExitSignal(normal, td.ExitReason(ExitKind.NORMAL))
                await a.send(crasher, "raise")
                second = await me.receive()
                assert second == td.ExitSignal(
                    crasher, td.ExitReason(ExitKind.EXCEPTION, "ValueError: asked to fail")
                )
                assert me.alive
            await wait_until(lambda: link_tables_empty(a, b))


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_normal_exit_does_not_end_a_non_trapping_linked_process(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            async with a.open_process() as me:
                target = await host.spawn(exit_on_message)
                await me.link(target)
                await a.send(target, "stop")
                await wait_until(lambda: link_tables_empty(a, b))
                await anyio.sleep(0.05)
                assert me.alive
                assert me.pending() == 0


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_unlink_stops_the_signal_on_both_nodes(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            crasher = await host.spawn(exit_on_message)
            async with a.open_process() as me:
                await me.link(crasher)
                await wait_until(lambda: host._links.linked(crasher) == {me.pid})
                await me.unlink(crasher)
                await wait_until(lambda: link_tables_empty(a, b))
                await a.send(crasher, "raise")
                assert (await down_of(a, crasher)).kind in (ExitKind.EXCEPTION, ExitKind.NOPROC)
                with pytest.raises(TimeoutError):
                    await me.receive(timeout=0.1)
                assert me.alive


async def test_spawn_link_links_the_child_before_it_runs() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,):

            async def crash_at_once(proc: td.Process) -> None:
                raise ValueError("child failed before any await")

            async with a.open_process() as me:
                me.trap_exits = True
                child = await a.spawn(crash_at_once, link=True)
                signal = await me.receive()
                assert signal.pid == child
                assert signal.reason.kind == ExitKind.EXCEPTION

            # The parent ending abnormally takes its linked child along.
            children: list[td.Pid] = []

            async def parent(proc: td.Process) -> None:
                children.append(await a.spawn(wait_forever, link=True))
                raise RuntimeError("parent failed")

            await a.spawn(parent)
            await wait_until(lambda: bool(children))
            await wait_until(lambda: a._processes.lookup(children[0]) is None)
            assert link_tables_empty(a)


async def test_spawn_link_outside_a_process_is_an_error() -> None:
    async with cluster("a") as (a,):
        before = a.statistics().processes
        with pytest.raises(RuntimeError, match="within a process"):
            await a.spawn(wait_forever, link=True)
        assert a.statistics().processes == before  # nothing half-started


async def test_a_killed_open_process_block_raises_and_reports_exit() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            crasher = await b.spawn(exit_on_message)
            seen: list[td.Process] = []

            async def body() -> None:
                async with a.open_process() as me:
                    seen.append(me)
                    await me.link(crasher)
                    await a.send(crasher, "raise")
                    await anyio.sleep_forever()
                seen.append(me)  # never reached

            with pytest.raises(td.ProcessExitError) as info:
                await body()
            assert len(seen) == 1
            me = seen[0]
            assert info.value.pid == me.pid
            assert info.value.reason.kind == ExitKind.EXIT
            assert str(crasher) in info.value.reason.detail
            assert not me.alive


async def test_exit_signals_along_a_chain_name_the_first_reason_once() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            first = await a.spawn(exit_on_message)
            ready: list[td.Pid] = []

            def linked_to(pid: td.Pid) -> Any:
                async def body(proc: td.Process) -> None:
                    await proc.link(pid)
                    ready.append(proc.pid)
                    await anyio.sleep_forever()

                return body

            second = await b.spawn(linked_to(first))
            await wait_until(lambda: len(ready) == 1)
            third = await a.spawn(linked_to(second))
            await wait_until(lambda: len(ready) == 2)
            async with a.monitor(third) as down:
                await a.send(first, "raise")
                reason = (await down.receive()).reason
            assert reason.kind == ExitKind.EXIT
            assert reason.detail == (
                f"exit signal from {second}: exception (ValueError: asked to fail)"
            )
            await wait_until(lambda: link_tables_empty(a, b))


# ---------------------------------------------------------------- Node.exit


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_node_exit_kill_cannot_be_trapped(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            trapped = anyio.Event()

            async def trapping(proc: td.Process) -> None:
                proc.trap_exits = True
                trapped.set()
                await anyio.sleep_forever()

            target = await host.spawn(trapping)
            await trapped.wait()
            async with a.monitor(target) as down:
                await a.exit(target, "kill")
                reason = (await down.receive()).reason
            assert reason.kind == ExitKind.KILLED
            assert str(td.Pid(a.name, 0, a.creation)) in reason.detail  # from the node


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_node_exit_reasons(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            plain = await host.spawn(wait_forever)
            async with b.open_process() as report, a.open_process() as sender:
                trapping = await host.spawn(trapper(host, report.pid))
                assert await report.receive() == ["ready", trapping]
                # normal: ignored by a process that does not trap, delivered
                # to one that does.
                await a.exit(plain, "normal")
                await a.exit(trapping, "normal")
                normal = td.ExitSignal(sender.pid, td.ExitReason(ExitKind.NORMAL))
                assert await report.receive() == normal
                await a.exit(trapping, "shutdown")
                assert await report.receive() == td.ExitSignal(
                    sender.pid, td.ExitReason(ExitKind.SHUTDOWN)
                )
                await a.exit(trapping, "because")
                assert await report.receive() == td.ExitSignal(
                    sender.pid, td.ExitReason(ExitKind.EXIT, "because")
                )
                assert host._processes.lookup(plain) is not None
                async with a.monitor(plain) as down:
                    await a.exit(plain, "because")
                    reason = (await down.receive()).reason
                assert reason == td.ExitReason(
                    ExitKind.EXIT, f"exit signal from {sender.pid}: exit (because)"
                )
                await a.exit(trapping, "kill")


async def test_node_exit_of_a_dead_pid_does_nothing() -> None:
    async with cluster("a", "b") as (a, b):
        async with b.open_process() as gone:
            pass
        await a.exit(gone.pid, "kill")
        await b.exit(gone.pid, "kill")


async def test_bad_input_is_refused_with_nothing_done() -> None:
    async with cluster("a") as (a,):
        target = await a.spawn(wait_forever)
        async with a.open_process() as me:
            for bad in ("a@127.0.0.1", None, 3, (target,)):
                with pytest.raises(TypeError):
                    await me.link(bad)  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    await me.unlink(bad)  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    await a.exit(bad, "kill")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await a.exit(target, 3)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="empty"):
                await a.exit(target, "")
            assert a.statistics().links == 0
        with pytest.raises(ValueError, match="has ended"):
            await me.link(target)
        assert a._processes.lookup(target) is not None


# ----------------------------------------------------------- noproc, noconnection


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_link_to_a_dead_or_stale_pid_fires_noproc_at_once(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            async with host.open_process() as gone:
                pass
            stale = td.Pid(host.name, gone.pid.id, host.creation ^ 1)
            never = td.Pid(host.name, 10_000, host.creation)
            async with a.open_process() as me:
                me.trap_exits = True
                for pid in (gone.pid, stale, never):
                    await me.link(pid)
                    signal = await me.receive()
                    assert signal == td.ExitSignal(pid, td.ExitReason(ExitKind.NOPROC))
            await wait_until(lambda: link_tables_empty(a, b))

            async def link_to_gone() -> None:
                async with a.open_process() as me:
                    await me.link(gone.pid)
                    if not remote:
                        pytest.fail("a non-trapping process linking to a dead pid ends at once")
                    await anyio.sleep_forever()  # until the other node's noproc

            with pytest.raises(td.ProcessExitError) as info:
                await link_to_gone()
            assert "noproc" in info.value.reason.detail


async def test_a_link_to_an_unreachable_node_fires_noconnection_at_once() -> None:
    async with cluster("a") as (a,):
        async with a.open_process() as me:
            me.trap_exits = True
            ghost = td.Pid("ghost@127.0.0.1", 1, 1)
            await me.link(ghost)
            signal = await me.receive()
            assert signal.pid == ghost
            assert signal.reason.kind == ExitKind.NOCONNECTION
        assert link_tables_empty(a)


async def test_disconnect_fires_noconnection_on_both_sides() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            async with a.open_process() as left, b.open_process() as right:
                left.trap_exits = right.trap_exits = True
                await left.link(right.pid)
                await wait_until(lambda: b._links.linked(right.pid) == {left.pid})
                await a.disconnect(b.name)
                on_left = await left.receive()
                on_right = await right.receive()
                assert on_left.pid == right.pid and on_right.pid == left.pid
                assert on_left.reason.kind == on_right.reason.kind == ExitKind.NOCONNECTION
            assert link_tables_empty(a, b)


async def test_a_crashed_node_fires_noconnection_and_ends_non_trapping_links() -> None:
    with anyio.fail_after(15):
        async with cluster("a") as (a,), anyio.create_task_group() as tg:
            b = await start_node(tg, "b@127.0.0.1", cookie=COOKIE, config=FAST)
            await a.connect(f"{b.name}:{b.address[1]}")
            remote = await b.spawn(wait_forever)
            async with a.open_process() as trapping:
                trapping.trap_exits = True
                await trapping.link(remote)
                plain = await a.spawn(wait_forever)
                ready = anyio.Event()

                async def linker(proc: td.Process) -> None:
                    await proc.link(remote)
                    ready.set()
                    await anyio.sleep_forever()

                plain = await a.spawn(linker)
                await ready.wait()
                await wait_until(lambda: len(b._links.linked(remote)) == 2)
                async with a.monitor(plain) as down:
                    crash(b)
                    reason = (await down.receive()).reason
                assert reason.kind == ExitKind.EXIT
                assert "noconnection" in reason.detail
                signal = await trapping.receive()
                assert signal.pid == remote
                assert signal.reason.kind == ExitKind.NOCONNECTION
            assert link_tables_empty(a)
            tg.cancel_scope.cancel()


# ------------------------------------------------------------ exactly once


async def test_a_process_exiting_while_being_linked_gets_one_signal_per_link() -> None:
    with anyio.fail_after(20):
        async with cluster("a", "b") as (a, b):
            async with a.open_process() as me:
                me.trap_exits = True
                for round_ in range(20):
                    target = await b.spawn(exit_on_message)
                    # The stop and the LINK race on the wire: the target may
                    # be alive, ending or gone when the LINK arrives.
                    await a.send(target, "raise" if round_ % 2 else "stop")
                    if round_ % 3 == 0:
                        await anyio.lowlevel.checkpoint()
                    await me.link(target)
                    signal = await me.receive()
                    assert signal.pid == target
                    assert signal.reason.kind in (
                        ExitKind.NORMAL,
                        ExitKind.EXCEPTION,
                        ExitKind.NOPROC,
                    )
                    with pytest.raises(TimeoutError):
                        await me.receive(timeout=0.05)
                # Linking twice to a live process is one link: one signal.
                # (Each link to a dead pid is answered with its own noproc.)
                target = await b.spawn(exit_on_message)
                await me.link(target)
                await me.link(target)
                await wait_until(lambda: b._links.linked(target) == {me.pid})
                await a.send(target, "stop")
                assert (await me.receive()).pid == target
                with pytest.raises(TimeoutError):
                    await me.receive(timeout=0.05)
            await wait_until(lambda: link_tables_empty(a, b))


async def test_both_ends_linking_at_once_is_one_link() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            async with a.open_process() as left, b.open_process() as right:
                left.trap_exits = True
                await left.link(right.pid)
                await right.link(left.pid)
                await wait_until(lambda: a.statistics().links == 1 and b.statistics().links == 1)
            await wait_until(lambda: link_tables_empty(a, b))


# --------------------------------------------------------------- hostile


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_hostile_link_frames_for_pids_not_of_the_peer_are_refused() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            target = await a.spawn(wait_forever)
            other = td.Pid("b@127.0.0.1", 1, 1)
            mine = td.Pid("mallory@127.0.0.1", 1, 7)
            old = td.Pid("mallory@127.0.0.1", 1, 6)
            foreign_target = td.Pid("b@127.0.0.1", 1, 1)
            frames: list[list[Any]] = [
                [Kind.LINK, other, target],  # speaks for another node's pid
                [Kind.LINK, old, target],  # a pid of an earlier run of the peer
                [Kind.EXIT, old, target, "kill", ""],
                [Kind.LINK, mine, foreign_target],  # target not on this node
                [Kind.LINK, "pid", target],
                [Kind.UNLINK, other, target],
                [Kind.LINK_EXIT, other, target, "exception", "forged"],
                [Kind.EXIT, other, target, "kill", ""],
                [Kind.EXIT, mine, target, "no-such-kind", ""],
            ]
            for n, frame in enumerate(frames, start=1):
                async with hostile_peer(a.address) as peer:
                    await peer.send(frame)
                    with anyio.fail_after(5):
                        await wait_until(drops_at(a, "protocol_error", n))
            assert a._processes.lookup(target) is not None  # nobody was killed
            assert link_tables_empty(a)


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_a_peer_may_hold_at_most_max_links_per_peer() -> None:
    config = td.NodeConfig.local(max_links_per_peer=5)
    with anyio.fail_after(10):
        async with cluster("a", config=config) as (a,):
            targets = [await a.spawn(wait_forever) for _ in range(6)]
            async with hostile_peer(a.address) as peer:
                for i, target in enumerate(targets[:5]):
                    await peer.send([Kind.LINK, td.Pid("mallory@127.0.0.1", i + 1, 7), target])
                await wait_until(lambda: a.statistics().links == 5)
                await peer.send([Kind.LINK, td.Pid("mallory@127.0.0.1", 9, 7), targets[5]])
                await wait_until(lambda: a.statistics().drops.get("link_limit") == 1)
            # The connection was dropped: its links fired noconnection (the
            # targets do not trap, but noconnection is abnormal: they ended).
            await wait_until(lambda: link_tables_empty(a))
            alive = [t for t in targets if a._processes.lookup(t) is not None]
            assert alive == [targets[5]]


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_a_peer_linking_then_exiting_ends_the_target_once() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            async with a.open_process() as me:
                me.trap_exits = True
                origin = td.Pid("mallory@127.0.0.1", 1, 7)
                async with hostile_peer(a.address) as peer:
                    await peer.send([Kind.LINK, origin, me.pid])
                    await peer.send([Kind.LINK_EXIT, origin, me.pid, "exception", "boom"])
                    await peer.send([Kind.LINK_EXIT, origin, me.pid, "exception", "again"])
                    signal = await me.receive()
                    assert signal == td.ExitSignal(origin, td.ExitReason("exception", "boom"))
                    with pytest.raises(TimeoutError):
                        await me.receive(timeout=0.1)
                    # A LINK to a pid that is gone is answered with noproc.
                    gone = td.Pid(a.name, 9999, a.creation)
                    await peer.send([Kind.LINK, origin, gone])
                    with anyio.fail_after(5):
                        answer = await peer.receive()
                        while not (isinstance(answer, list) and answer[0] == Kind.LINK_EXIT):
                            answer = await peer.receive()
                    assert answer == [Kind.LINK_EXIT, gone, origin, "noproc", ""]


async def test_linked_processes_of_a_stopping_node_end_with_shutdown() -> None:
    reasons: dict[str, td.ExitReason] = {}
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            first = await a.spawn(wait_forever)

            async def linked(proc: td.Process) -> None:
                await proc.link(first)
                await anyio.sleep_forever()

            second = await a.spawn(linked)
            await wait_until(lambda: a.statistics().links == 2)

            def record(event: ProcessExited) -> None:
                reasons[str(event.pid)] = event.reason

            a._events.subscribe(ProcessExited, record)
    assert reasons[str(first)].kind == ExitKind.SHUTDOWN
    assert reasons[str(second)].kind == ExitKind.SHUTDOWN


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_a_link_crossing_an_unlink_leaves_no_half_link() -> None:
    """The peer links while our UNLINK is on its way: its LINK was sent
    before it read the UNLINK (which removes the link there), so this side
    must not keep it either."""
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            async with a.open_process() as me:
                me.trap_exits = True
                theirs = td.Pid("mallory@127.0.0.1", 1, 7)
                async with hostile_peer(a.address) as peer:

                    async def next_of(kind: int) -> list[Any]:
                        while True:
                            frame = await peer.receive()
                            if isinstance(frame, list) and frame[0] == kind:
                                return frame

                    await peer.send([Kind.LINK, theirs, me.pid])
                    await wait_until(lambda: a.statistics().links == 1)
                    await me.unlink(theirs)
                    assert await next_of(Kind.UNLINK) == [Kind.UNLINK, me.pid, theirs]
                    # The peer's own link(), sent before it read the UNLINK.
                    await peer.send([Kind.LINK, theirs, me.pid])
                    await peer.send([Kind.PING, 1])  # frames are handled in order
                    assert await next_of(Kind.PONG) == [Kind.PONG, 1]
                    assert a.statistics().links == 0
                    await peer.send([Kind.UNLINK_ACK, theirs, me.pid])
                    await wait_until(lambda: a._links.sizes()["unlinking"] == 0)
                    # After the acknowledgement a LINK is a new link again.
                    await peer.send([Kind.LINK, theirs, me.pid])
                    await wait_until(lambda: a.statistics().links == 1)
                    # And this node acknowledges the peer's UNLINK.
                    await peer.send([Kind.UNLINK, theirs, me.pid])
                    assert await next_of(Kind.UNLINK_ACK) == [Kind.UNLINK_ACK, me.pid, theirs]
                    assert a.statistics().links == 0


async def test_an_exit_signal_can_be_forwarded_to_another_node() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            async with a.open_process() as me, b.open_process() as watcher:
                me.trap_exits = True
                crasher = await a.spawn(exit_on_message)
                await me.link(crasher)
                await a.send(crasher, "raise")
                signal = await me.receive()
                await a.send(watcher.pid, signal)
                assert await watcher.receive() == signal
