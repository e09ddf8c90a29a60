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
