"""Shared fixtures: every async test runs on both the trio and asyncio backends."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_network: in a module on FakeNetwork and virtual time (tests/virtual.py), "
        "run this test on loopback sockets in real time",
    )
