"""Command line: ``rll separation --dataset cifar10 --data-dir ~/data`` (Table 1 + Figure 2 for one dataset)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .data import DATASETS, DataError, load_train_test


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
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
    s.add_argument("--eps", type=float, default=None, help="default: the paper's eps for the dataset")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--backend", default="auto", choices=["auto", "numba", "torch", "triton"])
    s.add_argument("--cache-dir", default="results/cache")
    s.add_argument("--out", default="figures", help="where the table and figures go")
    s.add_argument("--formats", default="png,pdf", help="comma-separated: png,pdf,svg")
    s.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .plotting import export_separation
    from .separation import measure_separation

    try:
        train, test = load_train_test(args.dataset, args.data_dir, args.n_train, args.n_test, args.seed)
        result = measure_separation(train, test, args.eps, device=args.device, backend=args.backend,
                                    cache_dir=args.cache_dir, progress=not args.no_progress)
    except (DataError, ValueError, TypeError, RuntimeError) as e:
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
