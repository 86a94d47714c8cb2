from __future__ import annotations

import json

import numpy as np
import pytest

from rll_core.plotting import histogram_edges, save_figure
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
        r"\begin{tabular}{ll}", r"\toprule", r"the\_name & v \\", r"\midrule", r"a\_b \& 5\% & 0.5000 \\",
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
    from rll_core.separation import measure_separation

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
