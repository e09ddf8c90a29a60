"""Driving a sliced decode: big frames decoded without holding the loop.

cbor2 decodes a payload in one call that never lets other tasks run, so a
16 MiB frame of small items would hold the node's event loop (ticks,
heartbeats, every other connection) for a second or more. Frames above
:data:`SLICED_ABOVE` bytes are decoded by :func:`trio_distribute.codec.decode_steps`
instead, a slice of at most :data:`SLICE_BYTES` of input at a time, and
this driver lets other tasks run whenever :data:`YIELD_AFTER` seconds of
decoding have passed. See the wire page of the documentation for the
measured effect.
"""

from __future__ import annotations

import time
from typing import Final

from . import codec
from ._backend import checkpoints
from ._proto._sliced import SLICE_BYTES, SLICED_ABOVE

__all__ = ["SLICED_ABOVE", "SLICE_BYTES", "YIELD_AFTER", "decode_sliced"]

YIELD_AFTER: Final = 0.004
"""Seconds of decoding after which a sliced decode lets other tasks run.
(Measured in CPU-bound work, not a timer: ``perf_counter`` is read between
slices only.)"""


async def decode_sliced(
    data: bytes | bytearray,
    *,
    max_depth: int = codec.DEFAULT_MAX_DEPTH,
    slice_bytes: int = SLICE_BYTES,
) -> object:
    """Decode one payload like :func:`trio_distribute.codec.decode`, letting
    other tasks run at least every :data:`YIELD_AFTER` seconds of work.

    A ``bytearray`` is decoded in place (not copied first): the caller hands
    it over and must not change it afterwards.

    ``slice_bytes`` (the input of one cbor2 call) is smaller in tests, to
    walk every path on small payloads.

    Raises:
        DecodeError: as :func:`trio_distribute.codec.decode`.
    """
    checkpoint = checkpoints()[0]
    steps = codec.decode_steps(data, max_depth=max_depth, slice_bytes=slice_bytes)
    since = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        now = time.perf_counter()
        if now - since >= YIELD_AFTER:
            await checkpoint()
            since = time.perf_counter()
