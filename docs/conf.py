"""Sphinx configuration of the kstlib.auth documentation.

Build: ``./scripts/docs`` (warnings are errors). Pages are Markdown (MyST); the API
reference is generated from the docstrings (autodoc + napoleon, Google style).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The package is installed editable in .venv; this makes a plain checkout work too.
sys.path.insert(0, str(ROOT / "src"))

project = "kstlib.auth"
author = "kstlib contributors"
copyright = "kstlib contributors"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``{eval-rst}`` hosts the autodoc directives; anchors for ``#section`` links.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc / napoleon
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Unresolvable cross-references (httpx, typing aliases) are not errors; nothing else is
# suppressed: every other warning fails the build (scripts/docs runs with -W).
nitpicky = False

html_theme = "alabaster"
html_title = "kstlib.auth"
# docs/_static/kstlib.css: code blocks and tables scroll inside the content column instead
# of overflowing it; images fit it.
html_static_path = ["_static"]
html_css_files = ["kstlib.css"]
pygments_style = "sphinx"
