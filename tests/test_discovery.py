"""Discovery strategies: DNS (through a resolver the test controls), SRV
(through a DNS server the test runs on loopback), files and user strategies."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from virtual import anyio_backend, fake_network, open_node

import trio_distribute as td
from trio_distribute import discovery
from trio_distribute.config import ElectionConfig
from trio_distribute.discovery import (
    DEFAULT_MAX_ADDRESSES,
    LOG_INTERVAL,
    Discovery,
    DnsDiscovery,
    DnsSrvDiscovery,
    FileDiscovery,
    build_query,
    parse_seed,
    parse_srv_answer,
    query_srv,
)
from trio_distribute.telemetry import DiscoveryFailed
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "discovery-cookie"
CONFIG = td.NodeConfig.local(election=ElectionConfig.local(bootstrap_expect=3))


def test_seed_strings_become_strategies() -> None:
    assert parse_seed("dns:nodes.svc:4370") == DnsDiscovery("nodes.svc", 4370)
    assert parse_seed("dns-srv:_td._tcp.example") == DnsSrvDiscovery("_td._tcp.example")
    assert parse_seed("file:/etc/td/seeds") == FileDiscovery(Path("/etc/td/seeds"))
    # Plain addresses stay addresses, even for hosts called "dns" or "file".
    for plain in ("10.0.0.1:4370", "a@10.0.0.1:4370", "dns:4370", "file:4370"):
        assert parse_seed(plain) == plain
    strategy = DnsDiscovery("x", 1)
    assert parse_seed(strategy) is strategy
    with pytest.raises(ValueError, match="dns:NAME:PORT"):
        parse_seed("dns:nodes.svc")
    with pytest.raises(ValueError, match="a seed is"):
        parse_seed(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        DnsDiscovery("x", 1, interval=0)
    with pytest.raises(ValueError, match="at least 1"):
        FileDiscovery("f", max_addresses=0)
    assert DnsDiscovery("x", 1).interval == 5.0
    assert FileDiscovery("f").interval == 1.0
    assert DnsDiscovery("x", 1).max_addresses == DEFAULT_MAX_ADDRESSES == 256


class Resolver:
    """``anyio.getaddrinfo`` for names the test decides, failing on demand."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.failing = False
        self.lookups = 0

    async def getaddrinfo(self, host: str, port: int, **kwargs: Any) -> list[Any]:
        self.lookups += 1
        await anyio.lowlevel.checkpoint()
        if self.failing or host not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in self.records[host]
        ]


@asynccontextmanager
async def nodes_on(
    stack: AsyncExitStack, hosts: list[str], port: int, seeds: list[Any]
) -> AsyncIterator[list[td.Node]]:
    nodes = [
        await stack.enter_async_context(
            open_node(f"n{i}@{host}", cookie=COOKIE, port=port, config=CONFIG, seeds=seeds)
        )
        for i, host in enumerate(hosts)
    ]
    yield nodes


def _free_port(hosts: list[str]) -> int:
    # One port free on every host (TCP and UDP), as a Kubernetes pod has.
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as sock:
                        sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


async def test_dns_discovery_joins_every_address_and_later_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = Resolver()
    monkeypatch.setattr(anyio, "getaddrinfo", resolver.getaddrinfo)
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = _free_port(hosts)
    resolver.records["nodes.test"] = hosts[:3]
    strategy = DnsDiscovery("nodes.test", port, interval=0.05)
    events: list[object] = []
    with anyio.fail_after(30):
        async with AsyncExitStack() as stack:
            async with nodes_on(stack, hosts[:3], port, [strategy]) as nodes:
                nodes[0].telemetry.add_sink(events.append)
                for node in nodes:
                    await wait_until(lambda n=node: len(n.nodes()) == 2)  # type: ignore[misc]
                # The resolver fails for a while: logged and retried, not fatal.
                resolver.failing = True
                await wait_until(lambda: any(isinstance(e, DiscoveryFailed) for e in events))
                resolver.failing = False
                # A node that appears later is found by everyone.
                resolver.records["nodes.test"] = hosts
                late = await stack.enter_async_context(
                    open_node(
                        f"n3@{hosts[3]}", cookie=COOKIE, port=port, config=CONFIG, seeds=[strategy]
                    )
                )
                for node in [*nodes, late]:
                    await wait_until(lambda n=node: len(n.nodes()) == 3)  # type: ignore[misc]
                everyone = [*nodes, late]
                assert sum(n.telemetry.counts.get("DiscoveryJoined", 0) for n in everyone) >= 2
                leader = await nodes[0].election.wait_for_leader(timeout=20)
                assert leader.name in {n.name for n in [*nodes, late]}
                # Known nodes are not dialled again at every poll.
                drops = nodes[0].statistics().drops
                assert drops.get("handshake_failed", 0) <= 2


async def test_a_dns_name_through_the_seed_string(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver()
    monkeypatch.setattr(anyio, "getaddrinfo", resolver.getaddrinfo)
    hosts = ["127.0.0.1", "127.0.0.2"]
    port = _free_port(hosts)
    resolver.records["pair.test"] = hosts
    with anyio.fail_after(30):
        async with AsyncExitStack() as stack:
            async with nodes_on(stack, hosts, port, [f"dns:pair.test:{port}"]) as nodes:
                for node in nodes:
                    await wait_until(lambda n=node: len(n.nodes()) == 1)  # type: ignore[misc]
    assert resolver.lookups >= 2


async def test_file_discovery_rereads_the_file_when_it_changes(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    strategy = FileDiscovery(seeds, interval=0.05)
    events: list[object] = []
    with anyio.fail_after(30):
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                open_node("a@127.0.0.1", cookie=COOKIE, config=CONFIG, seeds=[strategy])
            )
            a.telemetry.add_sink(events.append)
            # No file yet: a failure, retried.
            await wait_until(lambda: any(isinstance(e, DiscoveryFailed) for e in events))
            b = await stack.enter_async_context(
                open_node("b@127.0.0.1", cookie=COOKIE, config=CONFIG)
            )
            c = await stack.enter_async_context(
                open_node("c@127.0.0.1", cookie=COOKIE, config=CONFIG)
            )
            seeds.write_text(
                f"# the cluster\n\n127.0.0.1:{a.address[1]}\n127.0.0.1:{b.address[1]}\n"
            )
            await wait_until(lambda: b.name in a.nodes())
            assert c.name not in a.nodes()
            with seeds.open("a") as file:
                file.write(f"127.0.0.1:{c.address[1]}\n")
            await wait_until(lambda: c.name in a.nodes())


async def test_addresses_beyond_max_addresses_are_counted() -> None:
    @attrs.frozen
    class Many:
        interval: float = 0.05
        max_addresses: int = 2

        async def addresses(self) -> Collection[str]:
            return [f"127.0.0.1:{port}" for port in (1, 2, 3, 4, 5)]

    assert isinstance(Many(), Discovery)
    async with open_node("a@127.0.0.1", cookie=COOKIE, config=CONFIG, seeds=[Many()]) as a:
        with anyio.fail_after(20):
            await wait_until(
                lambda: a.statistics().drops.get("discovery_addresses_ignored", 0) >= 6
            )
        # Each poll ignores the three addresses beyond the cap.
        assert a.statistics().drops["discovery_addresses_ignored"] % 3 == 0


async def test_a_strategy_that_raises_does_not_end_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @attrs.frozen
    class Broken:
        interval: float = 0.02
        max_addresses: int = 8

        async def addresses(self) -> Collection[str]:
            raise RuntimeError("cloud API down")

    events: list[object] = []
    async with open_node("a@127.0.0.1", cookie=COOKIE, config=CONFIG, seeds=[Broken()]) as a:
        a.telemetry.add_sink(events.append)
        with anyio.fail_after(20):
            await wait_until(lambda: sum(isinstance(e, DiscoveryFailed) for e in events) >= 3)
        failed = next(e for e in events if isinstance(e, DiscoveryFailed))
        assert failed.error == "RuntimeError: cloud API down"
    # Logged once per LOG_INTERVAL (10 s), however often it fails.
    lines = [r for r in caplog.records if r.name == "trio_distribute.discovery"]
    assert len(lines) == 1
    assert LOG_INTERVAL == 10.0


async def test_a_seed_file_is_read_up_to_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "MAX_FILE_BYTES", 32)
    seeds = tmp_path / "seeds"
    seeds.write_text("10.0.0.1:4370\n10.0.0.2:4370\n10.0.0.3:4370\n")  # 42 bytes
    assert await FileDiscovery(seeds).addresses() == ["10.0.0.1:4370", "10.0.0.2:4370", "10.0"]
    monkeypatch.undo()
    assert discovery.MAX_FILE_BYTES == 1 << 20


@pytest.mark.real_network  # a real UDP socket (DNS)
async def test_an_srv_query_nobody_answers_times_out() -> None:
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as silent:
        port = silent.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.fail_after(10), pytest.raises(TimeoutError):
            await query_srv("_td._tcp.example", "127.0.0.1", port, timeout=0.2)
    assert DnsSrvDiscovery("x").timeout == 2.0


# ------------------------------------------------------------------ SRV


def _name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def srv_answer(query: bytes, records: list[tuple[int, str]]) -> bytes:
    """An answer to ``query`` with one SRV record per ``(port, target)``."""
    (query_id,) = struct.unpack_from("!H", query)
    question = query[12:]
    answers = b""
    for port, target in records:
        data = struct.pack("!HHH", 10, 5, port) + _name(target)
        # The owner name is a compression pointer to the question (offset 12).
        answers += b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 30, len(data)) + data
    header = struct.pack("!HHHHHH", query_id, 0x8180, 1, len(records), 0, 0)
    return header + question + answers


def test_the_srv_answer_parser() -> None:
    query = build_query(7, "_td._tcp.example")
    assert query[12:] == _name("_td._tcp.example") + struct.pack("!HH", 33, 1)
    answer = srv_answer(query, [(4370, "a.example"), (4371, "b.example")])
    assert parse_srv_answer(answer, 7) == [(10, 5, 4370, "a.example"), (10, 5, 4371, "b.example")]
    with pytest.raises(ValueError, match="not the answer"):
        parse_srv_answer(answer, 8)
    with pytest.raises(ValueError, match="malformed"):
        parse_srv_answer(answer[:-3], 7)
    nxdomain = bytearray(answer)
    nxdomain[3] = (nxdomain[3] & 0xF0) | 3
    assert parse_srv_answer(bytes(nxdomain), 7) == []


@pytest.mark.real_network  # a DNS server on a real UDP socket
async def test_srv_discovery_through_a_dns_server_on_loopback() -> None:
    ports: list[int] = []
    async with anyio.create_task_group() as tg:
        server = await anyio.create_udp_socket(local_host="127.0.0.1")
        dns_port = server.extra(anyio.abc.SocketAttribute.local_port)

        async def serve() -> None:
            async with server:
                async for query, client in server:
                    await server.sendto(
                        srv_answer(query, [(p, "localhost") for p in ports]), *client
                    )

        tg.start_soon(serve)
        strategy = DnsSrvDiscovery(
            "_td._tcp.cluster.test", nameserver=f"127.0.0.1:{dns_port}", interval=0.05
        )
        with anyio.fail_after(30):
            async with AsyncExitStack() as stack:
                nodes = [
                    await stack.enter_async_context(
                        open_node(f"{n}@127.0.0.1", cookie=COOKIE, config=CONFIG, seeds=[strategy])
                    )
                    for n in "abc"
                ]
                ports.extend(node.address[1] for node in nodes)
                for node in nodes:
                    await wait_until(lambda n=node: len(n.nodes()) == 2)  # type: ignore[misc]
        tg.cancel_scope.cancel()
