"""The keys derived from the cookie, fresh cookies, and weak-cookie warnings.

The cookie never keys an HMAC itself. At start a node stretches it with
scrypt (memory-hard: 16 MiB and tens of milliseconds per guess) into one
master key, and derives from that the handshake key and the membership
datagram key (HMAC-SHA256 of a label each, so the two never coincide). An
observer who captured a handshake or a single membership datagram can
test cookie guesses offline; with scrypt in front, each guess costs that
much memory and time instead of two SHA-256 blocks.

The salt is fixed (every node must derive the same keys without talking
first), so the stretching is what protects a weak cookie: use
``python -m trio_distribute cookie`` for 256 bits of randomness.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter
from typing import Final, Literal

from ._proto.cookie_keys import SCRYPT_N, SCRYPT_P, SCRYPT_R, CookieKeys, cookie_keys

__all__ = [
    "MIN_COOKIE_BITS",
    "MIN_COOKIE_BYTES",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "CookieKeys",
    "check_cookie_strength",
    "cookie_keys",
    "cookie_weakness",
    "generate_cookie",
]

logger = logging.getLogger("trio_distribute.node")

#: A cookie shorter than this many bytes logs a warning at start.
MIN_COOKIE_BYTES: Final = 16
#: A cookie whose estimated entropy is below this logs a warning at start.
MIN_COOKIE_BITS: Final = 64


def generate_cookie(form: Literal["hex", "urlsafe"] = "hex") -> str:
    """A fresh cookie of 256 random bits: 64 hex digits, or 43 URL-safe
    base64 characters."""
    if form == "hex":
        return secrets.token_hex(32)
    if form == "urlsafe":
        return secrets.token_urlsafe(32)
    raise ValueError(f"form must be 'hex' or 'urlsafe', got {form!r}")


def estimated_bits(cookie: bytes) -> float:
    """A rough upper estimate of the cookie's entropy: its length times the
    Shannon entropy of its byte frequencies. Exact for nothing, but it
    tells a word or a repeated pattern from random characters (64 random
    hex digits score about 240 bits, ``b"secret"`` about 14)."""
    if not cookie:
        return 0.0
    total = len(cookie)
    per_byte = sum(n / total * math.log2(total / n) for n in Counter(cookie).values())
    return per_byte * total


def cookie_weakness(cookie: bytes) -> str | None:
    """Why ``cookie`` is easy to guess, or ``None`` if it looks random enough."""
    if len(cookie) < MIN_COOKIE_BYTES:
        return f"it is {len(cookie)} bytes long (use at least {MIN_COOKIE_BYTES})"
    bits = estimated_bits(cookie)
    if bits < MIN_COOKIE_BITS:
        return f"its estimated entropy is {bits:.0f} bits (use at least {MIN_COOKIE_BITS})"
    return None


def check_cookie_strength(cookie: bytes, node_name: str) -> None:
    """Log a warning when ``cookie`` is weak (called once per node start)."""
    reason = cookie_weakness(cookie)
    if reason is not None:
        logger.warning(
            "%s: the cookie is weak, %s: anyone who captures one membership "
            "datagram or handshake can guess it offline; generate one with "
            "`python -m trio_distribute cookie`",
            node_name,
            reason,
        )
