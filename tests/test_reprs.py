"""Reprs are short, useful, and never show the cookie."""

from __future__ import annotations

import collections
import enum

import anyio
import attrs
import pytest

import trio_distribute as td
from trio_distribute import errors
from trio_distribute.testing import open_cluster

COOKIE = "sEcReT-cookie-that-must-never-show-0123456789"
#: Long enough for a node's name, its peers and a config field or two.
MAX_REPR = 400
VALUE_SUFFIXES = ("Config", "Statistics", "Health")


def reachable(*roots: object) -> list[object]:
    """Every trio_distribute object reachable from ``roots`` through
    attributes and containers (the graph a debugger or attrs' default repr
    would walk)."""
    seen: set[int] = set()
    found: list[object] = []
    stack: list[object] = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(obj)
            continue
        module = type(obj).__module__ or ""
        if not module.startswith("trio_distribute") or isinstance(obj, (type, enum.Enum)):
            continue
        found.append(obj)
        cls = type(obj)
        if attrs.has(cls):
            stack.extend(getattr(obj, f.name) for f in attrs.fields(cls))
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
    return found


def is_public(cls: type) -> bool:
    """A class users meet (not an internal one, not a value type whose
    repr lists its fields)."""
    parts = [*cls.__module__.split("."), cls.__name__]
    return not any(p.startswith("_") for p in parts) and not cls.__name__.endswith(VALUE_SUFFIXES)


def every_error() -> list[BaseException]:
    """One instance of each public exception, built from its signature."""
    out: list[BaseException] = []
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            for args in [(), ("a@127.0.0.1",), ("a@127.0.0.1", "why"), (1, 2)]:
                try:
                    out.append(cls(*args))
                    break
                except TypeError:
                    continue
    return out


def assert_clean(obj: object) -> None:
    for text in (repr(obj), str(obj)):
        assert COOKIE not in text, f"the cookie is in the repr of {type(obj).__name__}"
        assert COOKIE.encode().hex() not in text


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_no_repr_or_str_shows_the_cookie_and_none_is_long() -> None:
    config = td.NodeConfig.local(metadata=b"meta")
    with anyio.fail_after(20):
        async with open_cluster(["a", "b", "c"], cookie=COOKIE, config=config) as (a, b, c):
            await a.election.wait_for_leader(timeout=10)
            async with a.open_process(name="p") as proc, a.monitor_nodes() as events:
                await a.registry.register("global", proc.pid)
                await a.groups.join("g", proc.pid)
                ref = proc.monitor(proc.pid)
                extras: list[object] = [
                    a.statistics(),
                    a.health.cluster(),
                    a.health.node(b.name),
                    a.election.leader,
                    td.NoLeader(),
                    ref,
                    events,
                    td.NodeUp(b.name),
                    td.NodeDown(b.name, "shutdown"),
                    td.ProcessDown(proc.pid, td.ExitReason(td.ExitKind.NORMAL), ref),
                    td.GroupJoined("g", (proc.pid,)),
                    td.GroupLeft("g", (proc.pid,)),
                    td.NameConflict("global", proc.pid),
                    td.LeaderChanged(1, a.name),
                    td.MemberUp(b.name, "127.0.0.1:1", 1, b"meta"),
                    td.Ok(1),
                    td.Err(ValueError("x")),
                    *every_error(),
                ]
                objects = reachable(a, b, c, proc, *extras)
                kinds = {type(o).__name__ for o in objects}
                for expected in [
                    "Node",
                    "NodeConfig",
                    "MembershipConfig",
                    "ElectionConfig",
                    "RegistryConfig",
                    "GroupsConfig",
                    "Membership",
                    "Registry",
                    "Groups",
                    "Rpc",
                    "Election",
                    "Health",
                    "Transport",
                    "Connection",
                    "Process",
                    "Pid",
                    "Ref",
                    "AuthenticationError",
                ]:
                    assert expected in kinds, expected
                for obj in objects:
                    assert_clean(obj)
                    # Services and handles are short; value types (configs,
                    # statistics snapshots, errors) show their fields.
                    if is_public(type(obj)) and not isinstance(obj, BaseException):
                        assert len(repr(obj)) <= MAX_REPR, (type(obj), len(repr(obj)))


async def test_node_and_process_reprs_say_what_they_are() -> None:
    with anyio.fail_after(20):
        async with open_cluster(["a", "b"], cookie=COOKIE) as (a, _):
            assert repr(a) == f"<Node {a.name}: 1 peer>"
            async with a.open_process(name="echo") as named, a.open_process() as anonymous:
                pid = named.pid
                assert repr(named) == f"<Process <{pid.node}.{pid.id}.{pid.creation}> 'echo'>"
                assert repr(anonymous).startswith("<Process <a@127.0.0.1.")
            assert repr(named).endswith("'echo' ended>")
        assert repr(a) == f"<Node {a.name}: stopped>"


def test_no_config_field_that_could_hold_a_secret_is_shown() -> None:
    """The cookie is an ``open_node`` argument, never a config field; a
    future secret-bearing field (a key, a password) must be ``repr=False``."""
    configs = [td.NodeConfig, td.MembershipConfig, td.ElectionConfig]
    configs += [td.RegistryConfig, td.GroupsConfig]
    for cls in configs:
        for field in attrs.fields(cls):
            if any(word in field.name for word in ("cookie", "secret", "key", "password")):
                assert field.repr is False, f"{cls.__name__}.{field.name} is shown in reprs"
    assert "cookie" not in repr(td.NodeConfig())
