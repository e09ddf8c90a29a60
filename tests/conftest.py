"""Shared fixtures: every async test runs on both the trio and asyncio
backends; ``fork_server`` starts Python programs in processes forked from a
warm interpreter (tests/fork_server.py), one server per test worker.

A test on trio runs in ``trio.run``, as a program does (see
``pytest_pyfunc_call``).

Importing property_examples registers the hypothesis profile that
``nox -s properties`` loads (full example counts)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator

import property_examples  # noqa: F401 (registers the "properties" profile)
import pytest
import trio
from anyio.pytest_plugin import extract_backend_and_options
from forked import ForkServer


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    server = ForkServer()
    yield server
    server.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_network: in a module on FakeNetwork and virtual time (tests/virtual.py), "
        "run this test on loopback sockets in real time",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an async test on trio in ``trio.run``.

    anyio's plugin would run it in trio's guest mode, inside a loop of its
    own, so that async fixtures can share the test's run; a guest run waits
    for I/O in a helper thread and hands every scheduling round over to the
    host through a queue, which costs about a sixth of the CPU of a test
    that runs nodes in virtual time. A test with an async fixture, or one
    that hypothesis drives, is left to anyio's plugin.
    """
    backend = pyfuncitem.funcargs.get("anyio_backend")
    test = pyfuncitem.obj
    if not backend or not inspect.iscoroutinefunction(test) or hasattr(test, "hypothesis"):
        return None
    name, options = extract_backend_and_options(backend)
    if name != "trio" or _has_async_fixture(pyfuncitem):
        return None
    arguments = {arg: pyfuncitem.funcargs[arg] for arg in pyfuncitem._fixtureinfo.argnames}
    trio.run(functools.partial(test, **arguments), **options)
    return True


def _has_async_fixture(item: pytest.Function) -> bool:
    for definitions in item._fixtureinfo.name2fixturedefs.values():
        function = definitions[-1].func
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            return True
    return False
