"""Two nodes in two OS processes exchanging messages and monitoring each other.

Run it in two terminals::

    python examples/two_nodes.py server            # node a@127.0.0.1 on port 4370
    python examples/two_nodes.py client            # node b@127.0.0.1 connects to it

or let one command start the server as a child process and run the client::

    python examples/two_nodes.py both

The server runs an ``echo`` process registered under that name. The client
sends it messages by name and by pid, gets the replies, monitors it, asks it
to stop and sees the ``ProcessDown``; the server monitors the client's
process the same way and sees it end when the client leaves.
"""

from __future__ import annotations

import subprocess
import sys

import trio

import trio_distribute as td

COOKIE = "two-nodes-example"
SERVER = "a@127.0.0.1"
PORT = 4370
#: How long the client keeps trying to reach a server started by hand.
CONNECT_WAIT = 3.0
#: ... and one that ``both`` just started (a loaded machine may take a
#: while to start a Python process).
BOTH_WAIT = 30.0


class NoServer(Exception):
    """The client found no server to talk to."""


async def echo(proc: td.Process, node: td.Node) -> None:
    """Reply to every {"from": pid, "body": ...} until asked to stop."""
    async for message in proc:
        if message == "stop":
            print("[server] echo asked to stop", flush=True)
            return
        sender = message["from"]
        if message.get("watch"):
            await node.send("main", {"client": sender})  # main will monitor it
        await node.send(sender, {"echo": message["body"], "from": proc.pid})


async def server(port: int) -> None:
    config = td.NodeConfig.local()
    async with td.open_node(SERVER, cookie=COOKIE, port=port, config=config) as node:
        print(f"[server] {node.name} listening on port {node.address[1]}", flush=True)
        async with node.open_process(name="main") as me:
            echo_pid = await node.spawn(echo, node, name="echo")
            me.monitor(echo_pid)
            downs = 0
            while downs < 2:  # the echo process and the client's process
                message = await me.receive()
                if isinstance(message, td.ProcessDown):
                    who = "echo" if message.pid == echo_pid else "client process"
                    print(f"[server] {who} {message.pid} ended: {message.reason}", flush=True)
                    downs += 1
                else:
                    print(f"[server] monitoring client process {message['client']}", flush=True)
                    me.monitor(message["client"])
        print("[server] done", flush=True)


async def client(port: int, wait: float = CONNECT_WAIT) -> None:
    config = td.NodeConfig.local()
    async with td.open_node("b@127.0.0.1", cookie=COOKIE, config=config) as node:
        last_error: Exception | None = None
        with trio.move_on_after(wait):
            while True:
                try:
                    await node.connect(f"{SERVER}:{port}")
                    break
                except td.ConnectError as exc:
                    last_error = exc
                    await trio.sleep(0.1)  # the server may still be starting
        if not node.nodes():
            raise NoServer(
                f"[client] no server at {SERVER}:{port} after {wait:.0f}s ({last_error});"
                f" start one first: python {sys.argv[0]} server {port}"
            )
        print(f"[client] connected to {node.nodes()}", flush=True)
        async with node.open_process() as me:
            await node.send(("echo", SERVER), {"from": me.pid, "body": "hello", "watch": True})
            reply = await me.receive(timeout=5)
            echo_pid = reply["from"]
            print(f"[client] {reply['echo']!r} came back from {echo_pid}", flush=True)
            for i in range(3):
                await node.send(echo_pid, {"from": me.pid, "body": i})
                print(f"[client] reply: {(await me.receive(timeout=5))['echo']}", flush=True)
            ref = me.monitor(echo_pid)
            await node.send(echo_pid, "stop")
            down = await me.receive(match=lambda m: isinstance(m, td.ProcessDown), timeout=5)
            assert down.ref == ref
            print(f"[client] echo process went down: {down.reason}", flush=True)
        print("[client] leaving", flush=True)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else PORT
    if mode == "server":
        trio.run(server, port)
    elif mode == "client":
        try:
            trio.run(client, port)
        except NoServer as exc:
            sys.exit(str(exc))
    elif mode == "both":
        child = subprocess.Popen([sys.executable, __file__, "server", str(port)])
        try:
            try:
                trio.run(client, port, BOTH_WAIT)
            except NoServer as exc:
                sys.exit(str(exc))
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
        sys.exit(child.returncode)
    else:
        sys.exit(f"usage: {sys.argv[0]} server|client|both [port]")


if __name__ == "__main__":
    main()
