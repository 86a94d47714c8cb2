"""Every figure the package draws, checked as a reader sees it: no two texts overlap, no text below 6 pt at the
figure's own size nor at the width of the page column it is meant for (one column, 3.3 in, for a figure up to
4.5 in wide; two columns, 6.8 in, for a wider one: a figure wider than its column is shrunk to it, its text with
it), and no Type 3 font in its PDF (journals refuse them).  (Text beyond the axes' figure box is kept:
save_figure saves with a tight bounding box, which grows to hold it.)"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from tests.test_storage_plotting import _section5_rows

#: the smallest font a printed figure may carry, in points at its own size
MIN_PT = 6.0
#: a page's column widths (inches) and the widest figure meant for one column
ONE_COLUMN, TWO_COLUMNS, ONE_COLUMN_UP_TO = 3.3, 6.8, 4.5


def figure_problems(fig) -> list[str]:
    """What a reader would object to in ``fig``: overlapping texts, texts under MIN_PT (of the texts drawn)."""
    from unittest import mock

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    drawn: list[Text] = []
    draw = Text.draw

    def record(self, renderer):  # the texts a draw really puts on the canvas (no tick beyond the view)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return draw(self, renderer)

    canvas = FigureCanvasAgg(fig)  # a closed figure keeps no canvas of its own
    with mock.patch.object(Text, "draw", record):
        canvas.draw()
    renderer = canvas.get_renderer()
    problems = [f"{t.get_text()!r} at {t.get_fontsize():g} pt" for t in drawn if t.get_fontsize() < MIN_PT]
    width = fig.get_tightbbox(renderer).width  # inches, as save_figure crops it
    column = ONE_COLUMN if width <= ONE_COLUMN_UP_TO else TWO_COLUMNS
    scale = min(1.0, column / width)
    problems += [f"{t.get_text()!r} at {t.get_fontsize() * scale:.1f} pt in a {column:g}-in column "
                 f"(the figure is {width:.1f} in wide)" for t in drawn if MIN_PT <= t.get_fontsize() < MIN_PT / scale]
    shapes = [(t, *_shape(t, renderer)) for t in drawn]
    for i, (a, ca, ha, ra) in enumerate(shapes):
        for b, cb, hb, rb in shapes[i + 1:]:
            if ra == rb:  # the same angle: compare the two rotated boxes in their own frame
                c, s_ = np.cos(np.radians(ra)), np.sin(np.radians(ra))
                d = cb - ca
                dx, dy = c * d[0] + s_ * d[1], -s_ * d[0] + c * d[1]
                hit = abs(dx) < (ha[0] + hb[0]) / 2 - 1 and abs(dy) < (ha[1] + hb[1]) / 2 - 1
            else:
                ea, eb = a.get_window_extent(renderer), b.get_window_extent(renderer)
                inter = ea.intersection(ea, eb)
                hit = inter is not None and inter.width > 1 and inter.height > 1
            if hit:
                problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return problems


def _shape(t, renderer) -> tuple[np.ndarray, np.ndarray, float]:
    """A drawn text's centre, its unrotated width and height (pixels) and its angle."""
    e = t.get_window_extent(renderer)
    angle = float(t.get_rotation()) % 180
    if angle:
        t.set_rotation(0)
        flat = t.get_window_extent(renderer)
        t.set_rotation(angle)
        size = np.array([flat.width, flat.height])
    else:
        size = np.array([e.width, e.height])
    return np.array([(e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2]), size, angle


def _figures():
    """One of every figure of the package, drawn from small inputs in the shapes the notebooks pass."""
    from rll_core.data import ImageDataset
    from rll_core.plotting import (
        plot_accuracy_brackets,
        plot_accuracy_by_distance,
        plot_astuteness_curves,
        plot_class_matrix,
        plot_dropout_comparison,
        plot_gaps,
        plot_indicators,
        plot_lipschitz_brackets,
        plot_lipschitz_vs_accuracy,
        plot_pair_gallery,
        plot_robustness_curves,
        plot_train_vs_test,
    )
    from rll_core.separation import measure_separation

    rows = _section5_rows()
    for r in rows:
        r["settings"] = {**r["settings"], "architecture": "cnn001", "dropout": None}
        r["indicators"] = [{"indicator": k, "verdict": "ok", "value": 0.0, "limit": 0.1, "n": 50, "evidence": {},
                            "text": ""} for k in ("unbounded", "more effort", "masked gradients", "gradient-free")]
    curves = [{"method": m, "label": lab, "eps": [0.0, 0.05, 0.1, 0.2], "accuracy": [0.9, 0.7, 0.5, 0.1], "n": 100}
              for m, lab in (("natural", "natural"), ("at", "AT"))]
    curves.append({"method": "theory", "label": "Section 4", "eps": [0.0, 0.05, 0.1, 0.2],
                   "accuracy": [0.5, 0.4, 0.3, 0.1], "n": 100})
    rng = np.random.default_rng(0)
    ds = ImageDataset("toy", "train", rng.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8),
                      np.arange(30, dtype=np.int64) % 3)
    pairs = [{"query": 0, "ref": 1, "query_label": 0, "ref_label": 1, "distance": 0.5},
             {"query": 2, "ref": 4, "query_label": 2, "ref_label": 1, "distance": 0.6}]
    by = {"accuracy": [0.3, 0.5, 0.7], "n": [30, 30, 40], "method": "at", "label": "AT"}
    brackets = [_bracket(m, lab, i) for i, (m, lab) in enumerate((("natural", "natural"), ("at", "AT")))]
    m = np.array([[np.nan, 0.74, 0.9], [0.74, np.nan, 0.8], [0.9, 0.8, np.nan]])
    return {
        "lipschitz_vs_accuracy": plot_lipschitz_vs_accuracy(rows),
        "gaps": plot_gaps(rows),
        "robustness_curves": plot_robustness_curves(curves, r=0.15, eps_mark=0.1),
        "accuracy_by_distance": plot_accuracy_by_distance([by], [0.5, 0.7, 0.9, 1.1]),
        "accuracy_brackets": plot_accuracy_brackets(brackets),
        "lipschitz_brackets": plot_lipschitz_brackets(brackets),
        "dropout_comparison": plot_dropout_comparison(rows, rows),
        "train_vs_test": plot_train_vs_test(rows, rows),
        "indicators": plot_indicators(rows),
        "astuteness": plot_astuteness_curves([0.0, 0.1, 0.3], {"test certified": [0.4, 0.2, 0.0],
                                                               "test attacked": [0.5, 0.3, 0.0]}, r=0.2),
        "class_matrix": plot_class_matrix({"min": m, "median": m}),
        "pair_gallery": plot_pair_gallery(pairs, ds, ds, cols=2),
        "separation": __import__("rll_core.plotting", fromlist=["x"]).plot_separation_histograms(
            measure_separation(ds, ds.subset(10, seed=1), eps=0.05)),
    }


def _ten_rows():
    """Section 5 rows at make run's size: the ten quick models."""
    labels = [("natural", "natural"), ("gr", "GR (λ=1)"), ("llr", "LLR (λ=4, μ=3)"), ("at", "AT")]
    labels += [("trades", f"TRADES (β={b})") for b in (1, 3, 6)] + [("rst", f"RST (λ={v})") for v in (0.5, 1, 2)]
    base = _section5_rows()[0]
    return [{**base, "method": m, "label": lab, "key": f"{m}{i}", "test_pgd_accuracy": 0.3 + 0.04 * i,
             "test_lipschitz": 130.0 - 10 * i, "train_pgd_accuracy": 0.4 + 0.04 * i,
             "gap_adversarial": 0.1, "settings": {**base["settings"], "architecture": "cnn001", "dropout": None},
             "indicators": [{"indicator": k, "verdict": "ok", "value": 0.0, "limit": 0.1, "n": 50, "evidence": {},
                             "text": ""} for k in ("unbounded", "more effort", "masked gradients", "gradient-free")]}
            for i, (m, lab) in enumerate(labels)]


def _bracket(method: str, label: str, i: int) -> dict:
    """A bracket curve as rll_core.bracket.bracket_curve gives it, at MNIST's radii."""
    return {"method": method, "label": label, "n": 25, "eps": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
            "pgd": [0.9, 0.88, 0.85, 0.8, 0.7, 0.5 - 0.03 * i], "certified": [0.7, 0.6, 0.2, 0.0, 0.0, 0.0],
            "bracket_ratio": [100.0 * f * (1 + 0.2 * i) for f in (1, 2.5, 5, 9, 12, 15)]}


def _ten_row_figures():
    """The Section 5 figures with make run's ten models, and its ten robustness curves."""
    from rll_core.plotting import (
        plot_accuracy_brackets,
        plot_gaps,
        plot_indicators,
        plot_lipschitz_brackets,
        plot_lipschitz_vs_accuracy,
        plot_robustness_curves,
    )

    rows = _ten_rows()
    curves = [{"method": r["method"], "label": r["label"], "eps": [0.0, 0.05, 0.1, 0.2, 0.4, 0.6],
               "accuracy": [0.9, 0.8 - 0.01 * i, 0.6 - 0.02 * i, 0.3, 0.1, 0.0], "n": 100} for i, r in enumerate(rows)]
    theory = {**rows[0], "method": "theory", "label": "Section 4 classifier (r=0.492)", "key": "theory",
              "train_accuracy": 1.0, "test_accuracy": 0.5, "train_pgd_accuracy": 0.99, "test_pgd_accuracy": 0.2,
              "gap_standard": 0.5, "gap_adversarial": 0.79}  # the longest label, as notebook 03 adds it
    return {"lipschitz_vs_accuracy (10)": plot_lipschitz_vs_accuracy(rows), "gaps (10)": plot_gaps([*rows, theory]),
            "robustness_curves (10)": plot_robustness_curves(curves, r=0.49, eps_mark=0.1),
            "indicators (10)": plot_indicators(rows),
            "accuracy_brackets (10)": plot_accuracy_brackets([_bracket(r["method"], r["label"], i) for i, r in enumerate(rows)]),
            "lipschitz_brackets (10)": plot_lipschitz_brackets([_bracket(r["method"], r["label"], i)
                                                                for i, r in enumerate(rows)])}


FIGURES = ["lipschitz_vs_accuracy", "gaps", "robustness_curves", "accuracy_by_distance", "accuracy_brackets",
           "lipschitz_brackets", "dropout_comparison",
           "train_vs_test", "indicators", "astuteness", "class_matrix", "pair_gallery", "separation"]


@pytest.fixture(scope="module")
def figures():
    import matplotlib.pyplot as plt

    made = _figures()
    yield made
    plt.close("all")


@pytest.mark.parametrize("name", FIGURES)
def test_no_text_overlaps_leaves_the_figure_or_is_too_small(figures, name):
    assert figure_problems(figures[name]) == []


def test_the_figures_of_ten_models_are_legible_at_their_column_width():
    import matplotlib.pyplot as plt

    problems = {name: p for name, fig in _ten_row_figures().items() if (p := figure_problems(fig))}
    plt.close("all")
    assert problems == {}


def test_the_check_catches_an_overlap_and_a_tiny_font():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.3, 2.4))
    ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "second label", transform=ax.transAxes)  # on top of the first
    ax.set_title("tiny", fontsize=4)
    got = " | ".join(figure_problems(fig))
    assert "'first label' overlaps 'second label'" in got
    assert "'tiny' at 4 pt" in got
    plt.close(fig)
    wide, ax = plt.subplots(figsize=(12, 3))  # 7 pt on about 10 in is under 5 pt in a 6.8-in column
    ax.set_xlabel("a label", fontsize=7)
    assert any("'a label' at 4." in p and "6.8-in column" in p for p in figure_problems(wide))
    plt.close(wide)


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="pdffonts (poppler-utils, make tex-deps) is missing")
def test_no_figure_pdf_has_a_type3_font(figures, tmp_path):
    from rll_core.plotting import save_figure

    for name, fig in figures.items():
        pdf = save_figure(fig, tmp_path / name, "pdf")[0]  # (then its caption, where it has one)
        fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
        assert "Type 3" not in fonts, (name, fonts)
