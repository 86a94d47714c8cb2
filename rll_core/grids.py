"""Grids of runs (Tables 2-4): the presets, the settings a grid resolves to, one folder per run, and
:func:`run_grid`, which trains (or resumes) and evaluates every ``(method, hyper)`` of a table.

A grid's settings are resolved in one place, :func:`grid_settings` (the preset's, then the reference's), which
:func:`run_grid` and the notebooks both use: the eps, the subset sizes, the architecture, the data a run is
trained on and the name its outputs carry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import paper
from .checks import check_int, check_real, resolve_device
from .data import check_dataset, dataset_label, is_npz_path, reference_key
from .methods import make_method
from .models import check_model
from .pool import default_workers, run_jobs
from .precision import resolve_precision
from .progress import progress_bar
from .runs import evaluate_run, resolve_hyper, train_run
from .stats import wilson_interval
from .storage import user_path

__all__ = ["FINDINGS_SEEDS", "PAPER_METHODS", "PRESETS", "TABLE_EVALUATION", "check_seeds", "grid_digest",
           "grid_settings", "method_label", "method_spec", "parse_methods", "preset_evaluation", "run_grid", "run_grids",
           "run_name"]


#: The evaluation behind every table (:func:`run_grid`) and the per-point figure
#: (:func:`rll_core.audit.point_robustness`): PGD and the Lipschitz ascent on both splits, the multi-targeted attack
#: and the reference's Lipschitz procedure on the test points only (no table shows them on train).  One setting,
#: so each run is evaluated once and read back after.
TABLE_EVALUATION: dict[str, Any] = {"attacks": ("pgd", "multitarget"), "test_only": ("multitarget", "reference")}

#: The training seeds Section 5's findings are decided over by default (notebook 04, ``make run``): three, the
#: most that fit ``make run``'s 10 minutes on 2 cores at the ``gaps`` preset's size; four decide more claims (the
#: t interval over k seeds narrows with t(k - 1) / sqrt(k)), as docs/results.md measures.
FINDINGS_SEEDS = (0, 1, 2)

#: ``quick``: the default job (a 2,000-image subset, 2 epochs, Adam, 100 evaluation points per split);
#: ``long``: 10,000 images, 3 epochs, 500 points (intervals of about +/- 0.04); ``gaps``: the regime of the
#: paper's Section 5 conclusions, models that fit their training set (150 seeded images, trained 20 epochs,
#: validated after the 10th and the last) evaluated with PGD and the Lipschitz ascent on those 150 and on 300
#: seeded test points, at several seeds (docs/results.md says how the sizes were chosen); ``paper``: the reference
#: settings of :mod:`rll_core.paper` on the full splits (a GPU job).  ``None`` keeps the reference's value;
#: ``evaluation`` (where set) replaces :data:`TABLE_EVALUATION`.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(n_train=2000, n_test=500, epochs=2, optimizer="adam", lr=1e-3, n_eval=100, n_val=100),
    "long": dict(n_train=10000, n_test=1000, epochs=3, optimizer="adam", lr=1e-3, n_eval=500, n_val=200),
    "gaps": dict(n_train=150, n_test=300, epochs=20, optimizer="adam", lr=1e-3, n_eval=300, n_val=100, val_every=10,
                 evaluation={"attacks": ("pgd",), "test_only": (), "lipschitz": ("ascent",)}),
    "paper": dict(n_train=None, n_test=None, epochs=None, optimizer=None, lr=None, n_eval=1000, n_val=500),
}


def preset_evaluation(preset: str) -> dict[str, Any]:
    """The attacks a preset's grid evaluates (``attacks``, ``test_only`` for :func:`~rll_core.runs.evaluate_run`):
    :data:`TABLE_EVALUATION` (PGD on both splits, the multi-targeted attack on test), or the
    preset's own (``gaps``: PGD on both splits only; its tables are about the gaps)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return dict(PRESETS[preset].get("evaluation", TABLE_EVALUATION))

#: The methods of Tables 2 and 3 with the paper's hyperparameter sweeps (:data:`rll_core.paper.METHODS`).
PAPER_METHODS = paper.METHODS

#: Hyperparameter names as the paper writes them (labels of tables and figures).
_SYMBOLS = {"beta": "β", "lam": "λ", "mu": "μ"}


def method_label(method: str, hyper: Mapping[str, Any]) -> str:
    """``TRADES (β=6)``-style label of a method and its swept hyperparameters."""
    inner = ", ".join(f"{_SYMBOLS.get(k, k)}={v:g}" for k, v in sorted(hyper.items()) if k != "eps")
    return method.upper() + (f" ({inner})" if inner else "") if method != "natural" else "natural"


def run_name(dataset: str, model: str, method: str, hyper: Mapping[str, Any], dropout: float | None,
             preset: str, *, eps: float, n_train: int | None, epochs: int | None, seed: int = 0,
             precision: str = "fp32") -> str:
    """A folder name from every setting a grid varies (so a rerun finds and resumes its own run, and a
    run with other settings gets another folder)."""
    hp = "".join(f"-{k}{v:g}" for k, v in sorted(hyper.items()) if k != "eps")
    drop = "" if dropout is None else f"-drop{dropout:g}"
    size = f"n{n_train}" if n_train is not None else "nall"
    ep = f"e{epochs}" if epochs is not None else "eref"
    prec = "" if precision == "fp32" else f"-{precision}"  # fp32 runs keep the names they always had
    return f"{dataset}-{model}-{method}{hp}{drop}-eps{eps:g}-{size}-{ep}-s{seed}-{preset}{prec}"


def method_spec(method: str, hyper: Mapping[str, Any]) -> str:
    """The key of a table row, as :func:`parse_methods` reads it: ``trades:beta6``, ``llr:lam4;mu3``,
    ``natural`` (rows are picked by this key, never by their display label)."""
    inner = ";".join(f"{k}{v:g}" for k, v in sorted(hyper.items()) if k != "eps")
    return method.lower() + (f":{inner}" if inner else "")


def grid_settings(dataset: str, *, preset: str = "quick", eps: float | None = None, model: str | None = None,
                  epochs: int | None = None, n_train: int | None = None, n_test: int | None = None,
                  n_eval: int | None = None, seed: int = 0) -> dict[str, Any]:
    """What a grid of runs resolves its settings to, before any work: arguments left ``None`` come from
    ``PRESETS[preset]``, then from the reference settings of the dataset (:mod:`rll_core.paper`).

    Returns ``dataset`` (the name in output and folder names), ``data`` (what each run trains on: the registry
    key or the ``.npz``'s absolute path), ``reference`` (the paper dataset whose settings apply), ``preset``,
    ``eps``, ``model``, ``epochs``, ``n_train``, ``n_test`` (``None``: the whole split), ``n_eval``, ``n_val``,
    ``optimizer``, ``lr`` (``None``: the reference's), ``seed`` and, where the preset sets it, ``val_every``.

    >>> grid_settings("mnist")["eps"], grid_settings("mnist")["n_train"]
    (0.1, 2000)

    Raises ValueError in one line for an unknown preset or dataset, or an eps outside (0, 1]."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    dataset = check_dataset(dataset)
    key = reference_key(dataset)  # data of your own: the paper dataset of its shape gives the settings
    sizes = {k: check_int(k, v) if v is not None else p[k] for k, v in
             (("n_train", n_train), ("n_test", n_test), ("n_eval", n_eval))}
    return {"dataset": dataset_label(dataset), "data": str(user_path(dataset).resolve()) if is_npz_path(dataset) else key,
            "reference": key, "preset": preset,
            # a grid's runs are evaluated at their eps: a ball of radius 0 has no attack (refused before any training)
            "eps": paper.eps_for(key) if eps is None else check_real("eps", eps, lo=0, hi=1, lo_open=True),
            "model": model or paper.SETTINGS[key].model,
            "epochs": check_int("epochs", epochs) if epochs is not None else p["epochs"], **sizes,
            "n_val": p["n_val"], "optimizer": p["optimizer"], "lr": p["lr"], "seed": check_int("seed", seed, lo=0),
            **({"val_every": p["val_every"]} if "val_every" in p else {})}  # only where a preset sets it


def grid_digest(methods: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Six hex digits naming a set of ``(method, hyper)`` rows (order and spelling do not matter)."""
    text = json.dumps(sorted([n.lower(), sorted(h.items())] for n, h in methods), default=float)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def run_grid(out_root: str | os.PathLike[str], *, dataset: str, methods: str | Sequence[tuple[str, Mapping[str, Any]]],
             preset: str = "quick", eps: float | None = None, model: str | None = None,
             dropout: float | None = None, augment: str | None = None, epochs: int | None = None,
             n_train: int | None = None, n_test: int | None = None, n_eval: int | None = None,
             seeds: int | Sequence[int] = 0, data_dir: str | os.PathLike[str] | None = None, device: str = "auto",
             progress: bool = True, precision: str = "auto", workers: int | None = 1,
             executor: Any = None) -> list[dict[str, Any]]:
    """Train (or resume) and evaluate every ``(method, hyper)`` at every seed under ``out_root``: one row each.

    ``eps`` is every run's training, validation and evaluation radius.  Arguments left None come from
    ``PRESETS[preset]``, then from the reference settings (:func:`grid_settings`, whose result every row carries
    as ``grid``); each row's ``key`` is its :func:`method_spec`.  Run folders are named from every setting a grid
    varies, so finished runs and evaluations are read back and a rerun takes seconds.

    Args:
        out_root: the folder of the run folders.
        dataset: a registry name or an ``.npz`` of your own.
        methods: ``(name, hyper)`` pairs, e.g. :data:`PAPER_METHODS`, or a spec :func:`parse_methods` reads
            (``"natural,trades:beta6"``); a method's own ``eps`` is refused (one eps per grid: ``eps=``).
        preset: ``"quick"``, ``"long"`` or ``"paper"`` (default ``"quick"``).
        eps: the radius in (0, 1] (default the paper's).
        model: the architecture (default the paper's).
        dropout: a rate in [0, 1), or None for the architecture's own (several grids that differ in it train
            side by side: :func:`run_grids`).
        augment: ``"crop-flip"``, ``"crop8"`` or None.
        epochs, n_train, n_test, n_eval: over the preset's.
        seeds: the runs' seeds, one run folder per (method, seed): a seed draws the training subset, the
            initial weights, the epoch order, the dropout masks and the attacks' starts (default 0).
        data_dir: where the data is.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        progress: a bar over the runs and one line per run (default True).
        precision: ``"auto"`` (default), ``"fp32"`` or ``"bf16"`` of every run's training and evaluation steps
            (:mod:`rll_core.precision`); bf16 runs get folders of their own (``-bf16``).
        workers: runs side by side in worker processes of one torch thread each (:mod:`rll_core.pool`; None: one
            per core, one on a GPU); default 1: here, one after another, at this process's thread count.
        executor: a job engine that runs each (method, seed) as a job of its own, e.g. ``submitit.AutoExecutor``
            on a Slurm cluster (:func:`rll_core.pool.run_jobs`; ``workers`` is then ignored); a job that finds its
            run finished reads it back, one that finds it interrupted resumes it.

    Returns:
        One row per (method, seed), methods in the order given and seeds within each (see
        :func:`rll_core.runs.evaluate_run`), with ``label``, ``key``, ``seed`` and ``grid``.

    Raises:
        ValueError: an unknown preset, dataset or method, a bad hyperparameter or eps, before any training.

    Example:
        >>> rows = run_grid("results/runs", dataset="mnist", methods=parse_methods("natural,at"))  # doctest: +SKIP
    """
    return run_grids(out_root, [{"dropout": dropout, "augment": augment}], dataset=dataset, methods=methods,
                     preset=preset, eps=eps, model=model, epochs=epochs, n_train=n_train, n_test=n_test, n_eval=n_eval,
                     seeds=seeds, data_dir=data_dir, device=device, progress=progress, precision=precision,
                     workers=workers, executor=executor)[0]


#: What the grids of :func:`run_grids` may differ in (every other setting is common to them).
VARIANT_KEYS = ("dropout", "augment")


def run_grids(out_root: str | os.PathLike[str], variants: Sequence[Mapping[str, Any]], *, dataset: str,
              methods: str | Sequence[tuple[str, Mapping[str, Any]]], preset: str = "quick", eps: float | None = None,
              model: str | None = None, epochs: int | None = None, n_train: int | None = None,
              n_test: int | None = None, n_eval: int | None = None, seeds: int | Sequence[int] = 0,
              data_dir: str | os.PathLike[str] | None = None, device: str = "auto", progress: bool = True,
              precision: str = "auto", workers: int | None = 1, executor: Any = None) -> list[list[dict[str, Any]]]:
    """Several grids of :func:`run_grid` that differ only in ``dropout`` or ``augment``, run as one: every run of
    every grid goes to the same workers (the longest first, so no worker idles at the end while another
    trains), and each grid's rows come back as :func:`run_grid` returns them.  Every argument but ``variants`` is
    :func:`run_grid`'s.

    Args:
        out_root: the folder of the run folders.
        variants: one mapping per grid, of :data:`VARIANT_KEYS` (a key left out is None), e.g.
            ``[{"dropout": 0.0}, {"dropout": None}]`` for Table 4 (without dropout, with the architecture's).

    Returns:
        One list of rows per variant, in the order given.

    Raises:
        ValueError: no variant, a variant key other than :data:`VARIANT_KEYS`, and everything :func:`run_grid`
            refuses, before any training.

    Example:
        >>> without, with_dropout = run_grids("results/runs", [{"dropout": 0.0}, {"dropout": None}],
        ...                                   dataset="mnist", methods="natural,at", preset="gaps")  # doctest: +SKIP
    """
    if not variants:
        raise ValueError("variants must name at least one grid, e.g. [{'dropout': None}]")
    for v in variants:
        bad = sorted(set(v) - set(VARIANT_KEYS))
        if bad:
            raise ValueError(f"a variant may set {', '.join(VARIANT_KEYS)} only, got {', '.join(bad)}")
    keys = [tuple(v.get(k) for k in VARIANT_KEYS) for v in variants]
    if len(set(keys)) != len(keys):  # the same runs twice: two workers would train one folder
        raise ValueError(f"variants must differ, got {list(variants)}")
    methods = parse_methods(methods)
    seed_list = check_seeds(seeds)
    g = grid_settings(dataset, preset=preset, eps=eps, model=model, epochs=epochs, n_train=n_train, n_test=n_test,
                      n_eval=n_eval, seed=seed_list[0])
    for name, hyper in methods:  # check every method, the architecture and each dropout before any training
        make_method(name, **resolve_hyper(g["reference"], name, hyper, g["eps"]))
    for v in variants:
        check_model(g["model"], v.get("dropout"))
    prec = resolve_precision(precision, device)
    per = [[_job(out_root, g, name, hyper, s, v.get("dropout"), v.get("augment"), preset, data_dir, device, prec)
            for name, hyper in methods for s in seed_list] for v in variants]
    jobs = [j for grid in per for j in grid]
    n_workers = default_workers(len(jobs), resolve_device(device)) if workers is None else check_int("workers", workers)
    # side by side, the longest runs first (a robust method's inner search costs about ten natural epochs), so the
    # last to finish is a short one; one after another, in the grid's order.  The rows go back in the grid's order
    order = sorted(range(len(jobs)), key=lambda i: n_workers > 1 and jobs[i]["train"]["method"] == "natural")
    bar = progress_bar(total=len(jobs), desc=f"{g['dataset']} runs", disable=not progress, unit="run")

    def done(_i: int, row: dict[str, Any]) -> None:
        seconds = row.pop("job_seconds")
        bar.update(1)
        if progress:  # one line per run, so a headless job (make run, papermill --log-output) shows where it is
            bar.write(_run_summary(row, seconds))

    ran = run_jobs(_grid_job, [jobs[i] for i in order], workers=n_workers, on_done=done, executor=executor)
    bar.close()
    rows: list[dict[str, Any]] = [{}] * len(jobs)
    for i, row in zip(order, ran, strict=True):
        rows[i] = row
    out, k = [], 0
    for grid in per:
        out.append(rows[k:k + len(grid)])
        k += len(grid)
    return out


def _job(out_root: str | os.PathLike[str], g: Mapping[str, Any], name: str, hyper: Mapping[str, Any], seed: int,
         dropout: float | None, augment: str | None, preset: str, data_dir: str | os.PathLike[str] | None,
         device: str, prec: str) -> dict[str, Any]:
    """One run of a grid: its folder, what trains it, what evaluates it and what its row carries."""
    return {"out": str(user_path(out_root) / run_name(g["dataset"], g["model"], name, hyper, dropout, preset,
                                                      eps=g["eps"], n_train=g["n_train"], epochs=g["epochs"],
                                                      seed=seed, precision=prec)),
            "train": dict(dataset=g["data"], method=name, hyper=hyper, eps=g["eps"], model=g["model"], dropout=dropout,
                          augment=augment, epochs=g["epochs"], optimizer=g["optimizer"], lr=g["lr"],
                          n_train=g["n_train"], n_test=g["n_test"], n_val=g["n_val"], val_every=g.get("val_every", 1),
                          seed=seed, data_dir=data_dir, device=device, progress=False, precision=prec),
            "evaluate": dict(n_eval=g["n_eval"], **preset_evaluation(preset), data_dir=data_dir, device=device,
                             progress=False, precision=prec),
            "row": {"label": method_label(name, hyper), "key": method_spec(name, hyper), "grid": g}}


def check_seeds(seeds: int | Sequence[int]) -> list[int]:
    """Seeds as a list of distinct integers >= 0 (one seed or several), in the order given; one line otherwise."""
    items = [seeds] if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool) else seeds
    if isinstance(items, str) or not isinstance(items, Sequence) or not items:
        raise ValueError(f"seeds must be an integer >= 0 or a list of them, got {seeds!r}")
    out = [check_int("seed", s, lo=0) for s in items]
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must differ (each is a run folder of its own), got {list(items)}")
    return out


def _grid_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """One run of a grid: train (or resume) and evaluate it; the row, and the seconds both took."""
    t0 = time.perf_counter()
    train_run(job["out"], **job["train"])
    row = evaluate_run(job["out"], **job["evaluate"])
    return {**row, **job["row"], "job_seconds": time.perf_counter() - t0}


def _run_summary(row: Mapping[str, Any], seconds: float) -> str:
    """``AT: 2 epochs, test acc 0.90, PGD 0.73 [0.64, 0.81] (n = 100), Lipschitz 46.9 (51 s)``."""
    n = int(row["test_n"])
    pgd_acc = row.get("test_pgd_accuracy")
    adv = "" if pgd_acc is None else " PGD {:.2f} [{:.2f}, {:.2f}],".format(pgd_acc, *wilson_interval(pgd_acc, n))
    return (f"{row['label']}: {row['epoch']} epochs, test acc {row['test_accuracy']:.2f},{adv} n = {n}, "
            f"Lipschitz {row['test_lipschitz']:.1f} ({seconds:.0f} s)")


def parse_methods(spec: str | Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """``"paper"`` (:data:`PAPER_METHODS`) or ``"natural,at,trades:beta6,rst:lam0.5,llr:lam4;mu3"`` ->
    ``(name, hyper)`` pairs (no ``=`` or quotes, so the spec survives papermill's parameter parsing).

    A method's own eps (``at:eps0.2``) is refused in one line: every run of a grid trains and is evaluated at the
    grid's eps, which names its folders, keys and labels (a second eps is a second grid)."""
    if not isinstance(spec, str):
        pairs = []
        for pair in spec:
            if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"methods must be a spec like 'natural,at' or (name, hyper) pairs, got {pair!r}")
            pairs.append((str(pair[0]), dict(pair[1])))
        return [_no_own_eps(n, h, repr((n, h))) for n, h in pairs]
    if spec.strip() == "paper":
        return [(n, dict(h)) for n, h in PAPER_METHODS]
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, rest = item.partition(":")
        hyper: dict[str, Any] = {}
        for kv in filter(None, (t.strip() for t in rest.split(";"))):
            m = re.fullmatch(r"([a-z_]+)([-+0-9.e]+)", kv)
            if m is None:
                raise ValueError(f"bad method spec {item!r}: write name:keyVALUE[;keyVALUE], e.g. trades:beta6")
            hyper[m.group(1)] = float(m.group(2))
        out.append(_no_own_eps(name.strip().lower(), hyper, repr(item)))
    if not out:
        raise ValueError("no methods given")
    return out


def _no_own_eps(name: str, hyper: dict[str, Any], shown: str) -> tuple[str, dict[str, Any]]:
    if "eps" in hyper:
        raise ValueError(f"method {shown} sets its own eps {hyper['eps']:g}: a grid has one eps "
                         "(run_grid eps=, the notebooks' eps parameter); run another grid for another eps")
    return name, hyper
