"""Processes, mailboxes and messages, locally and between nodes over loopback."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import attrs
import pytest

import trio_distribute as td
from trio_distribute.testing import open_cluster

COOKIE = "test-cookie"
FAST = td.NodeConfig.local()


@td.message("test.messaging.greeting", version=1)
@attrs.frozen
class Greeting:
    text: str
    sender: td.Pid


def cluster(
    *names: str, config: td.NodeConfig = FAST
) -> AbstractAsyncContextManager[list[td.Node]]:
    """Nodes connected to each other in a full mesh."""
    return open_cluster(names, cookie=COOKIE, config=config)


async def test_local_send_by_pid_name_and_tuple() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,), a.open_process(name="inbox") as proc:
            assert td.current_process() is proc
            assert proc.pid.node == "a@127.0.0.1" and proc.pid.creation == a.creation
            await a.send(proc.pid, 1)
            await a.send("inbox", 2)
            await a.send(("inbox", "a@127.0.0.1"), 3)
            assert [await proc.receive() for _ in range(3)] == [1, 2, 3]
            assert a.whereis("inbox") == proc.pid
            with pytest.raises(td.NameNotFoundError):
                await a.send("nobody", 1)
            # {Name, node()} ! Msg never raises in Erlang; it is counted.
            await a.send(("nobody", "a@127.0.0.1"), 1)
            assert a.statistics().drops["unknown_name"] == 1
        assert td.current_process() is None
        assert a.whereis("inbox") is None


async def test_selective_receive_keeps_the_others_in_order() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,), a.open_process() as proc:
            for i in range(10):
                await a.send(proc.pid, i)
            assert await proc.receive(match=lambda m: m == 7) == 7
            assert proc.receive_nowait(match=lambda m: m % 2 == 1) == 1
            assert [proc.receive_nowait() for _ in range(8)] == [0, 2, 3, 4, 5, 6, 8, 9]
            with pytest.raises(anyio.WouldBlock):
                proc.receive_nowait()
            with pytest.raises(TimeoutError):
                await proc.receive(timeout=0.05)

            async def later() -> None:
                await anyio.sleep(0.05)
                await a.send(proc.pid, "skip")
                await a.send(proc.pid, "wanted")

            async with anyio.create_task_group() as tg:
                tg.start_soon(later)
                assert await proc.receive(match=lambda m: m == "wanted", timeout=2) == "wanted"
            assert proc.receive_nowait() == "skip"


async def test_async_iteration() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,), a.open_process() as proc:
            for i in range(3):
                await a.send(proc.pid, i)
            seen = []
            async for message in proc:
                seen.append(message)
                if len(seen) == 3:
                    break
            assert seen == [0, 1, 2]


async def test_remote_messages_and_message_classes() -> None:
    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            async with a.open_process() as pa, b.open_process(name="echo") as pb:
                await a.send(pb.pid, {"hello": [1, 2.5, b"x", None, True]})
                assert await pb.receive() == {"hello": [1, 2.5, b"x", None, True]}
                await a.send(("echo", "b@127.0.0.1"), Greeting("hi", pa.pid))
                greeting = await pb.receive()
                assert greeting == Greeting("hi", pa.pid)
                await b.send(greeting.sender, "back")
                assert await pa.receive() == "back"


async def test_sends_to_dead_and_stale_pids_are_dropped_and_counted() -> None:
    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            async with b.open_process() as gone:
                pass
            stale = td.Pid("b@127.0.0.1", 1, b.creation + 1)
            async with b.open_process() as alive:
                await a.send(gone.pid, "lost")
                await a.send(stale, "lost")
                await a.send(("nobody", "b@127.0.0.1"), "lost")
                await a.send(alive.pid, "after")
                assert await alive.receive() == "after"  # FIFO: the drops came first
            drops = b.statistics().drops
            assert drops["dead_pid"] == 2
            assert drops["unknown_name"] == 1


async def test_send_errors_are_typed() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,):
            with pytest.raises(td.NodeDownError):
                await a.send(td.Pid("z@127.0.0.1", 1, 1), "x")
            with pytest.raises(td.NodeDownError):
                await a.send(("name", "z@127.0.0.1"), "x")
            async with cluster("b") as (b,):
                await a.connect(f"{b.name}:{b.address[1]}")
                async with b.open_process() as pb:
                    with pytest.raises(td.EncodeError, match="set"):
                        await a.send(pb.pid, {1, 2})
                    with pytest.raises(td.MessageTooLargeError):
                        await a.send(pb.pid, b"x" * (a.config.max_message_size + 1))
                    with pytest.raises(TypeError):
                        await a.send(42, "x")  # type: ignore[arg-type]
                    await a.send(pb.pid, "still fine")
                    assert await pb.receive() == "still fine"


async def test_spawned_process_crash_is_reported_and_node_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crash(proc: td.Process, text: str) -> None:
        await proc.receive()
        raise RuntimeError(text)

    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            pid = await b.spawn(crash, "boom")
            async with a.monitor(pid) as down:
                await a.send(pid, "go")
                event = await down.receive()
            assert event.pid == pid
            assert event.reason == td.ExitReason("exception", "RuntimeError: boom")
            assert any("crashed" in r.message for r in caplog.records)
            assert await a.ping("b@127.0.0.1") > 0
            assert b.statistics().processes == 0


async def test_spawn_registers_names_and_runs_until_done() -> None:
    async def echo(proc: td.Process) -> None:
        message = await proc.receive()
        await proc_node.send(message["reply_to"], message["body"])

    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b):
            proc_node = b
            pid = await b.spawn(echo, name="echo")
            assert b.whereis("echo") == pid
            with pytest.raises(ValueError, match="already registered"):
                await b.spawn(echo, name="echo")
            async with a.open_process() as me:
                await a.send(("echo", "b@127.0.0.1"), {"reply_to": me.pid, "body": "ping"})
                assert await me.receive() == "ping"


async def test_full_mailbox_drops_without_stalling_other_processes() -> None:
    config = td.NodeConfig.local(max_mailbox=10)
    with anyio.fail_after(10):
        async with cluster("a", "b", config=config) as (a, b):
            async with b.open_process() as slow, b.open_process() as fast:
                for i in range(15):
                    await a.send(slow.pid, i)
                await a.send(fast.pid, "through")
                assert await fast.receive() == "through"
                assert slow.pending() == 10
                assert b.statistics().drops["mailbox_full"] == 5
                assert b.statistics().mailbox_depths == {slow.pid: 10}
                assert [slow.receive_nowait() for _ in range(10)] == list(range(10))


async def test_fifo_per_sender_receiver_pair_across_three_nodes() -> None:
    count = 10_000
    with anyio.fail_after(120):
        async with cluster("a", "b", "c") as (a, b, c):
            async with c.open_process() as r1, c.open_process() as r2:
                receivers = [r1.pid, r2.pid]

                async def sender(node: td.Node, tag: str) -> None:
                    async with node.open_process() as me:
                        for seq in range(count):
                            await node.send(receivers[seq % 2], [tag, me.pid.id, seq])

                async def receiver(proc: td.Process, expected: int) -> dict[Any, list[int]]:
                    seen: dict[Any, list[int]] = {}
                    for _ in range(expected):
                        tag, _pid, seq = await proc.receive()
                        seen.setdefault(tag, []).append(seq)
                    return seen

                results: list[dict[Any, list[int]]] = []

                async def collect(proc: td.Process) -> None:
                    results.append(await receiver(proc, 2 * count))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect, r1)
                    tg.start_soon(collect, r2)
                    tg.start_soon(sender, a, "a1")
                    tg.start_soon(sender, b, "b1")
                    tg.start_soon(sender, a, "a2")
                    tg.start_soon(sender, b, "b2")
                merged: dict[Any, list[int]] = {}
                for result in results:
                    for tag, seqs in result.items():
                        # Each receiver sees each sender's sequence in order.
                        assert seqs == sorted(seqs)
                        merged.setdefault(tag, []).extend(seqs)
                assert set(merged) == {"a1", "a2", "b1", "b2"}
                for seqs in merged.values():
                    assert sorted(seqs) == list(range(count))  # none missing


async def test_unknown_message_tags_and_versions_are_refused_at_the_receiver() -> None:
    import cbor2

    from trio_distribute._proto.frames import frame
    from trio_distribute._proto.kinds import Kind
    from trio_distribute.codec import MESSAGE_TAG, PID_TAG

    with anyio.fail_after(5):
        async with cluster("a", "b") as (a, b), b.open_process() as pb:
            conn = a.transport.connections["b@127.0.0.1"]
            dest = cbor2.CBORTag(PID_TAG, [pb.pid.node, pb.pid.id, pb.pid.creation])
            for body in (
                ["no.such.tag", 1, {}],  # a tag the receiver never declared
                ["test.messaging.greeting", 9, {"text": "x", "sender": dest}],  # bad version
            ):
                payload = cbor2.dumps([int(Kind.SEND), dest, cbor2.CBORTag(MESSAGE_TAG, body)])
                conn.write(frame(payload))
            await a.send(pb.pid, "after")
            # Never delivered as a dict: the mailbox holds only the good one.
            assert await pb.receive() == "after"
            assert pb.pending() == 0
            assert b.statistics().drops["decode_error"] == 2
            assert b.nodes() == ["a@127.0.0.1"]  # the connection carries on


async def test_several_waiters_on_one_mailbox_and_a_cancelled_one() -> None:
    with anyio.fail_after(5):
        async with cluster("a") as (a,), a.open_process() as proc:
            got: list[Any] = []

            async def take() -> None:
                got.append(await proc.receive())

            with anyio.move_on_after(0.05):  # a waiter that gives up
                await proc.receive()
            async with anyio.create_task_group() as tg:
                tg.start_soon(take)
                tg.start_soon(take)
                await anyio.wait_all_tasks_blocked()
                await a.send(proc.pid, "one")
                await a.send(proc.pid, "two")
            assert sorted(got) == ["one", "two"]
