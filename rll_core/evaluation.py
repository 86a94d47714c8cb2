"""Dataset-level robust accuracy: the paper's evaluation attacks by name, and :func:`evaluate`.

* :class:`AttackSpec` - an attack's full settings (checked at construction: unknown names, eps outside
  [0, 1] and bad step counts are refused), stored beside every number it produced.
* :func:`paper_attack` - the paper's setting of an attack at a radius (PGD-10, multi-targeted 20 steps per
  target, each step 2 eps / steps).
* :func:`evaluate` - clean accuracy and accuracy under each attack over a dataset, in batches, with the
  per-example verdicts.  The attacks themselves are plain functions in :mod:`rll_core.attacks`.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._search import num_classes_of, predict
from .attacks import autoattack, multi_targeted, pgd
from .checks import (
    as_float_images,
    as_model_dtype,
    check_eps,
    check_images,
    check_int,
    check_labels,
    default_batch_size,
    model_device,
)
from .paper import step_size as paper_step_size
from .precision import model_layout, resolve_precision
from .progress import progress_bar
from .stats import wilson_interval, with_wilson

__all__ = ["ATTACKS", "AttackSpec", "EvalResult", "attack_generator", "evaluate", "paper_attack", "predict"]


@dataclass(frozen=True)
class AttackSpec:
    """An attack's full settings, stored beside every number it produced."""

    name: str
    eps: float
    steps: int
    step_size: float
    restarts: int = 1
    random_start: bool = True
    #: PGD's any-iterate mode (:func:`rll_core.attacks.pgd`'s ``stop_when_fooled``): a point leaves the search at the
    #: first iterate that fools it.  Off by default: the paper's verdict is the last iterate's.
    stop_when_fooled: bool = False

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; valid: {', '.join(ATTACKS)}")
        check_eps(self.eps, self.step_size, self.steps)
        check_int("restarts", self.restarts)
        if self.name != "pgd" and self.restarts != 1:
            raise ValueError(f"restarts apply to pgd only, got {self.restarts} for {self.name!r}")
        if self.name != "pgd" and self.stop_when_fooled:
            raise ValueError(f"stop_when_fooled applies to pgd only (the multi-targeted attack stops at a point's first "
                             f"success whenever only accuracy is asked), got it for {self.name!r}")
        if self.name == "autoattack" and importlib.util.find_spec("torchattacks") is None:  # refused before any work
            raise ValueError("AutoAttack needs torchattacks: pip install --no-deps torchattacks==3.5.1 "
                             "(make setup installs it)")
        # plain Python numbers, so the settings stored beside a result are JSON and compare equal
        for k in ("eps", "step_size"):
            object.__setattr__(self, k, float(getattr(self, k)))
        for k in ("steps", "restarts"):
            object.__setattr__(self, k, int(getattr(self, k)))
        object.__setattr__(self, "stop_when_fooled", bool(self.stop_when_fooled))

    def record(self) -> dict[str, Any]:
        """The settings stored beside a result (and digested into its file name): every field, the any-iterate mode
        only where it is on, so a record of the paper's PGD reads as it always has."""
        d = asdict(self)
        if not d["stop_when_fooled"]:
            d.pop("stop_when_fooled")
        return d

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator | None, *, for_accuracy: bool = False, precision: str = "auto") -> torch.Tensor:
        """The attack on a batch.  ``for_accuracy``: the caller only asks which points are fooled and
        has checked the inputs (no per-batch checks; the multi-targeted attack stops attacking a point
        once it is fooled).  ``precision``: of PGD's and the multi-targeted attack's gradient steps
        (:mod:`rll_core.precision`); AutoAttack runs torchattacks' code in fp32."""
        if self.name == "autoattack":  # its own seeds, drawn from the evaluation's stream
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=x.device)) if generator else 0
            return autoattack(model, x, y, eps=self.eps, steps=self.steps, seed=seed, validate=not for_accuracy)
        if self.name == "pgd":
            return pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                       random_start=self.random_start, restarts=self.restarts, generator=generator,
                       stop_when_fooled=self.stop_when_fooled, validate=not for_accuracy, precision=precision)
        return multi_targeted(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                              random_start=self.random_start, generator=generator, stop_when_fooled=for_accuracy,
                              validate=not for_accuracy, precision=precision)


#: The evaluation attacks and their step counts: the paper's PGD-10 and multi-targeted 20 steps per target,
#: each step 2 eps / steps (:func:`rll_core.paper.step_size`); and AutoAttack (standard, 100 iterations per
#: attack, step sizes its own: APGD starts at 2 eps), which the paper predates (needs torchattacks).
ATTACKS: dict[str, int] = {"pgd": 10, "multitarget": 20, "autoattack": 100}


def attack_generator(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The random-number stream of attack ``name`` in an evaluation seeded with ``seed``: PGD's is
    ``seed`` itself, every other attack's a stream mixed from ``seed`` and the attack's place in
    :data:`ATTACKS` (so no two attacks of one evaluation share draws)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    k = list(ATTACKS).index(name)
    mixed = seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(mixed)


def paper_attack(name: str, eps: float, **overrides: Any) -> AttackSpec:
    """The paper's setting of attack ``name`` at radius ``eps`` (fields overridable)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    check_eps(eps)
    eps = float(eps)  # a numpy float32 radius would make its step size inexact (2 * 0.25 / 10 = 0.0500000007)
    bad = set(overrides) - set(AttackSpec.__dataclass_fields__)
    if bad:
        raise ValueError(f"unknown attack settings {sorted(bad)}; valid: steps, step_size, restarts, random_start, "
                         "stop_when_fooled")
    steps = overrides.pop("steps", ATTACKS[name])
    check_eps(eps, None, steps)
    step_size = overrides.pop("step_size", None)
    if step_size is None:  # AutoAttack's APGD adapts its step from 2 eps; the record says so
        step_size = 2 * eps if name == "autoattack" else paper_step_size(eps, steps)
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
    #: the batch size the attacks ran at (the random starts are drawn per batch)
    batch_size: int = 0
    #: the precision of the attacks' gradient steps (``fp32`` or ``bf16``; every verdict is fp32)
    precision: str = "fp32"
    correct: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-example verdicts left out)."""
        d = asdict(self)
        d.pop("correct")
        return d

    def interval(self, name: str = "clean") -> tuple[float, float]:
        """The 95 % Wilson interval of the clean accuracy or of attack ``name``'s accuracy on the ``n`` points."""
        acc = self.clean_accuracy if name == "clean" else self.adversarial_accuracy[name]
        return wilson_interval(acc, self.n)

    def worst_case(self) -> float | None:
        """The fraction of points no attack fooled (each point's worst case over the attacks: at most every attack's
        accuracy); None with fewer than two attacks or without the per-point verdicts (a result read from JSON)."""
        names = list(self.adversarial_accuracy)
        if len(names) < 2 or any(a not in self.correct for a in names):
            return None
        return float(np.logical_and.reduce([np.asarray(self.correct[a], bool) for a in names]).mean())

    def summary(self) -> str:
        """One line a reader takes as it is: ``n = 500: clean 0.912 [0.884, 0.934], pgd 0.730 [0.690, 0.767],
        multitarget 0.702 [...], worst case 0.698 [...]`` (95 % Wilson intervals; the worst case over the attacks
        where two or more ran), and the bf16 note where the attacks' steps were bf16."""
        worst = self.worst_case()
        shown = [("clean", self.clean_accuracy), *self.adversarial_accuracy.items(),
                 *([("worst case", worst)] if worst is not None else [])]
        parts = [f"{k} {with_wilson(a, self.n)}" for k, a in shown]
        note = " (attack steps in bf16, verdicts in fp32)" if self.precision == "bf16" else ""
        return f"n = {self.n}: " + ", ".join(parts) + note

    def __str__(self) -> str:
        return self.summary()


def evaluate(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, eps: float,
             attacks: Sequence[str | AttackSpec] = ("pgd", "multitarget"), batch_size: int | None = None,
             seed: int = 0, compile_model: bool = False, progress: bool = True, precision: str = "auto") -> EvalResult:
    """Clean accuracy and accuracy under each attack on ``(x, y)``, in batches on the model's device.

    Each attack draws its random starts from its own generator (:func:`attack_generator`: ``seed`` and the
    attack's name), so an attack's verdicts do not depend on which other attacks run beside it; they are
    reproducible for one ``batch_size``, which is stored with the result.  Points the model already misclassifies
    count as not robust and are not attacked; the inputs are checked once, not per batch, and floating images
    are cast to the model's dtype.

    Args:
        model: any classifier returning logits ``(N, classes)``.
        x: images ``(N, C, H, W)`` in [0, 1] (uint8 pixels are divided by 255), numpy or torch.
        y: integer labels ``(N,)``.
        eps: the L-inf radius of every named attack, in [0, 1].
        attacks: names of :data:`ATTACKS` (the paper's settings at ``eps``: PGD-10, multi-targeted 9 x 20, and
            AutoAttack standard) or :class:`AttackSpec` objects (default ``("pgd", "multitarget")``).
        batch_size: images per batch (default :func:`rll_core.checks.default_batch_size`: 64 on a CPU, 512 on a GPU).
        seed: the evaluation's seed; PGD's stream is the seed itself (default 0).
        compile_model: attack ``torch.compile(model)`` (equal verdicts up to float rounding; default False).
        progress: show a progress bar (default True).
        precision: ``"auto"`` (default: bf16 gradient steps where the hardware computes bf16 natively), ``"fp32"``
            or ``"bf16"`` (:mod:`rll_core.precision`); every verdict (clean, robust) is an fp32 forward.

    Returns:
        An :class:`EvalResult`: ``n``, ``clean_accuracy``, ``adversarial_accuracy`` per attack (fractions in
        [0, 1]), the ``attacks``' full settings, ``seed``, ``batch_size``, ``seconds`` and the per-example
        verdicts in ``correct`` (bool arrays ``(N,)`` named ``clean`` and by attack).

    Raises:
        ValueError: an unknown attack, a bad radius or batch size, images outside [0, 1], labels the model
            cannot output.

    Example:
        >>> r = evaluate(model, test.images[:500], test.labels[:500], eps=0.1)  # doctest: +SKIP
        >>> r.clean_accuracy, r.adversarial_accuracy["pgd"], r.n  # doctest: +SKIP
    """
    check_eps(eps)
    if isinstance(attacks, str):
        raise ValueError(f"attacks must be a sequence of names, got the string {attacks!r}; write ({attacks!r},)")
    specs = [a if isinstance(a, AttackSpec) else paper_attack(a, eps) for a in attacks]
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("each attack may appear once")
    xt, yt = as_float_images(x), torch.as_tensor(y)
    check_images(xt)
    xt = as_model_dtype(xt, model)
    dev = model_device(model)
    batch_size = default_batch_size(dev) if batch_size is None else check_int("batch_size", batch_size)
    check_labels(yt, len(xt), num_classes_of(model, xt[:1].to(dev)))
    prec = resolve_precision(precision, dev, xt.dtype)
    gens = {s.name: attack_generator(seed, s.name, dev) for s in specs}
    if compile_model:
        model = torch.compile(model)  # type: ignore[assignment]
    t0 = time.perf_counter()
    with model_layout(model, prec):  # bf16: NHWC weights for the whole set, not per batch
        verdicts = _verdicts(model, xt, yt, specs, gens, batch_size, prec, progress)
    return EvalResult(
        n=len(xt), clean_accuracy=float(verdicts["clean"].mean()),
        adversarial_accuracy={s.name: float(verdicts[s.name].mean()) for s in specs},
        attacks={s.name: s.record() for s in specs}, seed=seed, seconds=time.perf_counter() - t0,
        batch_size=batch_size, precision=prec, correct=verdicts)


def _verdicts(model: nn.Module, xt: torch.Tensor, yt: torch.Tensor, specs: Sequence[AttackSpec],
              gens: dict[str, torch.Generator], batch_size: int, precision: str, progress: bool) -> dict[str, np.ndarray]:
    """Per example: clean correct, and robust under each attack (a misclassified point is not robust: only the
    correct ones are attacked), batch by batch; every verdict an fp32 forward."""
    dev = model_device(model)
    correct: dict[str, list[torch.Tensor]] = {"clean": [], **{s.name: [] for s in specs}}
    for s in progress_bar(range(0, len(xt), batch_size), desc="evaluate", disable=not progress, unit="batch"):
        xb, yb = xt[s:s + batch_size].to(dev), yt[s:s + batch_size].to(dev).long()
        ok = predict(model, xb) == yb
        correct["clean"].append(ok.cpu())
        for spec in specs:
            robust = ok.clone()
            if bool(ok.any()):
                x_adv = spec.run(model, xb[ok], yb[ok], gens[spec.name], for_accuracy=True, precision=precision)
                robust[ok] = predict(model, x_adv) == yb[ok]
            correct[spec.name].append(robust.cpu())
    return {k: torch.cat(v).numpy() for k, v in correct.items()}
