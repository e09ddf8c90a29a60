"""SWIM membership, whole nodes on a FakeNetwork in virtual time (tests/virtual.py;
the simulator covers scale)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.abc
import pytest
from virtual import anyio_backend, fake_network, network, open_cluster, open_node, start_node

import trio_distribute as td
from trio_distribute.cluster.gossip import DatagramSealer
from trio_distribute.cluster.membership import MemberDown, MemberLeft, MemberStatus, MemberUp
from trio_distribute.testing import FakeNetwork, crash, partition, wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "membership-cookie"
FAST = td.NodeConfig.local()
ALIVE = MemberStatus.ALIVE


@asynccontextmanager
async def cluster(n: int, config: td.NodeConfig = FAST) -> AsyncIterator[list[td.Node]]:
    """``n`` nodes, each in its own task (so one can crash), every one
    joined through the first only: the rest is membership's work."""
    async with anyio.create_task_group() as tg:
        first = await start_node(tg, "n0@127.0.0.1", cookie=COOKIE, config=config)
        seed = [f"127.0.0.1:{first.address[1]}"]
        nodes = [first]
        for i in range(1, n):
            nodes.append(
                await start_node(tg, f"n{i}@127.0.0.1", cookie=COOKIE, config=config, seeds=seed)
            )
        yield nodes
        tg.cancel_scope.cancel()


def statuses(node: td.Node) -> dict[str, MemberStatus]:
    return {name: status for name, status, _ in node.membership.members_with_status()}


def converged(nodes: list[td.Node], expected: dict[str, MemberStatus]) -> bool:
    return all(statuses(node) == expected for node in nodes)


async def test_five_nodes_joined_through_one_seed_converge_to_a_full_mesh() -> None:
    with anyio.fail_after(15):
        async with cluster(5) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            # connect_all: every member connects to every other.
            for node in nodes:
                await wait_until(lambda n=node: len(n.nodes()) == 4)  # type: ignore[misc]
            assert nodes[0].membership.alive() == sorted(everyone)
            assert nodes[0].membership.current_leader() == "n4@127.0.0.1"
            for node in nodes:
                assert node.membership.member(node.name) is not None


async def test_a_crashed_node_is_declared_dead_everywhere_within_the_bound() -> None:
    config = FAST
    bound = config.membership.dead_bound(5)
    with anyio.fail_after(30):
        async with cluster(5, config) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            victim, survivors = nodes[2], [n for n in nodes if n is not nodes[2]]
            async with AsyncExitStack() as stack:
                streams = [
                    await stack.enter_async_context(n.membership.subscribe()) for n in survivors
                ]
                crashed_at = anyio.current_time()
                crash(victim)
                # The predicted worst case, with room for a loaded test machine:
                # the assertion is that detection happens, not how fast.
                with anyio.fail_after(bound * 2 + 2):
                    for stream in streams:
                        while True:
                            event = await stream.receive()
                            if isinstance(event, MemberDown) and event.name == victim.name:
                                break
                elapsed = anyio.current_time() - crashed_at
            assert elapsed > 0
            for node in survivors:
                assert statuses(node)[victim.name] is MemberStatus.DEAD
                # Declared dead means disconnected: the node-down path ran.
                assert victim.name not in node.nodes()


async def test_a_graceful_leave_is_seen_as_left_not_dead() -> None:
    with anyio.fail_after(20):
        async with cluster(4) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            leaver, others = nodes[3], nodes[:3]
            async with AsyncExitStack() as stack:
                streams = [
                    await stack.enter_async_context(n.membership.subscribe()) for n in others
                ]
                await leaver.membership.leave()
                for stream in streams:
                    event = await stream.receive()
                    assert event == MemberLeft(leaver.name, event.incarnation)
            for node in others:
                await wait_until(
                    lambda n=node: statuses(n)[leaver.name] is MemberStatus.LEFT  # type: ignore[misc]
                )
            await anyio.sleep(FAST.membership.dead_bound(4))  # and it stays "left"
            assert all(statuses(n)[leaver.name] is MemberStatus.LEFT for n in others)
            # A left member can be removed; a live one cannot.
            await others[0].membership.remove(leaver.name)
            assert leaver.name not in statuses(others[0])
            with pytest.raises(ValueError, match="dead or left"):
                await others[0].membership.remove(others[1].name)


async def test_forged_and_garbage_datagrams_change_nothing() -> None:
    with anyio.fail_after(20):
        async with cluster(3) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            target = nodes[0]
            before = target.membership.members_with_status()
            host, port = target.address
            forger = DatagramSealer(b"not-the-cookie")
            insider = DatagramSealer(COOKIE.encode())
            victim = nodes[1].name
            # What a "dead" message about n1 would look like, sealed with
            # the wrong key: must be refused before the protocol sees it.
            from trio_distribute._proto import swim_wire as wire

            dead = wire.pack([wire.encode(wire.Dead(victim, 99, "mallory@127.0.0.1"))])
            sent = {
                "datagram_unauthenticated": [
                    os.urandom(16),
                    os.urandom(200),
                    forger.seal(dead),
                    forger.seal(b"\x80"),
                    insider.seal(dead)[:-1] + b"\x00",  # a tag off by one byte
                ],
                "datagram_malformed": [
                    insider.seal(b"\xff\xff"),
                    insider.seal(os.urandom(64)),
                    insider.seal(b"\x82\x01"),
                ],
                "datagram_oversized": [os.urandom(1500)],
            }
            net = network()
            assert isinstance(net, FakeNetwork)
            async with await net.attach("mallory").open_datagram("127.0.0.66", 7000) as udp:
                for datagrams in sent.values():
                    for datagram in datagrams:
                        await udp.sendto(datagram, host, port)
            drops = target.statistics().drops
            await wait_until(
                lambda: all(
                    target.statistics().drops.get(cause, 0) >= len(datagrams)
                    for cause, datagrams in sent.items()
                )
            )
            drops = target.statistics().drops
            for cause, datagrams in sent.items():
                assert drops[cause] == len(datagrams), cause
            after = target.membership.members_with_status()
            # The same members; nobody declared dead or left by a forgery (a
            # loaded machine may make a member briefly suspect, so statuses
            # are compared as "still live", not as "alive").
            assert [n for n, _, _ in after] == [n for n, _, _ in before]
            live = (MemberStatus.ALIVE, MemberStatus.SUSPECT)
            assert all(status in live for _, status, _ in after)
            assert target.membership.member(victim).incarnation < 99  # type: ignore[union-attr]
            assert len(target.nodes()) == 2


async def test_partition_heals_by_itself() -> None:
    with anyio.fail_after(40):
        async with cluster(4) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            left, right = nodes[:2], nodes[2:]
            async with partition(left, right):
                for node in left:
                    await wait_until(
                        lambda n=node: all(  # type: ignore[misc]
                            statuses(n)[r.name] is MemberStatus.DEAD for r in right
                        )
                    )
                for node in right:
                    await wait_until(
                        lambda n=node: all(  # type: ignore[misc]
                            statuses(n)[x.name] is MemberStatus.DEAD for x in left
                        )
                    )
            # Nobody acts: dead members are retried and the sides merge.
            await wait_until(lambda: converged(nodes, everyone))
            for node in nodes:
                await wait_until(lambda n=node: len(n.nodes()) == 3)  # type: ignore[misc]


async def test_a_restarted_node_comes_back_alive_with_a_new_incarnation() -> None:
    with anyio.fail_after(40):
        async with cluster(3) as nodes, anyio.create_task_group() as tg:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            seed = [f"127.0.0.1:{nodes[0].address[1]}"]
            # The one to restart runs in its own task group.
            extra = await start_node(tg, "phoenix@127.0.0.1", cookie=COOKIE, seeds=seed)
            everyone[extra.name] = ALIVE
            await wait_until(lambda: converged(nodes, everyone))
            first_incarnation = nodes[0].membership.member(extra.name).incarnation  # type: ignore[union-attr]
            crash(extra)
            await wait_until(lambda: statuses(nodes[0])[extra.name] is MemberStatus.DEAD)
            async with nodes[0].membership.subscribe() as events:
                again = await start_node(tg, "phoenix@127.0.0.1", cookie=COOKIE, seeds=seed)
                await wait_until(lambda: converged([*nodes, again], everyone))
                event = await events.receive()
                while not isinstance(event, MemberUp):
                    event = await events.receive()
            assert event.name == extra.name
            member = nodes[0].membership.member(extra.name)
            assert member is not None and member.incarnation > first_incarnation
            tg.cancel_scope.cancel()


async def test_metadata_is_gossiped_and_updates_take_precedence() -> None:
    config = td.NodeConfig.local(metadata=b"role=db")
    with anyio.fail_after(15):
        async with cluster(3, config) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            for node in nodes:
                assert all(m.metadata == b"role=db" for m in node.membership.members())
            nodes[1].membership.update_metadata(b"role=cache")
            await wait_until(
                lambda: all(
                    n.membership.member(nodes[1].name).metadata == b"role=cache"  # type: ignore[union-attr]
                    for n in nodes
                )
            )
            with pytest.raises(ValueError, match="512"):
                nodes[1].membership.update_metadata(b"x" * 513)


async def test_join_reports_unreachable_seeds() -> None:
    with anyio.fail_after(10):
        async with cluster(1) as (node,):
            dead_port = 1  # nothing listens there on the test's network
            with pytest.raises(td.ConnectError):
                await node.membership.join([f"127.0.0.1:{dead_port}"])
            with pytest.raises(ValueError, match="host:port"):
                await node.membership.join(["no-port"])
            assert await node.membership.join([]) == 0


async def test_membership_can_be_disabled() -> None:
    config = td.NodeConfig.local(membership=td.MembershipConfig(enabled=False))
    with anyio.fail_after(10):
        async with open_cluster(2, config=config) as (a, b):
            assert a.nodes() == [b.name]
            with pytest.raises(RuntimeError, match="disabled"):
                a.membership.alive()


async def test_malformed_member_streams_are_dropped_and_counted() -> None:
    with anyio.fail_after(15):
        async with cluster(3) as nodes:
            everyone = {node.name: ALIVE for node in nodes}
            await wait_until(lambda: converged(nodes, everyone))
            a, b, _ = nodes
            conn = a.transport.connections[b.name]
            conn.write(a.transport.encode_frame([50, b"\xff\x00not swim"]))
            await wait_until(lambda: b.statistics().drops.get("member_stream_malformed") == 1)
            assert a.name in b.nodes()  # a bad payload costs only itself
            assert statuses(b)[a.name] is ALIVE
            conn.write(a.transport.encode_frame([50, "not bytes"]))
            await wait_until(lambda: a.name not in b.nodes())  # a broken frame: protocol error


async def test_nodes_without_membership_or_election_drop_those_frames() -> None:
    off = td.NodeConfig.local(
        membership=td.MembershipConfig(enabled=False), election=td.ElectionConfig(enabled=False)
    )
    with anyio.fail_after(15):
        async with (
            open_node("on@127.0.0.1", cookie=COOKIE, config=FAST) as on,
            open_node("off@127.0.0.1", cookie=COOKIE, config=off) as plain,
        ):
            await on.connect(f"{plain.name}:{plain.address[1]}")
            # "on" tries to join "off" (push-pull) and may send election traffic.
            await wait_until(lambda: plain.statistics().drops.get("membership_disabled", 0) >= 1)
            conn = on.transport.connections[plain.name]
            conn.write(on.transport.encode_frame([55, b"\x82\x01\x02"]))
            await wait_until(lambda: plain.statistics().drops.get("election_disabled", 0) >= 1)
            assert plain.name in on.nodes() and on.name in plain.nodes()
            assert plain.name not in on.membership.alive()


@pytest.mark.real_network  # the system resolver names the seed's host another way
async def test_a_seed_named_by_another_host_name_is_known_once_it_answered() -> None:
    """A seed given as ``localhost:port`` advertises ``127.0.0.1:port``:
    the node that joined through it must still know the seed is a member
    (a node joined by others keeps trying its seeds until it does)."""
    async with (
        open_node("seed@127.0.0.1", cookie=COOKIE, config=FAST) as seed,
        open_node("b@127.0.0.1", cookie=COOKIE, config=FAST) as b,
    ):
        alias = f"localhost:{seed.address[1]}"
        assert not b.membership.knows_address(alias)
        await b.membership.join([alias])
        with anyio.fail_after(30):  # a guard against hanging, not a bound
            await wait_until(lambda: b.membership.knows_address(alias))
        assert b.membership.knows_address(f"seed@{alias}")
        assert not b.membership.knows_address(f"localhost:{b.address[1]}")  # itself
