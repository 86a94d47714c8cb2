"""The paper's Section 5 conclusions as claims, each decided by a 95 % interval from the evaluated points.

Finding 1 (Table 2's gap columns): the methods that make a network locally Lipschitz generalize poorly: a
large train-test difference in accuracy and a larger one in adversarial accuracy.  Per robust method:

* ``1a`` its adversarial gap (train minus test PGD accuracy) is above 0 (Newcombe's interval, as the tables);
* ``1b`` its adversarial gap is above its standard gap;
* ``1c`` its adversarial gap is above natural training's.

Finding 2 (Table 4): dropout narrows the gaps while it improves test accuracy, test adversarial accuracy and
local Lipschitzness.  Per method, with dropout against without: ``2a`` a narrower standard gap, ``2b`` a
narrower adversarial gap, ``2c`` a higher test accuracy, ``2d`` a higher test PGD accuracy, ``2e`` a lower
test local Lipschitz constant.

Every claim but ``1a`` compares quantities measured on the same points (two attacks, or two models on one
grid's evaluation points), so its interval is a paired bootstrap: train and test points are resampled
(separately, ``n_boot`` times, seeded) and every quantity of the claim is recomputed on the same resample;
the interval is the 2.5 and 97.5 % quantiles.  A claim *holds* when its interval lies above 0, is *reversed*
when it lies below, and is *not separated* otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stats import Term, bootstrap_interval, difference_interval, seed_interval
from .storage import load_npz, save_table, user_path

__all__ = ["FINDINGS", "export_findings", "gap_findings", "verdict"]

#: Each claim's id and wording (``{m}``: the method's label).
FINDINGS: dict[str, str] = {
    "1a": "{m}: adversarial gap > 0",
    "1b": "{m}: adversarial gap > standard gap",
    "1c": "{m}: adversarial gap > natural training's",
    "2a": "{m}: dropout narrows the standard gap",
    "2b": "{m}: dropout narrows the adversarial gap",
    "2c": "{m}: dropout raises test accuracy",
    "2d": "{m}: dropout raises test PGD accuracy",
    "2e": "{m}: dropout lowers the test local Lipschitz constant",
}



def verdict(lo: float, hi: float) -> str:
    """``holds`` (the interval above 0), ``reversed`` (below 0) or ``not separated``."""
    return "holds" if lo > 0 else "reversed" if hi < 0 else "not separated"


def _points(runs_dir: Path, row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return load_npz(runs_dir / str(row["run"]) / Path(str(row["eval_file"])).with_suffix(".npz").name)


def _adv_gap(m: str) -> list[Term]:
    return [(1.0, m, "train", "pgd"), (-1.0, m, "test", "pgd")]


def _std_gap(m: str) -> list[Term]:
    return [(1.0, m, "train", "clean"), (-1.0, m, "test", "clean")]


def _minus(terms: list[Term]) -> list[Term]:
    return [(-c, m, split, a) for c, m, split, a in terms]


def _claims(labels: Sequence[str], paired: bool) -> list[tuple[str, str, list[Term]]]:
    """(id, method label, terms) of every bootstrap claim; models are ``"<label>"`` and ``"<label>+drop"``."""
    out: list[tuple[str, str, list[Term]]] = []
    for m in labels:
        if m != "natural":
            out.append(("1b", m, _adv_gap(m) + _minus(_std_gap(m))))
            if "natural" in labels:
                out.append(("1c", m, _adv_gap(m) + _minus(_adv_gap("natural"))))
        if paired:
            d = f"{m}+drop"
            out.append(("2a", m, _std_gap(m) + _minus(_std_gap(d))))
            out.append(("2b", m, _adv_gap(m) + _minus(_adv_gap(d))))
            out.append(("2c", m, [(1.0, d, "test", "clean"), (-1.0, m, "test", "clean")]))
            out.append(("2d", m, [(1.0, d, "test", "pgd"), (-1.0, m, "test", "pgd")]))
            out.append(("2e", m, [(1.0, m, "test", "lipschitz"), (-1.0, d, "test", "lipschitz")]))
    return out


def gap_findings(without: Sequence[Mapping[str, Any]], runs_dir: str | os.PathLike[str],
                 with_dropout: Sequence[Mapping[str, Any]] | None = None, *, n_boot: int = 4000,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Each claim of the module's findings on a grid's rows, with its estimate, 95 % interval and verdict, over
    every training seed the rows hold.

    Per seed, each claim is measured on that seed's models and evaluated points (Newcombe's interval for ``1a``,
    a paired bootstrap for the others).  Over ``k >= 2`` seeds the estimate is the mean of the per-seed estimates
    and its interval a t interval over them (:func:`rll_core.stats.seed_interval`), which covers the training
    seed and the evaluated points together; one seed gives its own interval (the points only).

    Args:
        without: rows of :func:`rll_core.grids.run_grid` (the methods without dropout, at one or more seeds;
            ``natural`` among them for ``1c``), each with ``run``, ``eval_file``, ``key`` and ``seed``.
        runs_dir: the grid's run folder (where each row's per-point arrays are).
        with_dropout: the same methods and seeds with dropout, in the same order (Table 4), or None for
            finding 1 only.
        n_boot: bootstrap resamples per seed (default 4000).
        seed: the bootstrap's seed (default 0).

    Returns:
        One dict per claim: ``finding`` (id), ``method`` (key), ``claim`` (words), ``estimate``, ``lo``, ``hi``,
        ``interval`` (how), ``verdict``, ``seeds`` (how many), ``per_seed`` (each seed's estimate),
        ``seeds_holding`` (how many seeds' own intervals lie above 0), ``n_train`` and ``n_test`` (the evaluated
        points per seed).

    Raises:
        ValueError: rows without PGD on both splits, the two lists naming different methods or seeds, a method
            missing at some seed.

    Example:
        >>> findings = gap_findings(without, "results/runs", with_dropout)  # doctest: +SKIP
    """
    keys = [(str(r.get("key") or r.get("method")), int(r.get("seed", 0))) for r in without]
    if with_dropout is not None and [(str(r.get("key") or r.get("method")), int(r.get("seed", 0)))
                                     for r in with_dropout] != keys:
        raise ValueError("the rows with and without dropout must name the same methods and seeds in the same order")
    seeds = sorted({s for _, s in keys})
    labels = list(dict.fromkeys(k for k, _ in keys))
    missing = [(k, s) for k in labels for s in seeds if (k, s) not in keys]
    if missing:
        raise ValueError(f"{missing[0][0]} has no run at seed {missing[0][1]}: every method needs every seed")
    per_seed = []
    for s in seeds:
        pick = [i for i, (_, rs) in enumerate(keys) if rs == s]
        per_seed.append(_seed_findings([without[i] for i in pick], user_path(runs_dir),
                                       None if with_dropout is None else [with_dropout[i] for i in pick], n_boot, seed))
    if len(seeds) == 1:
        return [{**f, "seeds": 1, "per_seed": [f["estimate"]], "seeds_holding": int(f["verdict"] == "holds")}
                for f in per_seed[0]]
    out = []
    for claims in zip(*per_seed, strict=True):
        est, lo, hi = seed_interval([c["estimate"] for c in claims])
        first = claims[0]
        out.append({**first, "estimate": est, "lo": lo, "hi": hi, "verdict": verdict(lo, hi),
                    "interval": f"t over {len(seeds)} seeds (of per-seed {first['interval'].split(' (')[0]} estimates)",
                    "seeds": len(seeds), "per_seed": [c["estimate"] for c in claims],
                    "seeds_holding": sum(c["verdict"] == "holds" for c in claims)})
    return out


def _seed_findings(without: Sequence[Mapping[str, Any]], root: Path, with_dropout: Sequence[Mapping[str, Any]] | None,
                   n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Every claim on one seed's rows (one row per method), its interval from that seed's points."""
    labels = [str(r.get("key") or r.get("method")) for r in without]
    points: dict[str, dict[str, np.ndarray]] = {}
    for suffix, rows in (("", without), ("+drop", with_dropout)):
        for label, r in zip(labels, rows or [], strict=rows is not None):
            if r.get("train_pgd_accuracy") is None or r.get("test_pgd_accuracy") is None:
                raise ValueError(f"{label}{suffix} has no PGD accuracy on both splits: evaluate train and test")
            points[label + suffix] = _points(root, r)
    out = []
    for r, label in zip(without, labels, strict=True):
        if label != "natural":
            lo, hi = difference_interval(r["train_pgd_accuracy"], int(r["train_n"]), r["test_pgd_accuracy"],
                                         int(r["test_n"]))
            out.append(_finding("1a", label, r["gap_adversarial"], lo, hi, "Newcombe", r))
    for fid, label, terms in _claims(labels, with_dropout is not None):
        est, lo, hi = bootstrap_interval(points, terms, n_boot=n_boot, seed=seed)
        out.append(_finding(fid, label, est, lo, hi, f"paired bootstrap ({n_boot} resamples)",
                            without[labels.index(label)]))
    return sorted(out, key=lambda f: (f["finding"], labels.index(f["method"])))


def _csv_row(f: Mapping[str, Any]) -> dict[str, Any]:
    """A finding as one csv row: the per-seed estimates joined by spaces."""
    return {k: (" ".join(f"{e:.6g}" for e in v) if k == "per_seed" else v) for k, v in f.items()}


def _finding(fid: str, label: str, est: float, lo: float, hi: float, how: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {"finding": fid, "method": label, "claim": FINDINGS[fid].format(m=row.get("label", label)),
            "estimate": float(est), "lo": float(lo), "hi": float(hi), "interval": how, "verdict": verdict(lo, hi),
            "n_train": int(row["train_n"]), "n_test": int(row["test_n"])}


def _signed(v: float, ref: float) -> str:
    """A signed estimate to its row's digits: three decimals for a gap in accuracy (|ref| < 1), two below 10, one
    from 10 on (a Lipschitz difference: +92.7, not +92.664)."""
    return f"{v:+.{3 if ref < 1 else 2 if ref < 10 else 1}f}"


def _shown(f: Mapping[str, Any], k: int) -> dict[str, str]:
    """One finding as the md and LaTeX tables show it: the first column names the claim and the method ("1a AT",
    unique, so a continued LaTeX block still says which row is which), the claim's words, the estimate with its
    interval and the verdict beside it, then the seeds."""
    method, _, words = str(f["claim"]).partition(": ") if ": " in str(f["claim"]) else ("", "", str(f["claim"]))
    per_seed = list(f.get("per_seed", ())) if k > 1 else []
    ref = max(abs(float(v)) for v in (f["estimate"], f["lo"], f["hi"], *per_seed))
    return {"finding": f"{f['finding']} {method}".strip(), "claim": words,
            "estimate [95 % interval]": f"{_signed(f['estimate'], ref)} [{_signed(f['lo'], ref)}, "
                                        f"{_signed(f['hi'], ref)}]",
            "verdict": str(f["verdict"]),
            **({"seeds": f"{f['seeds_holding']}/{f['seeds']} hold",
                "per seed": " ".join(_signed(e, ref) for e in per_seed)} if k > 1 else {})}


def export_findings(findings: Sequence[Mapping[str, Any]], stem: str | os.PathLike[str], *, caption: str = ""
                    ) -> list[Path]:
    """``<stem>.csv`` (numbers), ``.md`` and ``.tex`` (``+0.17 [+0.12, +0.22]`` cells and the verdict).

    Args:
        findings: what :func:`gap_findings` returns.
        stem: the path without suffix.
        caption: a line above the table (the data, the regime).

    Returns:
        The three paths written.

    Raises:
        ValueError: no findings.

    Example:
        >>> export_findings(findings, "figures/findings_mnist_gaps")  # doctest: +SKIP
    """
    if not findings:
        raise ValueError("no findings to export")
    stem = user_path(stem)
    ns = sorted({(int(f["n_train"]), int(f["n_test"])) for f in findings})
    n = "; ".join(f"{a} train and {b} test points" for a, b in ns)
    k = max(int(f.get("seeds", 1)) for f in findings)
    how = ("Each claim's 95 % interval: Newcombe's for a single gap, a paired bootstrap over the evaluated points "
           "for a comparison (the csv names each)") if k == 1 else (
        f"Over {k} training seeds (each its own training subset, initial weights and evaluated points): the mean of "
        f"the per-seed estimates with a t interval over them (t({k - 1})), which covers the seed and the points "
        "together; 'seeds' counts the seeds whose own interval (Newcombe's or a paired bootstrap over their "
        "points) lies above 0")
    text = (caption.rstrip(".") + ". " if caption else "") + (
        f"Evaluated on {n}{' per seed' if k > 1 else ''}. {how}; a claim holds when its interval lies above 0.")
    shown = [_shown(f, k) for f in findings]
    return [save_table(stem.with_suffix(".csv"), [_csv_row(f) for f in findings]),
            save_table(stem.with_suffix(".md"), shown, caption=text),
            save_table(stem.with_suffix(".tex"), shown, caption=text)]
