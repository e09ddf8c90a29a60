"""Membership's datagrams on the real network: on trio a send to an IP
address reaches the kernel without a scheduling round (an idle node's
sends were a fifth of its task steps), and everything else behaves as
anyio's UDP socket does."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
import trio
import trio.testing

from trio_distribute._network import REAL_NETWORK, QuickSendDatagram


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_a_datagram_to_an_address_is_sent_without_a_scheduling_round() -> None:
    sender = await REAL_NETWORK.open_datagram("127.0.0.1", 0)
    assert isinstance(sender, QuickSendDatagram)
    async with sender, await anyio.create_udp_socket(local_host="127.0.0.1") as receiver:
        port = receiver.extra(anyio.abc.SocketAttribute.local_port)
        with trio.testing.assert_no_checkpoints():
            await sender.sendto(b"quick", "127.0.0.1", port)
        with anyio.fail_after(10):
            data, _ = await receiver.receive()
        assert data == b"quick"
        # A host name may need the resolver: anyio's send (a checkpoint).
        with trio.testing.assert_checkpoints():
            await sender.sendto(b"by name", "localhost", port)
        with anyio.fail_after(10):
            data, _ = await receiver.receive()
        assert data == b"by name"
    # Closed: the error anyio raises, which membership takes as "stopping".
    with pytest.raises(anyio.ClosedResourceError):
        await sender.sendto(b"late", "127.0.0.1", port)
