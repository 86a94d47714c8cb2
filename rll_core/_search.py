"""The pieces every inner search is built from (the attacks, the training methods' searches, the Lipschitz
estimate): eval mode with each submodule's flag restored, the eps-box, projection, input-only gradients, projected
sign ascent, and the checks of a batch against a model.  Private to the package: :mod:`rll_core.attacks` is the
public face of the attacks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .checks import as_model_dtype, check_images, check_labels
from .precision import autocast, layout_for

__all__ = ["box", "check_batch", "eval_mode", "input_grad", "margin", "num_classes_of", "predict", "project",
           "sign_ascent", "target_margin", "uniform"]




@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own ``training`` flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in flags:
            m.training = t


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits ``model`` returns, from one example (eval mode, no gradient)."""
    with torch.no_grad(), eval_mode(model):
        out = model(x[:1])
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"the model must return logits of shape (N, classes >= 2), got {tuple(out.shape)}")
    return int(out.shape[1])


def check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Check images and labels against ``model``; return its number of classes."""
    check_images(x)
    want = as_model_dtype(x[:1], model).dtype
    if want != x.dtype:
        raise ValueError(f"x is {x.dtype} but the model computes in {want}: pass x.to({want}) (evaluate and "
                         "local_lipschitz convert by themselves)")
    k = num_classes_of(model, x)
    check_labels(y, x.shape[0], k)
    return k


def uniform(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (2 * u - 1) * eps


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Nearest point of the eps-box around ``x`` intersected with [0, 1] (coordinate-wise clip)."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


def input_grad(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Gradient of the scalar ``loss_fn(x)`` with respect to ``x`` only (parameters untouched)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(x), x)
    return g


def box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounds of ``{x' : ||x' - x||_inf <= eps} ∩ [0, 1]^D`` per coordinate: clamping to them is
    :func:`project` (the same values bit for bit, for ``x`` in [0, 1]), computed once per search."""
    return (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)


def sign_ascent(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, start: torch.Tensor,
                eps: float, step_size: float, steps: int, *, project_start: bool = True,
                precision: str = "fp32") -> torch.Tensor:
    """``steps`` projected sign-gradient ascent steps on ``loss_fn`` from ``start`` in the eps-box of ``x``
    (the step and the projection in place, against bounds computed once).  ``project_start``: the start is
    projected into the box before the first gradient (PGD's, as cleverhans and torchattacks do); False takes
    the first gradient at ``start`` itself (TRADES' official search, whose start ``x + 0.001 N(0, 1)`` may
    leave [0, 1]).  ``precision`` (resolved, :mod:`rll_core.precision`): ``"bf16"`` takes each gradient under
    bf16 autocast on NHWC images; the iterate itself and its projection stay in x's dtype and layout."""
    lo, hi = box(x.detach(), eps)
    x_adv = torch.clamp(start.detach(), lo, hi) if project_start else start.detach().clone()
    x_adv = layout_for(x_adv, precision)
    for _ in range(steps):
        with autocast(precision, x.device):
            g = input_grad(loss_fn, x_adv)
        x_adv.add_(g.sign_(), alpha=step_size)
        torch.clamp(x_adv, lo, hi, out=x_adv)
    return x_adv.contiguous() if x.is_contiguous() else x_adv


def target_margin(model: nn.Module, y: torch.Tensor, t: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The summed margin ``z_t - z_y`` of target ``t`` over label ``y``, as a function of the input."""
    def loss(z: torch.Tensor) -> torch.Tensor:
        logits = model(z)
        return (logits.gather(1, t[:, None]) - logits.gather(1, y[:, None])).sum()

    return loss


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y per example (> 0 iff misclassified, ties aside)."""
    other = logits.scatter(1, y[:, None], float("-inf"))
    return other.amax(1) - logits.gather(1, y[:, None])[:, 0]


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels in eval mode (mode restored), without gradient."""
    with torch.no_grad(), eval_mode(model):
        return model(x).argmax(1)
