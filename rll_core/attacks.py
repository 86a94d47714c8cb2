"""L-inf attacks as plain functions over any PyTorch classifier (dataset-level use: :mod:`rll_core.evaluation`).

* :func:`pgd` - projected gradient ascent on the cross-entropy with sign steps (Madry et al. 2018),
  optionally targeted, with random starts and restarts.
* :func:`multi_targeted` - for every class other than the label, a targeted PGD on the margin
  ``z_target - z_label`` (Gowal et al. 2019); per example the strongest target is kept.
* :func:`autoattack` - AutoAttack's standard version (Croce & Hein 2020) at the reference's settings, from
  torchattacks' four attacks (optional dependency).
* :func:`square` - its gradient-free part alone, Square (Andriushchenko et al. 2020), at the same settings.

The pieces every inner search is built from (eval mode, the eps-box, sign ascent) live in the package's
private ``_search`` module, shared with the training methods and the Lipschitz estimate.

Conventions (cleverhans v4 / torchattacks style): inputs are images in [0, 1] on any device (the work
happens on ``x``'s device; nothing is moved to CUDA behind the caller's back); the model is attacked
in eval mode and its train/eval mode is restored afterwards, module by module; gradients are taken
with respect to the input only (``torch.autograd.grad``), so nothing is accumulated in the
parameters' ``.grad``; bad arguments raise ``ValueError`` before any work.  Given a
``torch.Generator`` (on ``x``'s device) the result is deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._search import box, check_batch, eval_mode, margin, num_classes_of, sign_ascent, target_margin, uniform
from .checks import check_eps, check_int
from .precision import INHERIT, autocast, layout_for, model_layout, resolve_precision

__all__ = ["autoattack", "multi_targeted", "pgd", "square"]


# ----------------------------------------------------------------------------------------------
# attacks


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float, steps: int,
        random_start: bool = True, targeted: bool = False, restarts: int = 1,
        generator: torch.Generator | None = None, stop_when_fooled: bool = False, validate: bool = True,
        precision: str = "auto") -> torch.Tensor:
    """L-inf PGD: ascend the summed cross-entropy with sign steps (descend it towards ``y`` if ``targeted``).

    Each step is projected onto ``{x' : ||x' - x||_inf <= eps} ∩ [0, 1]^D``.  With ``restarts > 1`` every restart
    starts from a fresh uniform point and an example keeps the first restart that fools the model (targeted: that
    reaches ``y``), else the last.  The model runs in eval mode (each submodule's mode restored); gradients are
    taken with respect to the input only.

    Args:
        model: any classifier returning logits ``(N, classes)``.
        x: images in [0, 1], ``(N, C, H, W)`` (or any ``(N, ...)``), on the model's device, in its dtype.
        y: integer labels ``(N,)`` (the targets if ``targeted``).
        eps: the L-inf radius on the [0, 1] pixel scale, in [0, 1].
        step_size: the sign step, > 0 (the paper: ``2 eps / steps``, :func:`rll_core.paper.step_size`).
        steps: steps per restart, >= 1 (the paper: 10).
        random_start: start from ``x + U(-eps, eps)`` (default True).
        targeted: descend the cross-entropy of ``y`` instead (default False).
        restarts: independent starts, >= 1 (default 1).
        generator: a ``torch.Generator`` on ``x``'s device for the starts (default: the global stream).
        stop_when_fooled: robust accuracy only, the *any-iterate* mode (default False: the paper's last-iterate
            PGD).  A point leaves the search at the first iterate that fools the model (targeted: reaches ``y``),
            judged by an fp32 forward, and is returned there; the others step on as before.  A point fooled at some
            iterate and robust at the last counts as fooled here and as robust in the paper's PGD (measured: no such
            point among 500 test points of each of four MNIST and two Fashion-MNIST models, docs/benchmarks.md).
        validate: check the inputs (range, labels, dtype) first (default True; ``evaluate`` checks once per set).
        precision: ``"auto"`` (default: bf16 gradient steps where the hardware computes bf16 natively, see
            :mod:`rll_core.precision`), ``"fp32"`` or ``"bf16"``; the verdicts (which restart fooled) in fp32.

    Returns:
        ``x_adv``, detached, the shape and dtype of ``x``.

    Raises:
        ValueError: a bad radius, step, count, image range, label, or an ``x`` dtype the model does not compute in.

    Example:
        >>> x_adv = pgd(model, x, y, eps=0.1, step_size=0.02, steps=10,
        ...             generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    """
    check_eps(eps, step_size, steps)
    check_int("restarts", restarts)
    prec = resolve_precision(precision, x.device, x.dtype)
    if validate:
        check_batch(model, x, y)
    y = y.long()
    sign = -1.0 if targeted else 1.0

    def loss(z: torch.Tensor) -> torch.Tensor:
        return sign * F.cross_entropy(model(z), y, reduction="sum")

    # the weights' layout is the caller's where it inherits the precision (a training step)
    with eval_mode(model), model_layout(model, "fp32" if precision == INHERIT else prec):
        best = x.detach().clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            start = x + uniform(x, eps, generator) if random_start else x
            if stop_when_fooled:
                x_adv = _until_fooled(model, x, y, start, eps, step_size, steps, prec, targeted, todo)
            else:
                x_adv = sign_ascent(loss, x, start, eps, step_size, steps, precision=prec)
            if restarts == 1:  # nothing to choose between: no verdict forward
                return x_adv
            with torch.no_grad():
                pred = model(x_adv).argmax(1)
            done = (pred == y) if targeted else (pred != y)
            best[todo] = x_adv[todo]
            todo &= ~done
            if not bool(todo.any()):
                break
    return best


def _done(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Where the attack has succeeded: the label is no longer predicted (targeted: the target is)."""
    pred = logits.argmax(1)
    return (pred == y) if targeted else (pred != y)


def _until_fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, eps: float,
                  step_size: float, steps: int, precision: str, targeted: bool, todo: torch.Tensor) -> torch.Tensor:
    """PGD's sign steps from ``start`` on the points of ``todo``, each leaving the search at the first iterate that
    fools the model.  The step's own forward names the candidates (in fp32, or in bf16 and then confirmed by an fp32
    forward of those alone), so a point fooled early costs no further pass; the last iterate is not judged here
    (the caller's verdict does that).  The points outside ``todo`` are returned at their projected start."""
    lo, hi = box(x.detach(), eps)
    x_adv = torch.clamp(start.detach(), lo, hi)
    alive = torch.nonzero(todo).flatten()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        z = layout_for(x_adv[alive], precision).requires_grad_(True)
        ya = y[alive]
        with torch.enable_grad(), autocast(precision, x.device):
            logits = model(z)
            (g,) = torch.autograd.grad(sign * F.cross_entropy(logits, ya, reduction="sum"), z)
        hit = _done(logits.detach(), ya, targeted)
        if logits.dtype != torch.float32 and bool(hit.any()):  # a bf16 verdict stands only where fp32 agrees
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                hit[hit.clone()] = _done(model(z.detach()[hit]), ya[hit], targeted)
        keep = ~hit
        alive = alive[keep]
        if len(alive) == 0:
            break
        step = z.detach()[keep].add_(g[keep].sign_(), alpha=step_size)
        x_adv[alive] = torch.clamp(step, lo[alive], hi[alive]).to(x_adv.dtype)
    return x_adv


def multi_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
                   steps: int, random_start: bool = True, generator: torch.Generator | None = None,
                   stop_when_fooled: bool = False, validate: bool = True, precision: str = "auto") -> torch.Tensor:
    """Multi-targeted attack: a targeted PGD on the margin ``z_t - z_y`` for every class ``t != y``.

    Targets are visited as ``t = (y + k) mod C`` for ``k = 1 .. C-1``, so every example tries each of its C - 1
    other classes once.  Per example the point kept is the one with the largest margin ``max_{j != y} z_j - z_y``:
    a misclassified point (margin > 0) wins over any correct one, and among those the target that beats ``y`` by
    the most.

    Args:
        model: any classifier returning logits ``(N, classes)``.
        x: images in [0, 1], ``(N, ...)``, on the model's device.
        y: integer labels ``(N,)``.
        eps: the L-inf radius, in [0, 1].
        step_size: the sign step, > 0 (the paper: ``2 eps / 20``).
        steps: steps per target, >= 1 (the paper: 20).
        random_start: each target starts from ``x + U(-eps, eps)`` (default True).
        generator: a ``torch.Generator`` on ``x``'s device (default: the global stream).
        stop_when_fooled: do not attack a point again once some target fooled it (robust accuracy only: the same
            points are fooled, the kept point is the first that fooled it; default False).
        validate: check the inputs first (default True).
        precision: ``"auto"`` (default), ``"fp32"`` or ``"bf16"``, as for :func:`pgd`; the margins that pick the
            target kept are in fp32.

    Returns:
        ``x_adv``, detached, the shape of ``x``.

    Raises:
        ValueError: a bad radius, step, count, image range or label.

    Example:
        >>> x_adv = multi_targeted(model, x, y, eps=0.1, step_size=0.01, steps=20)  # doctest: +SKIP
    """
    check_eps(eps, step_size, steps)
    prec = resolve_precision(precision, x.device, x.dtype)
    k = check_batch(model, x, y) if validate else num_classes_of(model, x)
    y = y.long()
    # the weights' layout is the caller's where it inherits the precision (a training step)
    with eval_mode(model), model_layout(model, "fp32" if precision == INHERIT else prec):
        best = x.detach().clone()
        with torch.no_grad():
            best_margin = margin(model(x), y)
        for shift in range(1, k):
            noise = uniform(x, eps, generator) if random_start else None  # drawn for all: same stream
            alive = torch.arange(len(x), device=x.device)
            if stop_when_fooled:
                alive = alive[best_margin <= 0]
                if len(alive) == 0:
                    continue
            xa, ya = x[alive], y[alive]
            start = xa + noise[alive] if noise is not None else xa
            x_adv = sign_ascent(target_margin(model, ya, (ya + shift) % k), xa, start, eps, step_size, steps,
                                precision=prec)
            with torch.no_grad():
                m = margin(model(x_adv), ya)
            better = m > best_margin[alive]
            best[alive[better]] = x_adv[better]
            best_margin[alive[better]] = m[better]
    return best


def _torchattacks(what: str) -> Any:
    try:
        import torchattacks
    except ImportError:
        raise ImportError(f"{what} needs torchattacks: pip install --no-deps torchattacks==3.5.1 "
                          "(make setup installs it)") from None
    return torchattacks


def _square(torchattacks: Any, model: nn.Module, n_queries: int, common: dict[str, Any]) -> Any:
    """torchattacks' Square at AutoAttack's standard settings (p_init 0.8, no rescaled schedule, one restart)."""
    return torchattacks.Square(model, n_queries=n_queries, n_restarts=1, p_init=0.8, resc_schedule=False, **common)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 100,
               n_queries: int = 5000, seed: int = 0, validate: bool = True) -> torch.Tensor:
    """AutoAttack, standard version (Croce & Hein 2020), L-inf: APGD-CE, APGD-T and FAB-T (every other class
    as a target) with ``steps`` iterations each and Square with ``n_queries`` queries, one restart each,
    every attack run on the points the ones before it left robust.  Returns ``x_adv`` (detached).

    The four attacks are torchattacks' (an optional dependency: ``pip install --no-deps torchattacks``),
    put together here at the standard version's settings: torchattacks' own ``AutoAttack`` runs APGD, APGD-T
    and FAB with its default 10 iterations instead of the reference's 100, and its Square keeps
    ``resc_schedule=True`` (the square shrinks about twice as fast) where the standard version sets False.  ``seed`` seeds the four
    attacks; the global random state is left as it was.
    """
    torchattacks = _torchattacks("AutoAttack")
    check_eps(eps, None, steps)
    check_int("n_queries", n_queries)
    k = check_batch(model, x, y) if validate else num_classes_of(model, x)
    if eps == 0:
        return x.detach().clone()
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        common = {"norm": "Linf", "eps": float(eps), "seed": int(seed)}
        # the standard version's settings (fra31/auto-attack, autoattack.py: __init__ and set_version("standard"))
        parts = [torchattacks.APGD(model, steps=steps, n_restarts=1, loss="ce", eot_iter=1, rho=0.75, **common),
                 torchattacks.APGDT(model, steps=steps, n_restarts=1, n_classes=k, eot_iter=1, rho=0.75, **common),
                 torchattacks.FAB(model, steps=steps, n_restarts=1, multi_targeted=True, n_classes=k, **common),
                 _square(torchattacks, model, n_queries, common)]
        return torchattacks.MultiAttack(parts)(x, y.long()).detach()


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, n_queries: int = 1000, seed: int = 0,
           validate: bool = True, precision: str = "fp32") -> torch.Tensor:
    """Square (Andriushchenko et al. 2020), L-inf: a random search on the margin that reads the model's outputs
    only, never its gradients, at AutoAttack's standard settings (torchattacks' attack, an optional dependency).

    A gradient-free attack is the check on a gradient attack: where the model hides its gradients (a
    non-differentiable input transform, saturated logits), PGD stalls and Square does not.

    Args:
        model: any classifier returning logits ``(N, classes)``.
        x: images in [0, 1], ``(N, C, H, W)``, on the model's device.
        y: integer labels ``(N,)``.
        eps: the L-inf radius, in [0, 1].
        n_queries: model queries per point, >= 1 (default 1000; AutoAttack's standard version: 5000).
        seed: the search's seed (default 0); the global random state is left as it was.
        validate: check the inputs first (default True).
        precision: ``"fp32"`` (default), ``"auto"`` or ``"bf16"``: the queries' forwards (the search; judge the
            point it returns with an fp32 forward, as :mod:`rll_core.indicators` does).

    Returns:
        ``x_adv``, detached, the shape of ``x``.

    Raises:
        ValueError: a bad radius, count, image range or label; ImportError: no torchattacks.

    Example:
        >>> x_adv = square(model, x, y, eps=0.1, n_queries=1000)  # doctest: +SKIP
    """
    torchattacks = _torchattacks("Square")
    check_eps(eps)
    check_int("n_queries", n_queries)
    prec = resolve_precision(precision, x.device, x.dtype)
    if validate:
        check_batch(model, x, y)
    if eps == 0:
        return x.detach().clone()
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with eval_mode(model), model_layout(model, prec), torch.random.fork_rng(devices=devices):
        out = _square(torchattacks, _FloatLogits(model, prec), n_queries,
                      {"norm": "Linf", "eps": float(eps), "seed": int(seed)})(layout_for(x, prec), y.long()).detach()
    return out.contiguous() if x.is_contiguous() else out


class _FloatLogits(nn.Module):
    """``model``'s forward under ``precision``'s autocast, its logits returned in fp32 (a search that keeps its own
    bookkeeping in fp32, as Square does, sees no bf16 tensor)."""

    def __init__(self, model: nn.Module, precision: str) -> None:
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, x.device):
            return self.model(x).float()
