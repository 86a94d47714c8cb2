"""Section 4 made runnable: separation is enough for a robust, locally Lipschitz classifier.

If the classes of a training set are ``2r`` apart in L-inf (it is *r-separated*), the classifier with
logits ``f_c(x) = -dist_inf(x, X_c) / r`` (``X_c`` the training points of class ``c``) predicts the nearest
class, is ``1/r``-Lipschitz in every coordinate (a distance to a set is 1-Lipschitz), and has astuteness
1 at every radius ``eps < r`` on the training set (Lemma 4.1, Theorem 4.2, Lemma 4.3 of the paper).

* :func:`per_class_nearest` - exact L-inf distance from every query to the nearest reference of each
  class, computed with the separation kernels (one search per class against that class's points),
  bit-identical across backends.  Each class prunes only against its own best, so on Fashion-MNIST
  (2,000 test queries against the training set) the full table costs 2.5-3.3x the separation search.
* :func:`nearest_two_classes` - its top-2 form (nearest class and runner-up) in one early-exit pass, at
  1.0-1.5x the separation search there; what certification needs, for any number of classes.
* :class:`LipschitzClassifier` - that classifier as a ``torch.nn.Module`` with a (sub)gradient, so the
  attacks and the Lipschitz estimate of the evaluation core run on it like on any network.
* :func:`astuteness` - robust accuracy exactly bracketed per point: *certified* when the nearest class
  is right and the runner-up is more than ``2 eps`` farther (a lower bound), *attacked* when a concrete
  perturbation of norm ``<= eps`` flips the prediction (so the upper bound counts the points no attack
  flipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._kernels import UINT8_SENTINEL, PrefixRefs, dim_order, numba_top2, numba_top2_prefix
from ._search import project
from .attacks import pgd
from .checks import ArrayLike, as_numpy, check_compatible, check_eps, check_images, check_points, check_real
from .progress import progress_bar
from .separation import Backend, ScaledDistances, nearest_other_class

__all__ = ["Astuteness", "LipschitzClassifier", "PerClassNearest", "Top2", "astuteness", "certified_radius", "lipschitz_ratio_inf",
           "max_lipschitz_ratio", "nearest_two_classes", "per_class_nearest"]


@dataclass(frozen=True)
class PerClassNearest(ScaledDistances):
    """Distance from each query to the nearest reference of each class.

    ``raw_distance[i, k]``: to class ``classes[k]`` in data units (int32 grey levels for uint8 data, float64
    otherwise); ``index[i, k]``: that reference's index; ``scale``: divisor to the [0, 1] pixel scale.
    """

    raw_distance: np.ndarray
    index: np.ndarray
    classes: np.ndarray
    scale: float

    def top2(self) -> Top2:
        """Nearest class and runner-up (classes ordered by distance, ties to the smaller class)."""
        order = np.argsort(self.raw_distance, axis=1, kind="stable")[:, :2]
        rows = np.arange(len(order))[:, None]
        return Top2(self.raw_distance[rows, order], self.index[rows, order], self.classes[order], self.scale)


@dataclass(frozen=True)
class Top2(ScaledDistances):
    """Per query the nearest class (column 0) and the runner-up class (column 1): ``raw_distance`` in data
    units, ``index`` of the nearest reference of that class, ``label`` the class; ``scale`` as above."""

    raw_distance: np.ndarray
    index: np.ndarray
    label: np.ndarray
    scale: float

    @property
    def margin(self) -> np.ndarray:
        """Runner-up distance minus nearest distance, [0, 1] scale: certified radius times 2."""
        d = self.dist
        return d[:, 1] - d[:, 0]


def per_class_nearest(queries: ArrayLike, query_labels: ArrayLike | None, refs: ArrayLike, ref_labels: ArrayLike, *,
                      device: str | torch.device = "auto", backend: Backend = "auto",
                      cache_dir: str | None = None, progress: bool = False) -> PerClassNearest:
    """Exact L-inf distance from every query to the nearest reference of every class of ``ref_labels``.

    ``query_labels`` (optional) are only checked for shape; a query's own class is measured too (a
    training point's distance to its own class is 0).  Each class is one call of
    :func:`~rll_core.separation.nearest_other_class` on that class's references, so backends, exactness,
    tie-breaking (smallest index) and the cache are those of the separation search.
    """
    r, ry = check_points(refs, ref_labels, "refs")
    qa = as_numpy(queries)
    ql = np.zeros(len(qa), np.int64) if query_labels is None else as_numpy(query_labels)
    q, _ = check_points(qa, ql, "queries")
    check_compatible(q, r)
    classes = np.unique(ry)
    if classes.size < 2:
        raise ValueError(f"the references hold a single class ({int(classes[0])}); need at least two")
    ones = np.ones(len(q), np.int64)
    dist = np.empty((len(q), classes.size), np.int32 if q.dtype == np.uint8 else np.float64)
    index = np.empty((len(q), classes.size), np.int64)
    scale = 1.0
    for k, c in enumerate(classes):
        members = np.flatnonzero(ry == c)
        res = nearest_other_class(q, ones, r[members], np.zeros(len(members), np.int64), device=device,
                                  backend=backend, cache_dir=cache_dir, progress=progress,
                                  desc=f"class {int(c)} ({k + 1}/{classes.size})")
        dist[:, k], index[:, k], scale = res.raw_distance, members[res.index], res.scale
    return PerClassNearest(dist, index, classes, scale)


def nearest_two_classes(queries: ArrayLike, refs: ArrayLike, ref_labels: ArrayLike, *, query_chunk: int = 4096,
                        progress: bool = False) -> Top2:
    """The top-2 form of :func:`per_class_nearest` in one early-exit pass on the CPU (numba; uint8 data
    through the separation search's SIMD-filter layout).

    Equal to ``per_class_nearest(...).top2()`` bit for bit, at 1.0-1.5x the cost of the separation search
    on Fashion-MNIST (a reference is abandoned once it cannot beat the runner-up), where the full table
    costs one search per class with weaker pruning (2.5-3.3x).
    """
    r, ry = check_points(refs, ref_labels, "refs")
    q, _ = check_points(as_numpy(queries), np.zeros(len(as_numpy(queries)), np.int64), "queries")
    check_compatible(q, r)
    classes, rc = np.unique(ry, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"the references hold a single class ({int(classes[0])}); need at least two")
    is_int = q.dtype == np.uint8
    best_d = np.full((len(q), 2), UINT8_SENTINEL if is_int else np.inf, np.int32 if is_int else np.float64)
    best_i = np.full((len(q), 2), -1, np.int64)
    best_c = np.full((len(q), 2), classes.size, np.int64)
    order = dim_order(r)
    rc = rc.astype(np.int64)
    if is_int:  # the SIMD-filter layout, with class indices as labels
        prefix_refs = PrefixRefs(r, rc, order)
    else:
        r_run = np.ascontiguousarray(r[:, order])
    for s in progress_bar(range(0, len(q), query_chunk), disable=not progress, desc="nearest two classes", unit="chunk"):
        e = min(len(q), s + query_chunk)
        if is_int:
            numba_top2_prefix(prefix_refs.queries(q[s:e]), prefix_refs, best_d[s:e], best_i[s:e], best_c[s:e])
        else:
            numba_top2(np.ascontiguousarray(q[s:e][:, order]), r_run, rc, best_d[s:e], best_i[s:e], best_c[s:e])
    return Top2(best_d, best_i, classes[best_c], 255.0 if is_int else 1.0)


class _SetDistance(torch.autograd.Function):
    """Distances to each class's set, with the subgradient sign(x_j - r_j) at the maximising coordinate
    j of the nearest reference r (a distance to a set is 1-Lipschitz; this is one of its subgradients)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clf: LipschitzClassifier) -> torch.Tensor:  # type: ignore[override]
        flat = x.detach().flatten(1).to("cpu", torch.float64)
        pcn = clf.nearest(x)
        nearest = torch.from_numpy(clf.refs)[torch.from_numpy(pcn.index)]  # (B, C, D)
        diff = flat[:, None, :] - nearest
        j = diff.abs().argmax(2)
        ctx.save_for_backward(j, diff.gather(2, j[..., None])[..., 0].sign())
        ctx.shape = x.shape
        return torch.from_numpy(pcn.dist).to(x.device, x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        j, sign = ctx.saved_tensors
        g = torch.zeros(ctx.shape[0], int(np.prod(ctx.shape[1:])), dtype=torch.float64)
        g.scatter_add_(1, j, grad.detach().to("cpu", torch.float64) * sign)
        return g.view(ctx.shape).to(grad.device, grad.dtype), None


class LipschitzClassifier(nn.Module):
    """The classifier of Section 4: logits ``-dist_inf(x, X_c) / r``, the prediction the nearest class.

    Each logit is 1/r-Lipschitz in L-inf (a distance to a set is 1-Lipschitz), and on r-separated data its
    astuteness is 1 at every radius below r (Theorem 4.2).  An ``nn.Module``: :func:`rll_core.attacks.pgd`,
    :func:`rll_core.evaluation.evaluate` and :func:`rll_core.lipschitz.local_lipschitz` run on it unchanged, through
    an exact subgradient; distances are computed exactly on the CPU (float64).

    Args:
        x_train: the training points, uint8 pixels or floats in [0, 1], ``(N, ...)``.
        y_train: their integer labels ``(N,)``, at least two classes.
        r: the radius (default half the train-train separation: the largest r the set is r-separated for).
        backend: the exact search's kernel (default ``"auto"``).

    Raises:
        ValueError: one class, points outside [0, 1], duplicate points of different classes (r = 0).

    Example:
        >>> clf = LipschitzClassifier(train.images, train.labels)  # doctest: +SKIP
        >>> clf.r  # doctest: +SKIP
    """

    def __init__(self, x_train: ArrayLike, y_train: ArrayLike, r: float | None = None, *,
                 backend: Backend = "auto") -> None:
        super().__init__()
        x = as_numpy(x_train)
        xf, y = check_points(x, as_numpy(y_train), "x_train")
        if np.unique(y).size < 2:
            raise ValueError("x_train holds a single class; the classifier needs at least two")
        self.refs = xf.astype(np.float64) / (255.0 if xf.dtype == np.uint8 else 1.0)
        if self.refs.min() < 0 or self.refs.max() > 1:
            raise ValueError("x_train must be uint8 pixels or floats in [0, 1]")
        self.ref_labels = y
        self.classes = np.unique(y)
        self.num_outputs = int(self.classes.max()) + 1
        self.backend: Backend = backend
        self.input_shape = tuple(x.shape[1:])
        self.separation = float(nearest_other_class(xf, y, backend=backend).dist.min())
        if r is None and self.separation == 0:
            raise ValueError("r must be a finite number > 0, got 0 (the training set has duplicate points of "
                             "different classes)")
        self.r = check_real("r", self.separation / 2 if r is None else r, lo=0, lo_open=True)

    def nearest(self, x: torch.Tensor) -> PerClassNearest:
        """Exact distances from each input to each class and the nearest training point of each (no
        gradient); inputs in [0, 1], shaped like the training points (or flattened)."""
        check_images(x)
        if tuple(x.shape[1:]) != self.input_shape and int(np.prod(x.shape[1:])) != self.refs.shape[1]:
            raise ValueError(f"inputs must have shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        flat = x.detach().flatten(1).to("cpu", torch.float64).numpy()
        return per_class_nearest(flat, None, self.refs, self.ref_labels, backend=self.backend)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) distances to each class (differentiable), columns in the order of ``classes``."""
        out: torch.Tensor = _SetDistance.apply(x, self)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits indexed by label (column ``c`` is class ``c``), so ``argmax`` is a training label and
        :func:`rll_core.evaluation.evaluate` compares it with labels as given.  A label below the largest that
        the training set lacks gets the constant ``-2 / r``: below every present class's ``-dist / r >=
        -1 / r`` on [0, 1] images, so never predicted, and without gradient or Lipschitz contribution."""
        logits = -self.distances(x) / self.r
        if self.num_outputs == len(self.classes):  # labels are 0 .. C-1: columns are already labels
            return logits
        out = logits.new_full((len(logits), self.num_outputs), -2.0 / self.r)
        return out.index_copy(1, torch.from_numpy(self.classes).to(logits.device), logits)


@dataclass
class Astuteness:
    """Bracketed robust accuracy of the classifier at radius ``eps`` on ``n`` points.

    ``certified <= true astuteness <= attacked``.  Per point: ``correct``, ``certified`` (provably
    robust and correct), ``flipped`` (an attack of norm <= eps changed the prediction, or it was wrong
    already) and ``x_adv`` (the perturbation that flipped it, else the strongest tried).
    """

    eps: float
    n: int
    accuracy: float
    certified: float
    attacked: float
    per_point: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    x_adv: torch.Tensor | None = field(repr=False, default=None)


def _inputs(classifier: LipschitzClassifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked float images and each label's column among the classifier's classes."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    check_images(x)
    if tuple(y.shape) != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {tuple(y.shape)}")
    classes = torch.from_numpy(classifier.classes)
    col = torch.searchsorted(classes, y.cpu())
    if bool((col >= len(classes)).any()) or not bool((classes[col.clamp(max=len(classes) - 1)] == y.cpu()).all()):
        raise ValueError("labels must be classes of the training set")
    return x, col


def _radius(d: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """Half the gap between the nearest and the runner-up class distance where the nearest class is the
    label, else 0: the point is certified at every eps below it (Section 4's margin argument)."""
    two = d.topk(2, dim=1, largest=False).values
    return torch.where(d.argmin(1) == col, (two[:, 1] - two[:, 0]) / 2, torch.zeros_like(two[:, 0]))


def certified_radius(classifier: LipschitzClassifier, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per point the L-inf radius below which the classifier provably keeps the label ``y`` (0 where it
    misclassifies the point): certified astuteness at eps is ``(certified_radius(...) > eps).mean()``."""
    x, col = _inputs(classifier, x, y)
    return _radius(torch.from_numpy(classifier.nearest(x).dist), col).numpy()


def astuteness(classifier: LipschitzClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, *,
               pgd_steps: int = 20) -> Astuteness:
    """Certified (lower) and attacked (upper) astuteness of the Section 4 classifier at radius ``eps``.

    Certified: the prediction is right and the runner-up class is more than ``2 eps`` farther than the nearest
    (each distance is 1-Lipschitz).  Attacked: a concrete perturbation of norm ``<= eps`` changed the re-classified
    prediction (a step of size ``eps`` towards the nearest training point of the nearest wrong class, and PGD with
    ``pgd_steps`` steps of ``2.5 eps / pgd_steps``); the true robust accuracy lies between the two.

    Args:
        classifier: a :class:`LipschitzClassifier`.
        x: inputs in [0, 1], ``(N, ...)`` like its training points.
        y: integer labels ``(N,)``.
        eps: the L-inf radius, in [0, 1].
        pgd_steps: steps of the PGD attack, >= 1 (default 20).

    Returns:
        An :class:`Astuteness`: ``accuracy``, ``certified``, ``attacked`` (fractions of the N points), the
        per-point verdicts and the attacking inputs ``x_adv``.

    Raises:
        ValueError: a bad radius or step count, inputs outside [0, 1] or of another shape.

    Example:
        >>> a = astuteness(clf, x, y, eps=0.05)  # doctest: +SKIP
        >>> a.certified <= a.attacked  # doctest: +SKIP
        True
    """
    check_eps(eps, None, pgd_steps)
    x, col = _inputs(classifier, x, y)
    pcn = classifier.nearest(x)  # one exact search serves the prediction, the certificate and attack 1
    d = torch.from_numpy(pcn.dist)
    correct = d.argmin(1) == col
    certified = _radius(d, col) > eps
    # attack 1: towards the nearest point of the nearest wrong class
    wrong = d.clone()
    wrong[torch.arange(len(x)), col] = math.inf
    target = torch.from_numpy(classifier.refs[pcn.index[np.arange(len(x)), wrong.argmin(1).numpy()]])
    flat = x.detach().flatten(1).cpu().double()
    step = flat + (target - flat).clamp(-eps, eps)
    x1 = project(step.view(x.shape).to(x.device, x.dtype), x, eps)
    candidates = [x1]
    if eps > 0:  # logits columns are labels (``forward``): the cross-entropy target is the label
        candidates.append(pgd(classifier, x, y.to(x.device).long(), eps=eps, step_size=2.5 * eps / pgd_steps,
                              steps=pgd_steps, random_start=False))
    flipped = ~correct
    x_adv = x.detach().clone()
    for cand in candidates:
        hit = (torch.from_numpy(classifier.nearest(cand).dist).argmin(1) != col) & ~flipped
        x_adv[hit.to(x.device)] = cand[hit.to(x.device)]
        flipped |= hit
    n = len(x)
    return Astuteness(float(eps), n, float(correct.double().mean()), float(certified.double().mean()),
                      float((~flipped).double().mean()),
                      {"correct": correct.numpy(), "certified": certified.numpy(), "flipped": flipped.numpy()},
                      x_adv)


def lipschitz_ratio_inf(model: nn.Module, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``||f(x) - f(x2)||_inf / ||x - x2||_inf`` per pair (0 where ``x2 == x``)."""
    with torch.no_grad():
        num = (model(x) - model(x2)).abs().flatten(1).amax(1).double()
    den = (x - x2).abs().flatten(1).amax(1).double()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def max_lipschitz_ratio(classifier: LipschitzClassifier, x: torch.Tensor, eps: float, *, n_random: int = 32,
                        generator: torch.Generator | None = None) -> float:
    """Largest ``||f(x) - f(x')||_inf / ||x - x'||_inf`` over random points of the eps-ball around each
    ``x`` (uniform and at the corners) and the attack points of :func:`astuteness`; at most 1/r in theory."""
    check_eps(eps)
    best = 0.0
    for i in range(n_random):
        u = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
        if i % 2:
            u = u.sign()
        best = max(best, float(lipschitz_ratio_inf(classifier, x, project(x + eps * u, x, eps)).max()))
    with torch.no_grad():
        y = torch.from_numpy(classifier.classes)[classifier.distances(x).cpu().argmin(1)]
    adv = astuteness(classifier, x, y, eps).x_adv
    if adv is not None:
        best = max(best, float(lipschitz_ratio_inf(classifier, x, adv).max()))
    return best
