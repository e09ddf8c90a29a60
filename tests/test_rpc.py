"""RPC: the table of cases from issue 5, each a test, on both backends."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from virtual import anyio_backend, fake_network, open_cluster, open_node

import trio_distribute as td
from trio_distribute import log, remote_call
from trio_distribute.testing import wait_until

__all__ = ["anyio_backend", "fake_network"]  # fixtures

COOKIE = "rpc-cookie"


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int, *, delay: float = 0.0) -> int:
    await anyio.sleep(delay)
    return a + b


def fail(message: str) -> None:
    raise KeyError(message)


def not_exported() -> str:
    return "should not be reachable"


@remote_call.expose("tests.exposed_echo")
def exposed_echo(value: object) -> object:
    return value


@asynccontextmanager
async def pair(config: td.NodeConfig | None = None) -> AsyncIterator[tuple[td.Node, td.Node]]:
    """Two connected nodes; ``b`` exports ``add``, ``async_add`` and ``fail``."""
    async with open_cluster(["a", "b"], cookie=COOKIE, config=config) as (a, b):
        for fn in (add, async_add, fail):
            b.rpc.export(fn)
        yield a, b


class Watch:
    """Records how a remote task ended."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = False
        self.finished = False

    async def sleep(self, seconds: float) -> str:
        self.started.set()
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished = True
        return "slept"


# ----------------------------------------------------------------- success


async def test_sync_and_async_functions_return_their_results() -> None:
    with anyio.fail_after(10):
        async with pair() as (a, b):
            assert await a.rpc.call(b.name, "add", 2, 3) == 5
            assert await a.rpc.call(b.name, "async_add", 2, b=40) == 42
            assert await a.rpc.call(b.name, "async_add", 1, 1, delay=0.01) == 2
            assert await a.rpc.call(b.name, "tests.exposed_echo", [1, "x", {"k": b""}]) == [
                1,
                "x",
                {"k": b""},
            ]
            stats = b.rpc.statistics()
            assert stats.calls_served == 4 and stats.serving == 0
            assert a.rpc.statistics().calls_sent == 4 and a.rpc.statistics().in_flight == 0


async def test_pids_and_message_classes_travel_as_arguments_and_results() -> None:
    with anyio.fail_after(10):
        async with pair() as (a, b):
            async with a.open_process() as proc:
                echoed = await a.rpc.call(b.name, "tests.exposed_echo", proc.pid)
                assert echoed == proc.pid


async def test_a_call_to_the_own_node_runs_here_with_the_same_errors() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a"], cookie=COOKIE) as (a,):
            a.rpc.export(add)
            a.rpc.export(fail)
            assert await a.rpc.call(a.name, "add", 1, 2) == 3
            with pytest.raises(td.RemoteError) as info:
                await a.rpc.call(a.name, "fail", "here")
            assert info.value.type_name == "KeyError"
            with pytest.raises(td.BadRpcError):
                await a.rpc.call(a.name, "nothing")


async def test_seed_compatible_spelling() -> None:
    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(add, name="math.add")
            assert await remote_call.call(a, b.name, "math", "add", [20, 22], timeout=2.0) == 42
            assert await td.rpc.call(a, b.name, "math", "add", (1, 2)) == 3


# ------------------------------------------------------------------ errors


async def test_remote_exception_gives_type_message_and_traceback() -> None:
    with anyio.fail_after(10):
        async with pair() as (a, b):
            with pytest.raises(td.RemoteError) as info:
                await a.rpc.call(b.name, "fail", "no such key")
            error = info.value
            assert error.type_name == "KeyError"
            assert error.message == "'no such key'"
            assert error.node == b.name and error.function == "fail"
            assert "in fail" in error.remote_traceback
            assert "raise KeyError(message)" in error.remote_traceback
            assert "remote_call.py" not in error.remote_traceback  # starts at the user's code


async def test_unknown_and_unexported_functions_are_bad_rpc() -> None:
    with anyio.fail_after(10):
        async with pair() as (a, b):
            with pytest.raises(td.BadRpcError, match="no exported function"):
                await a.rpc.call(b.name, "does.not.exist")
            # Defined in an importable module, but not exported.
            with pytest.raises(td.BadRpcError):
                await a.rpc.call(b.name, "test_rpc.not_exported")
            with pytest.raises(td.BadRpcError):
                await a.rpc.call(b.name, "math.hypot", 3, 4)
            b.rpc.unexport("add")
            with pytest.raises(td.BadRpcError):
                await a.rpc.call(b.name, "add", 1, 2)
            # The connection survived every refusal.
            assert await a.rpc.call(b.name, "async_add", 1, 2) == 3


async def test_allow_any_module_resolves_by_import_only_when_on() -> None:
    with anyio.fail_after(10):
        async with pair(td.NodeConfig.local(allow_any_module=True)) as (a, b):
            assert await a.rpc.call(b.name, "math.hypot", 3, 4) == 5.0
            assert await a.rpc.call(b.name, "operator.add", 3, 4) == 7
            for refused in ["os._exit", "_thread.start_new_thread", "math", "no_such_module.f"]:
                with pytest.raises(td.BadRpcError):
                    await a.rpc.call(b.name, refused)


def test_allow_any_module_setting_is_the_default_of_new_configs() -> None:
    assert td.NodeConfig().allow_any_module is False
    td.settings.set_allow_any_module(True)
    try:
        assert td.NodeConfig().allow_any_module is True
        assert td.NodeConfig(allow_any_module=False).allow_any_module is False
    finally:
        td.settings.set_allow_any_module(False)
    with pytest.raises(TypeError):
        td.settings.set_allow_any_module("yes")  # type: ignore[arg-type]


async def test_wrong_arguments_are_bad_rpc_but_a_type_error_inside_is_remote() -> None:
    def raises_type_error(x: int) -> None:
        raise TypeError("inside the function")

    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(raises_type_error)
            with pytest.raises(td.BadRpcError, match="arguments"):
                await a.rpc.call(b.name, "add", 1)
            with pytest.raises(td.BadRpcError, match="arguments"):
                await a.rpc.call(b.name, "async_add", 1, 2, 3)
            with pytest.raises(td.BadRpcError, match="arguments"):
                await a.rpc.call(b.name, "add", 1, 2, c=3)
            with pytest.raises(td.RemoteError) as info:
                await a.rpc.call(b.name, "raises_type_error", 1)
            assert info.value.type_name == "TypeError"


async def test_values_that_cannot_travel_fail_on_the_side_that_tried() -> None:
    def returns_a_set() -> object:
        return {1, 2}

    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(returns_a_set)
            with pytest.raises(td.EncodeError):
                await a.rpc.call(b.name, "add", {1}, 2)
            with pytest.raises(td.RemoteError) as info:
                await a.rpc.call(b.name, "returns_a_set")
            assert info.value.type_name.endswith("EncodeError")
            assert a.rpc.statistics().in_flight == 0
            with pytest.raises(td.MessageTooLargeError):
                await a.rpc.call(b.name, "tests.exposed_echo", b"x" * (17 * 1024 * 1024))


async def test_invalid_timeouts_and_names_are_refused_before_sending() -> None:
    with anyio.fail_after(10):
        async with pair() as (a, b):
            for timeout in [-1, float("nan"), "1"]:
                with pytest.raises(ValueError, match="timeout"):
                    await a.rpc.call(b.name, "add", 1, 2, timeout=timeout)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="function name"):
                await a.rpc.call(b.name, "", 1)
            assert a.rpc.statistics().calls_sent == 0


# ------------------------------------------------- timeouts and cancellation


async def test_timeout_raises_and_cancels_the_remote_task() -> None:
    watch = Watch()
    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(watch.sleep, name="sleep")
            started = anyio.current_time()
            with pytest.raises(td.RpcTimeoutError) as info:
                await a.rpc.call(b.name, "sleep", 30, timeout=0.2)
            elapsed = anyio.current_time() - started
            assert isinstance(info.value, TimeoutError)
            assert elapsed >= 0.2
            # The caller did not wait for the remote function (30 s).
            assert elapsed < 5
            await wait_until(lambda: watch.cancelled)
            await wait_until(lambda: a.rpc.statistics().cancel_acks == 1)
            assert not watch.finished
            assert b.rpc.statistics().serving == 0
            assert a.rpc.statistics().cancels_sent == 1


async def test_caller_cancelled_by_an_outer_scope_cancels_the_remote_task() -> None:
    watch = Watch()
    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(watch.sleep, name="sleep")
            async with anyio.create_task_group() as tg:

                async def caller() -> None:
                    await a.rpc.call(b.name, "sleep", 30, timeout=None)

                tg.start_soon(caller)
                await watch.started.wait()
                tg.cancel_scope.cancel()
            await wait_until(lambda: watch.cancelled)
            await wait_until(lambda: a.rpc.statistics().cancel_acks == 1)
            assert a.rpc.statistics().in_flight == 0


async def test_a_late_reply_is_dropped_and_never_reaches_a_mailbox() -> None:
    finished = anyio.Event()

    async def stubborn() -> str:
        # Refuses cancellation long enough to answer after the timeout.
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.3)
        finished.set()
        return "late"

    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(stubborn)
            async with a.open_process() as proc:
                with pytest.raises(td.RpcTimeoutError):
                    await a.rpc.call(b.name, "stubborn", timeout=0.05)
                await finished.wait()
                await wait_until(lambda: a.rpc.statistics().late_replies == 1)
                assert proc.pending() == 0
            assert await a.rpc.call(b.name, "add", 1, 2) == 3


async def test_node_stopping_mid_call_gives_node_down_not_a_hang() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a"], cookie=COOKIE) as (a,):
            watch = Watch()
            async with anyio.create_task_group() as tg:

                async def run_b(*, task_status: anyio.abc.TaskStatus[td.Node]) -> None:
                    async with open_node("b@127.0.0.1", cookie=COOKIE) as b:
                        b.rpc.export(watch.sleep, name="sleep")
                        task_status.started(b)
                        await anyio.sleep_forever()

                b = await tg.start(run_b)
                await a.connect(f"{b.name}:{b.address[1]}")

                async def stop_b_when_called() -> None:
                    await watch.started.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_b_when_called)
                with pytest.raises(td.NodeDownError):
                    await a.rpc.call(b.name, "sleep", 30, timeout=None)
            assert a.rpc.statistics().in_flight == 0
            # Down before the call: NodeDownError at once, no hang.
            with pytest.raises(td.NodeDownError):
                await a.rpc.call("b@127.0.0.1", "sleep", 1, timeout=None)
            with pytest.raises(td.NodeDownError):
                await a.rpc.call("nobody@127.0.0.1", "add", 1, 2)


async def test_connection_lost_mid_call_fails_the_call_and_cancels_the_remote_task() -> None:
    watch = Watch()
    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(watch.sleep, name="sleep")
            async with anyio.create_task_group() as tg:

                async def drop_link() -> None:
                    await watch.started.wait()
                    # As if the cable were pulled: no goodbye.
                    a.transport.connections[b.name].close("connection_closed")

                tg.start_soon(drop_link)
                with pytest.raises(td.NodeDownError):
                    await a.rpc.call(b.name, "sleep", 30, timeout=None)
            assert a.rpc.statistics().in_flight == 0
            # Nobody is left to receive the result: b stops serving it.
            await wait_until(lambda: watch.cancelled)


# ---------------------------------------------------------------- many calls


async def test_64_concurrent_calls_on_one_connection_get_their_own_answers() -> None:
    rng = random.Random(64)
    delays = [rng.random() * 0.05 for _ in range(64)]
    results: dict[int, int] = {}
    with anyio.fail_after(20):
        async with pair() as (a, b):

            async def one(i: int) -> None:
                if i % 2:
                    results[i] = await a.rpc.call(b.name, "async_add", i, 1000, delay=delays[i])
                else:
                    results[i] = await a.rpc.call(b.name, "add", i, 1000)

            async with anyio.create_task_group() as tg:
                for i in range(64):
                    tg.start_soon(one, i)
            assert results == {i: i + 1000 for i in range(64)}
            assert len(a.transport.connections) == 1
            assert a.rpc.statistics().in_flight == 0


async def test_multicall_reports_up_down_and_slow_nodes_in_node_order() -> None:
    async def slow_add(x: int, y: int) -> int:
        await anyio.sleep(30)
        return x + y

    with anyio.fail_after(10):
        async with open_cluster(["a", "b", "c"], cookie=COOKIE) as (a, b, c):
            b.rpc.export(async_add)
            c.rpc.export(async_add)
            c.rpc.export(slow_add, name="slow")
            b.rpc.export(add, name="slow")
            nodes = [b.name, "down@127.0.0.1", c.name, b.name]
            results = await a.rpc.multicall(nodes, "slow", 1, 2, timeout=0.3)
            assert results[0] == td.Ok(3) and results[3] == td.Ok(3)
            assert isinstance(results[1], td.Err)
            assert isinstance(results[1].error, td.NodeDownError)
            assert isinstance(results[2], td.Err)
            assert isinstance(results[2].error, td.RpcTimeoutError)
            with pytest.raises(td.RpcTimeoutError):
                results[2].unwrap()
            ok = await a.rpc.multicall([b.name, c.name], "async_add", 1, 1)
            assert [r.unwrap() for r in ok] == [2, 2]


# --------------------------------------------------------------------- casts


async def test_cast_runs_remotely_and_failures_are_counted_there() -> None:
    seen = anyio.Event()
    values: list[int] = []

    async def record(value: int) -> None:
        values.append(value)
        seen.set()

    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(record)
            await a.rpc.cast(b.name, "record", 7)
            await seen.wait()
            assert values == [7]
            await a.rpc.cast(b.name, "no.such.function")
            await a.rpc.cast(b.name, "fail", "boom")
            await wait_until(lambda: b.statistics().drops.get("bad_rpc_cast") == 1)
            await wait_until(lambda: b.statistics().drops.get("rpc_cast_failed") == 1)
            with pytest.raises(td.NodeDownError):
                await a.rpc.cast("nobody@127.0.0.1", "record", 1)
            assert await a.rpc.call(b.name, "add", 1, 1) == 2


# ------------------------------------------------------------ bad wire input


@pytest.mark.parametrize(
    "frame",
    [
        [40, "not-an-int", "add", [], {}, None],
        [40, 1, 5, [], {}, None],
        [40, 1, "add", "args", {}, None],
        [40, 1, "add", [], {1: 2}, None],
        [40, 1, "add", [], {}, 99],
        [40, 1],
        [41, 1, [], {}, None],
        [42, "x"],
        [43, 1, 77, None],
    ],
    ids=lambda f: f"kind{f[0]}-{len(f)}",
)
async def test_malformed_rpc_frames_close_only_that_connection(frame: list[object]) -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a", "b", "c"], cookie=COOKIE) as (a, b, c):
            for node in (b, c):
                node.rpc.export(add)
            calls = a.rpc._calls
            if frame[0] == 43:
                # A reply needs a waiting call to be checked against.
                waiting = anyio.Event()

                async def waiter() -> None:
                    waiting.set()
                    with pytest.raises(td.NodeDownError):
                        await a.rpc.call(b.name, "never", timeout=None)

                b.rpc.export(Watch().sleep, name="never")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await waiting.wait()
                    await wait_until(lambda: bool(calls))
                    req = next(iter(calls))
                    conn = b.transport.connections[a.name]
                    conn.write(b.transport.encode_frame([43, req, 77, None]))
            else:
                conn = a.transport.connections[b.name]
                conn.write(a.transport.encode_frame(frame))
            await wait_until(lambda: b.name not in a.nodes())
            # Everyone else is still served.
            assert await a.rpc.call(c.name, "add", 1, 2) == 3


# -------------------------------------------------------- correlation ids


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("trio_distribute")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_the_callers_correlation_id_is_in_the_remote_handlers_log_record(
    records: Records,
) -> None:
    def handler(order: str) -> str:
        log.info("placing order", {"order": order})
        return log.current_correlation_id() or ""

    async def async_handler() -> str | None:
        await anyio.lowlevel.checkpoint()
        log.warning("async handler")
        return log.current_correlation_id()

    with anyio.fail_after(10):
        async with pair() as (a, b):
            b.rpc.export(handler, name="orders.place")
            b.rpc.export(async_handler)
            with log.correlation() as cid:
                assert await a.rpc.call(b.name, "orders.place", "o-1") == cid
                assert await a.rpc.call(b.name, "async_handler") == cid
            placed = [r for r in records.records if r.getMessage() == "placing order"]
            assert len(placed) == 1
            assert placed[0].correlation_id == cid  # type: ignore[attr-defined]
            assert placed[0].metadata == {"order": "o-1"}  # type: ignore[attr-defined]
            other = [r for r in records.records if r.getMessage() == "async handler"]
            assert other[0].correlation_id == cid  # type: ignore[attr-defined]
            # Without an id, the remote handler has none either.
            assert await a.rpc.call(b.name, "async_handler") is None


async def test_correlation_ids_travel_with_messages_and_are_cleared_by_untraced_ones() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a", "b"], cookie=COOKIE) as (a, b):
            seen: list[tuple[object, str | None]] = []

            async def server(proc: td.Process) -> None:
                async for message in proc:
                    seen.append((message, log.current_correlation_id()))
                    if message == "stop":
                        return

            pid = await b.spawn(server, name="server")
            with log.correlation("cid-remote") as cid:
                await a.send(pid, "by pid")
                await a.send(("server", b.name), "by name")
            await a.send(pid, "untraced")
            await wait_until(lambda: len(seen) == 3)  # the order below is then fixed
            with log.correlation("cid-local"):
                await b.send("server", "local name")
                await b.send(pid, "local pid")
            async with b.monitor(pid) as down:
                await a.send(pid, "stop")
                await down.receive()
            assert seen == [
                ("by pid", cid),
                ("by name", cid),
                ("untraced", None),
                ("local name", "cid-local"),
                ("local pid", "cid-local"),
                ("stop", None),
            ]


async def test_selective_receive_matches_the_message_not_its_wrapper() -> None:
    with anyio.fail_after(10):
        async with open_cluster(["a"], cookie=COOKIE) as (a,):
            async with a.open_process() as proc:
                with log.correlation("c1"):
                    await a.send(proc.pid, {"n": 1})
                with log.correlation("c2"):
                    await a.send(proc.pid, {"n": 2})
                log.set_correlation_id(None)
                assert await proc.receive(match=lambda m: m["n"] == 2) == {"n": 2}
                assert log.current_correlation_id() == "c2"
                assert proc.receive_nowait(match=lambda m: m["n"] == 1) == {"n": 1}
                assert log.current_correlation_id() == "c1"
