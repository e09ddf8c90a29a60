"""A small mutation tester for the protocol kernel and the codec.

Usage, from the repository root (``nox -s mutate`` runs it for every module
in :data:`MODULES`)::

    python tests/mutation/mutate.py [MODULE ...] [--list] [--jobs N]

For one module at a time it parses the source, makes one *mutant* per
mutation site (a copy of the module with one small change), and runs that
module's own test files against each mutant. A mutant the tests fail on is
*killed*; one they pass on *survived*: either the change does not alter
behaviour (an *equivalent* mutant, listed with its reason in
``tests/mutation/equivalent.txt``) or a rule of the module is not pinned
by any test. Any survivor not listed makes the run exit 1; a listed entry
that no longer matches a surviving mutant is reported as stale (and fails
too, so the file stays reviewed).

The mutations (Python's ``ast``, so each is a real, compilable change):

* comparisons flipped: ``<``/``<=``, ``>``/``>=``, ``==``/``!=``,
  ``is``/``is not``, ``in``/``not in``;
* ``and``/``or`` swapped; ``not x`` becomes ``x``; ``True``/``False``
  swapped;
* integer constants ``n`` become ``n + 1`` and ``n - 1``;
* arithmetic: ``+``/``-``, ``*``/``//``, ``<<``/``>>``, ``&``/``|``;
* one keyword argument of a call removed; a string argument of a method
  call replaced (``.decode("utf-8", "ignore")`` -> ``"XXignoreXX"``);
* one statement deleted (replaced by ``pass``): expression statements,
  assignments, ``raise``, ``if``, ``for``, ``while``, ``continue``,
  ``break``.

Docstrings, annotations, ``__all__`` and the text of exception messages
are left alone (a message's wording is not a rule).

Each mutant runs in a forked child: the parent imports pytest and the
heavy third-party modules once; the child installs an import hook that
loads the mutated source in place of the module, then runs pytest with
``-x`` (stop at the first failure) on the module's test files. A child
that uses more than four times the clean run's CPU time counts as killed
(a mutant that loops forever is caught); the budget is CPU time, not wall
time, so a busy machine does not turn slow survivors into kills.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from types import CodeType, FrameType, ModuleType

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
EQUIVALENT_FILE = Path(__file__).resolve().parent / "equivalent.txt"

#: module -> (its test files, pytest -k expression or "").
MODULES: dict[str, tuple[tuple[str, ...], str]] = {
    "trio_distribute._proto._cbor": (("tests/proto/test_cbor.py",), ""),
    "trio_distribute._proto.frames": (("tests/proto/test_frames.py",), ""),
    "trio_distribute._proto.suspicion": (("tests/proto/test_suspicion.py",), ""),
    "trio_distribute._proto.broadcast_queue": (("tests/proto/test_broadcast_queue.py",), ""),
    "trio_distribute._proto.handshake": (("tests/proto/test_handshake.py",), ""),
    "trio_distribute.codec": (
        ("tests/test_codec.py", "tests/test_codec_rules.py", "tests/test_sliced_decode.py"),
        "",
    ),
    "trio_distribute._proto.raft": (
        (
            # The voter tests first: they are quick and kill the cap's mutants.
            "tests/proto/test_raft_voters.py",
            "tests/proto/test_raft.py",
            "tests/proto/test_raft_wire_rules.py",
            "tests/proto/test_raft_rules.py",
            "tests/proto/test_raft_observe_changes.py",
        ),
        "",
    ),
    "trio_distribute._proto._sliced": (("tests/test_sliced_decode.py",), ""),
    "trio_distribute._proto.swim_wire": (
        ("tests/proto/test_swim_wire.py", "tests/proto/test_swim_wire_rules.py"),
        "",
    ),
    "trio_distribute._proto.swim": (
        ("tests/proto/test_swim.py", "tests/proto/test_swim_rules.py"),
        "",
    ),
    "trio_distribute._proto.awareness": (
        ("tests/proto/test_awareness.py", "tests/proto/test_swim.py"),
        "",
    ),
    "trio_distribute._proto.cookie_keys": (("tests/test_cookie.py",), ""),
    # The lending of a connection's socket (focused, see FOCUS).
    "trio_distribute._connection": (
        (
            "tests/test_lent_socket.py",
            "tests/test_direct_delivery.py",
            "tests/test_bulk.py",
            "tests/test_hostile_memory.py",
        ),
        # The read path is the same on both backends; lending is trio's.
        "trio",
    ),
    "trio_distribute._socket_wait": (
        ("tests/test_socket_wait.py", "tests/test_lent_socket.py"),
        "",
    ),
    # Joining through seeds: retried until a seed is a known member
    # (focused, see FOCUS).
    "trio_distribute.node": (
        ("tests/test_seed_join.py", "tests/test_election.py", "tests/test_membership.py"),
        "(seed or joined or held) and not processes and not trials",
    ),
    # CALL and REPLY frames read by hand (focused, see FOCUS).
    "trio_distribute._calls": (
        ("tests/test_call_frames.py", "tests/test_call.py", "tests/test_lent_socket.py"),
        "",
    ),
}

#: module -> the functions (qualified names, prefix match) to mutate; a
#: module not listed is mutated whole. raft.py is mostly the election
#: driver's logic (exercised by the simulations); its wire decoding and
#: voter-set rules guard what peers send.
FOCUS: dict[str, tuple[str, ...]] = {
    # Start order must not matter: a node keeps trying its seeds, and holds
    # its election back, until it is part of the seeds' cluster.
    "trio_distribute.node": ("_join_seeds",),
    # The heads read by hand: the rest of the module is pinned by the call
    # tests as a whole.
    "trio_distribute._calls": (
        "Calls._name_bytes",
        "Calls._call_direct",
        "Calls._reply_direct",
        "Calls._replied",
        "Calls._serve",
    ),
    # Lending only: the read path it shares with the reader is pinned by
    # the whole suite, not by these test files.
    "trio_distribute._connection": (
        "Connection.woke",
        "Connection.lent_to",
        "Connection._lend",
        "Connection._park_lender",
        "Connection._abort_lender",
        "Connection.borrow",
        "Connection._borrowed_read",
        "Connection._stop_lending",
    ),
    "trio_distribute._proto.raft": (
        "decode_message",
        "_from_fields",
        "_check_",
        "_tuple",
        "ElectionCore.quorum",
        "ElectionCore._may_grant",
        "ElectionCore._holds_majority",
        "ElectionCore._round_voters",
        "ElectionCore._round_quorum",
        "ElectionCore.set_voters",
        "ElectionCore._reconfigure",
        "ElectionCore._quorum_stamp",
        # The voter cap and learners.
        "ElectionCore._capped",
        "ElectionCore._learners",
        "ElectionCore._tell_learners",
        "ElectionCore._may_campaign",
        # Who may start a round, and that a round it may not run ends.
        "ElectionCore._election_timeout",
        "ElectionCore.observe",
        "ElectionCore.tick",
        "ElectionCore.next_deadline",
        # What a peer's messages decide: the handlers (votes, replies,
        # heartbeats and acks, a learner's silence timer), a Remove, the
        # stickiness and abstention that refuse votes, check-quorum and the
        # winner's configuration (one leader per term).
        "ElectionCore.receive",
        "ElectionCore._on_",
        "ElectionCore.request_removal",
        "ElectionCore._in_lease",
        "ElectionCore._abstaining",
        "ElectionCore._check_quorum",
        "ElectionCore._become_leader",
    ),
    # swim.py is mostly the probe/gossip scheduler (exercised by the
    # simulations); these are the rules that judge what a peer sends:
    # decoding, version order, and merging its news into the member table.
    "trio_distribute._proto.swim": (
        "newer",
        "_not_older",
        "_check_text",
        "_check_metadata",
        "SwimCore.datagram_received",
        "SwimCore.stream_received",
        "SwimCore._on_",
        "SwimCore._bad_news_of_self",
        "SwimCore._stale_news_of_self",
        # Answering news about ourselves, refusing a member whose news could
        # never be gossiped, and the timers that bound a relayed probe and a
        # check of a suspect: each acts on what a peer sent.
        "SwimCore._refute",
        "SwimCore._bump_incarnation",
        "SwimCore._encode_alive",
        "SwimCore._run_relay_timers",
        "SwimCore._check_suspect",
        "SwimCore._send_suspect_check",
        "SwimCore._run_check_timers",
        # Which member the full-state exchange goes to (one this node can
        # reach with a stream, where nodes connect on demand).
        "SwimCore._periodic_push_pull",
    ),
}

_COMPARE_FLIPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOP_FLIPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
_DELETABLE = (
    ast.Expr,
    ast.Assign,
    ast.AugAssign,
    ast.Raise,
    ast.If,
    ast.For,
    ast.While,
    ast.Continue,
    ast.Break,
)


@attrs.frozen
class Site:
    """One mutation: where, what, and a key that survives unrelated edits."""

    index: int
    line: int
    scope: str  # qualified name of the enclosing function or class
    what: str  # e.g. "'<' -> '<='"
    text: str  # the source line, stripped

    @property
    def key(self) -> str:
        return f"{self.scope} | {self.text} | {self.what}"


class _Mutator(ast.NodeTransformer):
    """Walks a module in a fixed order, numbering mutation sites; applies
    the one numbered ``target`` (or none, collecting all, when -1)."""

    def __init__(self, lines: Sequence[str], target: int = -1) -> None:
        self.lines = lines
        self.target = target
        self.sites: list[Site] = []
        self.scope: list[str] = []
        self.applied = False
        self._seen: dict[tuple[str, str, str], int] = {}

    # -- bookkeeping ---------------------------------------------------------

    def _site(self, node: ast.AST, what: str) -> bool:
        """Record a site; True if it is the one to apply."""
        line = getattr(node, "lineno", 0)
        text = self.lines[line - 1].strip() if line else ""
        index = len(self.sites)
        scope = ".".join(self.scope) or "<module>"
        # The same mutation of the same text in one function (two ``break``
        # statements, three 1s on a line): number the repeats so that each
        # key names one mutant.
        seen = self._seen.get((scope, text, what), 0) + 1
        self._seen[(scope, text, what)] = seen
        if seen > 1:
            what = f"{what} [{seen}]"
        self.sites.append(Site(index, line, scope, what, text))
        if index == self.target:
            self.applied = True
            return True
        return False

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.AST:
        self.scope.append(node.name)
        try:
            # Leave annotations, decorators' arguments aside: body only,
            # plus default values (which are behaviour).
            if not isinstance(node, ast.ClassDef):
                node.args = self.visit(node.args)
            node.body = self._body(node.body)
        finally:
            self.scope.pop()
        return node

    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            if _is_docstring(stmt):  # a docstring, or an attribute's
                out.append(stmt)
                continue
            if (
                self.scope
                and isinstance(stmt, _DELETABLE)
                and not _is_ellipsis(stmt)
                and self._site(stmt, f"delete {type(stmt).__name__.lower()}")
            ):
                out.append(ast.copy_location(ast.Pass(), stmt))
                continue
            out.append(self.visit(stmt))
        return out

    # -- structure -------------------------------------------------------------

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = self._body(node.body)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._scoped(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._scoped(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return self._scoped(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        return node  # annotations

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return node
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> ast.AST:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return node
        node.test = self.visit(node.test)
        node.body = self._body(node.body)
        node.orelse = self._body(node.orelse)
        return node

    def visit_For(self, node: ast.For) -> ast.AST:
        node.iter = self.visit(node.iter)
        node.body = self._body(node.body)
        node.orelse = self._body(node.orelse)
        return node

    def visit_While(self, node: ast.While) -> ast.AST:
        node.test = self.visit(node.test)
        node.body = self._body(node.body)
        node.orelse = self._body(node.orelse)
        return node

    def visit_With(self, node: ast.With) -> ast.AST:
        node.items = [self.visit(item) for item in node.items]
        node.body = self._body(node.body)
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        node.body = self._body(node.body)
        for handler in node.handlers:
            handler.body = self._body(handler.body)
        node.orelse = self._body(node.orelse)
        node.finalbody = self._body(node.finalbody)
        return node

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        return node  # the exception and its message: not a rule

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node  # message text

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        return node

    # -- mutations -------------------------------------------------------------

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            flipped = _COMPARE_FLIPS.get(type(op))
            if flipped is not None and self._site(
                node, f"{_op_text(op)!r} -> {_op_text(flipped())!r} #{i}"
            ):
                node.ops = [*node.ops[:i], flipped(), *node.ops[i + 1 :]]
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        swapped: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        if self._site(node, f"{_op_text(node.op)!r} -> {_op_text(swapped)!r}"):
            node.op = swapped
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._site(node, "drop 'not'"):
            return node.operand
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        flipped = _BINOP_FLIPS.get(type(node.op))
        if flipped is not None and self._site(
            node, f"{_op_text(node.op)!r} -> {_op_text(flipped())!r}"
        ):
            node.op = flipped()
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool):
            if self._site(node, f"{value} -> {not value}"):
                return ast.copy_location(ast.Constant(not value), node)
        elif isinstance(value, int):
            for delta in (1, -1):
                if self._site(node, f"{value} -> {value + delta}"):
                    return ast.copy_location(ast.Constant(value + delta), node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.func = self.visit(node.func)
        method = isinstance(node.func, ast.Attribute) and not _is_logger(node.func)
        args: list[ast.expr] = []
        for i, arg in enumerate(node.args):
            if (
                method
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and self._site(arg, f"argument {i} {arg.value!r} -> 'XX{arg.value}XX'")
            ):
                args.append(ast.copy_location(ast.Constant(f"XX{arg.value}XX"), arg))
            else:
                args.append(self.visit(arg))
        node.args = args
        keywords: list[ast.keyword] = []
        for kw in node.keywords:
            if kw.arg is not None and self._site(node, f"drop keyword {kw.arg}="):
                continue
            kw.value = self.visit(kw.value)
            keywords.append(kw)
        node.keywords = keywords
        return node


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_ellipsis(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and stmt.value.value is Ellipsis
    )


def _is_logger(func: ast.Attribute) -> bool:
    return isinstance(func.value, ast.Name) and func.value.id in ("logger", "log", "logging")


def _op_text(op: ast.AST) -> str:
    return {
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Is: "is",
        ast.IsNot: "is not",
        ast.In: "in",
        ast.NotIn: "not in",
        ast.And: "and",
        ast.Or: "or",
        ast.Add: "+",
        ast.Sub: "-",
        ast.Mult: "*",
        ast.FloorDiv: "//",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.BitAnd: "&",
        ast.BitOr: "|",
    }[type(op)]


def module_path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def sites(module: str, source: str | None = None) -> list[Site]:
    if source is None:
        source = module_path(module).read_text()
    mutator = _Mutator(source.splitlines())
    mutator.visit(ast.parse(source))
    focus = FOCUS.get(module)
    if focus:
        return [s for s in mutator.sites if s.scope.startswith(focus)]
    return mutator.sites


def mutant_code(module: str, index: int, source: str | None = None) -> CodeType:
    """Mutant ``index`` of ``source`` (the module's file if not given)."""
    path = module_path(module)
    if source is None:
        source = path.read_text()
    mutator = _Mutator(source.splitlines(), target=index)
    tree = ast.fix_missing_locations(mutator.visit(ast.parse(source)))
    assert mutator.applied, f"mutation {index} not applied"
    return compile(tree, str(path), "exec")


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads ``module`` from a mutated code object instead of its file."""

    def __init__(self, module: str, code: CodeType) -> None:
        self.module = module
        self.code = code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.module:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(module_path(fullname)))

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = str(module_path(self.module))
        exec(self.code, module.__dict__)


def _pytest_args(module: str) -> list[str]:
    files, select = MODULES[module]
    args = [*files, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--no-header"]
    # pytest-timeout's limit is wall time: only a backstop for a test that
    # blocks (the CPU budget in run_tests stops a mutant that loops).
    args += ["-o", "addopts=", "--tb=no", "--timeout=900"]
    if select:
        args += ["-k", select]
    return args


#: Hypothesis examples per property test in a mutant's run (the clean run
#: and the confirmation of a survivor use the same): enough to hit the
#: rules, few enough that a module's hundreds of runs take minutes.
EXAMPLES = int(os.environ.get("MUTATE_EXAMPLES", "25"))


class _Recorder:
    """Pytest plugin for the clean run: which functions of the module each
    test executes (a profile hook on calls into the module's file), which
    ran outside any test (at import or collection), and each test's time."""

    def __init__(self, module: str) -> None:
        self.path = str(module_path(module))
        self.outside: set[str] = set()
        self.by_test: dict[str, set[str]] = {}
        self.seconds: dict[str, float] = {}
        self.current = self.outside

    def profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename == self.path:
            self.current.add(frame.f_code.co_qualname.replace(".<locals>", ""))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, None, None]:
        self.current = self.by_test.setdefault(item.nodeid, set())
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[item.nodeid] = time.perf_counter() - start
            self.current = self.outside

    def save(self, path: str) -> None:
        data = {
            "outside": sorted(self.outside),
            "tests": {test: sorted(names) for test, names in self.by_test.items()},
            "seconds": self.seconds,
        }
        Path(path).write_text(json.dumps(data))


@attrs.frozen
class Coverage:
    """What the clean run recorded."""

    outside: frozenset[str]
    tests: dict[str, frozenset[str]]
    seconds: dict[str, float]

    @classmethod
    def load(cls, path: str) -> Coverage:
        data = json.loads(Path(path).read_text())
        tests = {test: frozenset(names) for test, names in data["tests"].items()}
        return cls(frozenset(data["outside"]), tests, data["seconds"])

    def covering(self, scope: str) -> set[str] | None:
        """The tests that execute the function ``scope`` (or code nested in
        it); None (run them all) for code that also runs outside any test:
        module and class bodies, default values, anything called at import
        or while the tests are collected."""
        nested = scope + "."

        def hit(names: frozenset[str]) -> bool:
            return any(n == scope or n.startswith(nested) for n in names)

        if scope == "<module>" or hit(self.outside):
            return None
        return {test for test, names in self.tests.items() if hit(names)}


class _Select:
    """Pytest plugin: run only ``tests`` (all if None), fastest first, so
    that ``-x`` stops a killed mutant's run early."""

    def __init__(self, tests: set[str] | None, seconds: dict[str, float]) -> None:
        self.tests = tests
        self.seconds = seconds

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        if self.tests is not None:
            chosen = self.tests
            config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in chosen])
            items[:] = [item for item in items if item.nodeid in chosen]
        items.sort(key=lambda item: self.seconds.get(item.nodeid, 0.0))
        _cap_examples(items)


def _cap_examples(items: list[pytest.Item]) -> None:
    """At most :data:`EXAMPLES` examples per property test, even where the
    test asks for more; no per-example deadline and no speed health checks
    for any of them. On a loaded machine (and under the clean run's profile
    hook) an example can take longer than Hypothesis's 200 ms default: the
    clean run then fails for no reason, or a mutant counts as killed by a
    timing flake instead of by a test."""
    import hypothesis

    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is not None:
            test._hypothesis_internal_use_settings = hypothesis.settings(  # type: ignore[union-attr]
                own,
                max_examples=min(own.max_examples, EXAMPLES),
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )


def _run_child(
    module: str, code: CodeType | None, select: _Select | None, record: str | None
) -> int:
    """Run the module's tests in this (forked) process; never returns."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    plugins: list[object] = []
    recorder = None
    if code is not None:
        sys.meta_path.insert(0, _MutantFinder(module, code))
    if select is not None:
        plugins.append(select)
    if record is not None:
        recorder = _Recorder(module)
        plugins += [recorder, _Select(None, {})]
        sys.setprofile(recorder.profile)
        threading.setprofile(recorder.profile)
    try:
        status = int(pytest.main(_pytest_args(module), plugins=plugins))
        if recorder is not None and record is not None:
            sys.setprofile(None)
            recorder.save(record)
    except BaseException:
        import traceback

        with open(os.environ.get("MUTATE_CHILD_LOG", os.devnull), "a") as log:
            traceback.print_exc(file=log)
        status = 99
    os._exit(status)


def run_tests(
    module: str,
    code: CodeType | None,
    timeout: float,
    *,
    select: _Select | None = None,
    record: str | None = None,
) -> tuple[int, float]:
    """(exit status, CPU seconds): the module's tests (those ``select``
    picks) against ``code``; ``record`` names a file for the clean run's
    :class:`Coverage`.

    ``timeout`` is a budget of the child's *CPU* time (RLIMIT_CPU: the
    kernel stops it), not of wall time: on a machine shared with other
    work a run can take many times its clean wall time without doing more,
    and a wall-clock limit then counts a surviving mutant as killed. A
    mutant that loops forever still burns CPU and is stopped. A generous
    wall-clock limit stays as a backstop for a child that blocks."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.setpgid(0, 0)
        seconds = max(1, math.ceil(timeout))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))
        _run_child(module, code, select, record)
    deadline = start + WALL_FACTOR * timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            cpu = usage.ru_utime + usage.ru_stime
            return os.waitstatus_to_exitcode(status), cpu
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL, timeout
        time.sleep(0.02)


#: The wall-clock backstop, as a multiple of the CPU budget.
WALL_FACTOR = 30


def load_equivalents() -> dict[str, dict[str, str]]:
    """module -> {site key: reason} from the reviewed file."""
    found: dict[str, dict[str, str]] = {}
    for raw in EQUIVALENT_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        module, scope, text, what, reason = (part.strip() for part in line.split(" | ", 4))
        if not reason:
            raise SystemExit(f"{EQUIVALENT_FILE}: no reason given for {line!r}")
        found.setdefault(module, {})[f"{scope} | {text} | {what}"] = reason
    return found


@attrs.define
class Result:
    module: str
    mutants: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: list[Site] = attrs.Factory(list)
    stale: list[str] = attrs.Factory(list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        real = self.mutants - self.equivalent
        return 100.0 * self.killed / real if real else 100.0


def mutate(module: str, equivalents: dict[str, str], *, only: set[int] | None = None) -> Result:
    # Read once: every mutant is made from this text, so an edit of the file
    # while the run goes on (hours for some modules) cannot make a mutant
    # number name one change and run another.
    source = module_path(module).read_text()
    all_sites = sites(module, source)
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(suffix=".json") as record:
        status, _ = run_tests(module, None, timeout=900, record=record.name)
        if status != 0:
            raise SystemExit(f"{module}: the tests fail on the unmutated module (status {status})")
        coverage = Coverage.load(record.name)
    # The clean run again, fastest test first as the mutants run them: the
    # tests must not depend on their order, and its CPU time (unprofiled)
    # sets each mutant's CPU budget.
    status, clean = run_tests(module, None, timeout=900, select=_Select(None, coverage.seconds))
    if status != 0:
        raise SystemExit(f"{module}: the tests fail when run fastest first (status {status})")
    timeout = max(10.0, 4 * clean)
    result = Result(module)
    seen_equivalent: set[str] = set()
    print(f"{module}: {len(all_sites)} mutants, clean run {clean:.1f} s of CPU", flush=True)
    chosen = [s for s in all_sites if only is None or s.index in only]
    for done, site in enumerate(chosen):
        if done and done % 25 == 0:
            print(f"  ... {done}/{len(chosen)} in {time.monotonic() - started:.0f} s", flush=True)
        result.mutants += 1
        try:
            code = mutant_code(module, site.index, source)
        except SyntaxError:
            result.killed += 1  # cannot even load
            continue
        # First only the tests that execute the mutated function (fast); a
        # survivor is confirmed against all of the module's tests (a test
        # may depend on what another one cached).
        tests = coverage.covering(site.scope)
        status = 0
        if tests is None or tests:
            status, _ = run_tests(module, code, timeout, select=_Select(tests, coverage.seconds))
        if status == 0 and tests is not None:
            status, _ = run_tests(module, code, timeout, select=_Select(None, coverage.seconds))
        if status != 0:
            result.killed += 1
        elif site.key in equivalents:
            result.equivalent += 1
            seen_equivalent.add(site.key)
        else:
            result.survivors.append(site)
            print(f"  SURVIVED #{site.index} line {site.line}: {site.key}", flush=True)
    if only is None:
        result.stale = sorted(set(equivalents) - seen_equivalent)
    result.seconds = time.monotonic() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="dotted names or short names (codec, frames)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--only", help="comma-separated mutant numbers to run")
    args = parser.parse_args(argv)
    chosen = [_expand(m) for m in args.modules] or list(MODULES)
    if args.list:
        for module in chosen:
            for site in sites(module):
                print(f"{module} #{site.index} line {site.line}: {site.key}")
        return 0
    os.chdir(ROOT)
    equivalents = load_equivalents()
    only = {int(n) for n in args.only.split(",")} if args.only else None
    results = [mutate(m, equivalents.get(m, {}), only=only) for m in chosen]
    print()
    print(
        f"{'module':40s} {'mutants':>7s} {'killed':>6s} {'real':>5s} {'equiv':>5s} "
        f"{'rate':>6s} {'time':>6s}"
    )
    failed = False
    for r in results:
        print(
            f"{r.module:40s} {r.mutants:7d} {r.killed:6d} {len(r.survivors):5d} "
            f"{r.equivalent:5d} {r.rate:5.1f}% {r.seconds / 60:5.1f}m"
        )
        for key in r.stale:
            print(f"  stale entry in equivalent.txt (no longer a surviving mutant): {key}")
        failed |= bool(r.survivors or r.stale)
    return 1 if failed else 0


def _expand(name: str) -> str:
    if name in MODULES:
        return name
    for module in MODULES:
        if module.rsplit(".", 1)[-1] == name or module.endswith("." + name):
            return module
    raise SystemExit(f"unknown module {name!r}; known: {', '.join(MODULES)}")


if __name__ == "__main__":
    # Heavy imports once, in the parent, so each forked mutant starts warm.
    import cbor2  # noqa: F401
    import trio  # noqa: F401

    sys.exit(main())
