"""Telemetry: every counted drop is an event, and notable outcomes are too."""

from __future__ import annotations

from collections import Counter

import anyio
import attrs
import pytest
from free_ports import free_port
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute.config import ElectionConfig
from trio_distribute.registry import default_resolver
from trio_distribute.telemetry import (
    DEFAULT_BUFFER,
    AuthenticationFailed,
    ConnectFailed,
    ConnectionRefused,
    Dropped,
    MailboxOverflow,
    RegistryConflict,
    RpcCompleted,
    RpcTimedOut,
)
from trio_distribute.testing import partition, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "telemetry-cookie"


async def test_statistics_and_events_agree() -> None:
    config = attrs.evolve(
        td.NodeConfig.local(election=ElectionConfig.local(bootstrap_expect=2)), max_mailbox=2
    )
    seen: list[object] = []
    with anyio.fail_after(30):
        async with open_cluster(["a", "b"], cookie=COOKIE, config=config) as (a, b):
            a.telemetry.add_sink(seen.append)
            async with a.telemetry.subscribe() as events:
                # auth_failed: a stranger with another cookie, from loopback.
                async with open_node("x@127.0.0.1", cookie="another-cookie") as stranger:
                    with pytest.raises(td.ConnectError):
                        await stranger.connect(f"{a.name}:{a.address[1]}")
                # mailbox_full: three messages to a mailbox of two.
                async with a.open_process() as proc:
                    for n in range(3):
                        await a.send(proc.pid, n)
                    full_pid = proc.pid
                # dead_pid: that process has exited.
                await a.send(full_pid, "late")
                # An RPC that times out, one that works, and a refused dial.
                b.rpc.export(anyio.sleep_forever, name="sleep")
                b.rpc.export(lambda: 1, name="one")
                with pytest.raises(td.RpcTimeoutError):
                    await a.rpc.call(b.name, "sleep", timeout=0.2)
                assert await a.rpc.call(b.name, "one") == 1
                with pytest.raises(td.ConnectError):
                    await a.connect(f"127.0.0.1:{free_port()}")
                await wait_until(lambda: a.statistics().drops.get("auth_failed", 0) >= 1)

                drops = a.statistics().drops
                by_cause = Counter(e.cause for e in seen if isinstance(e, Dropped))
                # Every counted drop has exactly one event, and vice versa.
                assert dict(by_cause) == dict(drops)
                auth = [e for e in seen if isinstance(e, AuthenticationFailed)]
                assert len(auth) == drops["auth_failed"] == 1
                assert auth[0].source == "127.0.0.1"
                overflow = [e for e in seen if isinstance(e, MailboxOverflow)]
                assert len(overflow) == drops["mailbox_full"] == 1
                assert overflow[0].pid == full_pid
                assert by_cause["dead_pid"] == drops["dead_pid"] >= 1
                timed_out = [e for e in seen if isinstance(e, RpcTimedOut)]
                assert timed_out == [RpcTimedOut(b.name, "sleep", 0.2)]
                outcomes = [(e.function, e.outcome) for e in seen if isinstance(e, RpcCompleted)]
                assert outcomes == [("sleep", "timeout"), ("one", "ok")]
                assert any(isinstance(e, ConnectFailed) for e in seen)
                # The channel got the same events, in the same order.
                received = []
                while True:
                    try:
                        received.append(events.receive_nowait())
                    except anyio.WouldBlock:
                        break
                assert received == seen
                assert a.telemetry.counts["MailboxOverflow"] == 1


async def test_member_and_leader_changes_are_events() -> None:
    seen: list[object] = []
    with anyio.fail_after(30):
        async with open_cluster(["a"], cookie=COOKIE, connect=False) as (a,):
            a.telemetry.add_sink(seen.append)
            async with open_node("b@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()) as b:
                await b.connect(f"{a.name}:{a.address[1]}")
                await wait_until(
                    lambda: any(isinstance(e, td.MemberUp) and e.name == b.name for e in seen)
                )
            # b left its block: a sees it leave (or die).
            await wait_until(
                lambda: any(
                    isinstance(e, td.MemberLeft | td.MemberDown) and e.name == b.name for e in seen
                )
            )
    # Within one process the pair never reached bootstrap_expect=3: no leader,
    # so a lone node with bootstrap_expect 1 shows the leader event.
    leaders: list[object] = []
    config = td.NodeConfig.local(election=ElectionConfig.local(bootstrap_expect=1))
    with anyio.fail_after(30):
        async with open_node("c@127.0.0.1", cookie=COOKIE, config=config) as c:
            c.telemetry.add_sink(leaders.append)
            await c.election.wait_for_leader(timeout=20)
            await wait_until(lambda: any(isinstance(e, td.LeaderChanged) for e in leaders))


async def test_a_registry_conflict_is_an_event() -> None:
    seen: list[object] = []
    with anyio.fail_after(30):
        async with open_cluster(2, cookie=COOKIE) as (a, b):
            a.telemetry.add_sink(seen.append)
            async with a.open_process() as pa, b.open_process() as pb:
                async with partition([a], [b]):
                    await wait_until(lambda: not a.nodes() and not b.nodes())
                    await a.registry.register("svc", pa.pid)
                    await b.registry.register("svc", pb.pid)
                await a.connect(f"{b.name}:{b.address[1]}")
                winner = default_resolver("svc", pa.pid, pb.pid)
                loser = pb.pid if winner == pa.pid else pa.pid
                await wait_until(lambda: any(isinstance(e, RegistryConflict) for e in seen))
                conflicts = [e for e in seen if isinstance(e, RegistryConflict)]
                assert conflicts == [RegistryConflict("svc", winner, loser)]


async def test_a_subscriber_that_falls_behind_loses_newer_events_counted() -> None:
    async with open_node("a@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()) as a:
        async with a.telemetry.subscribe(buffer=2) as events:
            for _ in range(5):
                a.transport.count_drop("test_cause")
            assert a.statistics().drops["telemetry_overflow"] == 3
            assert [events.receive_nowait() for _ in range(2)] == [Dropped("test_cause")] * 2
            with pytest.raises(anyio.WouldBlock):
                events.receive_nowait()
        with pytest.raises(ValueError, match="at least 1"):
            async with a.telemetry.subscribe(buffer=0):
                pass
    assert DEFAULT_BUFFER == 1024


async def test_a_failing_sink_is_counted_and_does_not_stop_the_others() -> None:
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("sink bug")

    async with open_node("a@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()) as a:
        a.telemetry.add_sink(broken)
        a.telemetry.add_sink(seen.append)
        a.transport.count_drop("test_cause")
        a.transport.count_drop("test_cause")
        assert seen == [Dropped("test_cause")] * 2
        assert a.statistics().drops["telemetry_sink_failed"] == 2
        a.telemetry.remove_sink(broken)
        a.transport.count_drop("test_cause")
        assert a.statistics().drops["telemetry_sink_failed"] == 2


async def test_event_counts_are_kept_without_listeners() -> None:
    async with open_node("a@127.0.0.1", cookie=COOKIE, config=td.NodeConfig.local()) as a:
        for cause in ("dead_pid", "mailbox_full", "auth_failed", "handshake_refused_full"):
            a.transport.count_drop(cause)
        counts = a.telemetry.counts
        assert counts["Dropped"] == counts["MailboxOverflow"] == 1
        assert counts["AuthenticationFailed"] == counts["ConnectionRefused"] == 1
        seen: list[object] = []
        a.telemetry.add_sink(seen.append)
        a.transport.count_drop("handshake_refused_full", "10.0.0.9")
        assert seen == [ConnectionRefused("handshake_refused_full", "10.0.0.9")]
        assert counts["ConnectionRefused"] == 2
