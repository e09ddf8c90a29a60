"""Run example members as OS processes and read what they print (shared by
``swim_cluster.py`` and ``leader_election.py``)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from queue import Empty, Queue

__all__ = ["Child"]


class Child:
    """One member running as an OS process, its output read by a thread."""

    def __init__(
        self, script: str, short: str, port: int, seed_port: int | None, *extra: str
    ) -> None:
        command = [sys.executable, script, "node", short, str(port)]
        command.append(str(seed_port or 0))
        command.extend(extra)
        self.short = short
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.lines: Queue[str] = Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, predicate: str, timeout: float = 20.0) -> str:
        """The first line (from now) containing ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=deadline - time.monotonic())
            except Empty:
                break
            self.seen.append(line)
            if predicate in line:
                return line
        raise TimeoutError(f"{self.short} did not print {predicate!r} within {timeout}s")

    def wait_table(self, expected: dict[str, str], timeout: float = 20.0) -> str:
        """Wait for a MEMBERS line where each named member has that status."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.wait_for("MEMBERS", max(0.01, deadline - time.monotonic()))
            table = dict(entry.split("=") for entry in line.split()[1:])
            if all(table.get(name, "").startswith(status) for name, status in expected.items()):
                return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def latest(self, prefix: str, previous: str | None = None, timeout: float = 0.1) -> str | None:
        """The last line starting with ``prefix`` printed so far (waiting up
        to ``timeout`` for more output), or ``previous`` if none came."""
        deadline = time.monotonic() + timeout
        found = previous
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                return found
            self.seen.append(line)
            if line.startswith(prefix):
                found = line
