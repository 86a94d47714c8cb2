"""Benchmark: training throughput of every method, rll's ``train`` against a minimal loop and torchattacks.

Every case trains a copy of the same seeded cnn001 on the same ``--n`` Fashion-MNIST training images
(random images if the data is missing), batch by batch in one fixed order, SGD with momentum.  Timing:
``benchmarks/_timing.py`` (a warm-up, then interleaved rounds; CPU seconds and wall time; paired median
ratios).  The ratios are per CPU second against the minimal loop and torchattacks on the stock-layer model
(``evaluation.stock_layers``: ``nn.MaxPool2d``) at the row's own precision (bf16 baselines: the same loop inside
``torch.autocast``), and against the fp32 minimal loop, what one would run without rll (> 1: rll is faster).

* ``minimal``: the least a training step can do in PyTorch: slices of a float tensor (no DataLoader),
  the inner PGD / TRADES search in eval mode with gradients with respect to the input only, in place
  against bounds computed once (``evaluation.minimal_pgd``), ``zero_grad(set_to_none=True)``.  GR and
  LLR have no common minimal form: that row calls rll's loss inside the minimal loop, so its ratio
  measures the training loop alone.
* ``rll``: :func:`rll_core.training.train` for one epoch with ``make_method(name)`` (everything the
  package does per run: seeding, shuffling, the loss's checks, the history) on rll's model, at
  ``precision="auto"`` (bf16 training steps where the CPU computes bf16 natively) and ``"fp32"``.
* ``torchattacks``: AT and RST with ``torchattacks.PGD`` as the inner attack, in the minimal loop.

    python benchmarks/training.py                      # natural, AT, TRADES; 1,024 images, batch 64, 5 rounds
    python benchmarks/training.py --methods natural,gr,llr,at,trades,rst --n 2048
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, machine, paired_ratio, target_table  # noqa: E402
from evaluation import minimal_pgd, stock_layers  # noqa: E402

from rll_core._search import eval_mode  # noqa: E402
from rll_core.data import DataError, load_fashion_mnist  # noqa: E402
from rll_core.methods import make_method  # noqa: E402
from rll_core.models import build_model  # noqa: E402
from rll_core.paper import step_size  # noqa: E402
from rll_core.precision import resolve_precision  # noqa: E402
from rll_core.training import train  # noqa: E402

EPS = 0.1
LR = 0.01
HYPER: dict[str, dict[str, float]] = {"natural": {}, "gr": {}, "llr": {"eps": EPS}, "at": {"eps": EPS},
                                      "trades": {"eps": EPS}, "rst": {"eps": EPS}}
Step = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _adv(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The AT/RST inner PGD-10 at eps, step 2 eps / 10, in eval mode (as rll's AT)."""
    with eval_mode(model):
        return minimal_pgd(model, x, y, EPS, step_size(EPS, 10), 10)


def _trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, beta: float = 6.0) -> torch.Tensor:
    """TRADES with its KL search as a minimal PGD (uniform start instead of TRADES' 0.001-Gaussian one:
    the same passes)."""
    with eval_mode(model), torch.no_grad():
        p_nat = F.softmax(model(x), 1)
    with eval_mode(model):
        z = minimal_pgd(model, x, y, EPS, step_size(EPS, 10), 10,
                        lambda out: F.kl_div(F.log_softmax(out, 1), p_nat, reduction="sum"))
    logits = model(x)
    return F.cross_entropy(logits, y) + beta * F.kl_div(F.log_softmax(model(z), 1), F.softmax(logits, 1),
                                                        reduction="batchmean")


def minimal_losses() -> dict[str, Step]:
    """The minimal loss per method (GR and LLR: rll's own loss, see the module docstring)."""
    return {
        "natural": lambda m, x, y: F.cross_entropy(m(x), y),
        "gr": make_method("gr"), "llr": make_method("llr", eps=EPS),
        "at": lambda m, x, y: F.cross_entropy(m(_adv(m, x, y)), y),
        "trades": _trades,
        "rst": lambda m, x, y: F.cross_entropy(m(x), y) + F.cross_entropy(m(_adv(m, x, y)), y),
    }


def torchattacks_losses() -> dict[str, Step]:
    """AT and RST with torchattacks' PGD as the inner attack (empty when torchattacks is missing)."""
    try:
        import torchattacks
    except ImportError:
        return {}

    def adv(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torchattacks.PGD(m, eps=EPS, alpha=step_size(EPS, 10), steps=10, random_start=True)(x, y)

    return {"at": lambda m, x, y: F.cross_entropy(m(adv(m, x, y)), y),
            "rst": lambda m, x, y: F.cross_entropy(m(x), y) + F.cross_entropy(m(adv(m, x, y)), y)}


def minimal_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Step, batch: int,
                  precision: str = "fp32") -> None:
    """One epoch of SGD over ``x`` in order, batch slices of a float tensor; in bf16 each step's forward and
    backward inside the user's own ``torch.autocast`` (the usual mixed-precision loop)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    for s in range(0, len(x), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model, x[s:s + batch], y[s:s + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def load(n: int) -> tuple[str, torch.Tensor, torch.Tensor]:
    try:
        sub = load_fashion_mnist(split="train").subset(n, seed=0)
        return "Fashion-MNIST", torch.from_numpy(sub.images), torch.from_numpy(sub.labels)
    except DataError:
        g = torch.Generator().manual_seed(0)
        return "random", torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g), \
            torch.randint(0, 10, (n,), generator=g)


Key = tuple[str, str, str, str]  # method, implementation, model, precision


def cases(start: nn.Module, x8: torch.Tensor, y: torch.Tensor, methods: list[str], batch: int, auto: str
          ) -> dict[Key, Callable[[], None]]:
    """(method, implementation, model, precision) -> one epoch over the images from a fresh copy of the model."""
    xf = x8.float() / 255
    stock = stock_layers(start)
    out: dict[Key, Callable[[], None]] = {}
    impls = {"minimal": minimal_losses(), "torchattacks": torchattacks_losses()}
    for name in methods:
        method = make_method(name, **HYPER[name])
        for prec in dict.fromkeys((auto, "fp32")):
            out[(name, "rll", "rll", prec)] = lambda method=method, prec=prec: train(  # type: ignore[misc]
                copy.deepcopy(start), (x8, y), method, epochs=1, batch_size=batch, lr=LR, device="cpu",
                precision=prec, progress=False)
        for impl, losses in impls.items():
            if name in losses:
                for prec in dict.fromkeys(("fp32", auto)):  # the baselines at rll's precisions: equal ones compared
                    out[(name, impl, "stock", prec)] = lambda fn=losses[name], prec=prec: minimal_epoch(
                        copy.deepcopy(stock), xf, y, fn, batch, prec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="training images per case (default: 1024)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up (default: 5)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default: 64)")
    ap.add_argument("--methods", default="natural,at,trades", help=f"comma-separated, of {','.join(HYPER)} "
                    "(default: natural,at,trades)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    bad = sorted(set(methods) - set(HYPER))
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(HYPER)}")
    for k in ("n", "rounds", "batch"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be at least 1")
    auto = resolve_precision("auto", "cpu")
    src, x8, y = load(args.n)
    torch.manual_seed(0)
    start = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    print(machine())
    print(f"precision='auto' resolves to {auto} here; cnn001 on {args.n} {src} training images, batch {args.batch}, "
          f"eps {EPS}, SGD; median of {args.rounds} interleaved rounds after a warm-up", flush=True)
    times = interleaved(cases(start, x8, y, methods, args.batch, auto), args.rounds)
    print("\n| method | implementation | model | precision | img / CPU-s | img / wall-s | vs minimal, same precision "
          "| vs torchattacks, same precision | vs minimal fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, t in times.items():
        m, impl, mod, prec = key  # type: ignore[misc]
        ratios = []
        for b in ((m, "minimal", "stock", prec), (m, "torchattacks", "stock", prec), (m, "minimal", "stock", "fp32")):
            ratios.append(f"{paired_ratio(times, b, key):.2f}" if b in times else "-")
        print(f"| {m} | {impl} | {mod} | {prec} | {args.n / t.median('cpu'):.0f} | {args.n / t.median('wall'):.0f} "
              f"| {' | '.join(ratios)} |", flush=True)
    # issue 42's targets: an AT epoch (and every method's) >= 1.3x the plain loop and torchattacks in bf16, 1.2x in fp32
    checks = [(f"{m} epoch {p}, rll / {impl}", (m, impl, "stock", p), (m, "rll", "rll", p), 1.3 if p == "bf16" else 1.2)
              for m in methods if m != "natural" for p in dict.fromkeys((auto, "fp32")) for impl in ("minimal", "torchattacks")]
    print("\nTargets (issue 42), each at equal precision\n")
    print(target_table(times, checks), flush=True)


if __name__ == "__main__":
    main()
