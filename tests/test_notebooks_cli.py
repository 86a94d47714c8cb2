"""End to end: the four notebooks under papermill on small real subsets, their jupytext pairing, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rll_core.cli import main
from rll_core.precision import resolve_precision

from .conftest import brute_nearest_other

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def _run(name: str, tmp_path: Path, **params) -> dict:
    papermill = pytest.importorskip("papermill")
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out),
                               parameters={"interactive": False, "figures_dir": str(tmp_path / "figures"), **params},
                               cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    for c in nb["cells"]:  # no error, and no widget left behind in a headless run
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error", o
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {}), name
    return nb


def _texts(nb: dict) -> str:
    return "\n".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def test_every_notebook_is_a_jupytext_pair_in_sync():
    jupytext = pytest.importorskip("jupytext")
    assert [p.stem for p in NOTEBOOKS] == ["01_separation", "02_theory", "03_methods", "04_dropout", "05_your_model"]
    for py in NOTEBOOKS:
        src, ipynb = jupytext.read(py), jupytext.read(py.with_suffix(".ipynb"))
        cells = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in src.cells]
        assert cells == [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in ipynb.cells], py.name
        assert all(not c.get("outputs") for c in ipynb.cells), f"{py.name}: committed with outputs"
        assert cells[1][2] == ["parameters"], f"{py.name}: the second cell must be the tagged parameters cell"


@pytest.mark.slow
def test_separation_notebook_runs_headless(tmp_path, fmnist):
    cache = tmp_path / "cache"
    nb = _run("01_separation", tmp_path, dataset="fashion_mnist", n_train=1000, n_test=200,
              cache_dir=str(cache), formats="png,svg", device="cpu", filter_distance=0.5)
    figs = tmp_path / "figures"
    names = sorted(p.name for p in figs.iterdir())
    stem = "fashion_mnist_n1000-200-seed0"  # a subset's outputs never take the full data's names
    audit = sorted([f"fig_audit_classes_{stem}.caption.txt"]  # the class matrix's key: a caption, not drawn text
                   + [f"fig_audit_{k}_{stem}.{x}" for k in ("classes", "pairs_test", "pairs_train") for x in ("png", "svg")])
    assert names == [f"audit_{stem}.settings.json", f"fig2_separation_{stem}.png", f"fig2_separation_{stem}.svg",
                     *audit, f"separation_{stem}.json", f"separation_{stem}.settings.json", f"table1_{stem}.csv",
                     f"table1_{stem}.md"]
    record = json.loads((figs / f"audit_{stem}.settings.json").read_text())  # the settings beside the outputs
    assert record["settings"]["n_pairs"] == 16 and record["files"] == audit
    # Figure 2 appears once (not also as the Table 1 cell's leftover figure)
    pngs = sum("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert pngs == 4  # Figure 2, two pair galleries, the class matrix
    kept = json.loads((cache / f"{stem}-filtered0.5.json").read_text())
    assert kept["n_kept"] + kept["n_dropped"] == 1000 and kept["r_after"] >= 0.25
    report = json.loads((figs / f"separation_{stem}.json").read_text())
    # the notebook's numbers agree with a brute-force computation on the same subsets
    train, test = fmnist
    tr, te = train.subset(1000, seed=0), test.subset(200, seed=0)
    d_tt, _ = brute_nearest_other(tr.flat(), tr.labels, tr.flat(), tr.labels)
    d_te, _ = brute_nearest_other(te.flat(), te.labels, tr.flat(), tr.labels)
    assert report["train_train"]["min"] == pytest.approx(d_tt.min() / 255)
    assert report["test_train"]["mean"] == pytest.approx(d_te.mean() / 255)
    assert report["n_train"] == 1000 and report["eps"] == 0.1
    fig2_cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith("display(fig)"))
    assert any("image/png" in o.get("data", {}) for o in fig2_cell["outputs"]), "Figure 2 is not shown"
    assert "r-separated at eps" in _texts(nb)
    assert "VBox(" not in _texts(nb)


@pytest.mark.slow
def test_theory_notebook_runs_headless(tmp_path, mnist):
    nb = _run("02_theory", tmp_path, n_train=400, n_test=100, n_eval=40, formats="png")
    figs = tmp_path / "figures"
    stem = "mnist_n400-100-eval40"  # the sizes are in the names: another n_eval never replaces these
    assert {"fig_theory_toy.png", f"fig_theory_astuteness_{stem}.png", f"theory_astuteness_{stem}.csv",
            f"theory_{stem}.settings.json"} <= {p.name for p in figs.iterdir()}
    lines = (figs / f"theory_astuteness_{stem}.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, map(float, line.split(",")), strict=True)) for line in lines[1:]]
    text = _texts(nb)
    r = float(text.split(", r = ")[1].split(",")[0])
    for row in rows:  # the theorem on the training subset, and the bracket everywhere
        if row["eps"] < r:
            assert row["train_certified"] == 1.0
        assert row["test_certified"] <= row["test_attacked"] <= row["test_accuracy"]
    assert "certified 1.000" in text


def test_the_methods_notebook_pools_several_seeds(tmp_path, mnist):
    """seeds="0,1": a run folder per seed, Tables 2/3 one row per method with the mean and a t interval over the
    seeds, the attack checks of every seed; the outputs named by the seeds."""
    _run("03_methods", tmp_path, methods="natural", n_train=200, n_test=100, n_eval=20, epochs=1, autoattack_methods="",
         n_checks=8, n_certify=8, seeds="0,1", include_theory=False, runs_dir=str(tmp_path / "runs"), formats="png")
    assert len(list((tmp_path / "runs").glob("mnist-cnn001-natural-eps0.1-n200-e1-s[01]-quick*"))) == 2
    assert len(list((tmp_path / "runs").glob("*/checks-*.json"))) == 2
    (md_path,) = (tmp_path / "figures").glob("table_methods_mnist_quick_*-seeds0-1.md")
    md = md_path.read_text().splitlines()
    assert "mean over 2 training seeds" in md[0] and "t(1)" in md[0]
    assert [line.split(" | ")[0] for line in md[4:]] == ["| natural"]  # one row for the method
    (csv_path,) = (tmp_path / "figures").glob("table_methods_mnist_quick_*-seeds0-1.csv")
    import csv

    (row,) = list(csv.DictReader(csv_path.open()))
    assert row["seeds"] == "2" and row["attack_checks"].startswith(("ok", "warning: "))


@pytest.mark.slow
@pytest.mark.native_bf16  # the notebooks run in a kernel of their own, which sees this machine's CPU
def test_methods_and_dropout_notebooks_share_runs(tmp_path, mnist):
    bf16 = "-bf16" if resolve_precision("auto", "cpu") == "bf16" else ""  # the runs' precision: their names say it
    common = dict(n_train=200, n_test=100, n_eval=20, epochs=1, runs_dir=str(tmp_path / "runs"), formats="png")
    _run("03_methods", tmp_path, methods="natural,gr,trades:beta6", autoattack_methods="natural,trades:beta6",
         n_autoattack=6, n_checks=10, n_certify=8, **common)
    # the outputs are named by what sets them apart from the preset's default job (sizes, epochs, method set)
    (md_path,) = (tmp_path / "figures").glob("table_methods_mnist_quick_n200-test100-eval20-e1-m*.md")
    md = md_path.read_text().splitlines()
    assert md[0].startswith("Tables 2/3 (quick preset). MNIST, ε = 0.1; models fitted on 200 training images; n = 20 "
                            "evaluation points per split")
    labels = [line.split(" | ")[0] for line in md[4:]]
    assert labels[:3] == ["| natural", "| GR", "| TRADES (β=6)"] and labels[3].startswith("| Section 4 classifier (r=")
    assert len(labels) == 4
    tex = md_path.with_suffix(".tex").read_text()
    assert tex.splitlines()[1] == "\\begin{table}[tbp]" and "TRADES ($\\beta$=6)" in tex and "\\caption{" in tex
    curve = (tmp_path / "figures").glob("fig_robustness_vs_eps_mnist_quick_n200-test100-eval20-e1-m*.png")
    assert len(list(curve)) == 1
    assert len(list((tmp_path / "runs").glob("*/curve-last-e1-n20-*.json"))) == 3
    assert len(list((tmp_path / "runs").glob("*/points-*.npz"))) == 3
    assert len(list((tmp_path / "figures").glob("fig_robustness_by_distance_mnist_quick_n200-test100-eval20-e1-m*.png"))) == 1
    # AutoAttack ran for the autoattack_methods rows, natural and TRADES(6), on 6 points, '-' for GR
    assert "on the first 6 test points" in md[0]
    cells = {line.split(" | ")[0]: line.split(" | ")[6] for line in md[4:]}
    assert cells["| GR"] == "-" and cells["| natural"] != "-" and cells["| TRADES (β=6)"] != "-"
    # every trained row carries its attack checks (10 points, stored in its run folder); the Section 4 row none
    checks = {line.split(" | ")[0]: line.rstrip(" |").split(" | ")[-1] for line in md[4:]}
    assert all(checks[k].startswith(("ok", "warning: ")) for k in ("| natural", "| GR", "| TRADES (β=6)"))
    assert checks[labels[3]] == "-" and "on the first 10 test points" in md[0]
    assert len(list((tmp_path / "runs").glob("*/checks-last-e1-eps0p1-n10-*.json"))) == 3
    # certified accuracy and the Lipschitz bound beside the attacked and ascended numbers, on 8 points
    assert "| test certified acc |" in md[2] and "| test Lipschitz bound |" in md[2]
    assert "bound propagation on the first 8 test points" in md[0]
    assert len(list((tmp_path / "runs").glob("*/bracket-last-e1-eps0p1-n8-*.npz"))) == 3
    assert len(list((tmp_path / "figures").glob("fig_attack_checks_mnist_quick_n200-test100-eval20-e1-m*.png"))) == 1
    shared = tmp_path / "runs" / f"mnist-cnn001-natural-eps0.1-n200-e1-s0-quick{bf16}" / "last.pt"
    before = shared.stat().st_mtime_ns
    _run("04_dropout", tmp_path, methods="natural", preset="quick", seeds="0", **common)
    assert shared.stat().st_mtime_ns == before  # the run with dropout came from notebook 3's folder
    assert list((tmp_path / "runs" / f"mnist-cnn001-natural-drop0-eps0.1-n200-e1-s0-quick{bf16}").glob("eval-*.npz"))
    (csv,) = (tmp_path / "figures").glob("table_dropout_mnist_quick_n200-test100-eval20-e1-seeds0-m*.csv")
    rows = csv.read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["natural no dropout", "natural + dropout"]


@pytest.mark.slow
def test_the_gaps_notebook_decides_each_claim(tmp_path, mnist):
    """Notebook 04 at its default preset (gaps), shrunk: Table 4, the claims with their intervals, the train
    against test figure."""
    _run("04_dropout", tmp_path, methods="natural,at", n_train=100, n_test=100, n_eval=40, epochs=2, seeds="0,1",
         runs_dir=str(tmp_path / "runs"), formats="png,pdf")
    (md,) = (tmp_path / "figures").glob("findings_mnist_gaps_n100-test100-eval40-e2-seeds0-1-m*.md")
    text = md.read_text()
    assert text.startswith("Section 5's findings (gaps preset): MNIST, ε = 0.1 · trained on 100 images, 2 epochs")
    assert "Evaluated on 40 train and 40 test points per seed. Over 2 training seeds" in text
    assert len(list((tmp_path / "runs").glob("*-s1-gaps*"))) == 4  # every model at the second seed too
    rows = [line.split(" | ") for line in text.splitlines()[4:]]
    assert [r[0] for r in rows] == ["| 1a AT", "| 1b AT", "| 1c AT"] + [f"| 2{k} {m}" for k in "abcde"
                                                                     for m in ("natural", "AT")]
    assert all(r[3] in ("holds", "reversed", "not separated") for r in rows)  # the verdict beside the estimate
    assert len(list((tmp_path / "figures").glob("fig_train_vs_test_mnist_gaps_*.p*"))) == 2
    (table,) = (tmp_path / "figures").glob("table_dropout_mnist_gaps_*.md")
    assert "test MT acc" not in table.read_text()  # the gaps preset evaluates PGD on both splits only
    assert "models fitted on 100 training images; n = 40 evaluation points per split per seed" in table.read_text()


def test_cli_separation(tmp_path, capsys):
    rc = main(["separation", "--dataset", "fashion_mnist", "--n-train", "800", "--n-test", "200",
               "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--formats", "png",
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Fashion-MNIST | 800 | 200 |" in out
    assert (tmp_path / "o" / "fig2_separation_fashion_mnist_n800-200-seed0.png").exists()
    rc = main(["separation", "--dataset", "cifar10", "--data-dir", str(tmp_path / "missing"), "--no-progress"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    # bad input is refused before any work, with one line
    assert main(["separation", "--formats", "jpg", "--cache-dir", str(tmp_path / "c2"), "--no-progress"]) == 2
    assert "unsupported figure format 'jpg'" in capsys.readouterr().err
    for bad in (["--eps", "-1"], ["--n-train", "0"]):
        with pytest.raises(SystemExit):
            main(["separation", *bad, "--cache-dir", str(tmp_path / "c2")])
    assert not (tmp_path / "c2").exists()


def test_cli_grid_decides_the_findings_over_seeds(tmp_path, capsys, mnist):
    """rll grid: both Table 4 grids at two seeds in one pool, the pooled table and the findings printed and written,
    each seed a run folder; a rerun reads every run back; bad seeds refused in one line before any work."""
    args = ["grid", "--dataset", "mnist", "--methods", "natural,at", "--epochs", "1", "--n-train", "64", "--n-test",
            "32", "--n-eval", "16", "--seeds", "0,1", "--findings", "--runs-dir", str(tmp_path / "runs"), "--out",
            str(tmp_path / "o"), "--workers", "2", "--no-progress", "--device", "cpu", "--precision", "fp32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "natural no dropout" in out and "AT + dropout" in out and "/2 hold" in out  # findings over the 2 seeds
    assert len(list((tmp_path / "runs").iterdir())) == 8  # 2 methods x 2 seeds x with/without dropout
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert any(n.startswith("findings_dropout_mnist_quick_") and n.endswith(".tex") for n in written), written
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.pt")}
    assert main(args) == 0  # resumed: nothing retrained
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*.pt")} == stamps
    capsys.readouterr()
    for bad in ("0,0", "a", "-1"):
        with pytest.raises(SystemExit):
            main(["grid", "--seeds", bad, "--runs-dir", str(tmp_path / "r2")])
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("rll grid: error: argument --seeds: must be distinct integers >= 0")
    with pytest.raises(SystemExit):  # a rate of 1 drops every unit: refused as it is read, as the help says
        main(["grid", "--dropout", "1", "--runs-dir", str(tmp_path / "r2")])
    assert "argument --dropout: must be in [0, 1), got 1" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_an_npz_of_your_own_runs_through_every_notebook(tmp_path, own_npz):
    """The paper's eps for its shape (MNIST's 0.1), its file stem in every output name."""
    data = str(own_npz)
    nb1 = _run("01_separation", tmp_path, dataset=data, cache_dir=str(tmp_path / "cache"), formats="png",
               device="cpu")
    assert "eps = 0.1" in _texts(nb1) and (tmp_path / "figures" / "table1_own.md").exists()
    _run("02_theory", tmp_path, dataset=data, n_eval=10, formats="png")
    assert (tmp_path / "figures" / "theory_astuteness_own_n2000-500-eval10.csv").exists()
    common = dict(dataset=data, methods="natural", epochs=1, runs_dir=str(tmp_path / "runs"), formats="png",
                  device="cpu")
    _run("03_methods", tmp_path, autoattack_methods="", **common)
    (md,) = (tmp_path / "figures").glob("table_methods_own_quick_e1-m*.md")
    assert "ε = 0.1" in md.read_text()
    _run("04_dropout", tmp_path, preset="quick", seeds="0", **common)
    assert len(list((tmp_path / "figures").glob("table_dropout_own_quick_e1-seeds0-m*.csv"))) == 1
