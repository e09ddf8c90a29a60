"""A member that holds the cookie sends maps whose keys collide in Python's
hash: the frame is refused without stalling the node's event loop.

Before the codec refused such keys, a 1.8 MB frame of colliding tuple keys
blocked the target's loop for 19.5 s (the cluster declared it dead). The
node must carry on, and the work of refusing such a frame must be of the
order of decoding a benign map of as many keys: compared in CPU time
measured back to back, not against a wall-clock bound a loaded machine
could break.
"""

from __future__ import annotations

import contextlib
import math
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


def cpu_seconds(data: bytes) -> float:
    """The least CPU time of three ``codec.decode(data)`` (refused or not)."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        with contextlib.suppress(td.DecodeError):
            codec.decode(data)
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("shape", [raw_map, keyed_map], ids=["raw_map", "keyed_map"])
async def test_colliding_keys_do_not_stall_the_loop(
    shape: Callable[[list[tuple[int, int]]], bytes],
) -> None:
    attack = shape(colliding_int_pairs(KEYS))
    config = td.NodeConfig.local()
    async with td.open_node("victim@127.0.0.1", cookie=COOKIE, config=config) as node:
        async with node.open_process() as proc:
            head = b"\x83" + codec.encode(int(Kind.SEND)) + codec.encode(proc.pid)
            with anyio.fail_after(120):
                async with hostile_peer(node.address, cookie=COOKIE) as peer:
                    for _ in range(3):
                        await peer.send_raw(frame(head + attack))
                    # The connection stays up and a legitimate frame
                    # behind the bad ones is delivered.
                    await peer.send([Kind.SEND, proc.pid, {1: "after"}])
                    await proc.receive(match=lambda m: m == {1: "after"})
                    with pytest.raises(anyio.WouldBlock):  # nothing else arrived
                        proc.receive_nowait()
                await wait_until(lambda: node.statistics().drops.get("decode_error") == 3)
    # What the node did with each frame, measured alone: refusing the attack
    # costs about what decoding a benign map of as many keys costs (before
    # the fix, inserting the colliding keys took about 8 s, thousands of
    # times more).
    benign = keyed_map([(i, i + 1) for i in range(KEYS)])
    assert cpu_seconds(head + attack) <= 3 * cpu_seconds(head + benign)
