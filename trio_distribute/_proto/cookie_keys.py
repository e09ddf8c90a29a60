"""The keys derived from the cookie (the pure part of the cookie's job).

The cookie never keys an HMAC itself: it is stretched with scrypt
(memory-hard: 16 MiB and tens of milliseconds per guess) into one master
key, and the handshake key and the membership datagram key are derived from
that (HMAC-SHA256 of a label each, so the two never coincide). The salt is
fixed: every node must derive the same keys without talking first.

Fresh cookies and weak-cookie warnings live in :mod:`trio_distribute._cookie`,
which re-exports these names.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Final

import attrs

__all__ = ["SCRYPT_N", "SCRYPT_P", "SCRYPT_R", "CookieKeys", "cookie_keys"]

#: scrypt cost parameters: N=2**14, r=8 uses 128 * r * N = 16 MiB per
#: derivation (the memory an attacker needs per parallel guess).
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SALT: Final = b"trio_distribute cookie v2"
_HANDSHAKE_LABEL: Final = b"trio_distribute handshake key v2"
_DATAGRAM_LABEL: Final = b"trio_distribute membership datagram key v2"


@attrs.frozen(repr=False)
class CookieKeys:
    """The keys a node uses, derived from its cookie."""

    handshake: bytes
    """Keys the handshake's HMAC proofs."""
    datagram: bytes
    """Keys the HMAC tag of every membership datagram."""

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return "CookieKeys(...)"


# Derived once per cookie per process. The keys are a pure function of the
# cookie, which the process holds anyway, so keeping them adds no exposure;
# and a process that starts many nodes (tests, a simulator, examples) pays
# scrypt's cost once instead of once per node and per connection. Bounded,
# so a process cycling through cookies keeps a few entries only.
@functools.lru_cache(maxsize=32)
def cookie_keys(cookie: bytes) -> CookieKeys:
    """Derive the handshake and datagram keys from ``cookie`` (cached)."""
    master = hashlib.scrypt(cookie, salt=_SALT, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return CookieKeys(
        handshake=hmac.new(master, _HANDSHAKE_LABEL, hashlib.sha256).digest(),
        datagram=hmac.new(master, _DATAGRAM_LABEL, hashlib.sha256).digest(),
    )
