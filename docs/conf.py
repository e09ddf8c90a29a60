"""Sphinx configuration: ``nox -s docs`` builds it with warnings as errors
and every cross-reference checked (``nitpicky``)."""

from __future__ import annotations

import sys
from pathlib import Path

# Build from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_distribute  # noqa: E402

project = "trio_distribute"
author = "trio_distribute developers"
copyright = "trio_distribute developers"  # noqa: A001
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
    # Type variables in signatures.
    ("py:class", r"trio_distribute\.(remote_call|codec)\.(F|T|_C)"),
]

# The guides written for individual features are dropped into docs/ as they
# land; the toctree names them as one-file glob patterns so that a page not
# there yet leaves the build clean instead of failing it.
suppress_warnings = ["toc.empty_glob"]
