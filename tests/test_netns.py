"""Verification rung 5: faults made by the kernel in a private network
namespace (``unshare -n``; ``nft`` drops packets between two sides, then
10 % of UDP). Skipped, with the reason, where that is not permitted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parent / "netns_partition.py"
FAULTS = Path(__file__).resolve().parent / "netns_faults.py"


def _unavailable() -> str | None:
    for tool in ("unshare", "nft", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install util-linux nftables iproute2)"
    probe = subprocess.run(
        ["unshare", "-n", "nft", "list", "tables"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"no private network namespace with nftables here: {probe.stderr.strip()}"
    return None


def test_kernel_partition_heal_and_udp_loss() -> None:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(SCENARIO.parent.parent)}
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(SCENARIO)],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL CHECKS PASSED" in result.stdout
    for check in [
        "each side declares the other dead: ok",
        "the majority side has a leader: ok",
        "the minority side has none: ok",
        "healed: one leader: ok",
        "no false deaths",
    ]:
        assert check in result.stdout, check


def test_refused_sends_never_end_a_node_and_every_node_leaves_in_time() -> None:
    """``nft`` output rules make n1's own ``sendto`` fail (EPERM) and reject
    its TCP: n1 keeps running, the mesh comes back when the rules go, and
    each node leaves its block within the shutdown bound."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(FAULTS.parent.parent)}
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(FAULTS)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL CHECKS PASSED" in result.stdout
    for check in [
        "n1's refused sends are counted: ok",
        "n1 still runs (None): ok",
        "healed: full mesh again: ok",
    ]:
        assert check in result.stdout, check
