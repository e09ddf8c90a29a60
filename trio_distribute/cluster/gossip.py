"""The membership's datagram channel: UDP on the node's port, every
datagram authenticated.

A datagram is the SWIM payload followed by a 32-byte HMAC-SHA256 tag keyed
from the cookie (with a label, so the key is not the cookie itself and
differs from anything else derived from it). Datagrams without a valid tag,
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

__all__ = ["MAX_DATAGRAM", "TAG_SIZE", "DatagramSealer"]

#: The UDP budget: every datagram we send fits (memberlist's 1400 bytes).
MAX_DATAGRAM: Final = 1400
TAG_SIZE: Final = 32
_LABEL: Final = b"trio_distribute membership datagram v1"


class DatagramSealer:
    """Adds and checks the authentication tag of membership datagrams."""

    __slots__ = ("_key",)

    def __init__(self, cookie: bytes) -> None:
        self._key = hmac.new(cookie, _LABEL, hashlib.sha256).digest()

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
