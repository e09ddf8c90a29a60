"""A member that holds the cookie sends maps whose keys collide in Python's
hash: the frame is refused without stalling the node's event loop.

Before the codec refused such keys, a 1.8 MB frame of colliding tuple keys
blocked the target's loop for 19.5 s (the cluster declared it dead). The
loop-lag probe below measures the longest gap between two wake-ups of a task
that sleeps 1 ms, while the frames arrive and are handled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import cbor2
import pytest
from hash_collisions import colliding_int_pairs
from hostile_peer import hostile_peer

import trio_distribute as td
from trio_distribute import codec
from trio_distribute._proto.frames import frame
from trio_distribute._proto.kinds import Kind
from trio_distribute.testing import wait_until

COOKIE = "trio-distribute-test"
KEYS = 20_000  # about 290 kB of keys: an 8 s stall before the fix on this machine


def raw_map(pairs: list[tuple[int, int]]) -> bytes:
    """A plain CBOR map with array keys (cbor2 would insert them as tuples)."""
    head = b"\xba" + len(pairs).to_bytes(4, "big")
    return head + b"".join(cbor2.dumps(list(pair)) + b"\x00" for pair in pairs)


def keyed_map(pairs: list[tuple[int, int]]) -> bytes:
    """The same keys in the keyed-map tag, each frozen (decodes as a tuple)."""
    flat: list[object] = []
    for pair in pairs:
        flat += [cbor2.CBORTag(codec.FROZEN_TAG, list(pair)), 0]
    return cbor2.dumps(cbor2.CBORTag(codec.KEYED_MAP_TAG, flat))


class LagProbe:
    """The longest time the event loop took to wake a task sleeping 1 ms."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await anyio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - start - 0.001)


@pytest.mark.parametrize("shape", [raw_map, keyed_map], ids=["raw_map", "keyed_map"])
async def test_colliding_keys_do_not_stall_the_loop(
    shape: Callable[[list[tuple[int, int]]], bytes],
) -> None:
    attack = shape(colliding_int_pairs(KEYS))
    config = td.NodeConfig.local()
    async with td.open_node("victim@127.0.0.1", cookie=COOKIE, config=config) as node:
        async with node.open_process() as proc:
            head = b"\x83" + codec.encode(int(Kind.SEND)) + codec.encode(proc.pid)
            probe = LagProbe()
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe.run)
                with anyio.fail_after(120):
                    async with hostile_peer(node.address, cookie=COOKIE) as peer:
                        for _ in range(3):
                            await peer.send_raw(frame(head + attack))
                        # The connection stays up and a legitimate frame
                        # behind the bad ones is delivered.
                        await peer.send([Kind.SEND, proc.pid, {1: "after"}])
                        await proc.receive(match=lambda m: m == {1: "after"})
                        # Generous for a loaded machine; before the fix each
                        # frame stalled the loop for about 8 s.
                        assert probe.worst < 1.0, f"the loop stalled for {probe.worst:.3f} s"
                        with pytest.raises(anyio.WouldBlock):  # nothing else arrived
                            proc.receive_nowait()
                    await wait_until(lambda: node.statistics().drops.get("decode_error") == 3)
                tg.cancel_scope.cancel()
