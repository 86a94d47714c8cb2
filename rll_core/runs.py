"""Runs of Section 5 by name: train one (dataset, architecture, method) into a folder, evaluate it, and
collect a folder of runs into a table (Tables 2-4).

A run folder holds ``settings.json`` (everything that produced it), ``last.pt`` / ``best.pt`` and
``history.json`` from :func:`rll_core.training.train`, and ``eval.json`` from :func:`evaluate_run`: train
and test accuracy, PGD and multi-targeted adversarial accuracy, mean empirical local Lipschitz constant on
train and test, and the standard and adversarial generalization gaps, beside the evaluation settings.
"""

from __future__ import annotations

import dataclasses
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
from .training import METHODS, PAPER_SETTINGS, RunMismatch, TrainResult, load_checkpoint, make_method, train

__all__ = ["PAPER_METHODS", "PRESETS", "TABLE_COLUMNS", "collect_runs", "evaluate_run", "export_table", "method_label",
           "parse_methods",
           "run_grid", "run_name", "table_rows", "theory_row", "train_run"]


def _with_eps(method: str, hyper: Mapping[str, Any] | None, eps: float) -> dict[str, Any]:
    """``hyper`` with the dataset's ``eps`` added when the method has an ``eps`` and it is not given."""
    out = dict(hyper or {})
    cls = METHODS.get(method.lower())
    if cls is not None and "eps" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        out.setdefault("eps", eps)
    return out


def _build(settings: Mapping[str, Any], train_set: ImageDataset) -> torch.nn.Module:
    c, h, _ = train_set.shape
    # the dataset's class count, not the subset's (a small subset can miss the last class)
    k = len(train_set.classes) or int(train_set.labels.max()) + 1
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
    m = make_method(method, **_with_eps(method, hyper, DEFAULT_EPS[key]))  # checked before any data is read
    adversarial = m.name in ("at", "llr", "rst", "trades")
    arch = model or paper["model"]
    drop = dropout if dropout is not None else paper.get("dropout")
    train_set, test_set = load_train_test(key, data_dir, n_train, n_test, seed)
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
    train_set, test_set = load_train_test(settings["dataset"], data_dir, settings["n_train"], settings["n_test"],
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


# ----------------------------------------------------------------------------------------------
# grids of runs (Tables 2-4)

#: ``quick``: minutes on 2 CPU cores (a subset, few epochs, Adam); ``paper``: the reference settings of
#: :data:`~rll_core.training.PAPER_SETTINGS` on the full splits (a GPU job).  ``None`` keeps the default.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(n_train=2000, n_test=500, epochs=2, optimizer="adam", lr=1e-3, n_eval=100, n_val=100),
    "paper": dict(n_train=None, n_test=None, epochs=None, optimizer=None, lr=None, n_eval=1000, n_val=500),
}

#: The methods of Tables 2 and 3 with the paper's hyperparameter sweeps.
PAPER_METHODS: tuple[tuple[str, dict[str, float]], ...] = (
    ("natural", {}), ("gr", {}), ("llr", {}), ("at", {}),
    ("trades", {"beta": 1.0}), ("trades", {"beta": 3.0}), ("trades", {"beta": 6.0}),
    ("rst", {"lam": 0.5}), ("rst", {"lam": 1.0}), ("rst", {"lam": 2.0}),
)

#: Columns of the Section 5 tables, in order (the paper's Tables 2-4).
TABLE_COLUMNS = ("method", "train_accuracy", "test_accuracy", "train_pgd_accuracy", "test_pgd_accuracy",
                 "test_multitarget_accuracy", "train_lipschitz", "test_lipschitz", "gap_standard",
                 "gap_adversarial")


def method_label(method: str, hyper: Mapping[str, Any]) -> str:
    """``TRADES(beta=6)``-style label of a method and its swept hyperparameters."""
    inner = ", ".join(f"{k}={v:g}" for k, v in sorted(hyper.items()) if k != "eps")
    return method.upper() + (f"({inner})" if inner else "") if method != "natural" else "natural"


def run_name(dataset: str, model: str, method: str, hyper: Mapping[str, Any], dropout: float | None,
             preset: str) -> str:
    """A folder name that identifies a run's settings (so a rerun finds and resumes it)."""
    hp = "".join(f"-{k}{v:g}" for k, v in sorted(hyper.items()))
    drop = "" if dropout is None else f"-drop{dropout:g}"
    return f"{dataset}-{model}-{method}{hp}{drop}-{preset}"


def run_grid(out_root: str | os.PathLike[str], *, dataset: str, methods: Sequence[tuple[str, Mapping[str, Any]]],
             preset: str = "quick", model: str | None = None, dropout: float | None = None,
             epochs: int | None = None, n_train: int | None = None, n_test: int | None = None,
             n_eval: int | None = None, seed: int = 0, data_dir: str | os.PathLike[str] | None = None,
             device: str = "auto", progress: bool = True) -> list[dict[str, Any]]:
    """Train (or resume) and evaluate every ``(method, hyper)`` under ``out_root``; one table row each.

    Arguments left ``None`` come from ``PRESETS[preset]`` (then from the paper's settings).  Finished runs
    and evaluations are read back, so a rerun takes seconds.
    """
    from .progress import progress_bar as tqdm

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    for name, hyper in methods:  # check every method before any training
        make_method(name, **_with_eps(name, hyper, DEFAULT_EPS.get(dataset, 0.1)))
    arch = model or PAPER_SETTINGS[dataset.lower().replace("-", "_")]["model"]
    rows = []
    for name, hyper in tqdm(list(methods), desc=f"{dataset} runs", disable=not progress, unit="run"):
        out = Path(out_root) / run_name(dataset, arch, name, hyper, dropout, preset)
        train_run(out, dataset=dataset, method=name, hyper=hyper, model=arch, dropout=dropout,
                  epochs=epochs or p["epochs"], optimizer=p["optimizer"], lr=p["lr"],
                  n_train=n_train if n_train is not None else p["n_train"],
                  n_test=n_test if n_test is not None else p["n_test"], n_val=p["n_val"], seed=seed,
                  data_dir=data_dir, device=device, progress=False)
        row = evaluate_run(out, n_eval=n_eval or p["n_eval"], data_dir=data_dir, device=device, progress=False)
        row["label"] = method_label(name, hyper)
        rows.append(row)
    return rows


def theory_row(train_set: ImageDataset, test_set: ImageDataset, eps: float, *, n_eval: int = 100,
               seed: int = 0) -> dict[str, Any]:
    """Section 4's classifier as one more table row: the same columns, measured the same way."""
    from .theory import LipschitzClassifier

    clf = LipschitzClassifier(train_set.images, train_set.labels)
    row: dict[str, Any] = {"label": f"1/r-Lipschitz (r={clf.r:.3f})", "method": "theory", "r": clf.r}
    for split, ds in (("train", train_set), ("test", test_set)):
        sub = ds.subset(n_eval, seed=None)
        x = torch.from_numpy(sub.float_images()).double()
        r = evaluate(clf, x, sub.labels, eps=eps, seed=seed, progress=False)
        row[f"{split}_accuracy"] = r.clean_accuracy
        for a, acc in r.adversarial_accuracy.items():
            row[f"{split}_{a}_accuracy"] = acc
        row[f"{split}_lipschitz"] = float(local_lipschitz(clf, x, eps=eps, generator=torch.Generator().manual_seed(seed)).mean())
    row["gap_standard"] = row["train_accuracy"] - row["test_accuracy"]
    row["gap_adversarial"] = row["train_pgd_accuracy"] - row["test_pgd_accuracy"]
    return row


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The Section 5 table columns of each row (``method`` shown as its label)."""
    return [{c: (r.get("label", r.get("method")) if c == "method" else r.get(c, float("nan"))) for c in TABLE_COLUMNS}
            for r in rows]


def export_table(rows: Sequence[Mapping[str, Any]], stem: str | os.PathLike[str]) -> list[Path]:
    """Write the rows as ``<stem>.csv``, ``.md`` and ``.tex``."""
    from .io import save_table

    t = table_rows(rows)
    stem = Path(stem)
    return [save_table(stem.with_name(f"{stem.name}.{ext}"), t) for ext in ("csv", "md", "tex")]


def parse_methods(spec: str | Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """``"paper"`` (:data:`PAPER_METHODS`) or ``"natural,at,trades:beta6,rst:lam0.5,llr:lam4;mu3"`` ->
    ``(name, hyper)`` pairs (no ``=`` or quotes, so the spec survives papermill's parameter parsing)."""
    import re

    if not isinstance(spec, str):
        return [(n, dict(h)) for n, h in spec]
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
        out.append((name.strip().lower(), hyper))
    if not out:
        raise ValueError("no methods given")
    return out
