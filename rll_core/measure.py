"""One measurement of a classifier on points, the room every floor above the kernels goes through.

* :func:`measure_points` - per point, the clean verdict and each attack's (with accuracies, n and 95 % Wilson
  intervals), and the local Lipschitz values of each procedure (with mean and standard error), every random
  stream seeded on the model's device.
* :func:`measure_splits` - the same on the train and test points of a table row, with the gaps.
* :func:`sweep_radii` - the paper's PGD at every radius of a grid (radius 0: the clean verdicts).

:func:`rll_core.runs.evaluate_run`, :func:`rll_core.runs.robustness_curve`, the Section 4 row
(:func:`rll_core.section4.theory_row`) and the robustness card (:func:`rll_core.card.robustness_card`) call
these; nothing else attacks a dataset or estimates its Lipschitz constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .checks import check_radii, model_device
from .data import ImageDataset
from .evaluation import AttackSpec, evaluate, paper_attack
from .lipschitz import PROCEDURES, local_lipschitz
from .stats import standard_error, wilson_interval

__all__ = ["Measurement", "add_worst_case", "lipschitz_curve", "measure_points", "measure_splits", "sweep_radii",
           "worst_case"]


@dataclass
class Measurement:
    """What :func:`measure_points` found on ``n`` points.

    ``verdicts``: per point, ``clean`` (correctly classified) and, per attack name, robust (correct and not
    broken); ``attacks``: each attack's full settings; ``lipschitz``: per procedure the local Lipschitz value of
    every point; ``inputs``: where asked, per point the input in the ball that attains the ascent's value.
    """

    n: int
    verdicts: dict[str, np.ndarray]
    attacks: dict[str, dict[str, Any]]
    lipschitz: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: np.ndarray | None = None

    def accuracy(self, name: str = "clean") -> float:
        """The fraction of points whose ``name`` verdict is true (``clean`` or an attack's name)."""
        return float(self.verdicts[name].mean())

    def interval(self, name: str = "clean") -> list[float]:
        """The 95 % Wilson interval of :meth:`accuracy` (NaN for no points)."""
        return [float(v) for v in wilson_interval(self.accuracy(name), self.n)] if self.n else [math.nan, math.nan]

    def lipschitz_mean(self, procedure: str = "ascent") -> float:
        """The mean local Lipschitz value of ``procedure`` over the points (summed in float64)."""
        return float(np.mean(self.lipschitz[procedure], dtype=np.float64))

    def lipschitz_se(self, procedure: str = "ascent") -> float:
        """The standard error of :meth:`lipschitz_mean` (sample standard deviation / sqrt(n); 0 for one point)."""
        return standard_error(self.lipschitz[procedure])


def measure_points(model: nn.Module, x: torch.Tensor, y: np.ndarray | torch.Tensor, *, eps: float,
                   attacks: Sequence[AttackSpec | str] = (), lipschitz: Sequence[str] = (), lipschitz_steps: int = 10,
                   seed: int = 0, batch_size: int | None = None, precision: str = "auto", progress: bool = False,
                   return_inputs: bool = False) -> Measurement:
    """Attack ``(x, y)`` and estimate its local Lipschitz constants: the one measurement of the package.

    Args:
        model: any classifier returning logits ``(N, classes)``, on the device where the work runs.
        x: images ``(N, C, H, W)`` in [0, 1] (uint8 pixels are divided by 255).
        y: integer labels ``(N,)``.
        eps: the L-inf radius of the attacks and the Lipschitz ball, in (0, 1] (0 only with neither).
        attacks: :class:`~rll_core.evaluation.AttackSpec` objects or names (the paper's settings at ``eps``);
            default none (clean verdicts only).
        lipschitz: procedures of :func:`~rll_core.lipschitz.local_lipschitz` (``"ascent"``, ``"reference"``);
            default none.
        lipschitz_steps: ascent steps of each procedure (default 10).
        seed: every attack's stream (:func:`~rll_core.evaluation.attack_generator`) and each Lipschitz
            procedure's generator, seeded on the model's device (default 0).
        batch_size: images per batch (default :func:`rll_core.checks.default_batch_size` of the model's device).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:mod:`rll_core.precision`); verdicts are fp32.
        progress: progress bars (default False).
        return_inputs: keep the inputs that attain the ascent's values (needs ``"ascent"`` in ``lipschitz``).

    Returns:
        A :class:`Measurement`.

    Raises:
        ValueError: a bad radius, attack, procedure or batch size, images outside [0, 1], labels the model cannot
            output, ``return_inputs`` without the ascent.

    Example:
        >>> m = measure_points(model, x, y, eps=0.1, attacks=["pgd"], lipschitz=["ascent"])  # doctest: +SKIP
        >>> m.accuracy("pgd"), m.interval("pgd"), m.lipschitz_mean(), m.lipschitz_se()  # doctest: +SKIP
    """
    if return_inputs and "ascent" not in lipschitz:
        raise ValueError("return_inputs needs the ascent among the Lipschitz procedures")
    r = evaluate(model, x, y, eps=eps, attacks=list(attacks), seed=seed, batch_size=batch_size, progress=progress,
                 precision=precision)
    m = Measurement(n=r.n, verdicts=dict(r.correct), attacks=dict(r.attacks))
    dev = model_device(model)
    for proc in lipschitz:
        how: dict[str, Any] = {"eps": eps, "steps": lipschitz_steps, "procedure": proc, "batch_size": r.batch_size,
                               "precision": precision, "progress": progress,
                               "generator": torch.Generator(device=dev).manual_seed(seed)}
        if return_inputs and proc == "ascent":
            values, inputs = local_lipschitz(model, x, return_inputs=True, **how)
            m.inputs = inputs.numpy()
        else:
            values = local_lipschitz(model, x, **how)
        m.lipschitz[proc] = values.numpy()
    return m


def lipschitz_curve(model: nn.Module, x: torch.Tensor, radii: Sequence[float], *, steps: int = 10,
                    restarts: int = 1, seed: int = 0, batch_size: int | None = None, progress: bool = False,
                    precision: str = "auto") -> torch.Tensor:
    """The ascent's local Lipschitz estimate at several radii, never falling as the radius grows.

    The true constant cannot fall as the ball grows (a larger ball holds the smaller), but one ascent per radius can:
    its steps grow with the radius and can leave the region where the ratio is largest (on `quick` MNIST models
    between eps 0.01 and 0.02 it fell on up to 87 % of the points, docs/evaluation.md).  Here the radii are searched
    from the smallest up, and the value at a radius is the largest ratio attained by the searches in every ball up to
    it: each was attained at a point of that ball, so it is still a ratio met there, a lower bound of the constant.

    Args:
        model: any classifier returning logits.
        x: images ``(N, C, H, W)`` in [0, 1] (uint8 pixels are divided by 255).
        radii: L-inf radii in (0, 1], distinct, in any order (the result's columns follow the ascending order).
        steps, restarts, batch_size, progress, precision: as for :func:`~rll_core.lipschitz.local_lipschitz` (its
            default step ``2 eps / steps`` at each radius).
        seed: each radius's ascent draws its starts from a generator seeded with ``seed`` on the model's device, so a
            column is never below :func:`~rll_core.lipschitz.local_lipschitz` at its radius with that generator
            (default 0).

    Returns:
        A float tensor ``(N, R)`` on the CPU, columns in ascending radius, non-decreasing along each row.

    Raises:
        ValueError: no radius, a radius outside (0, 1] or named twice; whatever
            :func:`~rll_core.lipschitz.local_lipschitz` refuses.

    Example:
        >>> lip = lipschitz_curve(model, x_test[:100], [0.01, 0.02, 0.05, 0.1])  # doctest: +SKIP
        >>> bool((lip.diff(dim=1) >= 0).all())  # doctest: +SKIP
        True
    """
    radii = check_radii(radii)
    dev = model_device(model)
    columns = [local_lipschitz(model, x, eps=e, steps=steps, restarts=restarts, batch_size=batch_size,
                               progress=progress, precision=precision,
                               generator=torch.Generator(device=dev).manual_seed(seed)) for e in radii]
    return torch.stack(columns, 1).cummax(1).values


def worst_case(verdicts: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Per point, robust under every attack of ``verdicts`` (``clean`` aside): a point is robust only if no attack
    broke it.  None with fewer than two attacks (the one attack's verdicts are the worst case then).

    Example:
        >>> worst_case({"clean": np.array([1, 1, 0], bool), "pgd": np.array([1, 0, 0], bool),
        ...             "multitarget": np.array([0, 0, 0], bool)}).tolist()
        [False, False, False]
    """
    attacks = [np.asarray(v, bool) for k, v in verdicts.items() if k != "clean"]
    return np.logical_and.reduce(attacks) if len(attacks) >= 2 else None


def add_worst_case(row: dict[str, Any], arrays: Mapping[str, np.ndarray], splits: Sequence[str]) -> dict[str, Any]:
    """``row`` with ``<split>_worst_accuracy`` for every split evaluated with two or more attacks (from the
    per-point ``<split>_<attack>`` arrays), as measured or as read back from an older evaluation file."""
    for split in splits:
        per = {k[len(split) + 1:]: v for k, v in arrays.items()
               if k.startswith(f"{split}_") and "lipschitz" not in k and not k.endswith("_worst")}
        w = worst_case(per)
        if w is not None:
            row[f"{split}_worst_accuracy"] = float(w.mean())
    return row


def measure_splits(row: dict[str, Any], net: nn.Module, splits: Mapping[str, ImageDataset],
                   specs: Mapping[str, Sequence[AttackSpec]], ev: Mapping[str, Any], seed: int, progress: bool,
                   dtype: torch.dtype = torch.float32,
                   lipschitz: Sequence[str] | Mapping[str, Sequence[str]] = PROCEDURES) -> dict[str, np.ndarray]:
    """A table row's numbers: fill ``row`` with each split's accuracies and Lipschitz means (and the gaps when both
    splits are measured); return the per-point arrays (``<split>_<verdict>``, ``<split>_lipschitz[_reference]``).

    ``specs``: the attacks of each split; ``ev``: the evaluation's ``n_eval`` (the first points of each split),
    ``eps``, ``lipschitz_steps``, ``batch_size`` and ``precision``; ``lipschitz``: the procedures, or the procedures
    of each split (the reference procedure starts outside [0, 1], which only a network accepts).
    """
    arrays: dict[str, np.ndarray] = {}
    row["attack_settings"] = {}
    for split, ds in splits.items():
        sub = ds.subset(ev["n_eval"], seed=None)
        procs = list(lipschitz[split] if isinstance(lipschitz, Mapping) else lipschitz)
        m = measure_points(net, torch.from_numpy(sub.float_images()).to(dtype), sub.labels, eps=ev["eps"],
                           attacks=specs[split], lipschitz=procs, lipschitz_steps=ev["lipschitz_steps"], seed=seed,
                           batch_size=ev["batch_size"], precision=ev.get("precision", "fp32"), progress=progress)
        row[f"{split}_n"] = m.n
        row[f"{split}_accuracy"] = m.accuracy()
        for name, verdict in m.verdicts.items():
            arrays[f"{split}_{name}"] = verdict
            if name != "clean":
                row[f"{split}_{name}_accuracy"] = m.accuracy(name)
        for proc in procs:
            suffix = "" if proc == "ascent" else f"_{proc}"
            arrays[f"{split}_lipschitz{suffix}"] = m.lipschitz[proc]
            row[f"{split}_lipschitz{suffix}"] = m.lipschitz_mean(proc)
            row[f"{split}_lipschitz{suffix}_se"] = m.lipschitz_se(proc)
        row["attack_settings"].update(m.attacks)
    add_worst_case(row, arrays, list(splits))
    if set(splits) != {"train", "test"}:
        return arrays
    row["gap_standard"] = row["train_accuracy"] - row["test_accuracy"]
    if specs["train"]:  # the first attack run on both splits (PGD in every table)
        first = specs["train"][0].name
        row["gap_adversarial"] = row[f"train_{first}_accuracy"] - row[f"test_{first}_accuracy"]
    return arrays


def sweep_radii(model: nn.Module, x: torch.Tensor, y: np.ndarray | torch.Tensor, radii: Sequence[float], *,
                seed: int = 0, batch_size: int | None = None, precision: str = "auto") -> list[np.ndarray]:
    """Per radius of ``radii``, each point's verdict under the paper's PGD there (radius 0: the clean verdict).

    PGD's stream is ``seed`` at every radius, so at an evaluation's radius the sweep repeats its PGD verdicts
    point for point (same ``batch_size``).

    Example:
        >>> [v.mean() for v in sweep_radii(model, x, y, [0, 0.05, 0.1])]  # doctest: +SKIP
    """
    out = []
    for e in radii:
        m = measure_points(model, x, y, eps=e, attacks=[paper_attack("pgd", e)] if e > 0 else [], seed=seed,
                           batch_size=batch_size, precision=precision)
        out.append(m.verdicts["pgd" if e > 0 else "clean"])
    return out
