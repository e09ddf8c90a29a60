"""One node of the fault suite, as an OS process (run inside its namespace).

``python -m tests.faults.node --name n1@10.77.0.1 --peers ... --history F``

Uses only the public API. Records its history to ``F`` as JSON lines, one
object per line, each with ``t`` (wall-clock seconds) and ``k`` (kind):

* ``up``: the node started (``c``: its creation);
* ``s``: a snapshot every ``--snapshot`` seconds: ``lead`` (``[name, term]``
  or null: ``node.election.leader``), ``term``, ``il`` (``is_leader``),
  ``alive`` (``membership.alive()``), ``conn`` (``node.nodes()``),
  ``names`` (registry: name -> ``[node, id, creation]``), ``groups``
  (group -> sorted member pids), ``sent`` (peer -> last sequence number
  sent), ``ep`` (peer -> connection epoch, see below);
* ``lc``: a ``LeaderChanged`` event (``term``, ``leader``);
* ``ne``: a ``NodeUp``/``NodeDown`` event (``peer``, ``up``, ``reason``);
* ``r``: a workload message received (sent only to connected peers, so
  that the workload never redials a lost connection itself; ``f`` sender, ``c`` its creation,
  ``s`` its sequence number, ``se`` the sender's epoch for us when it sent,
  ``re`` our epoch for the sender when it arrived);
* ``reg`` / ``join``: the workload process registered its global name and
  joined the group;
* ``err``: a public call raised something it does not document;
* ``cancelled``: the node's block was cancelled from inside (the node died
  while nobody asked it to stop);
* ``stopping`` / ``stopped`` (``took``: seconds to leave ``open_node``) /
  ``crash`` (``error``, ``tb``).

The **epoch** of a peer counts the ``NodeUp``/``NodeDown`` events this node
has seen for it. A sender tags each message with its epoch for the
receiver, and the receiver records its own epoch for the sender: a run of
messages with both unchanged travelled on one connection that stayed up, so
their sequence numbers must be consecutive. Node events are drained (never
awaited) right before each send and each receive so that an event published
before a message is always counted before it.

SIGINT or SIGTERM stops the node (the exit must take under 5 s); SIGUSR1
dumps every thread's stack (faulthandler) and SIGUSR2 every task's await
stack (trio's task tree), both to stderr, for a process that hangs.
``--backend asyncio`` runs the node on asyncio through anyio.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

import anyio
import sniffio
import trio

import trio_distribute as td

GROUP = "faults"
COOKIE = "fault-suite-cookie"
PORT = 4370


def global_name(node_name: str) -> str:
    """The global name of the workload process of ``node_name``."""
    return "w." + node_name.partition("@")[0]


class Recorder:
    """Appends one JSON object per line, flushed at once (a SIGKILL loses
    nothing that was written)."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", buffering=1)

    def write(self, kind: str, **fields: Any) -> None:
        fields["t"] = round(time.time(), 4)  # RECORD_RESOLUTION in history.py
        fields["k"] = kind
        self._file.write(json.dumps(fields, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


class Epochs:
    """Per-peer count of node events, updated by draining the monitor channel."""

    def __init__(self, events: Any, rec: Recorder) -> None:
        self._events = events
        self._rec = rec
        self.of: dict[str, int] = {}

    def refresh(self) -> None:
        while True:
            try:
                event = self._events.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            peer = event.node
            self.of[peer] = self.of.get(peer, 0) + 1
            up = isinstance(event, td.NodeUp)
            self._rec.write("ne", peer=peer, up=up, reason=getattr(event, "reason", None))


def pid_key(pid: td.Pid) -> list[Any]:
    return [pid.node, pid.id, pid.creation]


async def run_node(args: argparse.Namespace, rec: Recorder, stop: anyio.Event) -> None:
    me: str = args.name
    peers = [p for p in args.peers.split(",") if p and p != me]
    config = td.NodeConfig.local(state_dir=args.state_dir)
    host = me.partition("@")[2]
    seeds = [f"{p.partition('@')[2]}:{PORT}" for p in peers]
    async with td.open_node(me, cookie=COOKIE, port=PORT, config=config, seeds=seeds) as node:
        rec.write("up", c=node.creation, address=list(node.address), host=host)
        try:
            async with node.monitor_nodes() as events, anyio.create_task_group() as work:
                epochs = Epochs(events, rec)
                work.start_soon(_workload, node, peers, epochs, rec, args)
                await stop.wait()
                rec.write("stopping")
                work.cancel_scope.cancel()
        finally:
            if not stop.is_set():
                rec.write("cancelled", detail="the node's block was cancelled from inside")


async def _workload(
    node: td.Node, peers: list[str], epochs: Epochs, rec: Recorder, args: argparse.Namespace
) -> None:
    async with anyio.create_task_group() as tasks, node.open_process(name="worker") as proc:
        tasks.start_soon(_snapshots, node, peers, epochs, rec, args.snapshot)
        tasks.start_soon(_leader_events, node, rec)
        tasks.start_soon(_drain_events, epochs)
        for peer in peers:
            tasks.start_soon(_sender, node, peer, epochs, rec, args.interval)
        tasks.start_soon(_register, node, proc.pid, rec)
        await node.groups.join(GROUP, proc.pid)
        rec.write("join", pid=pid_key(proc.pid))
        async for message in proc:
            epochs.refresh()
            if isinstance(message, dict) and "s" in message:
                sender = message.get("f")
                rec.write(
                    "r",
                    f=sender,
                    c=message.get("c"),
                    s=message.get("s"),
                    se=message.get("e"),
                    re=epochs.of.get(str(sender), 0),
                )
            else:
                rec.write("other", message=repr(message))


sent: dict[str, int] = {}


async def _sender(node: td.Node, peer: str, epochs: Epochs, rec: Recorder, interval: float) -> None:
    seq = 0
    sent[peer] = 0
    deadline = anyio.current_time()
    while True:
        deadline += interval
        await anyio.sleep_until(deadline)
        deadline = max(deadline, anyio.current_time())
        if peer not in node.nodes():
            # The workload never dials (send() would connect first): the
            # mesh must be rebuilt by the node itself, not by the traffic.
            continue
        epochs.refresh()
        message = {"f": node.name, "c": node.creation, "s": seq + 1, "e": epochs.of.get(peer, 0)}
        try:
            # No timeout: a cancelled send leaves unknown whether the frame
            # was queued, and the numbering must be exact.
            await node.send(("worker", peer), message)
        except (td.NodeDownError, td.ConnectError):
            continue
        except Exception as exc:
            rec.write("err", call="send", peer=peer, error=repr(exc))
            await anyio.sleep(0.5)
            continue
        seq += 1
        sent[peer] = seq


async def _register(node: td.Node, pid: td.Pid, rec: Recorder) -> None:
    name = global_name(node.name)
    attempt = 0
    while True:
        attempt += 1
        try:
            await node.registry.register(name, pid)
        except (td.NameTakenError, TimeoutError, td.NodeDownError) as exc:
            # Taken: a replica still holds the name of this node's previous
            # run (restart) until it hears that node went down.
            if attempt % 10 == 1:
                rec.write("regretry", error=repr(exc))
            await anyio.sleep(0.2)
            continue
        except Exception as exc:
            rec.write("err", call="register", error=repr(exc))
            await anyio.sleep(0.5)
            continue
        rec.write("reg", name=name, pid=pid_key(pid), attempts=attempt)
        return


async def _leader_events(node: td.Node, rec: Recorder) -> None:
    async with node.election.subscribe() as changes:
        async for change in changes:
            rec.write("lc", term=change.term, leader=change.leader)


async def _drain_events(epochs: Epochs) -> None:
    # Polled, not awaited: a task blocked in receive() would take an event
    # off the channel before a message that followed it was counted.
    while True:
        epochs.refresh()
        await anyio.sleep(0.05)


async def _snapshots(
    node: td.Node, peers: list[str], epochs: Epochs, rec: Recorder, every: float
) -> None:
    while True:
        leader = node.election.leader
        registry = node.registry
        names = {n: pid_key(p) for n in registry.names() if (p := registry.whereis(n))}
        groups = {
            g: sorted(pid_key(p) for p in node.groups.members(g))
            for g in node.groups.which_groups()
        }
        rec.write(
            "s",
            c=node.creation,
            lead=[leader.name, leader.term] if isinstance(leader, td.Leader) else None,
            term=node.election.term,
            il=node.election.is_leader,
            alive=node.membership.alive(),
            conn=sorted(node.nodes()),
            names=names,
            groups=groups,
            sent=dict(sent),
            ep=dict(epochs.of),
        )
        await anyio.sleep(every)


def _dump_tasks() -> None:
    """Write every task with its await stack to stderr (trio: the task
    tree; asyncio: each task's stack)."""
    out = sys.stderr
    out.write(f"--- tasks at {time.time():.3f}\n")
    if sniffio.current_async_library() == "trio":

        def walk(task: trio.lowlevel.Task, depth: int) -> None:
            pad = "  " * depth
            out.write(f"{pad}task {task.name}\n")
            for frame, lineno in task.iter_await_frames():
                code = frame.f_code
                out.write(f"{pad}  {code.co_filename}:{lineno} in {code.co_name}\n")
            for nursery in task.child_nurseries:
                for child in nursery.child_tasks:
                    walk(child, depth + 1)

        root = trio.lowlevel.current_root_task()
        if root is not None:
            walk(root, 0)
    else:
        for task in asyncio.all_tasks():
            task.print_stack(file=out)
    out.write("--- end of tasks\n")
    out.flush()


async def _signals(stop: anyio.Event, rec: Recorder) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR2) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR2:
                _dump_tasks()
            elif not stop.is_set():
                rec.write("signal", signum=int(signum))
                stop.set()


async def main(args: argparse.Namespace) -> int:
    rec = Recorder(Path(args.history))
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    await anyio.sleep(max(0.0, args.start_at - time.time()))
    stop = anyio.Event()
    code = 0
    async with anyio.create_task_group() as outer:
        # Signal handling lives outside the node, so a node that hangs on
        # its way out can still be asked for its task tree.
        outer.start_soon(_signals, stop, rec)
        try:
            await run_node(args, rec, stop)
        except Exception as exc:
            rec.write("crash", error=repr(exc), tb=traceback.format_exc())
            code = 1
        else:
            rec.write("stopped")
        outer.cancel_scope.cancel()
    rec.close()
    return code


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--peers", required=True, help="every node name, comma-separated")
    parser.add_argument("--history", required=True)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start time")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between sends")
    parser.add_argument("--snapshot", type=float, default=0.1, help="seconds between snapshots")
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    arguments = parse()
    sys.exit(anyio.run(main, arguments, backend=arguments.backend))
