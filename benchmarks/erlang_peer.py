"""The workloads on Erlang/OTP, for comparison (optional: needs ``erl``).

Usage (the orchestrator ``benchmarks.run`` starts these, like the others)::

    python -m benchmarks.erlang_peer server 0          # prints READY <id>
    python -m benchmarks.erlang_peer client ID w1 --duration 2.5

The Erlang code is ``benchmarks/peers/erlang_bench.erl``, compiled with
``erlc`` into a temporary directory at start. Two Erlang nodes in two OS
processes talk over loopback distribution (``-name ...@127.0.0.1``, one
cookie; ``erl`` starts ``epmd`` if it is not running). Erlang nodes find
each other by name, not by port, so the number the server prints where the
others print their port is this wrapper's process id, from which the
client derives the server's node name.

The workloads mirror ``benchmarks.td_bench``: W1 sends
``#{seq => I, body => <<16 bytes>>}`` to a sink process; W2 round trips
through an echo process; W2-call is ``gen_server:call`` to a gen_server
that answers with the request; W3a/W3b are ``erpc:call(Server, erlang_bench,
add, [I, 1])`` from 1 or 64 processes; bulk sends a 16 MiB binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import HOST, READY, RESULT, die, emit_ready

__all__ = ["available", "main"]

SOURCE = Path(__file__).resolve().parent / "peers" / "erlang_bench.erl"
COOKIE = "benchmark_erlang_4f9c1e7a2b6d8053"
WORKLOADS = ("w1", "w2", "w2call", "w3a", "w3b", "bulk")


def available() -> str | None:
    """``None`` if Erlang can run here, else why not."""
    for tool in ("erl", "erlc"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install erlang-nox)"
    return None


def _server_node(ident: int) -> str:
    return f"tdbench_a_{ident}@{HOST}"


def _compile(into: str) -> None:
    subprocess.run(["erlc", "-o", into, str(SOURCE)], check=True, timeout=120)


def _erl(into: str, name: str, *run: str) -> list[str]:
    return [
        "erl",
        "-name",
        name,
        "-setcookie",
        COOKIE,
        "-noshell",
        "-pa",
        into,
        # Keep the measurement on the two CPUs the Python systems get.
        "+S",
        "2:2",
        "-run",
        "erlang_bench",
        *run,
    ]


def serve(timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="td-erl-") as into:
        _compile(into)
        ident = os.getpid()
        command = _erl(into, _server_node(ident), "server")
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as erl:
            try:
                assert erl.stdout is not None
                for line in erl.stdout:
                    if line.startswith(READY):
                        emit_ready(ident)
                        break
                erl.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                erl.kill()
                die(f"the Erlang server overstayed {timeout} s")
            finally:
                if erl.poll() is None:
                    erl.kill()


def run_client(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="td-erl-") as into:
        _compile(into)
        command = _erl(
            into,
            f"tdbench_b_{os.getpid()}@{HOST}",
            "client",
            _server_node(args.port),
            args.workload,
            str(args.count),
            str(args.warmup),
            repr(float(args.duration)),
        )
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            record = line[len(RESULT) :].strip()
            print(f'{RESULT} {{"system": "erlang", {record[1:]}', flush=True)
            return
    print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    raise SystemExit(done.returncode or 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.erlang_peer")
    parser.add_argument("--timeout", type=float, default=60.0, help="hard limit, seconds")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("port", type=int, help="ignored (Erlang nodes meet by name)")
    client = sub.add_parser("client")
    client.add_argument("port", type=int, help="the id the server printed")
    client.add_argument("workload", choices=WORKLOADS)
    client.add_argument("--duration", type=float, default=2.5, help="W1 seconds")
    client.add_argument("--count", type=int, default=5000, help="round trips or calls")
    client.add_argument("--warmup", type=int, default=300, help="unrecorded round trips")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reason = available()
    if reason is not None:
        die(f"Erlang is not available: {reason}")
    if args.role == "server":
        serve(args.timeout)
    else:
        run_client(args)


if __name__ == "__main__":
    main()
