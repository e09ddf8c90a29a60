"""Helpers shared by the benchmark servers, clients and the orchestrator.

A server prints ``READY <port>`` on stdout once it listens; a client prints
``RESULT <json>`` with its measurements. Nothing here judges a number.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BODY",
    "BULK_SIZE",
    "HOST",
    "READY",
    "RESULT",
    "bulk_result",
    "emit_ready",
    "emit_result",
    "latency_summary",
    "percentile",
]

HOST = "127.0.0.1"
#: The W1/W2 message body: 16 bytes, as in the anchors.
BODY = b"x" * 16
#: The bulk workload's message: 16 MiB of bytes.
BULK_SIZE = 16 * 1024 * 1024
READY = "READY"
RESULT = "RESULT"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, linearly interpolated."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p99/mean/min/max in microseconds of round-trip samples in nanoseconds."""
    values = sorted(s / 1000.0 for s in samples_ns)
    return {
        "n": float(len(values)),
        "p50_us": percentile(values, 0.50),
        "p99_us": percentile(values, 0.99),
        "mean_us": sum(values) / len(values),
        "min_us": values[0],
        "max_us": values[-1],
    }


def emit_ready(port: int) -> None:
    """Tell the orchestrator the server listens on ``port``."""
    print(f"{READY} {port}", flush=True)


def emit_result(result: dict[str, Any]) -> None:
    """Hand a client's measurements to the orchestrator."""
    print(f"{RESULT} {json.dumps(result, sort_keys=True)}", flush=True)


def die(message: str) -> None:
    """Report a usage error and exit with status 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def w1_result(
    sent: int, reply: dict[str, Any], send_elapsed: float, send_cpu: float
) -> dict[str, Any]:
    """The W1 record both systems report: the receiver's count and timing
    (from its ``"done"`` reply) beside the sender's."""
    count = int(reply["count"])
    elapsed = float(reply["elapsed"])
    return {
        "workload": "w1",
        "sent": sent,
        "received": count,
        "msgs_per_s": count / elapsed if elapsed > 0 else 0.0,
        "receiver_elapsed_s": elapsed,
        "receiver_cpu_s": float(reply["cpu"]),
        "sender_elapsed_s": send_elapsed,
        "sender_cpu_s": send_cpu,
        "sender_msgs_per_s": sent / send_elapsed,
        "lost": sent - count,
    }


def bulk_result(size: int, samples_ns: Sequence[int]) -> dict[str, Any]:
    """The bulk record both systems report: each sample is the time from
    starting to send one ``size``-byte message to receiving the receiver's
    small acknowledgement (it has decoded the whole message)."""
    summary = latency_summary(samples_ns)
    return {
        "workload": "bulk",
        "size": size,
        "p50_ms": summary["p50_us"] / 1000.0,
        "min_ms": summary["min_us"] / 1000.0,
        "gb_per_s": size / (summary["p50_us"] * 1e-6) / 1e9,
        "best_gb_per_s": size / (summary["min_us"] * 1e-6) / 1e9,
    }
