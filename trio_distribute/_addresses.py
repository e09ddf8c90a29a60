"""Addresses as users and peers write them, parsed in one place.

``"name@host:port"`` (a node to connect to), ``"host:port"`` (a member's
or seed's address) and their parts. Every module that reads an address
from a user, a peer or a file uses these, so all of them accept and refuse
the same text.
"""

from __future__ import annotations

from ._ids import validate_node_name

__all__ = ["parse_target", "split_address", "split_host_port"]


def parse_target(target: str) -> tuple[str | None, str | None, int | None]:
    """Split ``"name@host:port"``, ``"host:port"`` or ``"name@host"``.

    Returns ``(name, host, port)`` with ``None`` for the parts not given.

    Raises:
        ValueError: the target has none of these forms.
    """
    if not isinstance(target, str) or not target:
        raise ValueError(f"connect target must be a non-empty str, got {target!r}")
    name: str | None = None
    rest = target
    if "@" in target:
        short, _, hostport = target.partition("@")
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            return validate_node_name(target), None, None
        name = validate_node_name(f"{short}@{host}")
        rest = hostport
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(
            f"connect target {target!r} must be 'name@host:port', 'host:port' or a known node name"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"connect target {target!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"connect target {target!r}: port {port} is out of range")
    return name, host, port


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; ``ValueError`` if malformed.

    An IPv6 host may be bracketed (``"[::1]:4369"``); the brackets go.
    """
    parsed = split_host_port(address)
    if parsed is None:
        raise ValueError(f"a member address is 'host:port', got {address!r}")
    return parsed


def split_host_port(text: str) -> tuple[str, int] | None:
    """``"host:port"`` -> ``(host, port)`` with a port in 1..65535, else ``None``."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host.strip("[]"), int(port_text)
