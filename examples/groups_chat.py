"""A chat room across two nodes: a process group and a global name.

Run it in two terminals::

    python examples/groups_chat.py server            # node a@127.0.0.1, port 4380
    python examples/groups_chat.py client            # node b@127.0.0.1 joins

or start both from one command::

    python examples/groups_chat.py both

Node a runs the ``lobby`` service, registered globally, and a room member.
Node b finds the lobby by name with ``send_global``, joins its own member to
the ``room`` group, and broadcasts lines that every member (on both nodes)
prints. When b's member leaves, a's group monitor reports it and a stops.
"""

from __future__ import annotations

import subprocess
import sys

import trio

import trio_distribute as td

COOKIE = "groups-chat-example"
SERVER = "a@127.0.0.1"
PORT = 4380
ROOM = "room"


async def member(proc: td.Process, label: str) -> None:
    """Print every line said in the room until told to stop."""
    async for message in proc:
        if message == "stop":
            return
        print(f"[{label}] heard {message['text']!r} from {message['from']}", flush=True)


async def lobby(proc: td.Process, node: td.Node) -> None:
    """Welcome newcomers: reply with who is in the room."""
    async for message in proc:
        names = sorted(str(p) for p in node.groups.members(ROOM))
        await node.send(message["reply_to"], {"welcome": names})


async def server(port: int) -> None:
    config = td.NodeConfig.local()
    async with td.open_node(SERVER, cookie=COOKIE, port=port, config=config) as node:
        print(f"[server] {node.name} listening on port {node.address[1]}", flush=True)
        await node.registry.register("lobby", await node.spawn(lobby, node))
        mine = await node.spawn(member, "server")
        async with node.groups.monitor(ROOM) as events:
            await node.groups.join(ROOM, mine)
            while True:
                event = await events.receive()
                print(f"[server] {event}", flush=True)
                if isinstance(event, td.GroupLeft) and event.pids[0].node != node.name:
                    break
        await node.send(mine, "stop")
        print("[server] done", flush=True)


async def client(port: int) -> None:
    config = td.NodeConfig.local()
    async with td.open_node("b@127.0.0.1", cookie=COOKIE, config=config) as node:
        with trio.fail_after(10):
            while True:
                try:
                    await node.connect(f"{SERVER}:{port}")
                    break
                except td.ConnectError:
                    await trio.sleep(0.1)  # the server may still be starting
            while node.registry.whereis("lobby") is None:
                await trio.sleep(0.05)  # the server's table arrives on connect
        mine = await node.spawn(member, "client")
        await node.groups.join(ROOM, mine)
        async with node.open_process() as me:
            await node.send_global("lobby", {"reply_to": me.pid})
            print(f"[client] lobby says: {await me.receive(timeout=5)}", flush=True)
            with trio.fail_after(5):
                while len(node.groups.members(ROOM)) < 2:
                    await trio.sleep(0.05)
            sent = await node.groups.broadcast(ROOM, {"text": "hello, room", "from": node.name})
            print(f"[client] broadcast reached {sent} members", flush=True)
            await trio.sleep(0.5)  # let both members print
        await node.groups.leave(ROOM, mine)
        await node.send(mine, "stop")
        print("[client] left the room", flush=True)
        await trio.sleep(0.2)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else PORT
    if mode == "server":
        trio.run(server, port)
    elif mode == "client":
        trio.run(client, port)
    elif mode == "both":
        child = subprocess.Popen([sys.executable, __file__, "server", str(port)])
        try:
            trio.run(client, port)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
        sys.exit(child.returncode)
    else:
        sys.exit(f"usage: {sys.argv[0]} server|client|both [port]")


if __name__ == "__main__":
    main()
