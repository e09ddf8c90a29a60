"""Programs started by tests/fork_server.py, used like ``subprocess``.

:class:`ForkServer` starts the server and forks programs through it;
:class:`ForkedProcess` offers the part of :class:`subprocess.Popen` the
tests use (pipes, ``communicate``, ``wait``, signals) and :meth:`ForkServer.run`
the part of :func:`subprocess.run`. ``argv`` is a whole command line whose
first item is ``sys.executable``, as for ``subprocess``; only Python
programs can be forked (anything else is an error).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from fork_server import MAX_REQUEST

ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(__file__).with_name("fork_server.py")

#: Seconds the server gets to import its modules and answer a request.
START_TIMEOUT = 60.0

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


class ForkServer:
    """One tests/fork_server.py process and the programs it started."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        theirs.close()
        self._socket = ours
        self._send_lock = threading.Lock()
        self._started: queue.Queue[int | None] = queue.Queue()
        self._ended: dict[int, int] = {}
        self._changed = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self._socket.recv(MAX_REQUEST)
            except OSError:
                message = b""
            if not message:
                break
            reply = json.loads(message)
            if "status" in reply:
                with self._changed:
                    self._ended[reply["pid"]] = reply["status"]
                    self._changed.notify_all()
            else:
                self._started.put(reply["pid"])
        self._started.put(None)
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def popen(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ForkedProcess:
        """Start ``argv`` (``[sys.executable, ...]``) in a forked process."""
        args = [os.fspath(arg) for arg in argv]
        if not args or args[0] != sys.executable or len(args) < 2:
            raise ValueError(f"only `{sys.executable} ...` command lines can be forked: {args}")
        ours: list[IO[Any] | None] = [None, None, None]
        theirs: list[int] = []
        to_close: list[int] = []
        for index, spec in enumerate((stdin, stdout, stderr)):
            if spec == PIPE:
                read_end, write_end = os.pipe()
                mine, child = (write_end, read_end) if index == 0 else (read_end, write_end)
                mode = ("w" if index == 0 else "r") + ("" if text else "b")
                ours[index] = open(mine, mode)  # noqa: SIM115 (closed by its owner)
                theirs.append(child)
                to_close.append(child)
            elif spec == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                theirs.append(fd)
                to_close.append(fd)
            elif spec == STDOUT and index == 2:
                theirs.append(theirs[1])
            elif spec is None:
                theirs.append(index)
            elif isinstance(spec, int):
                theirs.append(spec)
            else:
                theirs.append(spec.fileno())
        request = {"argv": args[1:], "cwd": None if cwd is None else os.fspath(cwd)}
        request["env"] = None if env is None else dict(env)  # type: ignore[assignment]
        try:
            with self._send_lock:
                socket.send_fds(self._socket, [json.dumps(request).encode()], theirs)
                pid = self._started.get(timeout=START_TIMEOUT)
        finally:
            for fd in to_close:
                os.close(fd)
        if pid is None:
            raise RuntimeError(f"the fork server ended: {self.process.poll()}")
        return ForkedProcess(self, args, pid, *ours)

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        capture_output: bool = False,
        text: bool = False,
        timeout: float | None = None,
        input: str | bytes | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[Any]:
        """As :func:`subprocess.run` (killed, then TimeoutExpired, on a timeout)."""
        output = PIPE if capture_output else None
        process = self.popen(
            argv,
            stdin=PIPE if input is not None else None,
            stdout=output,
            stderr=output,
            text=text,
            cwd=cwd,
            env=env,
        )
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(process.args, process.wait(), stdout, stderr)

    def status(self, pid: int, timeout: float | None) -> int | None:
        """The exit status of ``pid``, waiting up to ``timeout`` (None: forever)."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._ended or self._closed, timeout)
            return self._ended.get(pid)

    def close(self) -> None:
        """End the server (and with it any program still running)."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self.process.wait(timeout=START_TIMEOUT)
        self._reader.join(timeout=START_TIMEOUT)
        self._socket.close()


class ForkedProcess:
    """A program started by a :class:`ForkServer`: what ``Popen`` offers."""

    def __init__(
        self,
        server: ForkServer,
        args: list[str],
        pid: int,
        stdin: IO[Any] | None,
        stdout: IO[Any] | None,
        stderr: IO[Any] | None,
    ) -> None:
        self._server = server
        self.args = args
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        # communicate()'s readers and what they read (kept across a timeout).
        self._readers: list[threading.Thread] = []
        self._output: dict[int, list[Any]] = {}

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.status(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.status(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        # Only while its status has not come: after that the server has
        # reaped it and the pid may belong to someone else.
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(
        self, input: str | bytes | None = None, timeout: float | None = None
    ) -> tuple[Any, Any]:
        """Send ``input``, read both outputs to their end, wait for the exit."""
        if not self._readers:
            if self.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    if input:
                        self.stdin.write(input)
                    self.stdin.close()
            for index, stream in ((1, self.stdout), (2, self.stderr)):
                if stream is not None:
                    chunks: list[Any] = []
                    self._output[index] = chunks
                    reader = threading.Thread(
                        target=lambda s=stream, c=chunks: c.append(s.read()), daemon=True
                    )
                    reader.start()
                    self._readers.append(reader)
        for reader in self._readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        self.wait(timeout)
        outputs: list[Any] = []
        for index, stream in ((1, self.stdout), (2, self.stderr)):
            if stream is None:
                outputs.append(None)
            else:
                stream.close()
                outputs.append(self._output[index][0])
        return outputs[0], outputs[1]
