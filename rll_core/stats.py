"""The statistics of the package, in one room: intervals of accuracies and of their differences, standard
errors, the paired bootstrap of the findings, and distance bins.

* :func:`wilson_interval` (and :func:`wilson_errors`, its error-bar lengths) - a measured accuracy's 95 % interval;
* :func:`difference_interval` - Newcombe's interval of a difference of two independent accuracies (a gap);
* :func:`standard_error` - of a mean (the Lipschitz columns);
* :func:`bootstrap_interval` - a paired bootstrap over the evaluated points (the findings, one seed);
* :func:`seed_interval` - a t interval over per-seed estimates (the findings over several training seeds);
* :func:`distance_bins`, :func:`accuracy_by_distance` - robust accuracy per bin of distance to the other classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .checks import check_int, check_real

__all__ = ["Term", "accuracy_by_distance", "bootstrap_interval", "difference_interval", "distance_bins",
           "readable", "seed_interval", "standard_error", "wilson_errors", "wilson_interval", "with_wilson"]

_Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal

#: one term of a claim: (coefficient, model, split, array), e.g. ``(1, "at", "train", "pgd")``
Term = tuple[float, str, str, str]


def wilson_interval(accuracy: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``accuracy`` measured on ``n`` points (Wilson 1927).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or 1; it always holds ``accuracy``.

    Args:
        accuracy: the measured proportion, in [0, 1].
        n: the number of points, >= 1.
        z: the normal quantile (default 1.96: 95 %).

    Returns:
        ``(low, high)``, both in [0, 1].

    Raises:
        ValueError: an accuracy outside [0, 1] or ``n < 1``.

    Example:
        >>> [round(v, 3) for v in wilson_interval(0.9, 100)]
        [0.826, 0.945]
    """
    p = check_real("accuracy", accuracy, lo=0, hi=1)
    n = check_int("n", n)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p exactly (rounding must not put p = 0 outside it, by 1e-17)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def wilson_errors(accuracy: float, n: int | None) -> tuple[float, float]:
    """How far the 95 % Wilson interval reaches below and above ``accuracy`` (error-bar lengths);
    (0, 0) without an n."""
    if not n:
        return 0.0, 0.0
    lo, hi = wilson_interval(accuracy, int(n))
    return accuracy - lo, hi - accuracy


def difference_interval(p1: float, n1: int, p2: float, n2: int, z: float = _Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for ``p1 - p2`` of two independent proportions,
    from their Wilson intervals: the interval of a generalization gap (train and test are separate samples)."""
    l1, u1 = wilson_interval(p1, n1, z)
    l2, u2 = wilson_interval(p2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def standard_error(values: np.ndarray | Sequence[float]) -> float:
    """The standard error of the mean of ``values``: the sample standard deviation (n - 1) over sqrt(n); 0 for
    fewer than two values.

    Example:
        >>> round(standard_error([1.0, 2.0, 3.0]), 4)
        0.5774
    """
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def seed_interval(estimates: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean of per-seed estimates and its t interval: ``mean +/- t(k - 1) s / sqrt(k)`` over ``k >= 2`` seeds.

    Each seed's estimate comes from its own training run *and* its own evaluated points, so the spread ``s`` of
    the estimates holds both sources of variation: the interval covers the training seed and the points
    together.  With few seeds it is wide by design (t(2) = 4.30 at 95 %); a bootstrap over 3 seeds has only 10
    distinct resamples and covers far less than it claims (measured in the tests).

    Args:
        estimates: one estimate per seed (at least two).
        level: the coverage (default 0.95).

    Returns:
        ``(mean, lo, hi)``.

    Raises:
        ValueError: fewer than two estimates, a level outside (0, 1).

    Example:
        >>> [round(v, 3) for v in seed_interval([0.10, 0.14, 0.12])]
        [0.12, 0.07, 0.17]
    """
    from scipy.stats import t

    e = np.asarray(estimates, dtype=float)
    if e.ndim != 1 or len(e) < 2:
        raise ValueError(f"an interval over seeds needs at least two per-seed estimates, got {len(e)}")
    q = t.ppf((1 + check_real("level", level, lo=0, hi=1, lo_open=True)) / 2, len(e) - 1)
    mean, half = float(e.mean()), float(q * e.std(ddof=1) / math.sqrt(len(e)))
    return mean, mean - half, mean + half


def bootstrap_interval(points: Mapping[str, Mapping[str, np.ndarray]], terms: Sequence[Term], *, n_boot: int = 4000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """The estimate and paired-bootstrap interval of ``sum(c * mean(points[model][f"{split}_{array}"]))``.

    Args:
        points: per model, the per-point arrays of its evaluation (``train_pgd``, ``test_lipschitz``, ...); the
            arrays of one split hold the same points in the same order for every model.
        terms: ``(coefficient, model, split, array)`` per term.
        n_boot: resamples (default 4000).
        seed: the resampling's seed (default 0).
        level: the interval's coverage (default 0.95).

    Returns:
        ``(estimate, lo, hi)``.

    Raises:
        ValueError: no terms, or one split's arrays of different lengths.

    Example:
        >>> a = {"m": {"train_pgd": np.ones(50), "test_pgd": np.r_[np.ones(25), np.zeros(25)]}}
        >>> est, lo, hi = bootstrap_interval(a, [(1, "m", "train", "pgd"), (-1, "m", "test", "pgd")])
        >>> est, bool(0.3 < lo < 0.5 < hi < 0.7)
        (0.5, True)
    """
    if not terms:
        raise ValueError("a claim needs at least one term")
    arrays = [(c, split, np.asarray(points[m][f"{split}_{a}"], dtype=float)) for c, m, split, a in terms]
    sizes: dict[str, int] = {}
    for _, split, arr in arrays:
        if sizes.setdefault(split, len(arr)) != len(arr):
            raise ValueError(f"the {split} arrays of a claim differ in length ({sizes[split]} and {len(arr)}): "
                             "compare models evaluated on the same points")
    rng = np.random.default_rng(seed)
    idx = {split: rng.integers(0, n, (n_boot, n)) for split, n in sizes.items()}
    est = float(sum(c * arr.mean() for c, _, arr in arrays))
    boot = sum(c * arr[idx[split]].mean(axis=1) for c, split, arr in arrays)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return est, float(lo), float(hi)


def distance_bins(distance: np.ndarray, bins: int = 4) -> np.ndarray:
    """Edges of up to ``bins`` bins holding equal numbers of points (quantiles; fewer bins where distances
    tie, as uint8 data's do), widened by half a grey level when every distance is the same."""
    d = np.asarray(distance, float)
    if d.size == 0:
        raise ValueError("no distances to bin")
    edges = np.unique(np.quantile(d, np.linspace(0, 1, check_int("bins", bins) + 1)))
    return edges if len(edges) >= 2 else np.array([edges[0] - 0.5 / 255, edges[0] + 0.5 / 255])


def accuracy_by_distance(distance: np.ndarray, robust: np.ndarray, edges: Sequence[float]) -> dict[str, np.ndarray]:
    """Robust accuracy of the points in each distance bin ``[edges[i], edges[i+1])`` (the last bin closed):
    ``accuracy`` (NaN for an empty bin), ``n`` per bin, the bin ``centre``."""
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or len(e) < 2 or not np.all(np.diff(e) > 0):
        raise ValueError("edges must be at least two increasing numbers")
    d, ok = np.asarray(distance, float), np.asarray(robust, bool)
    if d.shape != ok.shape:
        raise ValueError(f"distance {d.shape} and robust {ok.shape} differ in shape")
    b = np.clip(np.searchsorted(e, d, side="right") - 1, 0, len(e) - 2)
    inside = (d >= e[0]) & (d <= e[-1])
    n = np.bincount(b[inside], minlength=len(e) - 1)
    hits = np.bincount(b[inside], weights=ok[inside].astype(float), minlength=len(e) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    return {"accuracy": acc, "n": n, "centre": (e[:-1] + e[1:]) / 2}


def with_wilson(accuracy: float, n: int) -> str:
    """An accuracy as a printed result takes it: three decimals and its 95 % Wilson interval on ``n`` points.

    >>> with_wilson(0.9, 100)
    '0.900 [0.826, 0.945]'
    """
    lo, hi = wilson_interval(accuracy, n)
    return f"{accuracy:.3f} [{lo:.3f}, {hi:.3f}]"


def readable(v: float, like: float | None = None) -> str:
    """A quantity as a reader takes it: whole numbers with thousands separators from 1,000 on, one decimal from 10,
    two below (a certified bound of 100,569, not 1.006e+05 or 100569.4); with ``like``, to that value's digits (a
    standard error beside its mean).

    >>> readable(100569.4), readable(747.2), readable(6.314), readable(341.27, like=100569.4)
    ('100,569', '747.2', '6.31', '341')
    """
    ref = abs(v if like is None else like)
    digits = 0 if ref >= 1000 else 1 if ref >= 10 else 2
    return f"{v:,.{digits}f}"
