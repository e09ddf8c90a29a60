"""Run every benchmark as separate OS processes and print a comparison.

Usage, from the repository root::

    python -m benchmarks.run [--runs 3] [--quick] [--output PATH]

For each run, each workload and each system, a fresh server process and a
fresh client process are started (``python -m benchmarks.<module> server 0``
prints ``READY <port>``; the client prints ``RESULT <json>``). Every child
has a hard timeout and is killed if it overstays, so this never hangs. The
two systems alternate which goes first from one run to the next. The table
shows the median over runs and the ratios of trio_distribute to raw_trio
measured in this invocation. Numbers are reported, never judged; a
measurement during which other processes kept the CPUs busy (read from
``/proc/stat``) is flagged, because this machine has only a few CPUs and
the two benchmark processes need one each.

Results go to ``benchmarks/results/latest.json`` (``quick.json`` with
``--quick``, so a smoke test does not overwrite the committed snapshot).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._common import READY, RESULT

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

_TD_WORKLOADS = ("w1", "w2", "ping", "w2call", "w2callpid", "w3a", "w3b", "bulk")
#: system name -> (module, workloads it runs, options before the role)
SYSTEMS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "raw_trio": ("benchmarks.raw_trio", ("w1", "w2", "w3a", "w3b", "bulk"), ()),
    "trio_distribute": ("benchmarks.td_bench", _TD_WORKLOADS, ()),
    "td_asyncio": ("benchmarks.td_bench", _TD_WORKLOADS, ("--backend", "asyncio")),
    # Optional: skipped, with the reason printed, where Erlang is missing.
    "erlang": ("benchmarks.erlang_peer", ("w1", "w2", "w2call", "w3a", "w3b", "bulk"), ()),
}
WORKLOADS = ("w1", "w2", "ping", "w2call", "w2callpid", "w3a", "w3b", "bulk")

#: Seconds a server gets to print READY (interpreter start + imports).
READY_TIMEOUT = 20.0
#: Seconds a server gets to exit by itself once its client is done.
SERVER_EXIT_GRACE = 5.0
#: A 1-minute load average above this before starting means other work is running.
BUSY_LOAD = 0.5
#: Other work using more than this many CPUs on average during a
#: measurement (its own two processes excluded) makes it suspect.
BUSY_FOREIGN_CPUS = 0.15
#: Setup allowance (start-up, connect, handshake) on top of the workload.
SETUP_ALLOWANCE = 15.0


class BenchmarkError(Exception):
    """A child process failed, timed out, or printed no result."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long each workload runs."""

    duration: float  # W1 seconds
    count: int  # W2 / ping recorded round trips
    warmup: int  # W2 / ping / W3 round trips before recording
    w3b_calls: int  # W3b calls (64 in flight)
    bulk_count: int  # bulk: 16 MiB messages recorded (after 2 unrecorded)


FULL = Settings(duration=2.5, count=5000, warmup=300, w3b_calls=20000, bulk_count=20)
QUICK = Settings(duration=0.2, count=200, warmup=50, w3b_calls=500, bulk_count=2)
#: Bulk messages sent before recording.
BULK_WARMUP = 2


def _client_budget(workload: str, settings: Settings) -> float:
    if workload == "w1":
        return settings.duration + SETUP_ALLOWANCE
    if workload == "bulk":  # even at 20 MB/s
        return (settings.bulk_count + BULK_WARMUP) * 0.8 + SETUP_ALLOWANCE
    # Even at 1 ms per round trip (10x the expected) this is generous.
    count = settings.w3b_calls if workload == "w3b" else settings.count
    return (count + settings.warmup) * 0.001 + SETUP_ALLOWANCE


def _client_args(workload: str, settings: Settings) -> list[str]:
    if workload == "w1":
        return ["--duration", str(settings.duration)]
    if workload == "bulk":
        return ["--count", str(settings.bulk_count), "--warmup", str(BULK_WARMUP)]
    count = settings.w3b_calls if workload == "w3b" else settings.count
    return ["--count", str(count), "--warmup", str(settings.warmup)]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[str], grace: float) -> None:
    """Wait up to ``grace`` seconds for ``process`` to exit, then kill it."""
    if process.poll() is None:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _line_reader(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextlib.contextmanager
def _server(
    module: str, options: tuple[str, ...], timeout: float, log: Path
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Start ``module``'s server; yield (port, process); always clean up."""
    command = [sys.executable, "-m", module, "--timeout", str(timeout), *options, "server", "0"]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_line_reader, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        port: int | None = None
        while port is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchmarkError(f"{module} server not READY within {READY_TIMEOUT}s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                process.wait(timeout=10)
                raise BenchmarkError(
                    f"{module} server exited ({process.returncode}) before READY:\n" + _tail(log)
                )
            if line.startswith(READY):
                port = int(line.split()[1])
        yield port, process
        _stop(process, SERVER_EXIT_GRACE)
        if process.returncode != 0:
            raise BenchmarkError(
                f"{module} server exited with status {process.returncode}:\n" + _tail(log)
            )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=5)
        process.stdout.close()


def _busy_cpu_seconds() -> float | None:
    """CPU time spent by everything on this machine so far (Linux), with
    time stolen by the hypervisor counted as busy."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU time of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(system: str, workload: str, settings: Settings, scratch: Path) -> dict[str, Any]:
    """One server + one client for one workload; the client's result, plus
    how much CPU other processes on the machine used meanwhile."""
    busy_before = _busy_cpu_seconds()
    own_before = _own_cpu_seconds()
    wall_before = time.monotonic()
    result = _measure(system, workload, settings, scratch)
    busy_after = _busy_cpu_seconds()
    if busy_before is not None and busy_after is not None:
        wall = time.monotonic() - wall_before
        foreign = (busy_after - busy_before) - (_own_cpu_seconds() - own_before)
        # Average number of CPUs kept busy by other work while this ran.
        result["foreign_cpus"] = max(0.0, foreign / wall)
    return result


def _measure(system: str, workload: str, settings: Settings, scratch: Path) -> dict[str, Any]:
    module, _, options = SYSTEMS[system]
    budget = _client_budget(workload, settings)
    server_log = scratch / f"{system}-{workload}-server.log"
    with _server(module, options, budget + READY_TIMEOUT, server_log) as (port, server):
        command = [
            sys.executable,
            "-m",
            module,
            "--timeout",
            str(budget),
            *options,
            "client",
            str(port),
            workload,
            *_client_args(workload, settings),
        ]
        try:
            done = subprocess.run(
                command,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=budget + SERVER_EXIT_GRACE,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            _stop(server, SERVER_EXIT_GRACE)
            raise BenchmarkError(
                f"{system} {workload} client killed after {exc.timeout}s;"
                f" server log:\n{_tail(server_log)}"
            ) from exc
        if done.returncode != 0:
            _stop(server, SERVER_EXIT_GRACE)
            raise BenchmarkError(
                f"{system} {workload} client exited with status {done.returncode}:\n"
                + "\n".join(done.stderr.splitlines()[-15:])
                + f"\nserver log:\n{_tail(server_log)}"
            )
        for line in done.stdout.splitlines():
            if line.startswith(RESULT):
                result: dict[str, Any] = json.loads(line[len(RESULT) :])
                if done.stderr.strip():
                    result["client_stderr"] = done.stderr[-2000:]
                break
        else:
            raise BenchmarkError(f"{system} {workload} client printed no {RESULT} line")
    server_stderr = _tail(server_log, 30)
    if server_stderr.strip():
        result["server_stderr"] = server_stderr
    return result


# ----------------------------------------------------------------- summary

#: (table column, workload, key in the client's result)
METRICS = (
    ("w1_msgs_per_s", "w1", "msgs_per_s"),
    ("w2_p50_us", "w2", "p50_us"),
    ("w2_p99_us", "w2", "p99_us"),
    ("ping_p50_us", "ping", "p50_us"),
    ("ping_p99_us", "ping", "p99_us"),
    ("call_p50_us", "w2call", "p50_us"),
    ("call_p99_us", "w2call", "p99_us"),
    ("call_pid_p50_us", "w2callpid", "p50_us"),
    ("w3a_calls_per_s", "w3a", "calls_per_s"),
    ("w3a_p50_us", "w3a", "p50_us"),
    ("w3b_calls_per_s", "w3b", "calls_per_s"),
    ("bulk_gb_per_s", "bulk", "gb_per_s"),
    ("bulk_p50_ms", "bulk", "p50_ms"),
)


def _medians(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = {}
    for system, by_workload in runs.items():
        row: dict[str, float] = {}
        for column, workload, key in METRICS:
            values = [r[key] for r in by_workload.get(workload, [])]
            if values:
                row[column] = statistics.median(values)
        medians[system] = row
    return medians


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _ratios(medians: dict[str, dict[str, float]]) -> dict[str, float | None]:
    td = medians.get("trio_distribute", {})
    raw = medians.get("raw_trio", {})
    aio = medians.get("td_asyncio", {})
    erl = medians.get("erlang", {})
    return {
        "w2call_p50_over_w2_p50": _ratio(td.get("call_p50_us"), td.get("w2_p50_us")),
        "w2callpid_p50_over_w2_p50": _ratio(td.get("call_pid_p50_us"), td.get("w2_p50_us")),
        "bulk_td_over_raw": _ratio(td.get("bulk_gb_per_s"), raw.get("bulk_gb_per_s")),
        # against Erlang: W1/W3/bulk higher is better, W2/call lower is better
        "w1_td_over_erlang": _ratio(td.get("w1_msgs_per_s"), erl.get("w1_msgs_per_s")),
        "w2_p50_td_over_erlang": _ratio(td.get("w2_p50_us"), erl.get("w2_p50_us")),
        "call_p50_td_over_erlang": _ratio(td.get("call_p50_us"), erl.get("call_p50_us")),
        "w3a_td_over_erlang": _ratio(td.get("w3a_calls_per_s"), erl.get("w3a_calls_per_s")),
        "w3b_td_over_erlang": _ratio(td.get("w3b_calls_per_s"), erl.get("w3b_calls_per_s")),
        "bulk_td_over_erlang": _ratio(td.get("bulk_gb_per_s"), erl.get("bulk_gb_per_s")),
        # asyncio against raw trio
        "w1_asyncio_over_raw": _ratio(aio.get("w1_msgs_per_s"), raw.get("w1_msgs_per_s")),
        "w2_p50_asyncio_over_raw": _ratio(aio.get("w2_p50_us"), raw.get("w2_p50_us")),
        "w3a_asyncio_over_raw": _ratio(aio.get("w3a_calls_per_s"), raw.get("w3a_calls_per_s")),
        # higher is better
        "w1_td_over_raw": _ratio(td.get("w1_msgs_per_s"), raw.get("w1_msgs_per_s")),
        # lower is better
        "w2_p50_td_over_raw": _ratio(td.get("w2_p50_us"), raw.get("w2_p50_us")),
        "w2_p99_td_over_raw": _ratio(td.get("w2_p99_us"), raw.get("w2_p99_us")),
        "ping_p50_td_over_raw_w2_p50": _ratio(td.get("ping_p50_us"), raw.get("w2_p50_us")),
        "call_p50_td_over_raw_w2_p50": _ratio(td.get("call_p50_us"), raw.get("w2_p50_us")),
        # higher is better; W3b is judged against the raw sequential rate
        "w3a_td_over_raw": _ratio(td.get("w3a_calls_per_s"), raw.get("w3a_calls_per_s")),
        "w3b_td_over_raw_w3a": _ratio(td.get("w3b_calls_per_s"), raw.get("w3a_calls_per_s")),
        "w3b_td_over_raw_w3b": _ratio(td.get("w3b_calls_per_s"), raw.get("w3b_calls_per_s")),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(
    medians: dict[str, dict[str, float]],
    ratios: dict[str, float | None],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> str:
    header = (
        f"{'system':<18}{'W1 msg/s':>12}{'W2 p50 µs':>12}{'W2 p99 µs':>12}"
        f"{'ping p50 µs':>13}{'ping p99 µs':>13}{'call p50 µs':>13}{'call p99 µs':>13}"
    )
    lines = [header, "-" * len(header)]
    lossy = False
    for system in runs:
        row = medians.get(system, {})
        w1 = _fmt(row.get("w1_msgs_per_s"), ",.0f")
        if any(r.get("lost") for r in runs.get(system, {}).get("w1", [])):
            w1 += "*"
            lossy = True
        lines.append(
            f"{system:<18}{w1:>12}"
            f"{_fmt(row.get('w2_p50_us'), '.1f'):>12}{_fmt(row.get('w2_p99_us'), '.1f'):>12}"
            f"{_fmt(row.get('ping_p50_us'), '.1f'):>13}{_fmt(row.get('ping_p99_us'), '.1f'):>13}"
            f"{_fmt(row.get('call_p50_us'), '.1f'):>13}{_fmt(row.get('call_p99_us'), '.1f'):>13}"
        )
    lines.append(
        f"{'td / raw':<18}{_fmt(ratios['w1_td_over_raw'], '.2f') + 'x':>12}"
        f"{_fmt(ratios['w2_p50_td_over_raw'], '.2f') + 'x':>12}"
        f"{_fmt(ratios['w2_p99_td_over_raw'], '.2f') + 'x':>12}"
        f"{_fmt(ratios['ping_p50_td_over_raw_w2_p50'], '.2f') + 'x':>13}{'':>13}"
        f"{_fmt(ratios['call_p50_td_over_raw_w2_p50'], '.2f') + 'x':>13}"
    )
    lines.append(
        "(medians over runs; W1 ratio: higher is better; W2 ratios: lower is better;"
        " ping and call p50 are compared with raw_trio's W2 p50)"
    )
    lines.append("")
    header3 = f"{'system':<18}{'W3a calls/s':>13}{'W3a p50 µs':>12}{'W3b calls/s':>13}"
    lines += [header3, "-" * len(header3)]
    for system in runs:
        row = medians.get(system, {})
        lines.append(
            f"{system:<18}{_fmt(row.get('w3a_calls_per_s'), ',.0f'):>13}"
            f"{_fmt(row.get('w3a_p50_us'), '.1f'):>12}"
            f"{_fmt(row.get('w3b_calls_per_s'), ',.0f'):>13}"
        )
    lines.append(
        f"{'td / raw':<18}{_fmt(ratios['w3a_td_over_raw'], '.2f') + 'x':>13}{'':>12}"
        f"{_fmt(ratios['w3b_td_over_raw_w3b'], '.2f') + 'x':>13}"
    )
    lines.append(
        f"(W3 ratios: higher is better; td W3b over raw W3a:"
        f" {_fmt(ratios['w3b_td_over_raw_w3a'], '.2f')}x)"
    )
    lines.append("")
    header4 = f"{'system':<18}{'bulk GB/s':>11}{'bulk p50 ms':>13}"
    lines += [header4, "-" * len(header4)]
    for system in runs:
        row = medians.get(system, {})
        if "bulk_gb_per_s" in row:
            lines.append(
                f"{system:<18}{_fmt(row.get('bulk_gb_per_s'), '.2f'):>11}"
                f"{_fmt(row.get('bulk_p50_ms'), '.1f'):>13}"
            )
    lines.append(
        f"(bulk: one 16 MiB bytes message, sent and acknowledged; td / raw:"
        f" {_fmt(ratios['bulk_td_over_raw'], '.2f')}x)"
    )
    if medians.get("erlang"):
        lines.append("")
        lines.append(
            "trio_distribute / erlang:"
            f" W1 {_fmt(ratios['w1_td_over_erlang'], '.2f')}x (higher is better),"
            f" W2 p50 {_fmt(ratios['w2_p50_td_over_erlang'], '.2f')}x (lower is better),"
            f" call p50 {_fmt(ratios['call_p50_td_over_erlang'], '.2f')}x,"
            f" W3a {_fmt(ratios['w3a_td_over_erlang'], '.2f')}x,"
            f" W3b {_fmt(ratios['w3b_td_over_erlang'], '.2f')}x,"
            f" bulk {_fmt(ratios['bulk_td_over_erlang'], '.2f')}x"
        )
    if medians.get("td_asyncio"):
        lines.append(
            "td_asyncio / raw_trio:"
            f" W1 {_fmt(ratios['w1_asyncio_over_raw'], '.2f')}x,"
            f" W2 p50 {_fmt(ratios['w2_p50_asyncio_over_raw'], '.2f')}x,"
            f" W3a {_fmt(ratios['w3a_asyncio_over_raw'], '.2f')}x"
        )
    lines.append(
        f"trio_distribute call p50 / its W2 p50: {_fmt(ratios['w2call_p50_over_w2_p50'], '.2f')}x"
        f" by name, {_fmt(ratios['w2callpid_p50_over_w2_p50'], '.2f')}x by pid"
    )
    if lossy:
        lines.append("* messages were lost in at least one W1 run (see the notes)")
    lines.append("")
    lines.append("per run:")
    for system in runs:
        for column, workload, key in METRICS:
            values = [r[key] for r in runs.get(system, {}).get(workload, [])]
            if values:
                spec = ",.0f" if workload == "w1" or column.endswith("per_s") else ".1f"
                if workload == "bulk":
                    spec = ".2f"
                shown = " / ".join(format(v, spec) for v in values)
                lines.append(f"  {system:<16} {column:<14} {shown}")
    return "\n".join(lines)


def _notes(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """Facts worth a look: lost messages, drops, anything on stderr."""
    notes: list[str] = []
    for system, by_workload in runs.items():
        for workload, results in by_workload.items():
            for index, result in enumerate(results, 1):
                where = f"{system} {workload} run {index}"
                if workload == "w1" and result.get("sent") != result.get("received"):
                    notes.append(
                        f"{where}: sent {result['sent']:,} but received {result['received']:,}"
                        f" (lost {result['sent'] - result['received']:,});"
                        f" W1 msg/s counts delivered messages only"
                    )
                if result.get("server_drops"):
                    notes.append(f"{where}: server drops {result['server_drops']}")
                if result.get("client_drops"):
                    notes.append(f"{where}: client drops {result['client_drops']}")
                foreign = result.get("foreign_cpus", 0.0)
                if foreign > BUSY_FOREIGN_CPUS:
                    notes.append(
                        f"{where}: other processes kept {foreign:.2f} CPUs busy meanwhile;"
                        " this measurement is skewed"
                    )
                for stream in ("client_stderr", "server_stderr"):
                    if result.get(stream):
                        first = result[stream].strip().splitlines()[0]
                        notes.append(f"{where}: {stream}: {first}")
    return notes


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("trio", "cbor2", "anyio", "attrs"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _source_digest() -> str:
    """A short hash of trio_distribute's sources: which code was measured,
    even when it is not committed yet."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "trio_distribute").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


# -------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per system and workload")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 0.2 s W1, 200 round trips"
    )
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated systems to run (default: all of {', '.join(SYSTEMS)})",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated workloads to run (default: all of {', '.join(WORKLOADS)})",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.systems = [name for name in args.systems.split(",") if name]
    args.workloads = [name for name in args.workloads.split(",") if name]
    for name in args.systems:
        if name not in SYSTEMS:
            parser.error(f"unknown system {name!r}")
    for name in args.workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}")
    return args


def _available(systems: list[str]) -> list[str]:
    """The systems that can run here; each one skipped is said why."""
    from .erlang_peer import available

    chosen = []
    for system in systems:
        if system == "erlang":
            reason = available()
            if reason is not None:
                print(f"skipping erlang: {reason}", flush=True)
                continue
        chosen.append(system)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    output: Path = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")

    source_digest = _source_digest()
    print(f"trio_distribute sources {source_digest}", flush=True)
    load_before = os.getloadavg()
    if load_before[0] > BUSY_LOAD:
        print(
            f"warning: load average {load_before[0]:.2f} before starting; other work on this"
            " machine skews the numbers",
            flush=True,
        )
    systems = _available(args.systems)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in systems}
    failures: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="td-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        for run in range(args.runs):
            order = systems if run % 2 == 0 else list(reversed(systems))
            for workload in args.workloads:
                for system in order:
                    if workload not in SYSTEMS[system][1]:
                        continue
                    label = f"run {run + 1}/{args.runs} {system:<16} {workload:<5}"
                    try:
                        result = measure(system, workload, settings, scratch)
                    except BenchmarkError as exc:
                        failures.append(f"{label}: {exc}")
                        print(f"{label} FAILED: {exc}", flush=True)
                        continue
                    runs[system].setdefault(workload, []).append(result)
                    if workload == "w1":
                        shown = f"{result['msgs_per_s']:,.0f} msg/s"
                    elif workload == "bulk":
                        shown = f"{result['gb_per_s']:.2f} GB/s, p50 {result['p50_ms']:.1f} ms"
                    elif workload.startswith("w3"):
                        shown = (
                            f"{result['calls_per_s']:,.0f} calls/s, p50 {result['p50_us']:.1f} µs"
                        )
                    else:
                        shown = f"p50 {result['p50_us']:.1f} µs, p99 {result['p99_us']:.1f} µs"
                    foreign = result.get("foreign_cpus", 0.0)
                    if foreign > BUSY_FOREIGN_CPUS:
                        shown += f"  (machine busy: other work used {foreign:.2f} CPUs)"
                    print(f"{label} {shown}", flush=True)

    load_after = os.getloadavg()
    medians = _medians(runs)
    ratios = _ratios(medians)
    print()
    print(render_table(medians, ratios, runs))
    notes = _notes(runs)
    for note in notes:
        print(f"note: {note}")
    # The benchmark itself keeps ~2 processes busy, so judge the 1-minute
    # load against the CPUs left over.
    if load_after[0] > (os.cpu_count() or 1) + BUSY_LOAD:
        print(f"warning: load average {load_after[0]:.2f} at the end: the machine was busy")
    for failure in failures:
        print(f"FAILED: {failure.splitlines()[0]}")

    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "trio_distribute_sources": source_digest,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            **_versions(),
        },
        "settings": {
            "runs": args.runs,
            "quick": args.quick,
            "systems": systems,
            "workloads": args.workloads,
            **dataclasses.asdict(settings),
        },
        "median": medians,
        "ratios": ratios,
        "runs": runs,
        "notes": notes,
        "failures": failures,
        "wall_s": time.monotonic() - started,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {output} ({report['wall_s']:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
