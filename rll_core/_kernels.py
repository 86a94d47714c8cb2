"""Exact nearest-other-class L-inf search kernels.

All kernels solve the same problem on one chunk of queries against all references: for query ``i``,
``min_j max_k |Q[i, k] - R[j, k]|`` over references ``j`` with ``ry[j] != qy[i]``, and the smallest
such ``j`` among ties.  They update ``best_d`` / ``best_i`` in place (a reference only replaces the
current best when it is *strictly* closer and references are visited in increasing index order, so
ties resolve to the smallest index in every kernel, which is what makes CPU and GPU agree bit for bit).

* :func:`numba_nearest` - CPU, multi-threaded over query blocks, with early exit: a reference is
  abandoned as soon as a block of coordinates shows it cannot beat the current best.
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
