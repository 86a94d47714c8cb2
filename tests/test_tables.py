"""Tables with their uncertainty: the Wilson and Newcombe intervals against independent references, and
the csv / md / tex files against the rows they came from."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from rll_core.latex import tex_layout
from rll_core.stats import difference_interval, wilson_interval
from rll_core.tables import caption, display_rows, export_table, gap_interval, number_rows


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
    assert back[0]["n_eval_test"] == "100" and float(back[0]["test_lipschitz_se"]) == pytest.approx(0.4)
    assert "test_multitarget_accuracy" not in back[0]  # no row has it: no column
    md = md_path.read_text()
    assert md.startswith("Table 2. Fashion-MNIST, ε = 0.1; n = 100 evaluation points per split.")
    assert f"0.70 [{lo:.2f}, {hi:.2f}]" in md and "12.5 ± 0.4" in md and "| test PGD acc |" in md
    tex = tex_path.read_text()
    blocks = tex_layout(list(display_rows(rows)[0]), display_rows(rows))
    assert [b[0] for b in blocks] == ["method"] * len(blocks)  # every block starts with the method
    assert tex.count("\\begin{tabular}{l") == len(blocks) and f"\\scriptsize [{lo:.2f}, {hi:.2f}]" in tex
    assert "TRADES ($\\beta$=6)" in tex and "\\toprule" in tex and "\\caption{Table 2.}" in tex and "\\emph{Notes.} Fashion-MNIST" in tex
    assert "_" not in tex.split("\\midrule")[0].split("\\toprule")[1]  # headers are words, not keys


def test_missing_values_show_as_dashes_and_nan():
    rows = [_row("a", "at"), {"label": "Section 4", "method": "theory", "train_n": 50, "test_n": 50,
                              "test_pgd_accuracy": 0.2}]
    shown = display_rows(rows)
    assert shown[1]["test Lipschitz"] == "-" and shown[1]["test PGD acc"].startswith("0.20 [")
    assert math.isnan(number_rows(rows)[1]["test_lipschitz"])


# ----------------------------------------------------------------------------------------------
# every cell, header and caption word of a table, against independent references


def _rows():
    return [
        {"label": "natural", "method": "natural", "dataset": "mnist", "eps": 0.1, "train_n": 100, "test_n": 80,
         "train_accuracy": 0.9, "test_accuracy": 0.85, "train_pgd_accuracy": 0.6, "test_pgd_accuracy": 0.5,
         "test_lipschitz": 10.0, "test_lipschitz_se": 0.25, "train_lipschitz": 9.99, "gap_standard": 0.05,
         "gap_adversarial": 0.1, "settings": {"n_train": 2000}},
        {"label": "AT", "method": "at", "dataset": "mnist", "eps": 0.1, "train_n": 100, "test_n": 80,
         "train_accuracy": 0.92, "test_accuracy": 0.875, "train_pgd_accuracy": 0.8, "test_pgd_accuracy": 0.75,
         "test_autoattack_accuracy": 0.6, "test_autoattack_n": 25, "test_lipschitz": 2.5, "gap_standard": 0.045,
         "gap_adversarial": 0.05, "settings": {"n_train": 2000}},
        {"label": "Section 4", "method": "theory", "test_n": 80, "test_accuracy": 0.5, "n_fitted": 2000},
    ]


def _wilson(p, n):
    ci = binomtest(round(p * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def test_the_numbers_file_holds_every_value_its_interval_and_its_n():
    rows = _rows()
    out = number_rows(rows)
    assert list(out[0]) == ["method", "n_fitted", "n_eval_train", "n_eval_test", "train_accuracy", "train_accuracy_lo", "train_accuracy_hi",
                            "test_accuracy", "test_accuracy_lo", "test_accuracy_hi", "train_pgd_accuracy",
                            "train_pgd_accuracy_lo", "train_pgd_accuracy_hi", "test_pgd_accuracy",
                            "test_pgd_accuracy_lo", "test_pgd_accuracy_hi", "test_autoattack_accuracy",
                            "test_autoattack_accuracy_lo", "test_autoattack_accuracy_hi", "test_autoattack_n",
                            "train_lipschitz", "train_lipschitz_se", "test_lipschitz", "test_lipschitz_se",
                            "gap_standard", "gap_standard_lo", "gap_standard_hi", "gap_adversarial",
                            "gap_adversarial_lo", "gap_adversarial_hi"]
    assert all(list(o) == list(out[0]) for o in out)
    assert [o["method"] for o in out] == ["natural", "AT", "Section 4"]
    assert (out[0]["n_eval_train"], out[0]["n_eval_test"], out[1]["test_autoattack_n"]) == (100, 80, 25)
    assert math.isnan(out[2]["n_eval_train"]) and math.isnan(out[0]["test_autoattack_n"])
    # the images each model was fitted on, apart from the points it was evaluated on
    assert (out[0]["n_fitted"], out[1]["n_fitted"], out[2]["n_fitted"]) == (2000, 2000, 2000)
    for o, r in zip(out, rows, strict=True):
        for key, n_key in (("train_accuracy", "train_n"), ("test_accuracy", "test_n"), ("test_pgd_accuracy", "test_n"),
                           ("test_autoattack_accuracy", "test_autoattack_n")):  # an attack on fewer points: its n
            if key in r:
                assert o[key] == r[key]
                assert (o[f"{key}_lo"], o[f"{key}_hi"]) == pytest.approx(_wilson(r[key], r[n_key]), abs=1e-12)
            else:
                assert all(math.isnan(o[k]) for k in (key, f"{key}_lo", f"{key}_hi"))
    assert out[0]["test_lipschitz_se"] == 0.25 and math.isnan(out[1]["test_lipschitz_se"])
    assert out[0]["train_lipschitz"] == 9.99 and math.isnan(out[0]["train_lipschitz_se"])
    lo, hi = difference_interval(0.6, 100, 0.5, 80)
    assert (out[0]["gap_adversarial_lo"], out[0]["gap_adversarial_hi"]) == (lo, hi)
    assert all(math.isnan(out[2][k]) for k in ("gap_standard", "gap_standard_lo", "gap_adversarial_hi"))


def test_the_readable_cells_and_headers():
    shown = display_rows(_rows())
    assert shown == [
        {"method": "natural", "train acc": "0.90 [0.83, 0.94]", "test acc": "0.85 [0.76, 0.91]",
         "train PGD acc": "0.60 [0.50, 0.69]", "test PGD acc": "0.50 [0.39, 0.61]", "test AutoAttack acc": "-",
         "train Lipschitz": "9.99", "test Lipschitz": "10.0 ± 0.2", "std. gap": "+0.05 [-0.05, +0.15]",
         "adv. gap": "+0.10 [-0.05, +0.24]"},
        {"method": "AT", "train acc": "0.92 [0.85, 0.96]", "test acc": "0.88 [0.78, 0.93]",
         "train PGD acc": "0.80 [0.71, 0.87]", "test PGD acc": "0.75 [0.65, 0.83]",
         "test AutoAttack acc": "0.60 [0.41, 0.77]", "train Lipschitz": "-", "test Lipschitz": "2.50",
         "std. gap": "+0.04 [-0.04, +0.14]", "adv. gap": "+0.05 [-0.07, +0.17]"},
        {"method": "Section 4", "train acc": "-", "test acc": "0.50 [0.39, 0.61]", "train PGD acc": "-",
         "test PGD acc": "-", "test AutoAttack acc": "-", "train Lipschitz": "-", "test Lipschitz": "-",
         "std. gap": "-", "adv. gap": "-"},
    ]
    no_n = display_rows([{"method": "x", "test_accuracy": 0.5, "gap_standard": 0.1, "test_lipschitz": 12.0}, {}])
    assert no_n == [{"method": "x", "test acc": "0.50", "test Lipschitz": "12.0", "std. gap": "+0.10"},
                    {"method": "?", "test acc": "-", "test Lipschitz": "-", "std. gap": "-"}]  # no n: no bracket
    bare = number_rows([{"test_accuracy": 0.5}])[0]
    assert bare["method"] == "?" and all(math.isnan(bare[k]) for k in ("n_fitted", "n_eval_train", "n_eval_test"))


def test_the_caption_says_what_made_the_numbers():
    text = caption(_rows(), "Table 2.")
    assert text == ("Table 2. MNIST, ε = 0.1; models fitted on 2,000 training images; n = 100 train and 80 test "
                    "evaluation points. Accuracies with 95 % Wilson "
                    "intervals; local Lipschitz constants (ℓ∞ → ℓ1) as mean ± standard error (rll's ascent). Gaps: "
                    "train minus test accuracy, with Newcombe's 95 % interval of a difference. AutoAttack (standard, "
                    "Croce & Hein 2020) on the first 25 test points; '-': not run.")
    # the reference procedure is named only where a row has its column
    with_ref = caption([{**_rows()[0], "test_lipschitz_reference": 1.5}, *_rows()[1:]], "Table 2.")
    assert "(rll's ascent; ref. proc.: the reference code's procedure)" in with_ref
    plain = caption([{"label": "x", "dataset": "fashion_mnist"}])
    assert plain.startswith("Fashion-MNIST; n = ? evaluation points per split.") and "AutoAttack" not in plain
    assert plain.endswith("with Newcombe's 95 % interval of a difference.")  # nothing after it without AutoAttack
    assert caption([{"test_n": 5}, {"dataset": "svhn", "eps": 0.031, "test_n": 7}], "Table IX").startswith(
        "Table IX. SVHN, ε = 0.031; n = 5/7 test evaluation points.")  # the first row's dataset that names one
    assert caption([{"test_n": 5, "train_n": 5, "settings": {"n_train": 300}}, {"n_fitted": 40}]).startswith(
        "models fitted on 40/300 training images; n = 5 evaluation points per split.")
    assert caption([{"test_n": 5, "eps": 0.3}]).startswith("n = 5 test evaluation points.")  # no dataset: no name, no eps
    two = caption([{"test_autoattack_n": 25}, {"test_autoattack_n": 10}])
    assert "AutoAttack (standard, Croce & Hein 2020) on the first 10/25 test points; '-': not run." in two
    with pytest.raises(ValueError, match="^no rows to export$"):
        export_table([], "never")
    md = export_table([{"dataset": "mnist", "test_n": 4, "test_accuracy": 0.5}], Path(tempfile.mkdtemp()) / "t")[1]
    assert md.read_text().startswith("MNIST; n = 4")  # no title: the caption alone


def test_newcombes_worked_example_and_the_refusals():
    """Newcombe (1998), Table II, example (a): 56/70 against 48/80, method 10: 0.0524 to 0.3339."""
    lo, hi = difference_interval(56 / 70, 70, 48 / 80, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    z99 = 2.5758293035489
    ref = binomtest(33, 100).proportion_ci(confidence_level=0.99, method="wilson")
    assert wilson_interval(0.33, 100, z99) == pytest.approx((ref.low, ref.high), abs=1e-12)
    w1 = binomtest(56, 70).proportion_ci(confidence_level=0.99, method="wilson")
    w2 = binomtest(48, 80).proportion_ci(confidence_level=0.99, method="wilson")
    d = 56 / 70 - 48 / 80  # Newcombe's method 10 from the two 99 % Wilson intervals
    assert difference_interval(56 / 70, 70, 48 / 80, 80, z99) == pytest.approx(
        (d - math.hypot(56 / 70 - w1.low, w2.high - 48 / 80), d + math.hypot(w1.high - 56 / 70, 48 / 80 - w2.low)),
        abs=1e-12)
    with pytest.raises(ValueError, match=r"^accuracy must be a finite number in \[0, 1\], got 1.5$"):
        wilson_interval(1.5, 10)
    with pytest.raises(ValueError, match=r"^accuracy must be a finite number in \[0, 1\], got -0.1$"):
        wilson_interval(-0.1, 10)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        wilson_interval(0.5, 0)
    assert gap_interval({"train_accuracy": 0.9, "test_accuracy": 0.8, "train_n": 10}, "gap_standard") is None
    assert gap_interval({"train_accuracy": 0.9, "train_n": 10, "test_n": 10}, "gap_standard") is None
    assert gap_interval({"test_accuracy": 0.9, "train_n": 10, "test_n": 10}, "gap_standard") is None
    assert gap_interval({"train_accuracy": 0.9, "test_accuracy": 0.8, "train_n": 0, "test_n": 10}, "gap_standard") is None
    assert gap_interval({"train_accuracy": 0.9, "test_accuracy": float("nan"), "train_n": 9, "test_n": 9},
                        "gap_standard") is None
    assert gap_interval({"train_accuracy": 0.9, "test_accuracy": 0.8, "train_n": 10, "test_n": 20}, "gap_standard") == \
        difference_interval(0.9, 10, 0.8, 20)


def test_rows_at_several_seeds_pool_into_one_row_per_method_with_a_t_interval(tmp_path):
    from rll_core.stats import seed_interval
    from rll_core.tables import pool_seeds

    def row(key, seed, acc, pgd, lip):
        return {"key": key, "label": key.upper(), "method": key, "seed": seed, "dataset": "mnist", "eps": 0.1,
                "train_n": 500, "test_n": 500, "train_accuracy": 1.0, "test_accuracy": acc, "train_pgd_accuracy": 0.9,
                "test_pgd_accuracy": pgd, "test_lipschitz": lip, "test_lipschitz_se": 0.5,
                "gap_standard": 1.0 - acc, "gap_adversarial": 0.9 - pgd}

    rows = [row("at", s, a, p, lip) for s, a, p, lip in ((0, 0.90, 0.60, 30.0), (1, 0.92, 0.66, 34.0), (2, 0.88, 0.63, 29.0))]
    rows.append(row("natural", 0, 0.97, 0.20, 90.0))
    pooled = pool_seeds(rows)
    assert [r["key"] for r in pooled] == ["at", "natural"] and pooled[1] == rows[3]  # one seed: as it was
    at = pooled[0]
    mean, lo, hi = seed_interval([0.60, 0.66, 0.63])
    assert at["seeds"] == 3 and at["test_pgd_accuracy"] == pytest.approx(mean) and at["per_seed"]["test_pgd_accuracy"] == [0.60, 0.66, 0.63]
    assert (at["test_pgd_accuracy_lo"], at["test_pgd_accuracy_hi"]) == pytest.approx((lo, hi))
    assert at["test_lipschitz_se"] == pytest.approx(np.std([30.0, 34.0, 29.0], ddof=1) / np.sqrt(3))
    shown = display_rows(pooled)
    assert shown[0]["test PGD acc"] == f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"  # not a Wilson interval of n = 500
    assert shown[1]["test PGD acc"] == "0.20 [{:.2f}, {:.2f}]".format(*wilson_interval(0.20, 500))
    assert "mean over 3 training seeds" in caption(pooled) and "t(2)" in caption(pooled)
    nums = number_rows(pooled)
    assert nums[0]["seeds"] == 3 and (nums[0]["gap_adversarial_lo"], nums[0]["gap_adversarial_hi"]) == pytest.approx(
        seed_interval([0.30, 0.24, 0.27])[1:])
    from rll_core.plotting import plot_dropout_comparison, plot_train_vs_test

    for fig in (plot_dropout_comparison(pooled[:1], pooled[:1]), plot_train_vs_test(pooled[:1], pooled[:1])):
        from rll_core.plotting import caption_of

        assert "mean over 3 seeds (dots: each seed)" in caption_of(fig).lower()
        dots = [c for ax in fig.axes for c in ax.collections if len(c.get_offsets()) == 3]
        assert dots  # every seed's own point is drawn


def test_a_pooled_accuracy_interval_stays_inside_zero_and_one():
    from rll_core.tables import pool_seeds

    rows = [{"key": "at", "seed": s, "train_n": 50, "test_n": 50, "train_accuracy": a, "test_accuracy": 0.5,
             "gap_standard": a - 0.5} for s, a in ((0, 1.0), (1, 0.9), (2, 1.0))]
    (r,) = pool_seeds(rows)
    assert r["train_accuracy_hi"] == 1.0 and 0.0 <= r["train_accuracy_lo"] < r["train_accuracy"]
    assert r["gap_standard_hi"] <= 1.0


def test_the_attack_checks_column_says_ok_or_names_each_warning_once(tmp_path):
    from rll_core.tables import pool_seeds

    def ind(name, verdict):
        return {"indicator": name, "verdict": verdict, "n": 50, "value": 0.0, "limit": 0.1, "evidence": {}, "text": ""}

    sound = [ind("unbounded", "ok"), ind("masked gradients", "ok")]
    rows = [_row("natural", "natural", indicators=sound),
            _row("GR", "gr", key="gr", seed=0, indicators=[ind("unbounded", "ok"), ind("masked gradients", "warning")]),
            _row("GR", "gr", key="gr", seed=1, indicators=[ind("unbounded", "warning"), ind("masked gradients", "warning")]),
            _row("AT", "at")]
    pooled = pool_seeds(rows)
    shown = display_rows(pooled)
    assert [r["attack checks"] for r in shown] == ["ok", "warning: masked gradients, unbounded", "-"]
    assert [r["attack_checks"] for r in number_rows(pooled)] == ["ok", "warning: masked gradients, unbounded", "-"]
    assert "on the first 50 test points" in caption(pooled) and "Square" in caption(pooled)
    assert "attack checks" not in display_rows([_row("AT", "at")])[0]  # no row checked: no column
    _, md, tex = export_table(pooled, tmp_path / "t")
    assert "| attack checks |" in md.read_text()
    assert "warning: masked gradients,\\\\unbounded" in tex.read_text()  # a long cell wraps inside its block


def test_rows_pooled_over_seeds_beside_a_row_of_one_export_with_one_header(tmp_path):
    from rll_core.tables import pool_seeds

    rows = [_row("AT", "at", key="at", seed=s, test_pgd_accuracy=0.5 + 0.05 * s) for s in range(3)]
    rows.append({"label": "Section 4 classifier", "method": "theory", "test_n": 100, "test_accuracy": 0.5})
    csv_path, _, _ = export_table(pool_seeds(rows), tmp_path / "t")
    back = list(csv.DictReader(csv_path.open()))
    assert [r["seeds"] for r in back] == ["3", "1"]


def test_large_lipschitz_values_read_as_whole_numbers_with_separators():
    shown = display_rows([_row("AT", "at", test_lipschitz_bound=100569.44, test_lipschitz_bound_se=340.6)])[0]
    assert shown["test Lipschitz bound"] == "100,569 ± 341" and shown["test Lipschitz"] == "12.5 ± 0.4"
