"""Benchmark: exact nearest-other-class L-inf search, rll_core kernels vs a naive torch.cdist baseline.

Workloads (train-train, the heaviest case of Table 1):

Baselines measured in the same run: a naive chunked ``torch.cdist(p=inf)`` and, on the CPU, the library
anchor scipy ``cKDTree(p=inf)`` (one tree per class, built outside the timing, queried on all cores;
``--ckdtree-queries``).

* ``fmnist``: Fashion-MNIST train, 60,000 x 60,000 x 784 (real data, Debian's dataset-fashion-mnist)
* ``cifar``:  CIFAR-10 train shape, 50,000 x 50,000 x 3072: real CIFAR-10 from $RLL_DATA_DIR if present,
  else random uint8 with 10 random labels (a worst case for the early-exit CPU kernel)

On the CPU, a query subset is timed against the *full* reference set (``--cpu-queries``, default 2000;
the naive baseline gets ``--naive-queries``) and the full-size time is extrapolated from pairs/second;
``--full`` times all queries.  On CUDA every row runs at full size.  Each row reports peak extra memory
(RSS on CPU, torch's allocator peak on GPU) and whether its distances equal the numba kernel's on the
queries it ran.

    python benchmarks/separation.py                 # CPU rows (and GPU rows when CUDA is present)
    python benchmarks/separation.py --workloads fmnist --cpu-queries 60000   # the full CPU run
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rll_core.data import DataError, load_cifar10, load_fashion_mnist  # noqa: E402
from rll_core.separation import nearest_other_class  # noqa: E402


class RssPeak:
    """Peak resident memory above the starting level, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssPeak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


@dataclass
class Row:
    workload: str
    method: str
    device: str
    nq: int
    nr: int
    seconds: float
    peak_mb: float
    match: str

    @property
    def mpairs(self) -> float:
        return self.nq * self.nr / self.seconds / 1e6


def naive_cdist(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray, device: torch.device,
                ref_chunk: int = 4096) -> np.ndarray:
    """The obvious baseline: torch.cdist(p=inf) in float32 over reference chunks, masked, min."""
    qt = torch.from_numpy(q).to(device).float()
    qyt = torch.from_numpy(qy).to(device)
    best = torch.full((len(q),), float("inf"), device=device)
    for s in range(0, len(r), ref_chunk):
        rt = torch.from_numpy(r[s:s + ref_chunk]).to(device).float()
        d = torch.cdist(qt, rt, p=float("inf"))
        d.masked_fill_(qyt[:, None] == torch.from_numpy(ry[s:s + ref_chunk]).to(device)[None, :], float("inf"))
        best = torch.minimum(best, d.min(dim=1).values)
    return best.round().to(torch.int32).cpu().numpy()


def ckdtree_trees(r: np.ndarray, ry: np.ndarray) -> dict[int, object]:
    """The library anchor's index: scipy cKDTree (p=inf at query time), one tree per class."""
    from scipy.spatial import cKDTree

    return {int(c): cKDTree(r[ry == c].astype(np.float64)) for c in np.unique(ry)}


def ckdtree_nearest(trees: dict[int, object], q: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Nearest other-class distance by querying every other class's tree (k=1, p=inf, all cores)."""
    best = np.full(len(q), np.inf)
    qf = q.astype(np.float64)
    for c, tree in trees.items():
        ask = qy != c
        d, _ = tree.query(qf[ask], k=1, p=np.inf, workers=-1)  # type: ignore[attr-defined]
        best[ask] = np.minimum(best[ask], d)
    return best.round().astype(np.int32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):  # type: ignore[no-untyped-def]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t, (torch.cuda.max_memory_allocated() - base) / 2**20
    with RssPeak() as mem:
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
    return out, dt, mem.extra_mb


def load_workload(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "fmnist":
        ds = load_fashion_mnist(split="train")
        return ds.flat(), ds.labels, "Fashion-MNIST train (real)"
    try:
        ds = load_cifar10(split="train")
        return ds.flat(), ds.labels, "CIFAR-10 train (real)"
    except DataError:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, size=(50000, 3072), dtype=np.uint8)
        return x, rng.integers(0, 10, size=50000).astype(np.int64), "CIFAR-10 shape (random uint8)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="fmnist,cifar")
    ap.add_argument("--device", default="auto", help="auto (CPU rows, plus GPU rows if CUDA), cpu or cuda")
    ap.add_argument("--cpu-queries", type=int, default=2000)
    ap.add_argument("--naive-queries", type=int, default=200)
    ap.add_argument("--ckdtree-queries", type=int, default=300, help="queries for scipy's cKDTree (CPU)")
    ap.add_argument("--full", action="store_true", help="time every query on the CPU too")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if not devices:
        print("no CUDA device available", file=sys.stderr)
        return 2

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    rows: list[Row] = []
    for wl in args.workloads.split(","):
        x, y, desc = load_workload(wl, args.seed)
        nr = len(x)
        print(f"\n{wl}: {desc}, {nr} x {nr} x {x.shape[1]}", flush=True)
        for dev in devices:
            if dev.type == "cpu":
                nq = nr if args.full else min(nr, args.cpu_queries)
                nq_naive = min(nq, args.naive_queries)
            else:
                nq = nq_naive = nr
            q, qy = x[:nq], y[:nq]
            methods = (["numba"] if dev.type == "cpu" else ["triton", "torch"]) + ["naive"]
            if dev.type == "cpu":
                methods.append("ckdtree")
            ref = None
            for m in methods:
                if m == "triton":
                    try:
                        import triton  # noqa: F401
                    except ImportError:
                        continue
                if m == "naive":
                    qn, qyn = x[:nq_naive], y[:nq_naive]
                    out, dt, mb = timed(lambda: naive_cdist(qn, qyn, x, y, dev), dev)
                    d = out
                    n_used = nq_naive
                elif m == "ckdtree":
                    n_used = min(nq, args.ckdtree_queries)
                    qk, qyk = x[:n_used], y[:n_used]
                    t_build = time.perf_counter()
                    trees = ckdtree_trees(x, y)
                    print(f"  ckdtree trees built in {time.perf_counter() - t_build:.2f} s (not in the timing)")
                    d, dt, mb = timed(lambda: ckdtree_nearest(trees, qk, qyk), dev)
                else:
                    # warm-up (JIT compilation) on a few queries first
                    nearest_other_class(q[:64], qy[:64], x, y, device=dev, backend=m)  # type: ignore[arg-type]
                    sync(dev)
                    res, dt, mb = timed(lambda: nearest_other_class(q, qy, x, y, device=dev, backend=m),  # type: ignore[arg-type]
                                        dev)
                    d = res.distance
                    n_used = nq
                if ref is None:
                    ref = d
                    match = "reference"
                else:
                    k = min(len(ref), len(d))
                    match = "yes" if np.array_equal(ref[:k], d[:k]) else "NO"
                rows.append(Row(wl, m, dev.type, n_used, nr, dt, mb, match))
                r = rows[-1]
                print(f"  {m:7s} {dev.type:4s} {n_used:6d} queries: {dt:8.2f} s  {r.mpairs:9.1f} Mpairs/s", flush=True)

    for wl in args.workloads.split(","):
        by = {r.method: r for r in rows if r.workload == wl and r.device == "cpu"}
        if "numba" in by and "ckdtree" in by:
            print(f"{wl}: rll numba / scipy cKDTree throughput = {by['numba'].mpairs / by['ckdtree'].mpairs:.1f}x "
                  "(queries only; tree building excluded)")
    print("\n| workload | method | device | queries x refs | wall s | Mpairs/s | est. full train-train s "
          "| peak extra MB | same distances |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        full = r.nr * r.nr / (r.mpairs * 1e6)
        print(f"| {r.workload} | {r.method} | {r.device} | {r.nq} x {r.nr} | {r.seconds:.2f} | {r.mpairs:.1f} "
              f"| {full:.1f} | {r.peak_mb:.0f} | {r.match} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
