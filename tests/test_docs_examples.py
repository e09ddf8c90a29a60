"""Every Python code block in README.rst and docs/ runs as written.

A block is a whole program unless the reStructuredText comment just before
it says otherwise (the comment is invisible in the rendered page):

``.. check: cluster``
    A fragment that uses three connected nodes ``a``, ``b`` and ``c`` (as
    ``trio_distribute.testing.open_cluster(3)`` makes them) with ``td``,
    ``trio`` and ``attrs`` imported: it runs as the body of an async
    function given those nodes.
``.. check: compile (why)``
    Only compiled: for blocks that need a second terminal or another
    machine, or that run until stopped. The reason is required.

Each block runs in a process of its own, as a reader would run it, so that
module-level registrations (message tags, exported RPC names) of one block
cannot affect another. The process is forked from a warm interpreter that
has already imported trio and trio_distribute (tests/fork_server.py):
importing them is most of what a fresh interpreter would spend on a block.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
from forked import ForkServer

import trio_distribute as td

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst"))]
DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. code-block:: (?P<lang>\S+)\s*$")
CHECK = re.compile(r"^\s*\.\. check: (?P<mode>\w+)(?P<why>.*)$")
MODES = {"run", "cluster", "compile"}
# Generous: a block starts up to three nodes in a fresh interpreter on a
# machine that may be busy.
BLOCK_TIMEOUT = 60.0


@attrs.frozen
class Block:
    path: Path
    line: int
    lang: str
    mode: str
    why: str
    source: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract(path: Path) -> list[Block]:
    """The code blocks of one document, with the check mode before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        found = DIRECTIVE.match(line)
        if not found:
            continue
        mode, why = "run", ""
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        check = CHECK.match(lines[before]) if before >= 0 else None
        if check:
            mode, why = check["mode"], check["why"].strip()
        indent = len(found["indent"])
        body: list[str] = []
        j = i + 1
        # Directive options (":caption: ...") come first, then a blank line.
        while j < len(lines) and lines[j].strip().startswith(":"):
            j += 1
        while j < len(lines):
            text = lines[j]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            body.append(text)
            j += 1
        source = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        blocks.append(Block(path, i + 1, found["lang"], mode, why, source))
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in extract(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "python"]

CLUSTER_WRAPPER = """\
import attrs
import trio
import trio_distribute as td
from trio_distribute.testing import open_cluster


async def _block(a: td.Node, b: td.Node, c: td.Node) -> None:
{body}


async def _main() -> None:
    async with open_cluster(3) as (a, b, c):
        await _block(a, b, c)


trio.run(_main)
"""


def program(block: Block) -> str:
    if block.mode == "cluster":
        return CLUSTER_WRAPPER.format(body=textwrap.indent(block.source, "    "))
    return block.source


def test_the_documents_have_blocks_of_every_mode() -> None:
    # Guards the extractor itself: a change that found no blocks, or read
    # every marker wrongly, would make the tests below pass vacuously.
    modes = {block.mode for block in PYTHON_BLOCKS}
    assert modes == MODES, modes
    assert len(PYTHON_BLOCKS) >= 15
    readme = [block for block in PYTHON_BLOCKS if block.path.name == "README.rst"]
    assert readme and all(block.mode == "run" for block in readme)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.id)
def test_python_block(block: Block, tmp_path: Path, fork_server: ForkServer) -> None:
    assert block.mode in MODES, f"{block.id}: unknown check mode {block.mode!r}"
    code = program(block)
    compile(code, block.id, "exec")
    if block.mode == "compile":
        assert block.why, f"{block.id}: say why the block is only compiled"
        return
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    try:
        result = fork_server.run(
            [sys.executable, script],
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id} still running after {BLOCK_TIMEOUT} s")
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"


def test_readme_commands_are_the_ones_ci_runs() -> None:
    """The README's two set-up commands: the demo, and the test command that
    CI runs (``.ci/run`` runs ``nox -s tests``, the noxfile's test session)."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    console = [b.source for b in ALL_BLOCKS if b.path.name == "README.rst" and b.lang == "console"]
    commands = [line for source in console for line in source.splitlines()]
    assert "$ pip install . && python -m trio_distribute demo" in commands
    assert "$ pip install nox && nox -s tests" in commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^nox -s tests$", ci, re.MULTILINE)
    assert "def tests(" in (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 260


# Fields that are switches or places, not bounds; ``metadata``'s bound (512
# bytes) is among the README's fixed limits.
NOT_BOUNDS = {"enabled", "connect_all", "allow_any_module", "state_dir", "metadata"}
UNITS = {"s": 1.0, "h": 3600.0, "KiB": 1024.0, "MiB": 1024.0 * 1024.0}


def parse_quantity(text: str) -> float:
    number, _, unit = text.partition(" ")
    return float(number.replace(",", "")) * UNITS.get(unit, 1.0)


def readme_limits() -> dict[tuple[str, str], tuple[str, str]]:
    """``{(config class, field): (default, local() value)}`` from the README's
    "Limits and defaults" tables."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme.split(".. limits-start", 1)[1].split(".. limits-end", 1)[0]
    configs = ["NodeConfig", "MembershipConfig", "ElectionConfig", "RegistryConfig", "GroupsConfig"]
    found: dict[tuple[str, str], tuple[str, str]] = {}
    owners: list[str] = []
    for line in section.splitlines():
        if re.match(r"^``\w+Config``", line):  # a table's title
            owners = [name for name in configs if f"``{name}``" in line]
        elif re.match(r"^``\w+``\s", line):  # a row
            # Columns of the simple tables: field, default, local(), meaning.
            field = line[:36].strip().strip("`")
            default, local = line[36:50].strip(), line[51:61].strip()
            classes = [getattr(td, name) for name in owners]
            owner = [c.__name__ for c in classes if field in attrs.fields_dict(c)]
            assert owner, f"README limits table: {field} is not a field of {owners}"
            found[(owner[0], field)] = (default, local)
    return found


def test_readme_states_every_bound_with_its_default() -> None:
    """Every bound is a config field, and the README's table states it with
    the default (and ``local()`` value) the code has."""
    limits = readme_limits()
    for cls in (
        td.NodeConfig,
        td.MembershipConfig,
        td.ElectionConfig,
        td.RegistryConfig,
        td.GroupsConfig,
    ):
        default = cls()
        local = cls.local() if hasattr(cls, "local") else default
        for field in attrs.fields(cls):
            value = getattr(default, field.name)
            if field.name in NOT_BOUNDS or attrs.has(type(value)):
                continue
            where = f"{cls.__name__}.{field.name}"
            assert (cls.__name__, field.name) in limits, (
                f"{where} is missing from README.rst's Limits and defaults table"
            )
            stated, stated_local = limits[(cls.__name__, field.name)]
            assert parse_quantity(stated) == pytest.approx(value), where
            local_value = getattr(local, field.name)
            expected_local = parse_quantity(stated_local) if stated_local else value
            assert expected_local == pytest.approx(local_value), f"{where} in local()"


def docstring_examples() -> list[tuple[str, str]]:
    """The code examples in the docstrings the API reference renders: a
    paragraph ending in ``::`` or a ``.. code-block:: python``, then the
    indented lines after it."""
    import inspect

    from trio_distribute import errors, log, registry, remote_call, settings, testing

    objects: dict[str, object] = {f"td.{name}": getattr(td, name) for name in td.__all__}
    for module in (errors, log, registry, remote_call, settings, testing):
        objects |= {f"{module.__name__}.{n}": getattr(module, n) for n in dir(module)}
    for name, obj in list(objects.items()):
        if inspect.isclass(obj):
            objects |= {f"{name}.{n}": v for n, v in vars(obj).items() if not n.startswith("_")}
    examples = []
    for name, obj in objects.items():
        # The object's own docstring: an inherited one (an Enum's) is not ours.
        own = getattr(obj, "__doc__", None) if callable(obj) else None
        doc = inspect.cleandoc(own) if isinstance(own, str) else None
        if not doc or getattr(obj, "__module__", "").split(".")[0] != "trio_distribute":
            continue
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if not (line.rstrip().endswith("::") or line.strip() == ".. code-block:: python"):
                continue
            indent = len(line) - len(line.lstrip())
            body = []
            for text in lines[i + 1 :]:
                if text.strip() and len(text) - len(text.lstrip()) <= indent:
                    break
                body.append(text)
            examples.append((f"{name}:{i}", textwrap.dedent("\n".join(body)).strip("\n")))
    return examples


DOCSTRING_EXAMPLES = docstring_examples()


def test_docstrings_have_examples() -> None:
    names = {name.split(":")[0] for name, _ in DOCSTRING_EXAMPLES}
    assert {
        "td.message",
        "trio_distribute.log.correlation",
        "trio_distribute.remote_call.expose",
    } <= names


@pytest.mark.parametrize(("name", "source"), DOCSTRING_EXAMPLES, ids=lambda x: str(x)[:40])
def test_docstring_example_compiles(name: str, source: str) -> None:
    """Docstring examples are fragments (they use ``node``, ``peer`` and the
    like without making them), so they are compiled as the body of an async
    function; the guides hold runnable versions of each."""
    compile("async def _example():\n" + textwrap.indent(source, "    "), name, "exec")


def test_readme_renders_without_warnings() -> None:
    """PyPI renders the README with plain docutils (no Sphinx roles)."""
    core = pytest.importorskip("docutils.core")
    source = (ROOT / "README.rst").read_text(encoding="utf-8")
    core.publish_doctree(source, settings_overrides={"halt_level": 2})


def test_no_untested_literal_blocks() -> None:
    """A paragraph ending in ``::`` starts a literal block that the tests
    above would not see: code goes in ``.. code-block::`` directives."""
    literal = []
    for path in DOCUMENTS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.endswith("::") and not stripped.startswith(".. "):
                literal.append(f"{path.relative_to(ROOT)}:{number}")
    assert not literal, f"use .. code-block:: instead of :: at {literal}"
