"""The package's shape: the public face, true __all__ lists, short functions, no private imports across modules."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import rll_core

PACKAGE = pathlib.Path(rll_core.__file__).parent
#: every module, dotted below rll_core (``separation.search``); a subpackage's ``__init__`` is the package
MODULES = sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def _source(module: str) -> str:
    path = PACKAGE.joinpath(*module.split("."))
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()


def test_the_public_face_is_importable_from_rll_core_and_cheap():
    for name in rll_core.__all__:
        assert getattr(rll_core, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rll_core.nope  # noqa: B018
    code = "import sys, rll_core; print(sorted(m for m in ('torch', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # importing the package loads neither torch nor numba


@pytest.mark.parametrize("module", MODULES)
def test_every_all_is_true(module):
    mod = importlib.import_module(f"rll_core.{module}")
    names = getattr(mod, "__all__", None)
    if names is None:
        assert module.rpartition(".")[2].startswith("_") or module == "cli", f"{module} has no __all__"
        return
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ lists {name}, which it does not define"
    tree = ast.parse(_source(module))
    public = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
    assert public <= set(names), f"{module} defines public {sorted(public - set(names))} outside __all__"


def test_no_function_body_over_55_lines_but_the_numba_kernels():
    long = []
    for module in MODULES:
        for node in ast.walk(ast.parse(_source(module))):
            if not isinstance(node, ast.FunctionDef):
                continue
            body = node.body[1:] if ast.get_docstring(node) else node.body  # a docstring is not code
            if body and body[-1].end_lineno - body[0].lineno + 1 > 55:
                if not any("njit" in ast.unparse(d) for d in node.decorator_list):
                    long.append(f"{module}.{node.name}")
    assert long == []


def test_no_private_imports_across_modules():
    for module in MODULES:
        tree = ast.parse(_source(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module not in ("_kernels", "_triton"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{module} imports {private} from {node.module}"


# ----------------------------------------------------------------------------------------------
# attacks and losses: assertions that can fail


# ----------------------------------------------------------------------------------------------
# the loop


# ----------------------------------------------------------------------------------------------
# runs


# ----------------------------------------------------------------------------------------------
# data and separation




def _args_section(doc: str) -> set[str]:
    """The argument names an ``Args:`` section documents (``a, b:`` documents both; ``**hyper:`` is ``hyper``)."""
    lines = doc.split("Args:", 1)[1].splitlines()[1:] if "Args:" in doc else []
    names: set[str] = set()
    for line in lines:
        if line and not line.startswith(" "):
            break  # the next section
        head = line[4:] if line.startswith("    ") and not line.startswith("     ") else ""
        if ":" in head:
            names |= {n.strip().lstrip("*") for n in head.split(":", 1)[0].split(",")}
    return names


@pytest.mark.parametrize("name", [n for n in rll_core.__all__ if callable(getattr(rll_core, n))])
def test_the_public_face_is_documented_in_one_template(name):
    """Arguments (every one, with its default, units or shape), returns, raises and an example, as torchattacks
    documents its attacks: a renamed or added argument without its line breaks this."""
    import inspect

    obj = getattr(rll_core, name)
    doc = inspect.getdoc(obj) or ""
    sig = inspect.signature(obj)
    params = {p for p in sig.parameters if p not in ("self", "args")}
    for section in ("Raises:", "Example:"):
        assert section in doc, f"{name}: no {section}"
    if params:
        assert _args_section(doc) == params, f"{name}: Args documents {sorted(_args_section(doc))}, takes {sorted(params)}"
    if not inspect.isclass(obj):
        assert "Returns:" in doc, f"{name}: no Returns:"


def test_the_runnable_examples_of_the_public_face_run():
    import doctest
    import inspect

    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    ran = 0
    for name in rll_core.__all__:
        obj = getattr(rll_core, name)
        if not callable(obj) and not inspect.ismodule(obj):
            continue  # __version__
        module = importlib.import_module(obj.__module__) if callable(obj) else obj
        for test in finder.find(obj, name, globs={**vars(module), "np": np}):
            ran += len([e for e in test.examples if not e.options.get(doctest.SKIP)])
            runner.run(test)
    assert runner.failures == 0 and ran >= 5
