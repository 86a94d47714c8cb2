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

from .stats import Term, bootstrap_interval, difference_interval
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
    """Each claim of the module's findings on a grid's rows, with its estimate, 95 % interval and verdict.

    Args:
        without: rows of :func:`rll_core.grids.run_grid` (the methods without dropout; ``natural`` among them
            for ``1c``), each with ``run``, ``eval_file`` and ``key``.
        runs_dir: the grid's run folder (where each row's per-point arrays are).
        with_dropout: the same methods with dropout, in the same order (Table 4), or None for finding 1 only.
        n_boot: bootstrap resamples (default 4000).
        seed: the bootstrap's seed (default 0).

    Returns:
        One dict per claim: ``finding`` (id), ``method`` (key), ``claim`` (words), ``estimate``, ``lo``, ``hi``,
        ``interval`` (``Newcombe`` or ``paired bootstrap (N resamples)``), ``verdict``, ``n_train`` and
        ``n_test`` (the evaluated points).

    Raises:
        ValueError: rows without PGD on both splits, or the two lists naming different methods.

    Example:
        >>> findings = gap_findings(without, "results/runs", with_dropout)  # doctest: +SKIP
    """
    root = user_path(runs_dir)
    labels = [str(r.get("key") or r.get("method")) for r in without]
    if with_dropout is not None and [str(r.get("key") or r.get("method")) for r in with_dropout] != labels:
        raise ValueError("the rows with and without dropout must name the same methods in the same order")
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


def _finding(fid: str, label: str, est: float, lo: float, hi: float, how: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {"finding": fid, "method": label, "claim": FINDINGS[fid].format(m=row.get("label", label)),
            "estimate": float(est), "lo": float(lo), "hi": float(hi), "interval": how, "verdict": verdict(lo, hi),
            "n_train": int(row["train_n"]), "n_test": int(row["test_n"])}


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
    text = (caption.rstrip(".") + ". " if caption else "") + (
        f"Evaluated on {n}. Each claim's 95 % interval: Newcombe's for a single gap, a paired bootstrap over the "
        "evaluated points for a comparison (the csv names each); a claim holds when its interval lies above 0.")
    shown = [{"id": f["finding"], "claim": f["claim"],
              "estimate [95 % interval]": f"{f['estimate']:+.3f} [{f['lo']:+.3f}, {f['hi']:+.3f}]",
              "verdict": f["verdict"]} for f in findings]
    return [save_table(stem.with_suffix(".csv"), [dict(f) for f in findings]),
            save_table(stem.with_suffix(".md"), shown, caption=text),
            save_table(stem.with_suffix(".tex"), shown, caption=text)]
