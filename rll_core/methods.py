"""Training methods of the paper (Section 5) as losses, and tensor augmentation for the training loop.

A method is a small frozen dataclass of hyperparameters, called as ``method(model, x, y) -> loss`` (the
TRADES pattern): it replaces the cross-entropy and nothing else, never sees the optimizer, and leaves
the model's train/eval mode as it found it (inner maximisations run in eval mode, restored after).
Losses are means over the batch.

* :class:`Natural` - cross-entropy.
* :class:`GR` - gradient regularisation, finite-difference form (TULIP, Finlay & Oberman 2019).
* :class:`LLR` - local linearity regularisation (Qin et al. 2019).
* :class:`AT` - adversarial training on PGD examples (Madry et al. 2018).
* :class:`TRADES` - Zhang et al. 2019.
* :class:`RST` - the paper's robust self-training loss ``CE(x) + lam * CE(PGD(x))`` (Raghunathan et al.
  2020); pseudo-labelled extra data is passed to :func:`train` as ``extra_data``.

The paper's code has two defects these do not repeat: its LLR differentiates a tensor that does not
depend on the input (the input gradient is identically zero), and its GR adds the cross-entropy twice.
With its regulariser switched off (``beta``/``lam``/``mu`` = 0) every method is the natural
cross-entropy exactly, in value and in parameter gradient: the clean forward pass is always the first
random draw, so even dropout masks coincide.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._search import eval_mode, sign_ascent
from .attacks import pgd
from .checks import check_eps, check_int, check_real, rng_state, set_rng_state
from .paper import step_size as paper_step_size
from .precision import INHERIT, resolve_precision

__all__ = ["AT", "AUGMENTATIONS", "GR", "LLR", "METHODS", "Method", "Natural", "RST", "TRADES", "augment_batch",
           "ce_input_grad", "make_method", "replay_draws"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (inner searches need no gradient sync)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(model, nn.parallel.DistributedDataParallel) and isinstance(inner, nn.Module) else model


@contextlib.contextmanager
def replay_draws(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> Iterator[None]:
    """Run the block from the random ``state`` captured earlier (so a forward pass there draws the same
    dropout masks as the pass that followed the capture), then put back the state the block found, so
    later draws (the next batch, the next random start) are not repeats."""
    now = rng_state(device)
    set_rng_state(state, device)
    try:
        yield
    finally:
        set_rng_state(now, device)


def ce_input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                  create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x`` and the gradient of the summed cross-entropy with respect to ``x`` (one forward).

    With ``create_graph`` the gradient is itself differentiable in the parameters (double backprop).
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xg, create_graph=create_graph,
                                   retain_graph=True)
    return logits, g


class Method:
    """Base of the training losses: ``name`` for the registry, hyperparameters as dataclass fields."""

    name: ClassVar[str] = ""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The method's name and hyperparameters (stored with every run)."""
        return {"method": self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def _set(self, **values: Any) -> None:
        """Store checked values as plain Python numbers (frozen dataclass), so settings are JSON."""
        for k, v in values.items():
            object.__setattr__(self, k, v)


def _check_nonneg(method: Method, *names: str) -> None:
    method._set(**{k: check_real(k, getattr(method, k), lo=0) for k in names})


def _check_search(method: Any) -> None:
    """An inner search's eps in [0, 1], steps >= 1 and step size > 0 (None: 2 eps / steps)."""
    check_eps(method.eps)
    method._set(eps=float(method.eps), steps=check_int("steps", method.steps))
    if method.step_size is not None:
        method._set(step_size=check_real("step_size", method.step_size, lo=0, lo_open=True))


def _steps_default(eps: float, step_size: float | None, steps: int) -> float:
    return step_size if step_size is not None else paper_step_size(eps, steps)


@dataclass(frozen=True)
class Natural(Method):
    """Cross-entropy on clean data."""

    name: ClassVar[str] = "natural"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)


@dataclass(frozen=True)
class GR(Method):
    """CE + lam * mean((CE(x + h v) - CE(x))^2 / h^2) / 2, v the L2-normalised input gradient of CE (fixed).

    The penalty is a finite-difference estimate of ``||grad_x CE||_2^2 / 2`` that needs no double backprop
    (TULIP, Finlay & Oberman 2019).  Convention: the reference's ``tulip_loss`` adds ``lambd * sum(dl^2) / 2``
    to a summed CE; rll's losses are means over the batch, so ``lam`` here is the reference's weight
    exactly.  Defaults are the reference's (``lam`` 1, step ``h`` 1.0); TULIP's own code uses ``h = 0.01``,
    a closer derivative (``make_method("gr", h=0.01)``).  Both forward passes draw the same dropout
    masks.  The cross-entropy enters once (the reference adds it twice).
    """

    name: ClassVar[str] = "gr"
    lam: float = 1.0
    h: float = 1.0

    def __post_init__(self) -> None:
        _check_nonneg(self, "lam")
        self._set(h=check_real("h", self.h, lo=0, lo_open=True))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        masks = rng_state(x.device)
        logits, g = ce_input_grad(model, x, y)
        ce = F.cross_entropy(logits, y, reduction="none")
        v = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
        with replay_draws(masks, x.device):
            ce_h = F.cross_entropy(model(x + self.h * v), y, reduction="none")
        penalty = (((ce_h - ce) / self.h) ** 2).mean() / 2
        return F.cross_entropy(logits, y) + self.lam * penalty


@dataclass(frozen=True)
class LLR(Method):
    """Local linearity regularisation: ``CE + lam * gamma + mu * |delta* . grad_x CE|``, means over the batch.

    ``gamma(x) = |CE(x + delta*) - CE(x) - delta* . grad_x CE(x)|`` with ``delta*`` the maximiser of that
    quantity over the L-inf eps-ball, found by ``steps`` projected sign-gradient steps from a uniform
    start: by default the reference's search (``perturb_steps=2``, ``step_size=eps/2``), the one every table
    and ``rll train`` use.  ``grad_x CE(x)`` is the real input gradient, kept differentiable so both terms
    train the parameters (double backprop); the reference code's is identically zero.  Defaults lam = 4,
    mu = 3 (Qin et al.; the reference's MNIST/CIFAR-10/SVHN weights).

    One function throughout.  The training-mode terms (``CE(x)``, ``grad_x CE(x)`` and ``CE(x + delta*)``)
    are evaluated on the same dropout masks, so ``gamma`` measures the curvature of one network and goes to
    0 with eps.  The search for ``delta*`` runs in eval mode (no dropout, frozen batch-norm statistics, as
    every inner search here) and compares eval-mode values only: its reference point ``CE(x)``,
    ``grad_x CE(x)`` is an eval-mode pass too, never the training-mode loss, which would make the
    searched quantity nonzero at ``delta = 0``.
    """

    name: ClassVar[str] = "llr"
    eps: float = 0.1
    lam: float = 4.0
    mu: float = 3.0
    steps: int = 2
    #: None: the reference's eps / 2 (whatever ``steps``)
    step_size: float | None = None

    def __post_init__(self) -> None:
        _check_nonneg(self, "lam", "mu")
        _check_search(self)

    def input_gradient(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``grad_x CE(x)`` per example (the gradient of the summed CE), as this loss uses it."""
        return ce_input_grad(model, x, y)[1]

    def search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``delta*``: the eval-mode maximiser of the local nonlinearity in the eps-ball (detached)."""
        inner = _unwrap(model)
        with eval_mode(inner):
            logits0, g0 = ce_input_grad(inner, x, y)
            ce0, g0 = F.cross_entropy(logits0, y, reduction="none").detach(), g0.detach()

            def nonlinearity(z: torch.Tensor) -> torch.Tensor:
                d = z - x
                return (F.cross_entropy(inner(z), y, reduction="none") - ce0 - (d * g0).flatten(1).sum(1)).abs().sum()

            start = x + (2 * torch.rand_like(x) - 1) * self.eps
            step = self.step_size if self.step_size is not None else self.eps / 2
            z = sign_ascent(nonlinearity, x, start, self.eps, step, self.steps,
                            precision=resolve_precision(INHERIT, x.device))
        return (z - x).detach()

    def terms(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example ``ce``, ``gamma`` and ``lin = delta* . grad_x CE``, and the clean ``logits``
        (differentiable in the parameters)."""
        masks = rng_state(x.device)
        logits, gx = ce_input_grad(model, x, y, create_graph=True)
        ce = F.cross_entropy(logits, y, reduction="none")
        delta = self.search(model, x, y)
        lin = (delta * gx).flatten(1).sum(1)
        with replay_draws(masks, x.device):
            ce_d = F.cross_entropy(model(x + delta), y, reduction="none")
        return {"logits": logits, "ce": ce, "gamma": (ce_d - ce - lin).abs(), "lin": lin}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.terms(model, x, y)
        return F.cross_entropy(t["logits"], y) + self.lam * t["gamma"].mean() + self.mu * t["lin"].abs().mean()


@dataclass(frozen=True)
class AT(Method):
    """Cross-entropy on PGD examples (random start; the paper: 10 steps of 2 eps / 10)."""

    name: ClassVar[str] = "at"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self) -> None:
        _check_search(self)

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd(_unwrap(model), x, y, eps=self.eps, steps=self.steps,
                   step_size=_steps_default(self.eps, self.step_size, self.steps), precision=INHERIT)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(self.adversarial(model, x, y)), y)


@dataclass(frozen=True)
class TRADES(Method):
    """CE(f(x), y) + beta * KL(f(x) || f(x')), x' from sign ascent on the KL from x + 0.001 N(0, 1)."""

    name: ClassVar[str] = "trades"
    eps: float = 0.1
    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self) -> None:
        _check_nonneg(self, "beta")
        _check_search(self)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        inner = _unwrap(model)
        with eval_mode(inner):
            with torch.no_grad():
                p_nat = F.softmax(inner(x), 1)

            def kl(z: torch.Tensor) -> torch.Tensor:
                return F.kl_div(F.log_softmax(inner(z), 1), p_nat, reduction="sum")

            x_adv = sign_ascent(kl, x, x + 0.001 * torch.randn_like(x), self.eps,
                                _steps_default(self.eps, self.step_size, self.steps), self.steps, project_start=False,
                                precision=resolve_precision(INHERIT, x.device))
        robust = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * robust


@dataclass(frozen=True)
class RST(Method):
    """Robust self-training loss: CE(x) + lam * CE(PGD(x)); extra pseudo-labelled data via ``train``."""

    name: ClassVar[str] = "rst"
    eps: float = 0.1
    lam: float = 1.0
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self) -> None:
        _check_nonneg(self, "lam")
        _check_search(self)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clean = F.cross_entropy(model(x), y)
        x_adv = AT(self.eps, self.steps, self.step_size).adversarial(model, x, y)
        return clean + self.lam * F.cross_entropy(model(x_adv), y)


METHODS: dict[str, type[Method]] = {m.name: m for m in (Natural, GR, LLR, AT, TRADES, RST)}


def make_method(name: str, **hyper: Any) -> Method:
    """A training method by registry name: the loss that replaces the cross-entropy.

    Args:
        name: one of :data:`METHODS` (``natural``, ``gr``, ``llr``, ``at``, ``trades``, ``rst``; any case).
        **hyper: the method's fields, each with the reference's default (``eps`` 0.1 on the [0, 1] scale; TRADES
            ``beta`` 6; RST ``lam`` 1; GR ``lam`` 1, ``h`` 1.0; LLR ``lam`` 4, ``mu`` 3, 2 steps of eps / 2; inner
            searches 10 steps of ``2 eps / steps``).

    Returns:
        A frozen :class:`Method`, called as ``method(model, x, y) -> scalar loss`` (a mean over the batch).

    Raises:
        ValueError: an unknown name or hyperparameter, or a value out of range.

    Example:
        >>> make_method("trades", eps=0.1, beta=6).settings()["beta"]
        6.0
    """
    cls = METHODS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    bad = sorted(set(hyper) - set(fields))
    if bad:
        raise ValueError(f"method {cls.name!r} has no hyperparameter {', '.join(bad)}; valid: "
                         f"{', '.join(fields) or '(none)'}")
    return cls(**hyper)


# ----------------------------------------------------------------------------------------------
# augmentation


#: Augmentations by name: ``crop-flip`` is the reference's ``aug01`` (CIFAR-10 Table 4 rows): random crop
#: after 4 px zero padding + horizontal flip; ``crop8`` its Restricted ImageNet training transform:
#: random crop after 8 px padding, no flip.
AUGMENTATIONS: dict[str, dict[str, Any]] = {"crop-flip": {"pad": 4, "flip": True}, "crop8": {"pad": 8, "flip": False}}


def augment_batch(x: torch.Tensor, *, pad: int = 4, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, vectorised on ``x``'s device."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    out = padded.permute(0, 2, 3, 1)[torch.arange(n, device=x.device)[:, None, None], rows, cols]
    out = out.permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, generator=generator, device=x.device) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out.contiguous()
