"""Runs of Section 5 by name: train one (dataset, architecture, method) into a folder, evaluate it, attack
it at a range of radii, and measure the Section 4 classifier the same way (its table row and curve).  Grids
of runs (Tables 2-4) are :mod:`rll_core.grids`.

A run folder holds ``settings.json`` (everything that produced it), ``last.pt`` / ``best.pt`` and
``history.json`` from :func:`rll_core.training.train`, and ``eval.json`` from :func:`evaluate_run`: train
and test accuracy, PGD and multi-targeted adversarial accuracy, mean empirical local Lipschitz constant on
train and test, and the standard and adversarial generalization gaps, beside the evaluation settings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import paper
from .checks import check_eps, check_int, check_real, default_batch_size, resolve_device
from .data import ImageDataset, check_dataset, is_npz_path, load_train_test
from .evaluation import ATTACKS, AttackSpec, paper_attack
from .lipschitz import PROCEDURES as LIPSCHITZ
from .lipschitz import REFERENCE_STEP_SIZE, check_procedures
from .measure import add_worst_case, measure_splits, sweep_radii
from .methods import METHODS, make_method
from .models import build_model, check_model
from .precision import check_precision, precision_record, resolve_precision
from .storage import (
    array_digest,
    check_writable,
    load_json,
    load_npz,
    save_json,
    save_npz,
    settings_digest,
    user_path,
)
from .training import RunMismatchError, TrainResult, load_checkpoint, train

__all__ = ["RunPoints", "eval_specs", "eval_stem", "evaluate_run", "load_run", "resolve_hyper", "robustness_curve",
           "run_points", "run_settings", "split_specs", "train_run"]


def resolve_hyper(dataset: str, method: str, hyper: Mapping[str, Any] | None, eps: float | None) -> dict[str, Any]:
    """The reference's hyperparameters of ``method`` on ``dataset`` at the run's eps, then the user's."""
    cls = METHODS.get(method.lower())
    if cls is None:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    given = dict(hyper or {})
    run_eps = given.get("eps", eps)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    base = {k: v for k, v in paper.method_hyper(dataset, cls.name, run_eps).items() if k in fields}
    return {**base, **given}


def _build(settings: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """The run's architecture, its initial weights drawn from ``seed`` (the global RNG is left as found)."""
    c, h, _ = settings["input_shape"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(settings["architecture"], in_channels=c, num_classes=settings["num_classes"],
                           image_size=h, dropout=settings.get("dropout"))


def train_run(out_dir: str | os.PathLike[str], *, dataset: str, method: str = "natural",
              hyper: Mapping[str, Any] | None = None, eps: float | None = None, model: str | None = None,
              dropout: float | None = None, augment: str | None = None, epochs: int | None = None,
              batch_size: int | None = None, lr: float | None = None, optimizer: str | None = None,
              milestones: Sequence[int] | None = None, n_train: int | None = None, n_test: int | None = None,
              n_val: int = 500, val_every: int = 1, seed: int = 0, data_dir: str | os.PathLike[str] | None = None,
              device: str = "auto", progress: bool = True, precision: str = "auto") -> TrainResult:
    """Train ``method`` on ``dataset`` into the run folder ``out_dir``; unset settings are the reference's
    (:mod:`rll_core.paper`).

    One eps per run: ``eps`` is the radius the method trains at, validation attacks at and :func:`evaluate_run`
    evaluates at.  The model's initial weights, epoch order and dropout masks come from ``seed``, so one seed gives
    bit-identical runs on one machine and build (another CPU gives other, equally valid, numbers).  A finished or
    interrupted run in ``out_dir`` is resumed; a folder holding another run's settings is refused.  Where the data
    was read from is stored with the run, so evaluating it needs no ``data_dir``.

    Args:
        out_dir: the run folder (``~`` expanded; created).
        dataset: a registry name, or the path of an ``.npz`` of your own (it gets the settings of the paper
            dataset with the same image shape).
        method: one of :data:`rll_core.methods.METHODS` (default ``natural``).
        hyper: the method's hyperparameters over the reference's (e.g. ``{"beta": 3}``).
        eps: the run's radius in [0, 1] (default the paper's for the dataset).
        model: the architecture (default the paper's: cnn001 on MNIST).
        dropout: a rate in [0, 1), or None for the architecture's own.
        augment: ``"crop-flip"``, ``"crop8"`` or None (default the reference's).
        epochs: epochs (default the reference's: 160 on MNIST).
        batch_size: images per step (default the reference's: 64).
        lr: the learning rate of the mean loss (default the reference's, converted).
        optimizer: ``"sgd"`` or ``"adam"`` (default the reference's).
        milestones: epochs after which the rate is divided by 10 (default the reference's ``get_scheduler``).
        n_train: a seeded training subset of this size (default the whole split).
        n_test: a seeded test subset (default the whole split).
        n_val: validation points (default 500).
        val_every: validate after every ``val_every``-th epoch and the last (default 1: every epoch).
        seed: the seed of subsets, initial weights and every random draw (default 0).
        data_dir: where the data is (default ``$RLL_DATA_DIR`` or the installed copy).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        progress: show progress (default True).
        precision: ``"auto"`` (default: bf16 training steps where the hardware computes bf16 natively), ``"fp32"``
            or ``"bf16"`` (:mod:`rll_core.precision`); stored with the run.

    Returns:
        A :class:`~rll_core.training.TrainResult`: per-epoch ``history``, ``best_epoch``, ``out_dir``, ``settings``.

    Raises:
        ValueError: any bad setting or data (one class, splits of two shapes), before the folder is made;
            RunMismatchError: the folder holds another run or more epochs; FolderBusyError: another process trains
            there.

    Example:
        >>> train_run("runs/at", dataset="fashion_mnist", method="at", epochs=5, n_train=10000)  # doctest: +SKIP
    """
    dev = resolve_device(device)
    check_precision(precision)
    name = check_dataset(dataset)
    npz = is_npz_path(name)
    name = str(user_path(name).resolve()) if npz else name
    # data of your own is read first (its shape picks the reference settings); a registry dataset after
    # every setting is checked
    loaded = load_train_test(name, data_dir, n_train, n_test, seed) if npz else None
    key = paper.like(loaded[0].shape) if loaded else name
    ref = paper.SETTINGS[key]
    hp = resolve_hyper(key, method, hyper, eps)
    run_eps = float(hp.get("eps", eps if eps is not None else paper.eps_for(key)))
    check_eps(run_eps)
    m = make_method(method, **hp)
    check_model(model or ref.model, dropout if dropout is not None else ref.dropout)
    train_set, test_set = loaded or load_train_test(name, data_dir, n_train, n_test, seed)
    _check_splits(train_set, test_set)
    check_writable(out_dir, "run folder")
    opt = optimizer or ref.optimizer
    bs = batch_size if batch_size is not None else ref.batch_size
    n_epochs = epochs if epochs is not None else ref.epochs
    # the dataset's class count, not the subset's (a small subset can miss the last class)
    k = train_set.num_classes
    settings = {"dataset": name, "reference_settings": key, "architecture": model or ref.model,
                "dropout": dropout if dropout is not None else ref.dropout, "eps": run_eps,
                "n_test": len(test_set), "input_shape": list(train_set.shape), "num_classes": k,
                "data_dir": str(user_path(data_dir)) if data_dir is not None else None}
    return train(_build(settings, seed), train_set, m, epochs=n_epochs, batch_size=bs, optimizer=opt,
                 lr=lr if lr is not None else paper.lr(key, m.name, opt, bs), momentum=ref.momentum,
                 milestones=paper.milestones(n_epochs) if milestones is None else milestones,
                 augment=augment if augment is not None else ref.augment, seed=seed, out_dir=out_dir,
                 val_data=test_set, n_val=n_val, val_eps=run_eps, val_every=val_every, device=dev, meta=settings,
                 progress=progress, precision=precision)


def _check_splits(train_set: ImageDataset, test_set: ImageDataset) -> None:
    """Refuse, before a run folder is made, data a run cannot train and validate on: one class only, or test
    images of another shape than the training images."""
    if len(set(train_set.labels.tolist())) < 2:
        raise ValueError(f"the {train_set.name} training set holds one class only (label {int(train_set.labels[0])}): "
                         "a classifier needs at least two")
    if test_set.shape != train_set.shape:
        raise ValueError(f"{train_set.name}: test images are {'x'.join(map(str, test_set.shape))}, training images "
                         f"{'x'.join(map(str, train_set.shape))}: both splits need one image shape")


def run_settings(out_dir: str | os.PathLike[str], checkpoint: str = "last") -> dict[str, Any]:
    """A run folder's ``settings.json`` (no model is built), refused in one line when the run cannot be evaluated
    here: no finished ``checkpoint``, or settings without a dataset and architecture."""
    out = user_path(out_dir)
    if not (out / "settings.json").exists() or not (out / f"{checkpoint}.pt").exists():
        raise RunMismatchError(f"{out} holds no finished run (settings.json and {checkpoint}.pt); train it first")
    settings = load_json(out / "settings.json")
    missing = [k for k in ("dataset", "architecture", "input_shape", "num_classes") if k not in settings]
    if missing:
        raise RunMismatchError(f"{out} was written by train() without a dataset and architecture ({', '.join(missing)} "
                          "missing; train_run and `rll train` store them): evaluate its model with "
                          "rll_core.evaluate on your own data")
    return settings


@dataclasses.dataclass
class RunPoints:
    """What a measurement on a run's first test points starts from (:func:`run_points`): the settings it records,
    known without loading anything heavy, and :meth:`load` for the points and the model, called only when no stored
    result answers."""

    folder: Path
    settings: dict[str, Any]
    epoch: int
    precision: str
    record: dict[str, Any]  # checkpoint, n_eval, eps, seed, batch_size and precision: the start of its settings
    loader: Callable[[], tuple[ImageDataset, torch.nn.Module]] = dataclasses.field(repr=False)

    def load(self) -> tuple[ImageDataset, torch.nn.Module]:
        """The first ``n`` test points (checked against the run's data) and the model on the device."""
        return self.loader()


def run_points(out_dir: str | os.PathLike[str], n: int, *, checkpoint: str = "last", eps: float | None = None,
               data_dir: str | os.PathLike[str] | None = None, device: str = "auto",
               precision: str = "auto") -> RunPoints:
    """A run's first ``n`` test points at the run's eps (or ``eps``), with the settings every measurement on them
    records (:func:`rll_core.indicators.run_indicators`, :func:`rll_core.bracket.run_bracket`); the data and the
    model are read by :meth:`RunPoints.load`, as :func:`evaluate_run` reads them only when its file is missing.

    Raises:
        ValueError: a bad ``n``, eps or checkpoint; RunMismatchError: no finished run (other data: on load)."""
    check_int("n", n)
    out = user_path(out_dir)
    _check_checkpoint(checkpoint)
    settings = run_settings(out, checkpoint)
    ev_eps = _run_eps(out, settings, eps)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    ck = load_checkpoint(out / f"{checkpoint}.pt")
    record = {"checkpoint": checkpoint, "n_eval": n, "eps": ev_eps, "seed": settings["seed"],
              "batch_size": default_batch_size(dev), **precision_record(prec)}

    def loader() -> tuple[ImageDataset, torch.nn.Module]:
        _, test_set, net = _restore(out, settings, checkpoint, ck, data_dir, dev)
        return test_set.subset(n, seed=None), net

    return RunPoints(out, settings, int(ck["epoch"]), prec, record, loader)


def _check_checkpoint(checkpoint: str) -> None:
    """Refuse, in one line, a checkpoint other than a run folder's two (``last``, ``best``)."""
    if checkpoint not in ("last", "best"):
        raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")


def _run_eps(out: Path, settings: Mapping[str, Any], eps: float | None) -> float:
    """The radius a measurement on a run uses: ``eps`` if given, else the run's own (its ``eps``, or its
    ``val_eps``), checked to lie in (0, 1]; one line where the run records none and none is given."""
    run_eps = settings.get("eps", settings.get("val_eps"))
    if eps is None and run_eps is None:
        raise ValueError(f"{out} records no eps (settings.json has neither eps nor val_eps): pass eps=")
    return check_real("eps", run_eps if eps is None else eps, lo=0, hi=1, lo_open=True)


def _load_weights(model: torch.nn.Module, ck: Mapping[str, Any], path: Path,
                  settings: Mapping[str, Any]) -> torch.nn.Module:
    """``model`` with the checkpoint's weights, or one line saying that they do not fit its architecture."""
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise RunMismatchError(f"{path} does not fit the architecture {settings['architecture']!r} (dropout "
                          f"{settings.get('dropout')!r}) that settings.json names ({first}); was settings.json "
                          "edited?") from None
    return model


def load_run(out_dir: str | os.PathLike[str], checkpoint: str = "last",
             device: str = "auto") -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]]]:
    """A trained run back: its model with the checkpoint's weights, every setting, and the per-epoch log.

    Args:
        out_dir: a folder written by :func:`train_run` or ``rll train``.
        checkpoint: ``"last"`` or ``"best"``.
        device: where the model goes (``"auto"``, ``"cpu"``, ``"cuda[:N]"``).

    Returns:
        ``(model in eval mode, settings, history)``.

    Raises:
        ValueError: an unknown checkpoint; RunMismatchError: no finished run, or a checkpoint that does not fit
            the architecture ``settings.json`` names.

    Example:
        >>> model, settings, history = load_run("runs/mine-trades")  # doctest: +SKIP
    """
    out = user_path(out_dir)
    _check_checkpoint(checkpoint)
    settings = run_settings(out, checkpoint)
    ck = load_checkpoint(out / f"{checkpoint}.pt")
    model = _load_weights(_build(settings, settings["seed"]), ck, out / f"{checkpoint}.pt", settings)
    history = load_checkpoint(out / "last.pt")["history"] if (out / "last.pt").exists() else []
    return model.to(resolve_device(device)).eval(), settings, history


def eval_specs(eps: float, attacks: Sequence[str] | str, steps: int | None, restarts: int) -> list[AttackSpec]:
    """The evaluation attacks at ``eps`` (names, or one comma-separated string): the paper's settings,
    ``steps`` (step 2 eps / steps) and PGD ``restarts`` overriding them; unknown names refused."""
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    specs = []
    for a in attacks:
        over: dict[str, Any] = {} if steps is None else {"steps": steps}
        if a == "pgd":
            over["restarts"] = restarts
        specs.append(paper_attack(a, eps, **over))
    return specs


def _settings_digest(settings: Mapping[str, Any], epoch: int) -> str:
    """Ten hex digits naming an evaluation's settings and the checkpoint's epoch (file names)."""
    return settings_digest({**settings, "epoch": epoch})


def eval_stem(eval_settings: Mapping[str, Any], epoch: int, kind: str = "eval") -> str:
    """``<kind>-<checkpoint>-e<epoch>-eps<eps>-n<n>-<digest>``: one file name per setting of a measurement on a run
    (``eval``: :func:`evaluate_run`; ``checks``: :func:`rll_core.indicators.run_indicators`)."""
    digest = _settings_digest(eval_settings, epoch)
    eps = f"{eval_settings['eps']:g}".replace(".", "p")  # no dot: the name has no suffix of its own
    return f"{kind}-{eval_settings['checkpoint']}-e{epoch}-eps{eps}-n{eval_settings['n_eval']}-{digest}"


def evaluate_run(out_dir: str | os.PathLike[str], *, checkpoint: str = "last", eps: float | None = None,
                 attacks: Sequence[str] | str = ("pgd", "multitarget"), steps: int | None = None, restarts: int = 1,
                 n_eval: int = 1000, lipschitz_steps: int = 10, data_dir: str | os.PathLike[str] | None = None,
                 splits: Sequence[str] = ("train", "test"), test_only: Sequence[str] = (),
                 lipschitz: Sequence[str] = LIPSCHITZ, device: str = "auto", progress: bool = True,
                 precision: str = "auto") -> dict[str, Any]:
    """Evaluate a run folder on the first ``n_eval`` train and test points at the run's eps (or ``eps``).

    Writes ``eval-<checkpoint>-e<epoch>-eps<eps>-n<n>-<digest>.json`` (the row, the evaluation settings and the
    run's settings) with an ``.npz`` beside it holding the per-example verdicts (``<split>_<attack>``) and Lipschitz
    values (``<split>_lipschitz``: rll's ascent; ``<split>_lipschitz_reference``: the paper's procedure).  Each
    setting gets its own file, so no evaluation overwrites another; a finished one is read back.

    Args:
        out_dir: a folder written by :func:`train_run` or ``rll train``.
        checkpoint: ``"last"`` or ``"best"`` (best validation PGD accuracy).
        eps: the radius in (0, 1] (default the run's).
        attacks: names of :data:`rll_core.evaluation.ATTACKS`, or one comma-separated string (default PGD and
            multi-targeted).
        steps: steps of every attack, each of ``2 eps / steps`` (default the paper's: 10 and 20).
        restarts: PGD's random restarts (default 1).
        n_eval: points of each split (default 1000).
        lipschitz_steps: ascent steps of both Lipschitz estimates (default 10).
        data_dir: where the run's data is (default where it was trained from).
        splits: ``("train", "test")`` (default) or one of them (no gaps then).
        test_only: attacks of ``attacks`` and Lipschitz procedures of ``lipschitz`` run on the test points only,
            e.g. ``("multitarget", "reference")``.
        lipschitz: the Lipschitz procedures (:data:`rll_core.lipschitz.PROCEDURES`; default both: rll's ascent
            and the paper's procedure, for its numbers), or ``()`` for none.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        progress: show progress (default True).
        precision: ``"auto"`` (default), ``"fp32"`` or ``"bf16"``: of the attacks' and the Lipschitz ascent's steps;
            every verdict and reported ratio in fp32.  A bf16 evaluation is recorded as such and gets a file of
            its own.

    Returns:
        The row: ``train_accuracy``, ``test_accuracy``, ``<split>_<attack>_accuracy``, ``<split>_n``,
        ``<split>_lipschitz`` (+ ``_se``, ``_reference``), ``gap_standard``, ``gap_adversarial``, the settings.

    Raises:
        ValueError: a bad argument, a run that records no eps; RunMismatchError: no finished run, a checkpoint that
            does not fit its architecture, data that differs from what the run was trained on.

    Example:
        >>> row = evaluate_run("runs/at", n_eval=500)  # doctest: +SKIP
        >>> row["test_pgd_accuracy"], row["gap_adversarial"]  # doctest: +SKIP
    """
    out = user_path(out_dir)
    _check_checkpoint(checkpoint)
    check_int("n_eval", n_eval)
    check_int("lipschitz_steps", lipschitz_steps)
    splits = list(splits)
    if not splits or not set(splits) <= {"train", "test"} or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be 'train' and/or 'test' (each once), got {splits}")
    dev = resolve_device(device)
    settings = run_settings(out, checkpoint)
    ev_eps = _run_eps(out, settings, eps)
    specs = eval_specs(ev_eps, attacks, steps, restarts)
    procedures = check_procedures(lipschitz)
    test_only = sorted(set(test_only))
    unknown = set(test_only) - {s.name for s in specs} - set(procedures)
    if unknown:
        raise ValueError(f"test_only names attacks or Lipschitz procedures that are not evaluated: {sorted(unknown)}")
    eval_settings = _evaluation_record(checkpoint, n_eval, ev_eps, default_batch_size(dev), specs, lipschitz_steps,
                                       splits, test_only, resolve_precision(precision, dev), procedures)
    ck = load_checkpoint(out / f"{checkpoint}.pt")
    stem = eval_stem(eval_settings, int(ck["epoch"]))
    json_path, npz_path = out / f"{stem}.json", out / f"{stem}.npz"
    if json_path.exists() and npz_path.exists():  # read back (the worst case derived where an older file lacks it)
        return add_worst_case(load_json(json_path), load_npz(npz_path), splits)
    t0 = time.perf_counter()
    train_set, test_set, net = _restore(out, settings, checkpoint, ck, data_dir, dev)
    row: dict[str, Any] = {"run": out.name, **{k: settings.get(k) for k in ("dataset", "architecture", "dropout",
                                                                             "method", "epochs", "seed")},
                           "hyper": _hyper_record(settings),
                           "epoch": ck["epoch"], "eps": ev_eps, "eval_file": json_path.name}
    data = {"train": train_set, "test": test_set}
    arrays = measure_splits(row, net, {k: data[k] for k in splits}, split_specs(specs, splits, test_only), eval_settings,
                            settings["seed"], progress,
                            lipschitz={k: [p for p in procedures if k == "test" or p not in test_only] for k in splits})
    # wall time and torch's thread count (outside the settings, so they name no file): the budget of a preset
    # (benchmarks/budget.py), and what "same seed, same bits" depends on besides the machine and build
    result = {**row, "evaluation": eval_settings, "settings": settings, "seconds": time.perf_counter() - t0,
              "threads": torch.get_num_threads()}
    save_npz(npz_path, **arrays)
    save_json(json_path, result)
    return result


def _hyper_record(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run's method hyperparameters, every field of its method (``steps`` and ``step_size`` included), from
    its settings; empty for a loss of your own."""
    cls = METHODS.get(str(settings.get("method", "")))
    names = [f.name for f in dataclasses.fields(cls)] if cls is not None else []  # type: ignore[arg-type]
    return {k: settings[k] for k in names if k in settings}


def split_specs(specs: Sequence[AttackSpec], splits: Sequence[str],
                 test_only: Sequence[str]) -> dict[str, list[AttackSpec]]:
    """The attacks of each split: all of them on test, those not in ``test_only`` on train."""
    return {k: [s for s in specs if k == "test" or s.name not in test_only] for k in splits}


def _evaluation_record(checkpoint: str, n_eval: int, eps: float, batch_size: int, specs: Sequence[AttackSpec],
                       lipschitz_steps: int, splits: Sequence[str], test_only: Sequence[str],
                       precision: str, lipschitz: Sequence[str] = LIPSCHITZ) -> dict[str, Any]:
    """Every setting of an evaluation, stored beside its numbers and hashed into its file name."""
    ev: dict[str, Any] = {"checkpoint": checkpoint, "n_eval": n_eval, "eps": eps, "batch_size": batch_size,
                          "attacks": {s.name: s.record() for s in specs},
                          "lipschitz_steps": lipschitz_steps, "lipschitz_step_size": paper.step_size(eps, lipschitz_steps),
                          "lipschitz_reference_step_size": REFERENCE_STEP_SIZE, "random_streams": "per attack"}
    if list(splits) != ["train", "test"]:  # recorded only when not the default
        ev["splits"] = list(splits)
    if test_only:
        ev["test_only"] = list(test_only)
    if tuple(lipschitz) != LIPSCHITZ:  # recorded only when not both (older files keep their names)
        ev["lipschitz"] = list(lipschitz)
    return ev | precision_record(precision)  # in the file's name too


def _restore(out: Path, settings: Mapping[str, Any], checkpoint: str, ck: Mapping[str, Any],
             data_dir: str | os.PathLike[str] | None,
             dev: torch.device) -> tuple[ImageDataset, ImageDataset, torch.nn.Module]:
    """A run's training and test data (checked against the digest it was trained on) and its model with the
    checkpoint's weights on ``dev``."""
    train_set, test_set = load_train_test(settings["dataset"], data_dir or settings.get("data_dir"),
                                          settings["n_train"], settings["n_test"], settings["seed"])
    if array_digest(train_set.images, train_set.labels) != settings["data_digest"]:
        raise RunMismatchError(f"the {settings['dataset']} training data found differs from the data {out} was "
                          "trained on")
    net = _load_weights(_build(settings, settings["seed"]), ck, out / f"{checkpoint}.pt", settings)
    return train_set, test_set, net.to(dev)


def robustness_curve(out_dir: str | os.PathLike[str], eps_grid: Sequence[float], *, n_eval: int = 100,
                     checkpoint: str = "last", data_dir: str | os.PathLike[str] | None = None,
                     device: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """A run's test accuracy under PGD at every radius of ``eps_grid`` (the paper's PGD-10, step
    ``2 eps / 10``, at each; eps 0 is the clean accuracy), on the first ``n_eval`` test points.

    Saves ``curve-<checkpoint>-e<epoch>-n<n>-<digest>.json`` with the per-point verdicts in the ``.npz`` beside it
    (``eps<k>`` for the k-th radius); a finished curve is read back.  PGD's stream is the run's seed, so at the
    run's eps the curve repeats the evaluation's verdicts point for point.

    Args:
        out_dir: a run folder.
        eps_grid: radii in [0, 1] (sorted, duplicates dropped).
        n_eval: test points (default 100).
        checkpoint: ``"last"`` or ``"best"``.
        data_dir: where the run's data is (default where it was trained from).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        precision: ``"auto"`` (default), ``"fp32"`` or ``"bf16"``: of PGD's steps (verdicts in fp32).

    Returns:
        ``{"eps": [...], "accuracy": [...], "n": int, ...}`` with the settings.

    Raises:
        ValueError: an empty grid, a radius outside [0, 1], a bad checkpoint or n.

    Example:
        >>> robustness_curve("runs/at", [0, 0.05, 0.1, 0.2])["accuracy"]  # doctest: +SKIP
    """
    out = user_path(out_dir)
    _check_checkpoint(checkpoint)
    grid = sorted({check_real("eps", e, lo=0, hi=1) for e in eps_grid})
    if not grid:
        raise ValueError("eps_grid is empty")
    check_int("n_eval", n_eval)
    dev = resolve_device(device)
    settings = run_settings(out, checkpoint)
    ev: dict[str, Any] = {"checkpoint": checkpoint, "n_eval": n_eval, "eps_grid": grid, "split": "test",
          "attack": {"name": "pgd", "steps": ATTACKS["pgd"], "step_size": "2 eps / steps"},
          "batch_size": default_batch_size(dev)}
    prec = resolve_precision(precision, dev)
    ev |= precision_record(prec)
    ck = load_checkpoint(out / f"{checkpoint}.pt")
    digest = _settings_digest(ev, int(ck["epoch"]))
    path = out / f"curve-{checkpoint}-e{ck['epoch']}-n{n_eval}-{digest}.json"
    if path.exists() and path.with_suffix(".npz").exists():
        return load_json(path)
    _, test_set, net = _restore(out, settings, checkpoint, ck, data_dir, dev)
    sub = test_set.subset(n_eval, seed=None)
    swept = sweep_radii(net, torch.from_numpy(sub.float_images()), sub.labels, grid, seed=settings["seed"],
                        batch_size=ev["batch_size"], precision=prec)
    verdicts = {f"eps{k}": v for k, v in enumerate(swept)}
    result = {"run": out.name, "method": settings.get("method"), "eps": grid, "n": len(sub),
              "accuracy": [float(v.mean()) for v in verdicts.values()], "epoch": ck["epoch"], "evaluation": ev,
              "settings": settings}
    save_npz(path.with_suffix(".npz"), **verdicts)
    save_json(path, result)
    return result
