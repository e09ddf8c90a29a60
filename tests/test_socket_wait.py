"""The wait a process makes on a lent socket: readable bytes end it, and
so does a kick from another task, once per kick; closing it ends a wait
with ClosedResourceError and frees its descriptors. Runs under trio's
MockClock: a wait that must not end is shown by the clock jumping past a
deadline while it still waits."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from trio_distribute import _socket_wait
from trio_distribute._socket_wait import SocketWait, socket_wait_for

pytestmark = pytest.mark.skipif(not _socket_wait._SUPPORTED, reason="needs epoll and eventfd")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def run(fn: object) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


async def ends_within(wait: SocketWait, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        await wait.wait()
        return True
    return False


def test_bytes_on_the_socket_end_the_wait(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    async def main() -> None:
        wait = SocketWait(a)
        assert not await ends_within(wait, 1)
        b.send(b"x")
        assert await ends_within(wait, 1)
        # Level-triggered: the byte is still there.
        assert await ends_within(wait, 1)
        assert a.recv(10) == b"x"
        assert not await ends_within(wait, 1)
        wait.close()

    run(main)


def test_a_kick_ends_one_wait(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair

    async def main() -> None:
        wait = SocketWait(a)
        wait.kick()
        wait.kick()  # kicks before a wait count once
        assert await ends_within(wait, 1)
        assert not await ends_within(wait, 1)
        wait.close()

    run(main)


def test_a_kick_from_another_task_wakes_the_waiter(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair

    async def main() -> None:
        wait = SocketWait(a)
        woken_at: list[float] = []

        async def waiter() -> None:
            await wait.wait()
            woken_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(5)
            assert woken_at == []
            wait.kick()
        assert woken_at == [5]
        wait.close()

    run(main)


def test_closing_ends_a_wait_and_frees_the_descriptors(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair

    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        wait = SocketWait(a)
        assert len(os.listdir("/proc/self/fd")) == before + 2
        raised: list[BaseException] = []

        async def waiter() -> None:
            try:
                await wait.wait()
            except trio.ClosedResourceError as exc:
                raised.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(1)
            wait.close()
        assert len(raised) == 1
        assert len(os.listdir("/proc/self/fd")) == before
        wait.kick()  # nothing to kick any more: no error
        wait.close()

    run(main)


def test_no_wait_is_made_without_descriptors(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = pair

    def no_more(*args: object) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "eventfd", no_more)
    before = len(os.listdir("/proc/self/fd"))
    assert socket_wait_for(a) is None
    assert len(os.listdir("/proc/self/fd")) == before  # the epoll set was closed


def test_the_kick_descriptor_never_blocks_and_is_not_inherited(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    import fcntl

    a, _ = pair

    async def main() -> None:
        wait = SocketWait(a)
        kick_fd = wait._kick_fd
        assert fcntl.fcntl(kick_fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert not os.get_inheritable(kick_fd)
        wait.close()

    run(main)
