"""Section 4 made runnable: separation is enough for a robust, locally Lipschitz classifier.

If the classes of a training set are ``2r`` apart in L-inf (it is *r-separated*), the classifier with
logits ``f_c(x) = -dist_inf(x, X_c) / r`` (``X_c`` the training points of class ``c``) predicts the nearest
class, is ``1/r``-Lipschitz in every coordinate (a distance to a set is 1-Lipschitz), and has astuteness
1 at every radius ``eps < r`` on the training set (Lemma 4.1, Theorem 4.2, Lemma 4.3 of the paper).

The exact per-class searches it rests on (:func:`rll_core.separation.per_class_nearest`, and its top-2 form
:func:`rll_core.separation.nearest_two_classes`) are the separation search's, in :mod:`rll_core.separation`.

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

from ._search import project
from .attacks import pgd
from .checks import ArrayLike, as_numpy, check_eps, check_images, check_points, check_real
from .separation import Backend, PerClassNearest, nearest_other_class, per_class_nearest

__all__ = ["Astuteness", "LipschitzClassifier", "astuteness", "certified_radius", "lipschitz_ratio_inf",
           "max_lipschitz_ratio"]


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
