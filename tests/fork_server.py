"""Starts programs in processes forked from one warm interpreter.

Starting a fresh interpreter and importing trio and trio_distribute costs
about a third of a CPU-second, most of what a short test program spends.
The suite starts well over a hundred such programs (the documentation's
blocks, the examples, the members of the multi-process tests), so each test
worker keeps one of these servers: it imports those modules once, then
forks a child for every program it is asked to start. Each program still
has a process of its own (its own pid, signals, sockets, module-level
state); only the imports are shared, as already-loaded modules.

``python tests/fork_server.py FD`` serves on the ``AF_UNIX``
``SOCK_SEQPACKET`` socket FD (tests/forked.py is the client). A request is
one JSON object with three file descriptors attached (the program's stdin,
stdout and stderr)::

    {"argv": ["script.py", "arg"], "cwd": "/tmp/x", "env": {...} or null}

``argv`` is what would follow the interpreter on a command line: a script
path, ``-c CODE`` or ``-m MODULE``, then the program's arguments. The
server answers ``{"pid": N}`` at once and ``{"pid": N, "status": S}`` when
the child has ended (``S`` as ``subprocess`` reports a return code:
negative for a signal). It ends, killing any child still running, when the
client closes its end.

What differs from a fresh interpreter: ``env`` replaces ``os.environ`` but
cannot change what the interpreter read from it at start (``sys.path`` from
``PYTHONPATH``, the hash seed), and every child has the server's hash seed.

Forking is safe because nothing here ever runs an event loop or starts a
thread: the server checks that before it serves.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import json
import os
import random
import runpy
import select
import signal
import socket
import sys
import threading
import traceback

PRELOAD = (
    "attrs",
    "cbor2",
    "anyio",
    "trio",
    "trio_distribute",
    "trio_distribute.testing",
    "trio_distribute.__main__",
)

#: Largest request (a ``-c`` program travels inside it).
MAX_REQUEST = 1 << 20

_PR_SET_PDEATHSIG = 1


def _run_program(argv: list[str]) -> None:
    """Run ``argv`` as ``python ARGV...`` would, in this process."""
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path[0] = ""
        code = compile(argv[1], "<string>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        # A preloaded copy would run twice (and runpy warns): run it afresh.
        sys.modules.pop(argv[1] + ".__main__", None)
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(argv[0])
        sys.argv = [argv[0], *argv[1:]]
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


def _become(request: dict[str, object], fds: list[int], server_fds: list[int]) -> None:
    """In the forked child: become the program, then exit as it would."""
    code = 0
    try:
        # Undo the server's own set-up; die with the server.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in server_fds:
            os.close(fd)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own streams)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")  # noqa: SIM115
        cwd = request.get("cwd")
        if isinstance(cwd, str):
            os.chdir(cwd)
        env = request.get("env")
        if isinstance(env, dict):
            os.environ.clear()
            os.environ.update(env)
        # Random state was copied from the server: give this process its own,
        # as a fresh interpreter would have (the random module's global
        # generator reseeds itself after a fork; trio's scheduler's does not).
        import trio._core._run

        trio._core._run._r.seed()
        random.seed()
        argv = request["argv"]
        assert isinstance(argv, list)
        _run_program([str(arg) for arg in argv])
    except SystemExit as exit_:
        status = exit_.code
        if status is None:
            code = 0
        elif isinstance(status, int):
            code = status
        else:
            print(status, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        # As the interpreter does: the traceback, then die of SIGINT.
        traceback.print_exc()
        _exit_cleanly()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit_cleanly()
    os._exit(code)


def _exit_cleanly() -> None:
    """What the interpreter does on its way out: exit handlers (the
    program's, such as logging's flush), then the streams."""
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the program may have closed it
            stream.flush()


def _reap(server: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        server.send(json.dumps({"pid": pid, "status": code}).encode())


def serve(server: socket.socket) -> None:
    for name in PRELOAD:
        __import__(name)
    # Forking a process with other threads (or a running loop) would copy
    # locks held by them: refuse rather than hang a child at random.
    assert threading.active_count() == 1, threading.enumerate()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: set[int] = set()
    try:
        while True:
            ready = select.select([server.fileno(), wake_read], [], [])[0]
            if wake_read in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
                _reap(server, children)
            if server.fileno() not in ready:
                continue
            message, fds, _, _ = socket.recv_fds(server, MAX_REQUEST, 3)
            if not message:
                return  # the client is gone
            request = json.loads(message)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _become(request, fds, [server.fileno(), wake_read, wake_write])
            for fd in fds:
                os.close(fd)
            children.add(pid)
            server.send(json.dumps({"pid": pid}).encode())
            _reap(server, children)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
