"""What the namespace scenarios share: nft rules and waiting on replicas.

Imported by the scripts ``tests/test_netns.py`` runs inside ``unshare -n``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import trio


def nft(*commands: str) -> None:
    for command in commands:
        subprocess.run(["nft", *command.split()], check=True)


async def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    with trio.move_on_after(timeout):
        # Replicas change on datagrams and frames: no event to wait on.
        while not condition():
            await trio.sleep(0.05)
        return True
    return False
