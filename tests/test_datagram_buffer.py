"""The membership socket's receive buffer, on the kernel's own sockets.

A process whose event loop is busy for a while (many nodes starting at
once on a loaded machine) does not read its datagrams; what the kernel
cannot hold meanwhile it drops, and a lost ack or refutation becomes a
false suspicion. The network asks for ``DATAGRAM_RECEIVE_BUFFER``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import anyio
import pytest

import trio_distribute as td
from trio_distribute._network import (
    DATAGRAM_RECEIVE_BUFFER,
    REAL_NETWORK,
    _ask_receive_buffer,
    datagrams_dropped,
)

pytestmark = pytest.mark.anyio

BURST = 400  # far more than the usual default buffer (about 208 KiB) holds
SIZE = 1200  # a membership datagram stays under 1,400 bytes


def _rmem_max() -> int:
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return 0


needs_room = pytest.mark.skipif(
    _rmem_max() < DATAGRAM_RECEIVE_BUFFER // 2,
    reason="net.core.rmem_max caps every receive buffer below what the burst needs here",
)


@needs_room
async def test_a_burst_sent_while_the_loop_is_busy_is_kept_for_it() -> None:
    endpoint = await REAL_NETWORK.open_datagram("127.0.0.1", 0)
    async with endpoint:
        raw = _raw(endpoint)
        port = raw.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            # Sent while nothing reads: the loop is busy elsewhere.
            for i in range(BURST):
                sender.sendto(i.to_bytes(4, "big") * (SIZE // 4), ("127.0.0.1", port))
        received: list[int] = []
        with anyio.move_on_after(5):
            while len(received) < BURST:
                data, _ = await endpoint.receive()
                received.append(int.from_bytes(data[:4], "big"))
        assert received == list(range(BURST))


async def test_the_buffer_asked_for_is_granted_up_to_the_systems_cap() -> None:
    endpoint = await REAL_NETWORK.open_datagram("127.0.0.1", 0)
    async with endpoint:
        granted = _raw(endpoint).getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # Linux doubles the request for its bookkeeping and caps it at rmem_max.
    cap = _rmem_max() or DATAGRAM_RECEIVE_BUFFER
    assert granted >= min(DATAGRAM_RECEIVE_BUFFER, cap)


def _raw(endpoint: Any) -> Any:
    """The kernel socket (on asyncio, the loop's wrapper of it)."""
    return endpoint.extra(anyio.abc.SocketAttribute.raw_socket)


@pytest.mark.skipif(
    _rmem_max() <= DATAGRAM_RECEIVE_BUFFER,
    reason="net.core.rmem_max is too small here for a buffer larger than the one asked for",
)
def test_a_larger_buffer_is_never_shrunk() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _rmem_max())
        larger = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert larger > DATAGRAM_RECEIVE_BUFFER
        _ask_receive_buffer(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == larger


async def test_what_the_kernel_drops_for_a_full_buffer_is_counted() -> None:
    endpoint = await REAL_NETWORK.open_datagram("127.0.0.1", 0)
    async with endpoint:
        raw = _raw(endpoint)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # room for a few
        assert datagrams_dropped(endpoint) == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(50):
                sender.sendto(b"x" * SIZE, raw.getsockname())
        received = 0
        with anyio.move_on_after(0.5):
            while True:
                await endpoint.receive()
                received += 1
        assert 0 < received < 50
        assert datagrams_dropped(endpoint) == 50 - received


async def test_a_node_reports_the_kernels_drops_among_its_own() -> None:
    async with td.open_node(
        "a@127.0.0.1", cookie="buffer-cookie", config=td.NodeConfig.local()
    ) as node:
        assert "datagram_receive_buffer_full" not in node.statistics().drops
        raw = _raw(node.membership._socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # A busy loop: nothing reads while the datagrams arrive.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(50):
                sender.sendto(b"x" * SIZE, raw.getsockname())
        dropped = node.statistics().drops["datagram_receive_buffer_full"]
        assert 0 < dropped <= 50
        assert dropped == node.membership.datagrams_dropped_by_kernel


def test_a_simulated_endpoint_has_no_kernel_to_drop_anything() -> None:
    assert datagrams_dropped(object()) == 0
