"""``trio_distribute.settings`` and ``trio_distribute.log``."""

from __future__ import annotations

import logging
import re

import anyio
import pytest

import trio_distribute as td
from trio_distribute import log, settings
from trio_distribute.testing import open_cluster


def test_the_library_logger_has_a_null_handler_and_no_output_by_default() -> None:
    logger = logging.getLogger("trio_distribute")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_correlation_ids_are_random_or_monotonic_per_setting() -> None:
    ids = {log.generate_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}", cid) for cid in ids)
    settings.set_use_crypto_ids(False)
    try:
        first, second = log.generate_correlation_id(), log.generate_correlation_id()
    finally:
        settings.set_use_crypto_ids(True)
    assert first != second
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0]
    assert int(second.rsplit("-", 1)[1], 16) == int(first.rsplit("-", 1)[1], 16) + 1
    with pytest.raises(TypeError):
        settings.set_use_crypto_ids(1)  # type: ignore[arg-type]


def test_max_message_size_setting_is_the_default_of_new_configs() -> None:
    default = settings.max_message_size()
    settings.set_max_message_size(4096)
    try:
        assert td.NodeConfig().max_message_size == 4096
        assert td.NodeConfig(max_message_size=8192).max_message_size == 8192
    finally:
        settings.set_max_message_size(default)
    assert td.NodeConfig().max_message_size == default
    for bad in [0, 1023, 2.5, "big"]:
        with pytest.raises(ValueError, match="max_message_size"):
            settings.set_max_message_size(bad)  # type: ignore[arg-type]


async def test_a_smaller_max_message_size_setting_is_enforced_by_new_nodes() -> None:
    default = settings.max_message_size()
    settings.set_max_message_size(2048)
    try:
        config = td.NodeConfig.local()
    finally:
        settings.set_max_message_size(default)
    with anyio.fail_after(5):
        async with open_cluster(2, config=config) as (a, b):
            async with b.open_process() as proc:
                with pytest.raises(td.MessageTooLargeError):
                    await a.send(proc.pid, b"x" * 4096)
                await a.send(proc.pid, b"x" * 1024)
                assert len(await proc.receive()) == 1024


def test_with_correlation_helpers_write_records_with_id_and_metadata(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_distribute")
    log.info_with_correlation("starting", [("user", "alice")], "cid-1")
    log.error_with_correlation("failed", {"code": 3}, "cid-2")
    log.debug_with_correlation("detail", None, "cid-3")
    log.warning_with_correlation("careful", {}, "cid-4")
    got = [(r.levelname, r.getMessage(), r.correlation_id, r.metadata) for r in caplog.records]  # type: ignore[attr-defined]
    assert got == [
        ("INFO", "starting", "cid-1", {"user": "alice"}),
        ("ERROR", "failed", "cid-2", {"code": 3}),
        ("DEBUG", "detail", "cid-3", {}),
        ("WARNING", "careful", "cid-4", {}),
    ]
    # The record points at the caller, not at the log module.
    assert {r.filename for r in caplog.records} == {"test_log_settings.py"}


def test_plain_helpers_use_the_current_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_distribute")
    with log.correlation("outer") as cid:
        assert cid == "outer" and log.current_correlation_id() == "outer"
        log.info("inside")
        with log.correlation() as inner:
            assert inner != "outer"
            log.debug("nested")
        log.warning("back")
    log.error("outside")
    ids = [r.correlation_id for r in caplog.records]  # type: ignore[attr-defined]
    assert ids == ["outer", inner, "outer", None]
    with pytest.raises(TypeError):
        log.set_correlation_id(5)  # type: ignore[arg-type]


def test_console_backend_prints_ids_and_metadata_and_logging_backend_removes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("trio_distribute")
    level = logger.level
    try:
        log.set_backend("console")
        log.set_backend("console")  # idempotent: one handler, not two
        with log.correlation("cid-console"):
            log.info("hello", {"k": "v"})
            logging.getLogger("trio_distribute.node").info("from the library")
        err = capsys.readouterr().err
        assert err.count("hello") == 1
        assert "[cid-console] hello k=v" in err
        assert "[cid-console] from the library" in err
        log.set_backend("logging")
        log.info("quiet")
        assert "quiet" not in capsys.readouterr().err
    finally:
        log.set_backend("logging")
        logger.setLevel(level)
    with pytest.raises(ValueError, match="backend"):
        log.set_backend("syslog")  # type: ignore[arg-type]
