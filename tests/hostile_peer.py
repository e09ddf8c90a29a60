"""A member that holds the cookie and misbehaves: the attacker for hostile-peer tests.

It completes the real handshake (the same sans-IO machine a node uses), then
speaks raw frames: whatever a buggy or compromised node could send. It does
not read unless asked to, so it can also play a peer that never reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from trio_distribute import codec
from trio_distribute._network import NodeNetwork
from trio_distribute._proto.frames import FrameDecoder, frame
from trio_distribute._proto.handshake import HandshakeCompleted, HandshakeMachine, Role
from trio_distribute.transport import PROTOCOL_VERSIONS

__all__ = ["HostilePeer", "hostile_peer"]


class HostilePeer:
    """An authenticated raw connection to one node."""

    def __init__(
        self, stream: anyio.abc.ByteStream, done: HandshakeCompleted, leftover: bytes
    ) -> None:
        self.stream = stream
        self.done = done
        self.name = done.name  # the node we attacked
        self._decoder = FrameDecoder(64 * 1024 * 1024)
        self._pending = leftover
        self._payloads: list[bytes] = []  # decoded from one read, not yet returned

    async def send(self, item: list[Any]) -> None:
        """Encode ``item`` with the project's codec and send it as one frame."""
        await self.stream.send(frame(codec.encode(item)))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (a hand-built or partial frame)."""
        await self.stream.send(data)

    async def receive(self) -> object:
        """The next decoded frame from the node (ticks skipped)."""
        while not self._payloads:
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                data = await self.stream.receive()
            self._payloads = self._decoder.feed(data)
        return codec.decode(self._payloads.pop(0))

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)


@asynccontextmanager
async def hostile_peer(
    address: tuple[str, int],
    *,
    name: str = "mallory@127.0.0.1",
    cookie: str = "trio-distribute-test",
    creation: int = 7,
    network: NodeNetwork | None = None,
) -> AsyncIterator[HostilePeer]:
    """Connect to ``address`` and authenticate as ``name`` with ``cookie``;
    through ``network`` (a ``FakeNetwork`` host) if given, else over TCP."""
    if network is None:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(address[0], address[1])
    else:
        stream = await network.dial(address[0], address[1], local_host=name.partition("@")[2])
    try:
        machine = HandshakeMachine(
            role=Role.INITIATOR,
            local_name=name,
            creation=creation,
            cookie=cookie.encode(),
            versions=PROTOCOL_VERSIONS,
        )
        machine.initiate()
        done: HandshakeCompleted | None = None
        while done is None:
            await stream.send(machine.data_to_send())
            for event in machine.receive_data(await stream.receive()):
                if isinstance(event, HandshakeCompleted):
                    done = event
                    break
                raise AssertionError(f"handshake failed: {event}")
        if pending := machine.data_to_send():
            await stream.send(pending)
        peer = HostilePeer(stream, done, machine.leftover())
        yield peer
    finally:
        await anyio.aclose_forcefully(stream)
