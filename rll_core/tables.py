"""The Section 5 tables (the paper's Tables 2-4) as a reader needs them: every accuracy with its n and a
95 % Wilson interval, every mean Lipschitz constant with its standard error, readable headers.

* ``<stem>.csv`` is for machines: one number per cell (``<col>``, ``<col>_lo``, ``<col>_hi``, ``<col>_se``)
  and the n of each split.
* ``<stem>.md`` and ``<stem>.tex`` are for people: ``0.73 [0.64, 0.81]``, ``46.9 ± 2.1``, a caption that
  states the dataset, eps and n; the LaTeX one is a booktabs ``table`` with math for β, λ, μ and ε.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import paper
from .indicators import checks_description, indicator_summary
from .precision import precision_note
from .stats import difference_interval, readable, seed_interval, standard_error, wilson_interval
from .storage import save_table, user_path

__all__ = ["COLUMNS", "GAPS", "attack_checks", "caption", "display_rows", "evaluation_lines", "export_table", "gap_interval",
           "n_fitted", "number_rows", "pool_seeds", "pooled_interval"]

#: (row key, header, kind): ``acc`` accuracies (with a Wilson interval from the split's n), ``lip`` mean
#: Lipschitz constants (with the standard error), ``gap`` train minus test accuracy (with Newcombe's interval).  A column shows only
#: when some row has it (the AutoAttack column only after an AutoAttack evaluation).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("train_accuracy", "train acc", "acc"),
    ("test_accuracy", "test acc", "acc"),
    ("train_pgd_accuracy", "train PGD acc", "acc"),
    ("test_pgd_accuracy", "test PGD acc", "acc"),
    ("test_multitarget_accuracy", "test MT acc", "acc"),
    ("test_autoattack_accuracy", "test AutoAttack acc", "acc"),
    ("test_worst_accuracy", "test worst-case acc", "acc"),
    ("test_certified_accuracy", "test certified acc", "acc"),
    ("train_lipschitz", "train Lipschitz", "lip"),
    ("test_lipschitz", "test Lipschitz", "lip"),
    ("test_lipschitz_reference", "test Lipschitz (ref. proc.)", "lip"),
    ("test_lipschitz_bound", "test Lipschitz bound", "lip"),
    ("gap_standard", "std. gap", "gap"),
    ("gap_adversarial", "adv. gap", "gap"),
)

#: The gaps: (train accuracy key, test accuracy key).
GAPS = {"gap_standard": ("train_accuracy", "test_accuracy"),
        "gap_adversarial": ("train_pgd_accuracy", "test_pgd_accuracy")}


def gap_interval(r: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The 95 % interval of a row's gap (``gap_standard`` / ``gap_adversarial``), None without the n."""
    a, b = GAPS[key]
    p1, p2, n1, n2 = _number(r.get(a)), _number(r.get(b)), _n(r, a), _n(r, b)
    if p1 is None or p2 is None or not n1 or not n2:
        return None
    return difference_interval(p1, n1, p2, n2)


def pool_seeds(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (``key``) from a grid's rows at several training seeds: each column the mean over the
    seeds, with a 95 % t interval over them (``<col>_lo``, ``<col>_hi``; :func:`rll_core.stats.seed_interval`:
    it covers the seed and the evaluated points together) for accuracies and gaps, the standard error over the
    seeds (``<col>_se``) for Lipschitz means (intervals clipped to [0, 1] for accuracies, [-1, 1] for gaps), ``seeds`` (how many) and ``per_seed`` (each seed's value per
    column, for the figures).  Methods at one seed are passed through as they are.

    Example:
        >>> pool_seeds([{"key": "at", "seed": s, "test_accuracy": a} for s, a in ((0, 0.8), (1, 0.9))])[0]["test_accuracy"]
        0.85
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("key") or r.get("label") or r.get("method")), []).append(r)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(dict(members[0]))
            continue
        d: dict[str, Any] = {**members[0], "seeds": len(members), "seed": [r.get("seed") for r in members],
                             "per_seed": {}}
        for key, _, kind in COLUMNS:
            vals = [_number(r.get(key)) for r in members]
            if any(v is None for v in vals):
                d.pop(key, None)
                continue
            mean, lo, hi = seed_interval([float(v) for v in vals])  # type: ignore[arg-type]
            d[key], d["per_seed"][key] = mean, vals
            if kind == "lip":
                d[f"{key}_se"] = standard_error([float(v) for v in vals])  # type: ignore[arg-type]
            else:  # an accuracy lies in [0, 1], a gap in [-1, 1]: the interval kept inside (coverage unchanged)
                bound = 0.0 if kind == "acc" else -1.0
                d[f"{key}_lo"], d[f"{key}_hi"] = max(lo, bound), min(hi, 1.0)
        if any("indicators" in r for r in members):  # every seed's checks: a warning at any seed is the row's
            d["indicators"] = [i for r in members for i in r.get("indicators", [])]
        out.append(d)
    return out


def pooled_interval(r: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """A pooled row's interval over its seeds (:func:`pool_seeds`), None for a row of one seed."""
    if int(r.get("seeds", 1) or 1) < 2 or _number(r.get(f"{key}_lo")) is None:
        return None
    return float(r[f"{key}_lo"]), float(r[f"{key}_hi"])


def attack_checks(r: Mapping[str, Any]) -> str:
    """A row's attack-failure indicators in one cell (:func:`rll_core.indicators.indicator_summary`), ``-``
    where none were run."""
    return indicator_summary(r["indicators"]) if r.get("indicators") else "-"


def _checked(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(r.get("indicators") for r in rows)


def _present(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    return [c for c in COLUMNS if any(_number(r.get(c[0])) is not None for r in rows)]


def _number(v: Any) -> float | None:
    """A finite float, or None for missing / NaN cells."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _label(r: Mapping[str, Any]) -> str:
    return str(r.get("label", r.get("method", "?")))


def _n(r: Mapping[str, Any], key: str) -> int | None:
    """The n behind an accuracy: its own (``test_autoattack_n``, when an attack ran on fewer points), else
    its split's (``test_n``)."""
    n = r.get(f"{key.removesuffix('_accuracy')}_n") or r.get(f"{key.split('_', 1)[0]}_n")
    return int(n) if n else None


def n_fitted(r: Mapping[str, Any]) -> int | None:
    """The number of training images a row's model was fitted on (its run's ``n_train``; the Section 4
    classifier's training set), None where unknown."""
    n = r.get("n_fitted") or (r.get("settings") or {}).get("n_train")
    return int(n) if n else None


def number_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per row, one number per cell: accuracies with ``_lo``/``_hi`` (Wilson 95 %), Lipschitz
    means with ``_se``; ``n_fitted`` (the training images the model was fitted on), ``n_eval_train`` and
    ``n_eval_test`` (the points each split was evaluated on); NaN where a row lacks a value."""
    cols = _present(rows)
    out = []
    for r in rows:
        d: dict[str, Any] = {"method": _label(r), "n_fitted": n_fitted(r) or math.nan,
                             "n_eval_train": r.get("train_n", math.nan), "n_eval_test": r.get("test_n", math.nan)}
        for key, _, kind in cols:
            v = _number(r.get(key))
            d[key] = math.nan if v is None else v
            if kind == "acc":
                n = _n(r, key)
                lo, hi = pooled_interval(r, key) or (
                    wilson_interval(v, n) if v is not None and n else (math.nan, math.nan))
                d |= {f"{key}_lo": lo, f"{key}_hi": hi}
                own = f"{key.removesuffix('_accuracy')}_n"
                if own not in ("train_n", "test_n") and any(x.get(own) for x in rows):  # an attack on fewer points
                    d[own] = r.get(own, math.nan)
            elif kind == "lip":
                se = _number(r.get(f"{key}_se"))
                d[f"{key}_se"] = math.nan if se is None else se
            else:
                d[f"{key}_lo"], d[f"{key}_hi"] = pooled_interval(r, key) or gap_interval(r, key) or (math.nan, math.nan)
        if any(int(x.get("seeds", 1) or 1) > 1 for x in rows):  # every row has the column (CSV's one header)
            d["seeds"] = int(r.get("seeds", 1) or 1)
        if _checked(rows):
            d["attack_checks"] = attack_checks(r)
        out.append(d)
    return out


def _cell(r: Mapping[str, Any], key: str, kind: str) -> str:
    v = _number(r.get(key))
    if v is None:
        return "-"
    if kind == "acc":
        n = _n(r, key)
        ci = pooled_interval(r, key) or (wilson_interval(v, n) if n else None)
        return f"{v:.2f}" if ci is None else "{:.2f} [{:.2f}, {:.2f}]".format(v, *ci)
    if kind == "lip":
        se = _number(r.get(f"{key}_se"))
        return readable(v) + ("" if se is None else f" ± {readable(se, like=v)}")
    ci = pooled_interval(r, key) or gap_interval(r, key)
    return f"{v:+.2f}" + ("" if ci is None else " [{:+.2f}, {:+.2f}]".format(*ci))


def display_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The rows as people read them: headers in words, ``0.73 [0.64, 0.81]`` (95 % Wilson), ``46.9 ± 2.1``
    (mean ± standard error), ``-`` where a row has no value."""
    cols = _present(rows)
    checks = _checked(rows)
    return [{"method": _label(r), **{head: _cell(r, key, kind) for key, head, kind in cols},
             **({"attack checks": attack_checks(r)} if checks else {})} for r in rows]


def evaluation_lines(row: Mapping[str, Any]) -> str:
    """One evaluation row (:func:`rll_core.runs.evaluate_run`) as a reader takes it in a terminal: a line with eps,
    the points per split and what the brackets and ± are, then one ``column  value`` line per cell of the tables.

    Args:
        row: an evaluation row.

    Returns:
        The lines, joined.

    Example:
        >>> print(evaluation_lines(evaluate_run("runs/at")))  # doctest: +SKIP
        eps 0.1, n = 100 evaluation points per split (95 % Wilson intervals; Lipschitz: mean ± standard error)
          train acc          0.92 [0.85, 0.96]
          ...
    """
    shown = display_rows([row])[0]
    shown.pop("method", None)
    width = max(map(len, shown))
    head = f"eps {row['eps']:g}, {_evaluated([row])} (95 % Wilson intervals; Lipschitz: mean ± standard error)"
    return "\n".join([head, *(f"  {k:<{width}}  {v}" for k, v in shown.items())])


def _evaluated(rows: Sequence[Mapping[str, Any]]) -> str:
    """``n = 100 evaluation points per split``, or ``n = 100 train and 80 test evaluation points`` (``/``
    between the sizes of rows that differ)."""
    ns = {k: "/".join(map(str, sorted({int(r[k]) for r in rows if r.get(k)}))) for k in ("train_n", "test_n")}
    if ns["train_n"] == ns["test_n"]:
        return f"n = {ns['test_n'] or '?'} evaluation points per split"
    if not ns["train_n"]:
        return f"n = {ns['test_n']} test evaluation points"
    return f"n = {ns['train_n']} train and {ns['test_n'] or '?'} test evaluation points"


def _checks_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the attack-checks column means, with the points it ran on."""
    ns = sorted({int(i["n"]) for r in rows for i in r.get("indicators") or [] if i["indicator"] == "unbounded"})
    return (f"Attack checks (rll_core.indicators, on the first {'/'.join(map(str, ns))} test points): "
            f"{checks_description()}.")


def _certified_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the certified columns mean, with their n."""
    ns = "/".join(map(str, sorted({int(r["test_certified_n"]) for r in rows if r.get("test_certified_n")})))
    return (f"Certified (rll_core.certify, bound propagation on the first {ns} test points): certified accuracy is a "
            "lower bound of robust accuracy (certified <= true <= attacked), the Lipschitz bound an upper bound of "
            "the local constant (ascent <= true <= bound).")


def caption(rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """What produced the numbers: dataset, eps, the training images the models were fitted on, the points
    evaluated per split, what the brackets and ± mean, AutoAttack's n and any bf16 passes."""
    first = next((r for r in rows if r.get("dataset")), {})
    data = paper.display_name(str(first["dataset"])) if first else ""
    aa = sorted({int(r["test_autoattack_n"]) for r in rows if r.get("test_autoattack_n")})
    eps = first.get("eps")
    parts = [data] if data else []
    if isinstance(eps, (int, float)):
        parts.append(f"ε = {eps:g}")
    what = ", ".join(parts)
    fitted = sorted({k for r in rows if (k := n_fitted(r))})
    if fitted:
        what += ("; " if what else "") + f"models fitted on {'/'.join(f'{k:,}' for k in fitted)} training images"
    k = max(int(r.get("seeds", 1) or 1) for r in rows)
    which = "rll's ascent" + ("; ref. proc.: the reference code's procedure"
                              if any(_number(r.get("test_lipschitz_reference")) is not None for r in rows) else "")
    intervals = (f"Each number is the mean over {k} training seeds (each its own training subset, initial weights "
                 f"and evaluated points), with a 95 % t interval over the seeds (t({k - 1}); it covers the seed and "
                 "the points together); local Lipschitz constants (ℓ∞ → ℓ1) as mean ± standard error over the seeds "
                 f"({which}). Gaps: train minus test accuracy."
                 ) if k > 1 else (
        "Accuracies with 95 % Wilson intervals; local Lipschitz "
        f"constants (ℓ∞ → ℓ1) as mean ± standard error ({which}). Gaps: train minus test accuracy, with Newcombe's "
        "95 % interval of a difference.")
    text = (f"{what}; " if what else "") + (f"{_evaluated(rows)}{' per seed' if k > 1 else ''}. {intervals}") + (
        f" AutoAttack (standard, Croce & Hein 2020) on the first {'/'.join(map(str, aa))} test points; '-': "
        "not run." if aa else "") + (
        " Worst case: a test point counts as robust only if no attack of the evaluation (PGD and the "
        "multi-targeted attack, on every point) broke it; every attacked accuracy is an upper bound of the true "
        "robust accuracy." if any(_number(r.get("test_worst_accuracy")) is not None for r in rows) else "") + (
        f" {_checks_note(rows)}" if _checked(rows) else "") + (
        f" {_certified_note(rows)}" if any(r.get("test_certified_n") for r in rows) else "") + (
        f" {note}" if (note := precision_note(rows)) else "")
    return f"{title.rstrip('.')}. {text}" if title else text


def export_table(rows: Sequence[Mapping[str, Any]], stem: str | os.PathLike[str], *, title: str = "") -> list[Path]:
    """Write a Section 5 table three ways: ``<stem>.csv`` (numbers, interval ends and n in columns of their
    own), ``<stem>.md`` (a caption, then readable headers) and ``<stem>.tex`` (a booktabs table with the caption).

    Every accuracy carries its n and 95 % Wilson interval, every mean Lipschitz constant its standard error, every
    gap Newcombe's 95 % interval of a difference of two proportions.

    Args:
        rows: one mapping per method as :func:`rll_core.runs.evaluate_run` returns them (with ``label``).
        stem: the path without suffix (``~`` expanded).
        title: the caption's first words (default none).

    Returns:
        The three paths: csv, md, tex.

    Raises:
        ValueError: no rows.

    Example:
        >>> export_table(rows, "figures/table_methods_mnist_quick", title="Tables 2/3")  # doctest: +SKIP
    """
    if not rows:
        raise ValueError("no rows to export")
    stem = user_path(stem)
    cap = caption(rows, title)
    shown = display_rows(rows)
    kinds = [(head, kind) for _, head, kind in _present(rows)]
    groups = [[h for h, k in kinds if k == "acc"], [h for h, k in kinds if k != "acc"]  # accuracies; the rest
              + (["attack checks"] if _checked(rows) else [])]
    return [save_table(stem.with_name(f"{stem.name}.csv"), number_rows(rows)),
            save_table(stem.with_name(f"{stem.name}.md"), shown, caption=cap),
            save_table(stem.with_name(f"{stem.name}.tex"), shown, caption=cap, groups=groups)]
