"""Benchmark: seconds per training epoch for every method, rll's loop against a plain PyTorch loop.

Workload: cnn001 on Fashion-MNIST (Debian's dataset-fashion-mnist), batch 64, SGD; on CUDA also a
wrn-16-4 on CIFAR-shaped random data.  The plain loop is what a training script usually looks like:
a ``DataLoader`` over a ``TensorDataset`` of float images, and the method written inline the common way
(natural, AT and RST with a PGD that back-propagates into the parameters, TRADES as in its reference
code); GR and LLR, which have no common plain form, call rll's loss inside the plain loop.  Both loops
see the same images; the time is for ``--n`` images, scaled to a full epoch of the training split.

    python benchmarks/training.py                      # CPU, 1024 images per method
    python benchmarks/training.py --methods at --n 60000   # one full Fashion-MNIST AT epoch
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rll_core.data import load_fashion_mnist  # noqa: E402
from rll_core.methods import make_method  # noqa: E402
from rll_core.models import build_model  # noqa: E402
from rll_core.training import train  # noqa: E402

EPS = 0.1


def _plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 10) -> torch.Tensor:
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        model.zero_grad()
        loss.backward()
        x_adv = torch.min(torch.max(x_adv.detach() + 2 * EPS / steps * x_adv.grad.sign(), x - EPS), x + EPS).clamp(0, 1)
    model.train()
    return x_adv


def _plain_trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, beta: float = 6.0) -> torch.Tensor:
    model.eval()
    p_nat = F.softmax(model(x), 1).detach()
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(10):
        x_adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_nat, reduction="sum")
        (g,) = torch.autograd.grad(kl, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + 2 * EPS / 10 * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    model.train()
    logits = model(x)
    return F.cross_entropy(logits, y) + beta * F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1),
                                                        reduction="batchmean")


def plain_losses() -> dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]]:
    gr, llr = make_method("gr"), make_method("llr", eps=EPS)
    return {
        "natural": lambda m, x, y: F.cross_entropy(m(x), y),
        "gr": gr, "llr": llr,
        "at": lambda m, x, y: F.cross_entropy(m(_plain_pgd(m, x, y)), y),
        "trades": _plain_trades,
        "rst": lambda m, x, y: F.cross_entropy(m(x), y) + F.cross_entropy(m(_plain_pgd(m, x, y)), y),
    }


def plain_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, lr: float) -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.float() / 255, y), batch_size=64,
                                         shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for xb, yb in loader:
        loss = loss_fn(model, xb, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="training images timed per method")
    ap.add_argument("--methods", default="natural,gr,llr,at,trades,rst")
    args = ap.parse_args()
    ds = load_fashion_mnist(split="train")
    sub = ds.subset(args.n, seed=0)
    x, y = torch.from_numpy(sub.images), torch.from_numpy(sub.labels)
    plain = plain_losses()
    warm = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    train(warm, (x[:128], y[:128]), make_method("natural"), epochs=1, progress=False)  # one-time start-up costs
    plain_epoch(warm, x[:128], y[:128], plain["natural"], 0.01)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cnn001, Fashion-MNIST, batch 64, "
          f"{len(x)} images timed, per-epoch time scaled to {len(ds)} images")
    print("| method | rll s/epoch | plain s/epoch | plain / rll |")
    print("|---|---|---|---|")
    for name in args.methods.split(","):
        hyper = {} if name in ("natural", "gr") else {"eps": EPS}
        torch.manual_seed(0)
        model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
        t = time.perf_counter()
        train(model, (x, y), make_method(name, **hyper), epochs=1, batch_size=64, lr=0.01, progress=False)
        t_rll = (time.perf_counter() - t) * len(ds) / len(x)
        torch.manual_seed(0)
        model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
        t = time.perf_counter()
        plain_epoch(model, x, y, plain[name], 0.01)
        t_plain = (time.perf_counter() - t) * len(ds) / len(x)
        print(f"| {name} | {t_rll:.0f} | {t_plain:.0f} | {t_plain / t_rll:.2f} |", flush=True)


if __name__ == "__main__":
    main()
