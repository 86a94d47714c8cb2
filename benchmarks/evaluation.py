"""Benchmark: attack and Lipschitz-estimate throughput of rll_core against a minimal loop and other libraries.

Every row attacks the same images with the same trained weights (cnn001, one seeded epoch on 4,000
Fashion-MNIST images; random images if the data is missing) in the same process.  Each case is run once
to warm up, then ``--rounds`` times with the cases interleaved round by round (so a slow spell of the
machine hits every case alike); the table prints the median images/s and each case's ratio to the
minimal loop of the same batch size and precision.

* ``minimal``: the least a PGD can do in PyTorch: gradients with respect to the input only
  (``torch.autograd.grad``), the step and the projection in place against bounds computed once, no
  checks, no verdict forward.  The multi-targeted and Lipschitz minima are the same loop on their
  objective (the Lipschitz one records the ratio at every iterate, as rll does).
* ``rll``: :func:`rll_core.attacks.pgd` / ``multi_targeted`` as :func:`rll_core.evaluation.evaluate` calls
  them (inputs checked once per set, the multi-targeted attack stopping at a point's first success),
  and :func:`rll_core.lipschitz.local_lipschitz`.
* ``torchattacks`` (3.5.1, ``pip install --no-deps torchattacks``) and ART's ``ProjectedGradientDescent``
  PGD rows, when importable.
* bf16: the same calls under ``torch.autocast(<device>, bfloat16)``, by default only on a CPU with native
  bf16 arithmetic (``avx512_bf16`` or ``amx_bf16``): without it (AVX2) bf16 runs emulated, one 1024^2
  matmul taking 160x its float32 time here.

    python benchmarks/evaluation.py                      # CPU (and CUDA when present)
    python benchmarks/evaluation.py --n 512 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rll_core._search import box  # noqa: E402
from rll_core.attacks import multi_targeted, pgd  # noqa: E402
from rll_core.data import DataError, load_fashion_mnist  # noqa: E402
from rll_core.lipschitz import local_lipschitz  # noqa: E402
from rll_core.models import build_model  # noqa: E402

EPS = 0.1


def minimal_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
                objective: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The leanest PGD: input-only gradients, in-place step and clamp against precomputed bounds."""
    lo, hi = box(x, eps)
    z = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), lo, hi)
    for _ in range(steps):
        zg = z.detach().requires_grad_(True)
        out = model(zg)
        loss = F.cross_entropy(out, y, reduction="sum") if objective is None else objective(out)
        (g,) = torch.autograd.grad(loss, zg)
        z.add_(g.sign_(), alpha=step)
        torch.clamp(z, lo, hi, out=z)
    return z


def minimal_multitarget(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float,
                        steps: int, k: int) -> torch.Tensor:
    best = x.clone()
    alive = torch.ones(len(x), dtype=torch.bool)
    for shift in range(1, k):
        idx = alive.nonzero()[:, 0]
        if len(idx) == 0:
            break
        xa, ya = x[idx], y[idx]
        t = (ya + shift) % k
        z = minimal_pgd(model, xa, ya, eps, step, steps,
                        lambda out, t=t, ya=ya: (out.gather(1, t[:, None]) - out.gather(1, ya[:, None])).sum())
        with torch.no_grad():
            fooled = model(z).argmax(1) != ya
        best[idx[fooled]] = z[fooled]
        alive[idx[fooled]] = False
    return best


def minimal_lipschitz(model: nn.Module, x: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    with torch.no_grad():
        fx = model(x)
    lo, hi = box(x, eps)
    z = torch.clamp(x + 0.001 * torch.randn_like(x), lo, hi)
    best = torch.zeros(len(x))
    for _ in range(steps):
        zg = z.detach().requires_grad_(True)
        fz = model(zg)
        (g,) = torch.autograd.grad((fz - fx).abs().sum(), zg)
        ratio = (fz.detach() - fx).abs().sum(1) / (z - x).flatten(1).abs().amax(1).clamp_min(1e-12)
        best = torch.maximum(best, ratio)
        z.add_(g.sign_(), alpha=step)
        torch.clamp(z, lo, hi, out=z)
    return best


def trained_model(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """cnn001 after one seeded Adam epoch on the data (trained weights: attacks behave as on real models)."""
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for s in range(0, len(x), 64):
        opt.zero_grad()
        F.cross_entropy(model(x[s:s + 64]), y[s:s + 64]).backward()
        opt.step()
    return model.eval()


def load(n: int) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        tr, te = load_fashion_mnist(split="train").subset(4000, seed=1), load_fashion_mnist(split="test").subset(n, 0)
        return ("Fashion-MNIST", torch.from_numpy(tr.float_images()), torch.from_numpy(tr.labels),
                torch.from_numpy(te.float_images()), torch.from_numpy(te.labels))
    except DataError:
        g = torch.Generator().manual_seed(0)
        return ("random", torch.rand(4000, 1, 28, 28, generator=g), torch.randint(0, 10, (4000,), generator=g),
                torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def batched(fn: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, y: torch.Tensor,
            batch: int) -> Callable[[], None]:
    def run() -> None:
        for s in range(0, len(x), batch):
            fn(x[s:s + batch], y[s:s + batch])
    return run


def cases(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> dict[tuple[str, str], Callable[[], None]]:
    """(task, implementation) -> a call over all images in batches of ``batch``."""
    step10, step20 = 2 * EPS / 10, 2 * EPS / 20
    out: dict[tuple[str, str], Callable[[], None]] = {
        ("PGD-10", "rll"): batched(lambda a, b: pgd(model, a, b, eps=EPS, step_size=step10, steps=10,
                                                    validate=False), x, y, batch),
        ("PGD-10", "minimal"): batched(lambda a, b: minimal_pgd(model, a, b, EPS, step10, 10), x, y, batch),
        ("multi-targeted 9x20", "rll"): batched(lambda a, b: multi_targeted(
            model, a, b, eps=EPS, step_size=step20, steps=20, stop_when_fooled=True, validate=False), x, y, batch),
        ("multi-targeted 9x20", "minimal"): batched(lambda a, b: minimal_multitarget(model, a, b, EPS, step20, 20, 10),
                                                    x, y, batch),
        ("Lipschitz 10 steps", "rll"): batched(lambda a, b: local_lipschitz(model, a, eps=EPS, steps=10,
                                                                            batch_size=batch), x, y, len(x)),
        ("Lipschitz 10 steps", "minimal"): batched(lambda a, b: minimal_lipschitz(model, a, EPS, step10, 10),
                                                   x, y, batch),
    }
    with contextlib.suppress(ImportError):
        import torchattacks

        ta = torchattacks.PGD(model, eps=EPS, alpha=step10, steps=10, random_start=True)
        out[("PGD-10", "torchattacks")] = batched(lambda a, b: ta(a, b), x, y, batch)
    with contextlib.suppress(ImportError):
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                clip_values=(0.0, 1.0), device_type="cpu")
        art = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=EPS, eps_step=step10, max_iter=10,
                                              num_random_init=1, batch_size=batch, verbose=False)
        out[("PGD-10", "ART")] = lambda: art.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()])
    return out


def agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Does bf16 keep the numbers?  PGD-10 robust accuracy and mean local Lipschitz, fp32 against bf16, with
    95 % Wilson intervals (accuracy) and standard errors (Lipschitz), same seeds."""
    from rll_core.evaluation import evaluate

    for p in ("fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p == "bf16"):
            r = evaluate(model, x, y, eps=EPS, attacks=("pgd",), seed=0, progress=False)
            lip = local_lipschitz(model, x, eps=EPS, generator=torch.Generator().manual_seed(0)).double()
        acc, n = r.adversarial_accuracy["pgd"], r.n
        z = 1.959964
        c, h = (acc + z * z / (2 * n)) / (1 + z * z / n), z * (acc * (1 - acc) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
        print(f"{p}: PGD-10 accuracy {acc:.3f} [{c - h:.3f}, {c + h:.3f}] (n = {n}), mean local Lipschitz "
              f"{float(lip.mean()):.2f} ± {float(lip.std() / len(lip) ** 0.5):.2f} (s.e.)", flush=True)


def cpu_has_bf16() -> bool:
    """Whether the CPU does bf16 arithmetic natively (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="test images attacked per case (default: 256)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per case after a warm-up (default: 3)")
    ap.add_argument("--batches", default="64,256", help="batch sizes (default: 64,256)")
    ap.add_argument("--precisions", default="fp32,bf16" if cpu_has_bf16() else "fp32",
                    help="fp32 and/or bf16 autocast (default: both where the CPU has native bf16, else fp32)")
    args = ap.parse_args()
    src, xtr, ytr, x, y = load(args.n)
    model = trained_model(xtr, ytr)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}"
          f" (native bf16: {cpu_has_bf16()}), cnn001 trained on {src}, {args.n} test images, eps {EPS}, median of "
          f"{args.rounds} interleaved rounds", flush=True)
    table: dict[tuple[str, str, int, str], list[float]] = {}
    runs = {(task, impl, b, p): fn for b in map(int, args.batches.split(",")) for p in args.precisions.split(",")
            for (task, impl), fn in cases(model, x, y, b).items() if not (p == "bf16" and impl in ("ART",))}

    def timed(key: tuple[str, str, int, str]) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[3] == "bf16"):
            t = time.perf_counter()
            runs[key]()
            return time.perf_counter() - t

    for key in runs:
        timed(key)  # warm-up
    for _ in range(args.rounds):
        for key in runs:
            table.setdefault(key, []).append(timed(key))
    if "bf16" in args.precisions:
        agreement(model, x, y)
    print("| task | implementation | batch | precision | img/s | / minimal (same batch, precision) |")
    print("|---|---|---|---|---|---|")
    for (task, impl, b, p), ts in table.items():
        med = statistics.median(ts)
        base = statistics.median(table[(task, "minimal", b, p)])
        print(f"| {task} | {impl} | {b} | {p} | {args.n / med:.1f} | {base / med:.2f} |", flush=True)


if __name__ == "__main__":
    main()
