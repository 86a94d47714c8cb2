"""`make gpu-check`: the GPU path verified in one command, with a markdown report (printed and saved).

Sections, each timed and each failing on its own (a broken section is reported, the rest still run):

1. environment: torch, CUDA device and capability, Triton;
2. ``pytest -m gpu``: the Triton kernel against the CPU kernels, CUDA attacks and training steps;
3. separation: the CUDA backends (Triton, torch) on full MNIST and Fashion-MNIST train-train and on random
   CIFAR-10-shaped data, beside the CPU kernel (numba) on a subset, in pairs/s;
4. training throughput (images/s): natural, AT and TRADES for cnn001 on MNIST and wrn-16-4 (wrn-10-1 with
   ``--tiny``) on random CIFAR-shaped data, in fp32, ``precision="auto"`` (bf16 on sm_80+), fp32 channels_last
   and fp32 ``torch.compile``;
5. attack and local-Lipschitz throughput (images/s), fp32 and ``precision="auto"``;
6. end to end: ``rll train`` with the paper's settings for a few epochs of AT on MNIST, then ``rll evaluate``
   and ``rll card`` on the device.

No network.  On an H100/H200 it is sized to finish in about 8 minutes.  ``--tiny`` runs every section at toy
sizes on the CPU (the test-suite does, so the script cannot rot between GPU sessions).

    python benchmarks/gpu_check.py --out results/gpu-check.md        # on a GPU machine
    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rll_core.attacks import multi_targeted, pgd  # noqa: E402
from rll_core.data import DataError, ImageDataset, load_train_test  # noqa: E402
from rll_core.lipschitz import local_lipschitz  # noqa: E402
from rll_core.methods import make_method  # noqa: E402
from rll_core.models import build_model  # noqa: E402
from rll_core.precision import cpu_description, resolve_precision  # noqa: E402
from rll_core.separation import nearest_other_class  # noqa: E402
from rll_core.training import train  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], dev: torch.device) -> float:
    """Seconds of one call, the device synchronised on both sides."""
    _sync(dev)
    t = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t


class Report:
    """Markdown sections; an exception inside one is written into it and the next section runs."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []

    @contextlib.contextmanager
    def section(self, title: str) -> Iterator[list[str]]:
        body: list[str] = []
        t = time.perf_counter()
        try:
            yield body
        except Exception as e:  # noqa: BLE001 - a section reports its own failure
            self.failed.append(title)
            body += ["", f"**FAILED**: `{type(e).__name__}: {e}`", "", "```", traceback.format_exc()[-2000:], "```"]
        self.lines += [f"## {title} ({time.perf_counter() - t:.0f} s)", "", *body, ""]
        print("\n".join(self.lines[-len(body) - 3:]), flush=True)

    def text(self) -> str:
        return "\n".join(self.lines)


def environment(dev: torch.device) -> list[str]:
    rows = [f"- python {platform.python_version()}, torch {torch.__version__}, device `{dev}`",
            f"- CPU: {cpu_description()}", f"- precision=\"auto\" resolves to {resolve_precision('auto', dev)} on `{dev}`"]
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        rows.append(f"- {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                    f"{p.multi_processor_count} SMs")
    with contextlib.suppress(ImportError):
        import triton

        rows.append(f"- triton {triton.__version__}")
    return rows


def gpu_tests() -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                          cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m gpu failed (exit {proc.returncode}): {tail}\n{proc.stdout[-3000:]}")
    return [f"`pytest -m gpu`: {tail}"]


def _data(name: str, n: int | None) -> ImageDataset | None:
    try:
        return load_train_test(name, None, n, 10)[0]
    except DataError:
        return None


def separation(dev: torch.device, tiny: bool) -> list[str]:
    """pairs/s of each backend on each workload: CUDA backends on the full sets, numba on a subset."""
    g = np.random.default_rng(0)
    n_full, n_cpu, n_cifar = (600, 300, 200) if tiny else (None, 5000, 20000)
    work: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name in ("mnist", "fashion_mnist"):
        ds = _data(name, n_full)
        if ds is not None:
            work.append((f"{name} train-train", ds.flat(), ds.labels))
    work.append(("random CIFAR-10 shape", g.integers(0, 256, (n_cifar, 3072), dtype=np.uint8),
                 g.integers(0, 10, n_cifar)))
    rows = ["| data | n | backend | device | seconds | pairs/s | same as numba on the subset |", "|---|---|---|---|---|---|---|"]
    backends = ["triton", "torch"] if dev.type == "cuda" else ["torch"]
    for label, x, y in work:
        sub = slice(0, min(n_cpu, len(x)))
        ref = nearest_other_class(x[sub], y[sub], backend="numba", device="cpu")
        t = timed(lambda x=x, y=y, sub=sub: nearest_other_class(x[sub], y[sub], backend="numba", device="cpu"),
                  torch.device("cpu"))
        n = sub.stop
        rows.append(f"| {label} | {n:,} | numba | cpu | {t:.2f} | {n * n / t:.3g} | (reference) |")
        for be in backends:
            with contextlib.suppress(ImportError):
                same = np.array_equal(nearest_other_class(x[sub], y[sub], backend=be, device=dev).index, ref.index)
                t = timed(lambda x=x, y=y, be=be: nearest_other_class(x, y, backend=be, device=dev), dev)
                rows.append(f"| {label} | {len(x):,} | {be} | {dev} | {t:.2f} | {len(x) ** 2 / t:.3g} | {same} |")
    return rows


def _training_sets(tiny: bool) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    n = 32 if tiny else 4096
    g = torch.Generator().manual_seed(0)
    sets = []
    mnist = _data("mnist", n)
    if mnist is not None:
        sets.append(("cnn001", "MNIST", torch.from_numpy(mnist.images), torch.from_numpy(mnist.labels)))
    sets.append(("wrn-10-1" if tiny else "wrn-16-4", "random CIFAR-10 shape", torch.randint(0, 256, (n // 2, 3, 32, 32), dtype=torch.uint8,
                                                                    generator=g), torch.randint(0, 10, (n // 2,), generator=g)))
    return sets


def _epoch(start: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, method: object, batch: int, dev: torch.device,
           kw: dict[str, Any]) -> None:
    """One epoch of ``train`` over ``(x, y)`` from a copy of ``start``."""
    train(copy.deepcopy(start), (x, y), method, epochs=1, batch_size=batch, device=dev, progress=False, **kw)  # type: ignore[arg-type]


def training(dev: torch.device, tiny: bool) -> list[str]:
    auto = resolve_precision("auto", dev)
    modes: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"}, f"auto ({auto})": {"precision": "auto"},
                                        "fp32 channels_last": {"precision": "fp32", "channels_last": True},
                                        "fp32 compile": {"precision": "fp32", "compile_model": True}}
    if tiny:  # compiling on the CPU takes minutes (the test-suite checks compile_model on its own)
        modes.pop("fp32 compile")
    rows = ["| model | data | method | mode | batch | images/s |", "|---|---|---|---|---|---|"]
    batch = 8 if tiny else 256
    for model_name, data, x, y in _training_sets(tiny):
        shape = tuple(x.shape[1:])
        torch.manual_seed(0)
        start = build_model(model_name, in_channels=shape[0], num_classes=10, image_size=shape[1])
        eps = 0.1 if data == "MNIST" else 8 / 255
        for method in ("natural", "at", "trades"):
            m = make_method(method) if method == "natural" else make_method(method, eps=eps, steps=1 if tiny else 10)
            for mode, kw in modes.items():
                if mode == "fp32 compile" and (model_name != "cnn001" or method == "trades"):
                    continue  # compile time is bounded: cnn001, natural and AT
                _epoch(start, x[:2 * batch], y[:2 * batch], m, batch, dev, kw)  # warm-up (and the compile)
                t = timed(lambda m=m, kw=kw, start=start, x=x, y=y: _epoch(start, x, y, m, batch, dev, kw), dev)
                rows.append(f"| {model_name} | {data} | {method} | {mode} | {batch} | {len(x) / t:.0f} |")
    return rows


def attacks(dev: torch.device, tiny: bool) -> list[str]:
    n = 16 if tiny else 4096
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 28, 28, generator=g).to(dev)
    y = torch.randint(0, 10, (n,), generator=g).to(dev)
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28).to(dev).eval()
    bs = 16 if tiny else 1024
    rows = ["| task (cnn001, random weights) | precision | batch | images/s |", "|---|---|---|---|"]
    for prec in dict.fromkeys(("fp32", resolve_precision("auto", dev))):
        cases = {
            "PGD-10": lambda p=prec: [pgd(model, x[s:s + bs], y[s:s + bs], eps=0.1, step_size=0.02, steps=10,
                                          precision=p) for s in range(0, n, bs)],
            "multi-targeted 9 x 20": lambda p=prec: [multi_targeted(
                model, x[s:s + bs], y[s:s + bs], eps=0.1, step_size=0.01, steps=20, precision=p)
                for s in range(0, n, bs)],
            "local Lipschitz, 10 steps": lambda p=prec: local_lipschitz(model, x, eps=0.1, steps=10, batch_size=bs,
                                                                        precision=p),
        }
        for name, fn in cases.items():
            fn()  # warm-up
            rows.append(f"| {name} | {prec} | {bs} | {n / timed(fn, dev):.0f} |")
    return rows


def end_to_end(dev: torch.device, tiny: bool) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        run = str(Path(d) / "run")
        size = ["--n-train", "64", "--n-test", "32", "--steps", "1", "--batch-size", "32"] if tiny else ["--n-train", "60000"]
        train_cmd = [sys.executable, "-m", "rll_core.cli", "train", "--dataset", "mnist", "--method", "at", "--epochs",
                     "1" if tiny else "3", "--device", str(dev), "--out", run, "--no-progress", *size]
        eval_cmd = [sys.executable, "-m", "rll_core.cli", "evaluate", run, "--n-eval", "8" if tiny else "1000",
                    "--device", str(dev), "--no-progress"]
        # a robustness card on the device (its Lipschitz streams, attacks and curve on CUDA), then read back
        card_cmd = [sys.executable, "-m", "rll_core.cli", "card", run, "--dataset", "mnist", "--device", str(dev),
                    "--out", str(Path(d) / "cards"), "--cache-dir", str(Path(d) / "cache"), "--formats", "png",
                    "--no-progress", *(["--n-eval", "8", "--n-autoattack", "0", "--n-train", "300"] if tiny else
                                       ["--n-eval", "500", "--n-autoattack", "50"])]
        rows = []
        for cmd in (train_cmd, eval_cmd, card_cmd):
            t = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}): {proc.stderr[-1500:]}")
            rows += [f"`rll {' '.join(cmd[3:])}` ({time.perf_counter() - t:.0f} s):", "", "```",
                     proc.stdout.strip()[-1500:], "```", ""]
        return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/gpu-check.md", help="the report (default: results/gpu-check.md)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes, for a CPU run of every section")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device here; run with --tiny --device cpu to check the script itself")
    rep = Report()
    rep.lines += [f"# gpu-check{' (--tiny)' if args.tiny else ''}", ""]
    t0 = time.perf_counter()
    for title, fn in (("Environment", lambda: environment(dev)), ("pytest -m gpu", gpu_tests),
                      ("Separation", lambda: separation(dev, args.tiny)), ("Training", lambda: training(dev, args.tiny)),
                      ("Attacks and Lipschitz", lambda: attacks(dev, args.tiny)),
                      ("End to end", lambda: end_to_end(dev, args.tiny))):
        with rep.section(title) as body:
            body += fn()
    rep.lines.append(f"Total {time.perf_counter() - t0:.0f} s; failed sections: {', '.join(rep.failed) or 'none'}")
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rep.text() + "\n")
    print(f"report: {out}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
