"""Ports for tests that start nodes in other OS processes, which must be
told a port before they bind it."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port the kernel says is free for TCP on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free for TCP and UDP now.

    Chosen below the kernel's ephemeral range: a port inside it can be taken
    at any moment by an outgoing connection of another test (an example's
    restarted member binds its port again seconds later)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        ephemeral_low = 32768
    while True:
        base = random.randrange(10000, ephemeral_low - count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
