"""Request/reply between processes: Process.call and Process.reply."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hostile_peer import hostile_peer
from process_helpers import COOKIE, FAST, cluster, drops_at, ended
from virtual import anyio_backend, fake_network, start_node

import trio_distribute as td
from trio_distribute._proto.kinds import Kind
from trio_distribute.monitor import ExitKind
from trio_distribute.testing import crash, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures


async def doubler(proc: td.Process) -> None:
    """Answers every call with twice its request; "crash" crashes it."""
    async for message in proc:
        if isinstance(message, td.Call):
            if message.request == "crash":
                raise ValueError("asked to crash")
            await proc.reply(message, message.request * 2)


async def silent(proc: td.Process) -> None:
    """Takes calls and never answers."""
    async for _ in proc:
        pass


def call_tables_empty(*nodes: td.Node) -> bool:
    return all(
        not any(node._calls.sizes().values())
        and node.statistics().calls == 0
        and node.statistics().monitors == 0
        for node in nodes
    )


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_call_by_pid_by_name_and_by_name_on_a_node(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            pid = await host.spawn(doubler, name="doubler")
            async with a.open_process() as me:
                assert await me.call(pid, 21) == 42
                assert await me.call(("doubler", host.name), "ab") == "abab"
                if not remote:
                    assert await me.call("doubler", [1]) == [1, 1]
                assert me.pending() == 0  # replies never pass through the mailbox
            await wait_until(lambda: call_tables_empty(a, b))


async def test_the_callee_receives_a_call_object() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            async with a.open_process() as caller, b.open_process() as callee:
                async with anyio.create_task_group() as tg:
                    result: list[Any] = []

                    async def ask() -> None:
                        result.append(await caller.call(callee.pid, {"q": 1}))

                    tg.start_soon(ask)
                    call = await callee.receive()
                    assert isinstance(call, td.Call)
                    assert call.request == {"q": 1}
                    assert call.caller == caller.pid
                    assert isinstance(call.ref, td.Ref)
                    await callee.reply(call, "answer")
                assert result == ["answer"]


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_late_reply_is_dropped_and_counted(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            held: list[td.Call] = []

            async def slow(proc: td.Process) -> None:
                held.append(await proc.receive())
                await proc.receive()  # "go"
                await proc.reply(held[0], "too late")

            pid = await host.spawn(slow)
            async with a.open_process() as me:
                with pytest.raises(td.CallTimeoutError):
                    await me.call(pid, "q", timeout=0.1)
                await a.send(pid, "go")
                await wait_until(lambda: a.statistics().drops.get("late_reply") == 1)
                assert me.pending() == 0
                with pytest.raises(TimeoutError):
                    await me.receive(timeout=0.1)
            await wait_until(lambda: call_tables_empty(a, b))


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_call_to_a_dead_process_fails_with_noproc(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            async with host.open_process() as gone:
                pass
            stale = td.Pid(host.name, gone.pid.id, host.creation ^ 1)
            async with a.open_process() as me:
                for dest in (gone.pid, stale, ("nobody", host.name)):
                    with pytest.raises(td.ProcessDownError) as info:
                        await me.call(dest, 1, timeout=60)
                    assert info.value.reason.kind == ExitKind.NOPROC
                    assert info.value.dest == dest
                with pytest.raises(td.NameNotFoundError):
                    await me.call("nobody", 1)
            await wait_until(lambda: call_tables_empty(a, b))


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_the_callee_dying_mid_call_fails_it_at_once(remote: bool) -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            host = b if remote else a
            pid = await host.spawn(doubler)
            async with a.open_process() as me:
                with pytest.raises(td.ProcessDownError) as info:
                    await me.call(pid, "crash", timeout=60)
                assert info.value.reason == td.ExitReason(
                    ExitKind.EXCEPTION, "ValueError: asked to crash"
                )
            await wait_until(lambda: call_tables_empty(a, b))


async def test_the_callee_node_going_down_mid_call_fails_it() -> None:
    with anyio.fail_after(15):
        async with cluster("a") as (a,), anyio.create_task_group() as tg:
            b = await start_node(tg, "b@127.0.0.1", cookie=COOKIE, config=FAST)
            await a.connect(f"{b.name}:{b.address[1]}")
            pid = await b.spawn(silent)
            async with a.open_process() as me:

                async def crash_soon() -> None:
                    await wait_until(lambda: b.statistics().calls == 1)
                    crash(b)

                tg.start_soon(crash_soon)
                with pytest.raises(td.ProcessDownError) as info:
                    await me.call(pid, "q", timeout=60)
                assert info.value.reason.kind == ExitKind.NOCONNECTION
            assert call_tables_empty(a)
            tg.cancel_scope.cancel()


async def test_disconnect_mid_call_and_a_call_to_an_unreachable_node() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(silent)
            async with a.open_process() as me:
                async with anyio.create_task_group() as tg:

                    async def cut() -> None:
                        await wait_until(lambda: b.statistics().calls == 1)
                        await a.disconnect(b.name)

                    tg.start_soon(cut)
                    with pytest.raises(td.ProcessDownError) as info:
                        await me.call(pid, "q", timeout=60)
                    assert info.value.reason.kind == ExitKind.NOCONNECTION
                with pytest.raises(td.ProcessDownError) as info:
                    await me.call(td.Pid("ghost@127.0.0.1", 1, 1), "q")
                assert info.value.reason.kind == ExitKind.NOCONNECTION
            await wait_until(lambda: call_tables_empty(a, b))


async def test_replying_twice_is_an_error() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            errors: list[BaseException] = []

            async def twice(proc: td.Process) -> None:
                call = await proc.receive()
                await proc.reply(call, 1)
                try:
                    await proc.reply(call, 2)
                except td.AlreadyRepliedError as exc:
                    errors.append(exc)
                with pytest.raises(TypeError):
                    await proc.reply("not a call", 3)  # type: ignore[arg-type]

            for host in (a, b):
                pid = await host.spawn(twice)
                async with a.open_process() as me:
                    assert await me.call(pid, "q") == 1
                await wait_until(ended(host, pid))
            assert len(errors) == 2
            assert all(isinstance(e, ValueError) for e in errors)
            assert a.statistics().drops.get("late_reply") is None


async def test_a_reply_that_cannot_travel_leaves_the_call_open() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):

            async def careful(proc: td.Process) -> None:
                call = await proc.receive()
                with pytest.raises(td.EncodeError):
                    await proc.reply(call, object())
                await proc.reply(call, "fine")

            pid = await b.spawn(careful)
            async with a.open_process() as me:
                assert await me.call(pid, "q") == "fine"
                with pytest.raises(td.EncodeError):
                    await me.call(pid, object())
            await wait_until(lambda: call_tables_empty(a, b))


async def test_bad_calls_are_refused_before_anything_is_sent() -> None:
    async with cluster("a") as (a,):
        pid = await a.spawn(doubler)
        async with a.open_process() as me:
            for timeout in (0, -1, float("nan")):
                with pytest.raises(ValueError, match="timeout"):
                    await me.call(pid, 1, timeout=timeout)
            with pytest.raises(TypeError):
                await me.call(pid, 1, timeout="soon")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="itself"):
                await me.call(me.pid, 1)
            for dest in (3, None, ("a",), ("x", "y", "z")):
                with pytest.raises(TypeError):
                    await me.call(dest, 1)  # type: ignore[arg-type]
            assert call_tables_empty(a)
        with pytest.raises(ValueError, match="has ended"):
            await me.call(pid, 1)


async def test_a_forwarded_call_answered_from_a_third_node() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b", "c") as (a, b, c):
            worker = await c.spawn(doubler)

            async def front(proc: td.Process) -> None:
                async for call in proc:
                    await b.send(worker, call)  # the worker on c replies

            pid = await b.spawn(front)
            async with a.open_process() as me:
                assert await me.call(pid, 5) == 10
            # The front's node was told to forget the call (CALL_DONE).
            await wait_until(lambda: call_tables_empty(a, b, c))


async def test_a_cancelled_caller_leaves_nothing_behind() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(silent)
            async with a.open_process() as me:
                with anyio.move_on_after(0.1):
                    await me.call(pid, "q", timeout=None)
            await wait_until(lambda: call_tables_empty(a, b))


# --------------------------------------------------------------- hostile


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_hostile_replies_and_calls() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            pid = await a.spawn(silent)
            mine = td.Pid("mallory@127.0.0.1", 1, 7)
            my_ref = td.Ref("mallory@127.0.0.1", 1, 7)
            # A reply for a ref of ours that no call waits on: counted.
            async with hostile_peer(a.address) as peer:
                await peer.send([Kind.REPLY, pid, td.Ref(a.name, 10_000, a.creation), "x"])
                await wait_until(lambda: a.statistics().drops.get("late_reply") == 1)
            frames: list[list[Any]] = [
                [Kind.REPLY, pid, td.Ref("b@127.0.0.1", 1, 1), "x"],  # a ref we never made
                [Kind.REPLY, pid, td.Ref(a.name, 1, a.creation ^ 1), "x"],  # earlier run's
                [Kind.REPLY, td.Pid("b@127.0.0.1", 1, 1), td.Ref(a.name, 1, a.creation), "x"],
                [Kind.CALL_DOWN, td.Ref("b@127.0.0.1", 1, 1), pid, "noproc", ""],
                [Kind.CALL, td.Ref("b@127.0.0.1", 1, 1), mine, pid, "q"],  # not its ref
                [Kind.CALL, my_ref, td.Pid("b@127.0.0.1", 1, 1), pid, "q"],  # not its pid
                [Kind.CALL, my_ref, mine, td.Pid("b@127.0.0.1", 1, 1), "q"],  # not our pid
                [Kind.CALL, my_ref, mine, 3, "q"],
                [Kind.CALL_DONE, td.Ref("b@127.0.0.1", 1, 1)],
            ]
            for n, frame in enumerate(frames, start=1):
                async with hostile_peer(a.address) as peer:
                    await peer.send(frame)
                    await wait_until(drops_at(a, "protocol_error", n))
            assert call_tables_empty(a)


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_a_peer_may_have_at_most_max_monitors_per_peer_calls_waiting() -> None:
    config = td.NodeConfig.local(max_monitors_per_peer=3)
    with anyio.fail_after(10):
        async with cluster("a", config=config) as (a,):
            pid = await a.spawn(silent)
            async with hostile_peer(a.address) as peer:
                for i in range(1, 4):
                    ref = td.Ref("mallory@127.0.0.1", i, 7)
                    await peer.send([Kind.CALL, ref, td.Pid("mallory@127.0.0.1", 1, 7), pid, i])
                await wait_until(lambda: a.statistics().calls == 3)
                ref = td.Ref("mallory@127.0.0.1", 4, 7)
                await peer.send([Kind.CALL, ref, td.Pid("mallory@127.0.0.1", 1, 7), pid, 4])
                await wait_until(lambda: a.statistics().drops.get("call_limit") == 1)
            await wait_until(lambda: call_tables_empty(a))


@pytest.mark.real_network  # a hostile peer on a real socket
async def test_the_serving_node_answers_noproc_and_forgets_finished_calls() -> None:
    with anyio.fail_after(10):
        async with cluster("a") as (a,):
            pid = await a.spawn(doubler)
            caller = td.Pid("mallory@127.0.0.1", 1, 7)
            async with hostile_peer(a.address) as peer:

                async def next_of(kind: int) -> list[Any]:
                    while True:
                        frame = await peer.receive()
                        if isinstance(frame, list) and frame[0] == kind:
                            return frame

                ref = td.Ref("mallory@127.0.0.1", 1, 7)
                await peer.send([Kind.CALL, ref, caller, pid, 4])
                assert await next_of(Kind.REPLY) == [Kind.REPLY, caller, ref, 8]
                assert call_tables_empty(a)  # forgotten as it replied
                ref2 = td.Ref("mallory@127.0.0.1", 2, 7)
                await peer.send([Kind.CALL, ref2, caller, "nobody", 4])
                assert await next_of(Kind.CALL_DOWN) == [Kind.CALL_DOWN, ref2, caller, "noproc", ""]
                ref3 = td.Ref("mallory@127.0.0.1", 3, 7)
                await peer.send([Kind.CALL, ref3, caller, pid, "crash"])
                down = await next_of(Kind.CALL_DOWN)
                assert down[:4] == [Kind.CALL_DOWN, ref3, caller, "exception"]
                assert call_tables_empty(a)


async def test_a_reply_to_a_caller_whose_node_is_gone_is_counted() -> None:
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            held: list[td.Call] = []

            async def holder(proc: td.Process) -> None:
                held.append(await proc.receive())
                await proc.receive()  # "go"
                await proc.reply(held[0], "nobody waits")

            pid = await b.spawn(holder)
            async with a.open_process() as me, anyio.create_task_group() as tg:

                async def cut() -> None:
                    await wait_until(lambda: bool(held))
                    await a.disconnect(b.name)

                tg.start_soon(cut)
                with pytest.raises(td.ProcessDownError):
                    await me.call(pid, "q", timeout=60)
            await wait_until(lambda: b.name not in a.nodes() and a.name not in b.nodes())
            await b.send(pid, "go")
            await wait_until(lambda: b.statistics().drops.get("reply_no_connection") == 1)
            assert call_tables_empty(a, b)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
async def test_a_call_and_its_reply_arrive_as_over_the_wire(remote: bool) -> None:
    """On one node as across two: tuples arrive as lists, nothing mutable is
    shared, and what cannot travel raises at the caller and the callee."""
    with anyio.fail_after(10):
        async with cluster("a", "b") as (a, b):
            seen: list[Any] = []
            answer = {"items": [1, 2]}

            async def keeper(proc: td.Process) -> None:
                async for call in proc:
                    seen.append(call.request)
                    with pytest.raises(td.EncodeError):
                        await proc.reply(call, object())
                    await proc.reply(call, answer)

            pid = await (b if remote else a).spawn(keeper)
            async with a.open_process() as me:
                request = {"pair": (1, "x"), "list": [1]}
                got = await me.call(pid, request)
                with pytest.raises(td.EncodeError):
                    await me.call(pid, object())
            assert seen == [{"pair": [1, "x"], "list": [1]}]
            assert seen[0] is not request and seen[0]["list"] is not request["list"]
            assert got == answer and got is not answer and got["items"] is not answer["items"]
