"""Section 4's classifier measured as Section 5 measures a network: its table row and its certified curve.

The 1/r-Lipschitz nearest-class classifier (:class:`rll_core.theory.LipschitzClassifier`) is evaluated with the
tables' own attacks and Lipschitz estimate (:data:`rll_core.grids.TABLE_EVALUATION`, in float64), so its row sits
beside the trained networks'.  The row takes minutes on a CPU (exact searches inside every attack step), so it is
stored like a run's evaluation: one JSON per setting and data, read back on the next call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .checks import check_int, check_real, default_batch_size
from .data import ImageDataset
from .grids import TABLE_EVALUATION
from .measure import measure_splits
from .runs import eval_specs, split_specs
from .storage import array_digest, load_json, save_json, settings_digest, user_path
from .theory import LipschitzClassifier, astuteness, certified_radius

__all__ = ["astuteness_radii", "astuteness_sweep", "default_radii", "theory_curve", "theory_row"]

_LIPSCHITZ_STEPS = 10
#: the tables' attacks, on the splits the tables attack them on (its Lipschitz estimate is the ascent's alone)
_ATTACKS = {"attacks": list(TABLE_EVALUATION["attacks"]),
            "test_only": [a for a in TABLE_EVALUATION["test_only"] if a in TABLE_EVALUATION["attacks"]]}


def default_radii(r: float, also: Sequence[float] = ()) -> list[float]:
    """The radii of a robustness curve: 7 from 0 to 1.2 ``r`` (past the data's r), rounded to 3 decimals, and the
    radii ``also`` (a training eps), each taking the place of a grid radius closer to it than a quarter step (so
    no two points of a curve sit 0.002 apart).

    Example:
        >>> default_radii(0.492, also=[0.1])
        [0.0, 0.1, 0.197, 0.295, 0.394, 0.492, 0.59]
    """
    step = r * 1.2 / 6
    grid = [round(step * k, 3) for k in range(7)]
    for e in also:
        grid = [g for g in grid if abs(g - e) >= step / 4] + [float(e)]
    return sorted(set(grid))


def astuteness_radii(r: float, paper_eps: float, eps_grid: Sequence[float] | None = None) -> list[float]:
    """The radii of notebook 02's astuteness curves: ``eps_grid`` if given, else 9 from 0 to 2 ``r`` (rounded to
    4 decimals), the paper's eps and 0.999 ``r`` (just below r, where the theorem's guarantee ends); sorted, once
    each.

    Example:
        >>> astuteness_radii(0.25, 0.1)
        [0.0, 0.0625, 0.1, 0.125, 0.1875, 0.24975, 0.25, 0.3125, 0.375, 0.4375, 0.5]
    """
    if eps_grid:
        return sorted({check_real("eps", e, lo=0, hi=1) for e in eps_grid})
    return sorted({*np.round(np.linspace(0, 2 * r, 9), 4).tolist(), float(paper_eps), 0.999 * r})


def astuteness_sweep(classifier: LipschitzClassifier, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                     radii: Sequence[float]) -> tuple[list[dict[str, float]], dict[str, list[float]]]:
    """Certified (lower bound) and attacked (upper bound) astuteness of the Section 4 classifier at every radius,
    on each split's points (:func:`rll_core.theory.astuteness`): notebook 02's curves.

    Args:
        classifier: a :class:`~rll_core.theory.LipschitzClassifier`.
        splits: ``{"train": (x, y), "test": (x, y)}`` (any names, in the order the rows should show them).
        radii: the L-inf radii, in [0, 1].

    Returns:
        ``(rows, curves)``: one row per radius (``eps``, ``<split>_accuracy``, ``<split>_certified``,
        ``<split>_attacked``), and per ``"<split> certified"`` / ``"<split> attacked"`` the values over the radii.

    Example:
        >>> rows, curves = astuteness_sweep(clf, {"test": (x, y)}, [0.0, 0.1])  # doctest: +SKIP
    """
    rows: list[dict[str, float]] = []
    curves: dict[str, list[float]] = {f"{k} {what}": [] for k in splits for what in ("certified", "attacked")}
    for e in radii:
        row = {"eps": float(e)}
        for k, (x, y) in splits.items():
            a = astuteness(classifier, x, y, e)
            row |= {f"{k}_accuracy": a.accuracy, f"{k}_certified": a.certified, f"{k}_attacked": a.attacked}
            curves[f"{k} certified"].append(a.certified)
            curves[f"{k} attacked"].append(a.attacked)
        rows.append(row)
    return rows, curves


def _row_settings(train_set: ImageDataset, test_set: ImageDataset, eps: float, n_eval: int, seed: int) -> dict[str, Any]:
    """Everything the row depends on: both splits' contents, the radius, the points, the attacks."""
    return {"kind": "section4_row", "dataset": train_set.name, "n_fitted": len(train_set),
            "train_digest": array_digest(train_set.images, train_set.labels),
            "test_digest": array_digest(test_set.images, test_set.labels), "eps": float(eps), "n_eval": n_eval,
            "seed": seed, "evaluation": _ATTACKS,
            "lipschitz_steps": _LIPSCHITZ_STEPS, "batch_size": default_batch_size(torch.device("cpu"))}


def theory_row(train_set: ImageDataset, test_set: ImageDataset, eps: float, *, n_eval: int = 100, seed: int = 0,
               store: str | os.PathLike[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Section 4's classifier as one more table row: the same columns as a run's, measured the same way.

    Args:
        train_set: the classifier's reference points (its training set).
        test_set: the test split.
        eps: the L-inf radius of the attacks and the Lipschitz ball, in [0, 1].
        n_eval: the first ``n_eval`` points of each split are evaluated (default 100).
        seed: the attacks' seed (default 0).
        store: a folder where the row is kept, named by a digest of every setting and both splits' contents
            (``theory-<dataset>-<digest>.json``); a second call with the same settings reads it back (default
            None: always measured).
        progress: one line saying what is measured or read, and the attacks' progress bars (default True).

    Returns:
        The row: ``label``, ``method`` ("theory"), ``r``, ``eps``, ``n_fitted``, accuracies and Lipschitz means per
        split, ``gap_standard`` and ``gap_adversarial``.

    Raises:
        ValueError: a bad radius or ``n_eval``.

    Example:
        >>> row = theory_row(train, test, 0.1, n_eval=100, store="results/runs")  # doctest: +SKIP
    """
    check_real("eps", eps, lo=0, hi=1)
    check_int("n_eval", n_eval)
    settings = _row_settings(train_set, test_set, eps, n_eval, seed)
    digest = settings_digest(settings)
    path = None if store is None else user_path(store) / f"theory-{train_set.name}-{digest}.json"
    if path is not None and path.exists():
        kept = load_json(path)
        if kept.get("settings") == settings:
            if progress:
                print(f"Section 4 row: read from {path}")
            return dict(kept["row"])
    if progress:
        print(f"Section 4 row: measuring the 1/r-Lipschitz classifier ({len(train_set):,} training images) on "
              f"{n_eval} train and {n_eval} test points: PGD, multi-targeted and the local Lipschitz ascent in "
              f"float64 (minutes on a CPU; stored for the next run)")
    clf = LipschitzClassifier(train_set.images, train_set.labels)
    row: dict[str, Any] = {"label": f"Section 4 classifier (r={clf.r:.3f})", "method": "theory", "r": clf.r,
                           "eps": eps, "n_fitted": len(train_set)}
    ev = {"n_eval": n_eval, "eps": eps, "lipschitz_steps": _LIPSCHITZ_STEPS, "batch_size": settings["batch_size"]}
    specs = split_specs(eval_specs(eps, _ATTACKS["attacks"], None, 1), ("train", "test"), _ATTACKS["test_only"])
    measure_splits(row, clf, {"train": train_set, "test": test_set}, specs, ev, seed, progress, dtype=torch.float64,
                   lipschitz=("ascent",))
    if path is not None:
        save_json(path, {"settings": settings, "row": row})
    return row


def theory_curve(train_set: ImageDataset, test_set: ImageDataset, eps_grid: Sequence[float] | None = None, *,
                 n_eval: int = 100, also: Sequence[float] = ()) -> dict[str, Any]:
    """Section 4's classifier's certified test accuracy at every radius (one exact search; a lower bound).

    Args:
        train_set: the classifier's reference points.
        test_set: the test split; its first ``n_eval`` points are used.
        eps_grid: the radii, in [0, 1] (default None: 7 radii from 0 to 1.2 r, rounded to 3 decimals).
        n_eval: the test points (default 100).
        also: radii added to the grid (e.g. the training eps; default none).

    Returns:
        ``method``, ``label``, ``r``, the radii used as ``eps``, ``n``, ``accuracy`` per radius and each point's
        certified ``radius``.

    Raises:
        ValueError: a radius outside [0, 1] or a bad ``n_eval``.

    Example:
        >>> theory_curve(train, test, n_eval=100, also=[0.1])["accuracy"]  # doctest: +SKIP
    """
    clf = LipschitzClassifier(train_set.images, train_set.labels)
    sub = test_set.subset(check_int("n_eval", n_eval), seed=None)
    radius = certified_radius(clf, torch.from_numpy(sub.float_images()).double(), torch.from_numpy(sub.labels))
    if eps_grid is None:
        eps_grid = default_radii(clf.r, also)
    grid = sorted({check_real("eps", e, lo=0, hi=1) for e in [*eps_grid, *also]})
    return {"method": "theory", "label": f"Section 4 classifier (r={clf.r:.3f}),\ncertified lower bound", "r": clf.r,
            "eps": grid, "n": len(sub), "accuracy": [float((radius > e).mean()) for e in grid],
            "radius": radius}
