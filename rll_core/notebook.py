"""The notebooks' set-up in one call: every parameter checked before any work, folders resolved from the
project, plain-text progress bars.

Each notebook's first code cell after its parameters is::

    from rll_core.notebook import notebook_setup
    P = notebook_setup("03_methods", globals())

which checks every parameter the parameters cell (or papermill's ``-p``) set, by type, range and name, and
stops with one line naming the first bad one (``rll: error: parameter epochs: must be an integer >= 1 or
None, got 'abc'``): a misspelled name (``n_tarin``) is refused with the name it resembles, not run with the
defaults.  ``P`` holds the checked values (numbers as numbers, ``formats`` as a list, ``methods`` parsed,
folders as absolute paths: ``None`` means the project's own ``figures/``, ``results/cache``, ``results/runs``,
whatever the working directory).  :data:`PARAMETERS` says what each notebook takes.

Names are checked against the parameters the first time a kernel runs the set-up cell (papermill, or the
first run in JupyterLab); later runs of that cell check the values only, since the notebook's own variables
exist by then.
"""

from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .card.load import is_factory
from .checks import resolve_device, within
from .data import check_dataset
from .grids import PRESETS, check_seeds, parse_methods
from .methods import make_method
from .models import check_model
from .plotting import check_formats
from .progress import set_progress
from .storage import check_writable, project_dir, user_path

__all__ = ["EXPLORER_NEEDS_CELLS", "PARAMETERS", "Param", "ParameterError", "check_parameter", "explorer_ready",
           "notebook_setup", "show_figure", "show_markdown"]


class ParameterError(ValueError):
    """A notebook parameter that is missing, unknown, of the wrong type or out of range (shown as one line)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"rll: error: {self}"]


@dataclass(frozen=True)
class Param:
    """What one notebook parameter accepts: its ``kind`` (see :func:`check_parameter`), whether ``None`` is
    allowed, bounds for numbers, choices for names, the project folder a ``None`` folder means."""

    kind: str
    none: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    folder: str = ""


def _fail(what: str, v: Any) -> None:
    raise ValueError(f"must be {what}, got {v!r}")


def _number(v: Any, p: Param, integral: bool) -> float | int:
    if isinstance(v, str):  # papermill's -r passes strings: "2000" is a number, "abc" is not
        try:
            v = int(v) if integral else float(v)
        except ValueError:
            pass
    what = "an integer" if integral else "a number"
    if not within(v, p.lo, p.hi, lo_open=p.lo_open, hi_open=p.hi_open, integral=integral):
        bounds = []
        if p.lo is not None:
            bounds.append(f"{'>' if p.lo_open else '>='} {p.lo:g}")
        if p.hi is not None:
            bounds.append(f"{'<' if p.hi_open else '<='} {p.hi:g}")
        _fail(what + (" " + " and ".join(bounds) if bounds else "") + (" or None" if p.none else ""), v)
    return int(v) if integral else float(v)


def _bool(v: Any, p: Param) -> bool:
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if not isinstance(v, bool):
        _fail("True or False", v)
    return bool(v)


def _choice(v: Any, p: Param) -> str:
    if v not in p.choices:
        _fail("one of " + ", ".join(p.choices), v)
    return str(v)


def _dataset(v: Any, p: Param) -> str:
    return check_dataset(v)


def _data_dir(v: Any, p: Param) -> str:
    if not isinstance(v, (str, os.PathLike)) or not user_path(v).is_dir():
        _fail("an existing folder or None", v)
    return str(user_path(v).resolve())


def _out_dir(v: Any, p: Param) -> Path:
    if v is not None and not isinstance(v, (str, os.PathLike)):
        _fail(f"a folder or None (the project's {p.folder})", v)
    return check_writable(project_dir() / p.folder if v is None else user_path(v).resolve())


def _device(v: Any, p: Param) -> str:
    resolve_device(v)
    return str(v)


def _formats(v: Any, p: Param) -> list[str]:
    return check_formats(v)


def _methods(v: Any, p: Param) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(v, str):
        _fail("a method list such as natural,at,trades:beta6 (or paper)", v)
    if p.none and not v.strip():
        return []
    grid = parse_methods(v)
    for name, hyper in grid:  # names and hyperparameter names, checked before any training
        make_method(name, **hyper)
    return grid


def _model(v: Any, p: Param) -> str:
    if not isinstance(v, str):
        _fail("an architecture name such as cnn001, or None", v)
    check_model(v)
    return v


def _eps_list(v: Any, p: Param) -> list[float]:
    items = v.split(",") if isinstance(v, str) else v if isinstance(v, (list, tuple)) else [v]
    out = [_number(e.strip() if isinstance(e, str) else e, Param("float", lo=0, hi=1), False) for e in items]
    if not out:
        _fail("a list of radii in [0, 1] or None", v)
    return [float(e) for e in out]


def _seeds(v: Any, p: Param) -> list[int]:
    """One seed or several: ``0``, ``[0, 1, 2]`` or ``"0,1,2"`` (papermill passes strings)."""
    items = v.split(",") if isinstance(v, str) else v if isinstance(v, (list, tuple)) else [v]
    try:
        return check_seeds([int(_number(e.strip() if isinstance(e, str) else e, Param("int", lo=0), True))
                            for e in items])
    except ValueError:
        _fail("a seed or a list of distinct seeds >= 0, such as 0,1,2", v)
    raise AssertionError  # unreachable: _fail raises


#: How each kind of parameter is checked and normalised.
def _model_file(v: Any, p: Param) -> str:
    """A trained model: an existing file or run folder, or a ``package.module:factory`` name."""
    if not isinstance(v, str) or not v.strip():
        _fail("a model file, a run folder or package.module:factory", v)
    if is_factory(v):
        return v
    path = Path(v).expanduser()
    if not path.exists():
        raise ValueError(f"no such model file or run folder {v!r}")
    return str(path)


def _weights(v: Any, p: Param) -> str:
    if not isinstance(v, str) or not Path(v).expanduser().is_file():
        _fail("an existing state-dict file or None", v)
    return str(Path(v).expanduser())


_KINDS: dict[str, Callable[[Any, Param], Any]] = {
    "int": lambda v, p: _number(v, p, True), "float": lambda v, p: _number(v, p, False), "bool": _bool,
    "choice": _choice, "dataset": _dataset, "data_dir": _data_dir, "out_dir": _out_dir, "device": _device,
    "formats": _formats, "methods": _methods, "model": _model, "eps_list": _eps_list, "model_file": _model_file,
    "weights": _weights, "seeds": _seeds,
}


def check_parameter(name: str, value: Any, param: Param) -> Any:
    """``value`` checked and normalised as ``param`` says; :class:`ParameterError` naming ``name`` otherwise.

    Kinds: ``int``, ``float`` (bounds ``lo`` / ``hi``), ``bool``, ``choice``, ``dataset`` (a registry name or an
    existing ``.npz``), ``data_dir`` (an existing folder), ``out_dir`` (a writable folder; ``None``: the
    project's ``folder``), ``device``, ``formats``, ``methods`` (a method list), ``model`` (an architecture),
    ``model_file`` (a model file, run folder or factory), ``weights`` (a state-dict file), ``eps_list``, ``seeds`` (one seed or a list).

    >>> check_parameter("n_eval", "200", Param("int", lo=1))
    200
    """
    if value is None and (param.none or param.kind == "out_dir"):
        return _out_dir(None, param) if param.kind == "out_dir" else None
    try:
        return _KINDS[param.kind](value, param)
    except ParameterError:
        raise
    except (ValueError, TypeError) as e:
        raise ParameterError(f"parameter {name}: {e}") from None


_COMMON: dict[str, Param] = {
    "dataset": Param("dataset"), "data_dir": Param("data_dir", none=True), "figures_dir": Param("out_dir", folder="figures"),
    "formats": Param("formats"), "interactive": Param("bool"),
}
_SIZES: dict[str, Param] = {k: Param("int", none=True, lo=1) for k in ("n_train", "n_test")}
_SECTION5: dict[str, Param] = {
    **_COMMON, **_SIZES, "preset": Param("choice", choices=tuple(PRESETS)),
    "eps": Param("float", none=True, lo=0, hi=1, lo_open=True), "methods": Param("methods"),
    "model": Param("model", none=True), "epochs": Param("int", none=True, lo=1), "n_eval": Param("int", none=True, lo=1),
    "device": Param("device"), "runs_dir": Param("out_dir", folder="results/runs"),
    "precision": Param("choice", choices=("auto", "fp32", "bf16")),
}

#: Every notebook's parameters: the names its parameters cell sets, and what each accepts.
PARAMETERS: dict[str, dict[str, Param]] = {
    "01_separation": {
        **_COMMON, **_SIZES, "subset_seed": Param("int", lo=0), "eps": Param("float", none=True, lo=0, hi=1),
        "device": Param("device"), "backend": Param("choice", choices=("auto", "numba", "torch", "triton")),
        "cache_dir": Param("out_dir", folder="results/cache"), "n_pairs": Param("int", lo=1),
        "filter_distance": Param("float", none=True, lo=0, hi=1, lo_open=True),
    },
    "02_theory": {
        **_COMMON, **_SIZES, "n_eval": Param("int", lo=1), "eps_grid": Param("eps_list", none=True),
        "subset_seed": Param("int", lo=0),
    },
    "03_methods": {
        **_SECTION5, "include_theory": Param("bool"), "workers": Param("int", none=True, lo=1), "autoattack_methods": Param("methods", none=True),
        "n_autoattack": Param("int", lo=1), "n_checks": Param("int", lo=0),
        "n_certify": Param("int", lo=0), "seeds": Param("seeds"),
    },
    "04_dropout": {**_SECTION5, "dropout": Param("float", none=True, lo=0, hi=1, hi_open=True),
                   "seeds": Param("seeds"), "workers": Param("int", none=True, lo=1)},
    "05_your_model": {
        **{k: v for k, v in _COMMON.items() if k != "figures_dir"}, "model": Param("model_file", none=True), "architecture": Param("model", none=True),
        "weights": Param("weights", none=True), "eps": Param("float", none=True, lo=0, hi=1, lo_open=True),
        "n_eval": Param("int", lo=1), "n_autoattack": Param("int", lo=0), "device": Param("device"),
        "precision": Param("choice", choices=("auto", "fp32", "bf16")), "seed": Param("int", lo=0),
        "cards_dir": Param("out_dir", folder="results/cards"), "runs_dir": Param("out_dir", folder="results/runs"),
        "cache_dir": Param("out_dir", folder="results/cache"),
    },
}

#: Names IPython itself puts in a notebook's namespace.
_IPYTHON = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _candidates(namespace: Mapping[str, Any]) -> set[str]:
    """Names in ``namespace`` that look like parameters: plain values (no modules, functions, classes)."""
    plain = (type(None), bool, int, float, str, list, tuple, dict, numbers.Real)
    return {k for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON and isinstance(v, plain)}


def _check_names(notebook: str, spec: Mapping[str, Param], namespace: Mapping[str, Any]) -> None:
    missing = sorted(set(spec) - set(namespace))
    if missing:
        raise ParameterError(f"parameter {missing[0]} of {notebook} is not set: run the parameters cell first")
    unknown = sorted(_candidates(namespace) - set(spec))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(spec), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f" ({notebook} takes {', '.join(sorted(spec))})"
        raise ParameterError(f"unknown parameter {unknown[0]}{hint}; remove it (in a live kernel: del {unknown[0]}, "
                             "or restart the kernel)")


def notebook_setup(notebook: str, namespace: dict[str, Any]) -> SimpleNamespace:
    """Check the parameters of ``notebook`` (a key of :data:`PARAMETERS`) found in ``namespace`` (the
    notebook's ``globals()``) before any work, and prepare the notebook's run.

    Returns the checked, normalised parameters as attributes.  Switches progress bars to plain text (live in
    JupyterLab, clean in a saved or headless notebook).  Raises :class:`ParameterError` (one line) for a
    missing, unknown or bad parameter, and for an unknown notebook.

    >>> P = notebook_setup("02_theory", globals())  # doctest: +SKIP
    >>> P.n_eval, P.figures_dir  # doctest: +SKIP
    (200, PosixPath('/home/me/rll/figures'))
    """
    if notebook not in PARAMETERS:
        raise ParameterError(f"unknown notebook {notebook!r}; valid: {', '.join(PARAMETERS)}")
    spec = PARAMETERS[notebook]
    if "_rll_parameters_checked" not in namespace:
        _check_names(notebook, spec, namespace)
    # folders are made last, so a bad value elsewhere leaves nothing behind
    order = sorted(spec, key=lambda name: spec[name].kind == "out_dir")
    values = {name: check_parameter(name, namespace[name], spec[name]) for name in order}
    namespace["_rll_parameters_checked"] = True
    set_progress("text")
    return SimpleNamespace(**{name: values[name] for name in spec})


#: what an explorer cell prints when the cells above it have not run in this kernel
EXPLORER_NEEDS_CELLS = ("This explorer needs what the cells above compute, and this kernel has not run them (reopened "
                        "or restarted): choose Run > Run All Cells.")


def show_figure(*figs: Any) -> None:
    """Show each figure and, under it, its caption (:func:`rll_core.plotting.set_caption`: the settings, the n and
    what the bars are), rendered in JupyterLab and as text in a headless log."""
    from IPython.display import display

    from .plotting import caption_of

    for fig in figs:
        display(fig)
        if caption_of(fig):
            show_markdown(f"*{caption_of(fig)}*")


def explorer_ready(namespace: Mapping[str, Any], *names: str) -> bool:
    """Whether a notebook's explorer cell can run, from any kernel state; says in one line what to run if not.

    Args:
        namespace: the notebook's ``globals()``.
        names: what the explorer reads from the cells above (``"rows"``, ``"clf"``...).

    Returns:
        True where the set-up cell ran with ``interactive`` true and every name exists; False (silently) where
        ``interactive`` is false; False with :data:`EXPLORER_NEEDS_CELLS` printed where the kernel lacks them.

    Raises:
        Nothing.

    Example:
        >>> explorer_ready({}, "rows")
        This explorer needs what the cells above compute, and this kernel has not run them (reopened or restarted): choose Run > Run All Cells.
        False
    """
    P = namespace.get("P")
    if P is not None and not getattr(P, "interactive", True):
        return False
    if P is None or any(n not in namespace for n in names):
        print(EXPLORER_NEEDS_CELLS)
        return False
    return True


def show_markdown(text: str) -> None:
    """Show a markdown table (or any markdown) in a notebook: rendered by JupyterLab, and as the same text in a
    headless run's log (papermill ``--log-output`` prints an output's plain text, which for IPython's
    ``Markdown`` object is ``<IPython.core.display.Markdown object>``).

    Example:
        >>> show_markdown("| a |\\n|---|\\n| 1 |")  # doctest: +SKIP
    """
    from IPython.display import display

    display({"text/markdown": text, "text/plain": text}, raw=True)
