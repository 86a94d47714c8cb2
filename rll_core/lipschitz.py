"""Empirical local Lipschitzness (paper Section 5): how fast the logits can change near a point.

For a point ``x`` the quantity is

    L(x) = max over x' in B_inf(x, eps) ∩ [0, 1]^D of ||f(x) - f(x')||_1 / ||x - x'||_inf,

``f`` the logits.  :func:`local_lipschitz` lower-bounds it per point by projected sign-gradient ASCENT
from a small random start (``x + 0.001 N(0, 1)``), keeping the largest ratio met at any iterate.  The
paper's code steps in the descending direction, which makes its numbers meaningless; here every
reported value is the ratio at a concrete ``x'`` in the ball, so it can only under-estimate.

What is ascended is the numerator ``||f(x') - f(x)||_1``; the ratio is recorded at every iterate (radii
``step_size``, ``2 step_size``, ... up to ``eps``, so small radii are visited too).  Ascending the ratio
itself works badly with sign steps: on a linear piece it is scale-invariant, its gradient is orthogonal
to ``x' - x`` and the iterates oscillate on the ``step_size`` lattice without settling on a vertex of
the ball.  Measured on random linear maps ``R^12 -> R^10`` (true constant by enumerating all sign
vectors): ratio ascent stalls 2-3 % below the constant with 32 restarts, numerator ascent reaches it
to within 1 %.

``procedure="reference"`` reproduces, on purpose, the estimator behind the paper's published Lipschitz
column (``estimate_local_lip_v2`` in the reference code, written out here from its definition): start
at ``x + 0.001 N(0, 1)`` (not clipped), take ``steps`` sign steps of ``step_size`` (default 0.003,
whatever eps) on ``-ratio`` -- that is, *downhill* on the ratio -- clipping to the eps-box and to
[0, 1] after each, and report the ratio at the last iterate, with ``1e-6`` added to every coordinate
of ``x - x'`` in the denominator.  Its values are far below the ascent's (on one MNIST CNN: 6.85
against 112.9); use it only to relate rll's numbers to the published ones.

Step size: with sign steps a coordinate moves ``step_size`` per step, so reaching the edge of the ball
from the centre takes ``eps / step_size`` steps.  The default ``step_size = 2 * eps / steps`` lets the
search reach the edge in half of its steps and still turn back within the ball.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import nn

from ._search import box, eval_mode
from .checks import (
    as_float_images,
    as_model_dtype,
    check_eps,
    check_images,
    check_int,
    default_batch_size,
    model_device,
)
from .paper import step_size as paper_step_size
from .precision import autocast, check_precision, layout_for, model_layout, resolve_precision
from .progress import progress_bar

__all__ = ["PROCEDURES", "check_procedures", "lipschitz_ratio", "local_lipschitz"]

_TINY = 1e-12

#: ``ascent``: rll's estimator (a lower bound on the true local constant); ``reference``: the paper's
#: published procedure, which descends (see the module docstring).
PROCEDURES = ("ascent", "reference")

def check_procedures(procedures: Sequence[str] | str) -> tuple[str, ...]:
    """``procedures`` as a tuple in :data:`PROCEDURES`' order (a comma-separated string is read too), refused in one
    line when one is unknown or named twice; ``()`` is allowed (no Lipschitz estimate).

    >>> check_procedures("reference,ascent")
    ('ascent', 'reference')
    """
    items = [p.strip() for p in procedures.split(",") if p.strip()] if isinstance(procedures, str) else list(procedures)
    unknown = [p for p in items if p not in PROCEDURES]
    if unknown or len(set(items)) != len(items):
        raise ValueError(f"Lipschitz procedures must be distinct names of {', '.join(PROCEDURES)}, got {items}")
    return tuple(p for p in PROCEDURES if p in items)


#: The reference estimator's fixed step (``estimate_local_lip_v2(step_size=0.003)``).
REFERENCE_STEP_SIZE = 0.003


def lipschitz_ratio(model: nn.Module, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``||f(x) - f(x2)||_1 / ||x - x2||_inf`` per example (0 where ``x2 == x``), computed as given."""
    return _ratio(model(x), model(x2), x, x2)


def _ratio(fx: torch.Tensor, fz: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    num = (fz - fx).abs().flatten(1).sum(1)
    den = (z - x).abs().flatten(1).amax(1)
    return torch.where(den > 0, num / den.clamp_min(_TINY), torch.zeros_like(num))


@overload
def local_lipschitz(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int = ...,
                    step_size: float | None = ..., restarts: int = ..., batch_size: int | None = ...,
                    generator: torch.Generator | None = ..., progress: bool = ..., procedure: str = ...,
                    precision: str = ..., return_inputs: Literal[False] = ...) -> torch.Tensor: ...


@overload
def local_lipschitz(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int = ...,
                    step_size: float | None = ..., restarts: int = ..., batch_size: int | None = ...,
                    generator: torch.Generator | None = ..., progress: bool = ..., procedure: str = ...,
                    precision: str = ..., return_inputs: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...


def local_lipschitz(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int = 10,
                    step_size: float | None = None, restarts: int = 1, batch_size: int | None = None,
                    generator: torch.Generator | None = None, progress: bool = False,
                    procedure: str = "ascent", precision: str = "auto",
                    return_inputs: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-point empirical local Lipschitz constant of ``model``'s logits in the L-inf ``eps``-ball.

    ``max ||f(x) - f(x')||_1 / ||x - x'||_inf`` over the ball, found by projected sign-gradient *ascent* from
    ``x + 0.001 N(0, 1)``; the ratio is recorded at every iterate, so the value is always a ratio actually met
    (a lower bound of the true local constant).  The model runs in eval mode (restored after).

    Args:
        model: any classifier returning logits.
        x: images ``(N, C, H, W)`` in [0, 1] (uint8 pixels are divided by 255), on any device.
        eps: the ball's radius, in (0, 1].
        steps: ascent steps, >= 1 (default 10, the paper's).
        step_size: the sign step (default ``2 eps / steps``; the reference procedure's 0.003).
        restarts: independent starts; per point the largest ratio (default 1).
        batch_size: images per batch (default 64 on a CPU); the starts are drawn per batch.
        generator: a ``torch.Generator`` on the model's device (default: the global stream).
        progress: show a progress bar (default False).
        procedure: ``"ascent"`` (rll's) or ``"reference"``: the paper's published procedure, which steps downhill
            with a fixed step of 0.003 and reports the last iterate's ratio (for relating to its numbers only).
        precision: ``"auto"`` (default: bf16 ascent steps where the hardware computes bf16 natively), ``"fp32"`` or
            ``"bf16"``.  Under bf16 the steps run in bf16 autocast (the first one's direction from fp32 logits) and
            rank the iterates; the value reported is the fp32 ratio at the best-ranked iterate and at the last.  The
            reference procedure runs in fp32.
        return_inputs: also return, per point, the input ``x'`` in the ball that attains the reported ratio
            (default False).

    Returns:
        A float tensor ``(N,)`` on the CPU, in logit units per unit of L-inf input change; with ``return_inputs``,
        the pair ``(values, inputs)``, ``inputs`` of ``x``'s shape on the CPU (the reference procedure's last
        iterate).

    Raises:
        ValueError: eps 0 or outside [0, 1], a bad step, count or batch size, an unknown procedure, restarts with
            the reference procedure, images outside [0, 1].

    Example:
        >>> lip = local_lipschitz(model, x_test, eps=0.1)  # doctest: +SKIP
        >>> float(lip.mean())  # doctest: +SKIP
    """
    if procedure not in PROCEDURES:
        raise ValueError(f"unknown procedure {procedure!r}; valid: {', '.join(PROCEDURES)}")
    check_eps(eps, step_size, steps)
    if step_size is None:
        step_size = REFERENCE_STEP_SIZE if procedure == "reference" else paper_step_size(eps, steps)
    if eps == 0:
        raise ValueError("eps must be > 0 for a local Lipschitz estimate")
    check_int("restarts", restarts)
    if batch_size is not None:
        check_int("batch_size", batch_size)
    if procedure == "reference" and restarts != 1:
        raise ValueError("the reference procedure has one start; restarts must be 1")
    xt = as_float_images(x)
    check_images(xt)
    xt = as_model_dtype(xt, model)
    dev = model_device(model)
    batch_size = batch_size or default_batch_size(dev)
    out, where = [], []
    prec = "fp32" if check_precision(precision) and procedure == "reference" else resolve_precision(precision, dev, xt.dtype)
    with eval_mode(model), model_layout(model, prec):
        for s in progress_bar(range(0, len(xt), batch_size), desc="local Lipschitz", disable=not progress, unit="batch"):
            xb = xt[s:s + batch_size].to(dev)
            if procedure == "reference":
                value, at = _batch_reference(model, xb, float(eps), step_size, steps, generator)
            elif prec == "bf16":
                value, at = _batch_lipschitz_bf16(model, xb, eps, step_size, steps, restarts, generator)
            else:
                value, at = _batch_lipschitz(model, xb, eps, step_size, steps, restarts, generator)
            out.append(value.cpu())
            if return_inputs:
                where.append(at.detach().float().contiguous().cpu())
    values = torch.cat(out)
    return (values, torch.cat(where)) if return_inputs else values


def _keep(best: torch.Tensor, at: torch.Tensor, r: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``torch.maximum(best, r)``, and where ``r`` is larger the iterate ``z`` into ``at`` (in place)."""
    better = r > best
    at[better] = z[better].to(at.dtype)
    return torch.maximum(best, r)


def _batch_lipschitz(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int,
                     restarts: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        fx = model(x)

    lo, hi = box(x, eps)
    best = torch.zeros(len(x), device=x.device)
    at = x.detach().clone()
    for _ in range(restarts):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = torch.clamp(x + 0.001 * noise, lo, hi)
        for _ in range(steps):
            # one forward pass serves both the ratio at z and the gradient of the ascent step
            zg = z.detach().requires_grad_(True)
            with torch.enable_grad():
                fz = model(zg)
                (g,) = torch.autograd.grad((fz - fx).abs().sum(), zg)
            best = _keep(best, at, _ratio(fx, fz.detach(), x, z), z)
            z.add_(g.sign_(), alpha=step_size)
            torch.clamp(z, lo, hi, out=z)
        with torch.no_grad():
            best = _keep(best, at, _ratio(fx, model(z), x, z), z)
    return best, at


def _batch_lipschitz_bf16(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int,
                          restarts: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ascent with bf16 steps: each step's forward and backward in bf16 autocast on NHWC images steer it
    (the gradient of ``||f(z) - f(x)||_1``) and rank its iterates; the value is the fp32 ratio at the best-ranked
    iterate and at the last (always a ratio met, its logits fp32).  The first step's direction is fp32's: at the
    start, 0.001 from ``x``, the logits differ by less than bf16 resolves (a bf16 sign there is noise or 0)."""
    with torch.no_grad():
        fx = model(x)
        with autocast("bf16", x.device):
            fx16 = model(layout_for(x, "bf16")).float()
    lo, hi = box(x, eps)
    best = torch.zeros(len(x), device=x.device)
    found = x.detach().clone()
    for _ in range(restarts):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = layout_for(torch.clamp(x + 0.001 * noise, lo, hi), "bf16")
        top, arg = torch.full((len(x),), -1.0, device=x.device), z.clone()
        for k in range(steps):
            zg = z.detach().requires_grad_(True)
            with torch.enable_grad(), autocast("bf16", x.device):
                fz = model(zg).float()
            if k == 0:
                with torch.no_grad():
                    fz0 = model(_like(z, x))
                cot, r = (fz0 - fx).sign(), _ratio(fx, fz0, x, z)
            else:
                cot, r = (fz.detach() - fx16).sign(), _ratio(fx16, fz.detach(), x, z)
            (g,) = torch.autograd.grad(fz, zg, grad_outputs=cot)
            better = r > top
            top = torch.where(better, r, top)
            arg[better] = z[better]
            z.add_(g.sign_(), alpha=step_size)
            torch.clamp(z, lo, hi, out=z)
        with torch.no_grad():
            for cand in (arg, z):  # fp32, in x's own layout (an fp32 forward of NHWC strides gives other bits)
                best = _keep(best, found, _ratio(fx, model(_like(cand, x)), x, cand), cand)
    return best, found


def _like(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``z`` with ``x``'s strides (an fp32 forward at an iterate of the bf16 steps, taken as at ``x``)."""
    return z if z.stride() == x.stride() else torch.empty_strided(x.shape, x.stride(), dtype=z.dtype,
                                                                   device=z.device).copy_(z)


def _reference_ratio(fx: torch.Tensor, fz: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The reference's ratio: ``||f(x) - f(z)||_1 / ||x - z + 1e-6||_inf`` (1e-6 added per coordinate)."""
    return (fx - fz).flatten(1).abs().sum(1) / (x - z + 1e-6).flatten(1).abs().amax(1)


def _batch_reference(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int,
                     generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The published procedure: sign steps on minus the batch-mean ratio, clip, last iterate."""
    with torch.no_grad():
        fx = model(x)
    z = x + 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    for _ in range(steps):
        zg = z.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(-_reference_ratio(fx, model(zg), x, zg).mean(), zg)
        # the step follows the gradient of the *negative* ratio: the ratio goes down
        z = torch.minimum(torch.maximum(z + step_size * g.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return _reference_ratio(fx, model(z), x, z), z
