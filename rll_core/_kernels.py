"""Exact nearest-other-class L-inf search kernels.

All kernels solve the same problem on one chunk of queries against all references: for query ``i``,
``min_j max_k |Q[i, k] - R[j, k]|`` over references ``j`` with ``ry[j] != qy[i]``, and the smallest
such ``j`` among ties.  They update ``best_d`` / ``best_i`` in place (a reference only replaces the
current best when it is *strictly* closer and references are visited in increasing index order, so
ties resolve to the smallest index in every kernel, which is what makes CPU and GPU agree bit for bit).

* :func:`numba_nearest_prefix` - CPU, uint8: per query, lower bounds for thousands of references at
  once from their leading coordinates (8-bit SIMD), then an early-exit scan of the few that survive.
* :func:`numba_nearest` - CPU, any dtype, multi-threaded over query blocks, with early exit: a reference
  is abandoned as soon as a block of coordinates shows it cannot beat the current best.
* :func:`torch_nearest` - any torch device, tiled and vectorised (memory bounded by ``tile_bytes``).
* ``rll_core._triton.triton_nearest`` - CUDA kernel for uint8 data.
"""

from __future__ import annotations

import numpy as np
import torch

try:  # numba is a hard dependency, but keep import errors readable
    from numba import njit, prange, types
    from numba.extending import overload
except ImportError as e:  # pragma: no cover
    raise ImportError("rll_core needs numba for its CPU kernels: pip install numba") from e

#: Sentinel distance for "no candidate yet" (larger than any uint8 distance).
UINT8_SENTINEL = 256


def _widen(x):  # type: ignore[no-untyped-def]  # pragma: no cover - replaced inside numba
    return x


@overload(_widen)
def _widen_impl(x):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Inside the kernel: integers to int32, floats to float64 (the difference of two float32 values is
    then exact, so float results do not depend on the rounding of the input dtype)."""
    if isinstance(x, types.Float):
        return lambda x: np.float64(x)
    return lambda x: np.int32(x)


@njit(parallel=True, cache=True, boundscheck=False, nogil=True)
def _numba_kernel(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray,
                  best_d: np.ndarray, best_i: np.ndarray, qblock: int, kblock: int) -> None:  # pragma: no cover
    nq, dim = q.shape
    nr = r.shape[0]
    nblk = (nq + qblock - 1) // qblock
    for b in prange(nblk):
        s = b * qblock
        e = min(s + qblock, nq)
        for j in range(nr):
            rj = ry[j]
            for i in range(s, e):
                if qy[i] == rj:
                    continue
                bd = best_d[i]
                m = 0
                k0 = 0
                while k0 < dim:
                    k1 = min(k0 + kblock, dim)
                    for k in range(k0, k1):
                        a = _widen(q[i, k])
                        c = _widen(r[j, k])
                        dd = a - c if a > c else c - a
                        if dd > m:
                            m = dd
                    if m >= bd:
                        break
                    k0 = k1
                if m < bd:
                    best_d[i] = m
                    best_i[i] = j


@njit(parallel=True, cache=True, boundscheck=False, nogil=True)
def _numba_top2_kernel(q: np.ndarray, r: np.ndarray, rc: np.ndarray, best_d: np.ndarray, best_i: np.ndarray,
                       best_c: np.ndarray, qblock: int, kblock: int) -> None:  # pragma: no cover
    """The same early-exit scan, keeping per query the nearest class and the runner-up class.

    ``rc``: class index (0..C-1) of each reference; ``best_*`` (nq, 2): distance, reference index and
    class index of the nearest point of the nearest class (column 0) and of the runner-up class (column
    1).  Classes are ordered by (distance, class index), references within a class by (distance, index),
    as a stable sort of the full per-class table would order them.  A reference of the current nearest
    class can only improve column 0, any other only matters if it beats column 1, so it is abandoned as
    soon as its partial distance exceeds that threshold.
    """
    nq, dim = q.shape
    nr = r.shape[0]
    nblk = (nq + qblock - 1) // qblock
    for b in prange(nblk):
        s = b * qblock
        e = min(s + qblock, nq)
        for j in range(nr):
            c = rc[j]
            for i in range(s, e):
                same = c == best_c[i, 0]
                bd = best_d[i, 0] if same else best_d[i, 1]
                m = 0
                k0 = 0
                while k0 < dim:
                    k1 = min(k0 + kblock, dim)
                    for k in range(k0, k1):
                        a = _widen(q[i, k])
                        cc = _widen(r[j, k])
                        dd = a - cc if a > cc else cc - a
                        if dd > m:
                            m = dd
                    if m > bd:
                        break
                    k0 = k1
                if m > bd:
                    continue
                if same:
                    if m < bd:
                        best_d[i, 0] = m
                        best_i[i, 0] = j
                elif m < best_d[i, 0] or (m == best_d[i, 0] and c < best_c[i, 0]):
                    best_d[i, 1] = best_d[i, 0]
                    best_i[i, 1] = best_i[i, 0]
                    best_c[i, 1] = best_c[i, 0]
                    best_d[i, 0] = m
                    best_i[i, 0] = j
                    best_c[i, 0] = c
                elif c == best_c[i, 1]:
                    if m < bd:
                        best_i[i, 1] = j
                        best_d[i, 1] = m
                elif m < bd or (m == bd and c < best_c[i, 1]):
                    best_d[i, 1] = m
                    best_i[i, 1] = j
                    best_c[i, 1] = c


def numba_top2(q: np.ndarray, r: np.ndarray, rc: np.ndarray, best_d: np.ndarray, best_i: np.ndarray,
               best_c: np.ndarray, qblock: int = 16, kblock: int = 16) -> None:
    """CPU top-2 kernel (see :func:`_numba_top2_kernel`); arrays as for :func:`numba_nearest`, (nq, 2)."""
    _numba_top2_kernel(q, r, rc, best_d, best_i, best_c, qblock, kblock)


@njit(parallel=True, cache=True, boundscheck=False, nogil=True, fastmath=True)
def _numba_prefix_kernel(q: np.ndarray, qy: np.ndarray, pref: np.ndarray, r: np.ndarray, orig: np.ndarray,
                         seg_start: np.ndarray, seg_end: np.ndarray, seg_class: np.ndarray, best_d: np.ndarray,
                         best_i: np.ndarray, kblock: int, chunk: int) -> None:  # pragma: no cover
    """uint8 kernel that tests many references at once on their leading coordinates.

    ``r`` holds the references grouped by class (``seg_start/seg_end/seg_class``: one segment per class,
    ``orig``: each row's original index) with coordinates in decreasing-variance order; ``pref`` is the
    transpose of its first ``kp`` columns (coordinate-major).  Per query and per chunk of an other-class
    segment, a lower bound on every distance (the max over the ``kp`` leading coordinates) is computed
    across the chunk in 8-bit lanes (``max(a, b) - min(a, b)`` on uint8 vectorises to SIMD); only the
    references whose bound does not exceed the current best are scanned on, row by row with early exit.
    Same-class segments are skipped whole (no label test per pair).  Ties go to the smallest original
    index, so the result equals the brute-force reference.
    """
    nq, dim = q.shape
    kp = pref.shape[0]
    nseg = seg_start.shape[0]
    for i in prange(nq):
        acc = np.empty(chunk, np.uint8)
        qi = q[i]
        bd = np.int32(best_d[i])
        bi = best_i[i]
        for s in range(nseg):
            if seg_class[s] == qy[i]:
                continue
            for c0 in range(seg_start[s], seg_end[s], chunk):
                c1 = min(c0 + chunk, seg_end[s])
                n = c1 - c0
                for t in range(n):
                    acc[t] = 0
                for k in range(kp):
                    a = qi[k]
                    row = pref[k, c0:c1]
                    for t in range(n):
                        b = row[t]
                        acc[t] = max(acc[t], np.uint8(max(a, b) - min(a, b)))
                for t in range(n):
                    m = np.int32(acc[t])
                    if m > bd:
                        continue
                    j = c0 + t
                    k0 = kp
                    while k0 < dim and m <= bd:
                        k1 = min(k0 + kblock, dim)
                        for k in range(k0, k1):
                            x = np.int32(qi[k])
                            y = np.int32(r[j, k])
                            d = x - y if x > y else y - x
                            if d > m:
                                m = d
                        k0 = k1
                    if m < bd or (m == bd and orig[j] < bi):
                        bd = m
                        bi = orig[j]
        best_d[i] = bd
        best_i[i] = bi


class PrefixRefs:
    """References prepared once for :func:`numba_nearest_prefix`: grouped by class, coordinates permuted
    by ``order``, and the first ``prefix`` coordinates also stored coordinate-major."""

    def __init__(self, r: np.ndarray, ry: np.ndarray, order: np.ndarray, prefix: int = 128) -> None:
        perm = np.argsort(ry, kind="stable")
        self.rows = np.ascontiguousarray(r[perm][:, order])
        self.orig = perm.astype(np.int64)
        labels = ry[perm]
        self.seg_class, starts = np.unique(labels, return_index=True)
        self.seg_start = starts.astype(np.int64)
        self.seg_end = np.append(starts[1:], len(labels)).astype(np.int64)
        self.pref = np.ascontiguousarray(self.rows[:, : min(prefix, r.shape[1])].T)


def numba_nearest_prefix(q: np.ndarray, qy: np.ndarray, refs: PrefixRefs, best_d: np.ndarray,
                         best_i: np.ndarray, kblock: int = 16, chunk: int = 4096) -> None:
    """CPU kernel for uint8 data; ``q`` with its coordinates in the same order as ``refs``."""
    _numba_prefix_kernel(q, qy, refs.pref, refs.rows, refs.orig, refs.seg_start, refs.seg_end,
                         refs.seg_class.astype(np.int64), best_d, best_i, kblock, chunk)


def numba_nearest(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray,
                  best_d: np.ndarray, best_i: np.ndarray, qblock: int = 16, kblock: int = 16) -> None:
    """CPU kernel; ``q``/``r`` C-contiguous (N, D) of one dtype, ``best_d`` int32 (uint8 data) or
    float64 (float data), ``best_i`` int64."""
    # values are widened inside the kernel (uint8 -> int32, float -> float64), so differences are exact
    _numba_kernel(q, qy, r, ry, best_d, best_i, qblock, kblock)


def torch_nearest(q: torch.Tensor, qy: torch.Tensor, r: torch.Tensor, ry: torch.Tensor,
                  best_d: torch.Tensor, best_i: torch.Tensor, tile_bytes: int = 64 << 20) -> None:
    """Tiled vectorised kernel on any torch device (all tensors on the same device).

    uint8 data is compared in int16, float data in float64. ``best_d`` is int32 / float64.
    """
    nq, dim = q.shape
    nr = r.shape[0]
    is_int = q.dtype == torch.uint8
    work = torch.int16 if is_int else torch.float64
    qw = q.to(work)
    sentinel = UINT8_SENTINEL if is_int else float("inf")
    elem = torch.empty((), dtype=work).element_size()
    # tile (nq x br x kc) of `work` elements bounded by tile_bytes
    kc = min(dim, 64)
    br = max(1, min(nr, tile_bytes // max(1, nq * kc * elem)))
    while br < 8 and kc > 1:  # very large query chunks: shrink the coordinate slab first
        kc = max(1, kc // 2)
        br = max(1, min(nr, tile_bytes // max(1, nq * kc * elem)))
    for r0 in range(0, nr, br):
        r1 = min(nr, r0 + br)
        rw = r[r0:r1].to(work)
        dist = torch.zeros((nq, r1 - r0), dtype=work, device=q.device)
        for k0 in range(0, dim, kc):
            k1 = min(dim, k0 + kc)
            diff = (qw[:, None, k0:k1] - rw[None, :, k0:k1]).abs_().amax(dim=2)
            torch.maximum(dist, diff, out=dist)
        dist = dist.to(best_d.dtype)
        dist.masked_fill_(qy[:, None] == ry[None, r0:r1], sentinel)
        m, a = dist.min(dim=1)  # first index among ties
        better = m < best_d
        best_d[better] = m[better]
        best_i[better] = a[better].to(best_i.dtype) + r0
