"""Runs of Section 5 by name: train one (dataset, architecture, method) into a folder, evaluate it, and
collect a folder of runs into a table (Tables 2-4).

A run folder holds ``settings.json`` (everything that produced it), ``last.pt`` / ``best.pt`` and
``history.json`` from :func:`rll_core.training.train`, and ``eval.json`` from :func:`evaluate_run`: train
and test accuracy, PGD and multi-targeted adversarial accuracy, mean empirical local Lipschitz constant on
train and test, and the standard and adversarial generalization gaps, beside the evaluation settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .attacks import evaluate
from .data import DEFAULT_EPS, ImageDataset, load_train_test
from .io import array_digest, load_json, save_json
from .lipschitz import local_lipschitz
from .models import build_model
from .separation import resolve_device
from .training import PAPER_SETTINGS, RunMismatch, TrainResult, load_checkpoint, make_method, train

__all__ = ["collect_runs", "evaluate_run", "train_run"]


def _data(dataset: str, data_dir: str | os.PathLike[str] | None, n_train: int | None, n_test: int | None,
          seed: int) -> tuple[ImageDataset, ImageDataset]:
    return load_train_test(dataset, data_dir, n_train, n_test, seed)


def _build(settings: Mapping[str, Any], train_set: ImageDataset) -> torch.nn.Module:
    c, h, _ = train_set.shape
    k = int(train_set.labels.max()) + 1
    return build_model(settings["architecture"], in_channels=c, num_classes=max(k, 2), image_size=h,
                       dropout=settings.get("dropout"))


def train_run(out_dir: str | os.PathLike[str], *, dataset: str, method: str = "natural",
              hyper: Mapping[str, Any] | None = None, model: str | None = None, dropout: float | None = None,
              epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
              optimizer: str | None = None, n_train: int | None = None, n_test: int | None = None,
              n_val: int = 500, seed: int = 0, data_dir: str | os.PathLike[str] | None = None,
              device: str = "auto", progress: bool = True) -> TrainResult:
    """Train ``method`` on ``dataset`` into ``out_dir``; unset settings come from :data:`PAPER_SETTINGS`.

    ``hyper``: the method's hyperparameters (``eps`` defaults to the paper's radius for the dataset).
    ``n_train`` / ``n_test``: seeded subsets.  Resumes a finished or interrupted run in ``out_dir``.
    """
    key = dataset.lower().replace("-", "_")
    if key not in PAPER_SETTINGS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(PAPER_SETTINGS)}")
    paper = PAPER_SETTINGS[key]
    hyper = dict(hyper or {})
    if method.lower() != "natural":
        hyper.setdefault("eps", DEFAULT_EPS[key])
    m = make_method(method, **hyper)  # validates names before any data is read
    adversarial = m.name in ("at", "llr", "rst", "trades")
    arch = model or paper["model"]
    drop = dropout if dropout is not None else paper.get("dropout")
    train_set, test_set = _data(key, data_dir, n_train, n_test, seed)
    settings = {"dataset": key, "architecture": arch, "dropout": drop, "n_test": len(test_set)}
    net = _build(settings, train_set)
    return train(net, train_set, m, epochs=epochs or paper["epochs"], batch_size=batch_size or paper["batch_size"],
                 optimizer=optimizer or paper["optimizer"],
                 lr=lr or (paper.get("lr_adversarial", paper["lr"]) if adversarial else paper["lr"]),
                 momentum=paper["momentum"], milestones=paper["milestones"], augment=paper["augment"], seed=seed,
                 out_dir=out_dir, val_data=test_set, n_val=n_val, val_eps=DEFAULT_EPS[key],
                 device=resolve_device(device), meta=settings, progress=progress)


def evaluate_run(out_dir: str | os.PathLike[str], *, checkpoint: str = "last", n_eval: int = 1000,
                 attacks: Sequence[str] = ("pgd", "multitarget"), lipschitz_steps: int = 10,
                 data_dir: str | os.PathLike[str] | None = None, device: str = "auto",
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate a run folder on the first ``n_eval`` train and test points; write and return ``eval.json``.

    A finished evaluation with the same settings is read back instead of recomputed.
    """
    out = Path(out_dir)
    if checkpoint not in ("last", "best"):
        raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    if not (out / "settings.json").exists() or not (out / f"{checkpoint}.pt").exists():
        raise RunMismatch(f"{out} holds no finished run (settings.json and {checkpoint}.pt); train it first")
    settings = load_json(out / "settings.json")
    eps = float(settings["val_eps"])
    eval_settings = {"checkpoint": checkpoint, "n_eval": n_eval, "attacks": list(attacks), "eps": eps,
                     "lipschitz_steps": lipschitz_steps, "lipschitz_step_size": 2 * eps / lipschitz_steps}
    ck = load_checkpoint(out / f"{checkpoint}.pt")
    done = out / "eval.json"
    if done.exists():
        prev = load_json(done)
        if prev.get("evaluation") == eval_settings and prev.get("epoch") == ck["epoch"]:
            return prev
    train_set, test_set = _data(settings["dataset"], data_dir, settings["n_train"], settings["n_test"],
                                settings["seed"])
    if array_digest(train_set.images, train_set.labels) != settings["data_digest"]:
        raise RunMismatch(f"the {settings['dataset']} training data found differs from the data {out} was "
                          "trained on")
    dev = resolve_device(device)
    net = _build(settings, train_set).to(dev)
    net.load_state_dict(ck["model"])
    row: dict[str, Any] = {"run": out.name, **{k: settings[k] for k in ("dataset", "architecture", "dropout",
                                                                         "method", "epochs", "seed")},
                           "hyper": {k: v for k, v in settings.items() if k in ("beta", "lam", "mu", "h", "eps")},
                           "epoch": ck["epoch"]}
    for split, ds in (("train", train_set), ("test", test_set)):
        sub = ds.subset(n_eval, seed=None)
        r = evaluate(net, sub.images, sub.labels, eps=eps, attacks=attacks, seed=settings["seed"], progress=progress)
        lip = local_lipschitz(net, torch.from_numpy(sub.images), eps=eps, steps=lipschitz_steps,
                              generator=torch.Generator(device=dev).manual_seed(settings["seed"]), progress=progress)
        row[f"{split}_accuracy"] = r.clean_accuracy
        for a, acc in r.adversarial_accuracy.items():
            row[f"{split}_{a}_accuracy"] = acc
        row[f"{split}_lipschitz"] = float(lip.mean())
        row["attack_settings"] = r.attacks
    row["gap_standard"] = row["train_accuracy"] - row["test_accuracy"]
    first = attacks[0] if attacks else None
    if first:
        row["gap_adversarial"] = row[f"train_{first}_accuracy"] - row[f"test_{first}_accuracy"]
    result = {**row, "evaluation": eval_settings, "settings": settings}
    save_json(done, result)
    return result


def collect_runs(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The ``eval.json`` of every run folder directly under ``root``, sorted by folder name."""
    return [load_json(p) for p in sorted(Path(root).glob("*/eval.json"))]
