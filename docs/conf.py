"""Sphinx configuration: `make docs` builds docs/_build/html offline, failing on any warning.

The API reference is written at build time from ``rll_core``'s docstrings (autodoc + napoleon, Google style):
one page per public name of ``rll_core`` and one per module with its ``__all__``; the notebooks are rendered
from their executed copies in ``results/notebooks`` (written by ``make run``) where those exist, else from the
checked-in, output-free pairs.  Generated pages go to ``docs/api`` and ``docs/notebooks`` (not tracked).
"""

from __future__ import annotations

import importlib
import inspect
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import rll_core  # noqa: E402

project = "rll"
author = "the rll authors"
copyright = "2026, the rll authors"  # noqa: A001 - Sphinx's name; the footer read "©. |" without it
release = rll_core.__version__
# math rendered offline: MathJax from the sphinx-mathjax-offline package, copied into _static (no CDN)
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx-mathjax-offline"]
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$ and $$...$$ in the pages and the notebooks' markdown
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["rll.css"]  # code and outputs wrap at the page's width
html_theme_options = {"page_width": "1180px", "body_max_width": "none"}
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # pages moved from the README keep their heading levels
nb_execution_mode = "off"  # executed by `make run`, never by the docs build
nb_output_stderr = "remove"
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

#: the modules with a reference page, in reading order
MODULES = ["data", "separation", "theory", "models", "methods", "training", "attacks", "evaluation", "lipschitz",
           "precision", "measure", "indicators", "certify", "bracket", "stats", "runs", "section4", "grids", "pool", "followup", "findings", "tables", "latex", "audit", "plotting", "widgets", "notebook",
           "card", "storage", "checks", "progress"]  # paper: a public name, its page is api/paper
NOTEBOOKS = ["01_separation", "02_theory", "03_methods", "04_dropout", "05_your_model"]


def _write(path: Path, text: str) -> None:
    """Write only when the text changes, so Sphinx rebuilds only what changed."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _directive(qualified: str, obj: object) -> str:
    if inspect.ismodule(obj):
        return f".. automodule:: {qualified}\n   :members:\n"
    if inspect.isclass(obj):
        return f".. autoclass:: {qualified}\n   :members:\n"
    if callable(obj):
        return f".. autofunction:: {qualified}\n"
    return f".. autodata:: {qualified}\n   :no-value:\n"


def write_api_pages() -> list[str]:
    """One page per public name of ``rll_core`` (``api/<name>.rst``) and per module; returns the names."""
    api = DOCS / "api"
    api.mkdir(exist_ok=True)
    names = [n for n in rll_core.__all__ if n != "__version__"]
    for name in names:
        obj = getattr(rll_core, name)
        module = rll_core._PUBLIC[name] or name
        target = f"rll_core.{module}" if inspect.ismodule(obj) else f"rll_core.{module}.{name}"
        title = f"``rll_core.{name}``"
        _write(api / f"{name}.rst", f"{title}\n{'=' * len(title)}\n\n{_directive(target, obj)}")
    for module in MODULES:
        mod = importlib.import_module(f"rll_core.{module}")
        title = f"``rll_core.{module}``"
        own = [n for n in names if rll_core._PUBLIC[n] == module]  # documented on their own pages
        see = "".join(f"* :doc:`{n}` (``from rll_core import {n}``)\n" for n in own)
        text = f"{title}\n{'=' * len(title)}\n\n.. automodule:: rll_core.{module}\n   :members:\n"
        if own:
            text += f"   :exclude-members: {', '.join(own)}\n\nAlso in this module, on their own pages:\n\n{see}"
        assert set(own) <= set(getattr(mod, "__all__", own)), module
        _write(api / f"module_{module}.rst", text)
    index = ["API reference", "=============", "",
             "Every public name of ``rll_core`` (``from rll_core import ...``), then every module with its "
             "``__all__``. Generated from the docstrings at build time.", "",
             ".. toctree::", "   :maxdepth: 1", "   :caption: Public names", "",
             *[f"   {n}" for n in names], "",
             ".. toctree::", "   :maxdepth: 1", "   :caption: Modules", "",
             *[f"   module_{m}" for m in MODULES], ""]
    _write(api / "index.rst", "\n".join(index))
    return names


def copy_notebooks() -> None:
    """The executed notebooks of ``make run`` where they exist, else the output-free pairs."""
    out = DOCS / "notebooks"
    out.mkdir(exist_ok=True)
    for name in NOTEBOOKS:
        executed = ROOT / "results" / "notebooks" / f"{name}.ipynb"
        source = executed if executed.exists() else ROOT / "notebooks" / f"{name}.ipynb"
        if not (out / f"{name}.ipynb").exists() or (out / f"{name}.ipynb").read_bytes() != source.read_bytes():
            shutil.copyfile(source, out / f"{name}.ipynb")
    lines = ["# The notebooks", "",
             "One per section of the paper, rendered from the executed copies `make run` writes to "
             "`results/notebooks/` (or, before any run, from the checked-in notebooks without outputs).", "",
             "```{toctree}", ":maxdepth: 1", "", *NOTEBOOKS, "```", ""]
    _write(out / "index.md", "\n".join(lines))


write_api_pages()
copy_notebooks()
