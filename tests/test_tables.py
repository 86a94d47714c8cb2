"""Tables with their uncertainty: the Wilson and Newcombe intervals against independent references, and
the csv / md / tex files against the rows they came from."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from rll_core.tables import difference_interval, display_rows, export_table, number_rows, wilson_interval


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (33, 100), (73, 100), (999, 1000)])
def test_wilson_interval_equals_scipys(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k / n, n)
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_interval_refuses_bad_input():
    for bad in ((1.5, 10), (-0.1, 10), (0.5, 0), (math.nan, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    assert wilson_interval(np.float32(0.5), np.int64(4)) == wilson_interval(0.5, 4)
    for n in range(1, 300):  # the interval always holds the estimate itself, even at 0 and 1
        assert wilson_interval(0.0, n)[0] == 0.0 and wilson_interval(1.0, n)[1] == 1.0


def test_newcombe_interval_covers_the_true_difference_about_95_percent_of_the_time():
    # a property of the method (Newcombe 1998): near-nominal coverage for moderate n, checked by simulation
    rng = np.random.default_rng(0)
    p1, p2, n1, n2 = 0.9, 0.75, 100, 120
    k1, k2 = rng.binomial(n1, p1, 4000), rng.binomial(n2, p2, 4000)
    hits = [lo <= p1 - p2 <= hi for lo, hi in (difference_interval(a / n1, n1, b / n2, n2) for a, b in zip(k1, k2, strict=True))]
    assert 0.93 <= np.mean(hits) <= 0.97
    lo, hi = difference_interval(0.5, 100, 0.5, 100)  # symmetric around 0 for equal samples
    assert lo == pytest.approx(-hi)


def _row(label, method, **acc):
    return {"label": label, "method": method, "dataset": "fashion_mnist", "eps": 0.1, "train_n": 100, "test_n": 100,
            "train_accuracy": 0.9, "test_accuracy": 0.85, "train_pgd_accuracy": 0.6, "test_pgd_accuracy": 0.5,
            "test_lipschitz": 12.5, "test_lipschitz_se": 0.4, "gap_standard": 0.05, "gap_adversarial": 0.1, **acc}


def test_export_writes_numbers_intervals_and_a_caption(tmp_path):
    rows = [_row("natural", "natural"), _row("TRADES (β=6)", "trades", test_pgd_accuracy=0.7)]
    csv_path, md_path, tex_path = export_table(rows, tmp_path / "t", title="Table 2")
    back = list(csv.DictReader(csv_path.open()))
    lo, hi = wilson_interval(0.7, 100)
    assert float(back[1]["test_pgd_accuracy_lo"]) == pytest.approx(lo, abs=1e-4)
    assert float(back[1]["test_pgd_accuracy_hi"]) == pytest.approx(hi, abs=1e-4)
    assert back[0]["n_test"] == "100" and float(back[0]["test_lipschitz_se"]) == pytest.approx(0.4)
    assert "test_multitarget_accuracy" not in back[0]  # no row has it: no column
    md = md_path.read_text()
    assert md.startswith("Table 2. Fashion-MNIST, ε = 0.1; n = 100 evaluation points per split.")
    assert f"0.70 [{lo:.2f}, {hi:.2f}]" in md and "12.5 ± 0.4" in md and "| test PGD acc |" in md
    tex = tex_path.read_text()
    assert "\\begin{tabular}{l" + "r" * (len(display_rows(rows)[0]) - 1) + "}" in tex
    assert "TRADES ($\\beta$=6)" in tex and "\\toprule" in tex and "\\caption{Table 2. Fashion-MNIST" in tex
    assert "_" not in tex.split("\\midrule")[0].split("\\toprule")[1]  # headers are words, not keys


def test_missing_values_show_as_dashes_and_nan():
    rows = [_row("a", "at"), {"label": "Section 4", "method": "theory", "train_n": 50, "test_n": 50,
                              "test_pgd_accuracy": 0.2}]
    shown = display_rows(rows)
    assert shown[1]["test Lipschitz"] == "-" and shown[1]["test PGD acc"].startswith("0.20 [")
    assert math.isnan(number_rows(rows)[1]["test_lipschitz"])
