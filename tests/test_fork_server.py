"""The fork server behaves as ``subprocess`` with a fresh interpreter would,
where the tests rely on it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from forked import ForkServer

PY = sys.executable


def test_output_exit_status_and_arguments(fork_server: ForkServer) -> None:
    program = "import sys; print(sys.argv); print('oops', file=sys.stderr); sys.exit(3)"
    result = fork_server.run([PY, "-c", program, "a"], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (3, "['-c', 'a']\n", "oops\n")


def test_each_program_has_its_own_random_state(fork_server: ForkServer) -> None:
    """The server's generators were copied into every child: each must draw
    its own numbers (trio's scheduler too), as separate interpreters do."""
    program = "import random, trio._core._run as r; print(random.random(), r._r.random())"
    draws = [
        fork_server.run([PY, "-c", program], capture_output=True, text=True).stdout
        for _ in range(3)
    ]
    firsts = {line.split()[0] for line in draws}
    schedulers = {line.split()[1] for line in draws}
    assert len(firsts) == 3 and len(schedulers) == 3, draws


def test_a_module_runs_afresh_and_ctrl_c_ends_it_by_sigint(fork_server: ForkServer) -> None:
    version = fork_server.run([PY, "-m", "trio_distribute", "--version"], capture_output=True)
    assert version.returncode == 0 and version.stdout.startswith(b"trio-distribute ")
    assert version.stderr == b""  # no warning about a module run twice
    program = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "print('READY', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = fork_server.popen(
        [PY, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "READY\n"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in stderr


def test_a_timeout_kills_the_program(fork_server: ForkServer) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        fork_server.run([PY, "-c", "import time; time.sleep(60)"], timeout=0.2)


def test_only_python_programs_can_be_forked(fork_server: ForkServer) -> None:
    with pytest.raises(ValueError, match="only"):
        fork_server.popen(["sh", "-c", "true"])
