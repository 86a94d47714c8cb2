"""Benchmark: attacks and the local Lipschitz estimate, rll against a minimal loop and its peers in one run,
and whether bf16 keeps the numbers.

Every row attacks the same test images with the same trained weights (cnn001, one seeded Adam epoch on 4,000
Fashion-MNIST images; random images if the data is missing).  Two copies of the model, equal in every weight:

* ``rll``: the model as ``rll_core.models.build_model`` builds it (its ``MaxPool2x2``: ``nn.MaxPool2d(2)``'s
  results bit for bit through PyTorch's channels_last kernel);
* ``stock``: the same architecture from stock PyTorch layers (``nn.MaxPool2d``): what a peer's user attacks.

Implementations:

* ``rll``: :func:`rll_core.attacks.pgd`, ``multi_targeted`` (as ``evaluate`` calls them: inputs checked once
  per set, the multi-targeted attack stopping at a point's first success), ``local_lipschitz`` and
  ``autoattack`` at ``precision="auto"`` (bf16 gradient passes where the CPU computes bf16 natively, fp32
  verdicts) and at ``precision="fp32"``;
* ``minimal``: the least each attack can do in PyTorch (input-only gradients, in-place steps against bounds
  computed once, no checks, no verdict forward; the Lipschitz loop records every iterate's ratio, as rll's);
* ``torchattacks`` (3.5.1) PGD, and its four AutoAttack parts built directly (APGD-CE, APGD-T, FAB-T, Square
  at the standard version's settings, in its ``MultiAttack``); ART's ``ProjectedGradientDescentPyTorch``.

Timing: ``benchmarks/_timing.py`` (interleaved rounds; CPU seconds and wall time; paired median ratios).  The
ratios are per CPU second against the minimal loop and torchattacks on the stock model *at the row's own
precision* (in bf16 the baselines run inside ``torch.autocast``: rll is "ahead" only where that ratio says so),
and against the fp32 minimal loop (what one would run without rll).  Then the agreement of fp32 and bf16 on two trained models (natural, AT) at
``--n-agree`` test points: PGD-10 and multi-targeted accuracy with 95 % Wilson intervals, mean local
Lipschitz with its standard error, and how many points' verdicts differ.

    python benchmarks/evaluation.py                       # ~10 minutes on 2 cores
    python benchmarks/evaluation.py --n 128 --rounds 3 --n-agree 500 --skip-autoattack
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved, machine, paired_ratio, target_table  # noqa: E402

from rll_core._search import box  # noqa: E402
from rll_core.attacks import autoattack, multi_targeted, pgd  # noqa: E402
from rll_core.data import DataError, load_fashion_mnist  # noqa: E402
from rll_core.evaluation import evaluate, paper_attack  # noqa: E402
from rll_core.lipschitz import local_lipschitz  # noqa: E402
from rll_core.methods import AT, Natural  # noqa: E402
from rll_core.models import MaxPool2x2, build_model  # noqa: E402
from rll_core.precision import resolve_precision  # noqa: E402
from rll_core.stats import wilson_interval  # noqa: E402
from rll_core.training import train  # noqa: E402

EPS = 0.1
STEP10, STEP20 = 2 * EPS / 10, 2 * EPS / 20


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


def stock_layers(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``MaxPool2x2`` replaced by ``nn.MaxPool2d(2)`` (the same function)."""
    out = copy.deepcopy(model)
    for mod in list(out.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, MaxPool2x2):
                setattr(mod, child_name, nn.MaxPool2d(2))
    return out.eval()


def load(n: int) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4,000 training images and ``n`` test images of Fashion-MNIST (random images without the data)."""
    try:
        tr, te = load_fashion_mnist(split="train").subset(4000, seed=1), load_fashion_mnist(split="test").subset(n, 0)
        return ("Fashion-MNIST", torch.from_numpy(tr.float_images()), torch.from_numpy(tr.labels),
                torch.from_numpy(te.float_images()), torch.from_numpy(te.labels))
    except DataError:
        g = torch.Generator().manual_seed(0)
        return ("random", torch.rand(4000, 1, 28, 28, generator=g), torch.randint(0, 10, (4000,), generator=g),
                torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def trained(method: object, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """cnn001 after one seeded Adam epoch of ``method`` on the data, trained in fp32."""
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    train(model, (x, y), method, epochs=1, batch_size=64, optimizer="adam", lr=1e-3, device="cpu",
          precision="fp32", progress=False)
    return model.eval()


def batched(fn: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, y: torch.Tensor,
            batch: int) -> Callable[[], None]:
    def run() -> None:
        for s in range(0, len(x), batch):
            fn(x[s:s + batch], y[s:s + batch])
    return run


Key = tuple[str, str, str, str]  # task, implementation, model, precision


def in_precision(fn: Callable[[torch.Tensor, torch.Tensor], object],
                 precision: str) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """``fn`` as a user runs it at ``precision``: as it is in fp32, inside ``torch.autocast(bfloat16)`` in bf16."""
    if precision == "fp32":
        return fn

    def wrapped(a: torch.Tensor, b: torch.Tensor) -> object:
        with torch.autocast(a.device.type, dtype=torch.bfloat16):
            return fn(a, b)
    return wrapped


def cases(model: nn.Module, stock: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, auto: str,
          n_aa: int) -> dict[Key, Callable[[], None]]:
    """(task, implementation, model, precision) -> a call over the images in batches of ``batch``."""
    out: dict[Key, Callable[[], None]] = {}
    for prec in dict.fromkeys((auto, "fp32")):
        out[("PGD-10", "rll", "rll", prec)] = batched(lambda a, b, p=prec: pgd(
            model, a, b, eps=EPS, step_size=STEP10, steps=10, validate=False, precision=p), x, y, batch)
        out[("multi-targeted 9x20", "rll", "rll", prec)] = batched(lambda a, b, p=prec: multi_targeted(
            model, a, b, eps=EPS, step_size=STEP20, steps=20, stop_when_fooled=True, validate=False, precision=p),
            x, y, batch)
        out[("PGD-10 (any-iterate)", "rll", "rll", prec)] = batched(lambda a, b, p=prec: pgd(
            model, a, b, eps=EPS, step_size=STEP10, steps=10, stop_when_fooled=True, validate=False, precision=p),
            x, y, batch)
        out[("Lipschitz 10 steps", "rll", "rll", prec)] = lambda p=prec: local_lipschitz(
            model, x, eps=EPS, steps=10, batch_size=batch, precision=p)
    out[("PGD-10", "rll", "stock", "fp32")] = batched(lambda a, b: pgd(
        stock, a, b, eps=EPS, step_size=STEP10, steps=10, validate=False, precision="fp32"), x, y, batch)
    # the baselines at every precision rll runs at: fp32, and bf16 inside the user's own torch.autocast (what a
    # peer gets from one line of its user's code), so every ratio below compares equal precisions
    for prec in dict.fromkeys(("fp32", auto)):
        for name, m in (("stock", stock), ("rll", model)):  # the plain loop on the stock layers and on rll's own
            out[("PGD-10", "minimal", name, prec)] = batched(in_precision(
                lambda a, b, m=m: minimal_pgd(m, a, b, EPS, STEP10, 10), prec), x, y, batch)
            out[("multi-targeted 9x20", "minimal", name, prec)] = batched(in_precision(
                lambda a, b, m=m: minimal_multitarget(m, a, b, EPS, STEP20, 20, 10), prec), x, y, batch)
        out[("Lipschitz 10 steps", "minimal", "stock", prec)] = batched(in_precision(
            lambda a, b: minimal_lipschitz(stock, a, EPS, STEP10, 10), prec), x, y, batch)
    with contextlib.suppress(ImportError):
        import torchattacks

        for name, m in (("stock", stock), ("rll", model)):
            ta = torchattacks.PGD(m, eps=EPS, alpha=STEP10, steps=10, random_start=True)
            for prec in dict.fromkeys(("fp32", auto)):
                out[("PGD-10", "torchattacks", name, prec)] = batched(in_precision(
                    lambda a, b, ta=ta: ta(a, b), prec), x, y, batch)
        if n_aa:
            xa, ya = x[:n_aa], y[:n_aa]
            # torchattacks' code in fp32 whatever the precision (its own verdicts decide which points go on)
            out[("AutoAttack standard", "rll", "rll", "fp32")] = lambda: autoattack(model, xa, ya, eps=EPS)
            out[("AutoAttack standard", "torchattacks", "stock", "fp32")] = lambda: autoattack_parts(stock, xa, ya)
    with contextlib.suppress(ImportError):
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=stock, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                clip_values=(0.0, 1.0), device_type="cpu")
        art = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=EPS, eps_step=STEP10, max_iter=10,
                                              num_random_init=1, batch_size=batch, verbose=False)
        out[("PGD-10", "ART", "stock", "fp32")] = lambda: art.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()])
    return out


def autoattack_parts(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torchattacks' four AutoAttack parts at the standard version's settings, in its MultiAttack, directly."""
    import torchattacks

    c = {"norm": "Linf", "eps": EPS, "seed": 0}
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, steps=100, n_restarts=1, loss="ce", eot_iter=1, rho=0.75, **c),
        torchattacks.APGDT(model, steps=100, n_restarts=1, n_classes=10, eot_iter=1, rho=0.75, **c),
        torchattacks.FAB(model, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, **c),
        torchattacks.Square(model, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, **c)])(x, y)


def _acc(acc: float, n: int) -> str:
    lo, hi = wilson_interval(acc, n)
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"


def agreement(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
    """fp32 against bf16 on each model: robust accuracies (95 % Wilson) and mean Lipschitz (± 1.96 s.e.),
    the same seeds; 'inside' when bf16's value lies in fp32's interval."""
    print(f"\nDoes bf16 keep the numbers? n = {len(x)} test points, eps {EPS}, seed 0 for both precisions\n")
    print("| model | measure | fp32 | bf16 | points that differ | bf16 inside fp32's 95 % interval |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        res, lip = {}, {}
        for p in ("fp32", "bf16"):
            res[p] = evaluate(model, x, y, eps=EPS, attacks=("pgd", "multitarget"), seed=0, progress=False,
                              precision=p)
            lip[p] = local_lipschitz(model, x, eps=EPS, precision=p, generator=torch.Generator().manual_seed(0)).double()
        for attack in ("pgd", "multitarget"):
            a32, a16 = (res[p].adversarial_accuracy[attack] for p in ("fp32", "bf16"))
            lo, hi = wilson_interval(a32, len(x))
            differ = int((res["fp32"].correct[attack] != res["bf16"].correct[attack]).sum())
            print(f"| {name} | {attack} accuracy | {_acc(a32, len(x))} | {_acc(a16, len(x))} | {differ} | "
                  f"{'yes' if lo <= a16 <= hi else 'NO'} |")
        m32, s32 = float(lip["fp32"].mean()), float(lip["fp32"].std() / len(x) ** 0.5)
        m16, s16 = float(lip["bf16"].mean()), float(lip["bf16"].std() / len(x) ** 0.5)
        rel = float(((lip["bf16"] - lip["fp32"]).abs() / lip["fp32"].clamp_min(1e-12)).median())
        print(f"| {name} | mean local Lipschitz | {m32:.2f} ± {s32:.2f} | {m16:.2f} ± {s16:.2f} | median |Δ| "
              f"{100 * rel:.1f} % per point | {'yes' if abs(m16 - m32) <= 1.96 * s32 else 'NO'} |", flush=True)


def any_iterate(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> None:
    """How often the any-iterate PGD (``stop_when_fooled``) and the paper's last-iterate PGD disagree: points robust
    at the last iterate but fooled at an earlier one, per model and precision (the same seed for both)."""
    print(f"\nPGD-10 at eps {EPS}: the paper's last-iterate verdict against the any-iterate mode, n = {len(x)}\n")
    print("| model | precision | last-iterate accuracy | any-iterate accuracy | fooled at some iterate, robust at the last |")
    print("|---|---|---|---|---|")
    for name, model in models.items():
        for p in dict.fromkeys(("fp32", resolve_precision("auto", "cpu"))):
            last, anyi = (evaluate(model, x, y, eps=EPS, attacks=(spec,), seed=0, progress=False, precision=p)
                          for spec in (paper_attack("pgd", EPS), paper_attack("pgd", EPS, stop_when_fooled=True)))
            differ = int((last.correct["pgd"] & ~anyi.correct["pgd"]).sum())
            print(f"| {name} | {p} | {_acc(last.adversarial_accuracy['pgd'], len(x))} | "
                  f"{_acc(anyi.adversarial_accuracy['pgd'], len(x))} | {differ} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="test images attacked per timed case (default: 256)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up (default: 5)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default: 64)")
    ap.add_argument("--n-autoattack", type=int, default=10, help="points AutoAttack attacks (default: 10)")
    ap.add_argument("--skip-autoattack", action="store_true", help="no AutoAttack rows")
    ap.add_argument("--n-agree", type=int, default=500, help="test points of the fp32/bf16 agreement (default: 500)")
    args = ap.parse_args()
    for k in ("n", "rounds", "batch", "n_agree"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be at least 1")
    auto = resolve_precision("auto", "cpu")
    src, xtr, ytr, x, y = load(max(args.n, args.n_agree))
    print(machine())
    print(f"precision='auto' resolves to {auto} here; cnn001 trained one epoch on 4,000 {src} images; {args.n} test "
          f"images per case, batch {args.batch}, eps {EPS}; median of {args.rounds} interleaved rounds", flush=True)
    model = trained(Natural(), xtr, ytr)
    stock = stock_layers(model)
    runs = cases(model, stock, x[:args.n], y[:args.n], args.batch, auto,
                 0 if args.skip_autoattack else args.n_autoattack)
    times = interleaved(runs, args.rounds)
    report(times, args.n, args.n_autoattack, auto)
    both = {"natural": model, "AT (PGD-10)": trained(AT(eps=EPS), xtr, ytr)}
    agreement(both, x[:args.n_agree], y[:args.n_agree])
    any_iterate(both, x[:args.n_agree], y[:args.n_agree])


def report(times: dict[Hashable, object], n: int, n_aa: int, auto: str) -> None:
    """Every row with its ratios to the minimal loop and to torchattacks at the row's own precision (a bf16 row
    against the peer inside torch.autocast), and to the fp32 minimal loop (what one runs without rll)."""
    print("\n| task | implementation | model | precision | img / CPU-s | img / wall-s | vs minimal, same precision "
          "| vs torchattacks, same precision | vs minimal fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, t in times.items():
        task, impl, mod, prec = key  # type: ignore[misc]
        k = n_aa if task.startswith("AutoAttack") else n
        base = task.split(" (")[0]  # a mode of an attack is compared with that attack's baselines
        ratios = []
        for b in ((base, "minimal", "stock", prec), (base, "torchattacks", "stock", prec),
                  (base, "minimal", "stock", "fp32")):
            ratios.append(f"{paired_ratio(times, b, key):.2f}" if b in times else "-")  # type: ignore[arg-type]
        print(f"| {task} | {impl} | {mod} | {prec} | {k / t.median('cpu'):.1f} | {k / t.median('wall'):.1f} | "  # type: ignore[attr-defined]
              f"{' | '.join(ratios)} |", flush=True)
    print("\nTargets (issue 42), each at equal precision; 'same model': the plain loop on rll's own layers\n")
    print(target_table(times, targets(auto)), flush=True)  # type: ignore[arg-type]


def targets(auto: str) -> list[tuple[str, Key, Key, float]]:
    """Issue 42's targets: PGD-10 and multi-targeted >= 1.3x the plain loop and torchattacks in bf16 and >= 1.2x in
    fp32, and at least level (1.0x) with the plain loop on rll's own model; the Lipschitz ascent >= 1.9x the plain
    fp32 loop in bf16 and >= 1.0x it in fp32."""
    out: list[tuple[str, Key, Key, float]] = []
    for prec in dict.fromkeys((auto, "fp32")):
        goal = 1.3 if prec == "bf16" else 1.2
        for task in ("PGD-10", "multi-targeted 9x20"):
            row: Key = (task, "rll", "rll", prec)
            out += [(f"{task} {prec}, rll / plain loop", (task, "minimal", "stock", prec), row, goal),
                    (f"{task} {prec}, rll / torchattacks", (task, "torchattacks", "stock", prec), row, goal),
                    (f"{task} {prec}, rll / plain loop, same model", (task, "minimal", "rll", prec), row, 1.0)]
        out.append((f"Lipschitz 10 steps {prec}, rll / plain fp32 loop", ("Lipschitz 10 steps", "minimal", "stock",
                    "fp32"), ("Lipschitz 10 steps", "rll", "rll", prec), 1.9 if prec == "bf16" else 1.0))
    return out


if __name__ == "__main__":
    main()
