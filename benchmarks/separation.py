"""Benchmark: exact nearest-other-class L-inf search, rll_core kernels against baselines measured in the
same run on the same queries.

Workloads:

* ``fmnist``: Fashion-MNIST train-train, 60,000 x 60,000 x 784 (real data, Debian's dataset-fashion-mnist)
* ``fmnist-test``: Fashion-MNIST test-train, 10,000 x 60,000 x 784
* ``cifar``:  CIFAR-10 train-train shape, 50,000 x 50,000 x 3072: real CIFAR-10 from $RLL_DATA_DIR if
  present, else random uint8 with 10 random labels (the early-exit worst case: every pair is near 255)

Baselines: a naive chunked ``torch.cdist(p=inf)``; on the CPU the library anchor scipy ``cKDTree(p=inf)``
(one tree per class, built outside the timing, queried on all cores; ``--ckdtree-queries``) and rll's
own row kernel (``numba-rows``, the kernel float data uses; it was the uint8 default before the SIMD
filter kernel).

On the CPU a query subset is timed against the *full* reference set (``--cpu-queries``, default 2000;
the baselines get fewer) and full-size times are extrapolated from pairs/second; ``--full`` times all
queries.  The CPU rows run as ``benchmarks/_timing.py`` times: a warm-up, then ``--rounds`` interleaved
rounds in CPU seconds and wall time, and rll's ratio to each baseline is the median over rounds of the
paired ratio of pairs per second (so a busy spell of a shared machine hits every row alike).  On CUDA every
row runs once at full size.  Each row reports peak extra memory (RSS on CPU, torch's allocator peak on
GPU; from the warm-up on the CPU) and whether its distances equal the first row's on the queries it ran.
``--job`` also times the whole Fashion-MNIST job (train-train + test-train, as ``measure_separation``
runs it, no cache).

    python benchmarks/separation.py                 # CPU rows (and GPU rows when CUDA is present)
    python benchmarks/separation.py --workloads fmnist-test --cpu-queries 2000 --ckdtree-queries 2000
    python benchmarks/separation.py --workloads fmnist-test --ckdtree-queries 1000 --job
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import Times, interleaved, machine, paired_ratio  # noqa: E402

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
    nq_all: int
    nr: int
    seconds: float
    peak_mb: float
    match: str
    cpu_seconds: float

    @property
    def mpairs(self) -> float:
        return self.nq * self.nr / self.seconds / 1e6

    @property
    def mpairs_cpu(self) -> float:
        return self.nq * self.nr / self.cpu_seconds / 1e6


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


@dataclass
class Workload:
    desc: str
    q: np.ndarray
    qy: np.ndarray
    r: np.ndarray
    ry: np.ndarray


WORKLOADS = ("fmnist", "fmnist-test", "cifar")


def load_workload(name: str, seed: int) -> Workload:
    if name in ("fmnist", "fmnist-test"):
        tr = load_fashion_mnist(split="train")
        if name == "fmnist":
            return Workload("Fashion-MNIST train-train (real)", tr.flat(), tr.labels, tr.flat(), tr.labels)
        te = load_fashion_mnist(split="test")
        return Workload("Fashion-MNIST test-train (real)", te.flat(), te.labels, tr.flat(), tr.labels)
    try:
        ds = load_cifar10(split="train")
        return Workload("CIFAR-10 train-train (real)", ds.flat(), ds.labels, ds.flat(), ds.labels)
    except DataError:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, size=(50000, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=50000).astype(np.int64)
        return Workload("CIFAR-10 shape train-train (random uint8)", x, y, x, y)


def rows_kernel(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """rll's row kernel on uint8 data (coordinates in the same variance order as the library uses)."""
    from rll_core._kernels import UINT8_SENTINEL, dim_order, numba_nearest

    order = dim_order(r)
    ro, qo = np.ascontiguousarray(r[:, order]), np.ascontiguousarray(q[:, order])
    bd = np.full(len(q), UINT8_SENTINEL, np.int32)
    bi = np.full(len(q), -1, np.int64)
    numba_nearest(qo, qy, ro, ry, bd, bi)
    return bd


def time_job() -> float:
    """The whole Fashion-MNIST separation job (train-train + test-train), no cache, JIT already warm."""
    from rll_core.separation import measure_separation

    tr, te = load_fashion_mnist(split="train"), load_fashion_mnist(split="test")
    t = time.perf_counter()
    measure_separation(tr, te)
    return time.perf_counter() - t


def method_call(m: str, wl: Workload, n: int, dev: torch.device) -> Callable[[], np.ndarray]:
    """The distances of the first ``n`` queries by method ``m``, as a call (its index built and its JIT
    compiled here, outside any timing)."""
    q, qy = wl.q[:n], wl.qy[:n]
    if m == "naive":
        return lambda: naive_cdist(q, qy, wl.r, wl.ry, dev)
    if m == "ckdtree":
        t_build = time.perf_counter()
        trees = ckdtree_trees(wl.r, wl.ry)
        print(f"  ckdtree trees built in {time.perf_counter() - t_build:.2f} s (not in the timing)")
        return lambda: ckdtree_nearest(trees, q, qy)
    if m == "numba-rows":
        rows_kernel(q[:8], qy[:8], wl.r[:500], wl.ry[:500])  # JIT warm-up
        return lambda: rows_kernel(q, qy, wl.r, wl.ry)

    def search(n_q: int) -> np.ndarray:
        res = nearest_other_class(q[:n_q], qy[:n_q], wl.r, wl.ry, device=dev, backend=m)  # type: ignore[arg-type]
        return res.raw_distance

    search(64)  # warm-up (JIT compilation) on a few queries first
    sync(dev)
    return lambda: search(n)


def run_rows(name: str, wl: Workload, methods: dict[str, int], dev: torch.device, rounds: int
             ) -> tuple[list[Row], dict[str, Times]]:
    """Every method once (its distances, its peak memory: the warm-up), then on the CPU ``rounds`` interleaved
    rounds; a row per method with its median wall time."""
    calls, first, rows = {}, {}, []
    ref = None
    for m, n in methods.items():
        if m == "triton":
            try:
                import triton  # noqa: F401
            except ImportError:
                continue
        n = min(n, len(wl.q))
        calls[m] = method_call(m, wl, n, dev)
        d, dt, mb = timed(calls[m], dev)
        if ref is None:
            ref, match = d, "reference"
        else:
            k = min(len(ref), len(d))
            match = "yes" if np.array_equal(ref[:k], d[:k]) else "NO"
        first[m] = (n, dt, mb, match)
        print(f"  {m:10s} {dev.type:4s} {n:6d} queries: {dt:8.2f} s (warm-up), distances {match}", flush=True)
    times = interleaved(calls, rounds, warmup=False) if dev.type == "cpu" else \
        {m: Times(cpu=[dt], wall=[dt]) for m, (_, dt, _, _) in first.items()}
    for m, (n, _, mb, match) in first.items():
        rows.append(Row(name, m, dev.type, n, len(wl.q), len(wl.r), times[m].median("wall"), mb, match,
                        times[m].median("cpu")))
    return rows, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="fmnist,fmnist-test,cifar")
    ap.add_argument("--device", default="auto", help="auto (CPU rows, plus GPU rows if CUDA), cpu or cuda")
    ap.add_argument("--cpu-queries", type=int, default=2000)
    ap.add_argument("--naive-queries", type=int, default=200)
    ap.add_argument("--rows-queries", type=int, default=500, help="queries for rll's row kernel (CPU)")
    ap.add_argument("--ckdtree-queries", type=int, default=300, help="queries for scipy's cKDTree (CPU)")
    ap.add_argument("--full", action="store_true", help="time every query on the CPU too")
    ap.add_argument("--job", action="store_true", help="also time the full Fashion-MNIST job (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="timed CPU rounds after the warm-up (default: 3)")
    args = ap.parse_args()
    workloads = args.workloads.split(",")
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if not devices:
        print("no CUDA device available", file=sys.stderr)
        return 2

    print(machine())
    print(f"CPU rows: median of {args.rounds} interleaved rounds after a warm-up; GPU rows: one run each")
    rows: list[Row] = []
    ratios: list[str] = []
    for name in workloads:
        wl = load_workload(name, args.seed)
        nq_all, nr = len(wl.q), len(wl.r)
        print(f"\n{name}: {wl.desc}, {nq_all} x {nr} x {wl.q.shape[1]}", flush=True)
        for dev in devices:
            if dev.type == "cpu":
                nq = nq_all if args.full else min(nq_all, args.cpu_queries)
                methods = {"numba": nq, "numba-rows": args.rows_queries, "naive": args.naive_queries,
                           "ckdtree": args.ckdtree_queries}
            else:
                methods = {"triton": nq_all, "torch": nq_all, "naive": nq_all}
            got, times = run_rows(name, wl, methods, dev, args.rounds)
            rows += got
            if dev.type == "cpu":
                work = {r.method: float(r.nq) for r in got}
                for base in ("ckdtree", "numba-rows", "naive"):
                    if base in times:
                        ratios.append(f"{name}: rll numba / {base}, pairs per CPU-s "
                                      f"{paired_ratio(times, base, 'numba', 'cpu', work):.1f}x, per wall-s "
                                      f"{paired_ratio(times, base, 'numba', 'wall', work):.1f}x (paired medians)")

    print("\n" + "\n".join(ratios))
    print("\n| workload | method | device | queries x refs | wall s | CPU s | Mpairs / wall-s | Mpairs / CPU-s "
          "| est. all queries wall s | peak extra MB | same distances |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        full = r.nq_all * r.nr / (r.mpairs * 1e6)
        print(f"| {r.workload} | {r.method} | {r.device} | {r.nq} x {r.nr} | {r.seconds:.2f} | {r.cpu_seconds:.2f} "
              f"| {r.mpairs:.1f} | {r.mpairs_cpu:.1f} | {full:.1f} | {r.peak_mb:.0f} | {r.match} |")
    if args.job and "cpu" in [d.type for d in devices]:
        print(f"\nfull Fashion-MNIST job (train-train + test-train, measure_separation): {time_job():.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
