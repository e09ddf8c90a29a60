"""Faults made by the kernel (verification rung 5).

Five nodes, each a separate OS process in its own network namespace, joined
by veth pairs to a bridge that lives in a namespace of its own; ``nft`` rules
inside the node namespaces drop, reject or lose packets, ``ss -K`` resets a
live connection, and signals pause, kill and restart processes. Every node
records its history as JSON lines; the checker asserts invariants over the
whole history and prints a table.

``python -m tests.faults.run`` (``--full`` for the long version,
``--scenario NAME`` for one scenario) is the entry point; it needs root,
``ip``, ``nft`` and ``ss``, and skips with the reason elsewhere.
"""
