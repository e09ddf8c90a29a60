"""Sphinx configuration: ``nox -s docs`` builds it with warnings as errors."""

from __future__ import annotations

project = "trio_distribute"
author = "trio_distribute developers"
# No intersphinx: builds stay offline (this project's machines reach no
# documentation sites).
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
html_theme = "alabaster"
exclude_patterns = ["_build"]
