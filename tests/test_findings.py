"""Section 5's findings as claims: the paired bootstrap against closed forms and brute force, each claim's
quantity written out from the per-point arrays, the verdicts, and the files a paper takes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from rll_core import findings as findings_module
from rll_core.findings import FINDINGS, export_findings, gap_findings, verdict
from rll_core.latex import latex_table
from rll_core.stats import bootstrap_interval, difference_interval
from rll_core.storage import save_npz


def test_verdicts():
    assert verdict(0.01, 0.2) == "holds" and verdict(-0.3, -0.01) == "reversed"
    assert verdict(-0.1, 0.1) == verdict(0.0, 0.1) == verdict(-0.1, 0.0) == "not separated"


def test_the_bootstrap_of_a_difference_of_proportions_matches_the_normal_interval():
    """Independent splits, p = 0.8 and 0.5, n = 2000 each: the percentile interval of the difference is the
    Wald interval +/- 1.96 sqrt(p1 q1 / n + p2 q2 / n) to within resampling noise."""
    rng = np.random.default_rng(1)
    n = 2000
    a = {"m": {"train_pgd": rng.permutation(np.r_[np.ones(1600), np.zeros(400)]),
               "test_pgd": rng.permutation(np.r_[np.ones(1000), np.zeros(1000)])}}
    est, lo, hi = bootstrap_interval(a, [(1, "m", "train", "pgd"), (-1, "m", "test", "pgd")], n_boot=4000)
    half = 1.959964 * math.sqrt(0.8 * 0.2 / n + 0.5 * 0.5 / n)
    assert est == pytest.approx(0.3)
    assert lo == pytest.approx(0.3 - half, abs=0.004) and hi == pytest.approx(0.3 + half, abs=0.004)
    # and close to Newcombe's, the tables' interval of one gap
    nlo, nhi = difference_interval(0.8, n, 0.5, n)
    assert lo == pytest.approx(nlo, abs=0.005) and hi == pytest.approx(nhi, abs=0.005)


def test_pairing_resamples_the_same_points_for_every_model():
    """Two models that differ on exactly 10 of 500 test points: the paired interval of the difference sits
    near 10/500, far narrower than two independent intervals would give; identical models give exactly 0."""
    rng = np.random.default_rng(2)
    base = rng.random(500) < 0.6
    other = base.copy()
    flip = np.flatnonzero(~base)[:10]
    other[flip] = True
    pts = {"a": {"test_pgd": base}, "b": {"test_pgd": other}, "c": {"test_pgd": base.copy()}}
    est, lo, hi = bootstrap_interval(pts, [(1, "b", "test", "pgd"), (-1, "a", "test", "pgd")])
    assert est == pytest.approx(0.02) and 0.005 < lo < 0.02 < hi < 0.035
    assert bootstrap_interval(pts, [(1, "c", "test", "pgd"), (-1, "a", "test", "pgd")]) == (0.0, 0.0, 0.0)
    # brute force: the interval is the quantiles of the statistic over the very resamples drawn
    idx = np.random.default_rng(7).integers(0, 500, (300, 500))
    brute = np.quantile(other[idx].mean(1) - base[idx].mean(1), [0.025, 0.975])
    got = bootstrap_interval(pts, [(1, "b", "test", "pgd"), (-1, "a", "test", "pgd")], n_boot=300, seed=7)
    assert got[1:] == pytest.approx(tuple(brute))
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_interval({"a": {"test_pgd": base}, "b": {"test_pgd": base[:9]}},
                           [(1, "a", "test", "pgd"), (1, "b", "test", "pgd")])
    with pytest.raises(ValueError, match="at least one term"):
        bootstrap_interval(pts, [])


def test_a_claim_over_both_splits_resamples_each_split_alone_over_its_own_range():
    """A finding-1b quantity (adversarial minus standard gap) on 300 train and 200 test points: the interval is the
    quantiles over resamples that draw train indices from [0, 300) and test indices from [0, 200), independently
    (train first, as the claim names them), each used by every term of its split; written out by brute force."""
    rng = np.random.default_rng(3)
    pts = {"m": {"train_pgd": rng.random(300) < 0.9, "train_clean": rng.random(300) < 0.99,
                 "test_pgd": rng.random(200) < 0.5, "test_clean": rng.random(200) < 0.9}}
    terms = [(1.0, "m", "train", "pgd"), (-1.0, "m", "test", "pgd"), (-1.0, "m", "train", "clean"),
             (1.0, "m", "test", "clean")]
    est, lo, hi = bootstrap_interval(pts, terms, n_boot=500, seed=11)
    a = {k: v.astype(float) for k, v in pts["m"].items()}
    draw = np.random.default_rng(11)
    tr, te = draw.integers(0, 300, (500, 300)), draw.integers(0, 200, (500, 200))
    stat = a["train_pgd"][tr].mean(1) - a["test_pgd"][te].mean(1) - a["train_clean"][tr].mean(1) + a["test_clean"][te].mean(1)
    assert est == pytest.approx(a["train_pgd"].mean() - a["test_pgd"].mean() - a["train_clean"].mean()
                                + a["test_clean"].mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stat, [0.025, 0.975])), abs=1e-12)
    assert bootstrap_interval(pts, terms, n_boot=500, seed=11, level=0.5)[1:] == pytest.approx(
        tuple(np.quantile(stat, [0.25, 0.75])), abs=1e-12)


def _grid(tmp_path, names, fits, drop=None, seed=0):
    """Rows and per-point arrays of a grid: ``fits[name] = (train clean, test clean, train PGD, test PGD, test
    Lipschitz)`` as fractions of 400 points (the Lipschitz value constant)."""
    rows = []
    rng = np.random.default_rng(len(names) + 100 * seed)
    for name in names:
        trc, tec, trp, tep, lip = fits[name]
        run = f"run-{name}{'-drop' if drop else ''}" + (f"-s{seed}" if seed else "")
        arrays = {}
        for key, frac in (("train_clean", trc), ("test_clean", tec), ("train_pgd", trp), ("test_pgd", tep)):
            k = round(frac * 400)
            arrays[key] = rng.permutation(np.r_[np.ones(k, bool), np.zeros(400 - k, bool)])
        arrays["test_lipschitz"] = np.full(400, float(lip))
        (tmp_path / run).mkdir()
        save_npz(tmp_path / run / "eval-x.npz", **arrays)
        rows.append({"run": run, "eval_file": "eval-x.json", "key": name, "method": name.split(":")[0],
                     "label": name.upper(), "train_n": 400, "test_n": 400, "train_accuracy": trc,
                     "test_accuracy": tec, "train_pgd_accuracy": trp, "test_pgd_accuracy": tep,
                     "gap_adversarial": trp - tep, "gap_standard": trc - tec, "seed": seed})
    return rows


def test_each_claim_is_its_quantity_written_out(tmp_path):
    names = ["natural", "at"]
    without = _grid(tmp_path, names, {"natural": (1.0, 0.95, 0.30, 0.25, 90.0), "at": (1.0, 0.90, 0.95, 0.60, 30.0)})
    with_d = _grid(tmp_path, names, {"natural": (0.99, 0.96, 0.32, 0.28, 80.0), "at": (0.98, 0.93, 0.90, 0.70, 25.0)},
                   drop=True)
    f = {(x["finding"], x["method"]): x for x in gap_findings(without, tmp_path, with_d)}
    # 1a..1c for the robust method only; 2a..2e for both
    assert sorted(f) == sorted([("1a", "at"), ("1b", "at"), ("1c", "at")]
                               + [(k, m) for k in ("2a", "2b", "2c", "2d", "2e") for m in names])
    est = {k: v["estimate"] for k, v in f.items()}
    assert est[("1a", "at")] == pytest.approx(0.35)
    assert est[("1b", "at")] == pytest.approx(0.35 - 0.10)  # adversarial gap minus standard gap
    assert est[("1c", "at")] == pytest.approx(0.35 - 0.05)  # minus natural's adversarial gap
    assert est[("2a", "at")] == pytest.approx(0.10 - 0.05)  # standard gap without minus with dropout
    assert est[("2b", "at")] == pytest.approx(0.35 - 0.20)
    assert est[("2c", "at")] == pytest.approx(0.93 - 0.90) and est[("2d", "at")] == pytest.approx(0.10)
    assert est[("2e", "at")] == pytest.approx(5.0) and est[("2e", "natural")] == pytest.approx(10.0)
    lo, hi = difference_interval(0.95, 400, 0.60, 400)
    assert (f[("1a", "at")]["lo"], f[("1a", "at")]["hi"]) == (lo, hi) and f[("1a", "at")]["interval"] == "Newcombe"
    assert f[("1c", "at")]["verdict"] == "holds" and f[("2e", "at")]["verdict"] == "holds"  # constant: exact
    assert f[("1a", "at")]["claim"] == FINDINGS["1a"].format(m="AT")
    assert all(x["n_train"] == x["n_test"] == 400 for x in f.values())
    # finding 1 alone without a dropout grid; a grid of other methods is refused
    assert {x["finding"] for x in gap_findings(without, tmp_path)} == {"1a", "1b", "1c"}
    with pytest.raises(ValueError, match="same methods and seeds in the same order"):
        gap_findings(without, tmp_path, with_d[::-1])


def test_findings_go_to_csv_md_and_a_latex_table(tmp_path):
    names = ["natural", "at"]
    without = _grid(tmp_path, names, {"natural": (1.0, 0.95, 0.30, 0.25, 90.0), "at": (1.0, 0.90, 0.95, 0.60, 30.0)})
    paths = export_findings(gap_findings(without, tmp_path), tmp_path / "findings", caption="MNIST, gaps preset.")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    md = paths[1].read_text().splitlines()
    assert md[0].startswith("MNIST, gaps preset. Evaluated on 400 train and 400 test points.")
    assert "| 1a AT | adversarial gap > 0 | +0.350 [" in paths[1].read_text()
    assert paths[0].read_text().splitlines()[0].startswith("finding,method,claim,estimate,lo,hi,interval,verdict")
    assert "\\caption{" in paths[2].read_text()
    with pytest.raises(ValueError, match="no findings"):
        export_findings([], tmp_path / "none")


def test_over_seeds_the_estimate_is_the_mean_and_the_interval_a_t_over_the_seeds(tmp_path):
    """Three seeds whose AT adversarial gap is 0.35, 0.05 and 0.20: each seed's own interval is narrow (400 points),
    the first alone holds, but over the three the t interval (t(2) = 4.30) reaches below 0: not separated."""
    names = ["natural", "at"]
    gaps = {0: 0.35, 1: 0.05, 2: 0.20}
    rows = [r for s, gap in gaps.items() for r in _grid(
        tmp_path, names, {"natural": (1.0, 0.95, 0.30, 0.25, 90.0), "at": (1.0, 0.90, 0.60 + gap, 0.60, 30.0)}, seed=s)]
    one = gap_findings([r for r in rows if r["seed"] == 0], tmp_path)
    f1 = {(x["finding"], x["method"]): x for x in one}[("1a", "at")]
    assert f1["verdict"] == "holds" and f1["seeds"] == 1 and f1["seeds_holding"] == 1
    # rows of one method at several seeds: every seed measured on its own, then pooled
    ordered = sorted(rows, key=lambda r: (names.index(r["key"]), r["seed"]))
    f = {(x["finding"], x["method"]): x for x in gap_findings(ordered, tmp_path)}[("1a", "at")]
    assert f["per_seed"] == pytest.approx([0.35, 0.05, 0.20]) and f["seeds"] == 3
    mean, sd = 0.2, float(np.std([0.35, 0.05, 0.20], ddof=1))
    half = 4.302652729911275 * sd / math.sqrt(3)  # the 97.5 % quantile of t with 2 degrees of freedom
    assert (f["estimate"], f["lo"], f["hi"]) == pytest.approx((mean, mean - half, mean + half))
    assert f["verdict"] == "not separated" and f["seeds_holding"] == 2 and f["interval"].startswith("t over 3 seeds")
    paths = export_findings(list(gap_findings(ordered, tmp_path)), tmp_path / "f")
    md = paths[1].read_text()
    assert "Over 3 training seeds" in md and "| not separated | 2/3 hold | +0.350 +0.050 +0.200 |" in md
    with pytest.raises(ValueError, match="at has no run at seed 2"):
        gap_findings([r for r in ordered if not (r["key"] == "at" and r["seed"] == 2)], tmp_path)


def test_the_seed_interval_covers_the_truth_where_a_points_only_interval_does_not():
    """Simulated claims with a known truth: per seed, a gap between two Bernoulli splits of 300 points whose rates
    move with the seed (sd 0.04).  The t interval over 3 seeds covers the true mean gap in about 95 % of 2,000
    simulated studies; Newcombe's interval of all 900 points pooled, blind to the seed, in far fewer."""
    from rll_core.stats import seed_interval

    rng = np.random.default_rng(0)
    truth, hits_t, hits_points = 0.20, 0, 0
    n, k, reps = 300, 3, 2000
    for _ in range(reps):
        shift = rng.normal(0, 0.04, k)
        tr = rng.random((k, n)) < 0.90
        te = rng.random((k, n)) < (0.70 - shift)[:, None]
        est = tr.mean(1) - te.mean(1)
        _, lo, hi = seed_interval(est)
        hits_t += lo <= truth <= hi
        lo, hi = difference_interval(tr.mean(), k * n, te.mean(), k * n)
        hits_points += lo <= truth <= hi
    assert 0.93 <= hits_t / reps <= 0.97
    assert hits_points / reps < 0.8
    with pytest.raises(ValueError, match="at least two"):
        seed_interval([0.1])


def test_the_findings_table_reads_row_by_row():
    """Every LaTeX block of the findings names its row in full ("2e TRADES (β=6)", not "2e" thrice), the verdict
    sits beside the estimate, words are left-aligned and numbers right, and a Lipschitz difference is printed to
    one decimal (+92.7, not +92.664) while a gap in accuracy keeps three."""
    from rll_core.latex import tex_layout

    rows = [{"finding": fid, "method": m, "claim": FINDINGS[fid].format(m=label), "estimate": est, "lo": est - 0.1,
             "hi": est + 0.1, "per_seed": [est, est + 0.01, est - 0.01], "seeds": 3, "seeds_holding": 3,
             "interval": "t over 3 seeds", "verdict": "holds", "n_train": 150, "n_test": 300}
            for fid, est in (("1a", 0.267), ("2e", 92.664)) for m, label in (("at", "AT"), ("trades", "TRADES (β=6)"))]
    shown = [findings_module._shown(r, 3) for r in rows]
    assert [r["finding"] for r in shown] == ["1a AT", "1a TRADES (β=6)", "2e AT", "2e TRADES (β=6)"]
    assert list(shown[0])[:4] == ["finding", "claim", "estimate [95 % interval]", "verdict"]
    assert shown[0]["estimate [95 % interval]"] == "+0.267 [+0.167, +0.367]"
    assert shown[2]["estimate [95 % interval]"] == "+92.7 [+92.6, +92.8]" and shown[2]["per seed"] == "+92.7 +92.7 +92.7"
    tex = latex_table(list(shown[0]), shown, caption="Findings.")
    for head in re.findall(r"\\begin\{tabular\}\{(\w+)\}", tex):
        assert head[0] == "l"
    first = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    assert first.startswith("llrl"), first  # finding, claim (words), estimate (number), verdict (word)
    assert len(tex_layout(list(shown[0]), shown)) >= 1 and "2e TRADES ($\\beta$=6)" in tex
