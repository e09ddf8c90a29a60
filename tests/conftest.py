"""Shared fixtures: every async test runs on both the trio and asyncio
backends; ``fork_server`` starts Python programs in processes forked from a
warm interpreter (tests/fork_server.py), one server per test worker.

Importing property_examples registers the hypothesis profile that
``nox -s properties`` loads (full example counts)."""

from __future__ import annotations

from collections.abc import Iterator

import property_examples  # noqa: F401 (registers the "properties" profile)
import pytest
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

