"""Values shared by the codec's tests: subclasses of the plain containers
(whose contents the codec must check like a plain one's) and deep nests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DictSubclass(dict[Any, Any]):
    pass


class ListSubclass(list[Any]):
    pass


def nest(depth: int, make: Callable[[Any], Any], leaf: object = 1) -> Any:
    """``leaf`` wrapped ``depth`` times by ``make``."""
    value: Any = leaf
    for _ in range(depth):
        value = make(value)
    return value
