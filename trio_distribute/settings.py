"""Process-wide defaults for behaviour that affects safety and logging.

Like the seed library's ``settings`` module. A :class:`~trio_distribute.NodeConfig`
reads these defaults when it is created, and its own fields
(``allow_any_module``, ``max_message_size``) override them per node, so
change a setting *before* building the configs that should see it.
"""

from __future__ import annotations

import attrs

__all__ = [
    "allow_any_module",
    "max_message_size",
    "set_allow_any_module",
    "set_max_message_size",
    "set_use_crypto_ids",
    "use_crypto_ids",
]

#: The smallest ``max_message_size`` accepted: handshakes and control frames
#: must always fit.
MIN_MESSAGE_SIZE = 1024


@attrs.define(kw_only=True)
class _Settings:
    allow_any_module: bool = False
    use_crypto_ids: bool = True
    max_message_size: int = 16 * 1024 * 1024


_current = _Settings()


def set_allow_any_module(allow: bool) -> None:
    """Let RPC resolve ``"module.function"`` names by import (default ``False``).

    Only for clusters where every node with the cookie is trusted: it lets a
    peer call any public function of any importable module.
    """
    if not isinstance(allow, bool):
        raise TypeError(f"allow must be a bool, got {type(allow).__name__}")
    _current.allow_any_module = allow


def allow_any_module() -> bool:
    """The current default of ``NodeConfig.allow_any_module``."""
    return _current.allow_any_module


def set_use_crypto_ids(use_crypto: bool) -> None:
    """Make :func:`trio_distribute.log.generate_correlation_id` use random
    ids from :mod:`secrets` (``True``, the default) or a cheaper
    process-unique monotonic counter (``False``)."""
    if not isinstance(use_crypto, bool):
        raise TypeError(f"use_crypto must be a bool, got {type(use_crypto).__name__}")
    _current.use_crypto_ids = use_crypto


def use_crypto_ids() -> bool:
    """Whether correlation ids are random (see :func:`set_use_crypto_ids`)."""
    return _current.use_crypto_ids


def set_max_message_size(size: int) -> None:
    """The default ``NodeConfig.max_message_size``: the largest encoded
    message a node sends or accepts (default 16 MiB, at least 1 KiB)."""
    if type(size) is not int or size < MIN_MESSAGE_SIZE:
        raise ValueError(f"max_message_size must be an int >= {MIN_MESSAGE_SIZE}, got {size!r}")
    _current.max_message_size = size


def max_message_size() -> int:
    """The current default of ``NodeConfig.max_message_size``."""
    return _current.max_message_size
