"""Identifiers that travel between nodes: node names, pids and refs.

They live in their own small module because both the codec and the runtime
need them, and neither should import the other.
"""

from __future__ import annotations

import re
from typing import TypeVar

import attrs

__all__ = [
    "Pid",
    "Ref",
    "check_label",
    "unchecked_id",
    "validate_cookie",
    "validate_node_name",
]

_SHORT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}")
MAX_COOKIE_BYTES = 1024


def validate_node_name(name: object) -> str:
    """Return ``name`` if it is a valid ``"short@host"`` node name.

    Raises:
        ValueError: naming the rule that was broken.
    """
    if not isinstance(name, str):
        raise ValueError(f"node name must be a str like 'a@127.0.0.1', got {type(name).__name__}")
    short, at, host = name.partition("@")
    if not at:
        raise ValueError(f"node name {name!r} must have the form 'short@host'")
    if not _SHORT_NAME.fullmatch(short):
        raise ValueError(
            f"node name {name!r}: the part before '@' must be 1-64 characters from A-Z a-z 0-9 _ -"
        )
    if not _HOST.fullmatch(host):
        raise ValueError(
            f"node name {name!r}: the host after '@' must be 1-253 characters "
            "from A-Z a-z 0-9 . _ - (no port, no spaces)"
        )
    return name


def validate_cookie(cookie: object) -> bytes:
    """Return the cookie as bytes if it is acceptable.

    Raises:
        ValueError: the cookie is empty, too long or not str/bytes.
    """
    if isinstance(cookie, str):
        raw = cookie.encode("utf-8")
    elif isinstance(cookie, bytes):
        raw = cookie
    else:
        raise ValueError(f"cookie must be str or bytes, got {type(cookie).__name__}")
    if not raw:
        raise ValueError("cookie must not be empty")
    if len(raw) > MAX_COOKIE_BYTES:
        raise ValueError(f"cookie must be at most {MAX_COOKIE_BYTES} bytes")
    return raw


def check_label(value: object, what: str, limit: int = 255) -> str:
    """Return ``value`` if it is a non-empty str of at most ``limit``
    characters (process names, global names, group names).

    Raises:
        ValueError: naming ``what`` and the rule.
    """
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(
            f"{what} must be a non-empty str of at most {limit} characters, got {value!r}"
        )
    return value


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative int, got {value!r}")


def _node_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    validate_node_name(value)


@attrs.frozen(order=True, cache_hash=True)
class Pid:
    """A process identifier: which node, which process, which run of the node.

    ``creation`` changes every time a node starts, so a pid kept from an
    earlier run of a node with the same name never matches a new process.
    """

    node: str = attrs.field(validator=_node_name)
    id: int = attrs.field(validator=_non_negative)
    creation: int = attrs.field(validator=_non_negative)

    def __str__(self) -> str:
        return f"<{self.node}.{self.id}.{self.creation}>"


@attrs.frozen(order=True, cache_hash=True)
class Ref:
    """A unique reference (monitor refs, request ids), unique per node run."""

    # The hash is cached as Pid's is: a call's ref is a dict key on both
    # nodes (the waiting call, the call being served) and is hashed several
    # times per call.

    node: str = attrs.field(validator=_node_name)
    id: int = attrs.field(validator=_non_negative)
    creation: int = attrs.field(validator=_non_negative)

    def __str__(self) -> str:
        return f"#Ref<{self.node}.{self.id}.{self.creation}>"


_Id = TypeVar("_Id", Pid, Ref)


_new_object = object.__new__
_set_attribute = object.__setattr__


def unchecked_id(kind: type[_Id], node: str, id: int, creation: int) -> _Id:
    """``kind(node, id, creation)`` without its validators, for values the
    caller has checked already (this node's own name and a counter; a name
    validated before and ints known to be non-negative): a fresh ref per
    call, or a pid or ref decoded from a frame, pays for no regular
    expression."""
    made = _new_object(kind)
    _set_attribute(made, "node", node)
    _set_attribute(made, "id", id)
    _set_attribute(made, "creation", creation)
    _set_attribute(made, "_attrs_cached_hash", None)
    return made
