"""Benchmark: training throughput of every method, rll's ``train`` against a minimal loop and torchattacks.

Every case trains a copy of the same seeded cnn001 on the same ``--n`` Fashion-MNIST training images
(random images if the data is missing), batch by batch in one fixed order, SGD with momentum.  Each case
runs once to warm up, then ``--rounds`` times with the cases interleaved round by round; the table prints
the median seconds per 1,024 images, images/s and the ratio to the minimal loop of the same method,
batch size and precision (> 1: faster than the minimal loop).

* ``minimal``: the least a training step can do in PyTorch: slices of a float tensor (no DataLoader),
  the inner PGD / TRADES search in eval mode with gradients with respect to the input only, in place
  against bounds computed once (``evaluation.minimal_pgd``), ``zero_grad(set_to_none=True)``.  GR and
  LLR have no common minimal form: that row calls rll's loss inside the minimal loop, so its ratio
  measures the training loop alone.
* ``rll``: :func:`rll_core.training.train` for one epoch with ``make_method(name)`` (everything the
  package does per run: seeding, shuffling, the loss's checks, the history).
* ``torchattacks``: AT and RST with ``torchattacks.PGD`` as the inner attack, in the minimal loop.
* bf16: ``train(..., amp=True)`` and the other loops under ``torch.autocast``, by default only on a CPU
  with native bf16 arithmetic (see ``evaluation.cpu_has_bf16``).

    python benchmarks/training.py                      # 1,024 images, batch 64 and 256, 3 rounds
    python benchmarks/training.py --methods at --n 4096 --batches 64
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluation import cpu_has_bf16, minimal_pgd  # noqa: E402

from rll_core._search import eval_mode  # noqa: E402
from rll_core.data import DataError, load_fashion_mnist  # noqa: E402
from rll_core.methods import make_method  # noqa: E402
from rll_core.models import build_model  # noqa: E402
from rll_core.paper import step_size  # noqa: E402
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


def minimal_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Step, batch: int) -> None:
    """One epoch of SGD over ``x`` in order, batch slices of a float tensor."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()
    for s in range(0, len(x), batch):
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


def cases(start: nn.Module, x8: torch.Tensor, y: torch.Tensor, methods: list[str], batch: int, bf16: bool
          ) -> dict[tuple[str, str], Callable[[], None]]:
    """(method, implementation) -> one epoch over the images from a fresh copy of ``start``."""
    xf = x8.float() / 255
    out: dict[tuple[str, str], Callable[[], None]] = {}
    impls = {"minimal": minimal_losses(), "torchattacks": torchattacks_losses()}
    for name in methods:
        method = make_method(name, **HYPER[name])
        out[(name, "rll")] = lambda method=method: train(  # type: ignore[misc]
            copy.deepcopy(start), (x8, y), method, epochs=1, batch_size=batch, lr=LR, device="cpu", amp=bf16,
            progress=False)
        for impl, losses in impls.items():
            if name in losses:
                out[(name, impl)] = lambda fn=losses[name]: minimal_epoch(copy.deepcopy(start), xf, y, fn, batch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="training images per case (default: 1024)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per case after a warm-up (default: 3)")
    ap.add_argument("--batches", default="64,256", help="batch sizes (default: 64,256)")
    ap.add_argument("--methods", default=",".join(HYPER), help=f"comma-separated (default: {','.join(HYPER)})")
    ap.add_argument("--precisions", default="fp32,bf16" if cpu_has_bf16() else "fp32",
                    help="fp32 and/or bf16 autocast (default: both where the CPU has native bf16, else fp32)")
    args = ap.parse_args()
    methods = args.methods.split(",")
    bad = sorted(set(methods) - set(HYPER))
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(HYPER)}")
    src, x8, y = load(args.n)
    torch.manual_seed(0)
    start = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}"
          f" (native bf16: {cpu_has_bf16()}), cnn001 on {args.n} {src} training images, eps {EPS}, SGD, median of "
          f"{args.rounds} interleaved rounds after a warm-up", flush=True)
    runs = {(m, impl, b, p): fn for b in map(int, args.batches.split(",")) for p in args.precisions.split(",")
            for (m, impl), fn in cases(start, x8, y, methods, b, p == "bf16").items()}

    def timed(key: tuple[str, str, int, str]) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[3] == "bf16" and key[1] != "rll"):
            t = time.perf_counter()
            runs[key]()
            return time.perf_counter() - t

    for key in runs:
        timed(key)
    table: dict[tuple[str, str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for key in runs:
            table.setdefault(key, []).append(timed(key))
    print("| method | implementation | batch | precision | s / 1,024 img | img/s | minimal / this |")
    print("|---|---|---|---|---|---|---|")
    for (m, impl, b, p), ts in table.items():
        med, base = statistics.median(ts), statistics.median(table[(m, "minimal", b, p)])
        print(f"| {m} | {impl} | {b} | {p} | {med * 1024 / args.n:.2f} | {args.n / med:.0f} | {base / med:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
