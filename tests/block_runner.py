"""Runs programs in fresh processes forked from one warm interpreter.

``python tests/block_runner.py`` imports the modules the documentation's
programs import (trio, attrs, trio_distribute and its testing helpers: most
of a block's start-up time), then serves requests, one JSON object a line
on stdin::

    {"script": "/tmp/x/block.py", "cwd": "/tmp/x", "stdout": "...", "stderr": "..."}

For each it forks a child that runs the script as ``__main__`` with its
output in the two files, and answers ``{"pid": N}`` at once and
``{"pid": N, "status": S}`` when the child has ended (``S`` as
``subprocess`` reports a return code: negative for a signal). Each program
has its own process, so what one registers at module level (message tags,
exported RPC names, logging set-up) cannot reach another; only the
imports are shared, as already-loaded modules.

Forking is safe because nothing here ever runs an event loop or starts a
thread: the server checks that before it serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import sys
import threading
import traceback

PRELOAD = ("attrs", "trio", "trio_distribute", "trio_distribute.testing")


def child(request: dict[str, str]) -> None:
    """In the forked child: become the program, then exit as it would."""
    code = 0
    try:
        os.chdir(request["cwd"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = [request["script"]]
        sys.path[0] = os.path.dirname(request["script"])
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as exit_:
        status = exit_.code
        if status is None:
            code = 0
        elif isinstance(status, int):
            code = status
        else:
            print(status, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # Flush what the program printed, skip the server's own clean-up.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the program may have closed it
                stream.flush()
        os._exit(code)


def serve() -> None:
    for name in PRELOAD:
        __import__(name)
    # Forking a process with other threads (or a running loop) would copy
    # locks held by them: refuse rather than hang a child at random.
    assert threading.active_count() == 1, threading.enumerate()
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
