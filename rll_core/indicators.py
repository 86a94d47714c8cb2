"""Is my evaluation broken?  Indicators that an attack failed (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"; Pintor et al. 2022, "Indicators of Attack Failure"), each measured on a model with its evidence and
a verdict, ``ok`` or ``warning``.

Gradient regularization and LLR smooth the loss locally, which can hide adversarial examples from gradient
attacks rather than remove them; a table's PGD accuracy says nothing about that.  :func:`attack_indicators` runs,
on the first ``n`` points:

* ``unbounded``: the paper's PGD-10 at radius :data:`UNBOUNDED_EPS` (0.5 on [0, 1] images: a ball that holds a mid-grey image
  between any two images) must bring accuracy to about 0 (warning above :data:`UNBOUNDED_MAX`);
* ``more effort``: PGD with :data:`STRONG_STEPS` steps and :data:`STRONG_RESTARTS` restarts must not lower accuracy
  by more than the 95 % Wilson half-width of the default PGD-10's on the same points (else the default was too weak);
* ``masked gradients``: the fraction of correctly classified points whose input gradient of the cross-entropy is
  exactly 0 (a non-differentiable or saturated model) must stay below :data:`MASKED_MAX`;
* ``gradient-free``: Square (:func:`rll_core.attacks.square`, :data:`SQUARE_QUERIES` queries), run on the points
  both PGDs left robust, must break at most :data:`GRADIENT_FREE_MAX` of the points (a gradient-free attack is
  weaker than PGD on a sound model, and finds what hidden gradients kept from PGD on a masked one);
* ``monotone in eps`` (given a robustness curve): accuracy must not rise from one radius to a larger one by more
  than the 95 % Wilson half-width at its n (a larger ball holds the smaller).

Two failures of Pintor et al. need no indicator here: a *silent success* (an attack reporting a point broken whose
returned input the model still classifies correctly) cannot happen, since every verdict of
:func:`rll_core.evaluation.evaluate` is a fresh fp32 forward of the returned input; an *incomplete optimisation*
(the loss still rising at the last step) is measured by its consequence, ``more effort``.

:func:`run_indicators` runs them on a run folder's first test points and stores them beside its evaluations
(``checks-*.json``); :func:`indicator_summary` is the one-line verdict a table shows.  Every attack goes through
:mod:`rll_core.measure` or :mod:`rll_core.attacks`; nothing here is a second measurement.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._search import eval_mode, predict
from .attacks import square
from .checks import as_float_images, as_model_dtype, check_int, default_batch_size, model_device
from .evaluation import ATTACKS, AttackSpec, paper_attack
from .measure import measure_points
from .stats import wilson_interval
from .storage import load_json, save_json

__all__ = ["GRADIENT_FREE_MAX", "INDICATORS", "MASKED_MAX", "SQUARE_QUERIES", "STRONG_RESTARTS", "STRONG_STEPS", "UNBOUNDED_EPS",
           "UNBOUNDED_MAX", "attack_indicators", "checks_description", "indicator_summary", "monotone_indicator", "run_indicators"]

#: The indicators in the order they are measured and shown (``monotone in eps`` only beside a robustness curve).
INDICATORS = ("unbounded", "more effort", "masked gradients", "gradient-free", "monotone in eps")

#: the unbounded attack's radius on [0, 1] images, and the accuracy above which it has failed
UNBOUNDED_EPS, UNBOUNDED_MAX = 0.5, 0.05
#: the stronger PGD's steps (each 2 eps / steps) and random restarts: 10 times PGD-10's gradient steps
STRONG_STEPS, STRONG_RESTARTS = 50, 2
#: the share of correctly classified points with an exactly zero input gradient above which gradients are masked
MASKED_MAX = 0.1
#: Square's queries per point (AutoAttack's standard version: 5000; each query a forward pass, so 100 queries cost
#: about what PGD-33 does: the indicators' budget, docs/evaluation.md)
SQUARE_QUERIES = 100
#: the share of the points Square may break after both PGDs (2 of 50): more is a gradient attack that failed
GRADIENT_FREE_MAX = 0.04


def _half_width(acc: float, n: int) -> float:
    lo, hi = wilson_interval(acc, n)
    return (hi - lo) / 2


def _verdict(name: str, warn: bool, value: float, limit: float, n: int, evidence: Mapping[str, Any],
             text: str) -> dict[str, Any]:
    return {"indicator": name, "verdict": "warning" if warn else "ok", "value": float(value), "limit": float(limit),
            "n": int(n), "evidence": dict(evidence), "text": text}


def monotone_indicator(eps: Sequence[float], accuracy: Sequence[float], n: int) -> dict[str, Any]:
    """``monotone in eps`` on a robustness curve: the largest rise of accuracy from one radius to the next against
    the 95 % Wilson half-width at that accuracy and ``n``.

    Example:
        >>> monotone_indicator([0.0, 0.1, 0.2], [0.9, 0.5, 0.8], 100)["verdict"]
        'warning'
    """
    rises = [(float(accuracy[i + 1] - accuracy[i]), i) for i in range(len(accuracy) - 1)]
    worst, i = max(rises, default=(0.0, 0))
    limit = _half_width(float(accuracy[i]), n) if rises else 0.0
    return _verdict("monotone in eps", worst > limit, worst, limit, n,
                    {"eps": [float(e) for e in eps], "accuracy": [float(a) for a in accuracy]},
                    f"largest rise {worst:+.3f} between eps {eps[i]:g} and {eps[i + 1]:g}" if rises else "one radius")


def _masked_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, int]:
    """The share of correctly classified points whose input gradient of the cross-entropy is exactly 0."""
    dev = model_device(model)
    zero = total = 0
    with eval_mode(model):
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size].to(dev).detach().requires_grad_(True)
            yb = y[s:s + batch_size].to(dev).long()
            with torch.enable_grad():
                logits = model(xb)
                ok = logits.argmax(1) == yb
                (g,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xb)
            flat = g.flatten(1)[ok]
            zero += int((flat.abs().amax(1) == 0).sum())
            total += int(ok.sum())
    return (zero / total if total else 0.0), total


def _gradient_free(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, robust: np.ndarray, eps: float, seed: int,
                   m: int, precision: str) -> dict[str, Any]:
    """Square on the points both PGDs left robust: how many it breaks, as a share of the ``m`` points."""
    limit = GRADIENT_FREE_MAX
    idx = np.flatnonzero(robust)
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return {"indicator": "gradient-free", "verdict": "not run", "value": float("nan"), "limit": float(limit),
                "n": int(m), "evidence": {}, "text": "Square needs torchattacks (make setup installs it)"}
    broken: list[int] = []
    if len(idx):
        dev = model_device(model)
        xb = as_model_dtype(xs[idx], model).to(dev)
        yb = ys[idx].to(dev).long()
        x_adv = square(model, xb, yb, eps=eps, n_queries=SQUARE_QUERIES, seed=seed, validate=False,
                       precision=precision)  # the search's forwards in bf16 where the machine has it; verdicts fp32
        broken = idx[(predict(model, x_adv) != yb).cpu().numpy()].tolist()
    share = len(broken) / m if m else 0.0
    return _verdict("gradient-free", share > limit, share, limit, m,
                    {"queries": SQUARE_QUERIES, "attacked": int(len(idx)), "broken_only_by_square": broken},
                    f"Square ({SQUARE_QUERIES} queries) breaks {len(broken)} of the {len(idx)} points both PGDs "
                    "left robust")


def attack_indicators(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, eps: float,
                      n: int = 50, seed: int = 0, batch_size: int | None = None, precision: str = "auto",
                      attack: AttackSpec | None = None, curve: Mapping[str, Any] | None = None
                      ) -> list[dict[str, Any]]:
    """The attack-failure indicators of ``model`` at radius ``eps`` on the first ``n`` points of ``(x, y)``.

    Args:
        model: any classifier returning logits.
        x: images ``(N, C, H, W)`` in [0, 1] (uint8 pixels are divided by 255).
        y: integer labels ``(N,)``.
        eps: the evaluation's radius, in (0, 1].
        n: the points the indicators run on (default 50; on the quick grid about a third of an evaluation's time).
        seed: the attacks' seed (default 0).
        batch_size: images per batch (default the device's).
        precision: of the attacks' gradient steps (verdicts in fp32).
        attack: the evaluation's PGD whose strength ``more effort`` checks (default the paper's PGD-10 at ``eps``).
        curve: a robustness curve (``eps``, ``accuracy``, ``n``, as :func:`rll_core.runs.robustness_curve` returns)
            for ``monotone in eps`` (default none).

    Returns:
        One dict per indicator, in the order of :data:`INDICATORS`: ``indicator``, ``verdict`` (``ok``,
        ``warning``, or ``not run`` for Square without torchattacks), ``value``, ``limit``, ``n``, ``evidence``
        (the numbers and points behind it) and a one-line ``text``.

    Raises:
        ValueError: a bad radius, ``n``, attack or input.

    Example:
        >>> [i["verdict"] for i in attack_indicators(model, x, y, eps=0.1)]  # doctest: +SKIP
        ['ok', 'ok', 'ok', 'ok']
    """
    check_int("n", n)
    if attack is not None and (attack.name != "pgd" or attack.eps != eps):
        raise ValueError(f"attack must be a PGD at eps {eps:g}, got {attack.name} at eps {attack.eps:g}")
    xs, ys = as_float_images(x)[:n], torch.as_tensor(y)[:n]
    kw: dict[str, Any] = {"seed": seed, "batch_size": batch_size, "precision": precision}
    base = measure_points(model, xs, ys, eps=eps, attacks=[attack or paper_attack("pgd", eps)], **kw)
    m = base.n
    out = []
    ub = measure_points(model, xs, ys, eps=UNBOUNDED_EPS, attacks=[paper_attack("pgd", UNBOUNDED_EPS)], **kw)
    acc = ub.accuracy("pgd")
    left = np.flatnonzero(ub.verdicts["pgd"]).tolist()
    out.append(_verdict("unbounded", acc > UNBOUNDED_MAX, acc, UNBOUNDED_MAX, m,
                        {"eps": UNBOUNDED_EPS, "steps": ATTACKS["pgd"], "robust_points": left},
                        f"PGD-{ATTACKS['pgd']} at eps {UNBOUNDED_EPS:g} leaves {acc:.3f} ({len(left)} of {m}) robust"))
    # the stronger PGD attacks only the points the evaluation's left robust (it cannot lower accuracy elsewhere)
    kept = np.flatnonzero(base.verdicts["pgd"])
    both = base.verdicts["pgd"].copy()
    if len(kept):
        strong = measure_points(model, xs[kept], ys[kept], eps=eps, attacks=[
            paper_attack("pgd", eps, steps=STRONG_STEPS, restarts=STRONG_RESTARTS)], **kw)
        both[kept] = strong.verdicts["pgd"]
    drop = base.accuracy("pgd") - float(both.mean())
    limit = _half_width(base.accuracy("pgd"), m)
    only = np.flatnonzero(base.verdicts["pgd"] & ~both).tolist()
    out.append(_verdict("more effort", drop > limit, drop, limit, m,
                        {"base": base.accuracy("pgd"), "strong": float(both.mean()), "steps": STRONG_STEPS,
                         "restarts": STRONG_RESTARTS, "broken_only_by_strong": only},
                        f"PGD-{STRONG_STEPS} x {STRONG_RESTARTS} restarts lowers the evaluation's PGD accuracy "
                        f"{base.accuracy('pgd'):.3f} by {drop:+.3f}"))
    share, k = _masked_share(model, xs, ys, batch_size or default_batch_size(model_device(model)))
    out.append(_verdict("masked gradients", share > MASKED_MAX, share, MASKED_MAX, k, {"correct_points": k},
                        f"{share:.0%} of {k} correctly classified points have an input gradient of exactly 0"))
    out.append(_gradient_free(model, xs, ys, both, eps, seed, m, precision))
    if curve is not None:
        out.append(monotone_indicator(curve["eps"], curve["accuracy"], int(curve["n"])))
    return out


def checks_description() -> str:
    """What the indicators ask, in one sentence for a caption (from this module's constants)."""
    return (f"PGD-{ATTACKS['pgd']} at ε = {UNBOUNDED_EPS:g} must leave at most {UNBOUNDED_MAX:.0%} of the points robust; PGD-{STRONG_STEPS} "
            f"with {STRONG_RESTARTS} restarts must not break more points than the 95 % interval of PGD's accuracy, "
            f"Square ({SQUARE_QUERIES} queries, gradient-free) at most {GRADIENT_FREE_MAX:.0%} of them; at most {MASKED_MAX:.0%} of the points may have an "
            "input gradient of exactly 0; accuracy must not rise with ε; 'ok', or the checks that warn")


def indicator_summary(indicators: Sequence[Mapping[str, Any]]) -> str:
    """One line for a table: ``ok`` when every indicator is, else ``warning: <names>`` (``not run`` ones named
    after a semicolon); the indicators of several seeds of one method name each warning once.

    Example:
        >>> indicator_summary([{"indicator": "unbounded", "verdict": "ok"},
        ...                    {"indicator": "masked gradients", "verdict": "warning"}])
        'warning: masked gradients'
    """
    warn = list(dict.fromkeys(i["indicator"] for i in indicators if i["verdict"] == "warning"))  # once each (seeds)
    skipped = list(dict.fromkeys(i["indicator"] for i in indicators if i["verdict"] == "not run"))
    text = f"warning: {', '.join(warn)}" if warn else "ok"
    return text + (f"; not run: {', '.join(skipped)}" if skipped else "")


def run_indicators(out_dir: str | os.PathLike[str], *, n: int = 50, checkpoint: str = "last", eps: float | None = None,
                   curve: Mapping[str, Any] | None = None, data_dir: str | os.PathLike[str] | None = None,
                   device: str = "auto", precision: str = "auto") -> list[dict[str, Any]]:
    """:func:`attack_indicators` of a run folder's model on its first ``n`` test points, at the run's eps (or
    ``eps``) and seed, stored as ``checks-<checkpoint>-e<epoch>-eps<eps>-n<n>-<digest>.json`` beside its
    evaluations (each setting its own file; a finished one is read back).  ``curve``'s ``monotone in eps`` is
    added on every call (it costs nothing).

    Args:
        out_dir: a folder written by :func:`rll_core.runs.train_run` or ``rll train``.
        n: test points (default 50).
        checkpoint: ``"last"`` or ``"best"``.
        eps: the radius in (0, 1] (default the run's).
        curve: the run's robustness curve (:func:`rll_core.runs.robustness_curve`), or None.
        data_dir: where the run's data is (default where it was trained from).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``: of the attacks' steps (verdicts in fp32).

    Returns:
        The indicators (see :func:`attack_indicators`).

    Raises:
        ValueError: a bad argument; RunMismatchError: no finished run, or other data than it was trained on.

    Example:
        >>> indicator_summary(run_indicators("runs/gr"))  # doctest: +SKIP
        'ok'
    """
    from .runs import eval_stem, run_points

    rp = run_points(out_dir, n, checkpoint=checkpoint, eps=eps, data_dir=data_dir, device=device, precision=precision)
    ev_eps = rp.record["eps"]
    record: dict[str, Any] = {**rp.record, "attack": paper_attack("pgd", ev_eps).record(),
                              "unbounded": {"eps": UNBOUNDED_EPS, "max": UNBOUNDED_MAX, "steps": ATTACKS["pgd"]},
                              "strong": [STRONG_STEPS, STRONG_RESTARTS], "masked_max": MASKED_MAX,
                              "square": {"queries": SQUARE_QUERIES, "max": GRADIENT_FREE_MAX, "search": "run precision"}}
    path = rp.folder / f"{eval_stem(record, rp.epoch, 'checks')}.json"
    if path.exists():
        found = list(load_json(path)["indicators"])
    else:
        sub, net = rp.load()
        found = attack_indicators(net, torch.from_numpy(sub.float_images()), sub.labels, eps=ev_eps, n=n,
                                  seed=rp.settings["seed"], batch_size=record["batch_size"], precision=rp.precision)
        save_json(path, {"run": rp.folder.name, "method": rp.settings.get("method"), "epoch": rp.epoch,
                         "checks": record, "indicators": found})
    return found + ([monotone_indicator(curve["eps"], curve["accuracy"], int(curve["n"]))] if curve else [])
