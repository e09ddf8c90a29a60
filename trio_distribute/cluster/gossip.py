"""The membership's datagram channel: UDP on the node's port, every
datagram authenticated.

A datagram is the SWIM payload followed by a 32-byte HMAC-SHA256 tag under
the datagram key, which is derived from the cookie with scrypt (see
:mod:`trio_distribute._cookie`), so one captured datagram does not let an
observer test cookie guesses at the speed of SHA-256. Datagrams without a valid tag,
and any that are too short, are dropped and counted before the protocol
core sees a byte. The tag proves the sender knows the cookie; it does not
stop a replay of an old datagram, whose effect the protocol's incarnation
rules bound (an old alive or suspect message is outdated by the time it is
replayed, unless nothing changed since).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from .._cookie import cookie_keys

__all__ = ["MAX_DATAGRAM", "TAG_SIZE", "DatagramSealer"]

#: The UDP budget: every datagram we send fits (memberlist's 1400 bytes).
MAX_DATAGRAM: Final = 1400
TAG_SIZE: Final = 32


class DatagramSealer:
    """Adds and checks the authentication tag of membership datagrams."""

    __slots__ = ("_key",)

    def __init__(self, cookie: bytes) -> None:
        self._key = cookie_keys(cookie).datagram

    def seal(self, payload: bytes) -> bytes:
        """``payload`` followed by its tag."""
        return payload + hmac.new(self._key, payload, hashlib.sha256).digest()

    def open(self, datagram: bytes) -> bytes | None:
        """The payload of an authentic datagram, or ``None``."""
        if len(datagram) <= TAG_SIZE or len(datagram) > MAX_DATAGRAM:
            return None
        payload, tag = datagram[:-TAG_SIZE], datagram[-TAG_SIZE:]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        return payload if hmac.compare_digest(tag, expected) else None
