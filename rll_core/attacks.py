"""L-inf attacks as plain functions over any PyTorch classifier, and dataset-level robust accuracy.

* :func:`pgd` - projected gradient ascent on the cross-entropy with sign steps (Madry et al. 2018),
  optionally targeted, with random starts and restarts.
* :func:`multi_targeted` - for every class other than the label, a targeted PGD on the margin
  ``z_target - z_label`` (Gowal et al. 2019); per example the strongest target is kept.
* :func:`evaluate` - clean accuracy and accuracy under each attack, over a dataset in batches, each
  number stored beside the settings that produced it.

Conventions (cleverhans v4 / torchattacks style): inputs are images in [0, 1] on any device (the work
happens on ``x``'s device; nothing is moved to CUDA behind the caller's back); the model is attacked
in eval mode and its train/eval mode is restored afterwards, module by module; gradients are taken
with respect to the input only (``torch.autograd.grad``), so nothing is accumulated in the
parameters' ``.grad``; bad arguments raise ``ValueError`` before any work.  Given a
``torch.Generator`` (on ``x``'s device) the result is deterministic.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_eps, check_int
from .paper import step_size as paper_step_size

__all__ = ["ATTACKS", "AttackSpec", "EvalResult", "check_batch", "eval_mode", "evaluate", "multi_targeted",
           "paper_attack", "pgd", "predict"]


# ----------------------------------------------------------------------------------------------
# shared checks and helpers


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


def check_images(x: torch.Tensor) -> None:
    """A floating tensor ``(N, ...)`` with N >= 1 and every value in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of images in [0, 1], got {x.dtype} "
                         "(convert uint8 pixels with x.float() / 255)")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    lo, hi = x.aminmax()
    if not (bool(lo >= 0) and bool(hi <= 1)):  # also false for NaN
        raise ValueError(f"x must lie in [0, 1], got values in [{float(lo)}, {float(hi)}]")


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None) -> None:
    """Integer labels of shape ``(n,)`` in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer torch.Tensor, got "
                         f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in [{int(y.min())}, {int(y.max())}]")


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
    k = num_classes_of(model, x)
    check_labels(y, x.shape[0], k)
    return k


def _uniform(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
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


def sign_ascent(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, start: torch.Tensor,
                eps: float, step_size: float, steps: int) -> torch.Tensor:
    """``steps`` projected sign-gradient ascent steps on ``loss_fn`` from ``start`` in the eps-box of ``x``."""
    x_adv = project(start, x, eps)
    for _ in range(steps):
        g = input_grad(loss_fn, x_adv)
        x_adv = project(x_adv + step_size * g.sign(), x, eps)
    return x_adv.detach()


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y per example (> 0 iff misclassified, ties aside)."""
    other = logits.scatter(1, y[:, None], float("-inf"))
    return other.amax(1) - logits.gather(1, y[:, None])[:, 0]


# ----------------------------------------------------------------------------------------------
# attacks


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float, steps: int,
        random_start: bool = True, targeted: bool = False, restarts: int = 1,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD: ascend the summed cross-entropy with sign steps (descend it towards ``y`` if ``targeted``).

    Each step is projected onto ``{x' : ||x' - x||_inf <= eps} ∩ [0, 1]^D``.  With ``restarts > 1``
    every restart starts from a fresh uniform point and an example keeps the first restart that fools
    the model (for targeted: that reaches ``y``), else the last.  Returns ``x_adv`` (detached).
    """
    check_eps(eps, step_size, steps)
    check_int("restarts", restarts)
    check_batch(model, x, y)
    y = y.long()
    sign = -1.0 if targeted else 1.0

    def loss(z: torch.Tensor) -> torch.Tensor:
        return sign * F.cross_entropy(model(z), y, reduction="sum")

    with eval_mode(model):
        best = x.detach().clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            start = x + _uniform(x, eps, generator) if random_start else x
            x_adv = sign_ascent(loss, x, start, eps, step_size, steps)
            with torch.no_grad():
                pred = model(x_adv).argmax(1)
            done = (pred == y) if targeted else (pred != y)
            best[todo] = x_adv[todo]
            todo &= ~done
            if not bool(todo.any()):
                break
    return best


def multi_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
                   steps: int, random_start: bool = True,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Multi-targeted attack: a targeted PGD on ``z_t - z_y`` for every class ``t != y``.

    Targets are visited as ``t = (y + k) mod C`` for ``k = 1 .. C-1``, so every example tries each of
    its C - 1 other classes once.  Per example the point kept is the one with the largest margin
    ``max_{j != y} z_j - z_y``: a misclassified point (margin > 0) wins over any correct one, and among
    those the target that beats ``y`` by the most.  Returns ``x_adv`` (detached).
    """
    check_eps(eps, step_size, steps)
    k = check_batch(model, x, y)
    y = y.long()
    with eval_mode(model):
        best = x.detach().clone()
        with torch.no_grad():
            best_margin = _margin(model(x), y)
        for shift in range(1, k):
            t = (y + shift) % k

            def loss(z: torch.Tensor) -> torch.Tensor:
                logits = model(z)
                return (logits.gather(1, t[:, None]) - logits.gather(1, y[:, None])).sum()

            start = x + _uniform(x, eps, generator) if random_start else x
            x_adv = sign_ascent(loss, x, start, eps, step_size, steps)
            with torch.no_grad():
                m = _margin(model(x_adv), y)
            better = m > best_margin
            best[better] = x_adv[better]
            best_margin = torch.where(better, m, best_margin)
    return best


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels in eval mode (mode restored), without gradient."""
    with torch.no_grad(), eval_mode(model):
        return model(x).argmax(1)


# ----------------------------------------------------------------------------------------------
# dataset-level evaluation


@dataclass(frozen=True)
class AttackSpec:
    """An attack's full settings, stored beside every number it produced."""

    name: str
    eps: float
    steps: int
    step_size: float
    restarts: int = 1
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; valid: {', '.join(ATTACKS)}")
        check_eps(self.eps, self.step_size, self.steps)
        check_int("restarts", self.restarts)
        if self.name != "pgd" and self.restarts != 1:
            raise ValueError(f"restarts apply to pgd only, got {self.restarts} for {self.name!r}")
        # plain Python numbers, so the settings stored beside a result are JSON and compare equal
        for k in ("eps", "step_size"):
            object.__setattr__(self, k, float(getattr(self, k)))
        for k in ("steps", "restarts"):
            object.__setattr__(self, k, int(getattr(self, k)))

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator | None) -> torch.Tensor:
        if self.name == "pgd":
            return pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                       random_start=self.random_start, restarts=self.restarts, generator=generator)
        return multi_targeted(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                              random_start=self.random_start, generator=generator)


#: The paper's evaluation attacks and their step counts: PGD-10 and multi-targeted 20 steps per target, each
#: step 2 eps / steps (:func:`rll_core.paper.step_size`).
ATTACKS: dict[str, int] = {"pgd": 10, "multitarget": 20}


def paper_attack(name: str, eps: float, **overrides: Any) -> AttackSpec:
    """The paper's setting of attack ``name`` at radius ``eps`` (fields overridable)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    check_eps(eps)
    bad = set(overrides) - set(AttackSpec.__dataclass_fields__) - {"name"}
    if bad:
        raise ValueError(f"unknown attack settings {sorted(bad)}; valid: steps, step_size, restarts, random_start")
    steps = overrides.pop("steps", ATTACKS[name])
    check_eps(eps, None, steps)
    step_size = overrides.pop("step_size", None)
    if step_size is None:
        step_size = paper_step_size(eps, steps)
    return AttackSpec(name, float(eps), steps, step_size, **overrides)


@dataclass
class EvalResult:
    """Clean and adversarial accuracy of one model on one set, with the settings that produced them."""

    n: int
    clean_accuracy: float
    adversarial_accuracy: dict[str, float]
    attacks: dict[str, dict[str, Any]]
    seed: int
    seconds: float
    correct: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-example verdicts left out)."""
        d = asdict(self)
        d.pop("correct")
        return d


def as_float_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; floating input is passed through as a tensor."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype == torch.uint8:
        return t.float().div_(255)
    return t


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def evaluate(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, eps: float,
             attacks: Sequence[str | AttackSpec] = ("pgd", "multitarget"), batch_size: int = 256,
             seed: int = 0, progress: bool = True) -> EvalResult:
    """Clean accuracy and accuracy under each attack on ``(x, y)``, in batches on the model's device.

    ``x``: images in [0, 1] (or uint8 pixels, divided by 255), ``y`` integer labels.  ``attacks``
    names (the paper's settings at ``eps``, see :data:`ATTACKS`) or :class:`AttackSpec` objects.
    The random starts come from one generator seeded with ``seed``, so the result is reproducible.
    Points the model already misclassifies count as not robust and are not attacked.
    """
    from .progress import progress_bar as tqdm

    check_eps(eps)
    if isinstance(attacks, str):
        raise ValueError(f"attacks must be a sequence of names, got the string {attacks!r}; write ({attacks!r},)")
    specs = [a if isinstance(a, AttackSpec) else paper_attack(a, eps) for a in attacks]
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("each attack may appear once")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    xt, yt = as_float_images(x), torch.as_tensor(y)
    check_images(xt)
    dev = model_device(model)
    check_labels(yt, len(xt), num_classes_of(model, xt[:1].to(dev)))
    gen = torch.Generator(device=dev).manual_seed(seed)
    correct: dict[str, list[torch.Tensor]] = {"clean": [], **{s.name: [] for s in specs}}
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(xt), batch_size), desc="evaluate", disable=not progress, unit="batch"):
        xb, yb = xt[s:s + batch_size].to(dev), yt[s:s + batch_size].to(dev).long()
        ok = predict(model, xb) == yb
        correct["clean"].append(ok.cpu())
        for spec in specs:  # a misclassified point is not robust: only the correct ones are attacked
            robust = ok.clone()
            if bool(ok.any()):
                robust[ok] = predict(model, spec.run(model, xb[ok], yb[ok], gen)) == yb[ok]
            correct[spec.name].append(robust.cpu())
    verdicts = {k: torch.cat(v).numpy() for k, v in correct.items()}
    return EvalResult(
        n=len(xt), clean_accuracy=float(verdicts["clean"].mean()),
        adversarial_accuracy={s.name: float(verdicts[s.name].mean()) for s in specs},
        attacks={s.name: asdict(s) for s in specs}, seed=seed, seconds=time.perf_counter() - t0,
        correct=verdicts)
