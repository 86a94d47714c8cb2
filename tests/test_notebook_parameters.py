"""Every notebook parameter checked before any work: types, ranges, names (misspelled ones too), in one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rll_core.notebook import PARAMETERS, ParameterError, notebook_setup

ROOT = Path(__file__).resolve().parents[1]


def _parameters_cell(notebook: str) -> str:
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(ROOT / "notebooks" / f"{notebook}.py")
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return str(cell.source)


def _namespace(notebook: str, **injected) -> dict:
    """A kernel's namespace after the parameters cell and papermill's injected cell."""
    ns: dict = {"In": [], "Out": {}, "get_ipython": lambda: None, "exit": None, "quit": None}
    exec(_parameters_cell(notebook), ns)  # noqa: S102 - the notebook's own parameters cell
    ns.pop("__builtins__", None)
    ns.update(injected)
    return ns


@pytest.mark.parametrize("notebook", sorted(PARAMETERS))
def test_each_notebook_declares_exactly_the_parameters_it_checks_and_its_defaults_pass(notebook):
    ns = _namespace(notebook)
    declared = {k for k in ns if k not in ("In", "Out", "get_ipython", "exit", "quit")}
    assert declared == set(PARAMETERS[notebook])
    P = notebook_setup(notebook, ns)
    if "figures_dir" in PARAMETERS[notebook]:  # None: the project's folder, whatever the working directory
        assert P.figures_dir == ROOT / "figures"
    assert P.formats == ["png", "pdf"]


@pytest.mark.parametrize("notebook", sorted(PARAMETERS))
def test_papermill_reads_every_parameter_and_its_default(notebook):
    """A comment papermill cannot parse (an '=' in it) drops the parameter from `papermill --help-notebook`."""
    papermill = pytest.importorskip("papermill")
    found = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"))
    assert set(found) == set(PARAMETERS[notebook])
    assert all(p["default"] not in (None, "") for p in found.values())


@pytest.mark.parametrize("notebook, name, value, message", [
    ("04_dropout", "dropout", "abc", "parameter dropout: must be a number >= 0 and < 1 or None, got 'abc'"),
    ("04_dropout", "dropout", 1.0, "parameter dropout: must be a number >= 0 and < 1 or None, got 1.0"),
    ("01_separation", "n_train", "abc", "parameter n_train: must be an integer >= 1 or None, got 'abc'"),
    ("01_separation", "n_train", 2.5, "parameter n_train: must be an integer >= 1 or None, got 2.5"),
    ("01_separation", "n_pairs", 0, "parameter n_pairs: must be an integer >= 1, got 0"),
    ("01_separation", "subset_seed", -1, "parameter subset_seed: must be an integer >= 0, got -1"),
    ("01_separation", "dataset", "mnist2", "parameter dataset: unknown dataset 'mnist2'"),
    ("01_separation", "dataset", "nowhere.npz", "parameter dataset: no such .npz file"),
    ("01_separation", "device", "tpu", "parameter device: unsupported device 'tpu'"),
    ("01_separation", "backend", "cuda", "parameter backend: must be one of auto, numba, torch, triton, got 'cuda'"),
    ("01_separation", "formats", "png,gif", "parameter formats: unsupported figure format 'gif'"),
    ("01_separation", "data_dir", "/no/such/folder", "parameter data_dir: must be an existing folder or None"),
    ("01_separation", "interactive", "yes", "parameter interactive: must be True or False, got 'yes'"),
    ("01_separation", "eps", 2, "parameter eps: must be a number >= 0 and <= 1 or None, got 2"),
    ("02_theory", "eps_grid", "0,abc", "parameter eps_grid: must be a number >= 0 and <= 1, got 'abc'"),
    ("03_methods", "preset", "nonsense", "parameter preset: must be one of quick, long, gaps, paper, got 'nonsense'"),
    ("03_methods", "epochs", "abc", "parameter epochs: must be an integer >= 1 or None, got 'abc'"),
    ("03_methods", "methods", "natural,fgsm", "parameter methods: unknown method 'fgsm'"),
    ("03_methods", "methods", "trades:gamma6", "parameter methods: method 'trades' has no hyperparameter gamma"),
    ("03_methods", "model", "resnet9000", "parameter model: "),
    ("03_methods", "eps", 0, "parameter eps: must be a number > 0 and <= 1 or None, got 0"),
    ("03_methods", "autoattack_methods", "pgd", "parameter autoattack_methods: unknown method 'pgd'"),
    ("03_methods", "figures_dir", 3, "parameter figures_dir: must be a folder or None"),
    ("03_methods", "n_checks", -1, "parameter n_checks: must be an integer >= 0, got -1"),
    ("03_methods", "n_certify", "all", "parameter n_certify: must be an integer >= 0, got 'all'"),
])
def test_a_bad_value_is_named_in_one_line(notebook, name, value, message):
    with pytest.raises(ParameterError) as e:
        notebook_setup(notebook, _namespace(notebook, **{name: value}))
    assert str(e.value).startswith(message)
    assert e.value._render_traceback_() == [f"rll: error: {e.value}"]  # what Jupyter and papermill show


@pytest.mark.parametrize("notebook, wrong, meant", [
    ("02_theory", "n_tarin", "n_train"), ("03_methods", "epoch", "epochs"), ("04_dropout", "drop_out", "dropout"),
])
def test_a_misspelled_name_is_refused_with_the_name_it_resembles(notebook, wrong, meant):
    with pytest.raises(ParameterError, match=f"unknown parameter {wrong} \\(did you mean {meant}\\?\\)"):
        notebook_setup(notebook, _namespace(notebook, **{wrong: 5}))


def test_values_are_normalised_and_a_rerun_cell_checks_values_only(tmp_path):
    ns = _namespace("02_theory", n_train="300", eps_grid=0.1, figures_dir=str(tmp_path / "f"))
    P = notebook_setup("02_theory", ns)
    assert (P.n_train, P.eps_grid, P.figures_dir) == (300, [0.1], tmp_path / "f")
    assert notebook_setup("02_theory", _namespace("02_theory", eps_grid="0, 0.05,0.1")).eps_grid == [0, 0.05, 0.1]
    ns["train"] = "a variable the notebook made later"  # the cell run again in a live kernel: not a parameter
    assert notebook_setup("02_theory", ns).n_train == 300
    with pytest.raises(ParameterError, match="parameter n_eval: must be an integer >= 1, got 0"):
        notebook_setup("02_theory", {**ns, "n_eval": 0})
    with pytest.raises(ParameterError, match="parameter n_test of 02_theory is not set: run the parameters cell"):
        notebook_setup("02_theory", {k: v for k, v in _namespace("02_theory").items() if k != "n_test"})


def test_papermill_stops_at_the_setup_cell_with_one_line_before_any_work(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out.ipynb"
    t0 = time.perf_counter()
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(ROOT / "notebooks" / "04_dropout.ipynb"), str(out),
                                   parameters={"dropout": "abc", "runs_dir": str(tmp_path / "runs"),
                                               "figures_dir": str(tmp_path / "figures"), "interactive": False},
                                   kernel_name="python3", progress_bar=False)
    assert time.perf_counter() - t0 < 120 and not (tmp_path / "runs").exists()  # no grid trained, no folder made
    assert e.value.ename == "ParameterError"
    errors = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert [o["traceback"] for o in errors] == [["rll: error: parameter dropout: must be a number >= 0 and < 1 or "
                                                 "None, got 'abc'"]]


def test_the_seeds_parameter():
    from rll_core.notebook import Param, ParameterError, check_parameter

    assert check_parameter("seeds", "0,1,2", Param("seeds")) == [0, 1, 2]
    assert check_parameter("seeds", 3, Param("seeds")) == [3] and check_parameter("seeds", [4, 5], Param("seeds")) == [4, 5]
    for bad in ("0,0", "a,1", -1, "", 1.5):
        with pytest.raises(ParameterError, match="parameter seeds: must be a seed or a list of distinct seeds >= 0"):
            check_parameter("seeds", bad, Param("seeds"))


def test_the_gaps_notebook_decides_the_findings_over_the_package_s_seeds():
    """Notebook 04's default seeds are rll_core.grids.FINDINGS_SEEDS (make run passes none unless SEEDS is set), so
    its outputs carry no seeds tag at the default and a tag at any other list."""
    from rll_core.grids import FINDINGS_SEEDS
    from rll_core.notebook import Param, check_parameter

    assert tuple(check_parameter("seeds", _namespace("04_dropout")["seeds"], Param("seeds"))) == FINDINGS_SEEDS
    assert len(FINDINGS_SEEDS) >= 3
