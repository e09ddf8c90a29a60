"""Structured logging with correlation ids, on the standard library.

Everything logs to the stdlib logger ``trio_distribute`` (and its children),
which has a ``NullHandler`` by default, as a library's should: an
application decides where records go. :func:`set_backend` ``("console")`` is
a shortcut that prints them to stderr.

A *correlation id* names one piece of work across tasks and nodes. The
current one lives in a context variable: tasks inherit it, RPC calls carry
it to the task that serves them, and messages carry it to the process that
receives them (receiving a message makes its id current, or clears it if
the sender had none, like Erlang's ``seq_trace`` tokens). Every record
written through this module, and every record passing
:class:`CorrelationFilter`, has ``correlation_id`` and ``metadata``
attributes.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextvars import Token
from typing import Literal

from . import settings
from ._correlation import correlation_id as _correlation_id

__all__ = [
    "CorrelationFilter",
    "correlation",
    "current_correlation_id",
    "debug",
    "debug_with_correlation",
    "error",
    "error_with_correlation",
    "generate_correlation_id",
    "info",
    "info_with_correlation",
    "logger",
    "reset_correlation_id",
    "set_backend",
    "set_correlation_id",
    "warning",
    "warning_with_correlation",
]

logger = logging.getLogger("trio_distribute")

Metadata = Mapping[str, object] | Iterable[tuple[str, object]]

_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s%(meta)s"
_counter = itertools.count(1)
_console: logging.Handler | None = None


class CorrelationFilter(logging.Filter):
    """Gives every record ``correlation_id`` (the current one unless the
    record has its own) and ``metadata`` attributes, so formatters can use
    them. Attach it to your own handlers to see ids on the library's
    records."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        fields.setdefault("correlation_id", _correlation_id.get())
        metadata = fields.setdefault("metadata", {})
        record.meta = (
            " " + " ".join(f"{key}={value}" for key, value in metadata.items()) if metadata else ""
        )
        return True


def set_backend(backend: Literal["console", "logging"]) -> None:
    """Choose where the library's records go.

    ``"console"``: print them (INFO and above) to stderr with their
    correlation ids and metadata. ``"logging"``: leave them to the
    application's own ``logging`` configuration (the default).
    """
    global _console
    if backend not in ("console", "logging"):
        raise ValueError(f"backend must be 'console' or 'logging', got {backend!r}")
    if _console is not None:
        logger.removeHandler(_console)
        _console = None
    if backend == "console":
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(CorrelationFilter())
        handler.setFormatter(logging.Formatter(_CONSOLE_FORMAT))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        _console = handler


# ------------------------------------------------------------ correlation ids


def generate_correlation_id() -> str:
    """A new correlation id.

    Random (64 bits from :mod:`secrets`, as 16 hex digits) by default;
    with ``settings.set_use_crypto_ids(False)`` a cheaper id unique within
    this OS process and across its restarts: ``"<pid>-<start>-<counter>"``.
    """
    if settings.use_crypto_ids():
        return secrets.token_hex(8)
    return f"{os.getpid():x}-{_START:x}-{next(_counter):x}"


_START = int.from_bytes(os.urandom(4), "big")


def current_correlation_id() -> str | None:
    """The correlation id of the current task's work, if any."""
    return _correlation_id.get()


def set_correlation_id(value: str | None) -> Token[str | None]:
    """Make ``value`` current for this task (and tasks it starts later);
    returns a token for :func:`reset_correlation_id`."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"a correlation id is a str, got {type(value).__name__}")
    return _correlation_id.set(value)


def reset_correlation_id(token: Token[str | None]) -> None:
    """Restore the correlation id that was current before ``set_correlation_id``."""
    _correlation_id.reset(token)


@contextlib.contextmanager
def correlation(value: str | None = None) -> Iterator[str]:
    """Within the block, ``value`` (a new id if ``None``) is current.

    .. code-block:: python

        with log.correlation() as cid:
            await node.rpc.call(peer, "orders.place", order)  # carries cid
    """
    cid = generate_correlation_id() if value is None else value
    token = set_correlation_id(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


# -------------------------------------------------------------------- writing


def _log(level: int, msg: str, metadata: Metadata | None, cid: str | None) -> None:
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        msg,
        extra={"correlation_id": cid, "metadata": dict(metadata or {})},
        stacklevel=3,
    )


def debug(msg: str, metadata: Metadata | None = None) -> None:
    """Log at DEBUG with the current correlation id."""
    _log(logging.DEBUG, msg, metadata, _correlation_id.get())


def info(msg: str, metadata: Metadata | None = None) -> None:
    """Log at INFO with the current correlation id."""
    _log(logging.INFO, msg, metadata, _correlation_id.get())


def warning(msg: str, metadata: Metadata | None = None) -> None:
    """Log at WARNING with the current correlation id."""
    _log(logging.WARNING, msg, metadata, _correlation_id.get())


def error(msg: str, metadata: Metadata | None = None) -> None:
    """Log at ERROR with the current correlation id."""
    _log(logging.ERROR, msg, metadata, _correlation_id.get())


def debug_with_correlation(msg: str, metadata: Metadata | None, correlation_id: str) -> None:
    """Log at DEBUG with an explicit correlation id (the seed's spelling)."""
    _log(logging.DEBUG, msg, metadata, correlation_id)


def info_with_correlation(msg: str, metadata: Metadata | None, correlation_id: str) -> None:
    """Log at INFO with an explicit correlation id (the seed's spelling)."""
    _log(logging.INFO, msg, metadata, correlation_id)


def warning_with_correlation(msg: str, metadata: Metadata | None, correlation_id: str) -> None:
    """Log at WARNING with an explicit correlation id (the seed's spelling)."""
    _log(logging.WARNING, msg, metadata, correlation_id)


def error_with_correlation(msg: str, metadata: Metadata | None, correlation_id: str) -> None:
    """Log at ERROR with an explicit correlation id (the seed's spelling)."""
    _log(logging.ERROR, msg, metadata, correlation_id)
