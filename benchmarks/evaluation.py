"""Benchmark: attack and Lipschitz-estimate throughput of rll_core against a plain PyTorch loop.

The baseline is PGD written the common way: ``x.requires_grad_()``, ``loss.backward()`` (which also
fills the parameters' ``.grad``), ``model.zero_grad()`` each step, the model left in eval mode.  The
multi-targeted and Lipschitz baselines are the same loop with their own objective.  Every row runs on
the same images in the same process; the ratio column is rll's images/s over the baseline's.

    python benchmarks/evaluation.py                # CPU (and CUDA when present)
    python benchmarks/evaluation.py --n 256 --devices cpu
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

from rll_core.attacks import multi_targeted, pgd  # noqa: E402
from rll_core.data import DataError, load_fashion_mnist  # noqa: E402
from rll_core.lipschitz import local_lipschitz  # noqa: E402
from rll_core.models import build_model  # noqa: E402


def plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
              objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """PGD the way most scripts write it (backward through the parameters too)."""
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = model(x_adv)
        loss = F.cross_entropy(out, y) if objective is None else objective(out, x_adv)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            x_adv = x_adv + step * x_adv.grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def plain_multitarget(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float,
                      steps: int, k: int) -> torch.Tensor:
    best = x.clone()
    for shift in range(1, k):
        t = (y + shift) % k
        xa = plain_pgd(model, x, y, eps, step, steps,
                       lambda out, _, t=t: (out.gather(1, t[:, None]) - out.gather(1, y[:, None])).sum())
        with torch.no_grad():
            fooled = model(xa).argmax(1) != y
        best[fooled] = xa[fooled]
    return best


def plain_lipschitz(model: nn.Module, x: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    with torch.no_grad():
        fx = model(x)
    plain_pgd(model, x, torch.zeros(len(x), dtype=torch.long, device=x.device), eps, step, steps,
              lambda out, _: (out - fx).abs().sum())
    return fx


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        fn()  # warm-up (allocator, kernels)
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def workloads(n: int) -> list[tuple[str, str, torch.Tensor, torch.Tensor, float]]:
    try:
        ds = load_fashion_mnist(split="test").subset(n, seed=0)
        x28, y28, src = torch.from_numpy(ds.float_images()), torch.from_numpy(ds.labels), "Fashion-MNIST"
    except DataError:
        g = torch.Generator().manual_seed(0)
        x28, y28, src = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), "random"
    g = torch.Generator().manual_seed(1)
    m = max(8, n // 16)
    x32, y32 = torch.rand(m, 3, 32, 32, generator=g), torch.randint(0, 10, (m,), generator=g)
    return [("cnn001", f"{src} 28x28", x28, y28, 0.1), ("wrn-16-4", "random 32x32x3", x32, y32, 0.031)]


def _tasks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
           eps: float) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(task, rll's call, the plain loop's call) on one model and batch."""
    return [
        ("PGD-10", lambda: pgd(model, x, y, eps=eps, step_size=eps / 5, steps=10),
         lambda: plain_pgd(model, x, y, eps, eps / 5, 10)),
        ("multi-targeted 9x20", lambda: multi_targeted(model, x, y, eps=eps, step_size=eps / 10, steps=20),
         lambda: plain_multitarget(model, x, y, eps, eps / 10, 20, 10)),
        ("Lipschitz 10 steps", lambda: local_lipschitz(model, x, eps=eps, steps=10),
         lambda: plain_lipschitz(model, x, eps, eps / 5, 10)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images for cnn001 (the WRN gets n / 16)")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | data | device | task | n | rll img/s | plain img/s | rll / plain |")
    print("|---|---|---|---|---|---|---|---|")
    for name, data, x0, y0, eps in workloads(args.n):
        for dev_name in args.devices.split(","):
            dev = torch.device(dev_name)
            torch.manual_seed(0)
            model = build_model(name, in_channels=x0.shape[1], num_classes=10, image_size=x0.shape[-1]).to(dev)
            x, y = x0.to(dev), y0.to(dev)
            tasks = _tasks(model, x, y, eps)
            for task, ours, plain in tasks:
                t_ours, t_plain = timed(ours, dev), timed(plain, dev)
                print(f"| {name} | {data} | {dev_name} | {task} | {len(x)} | {len(x) / t_ours:.1f} | "
                      f"{len(x) / t_plain:.1f} | {t_plain / t_ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
