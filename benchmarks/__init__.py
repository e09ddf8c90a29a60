"""Benchmarks for trio_distribute against a raw trio + cbor2 baseline.

Run ``python -m benchmarks.run`` from the repository root. The workloads
follow ``reference/performance-anchors.md``: W1 one-way throughput, W2
sequential round trips; every measurement runs between two OS processes on
127.0.0.1.
"""
