"""The package's layering, read from its source with ``ast``.

Three rules, each checked over every module of ``trio_distribute``:

1. **The protocol kernel is self-contained.** ``trio_distribute._proto``
   (the sans-IO cores, wire formats and the restricted CBOR decoder)
   imports nothing from the package outside itself except
   ``trio_distribute.errors`` and ``trio_distribute._ids``: no config, no
   process-wide settings, no transport, no codec.
2. **No import cycle** among the package's modules at module level.
   Imports under ``if TYPE_CHECKING:`` and imports inside functions are
   left out: neither runs when the module loads.
3. **Services keep their private names.** A *service* is a top-level module
   of the package (``transport``, ``node``, ``registry``...) or a top-level
   subpackage (``cluster``, ``election``, ``_proto``, ``testing``). A module
   may import a private name (one leading underscore) only from its own
   service: ``from ..transport import _pending`` in ``node.py`` fails, and
   so does reading ``transport._pending`` through an imported module.
   Private *modules* (``_ids``, ``_backend``...) are shared building
   blocks; their public names are for everyone in the package.
   And an object a service holds is used through its public surface: no
   ``self.<collaborator>._name`` reads (``self.transport._task_group``) of
   a private name that no class of the reading module defines. There are
   no exceptions.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = "trio_distribute"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
KERNEL = f"{PACKAGE}._proto"
KERNEL_MAY_IMPORT = frozenset({f"{PACKAGE}.errors", f"{PACKAGE}._ids"})


@attrs.frozen
class Import:
    module: str  # the importing module
    target: str  # the module imported (for ``from X import name``: X, or X.name if a module)
    names: tuple[str, ...]  # the names imported from ``target`` ("" for ``import X``)
    module_level: bool  # runs at import time (not in a function, not TYPE_CHECKING-only)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module named by a (possibly relative) import."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


@functools.cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def parse_source(source: str) -> ast.Module:
    """A module's tree, parsed once per test run: several rules read every
    module of the package (the trees are only read, never changed)."""
    return ast.parse(source)


def imports(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    tree = parse(path)
    is_package = path.name == "__init__.py"

    def walk(nodes: list[ast.stmt], module_level: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, ("",), module_level, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node.level, node.module)
                plain: list[str] = []
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in known:  # ``from . import swim_wire``
                        yield Import(module, submodule, ("",), module_level, node.lineno)
                    else:
                        plain.append(alias.name)
                if plain:
                    yield Import(module, target, tuple(plain), module_level, node.lineno)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, False)
                yield from walk(node.orelse, module_level)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(node.body, False)
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, module_level)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        stmts = [s for s in inner if isinstance(s, ast.stmt)]
                        for handler in inner:
                            if isinstance(handler, ast.ExceptHandler):
                                stmts.extend(handler.body)
                        yield from walk(stmts, module_level)

    yield from walk(tree.body, True)


@functools.cache
def _all_imports() -> tuple[Import, ...]:
    found = modules()
    known = set(found)
    return tuple(imp for name, path in found.items() for imp in imports(name, path, known))


def all_imports() -> list[Import]:
    return list(_all_imports())


def service(module: str) -> str:
    """``trio_distribute.cluster.membership`` -> ``cluster``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def in_package(target: str) -> bool:
    return target == PACKAGE or target.startswith(PACKAGE + ".")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# -- rule 1 -------------------------------------------------------------------


def kernel_violations(found: list[Import]) -> list[str]:
    bad = []
    for imp in found:
        if not (imp.module == KERNEL or imp.module.startswith(KERNEL + ".")):
            continue
        if not in_package(imp.target):
            continue
        if imp.target == KERNEL or imp.target.startswith(KERNEL + "."):
            continue
        if imp.target in KERNEL_MAY_IMPORT:
            continue
        bad.append(f"{imp.module}:{imp.line} imports {imp.target}")
    return bad


def test_kernel_imports_nothing_outside_itself_but_errors_and_ids() -> None:
    assert kernel_violations(all_imports()) == []


def test_kernel_rule_catches_a_forbidden_import() -> None:
    # The checker itself: each way a kernel module could reach outside.
    for target in (f"{PACKAGE}.config", f"{PACKAGE}.codec", f"{PACKAGE}.settings"):
        imp = Import(f"{KERNEL}.swim", target, ("x",), True, 1)
        assert kernel_violations([imp]) == [f"{KERNEL}.swim:1 imports {target}"]
    # ...including an import that only runs inside a function.
    assert kernel_violations([Import(f"{KERNEL}.raft", f"{PACKAGE}.node", ("",), False, 3)])
    ok = [
        Import(f"{KERNEL}.swim", f"{PACKAGE}.errors", ("DecodeError",), True, 1),
        Import(f"{KERNEL}.handshake", f"{PACKAGE}._ids", ("validate_node_name",), True, 1),
        Import(f"{KERNEL}.swim", f"{KERNEL}.swim_wire", ("",), True, 1),
        Import(f"{KERNEL}.swim", "attrs", ("",), True, 1),
        Import(f"{PACKAGE}.node", f"{PACKAGE}.config", ("x",), True, 1),
    ]
    assert kernel_violations(ok) == []


def test_relative_imports_resolve() -> None:
    assert _resolve(f"{KERNEL}.swim", False, 2, "config") == f"{PACKAGE}.config"
    assert _resolve(f"{KERNEL}.swim", False, 1, "swim_wire") == f"{KERNEL}.swim_wire"
    assert _resolve(KERNEL, True, 1, "frames") == f"{KERNEL}.frames"
    assert _resolve(f"{PACKAGE}.node", False, 1, None) == PACKAGE


# -- rule 2 -------------------------------------------------------------------


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``edges`` (module -> modules it imports), if any."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def module_graph(found: list[Import]) -> dict[str, set[str]]:
    known = set(modules())
    edges: dict[str, set[str]] = {name: set() for name in known}
    for imp in found:
        if not imp.module_level or imp.target not in known or imp.target == imp.module:
            continue
        edges[imp.module].add(imp.target)
    # Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first.
    for name in known:
        for target in list(edges[name]):
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and parent != name and not name.startswith(parent + "."):
                    edges[name].add(parent)
    return edges


def test_no_import_cycle_at_module_level() -> None:
    assert find_cycle(module_graph(all_imports())) is None


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_type_checking_and_function_imports_are_not_module_level(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import trio_distribute.a\n"
        "if TYPE_CHECKING:\n"
        "    import trio_distribute.b\n"
        "def f():\n"
        "    import trio_distribute.c\n"
        "try:\n"
        "    import trio_distribute.d\n"
        "except ImportError:\n"
        "    import trio_distribute.e\n"
    )
    found = {imp.target: imp.module_level for imp in imports(f"{PACKAGE}.m", source, set())}
    assert found == {
        "typing": True,
        f"{PACKAGE}.a": True,
        f"{PACKAGE}.b": False,
        f"{PACKAGE}.c": False,
        f"{PACKAGE}.d": True,
        f"{PACKAGE}.e": True,
    }


# -- rule 3 -------------------------------------------------------------------


def private_violations(
    found: list[Import], attribute_reads: list[tuple[str, str, str, int]]
) -> list[str]:
    bad = []
    for imp in found:
        if not in_package(imp.target) or service(imp.target) == service(imp.module):
            continue
        for name in imp.names:
            if is_private(name) and f"{imp.target}.{name}" not in MODULE_NAMES:
                bad.append(f"{imp.module}:{imp.line} imports {imp.target}.{name}")
    for module, target, name, line in attribute_reads:
        if (
            service(target) != service(module)
            and is_private(name)
            and f"{target}.{name}" not in MODULE_NAMES
        ):
            bad.append(f"{module}:{line} reads {target}.{name}")
    return bad


MODULE_NAMES = frozenset(modules())


def module_attribute_reads() -> list[tuple[str, str, str, int]]:
    """``alias.name`` where ``alias`` is a package module bound by an import."""
    known = set(MODULE_NAMES)
    reads = []
    for module, path in modules().items():
        tree = parse(path)
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known:
                        aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                reads.append((module, aliases[node.value.id], node.attr, node.lineno))
    return reads


def test_services_do_not_import_each_others_private_names() -> None:
    assert private_violations(all_imports(), module_attribute_reads()) == []


def test_private_rule_catches_a_reach_into_another_service() -> None:
    transport, node = f"{PACKAGE}.transport", f"{PACKAGE}.node"
    assert private_violations([Import(node, transport, ("_pending",), True, 5)], []) == [
        f"{node}:5 imports {transport}._pending"
    ]
    assert private_violations([], [(node, transport, "_pending", 7)]) == [
        f"{node}:7 reads {transport}._pending"
    ]
    # Within one service, and for private *modules*, it is fine.
    membership, gossip = f"{PACKAGE}.cluster.membership", f"{PACKAGE}.cluster.gossip"
    assert private_violations([Import(membership, gossip, ("_seal",), True, 1)], []) == []
    assert private_violations([Import(node, PACKAGE, ("_ids",), True, 1)], []) == []
    assert private_violations([Import(node, f"{PACKAGE}._ids", ("Pid",), True, 1)], []) == []


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (f"{PACKAGE}.cluster.membership", "cluster"),
        (f"{PACKAGE}.node", "node"),
        (f"{KERNEL}.swim", "_proto"),
        (PACKAGE, ""),
    ],
)
def test_service_of_a_module(module: str, expected: str) -> None:
    assert service(module) == expected


def private_names_defined(tree: ast.Module) -> set[str]:
    """Private names the classes of one module define: methods and fields
    in a class body, ``__slots__`` entries, and ``self._x = ...``."""
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                    defined.add(stmt.name)
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    defined.add(stmt.target.id)
                elif isinstance(stmt, ast.Assign):
                    for target in stmt.targets:
                        if not isinstance(target, ast.Name):
                            continue
                        defined.add(target.id)
                        if target.id == "__slots__" and isinstance(stmt.value, ast.Tuple):
                            defined |= {
                                e.value
                                for e in stmt.value.elts
                                if isinstance(e, ast.Constant) and isinstance(e.value, str)
                            }
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    defined.add(target.attr)
    return {name for name in defined if is_private(name)}


def collaborator_reaches(source: str, module: str) -> set[tuple[str, str, str]]:
    """Every ``self.<attr>._private`` read in ``source`` of a private name
    that no class of the module defines. The classes of one module may use
    each other's private names (a network and its streams, a process table
    and its processes); an object from elsewhere is used through its
    public surface."""
    tree = parse_source(source)
    own = private_names_defined(tree)
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and is_private(node.attr)
            and node.attr not in own
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            found.add((module, node.value.attr, node.attr))
    return found


def test_services_use_collaborators_through_their_public_surface() -> None:
    found: set[tuple[str, str, str]] = set()
    for module, path in modules().items():
        found |= collaborator_reaches(path.read_text(), module)
    assert found == set(), "a service reads another object's private state"


def test_collaborator_rule_sees_reaches() -> None:
    source = "class A:\n    def f(self):\n        return self.transport._conns, self._own, x._y\n"
    assert collaborator_reaches(source, "m") == {("m", "transport", "_conns")}
    # The supervisor's old reach into the node's process table is one.
    source = "class S:\n    def f(self):\n        return self.node._processes._new_process(None)\n"
    assert collaborator_reaches(source, "m") == {("m", "node", "_processes")}


def test_collaborator_rule_lets_one_modules_classes_share_private_names() -> None:
    source = (
        "class Network:\n"
        "    __slots__ = ('_waiters',)\n"
        "    _streams: dict\n"
        "    def _wake(self): ...\n"
        "class Stream:\n"
        "    def __init__(self):\n"
        "        self._buffer = b''\n"
        "    def f(self):\n"
        "        self.network._streams, self.network._waiters, self.network._wake()\n"
        "        return self.peer._buffer, self.network._other\n"
    )
    assert collaborator_reaches(source, "m") == {("m", "network", "_other")}


TRANSPORT_TABLES = frozenset({"connections", "addresses", "blocked", "disconnected"})


def transport_table_reads(source: str, module: str) -> set[tuple[str, int, str]]:
    """Every ``<...>transport.<table>`` in ``source``, with its line."""
    found = set()
    for node in ast.walk(parse_source(source)):
        if not (isinstance(node, ast.Attribute) and node.attr in TRANSPORT_TABLES):
            continue
        holder = node.value
        name = holder.id if isinstance(holder, ast.Name) else getattr(holder, "attr", "")
        if name in ("transport", "_transport"):
            found.add((module, node.lineno, node.attr))
    return found


def test_only_the_transport_reads_its_tables() -> None:
    found: set[tuple[str, int, str]] = set()
    for module, path in modules().items():
        if module != f"{PACKAGE}.transport":
            found |= transport_table_reads(path.read_text(), module)
    assert found == set()


def test_transport_table_rule_sees_reads() -> None:
    source = (
        "def f(self, node):\n    return self.transport.connections, node._transport.addresses\n"
    )
    assert transport_table_reads(source, "m") == {("m", 2, "connections"), ("m", 2, "addresses")}


HOOK_NAMES = frozenset(
    {
        "exit_hooks",
        "address_hooks",
        "_up_hooks",
        "_down_hooks",
        "on_node_up",
        "on_node_down",
        "add_listener",
    }
)


def hook_names(source: str) -> set[str]:
    """Names of hook lists or listener registries defined or used in ``source``."""
    found = set()
    for node in ast.walk(parse_source(source)):
        if isinstance(node, ast.Attribute) and node.attr in HOOK_NAMES:
            found.add(node.attr)
        elif isinstance(node, ast.Name) and node.id in HOOK_NAMES:
            found.add(node.id)
        elif isinstance(node, ast.FunctionDef) and node.name in HOOK_NAMES:
            found.add(node.name)
    return found


def test_services_hear_of_each_other_only_through_the_event_bus() -> None:
    for module, path in modules().items():
        assert hook_names(path.read_text()) == set(), module


def test_hook_rule_sees_hooks() -> None:
    source = "class A:\n    exit_hooks = []\n    def f(self):\n        self.x.add_listener(g)\n"
    assert hook_names(source) == {"exit_hooks", "add_listener"}


def wiring_after_construction(source: str, function: str) -> list[int]:
    """Lines in ``function`` that assign to an attribute (``a.b = c``)."""
    for node in ast.walk(parse_source(source)):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return [
                target.lineno
                for stmt in ast.walk(node)
                if isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign)
                for target in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
                if isinstance(target, ast.Attribute)
            ]
    raise AssertionError(f"no function {function}")


def test_the_node_is_built_without_wiring_services_together_afterwards() -> None:
    source = (ROOT / "node.py").read_text()
    assert wiring_after_construction(source, "_build_node") == []
    assert "node_ref" not in source


def test_wiring_rule_sees_assignments() -> None:
    source = "def _build_node():\n    a = A()\n    a.b = B()\n"
    assert wiring_after_construction(source, "_build_node") == [3]


# -- rule 4: the transport's two halves ----------------------------------------

ENGINE = f"{PACKAGE}._connection"
#: The connection engine (framing, the write and read loops, ticks,
#: backpressure, the bulk path) runs a connection once it exists; making
#: one (dialling, accepting, TLS, the handshake, tie-breaks, the address
#: book) is the transport's, and the engine knows none of it.
ENGINE_MUST_NOT_IMPORT = frozenset(
    {
        f"{PACKAGE}.transport",
        f"{PACKAGE}._tls",
        f"{PACKAGE}._network",
        f"{PACKAGE}._addresses",
        f"{PACKAGE}._proto.handshake",
        f"{PACKAGE}.node",
    }
)


def engine_violations(found: list[Import]) -> list[str]:
    """Imports of the policy side by the connection engine, at any level
    (``TYPE_CHECKING`` and function-level imports count: a type is a
    dependency too)."""
    return [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in found
        if imp.module == ENGINE and imp.target in ENGINE_MUST_NOT_IMPORT
    ]


def test_the_connection_engine_does_not_import_the_dial_and_accept_side() -> None:
    assert engine_violations(all_imports()) == []


def test_engine_rule_catches_an_import_of_the_transport() -> None:
    transport = f"{PACKAGE}.transport"
    assert engine_violations([Import(ENGINE, transport, ("Transport",), False, 9)]) == [
        f"{ENGINE}:9 imports {transport}"
    ]
    assert engine_violations([Import(ENGINE, f"{PACKAGE}._proto.handshake", ("",), True, 2)])
    ok = [
        Import(ENGINE, f"{PACKAGE}._proto.frames", ("FrameDecoder",), True, 1),
        Import(f"{PACKAGE}.transport", ENGINE, ("Connection",), True, 1),
    ]
    assert engine_violations(ok) == []


def connections_built(source: str, module: str) -> set[tuple[str, int]]:
    """Every call of ``Connection(...)`` (or ``x.Connection(...)``) in ``source``."""
    found = set()
    for node in ast.walk(parse_source(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "Connection":
                found.add((module, node.lineno))
    return found


def test_only_the_transport_builds_connections() -> None:
    # A connection exists only once the transport's handshake and
    # tie-break let it: nothing else may make one.
    built: set[tuple[str, int]] = set()
    for module, path in modules().items():
        built |= connections_built(path.read_text(), module)
    assert built, "the transport builds its connections somewhere"
    assert {module for module, _ in built} == {f"{PACKAGE}.transport"}


def test_connection_rule_sees_constructions() -> None:
    source = "def f(t):\n    a = Connection(peer='x')\n    return _connection.Connection()\n"
    assert connections_built(source, "m") == {("m", 2), ("m", 3)}
    assert connections_built("def f(conn):\n    return conn.connection('x')\n", "m") == set()
