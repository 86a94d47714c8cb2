"""The notebook explorers as library widgets: moving a control redraws with the right data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from rll_core.separation import measure_separation  # noqa: E402
from rll_core.theory import LipschitzClassifier, astuteness  # noqa: E402
from rll_core.widgets import DRAWN_PREFIX, astuteness_explorer, methods_explorer, separation_explorer  # noqa: E402


def test_separation_explorer_redraws_for_eps_split_and_dataset(fmnist, mnist):
    res = measure_separation(fmnist[0].subset(300, seed=0), fmnist[1].subset(100, seed=0))
    loaded, shown = [], []

    def load(name):
        loaded.append(name)
        shown.append(box.children[0].children[1].value)  # the line beside the picker while this runs
        return measure_separation(mnist[0].subset(300, seed=0), mnist[1].subset(100, seed=0))

    box = separation_explorer(res, load=load, datasets=["mnist", "cifar10"])
    c = box.controls
    assert list(c["dataset"].options) == [("Fashion-MNIST", "fashion_mnist"), ("MNIST", "mnist"), ("CIFAR-10", "cifar10")] and loaded == []
    assert box.state["within_2eps"] == pytest.approx(float((res.train_train.dist < 0.2).mean()))
    c["eps"].value = 0.2
    assert box.state["within_2eps"] == pytest.approx(float((res.train_train.dist < 0.4).mean()))
    assert box.drawn.startswith(f"{DRAWN_PREFIX}Fashion-MNIST train-train, ε = {c['eps'].value:.3f}:")
    c["split"].value = "test-train"
    assert box.state["n"] == 100
    assert box.state["within_2eps"] == pytest.approx(float((res.test_train.dist < 0.4).mean()))
    c["dataset"].value = "mnist"
    assert loaded == ["mnist"] and box.state["dataset"] == "mnist"
    assert "computing" in shown[0] and box.children[0].children[1].value == ""
    assert c["eps"].description == "ε"
    single = separation_explorer(res)
    assert single.controls["dataset"].disabled and list(single.controls["dataset"].options) == [("Fashion-MNIST", "fashion_mnist")]


def test_astuteness_explorer_reads_the_curve_and_computes_nothing(monkeypatch):
    g = np.random.default_rng(0)
    x = np.concatenate([g.uniform(0.1, 0.3, (10, 2)), g.uniform(0.6, 0.9, (10, 2))])
    y = np.repeat([0, 1], 10)
    clf = LipschitzClassifier(x, y)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    grid = [0.0, 0.5 * clf.r, clf.r, 1.9 * clf.r]
    measured = [astuteness(clf, xt, yt, e) for e in grid]
    curves = {"test certified": [a.certified for a in measured], "test attacked": [a.attacked for a in measured]}
    import rll_core.theory

    def no_work(*a, **k):
        raise AssertionError("the slider recomputed astuteness")

    monkeypatch.setattr(rll_core.theory, "astuteness", no_work)
    box = astuteness_explorer(grid, curves, r=clf.r)
    assert box.state["eps"] == clf.r  # starts at r
    for i, e in enumerate(grid):
        box.controls["eps"].value = i
        assert box.state == {"eps": e, "test certified": measured[i].certified, "test attacked": measured[i].attacked}
        # the line printed after the plot names the slider's readout (what the browser test waits for)
        label = dict((v, k) for k, v in box.controls["eps"].options)[i]
        assert box.drawn.startswith(f"{DRAWN_PREFIX}ε = {label}:")
        assert f"test certified {measured[i].certified:.3f}" in box.drawn
    assert curves["test certified"][1] == 1.0 and box.state["test certified"] < 1.0  # the curve moves
    # radii that agree to 3 decimals (r and 0.999 r, as notebook 02's grid has them) read differently on the slider
    near = astuteness_explorer([0.0, 0.4936, 0.494], {"test certified": [1.0, 1.0, 0.0]}, r=0.494)
    labels = [lab for lab, _ in near.controls["eps"].options]
    assert labels == ["0.0000", "0.4936", "0.4940"]
    with pytest.raises(ValueError, match="one value per radius"):
        astuteness_explorer(grid, {"test certified": [1.0]}, r=clf.r)


def test_methods_explorer_plots_the_chosen_columns():
    rows = [{"label": "natural", "test_lipschitz": 30.0, "test_pgd_accuracy": 0.1, "gap_standard": 0.01},
            {"label": "AT", "test_lipschitz": 3.0, "test_pgd_accuracy": 0.8, "gap_standard": 0.02}]
    box = methods_explorer(rows)
    assert box.state["points"] == [(30.0, 0.1), (3.0, 0.8)]
    box.controls["y"].value = "gap_standard"
    assert box.state["points"] == [(30.0, 0.01), (3.0, 0.02)]


def test_an_explorer_without_a_live_frontend_shows_its_plot_and_one_line():
    import base64

    rows = [{"label": "a", "test_lipschitz": 3.0, "test_pgd_accuracy": 0.5},
            {"label": "b", "test_lipschitz": 9.0, "test_pgd_accuracy": 0.2}]
    bundle = methods_explorer(rows)._repr_mimebundle_()
    assert bundle["text/plain"].startswith("Interactive explorer: run this cell") and "\n" not in bundle["text/plain"]
    assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "application/vnd.jupyter.widget-view+json" in bundle  # a live JupyterLab still draws the widget
