"""Map keys with equal hashes, built the way an attacker would.

CPython hashes an int ``n`` as ``n mod (2**61 - 1)`` with no per-process
key, and a tuple by folding its items' hashes with public constants
(xxHash's), so tuples of ints can be made to share one hash value at will:
fix the first item, and solve for the hash (hence the value) of the second.
Inserting ``n`` such keys into one dict costs ``n**2 / 2`` comparisons.
"""

from __future__ import annotations

import sys

__all__ = ["colliding_floats", "colliding_int_pairs", "colliding_ints"]

_M = 2**64
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P5 = 2870177450012600261
_MODULUS = sys.hash_info.modulus  # 2**61 - 1 on 64-bit builds


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) % _M


def _rotr(x: int, r: int) -> int:
    return ((x >> r) | (x << (64 - r))) % _M


def colliding_int_pairs(n: int, target: int = 0x1234567) -> list[tuple[int, int]]:
    """``n`` distinct 2-tuples of ints (within 64 bits) with one hash value."""
    assert sys.hash_info.width == 64 and sys.version_info >= (3, 8)
    want = _rotr(target * pow(_P1, -1, _M) % _M, 31)
    p2_inverse = pow(_P2, -1, _M)
    out: list[tuple[int, int]] = []
    first = 0
    while len(out) < n:
        acc = _rotl((_P5 + first * _P2) % _M, 31) * _P1 % _M
        lane = (want - acc) * p2_inverse % _M
        if lane < _MODULUS:
            out.append((first, lane))
        elif lane > _M - _MODULUS and lane < _M - 2:  # hash(-1) == hash(-2): avoid
            out.append((first, lane - _M))
        first += 1
    assert len({hash(pair) for pair in out}) == 1
    return out


def colliding_ints(n: int) -> list[int]:
    """Up to 17 distinct ints within CBOR's range that all hash to 0."""
    candidates = [k * _MODULUS for k in range(9)] + [-k * _MODULUS for k in range(1, 9)]
    assert n <= len(candidates)
    return candidates[:n]


def colliding_floats() -> list[float]:
    """Every power-of-two float whose hash is 1 (2.0**(61 * t)): 34 of them."""
    out = [2.0 ** (61 * t) for t in range(-17, 17)]
    assert {hash(x) for x in out} == {1}
    return out
