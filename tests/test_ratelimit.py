"""The per-cause log limiter: one line per cause per interval, suppressed lines counted."""

from __future__ import annotations

import logging

import pytest

from trio_distribute._ratelimit import LogLimiter


def test_one_line_per_cause_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limiter = LogLimiter(logging.getLogger("td-test"), interval=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="td-test"):
        assert limiter.warning("junk", "junk from %s", "x")
        for _ in range(1000):
            assert not limiter.warning("junk", "junk from %s", "x")
        # Another cause is not held back by the first.
        assert limiter.warning("auth", "bad cookie from %s", "y")
        assert limiter.suppressed("junk") == 1000
        now[0] += 0.999
        assert not limiter.warning("junk", "junk from %s", "x")
        now[0] += 0.002
        assert limiter.warning("junk", "junk from %s", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "junk from x",
        "bad cookie from y",
        "junk from x (1001 similar line(s) suppressed)",
    ]
    assert limiter.suppressed("junk") == 0


def test_cause_table_is_bounded() -> None:
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("td-test"), clock=lambda: now[0], max_causes=4)
    for i in range(100):
        now[0] += 0.01
        limiter.warning(f"cause{i}", "x")
    assert len(limiter._state) == 4
