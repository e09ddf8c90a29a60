"""Shared fixtures: every async test runs on both the trio and asyncio backends.

Importing property_examples registers the hypothesis profile that
``nox -s properties`` loads (full example counts)."""

from __future__ import annotations

import property_examples  # noqa: F401 (registers the "properties" profile)
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
