"""The dataset audit against brute force on small data, and robustness per point against its sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rll_core.audit import class_matrix, closest_pairs, filter_close_pairs, point_robustness, save_filtered
from rll_core.data import ImageDataset, load_npz_dataset
from rll_core.plotting import plot_accuracy_by_distance, plot_class_matrix, plot_pair_gallery
from rll_core.separation import nearest_other_class
from rll_core.stats import accuracy_by_distance, distance_bins


def _toy(n=160, seed=0, levels=6):
    g = np.random.default_rng(seed)
    x = g.integers(0, levels, (n, 1, 3, 3), dtype=np.uint8) * 40
    y = g.integers(0, 4, n).astype(np.int64)
    return ImageDataset("toy", "train", x, y, ("a", "b", "c", "d"))


def _brute(q, qy, r, ry):
    d = np.abs(q.reshape(len(q), -1).astype(np.int64)[:, None] - r.reshape(len(r), -1).astype(np.int64)[None]).max(2)
    d = np.where(qy[:, None] == ry[None], np.iinfo(np.int64).max, d)
    return d / 255.0


def test_closest_pairs_are_the_brute_force_closest_cross_class_pairs():
    ds = _toy()
    nn = nearest_other_class(ds.flat(), ds.labels)
    pairs = closest_pairs(nn, ds.labels, ds.labels, k=12, self_search=True)
    d = _brute(ds.images, ds.labels, ds.images, ds.labels)
    iu = np.triu_indices(len(ds), 1)
    # the pairs found are real cross-class pairs at the stated distance, closest first, none repeated
    for p in pairs:
        assert d[p["query"], p["ref"]] == pytest.approx(p["distance"]) and p["query_label"] != p["ref_label"]
    assert [p["distance"] for p in pairs] == sorted(p["distance"] for p in pairs)
    assert len({tuple(sorted((p["query"], p["ref"]))) for p in pairs}) == len(pairs)
    assert pairs[0]["distance"] == pytest.approx(d[iu].min())
    # every pair's distance is its query's nearest-other-class distance
    assert all(p["distance"] == pytest.approx(d[p["query"]].min()) for p in pairs)
    with pytest.raises(ValueError):
        closest_pairs(nn, ds.labels[:5], ds.labels, self_search=True)


def test_class_matrix_matches_brute_force_nearest_classes():
    ds = _toy(seed=1)
    q = _toy(n=60, seed=2)
    nn = nearest_other_class(q.flat(), q.labels, ds.flat(), ds.labels)
    m = class_matrix(nn, q.labels, ds.labels, 4)
    d = _brute(q.images, q.labels, ds.images, ds.labels)
    j = d.argmin(1)  # first index among ties, as the search's tie rule
    nb, dist = ds.labels[j], d.min(1)
    for a in range(4):
        for b in range(4):
            sel = (q.labels == a) & (nb == b)
            assert m["count"][a, b] == sel.sum()
            if sel.any():
                assert m["min"][a, b] == pytest.approx(dist[sel].min())
                assert m["median"][a, b] == pytest.approx(np.median(dist[sel]))
            else:
                assert np.isnan(m["min"][a, b]) and np.isnan(m["median"][a, b])
    assert np.nanmin(m["min"]) == pytest.approx(dist.min())
    from rll_core.plotting import caption_of

    fig = plot_class_matrix(m, q.classes)
    # what red and blank cells mean is in the caption a reader pastes under the figure, not drawn inside it
    assert not fig.texts and f"Red: the cells at the minimum ({np.nanmin(m['min']):.3f})" in caption_of(fig)


def test_filter_leaves_a_set_separated_at_the_threshold_and_saves_a_usable_dataset(tmp_path):
    ds = _toy(n=200, seed=3)
    d0 = _brute(ds.images, ds.labels, ds.images, ds.labels)
    thr = float(np.median(d0.min(1)))
    res = filter_close_pairs(ds, thr)
    kept = np.setdiff1d(np.arange(len(ds)), res.dropped)
    assert len(res.kept) == len(kept) and len(np.unique(res.dropped)) == len(res.dropped)
    dk = _brute(ds.images[kept], ds.labels[kept], ds.images[kept], ds.labels[kept])
    assert dk.min() >= thr and res.r_after == pytest.approx(dk.min() / 2)
    assert res.r_before == pytest.approx(d0.min() / 2) and res.r_after > res.r_before
    # every point closer than thr to another class in the original set was dropped in round one
    assert set(np.flatnonzero(d0.min(1) < thr)) <= set(res.dropped.tolist())
    path = save_filtered(res, tmp_path / "toy-filtered.npz")
    back = load_npz_dataset(path)
    np.testing.assert_array_equal(back.images, res.kept.images)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["dropped"] == res.dropped.tolist() and meta["min_distance"] == thr
    with pytest.raises(ValueError):
        filter_close_pairs(ds, 1.5)


def test_accuracy_by_distance_bins_like_a_loop():
    g = np.random.default_rng(4)
    d, ok = g.random(300), g.random(300) < 0.6
    edges = [0.0, 0.2, 0.5, 0.9, 1.0]
    out = accuracy_by_distance(d, ok, edges)
    for i in range(4):
        sel = (d >= edges[i]) & ((d < edges[i + 1]) if i < 3 else (d <= edges[i + 1]))
        assert out["n"][i] == sel.sum() and out["accuracy"][i] == pytest.approx(ok[sel].mean())
    with pytest.raises(ValueError):
        accuracy_by_distance(d, ok, [0.5, 0.2])
    e = distance_bins(d, 4)
    assert len(e) == 5 and np.all(np.diff(np.histogram(d, e)[0]) == 0)  # 300 points: 75 per bin
    one = distance_bins(np.full(7, 0.4), 4)
    assert len(one) == 2 and one[0] < 0.4 < one[1] and accuracy_by_distance(np.full(7, 0.4), ok[:7], one)["n"][0] == 7
    fig = plot_accuracy_by_distance([{**out, "method": "at", "label": "AT"}], edges)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["AT"]
    assert fig.axes[0].get_xticklabels()[-1].get_text() == f"[0.900, 1.000]\nn = {out['n'][-1]}"
    from rll_core.plotting import caption_of

    assert fig.axes[0].lines[0].get_linestyle() == "-" and "no trend" not in caption_of(fig)  # a scale: joined
    # MNIST's case: three bins of grey-level ties between 0.988 and 1.0 are points, not a line, and said so
    ties = [0.988, 0.992, 0.996, 1.0]
    tied = plot_accuracy_by_distance([{**accuracy_by_distance(0.988 + 0.012 * d, ok, ties), "method": "at",
                                       "label": "AT"}], ties)
    assert tied.axes[0].lines[0].get_linestyle() == "None" and "no trend is to be read" in caption_of(tied)


def test_point_robustness_joins_the_evaluation_and_the_exact_distances(tmp_path, mnist):
    from rll_core.data import load_train_test
    from rll_core.grids import TABLE_EVALUATION
    from rll_core.runs import evaluate_run, train_run
    from rll_core.storage import load_npz

    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="natural", eps=0.1, epochs=1, n_train=128, n_test=32, n_val=8,
              batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    row = evaluate_run(run, n_eval=20, **TABLE_EVALUATION, device="cpu", progress=False)  # as run_grid does
    pts = point_robustness(run, n_eval=20, device="cpu")
    assert len(list(run.glob("eval-*.json"))) == 1  # it read the tables' evaluation back, made none of its own
    ev = load_npz(run / row["eval_file"].replace(".json", ".npz"))
    np.testing.assert_array_equal(pts["robust"], ev["test_pgd"])
    train, test = load_train_test("mnist", None, 128, 32, 0)
    sub = test.subset(20, seed=None)
    np.testing.assert_allclose(pts["distance"], _brute(sub.images, sub.labels, train.images, train.labels).min(1))
    assert len(list(run.glob("points-*.npz"))) == 1
    with pytest.raises(ValueError, match="autoattack"):
        point_robustness(run, n_eval=20, attack="autoattack", device="cpu")
    pairs = closest_pairs(nearest_other_class(sub.flat(), sub.labels, train.flat(), train.labels), sub.labels,
                          train.labels, k=3, self_search=False)
    plot_pair_gallery(pairs, sub, train)
