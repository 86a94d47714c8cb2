"""End to end: the separation notebook under papermill, and the command line, on small real subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rll_core.cli import main

from .conftest import brute_nearest_other

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_separation_notebook_runs_headless(tmp_path, fmnist):
    papermill = pytest.importorskip("papermill")
    figs, cache = tmp_path / "figures", tmp_path / "cache"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "01_separation.ipynb"), str(tmp_path / "out.ipynb"),
        parameters={"n_train": 1000, "n_test": 200, "figures_dir": str(figs), "cache_dir": str(cache),
                    "formats": "png,svg", "device": "cpu"},
        cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False,
    )
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["fig2_separation_fashion_mnist.png", "fig2_separation_fashion_mnist.svg",
                     "separation_fashion_mnist.json", "table1_fashion_mnist.csv", "table1_fashion_mnist.md"]
    report = json.loads((figs / "separation_fashion_mnist.json").read_text())
    # the notebook's numbers agree with a brute-force computation on the same subsets
    train, test = fmnist
    tr, te = train.subset(1000, seed=0), test.subset(200, seed=0)
    d_tt, _ = brute_nearest_other(tr.flat(), tr.labels, tr.flat(), tr.labels)
    d_te, _ = brute_nearest_other(te.flat(), te.labels, tr.flat(), tr.labels)
    assert report["train_train"]["min"] == pytest.approx(d_tt.min() / 255)
    assert report["test_train"]["mean"] == pytest.approx(d_te.mean() / 255)
    assert report["n_train"] == 1000 and report["eps"] == 0.1
    out = json.loads((tmp_path / "out.ipynb").read_text())
    fig2_cell = next(c for c in out["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith("display(fig)"))
    assert any("image/png" in o.get("data", {}) for o in fig2_cell["outputs"]), "Figure 2 is not shown"
    assert any("r-separated at eps" in "".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))


def test_cli_separation(tmp_path, capsys):
    rc = main(["separation", "--n-train", "800", "--n-test", "200", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "c"), "--formats", "png", "--no-progress", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| fashion_mnist | 800 | 200 |" in out
    assert (tmp_path / "o" / "fig2_separation_fashion_mnist.png").exists()
    rc = main(["separation", "--dataset", "cifar10", "--data-dir", str(tmp_path / "missing"), "--no-progress"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["separation", "--n-train", "0"])
