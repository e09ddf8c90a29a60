"""Network namespaces for the fault suite: one per node plus one for the bridge.

Every namespace is created by this module and removed by it; nothing is
added to the namespace the suite itself runs in, so no traffic can leave
the machine: the bridge joins only the node namespaces' veth peers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import attrs

SUBNET = "10.77.0"
TABLE = "inet tdfaults"


def unavailable() -> str | None:
    """Why the suite cannot run here, or None when it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and nft need root (run as root, e.g. in CI)"
    for tool in ("ip", "nft", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install iproute2 nftables)"
    probe = f"tdf-probe-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "netns", "exec", probe, "nft", "list", "tables"])
    except subprocess.CalledProcessError as exc:
        return f"cannot make a network namespace with nftables here: {exc.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _run(argv: Sequence[str], *, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=True, input=input)
    return result.stdout


def remove_stale(prefix: str = "tdf-") -> None:
    """Delete namespaces left by an earlier run whose orchestrator is gone
    (the pid is part of every name this module makes)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if not name.startswith(prefix) or len(parts) < 3 or not parts[1].isdigit():
            continue
        if not os.path.exists(f"/proc/{parts[1]}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@attrs.define(eq=False, kw_only=True)
class Topology:
    """``n`` node namespaces on one bridge: node ``i`` (1-based) has the
    address ``10.77.0.i`` on its ``eth0`` and an empty nft table whose
    ``input`` and ``output`` chains the faults fill."""

    n: int
    tag: str = attrs.field(factory=lambda: f"tdf-{os.getpid()}")
    created: list[str] = attrs.field(factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.tag}-br"

    def ns(self, i: int) -> str:
        return f"{self.tag}-n{i}"

    @staticmethod
    def addr(i: int) -> str:
        return f"{SUBNET}.{i}"

    def create(self) -> None:
        remove_stale()
        _run(["ip", "netns", "add", self.bridge])
        self.created.append(self.bridge)
        _run(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.bridge, "link", "set", "br0", "up"])
        for i in range(1, self.n + 1):
            ns = self.ns(i)
            _run(["ip", "netns", "add", ns])
            self.created.append(ns)
            # The veth pair is made inside the bridge namespace with its peer
            # moved straight into the node's: nothing touches ours.
            _run(
                [
                    "ip",
                    "-n",
                    self.bridge,
                    "link",
                    "add",
                    f"p{i}",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                ]
            )
            _run(["ip", "-n", self.bridge, "link", "set", f"p{i}", "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            self.nft(
                i,
                f"add table {TABLE}",
                f"add chain {TABLE} input {{ type filter hook input priority 0 ; }}",
                f"add chain {TABLE} output {{ type filter hook output priority 0 ; }}",
            )

    def destroy(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.created.clear()

    def exec_argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside node ``i``'s namespace (``ip netns exec``
        execs it, so the process id is the command's own)."""
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def nft(self, i: int, *commands: str) -> None:
        """Apply nft commands in node ``i``'s namespace, atomically."""
        _run(self.exec_argv(i, ["nft", "-f", "-"]), input="\n".join(commands) + "\n")

    def flush(self, i: int) -> None:
        self.nft(i, f"flush chain {TABLE} input", f"flush chain {TABLE} output")

    def flush_all(self) -> None:
        for i in range(1, self.n + 1):
            self.flush(i)

    def reset_tcp(self, i: int, peer: int) -> str:
        """Destroy node ``i``'s TCP sockets to ``peer`` (``ss -K``): the
        kernel aborts them and sends the peer a reset. Returns what ``ss``
        listed as killed."""
        return _run(self.exec_argv(i, ["ss", "-K", "-t", "-n", "dst", self.addr(peer)]))
