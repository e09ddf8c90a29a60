"""Sphinx configuration: ``nox -s docs`` builds it with warnings as errors
and every cross-reference checked (``nitpicky``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

# Build from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_distribute

project = "trio_distribute"
author = "trio_distribute developers"
copyright = "trio_distribute developers"
release = trio_distribute.__version__
version = release

# No intersphinx: builds stay offline, so references to other projects'
# objects (the standard library, trio, anyio, attrs) cannot resolve and are
# listed in nitpick_ignore_regex below instead of failing the build.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Only parameters a docstring describes get a type line: the objects a node
# makes for the user (Node, Process, ...) are never constructed by hand, so
# their constructor parameters are internals.
autodoc_typehints_description_target = "documented_params"
napoleon_google_docstring = True
napoleon_use_ivar = False
html_theme = "alabaster"
html_title = "trio_distribute"
exclude_patterns = ["_build"]
root_doc = "index"

nitpicky = True
nitpick_ignore_regex = [
    # Objects of other projects (no intersphinx, see above).
    ("py:.*", r"(collections\.abc|contextlib|contextvars|pathlib|random|ssl|logging|typing)\..*"),
    ("py:.*", r"(anyio|trio|attrs|cbor2)(\..*)?"),
    ("py:.*", r"secrets|Ellipsis|MemoryObjectSendStream|MemoryObjectReceiveStream"),
    # The network seam's protocol: users pass a FakeNetwork or nothing.
    ("py:class", r"trio_distribute\._network\.Network"),
    # Type variables in signatures.
    ("py:class", r"trio_distribute\.(remote_call|codec)\.(F|T|_C)"),
]

# Pages written with individual features land in docs/ on their own
# schedule. index.rst lists each where it belongs; until its file exists the
# entry is dropped from the toctree here, so the build stays clean (a
# missing entry would be a warning, and warnings fail the build).
OPTIONAL_PAGES = ("actors", "supervisors", "cli", "testing", "operations", "mutation")


def _drop_missing_optional_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname != "index":
        return
    for page in OPTIONAL_PAGES:
        if not (Path(app.srcdir) / f"{page}.rst").exists():
            source[0] = source[0].replace(f"\n   {page}\n", "\n")


def _computed_defaults(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    # attrs shows a default made by a factory as its NOTHING sentinel; the
    # field's description says what the default is.
    if signature is None or "NOTHING" not in signature:
        return None
    return signature.replace("=NOTHING", "=..."), return_annotation


def setup(app: Sphinx) -> None:
    app.connect("source-read", _drop_missing_optional_pages)
    app.connect("autodoc-process-signature", _computed_defaults)
