from __future__ import annotations

import json

import numpy as np
import pytest

from rll_core.plotting import histogram_edges, save_figure
from rll_core.separation import measure_separation
from rll_core.storage import array_digest, atomic_write_bytes, load_npz, save_json, save_npz, save_table


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    p = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert [f.name for f in p.parent.iterdir()] == ["x.bin"]


def test_npz_json_table_roundtrip(tmp_path):
    save_npz(tmp_path / "a.npz", d=np.arange(5, dtype=np.int32))
    np.testing.assert_array_equal(load_npz(tmp_path / "a.npz")["d"], np.arange(5))
    save_json(tmp_path / "m.json", {"x": np.float32(0.5), "a": np.arange(2), "p": tmp_path})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 0.5, "a": [0, 1], "p": str(tmp_path)}
    rows = [{"name": "a", "v": 0.123456}, {"name": "b", "v": 2}]
    save_table(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text() == "name,v\na,0.1235\nb,2\n"
    save_table(tmp_path / "t.md", rows)
    assert (tmp_path / "t.md").read_text().splitlines()[2] == "| a | 0.1235 |"
    save_table(tmp_path / "t.tex", [{"the_name": "a_b & 5%", "v": 0.5}])
    assert (tmp_path / "t.tex").read_text().splitlines() == [
        r"% needs \usepackage{booktabs}; every block fits \textwidth of a standard article", r"\begin{tabular}{lr}", r"\toprule", r"the\_name & v \\", r"\midrule", r"a\_b \& 5\% & 0.5000 \\",
        r"\bottomrule", r"\end{tabular}"]


def test_digest_depends_on_content_dtype_and_shape():
    a = np.arange(6, dtype=np.uint8)
    assert array_digest(a) == array_digest(a.copy())
    assert array_digest(a) != array_digest(a.reshape(2, 3))
    assert array_digest(a) != array_digest(a.astype(np.int8))
    b = a.copy()
    b[5] = 0
    assert array_digest(a) != array_digest(b)


def test_histogram_edges_put_each_uint8_value_in_one_bin():
    values = np.arange(0, 256) / 255
    for bins in (7, 50, 300):
        edges = histogram_edges(1.0, bins, 255.0)
        counts, _ = np.histogram(values, edges)
        # every bin holds the same number of representable distances (the last may be partly empty)
        assert len(set(counts[:-1])) == 1 and counts.sum() == 256
    with pytest.raises(ValueError):
        histogram_edges(1.0, 0, 255.0)


def test_separation_histograms_on_given_axes():
    import matplotlib.pyplot as plt

    from rll_core.data import ImageDataset
    from rll_core.plotting import plot_separation_histograms

    rng = np.random.default_rng(0)
    ds = ImageDataset("toy", "train", rng.integers(0, 256, (30, 1, 2, 2), dtype=np.uint8),
                      np.arange(30, dtype=np.int64) % 3)
    res = measure_separation(ds, ds.subset(10, seed=1), eps=0.05)
    fig, axes = plt.subplots(1, 2)
    out = plot_separation_histograms(res, axes=(axes[0], axes[1]))
    assert out is fig
    # every train-train distance lands in some bar of the first panel
    assert sum(p.get_height() for p in axes[0].patches) == 30
    assert axes[1].get_title().startswith("toy test-train")
    plt.close(fig)


def test_save_figure_formats(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    paths = save_figure(fig, tmp_path / "f", "png, svg,pdf")
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[2].read_bytes()[:4] == b"%PDF"
    assert b"<svg" in paths[1].read_bytes()[:500]
    with pytest.raises(ValueError, match="unsupported figure format"):
        save_figure(fig, tmp_path / "f", ["gif"])
    plt.close(fig)


def _section5_rows():
    rows = []
    for i, (method, label) in enumerate([("natural", "natural"), ("trades", "TRADES (β=1)"), ("trades", "TRADES (β=6)"),
                                         ("at", "AT")]):
        rows.append({"method": method, "label": label, "eps": 0.1, "test_n": 100, "train_n": 100,
                     "test_lipschitz": 100.0 / (i + 1), "test_lipschitz_se": 1.0, "test_pgd_accuracy": 0.3 + 0.1 * i,
                     "train_accuracy": 0.9, "test_accuracy": 0.88, "train_pgd_accuracy": 0.5 + 0.1 * i,
                     "gap_standard": 0.9 - 0.88, "gap_adversarial": (0.5 + 0.1 * i) - (0.3 + 0.1 * i),
                     "settings": {"dataset": "fashion_mnist", "n_train": 2000, "epochs": 2}})
    return rows


def test_section5_figures_name_every_method_and_state_their_context():
    from matplotlib.colors import to_rgb

    from rll_core.plotting import method_style, plot_gaps, plot_lipschitz_vs_accuracy, plot_robustness_curves

    rows = _section5_rows()
    fig = plot_lipschitz_vs_accuracy(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [r["label"] for r in rows]
    # every legend entry is the method's marker alone (an errorbar's glyph would vary with its bars)
    marks = [(h.get_marker(), h.get_linestyle()) for h in ax.get_legend().legend_handles]
    assert marks == [(method_style(r["method"])["marker"], "None") for r in rows]
    # a short title says what is shown; the settings, n and bars go in the caption written beside the figure
    from rll_core.plotting import caption_of

    assert ax.get_title() == "Local Lipschitz constant against robust accuracy"
    assert caption_of(fig) == ("Fashion-MNIST, ε = 0.1 · trained on 2,000 images, 2 epochs · n = 100 test points. "
                               "Bars: accuracies: 95 % Wilson intervals; Lipschitz constants: ± 1 standard error "
                               "(n = 100 points per split).")
    # the swept members are named at their points, and no two labels overlap
    shown = [t for t in ax.texts if t.get_text()]
    assert sorted(t.get_text() for t in shown) == ["β=1", "β=6"]
    # a family shares its hue: the swept TRADES members are shades of TRADES' colour, AT keeps its own
    cols = [np.array(to_rgb(c.lines[0].get_color())) for c in ax.containers]
    base = np.array(to_rgb(method_style("trades")["color"]))
    assert np.allclose(cols[2], base) and not np.allclose(cols[1], base)
    assert np.allclose(cols[3], to_rgb(method_style("at")["color"]))
    gap_fig = plot_gaps(rows)
    gaps = gap_fig.axes[0]
    assert len(gaps.containers) >= 2 and gaps.get_title() == "Generalization gaps: train minus test accuracy"
    assert caption_of(gap_fig).startswith("Fashion-MNIST") and "Newcombe's 95 %" in caption_of(gap_fig)
    assert "n = 100 points per split" in caption_of(gap_fig)
    curves = [{"method": "at", "label": "AT", "eps": [0.0, 0.1, 0.2], "accuracy": [0.9, 0.6, 0.2], "n": 100},
              {"method": "theory", "label": "Section 4", "eps": [0.0, 0.1, 0.2], "accuracy": [0.5, 0.3, 0.1], "n": 100}]
    fig_rc = plot_robustness_curves(curves, r=0.15, eps_mark=0.1)
    ax = fig_rc.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["AT", "Section 4"]
    assert any(t.get_text() == "r = 0.150" for t in ax.texts)
    assert "certified" in ax.get_ylabel() and "Bands: 95 % Wilson" in caption_of(fig_rc)
    assert all(line.get_drawstyle() == "default" for line in ax.lines)  # measured points joined, no steps
    many = [{**curves[0], "label": f"AT {k}"} for k in range(6)]
    fig_many = plot_robustness_curves(many, eps_mark=0.1)
    ax = fig_many.axes[0]
    assert not ax.collections or all(type(c).__name__ != "FillBetweenPolyCollection" and
                                     type(c).__name__ != "PolyCollection" for c in ax.collections)
    assert "Bars at the training ε" in caption_of(fig_many)


def test_labels_placed_beside_crowded_points_do_not_overlap():
    import matplotlib.pyplot as plt

    from rll_core.plotting import place_labels

    fig, ax = plt.subplots(figsize=(4, 3))
    pts = [(1.0, 1.0), (1.08, 1.0), (1.0, 1.08), (1.08, 1.08), (1.04, 1.04), (2.0, 2.0)]
    ax.scatter(*zip(*pts, strict=True))
    ax.set_xlim(0.5, 2.5)
    ax.set_ylim(0.5, 2.5)
    texts = place_labels(ax, pts, ["β=1", "β=3", "β=6", "λ=1", "λ=2", ""])
    assert [t.get_text() for t in texts] == ["β=1", "β=3", "β=6", "λ=1", "λ=2"]
    boxes = [t.get_window_extent() for t in texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_the_paper_figures_say_what_a_reviewer_asks():
    """Figure 2 on log counts with its minimum marked; the astuteness curves measured, not stepped; every
    cell at the minimum boxed; the pairs labelled and repeats marked; Table 4's dropout named."""
    import matplotlib.pyplot as plt

    from rll_core.data import ImageDataset
    from rll_core.plotting import (
        plot_astuteness_curves,
        plot_class_matrix,
        plot_dropout_comparison,
        plot_pair_gallery,
        plot_separation_histograms,
    )

    rng = np.random.default_rng(0)
    ds = ImageDataset("toy", "train", rng.integers(0, 256, (30, 1, 2, 2), dtype=np.uint8),
                      np.arange(30, dtype=np.int64) % 3)
    res = measure_separation(ds, ds.subset(10, seed=1), eps=0.05)
    ax = plot_separation_histograms(res).axes[0]
    assert ax.get_yscale() == "log" and any(t.get_text().startswith("min = ") for t in ax.get_legend().get_texts())
    fig = plot_astuteness_curves([0.0, 0.1, 0.3], {"test certified": [0.4, 0.2, 0.0], "test attacked": [0.5, 0.3, 0.0]},
                                 r=0.2, marks={"paper's ε": 0.1}, note="ties")
    ax = fig.axes[0]
    assert all(line.get_drawstyle() == "default" for line in ax.lines)
    assert "paper's ε = 0.1" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.get_text() == "ties" for t in fig.texts)
    m = np.array([[np.nan, 0.74, 0.9], [0.74, np.nan, np.nan], [0.9, 0.8, np.nan]])
    fig = plot_class_matrix({"min": m, "median": m})
    boxed = [p for p in fig.axes[0].patches if type(p).__name__ == "Rectangle" and p.get_edgecolor()[0] == 1.0]
    assert sorted((int(p.get_y()), int(p.get_x())) for p in boxed) == [(0, 1), (1, 0)]  # both 0.74 cells
    from rll_core.plotting import caption_of

    assert "1 cells where no point" in caption_of(fig) and not fig.texts
    pairs = [{"query": 0, "ref": 1, "query_label": 0, "ref_label": 1, "distance": 0.5},
             {"query": 0, "ref": 2, "query_label": 0, "ref_label": 2, "distance": 0.6}]
    fig = plot_pair_gallery(pairs, ds, ds, cols=2)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0] == "train #0*\nlabel 0" and titles[1] == "train #1\nlabel 1"
    assert any("more than one" in t.get_text() for t in fig.texts)
    rows = _section5_rows()
    for r in rows:
        r["settings"] = {**r["settings"], "architecture": "cnn001", "dropout": None}
    fig = plot_dropout_comparison(rows, rows)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["no dropout", "dropout: cnn001's own (0.25 after the convolutions, 0.5 before the last layer)"]
    assert [a.get_ylabel() for a in fig.axes] == ["accuracy", "accuracy", "train − test accuracy",
                                                  "local Lipschitz constant"]
    plt.close("all")


def test_a_plot_keeps_a_figure_the_caller_passed_open():
    import matplotlib.pyplot as plt

    from rll_core.plotting import plot_gaps

    fig, ax = plt.subplots()
    rows = [{"label": "a", "gap_standard": 0.1, "gap_adversarial": 0.2}]
    assert plot_gaps(rows, ax=ax) is fig
    assert fig.number in plt.get_fignums()
    own = plot_gaps(rows)
    assert own.number not in plt.get_fignums()  # its own figure is closed, returned for saving
    plt.close(fig)


def test_more_than_four_curves_become_small_multiples_by_family():
    """Ten models: one panel per family (single-setting methods together, each swept method apart), natural
    training thin in the panels without it, the certified curve in every panel, bands in each."""
    from rll_core.plotting import caption_of, plot_robustness_curves

    def curve(method, label):
        return {"method": method, "label": label, "eps": [0.0, 0.1, 0.2], "accuracy": [0.9, 0.6, 0.2], "n": 100}

    models = [curve(m, m.upper()) for m in ("natural", "gr", "llr", "at")]
    models += [curve("trades", f"TRADES (β={b})") for b in (1, 3, 6)] + [curve("rst", f"RST (λ={v})") for v in (1, 2)]
    theory = {"method": "theory", "label": "Section 4", "eps": [0.0, 0.1, 0.2], "accuracy": [0.4, 0.1, 0.0], "n": 100}
    fig = plot_robustness_curves([*models, theory], r=0.5, eps_mark=0.1)
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["NATURAL, GR, LLR, AT", "TRADES", "RST"]
    legends = [[t.get_text() for t in a.get_legend().get_texts()] for a in axes]
    assert legends[1] == ["NATURAL", "TRADES (β=1)", "TRADES (β=3)", "TRADES (β=6)", "Section 4"]
    assert legends[0][-1] == legends[2][-1] == "Section 4"
    thin = [ln for ln in axes[1].get_lines() if ln.get_label() == "NATURAL"]
    assert thin and thin[0].get_linewidth() < 1.0  # a reference, not a member
    assert all(a.collections for a in axes)  # bands: at most four members a panel
    assert caption_of(fig).startswith("Bands: 95 % Wilson intervals (n = 100 test points); natural training")
