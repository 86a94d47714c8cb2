"""Exact nearest-other-class L-inf search kernels.

All kernels solve the same problem on one chunk of queries against all references: for query ``i``,
``min_j max_k |Q[i, k] - R[j, k]|`` over references ``j`` with ``ry[j] != qy[i]``, and the smallest
such ``j`` among ties.  They update ``best_d`` / ``best_i`` in place.  The row, torch and Triton kernels
visit references in index order and replace the best only when *strictly* closer; the class-grouped
filter kernel does not visit them in index order and also takes a tie with a smaller index.  So ties
resolve to the smallest index in every kernel, which is what makes CPU and GPU agree bit for bit.

* :func:`numba_nearest_prefix` - CPU, uint8 (the default there): blocks of queries against cache-sized
  chunks of class-grouped references; per query, lower bounds for the whole chunk from the leading
  coordinates (8-bit SIMD across references), then an 8-bit SIMD early-exit scan of the few survivors.
* :func:`numba_nearest` - CPU, any dtype (used for float data), multi-threaded over query blocks, with
  early exit: a reference is abandoned as soon as a block of coordinates shows it cannot beat the best.
* :func:`torch_nearest` - any torch device, tiled and vectorised (memory bounded by ``tile_bytes``).
* ``rll_core._triton.triton_nearest`` - CUDA kernel for uint8 data.
"""

from __future__ import annotations

import numpy as np
import torch

try:  # numba is a hard dependency, but keep import errors readable
    import numba
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


@njit(inline="always", cache=True)
def _slab_max(qrow, rrow, kblock, bound, stop_at_bound):  # type: ignore[no-untyped-def]  # pragma: no cover
    """max |qrow - rrow| (widened), ``kblock`` coordinates at a time, stopping after the first slab that
    takes it above ``bound`` (or to ``bound`` itself when ``stop_at_bound``): then the pair cannot win.
    Slices indexed from 0 carry no wraparound test per element, so the inner loop vectorises."""
    m = 0
    for k0 in range(0, qrow.shape[0], kblock):
        qs = qrow[k0:k0 + kblock]
        rs = rrow[k0:k0 + kblock]
        for k in range(qs.shape[0]):
            a = _widen(qs[k])
            c = _widen(rs[k])
            dd = a - c if a > c else c - a
            if dd > m:
                m = dd
        if m > bound or (stop_at_bound and m == bound):
            break
    return m


@njit(parallel=True, cache=True, boundscheck=False, nogil=True)
def _numba_kernel(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray,
                  best_d: np.ndarray, best_i: np.ndarray, qblock: int, kblock: int) -> None:  # pragma: no cover
    nq = q.shape[0]
    nr = r.shape[0]
    nblk = (nq + qblock - 1) // qblock
    for b in prange(nblk):
        s = b * qblock
        e = min(s + qblock, nq)
        for j in range(nr):
            rj = ry[j]
            rrow = r[j]
            for i in range(s, e):
                if qy[i] == rj:
                    continue
                bd = best_d[i]
                m = _slab_max(q[i], rrow, kblock, bd, True)
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
    nq = q.shape[0]
    nr = r.shape[0]
    nblk = (nq + qblock - 1) // qblock
    for b in prange(nblk):
        s = b * qblock
        e = min(s + qblock, nq)
        for j in range(nr):
            c = rc[j]
            rrow = r[j]
            for i in range(s, e):
                same = c == best_c[i, 0]
                bd = best_d[i, 0] if same else best_d[i, 1]
                m = _slab_max(q[i], rrow, kblock, bd, False)
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


#: Coordinates per 8-bit SIMD block (one AVX2 register of uint8) in the filter kernel's row scan.
_LANES = 32


@njit(inline="always", cache=True)
def _absdiff(a, b):  # type: ignore[no-untyped-def]  # pragma: no cover
    """|a - b| of two uint8 values as uint8 (vectorises to max, min and an 8-bit subtraction)."""
    return np.uint8(max(a, b) - min(a, b))


@njit(inline="always", cache=True)
def _prefix_bounds(qi, pref, c0, n, acc):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``acc[t]``: max over the ``pref.shape[0]`` leading coordinates of |qi - reference c0 + t|, a lower
    bound on its distance, for t < n; 8-bit SIMD across references, four coordinates per pass."""
    for t in range(n):
        acc[t] = 0
    for k in range(0, pref.shape[0], 4):  # the prefix length is a multiple of 4
        a0, a1, a2, a3 = qi[k], qi[k + 1], qi[k + 2], qi[k + 3]
        v0, v1 = pref[k, c0:c0 + n], pref[k + 1, c0:c0 + n]
        v2, v3 = pref[k + 2, c0:c0 + n], pref[k + 3, c0:c0 + n]
        for t in range(n):
            d01 = max(_absdiff(a0, v0[t]), _absdiff(a1, v1[t]))
            d23 = max(_absdiff(a2, v2[t]), _absdiff(a3, v3[t]))
            acc[t] = max(acc[t], max(d01, d23))


@njit(inline="always", cache=True)
def _scan_row(qi, rj, kp, m, lim):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``m`` raised to the max of |qi - rj| over coordinates ``kp..``, ``_LANES`` at a time (one SIMD step
    and a horizontal max each), stopping as soon as it exceeds ``lim``."""
    for k0 in range(kp, qi.shape[0], _LANES):
        qs = qi[k0:k0 + _LANES]
        rs = rj[k0:k0 + _LANES]
        mb = np.uint8(0)
        for k in range(_LANES):
            d = _absdiff(qs[k], rs[k])
            mb = mb if mb > d else d
        if np.int32(mb) > m:
            m = np.int32(mb)
            if m > lim:
                break
    return m


@njit(inline="always", cache=True)
def _survivors(acc, n, bound, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Write to ``out`` the positions t < n with ``acc[t] <= bound`` and return how many: a store and an
    add per position, no branch (about 4 % survive, so a branch per position would mispredict at each
    survivor; measured 12-18 % faster on Fashion-MNIST)."""
    b = np.uint8(min(bound, 255))
    cnt = 0
    for t in range(n):
        out[cnt] = t
        cnt += acc[t] <= b
    return cnt


@njit(parallel=True, cache=True, boundscheck=False, nogil=True, fastmath=True)
def _numba_filter_kernel(q: np.ndarray, qy: np.ndarray, pref: np.ndarray, rows: np.ndarray, orig: np.ndarray,
                         seg_start: np.ndarray, seg_end: np.ndarray, seg_class: np.ndarray, best_d: np.ndarray,
                         best_i: np.ndarray, chunk: int, qblock: int) -> None:  # pragma: no cover
    """uint8 kernel: a SIMD lower-bound filter over many references, then a SIMD scan of the survivors.

    ``rows`` holds the references grouped by class (``seg_start/seg_end/seg_class``: one segment per
    class; ``orig``: each row's original index), coordinates in decreasing-variance order and zero-padded
    to a multiple of ``_LANES`` (padding adds |0 - 0| = 0); ``pref`` is the transpose of its first ``kp``
    columns (coordinate-major).  A block of ``qblock`` queries walks the references in chunks small
    enough to stay in the core's cache, so each reference byte is read from memory once per query
    block, not once per query.  Per query and chunk:

    1. filter: the max over the ``kp`` leading coordinates, a lower bound on every distance, computed
       across the chunk in 8-bit lanes (``max(a, b) - min(a, b)`` on uint8 is one SIMD op per 32 pairs);
    2. scan: each reference whose bound does not exceed the query's current best goes on along its row
       in blocks of ``_LANES`` coordinates (one SIMD op and a horizontal max each), abandoned as soon as
       it exceeds the best.

    Same-class segments are skipped whole (no label test per pair); the index loops run over fresh
    slices from 0 so that numba drops its negative-index wraparound and LLVM emits vector loads.  Ties
    go to the smallest original index, so the result equals the brute-force reference.
    """
    nq = q.shape[0]
    kp = pref.shape[0]
    nseg = seg_start.shape[0]
    for b in prange((nq + qblock - 1) // qblock):
        i0 = b * qblock
        i1 = min(i0 + qblock, nq)
        acc = np.empty(chunk, np.uint8)
        alive = np.empty(chunk, np.int64)
        for s in range(nseg):
            for c0 in range(seg_start[s], seg_end[s], chunk):
                n = min(chunk, seg_end[s] - c0)
                for i in range(i0, i1):
                    if qy[i] == seg_class[s]:
                        continue
                    qi = q[i]
                    bd = np.int32(best_d[i])
                    bi = best_i[i]
                    _prefix_bounds(qi, pref, c0, n, acc)
                    for u in range(_survivors(acc, n, bd, alive)):
                        t = alive[u]
                        m = np.int32(acc[t])
                        if m > bd:  # the best may have improved since
                            continue
                        j = orig[c0 + t]
                        # a tie only wins with a smaller index: otherwise stop at the best distance itself
                        lim = bd if j < bi else bd - 1
                        if m <= lim:
                            m = _scan_row(qi, rows[c0 + t], kp, m, lim)
                            if m <= lim:
                                bd = m
                                bi = j
                    best_d[i] = bd
                    best_i[i] = bi


@njit(parallel=True, cache=True, boundscheck=False, nogil=True, fastmath=True)
def _numba_top2_filter_kernel(q: np.ndarray, pref: np.ndarray, rows: np.ndarray, orig: np.ndarray,
                              seg_start: np.ndarray, seg_end: np.ndarray, seg_class: np.ndarray, best_d: np.ndarray,
                              best_i: np.ndarray, best_c: np.ndarray, chunk: int,
                              qblock: int) -> None:  # pragma: no cover
    """The top-2 search of :func:`_numba_top2_kernel` on uint8 data with the filter kernel's layout and
    steps (``seg_class`` holds class indices 0..C-1).

    A reference of class ``c`` matters only if it improves the nearest class's distance (``c`` is that
    class) or beats the runner-up (ordered by (distance, class index)); that threshold bounds the filter,
    and each survivor is scanned against the exact limit, where a tie within a class cannot win (a
    segment is visited in increasing index order) and a tie with the runner-up wins for a smaller class.
    """
    nq = q.shape[0]
    kp = pref.shape[0]
    nseg = seg_start.shape[0]
    for b in prange((nq + qblock - 1) // qblock):
        i0 = b * qblock
        i1 = min(i0 + qblock, nq)
        acc = np.empty(chunk, np.uint8)
        alive = np.empty(chunk, np.int64)
        for s in range(nseg):
            c = seg_class[s]
            for c0 in range(seg_start[s], seg_end[s], chunk):
                n = min(chunk, seg_end[s] - c0)
                for i in range(i0, i1):
                    qi = q[i]
                    d0, d1 = np.int32(best_d[i, 0]), np.int32(best_d[i, 1])
                    j0, j1 = best_i[i, 0], best_i[i, 1]
                    k0, k1 = best_c[i, 0], best_c[i, 1]
                    _prefix_bounds(qi, pref, c0, n, acc)
                    # thresholds only fall while the chunk is scanned, so this bound keeps every candidate
                    for u in range(_survivors(acc, n, d0 if c == k0 else d1, alive)):
                        t = alive[u]
                        m = np.int32(acc[t])
                        if c == k0:
                            lim = d0 - 1
                        elif c == k1 or c > k1:
                            lim = d1 - 1
                        else:
                            lim = d1
                        if m > lim:
                            continue
                        m = _scan_row(qi, rows[c0 + t], kp, m, lim)
                        if m > lim:
                            continue
                        j = orig[c0 + t]
                        if c == k0:
                            d0, j0 = m, j
                        elif m < d0 or (m == d0 and c < k0):
                            d1, j1, k1 = d0, j0, k0
                            d0, j0, k0 = m, j, c
                        else:
                            d1, j1, k1 = m, j, c
                    best_d[i, 0], best_d[i, 1] = d0, d1
                    best_i[i, 0], best_i[i, 1] = j0, j1
                    best_c[i, 0], best_c[i, 1] = k0, k1


def dim_order(r: np.ndarray, max_rows: int = 20000, chunk: int = 2048) -> np.ndarray:
    """Coordinates by decreasing variance (on a fixed sample of rows, summed in chunks so no float copy
    of the data is made): the early-exit kernel meets the large differences sooner.  Any order gives the
    same result."""
    sample = r[:: max(1, r.shape[0] // max_rows)]
    s1 = np.zeros(r.shape[1])
    s2 = np.zeros(r.shape[1])
    for i in range(0, sample.shape[0], chunk):
        block = sample[i:i + chunk].astype(np.float64)
        s1 += block.sum(axis=0)
        s2 += (block * block).sum(axis=0)
    n = sample.shape[0]
    var = s2 / n - (s1 / n) ** 2
    return np.argsort(-var, kind="stable")


class PrefixRefs:
    """References prepared once for :func:`numba_nearest_prefix`: grouped by class, coordinates permuted
    by ``order`` and zero-padded to a multiple of 32, and the first ``prefix`` coordinates (rounded up
    to a multiple of 32) also stored coordinate-major.  :meth:`queries` prepares queries to match."""

    def __init__(self, r: np.ndarray, ry: np.ndarray, order: np.ndarray, prefix: int = 64) -> None:
        self.order = order
        self.dim = r.shape[1]
        padded = -(-self.dim // _LANES) * _LANES
        perm = np.argsort(ry, kind="stable")
        self.rows = np.zeros((r.shape[0], padded), np.uint8)
        for s in range(0, r.shape[0], 8192):  # bounded temporaries; take is ~6x faster than fancy indexing
            self.rows[s:s + 8192, :self.dim] = r.take(perm[s:s + 8192], axis=0).take(order, axis=1)
        self.orig = perm.astype(np.int64)
        labels = ry[perm]
        classes, starts = np.unique(labels, return_index=True)
        self.seg_class = classes.astype(np.int64)
        self.seg_start = starts.astype(np.int64)
        self.seg_end = np.append(starts[1:], len(labels)).astype(np.int64)
        kp = min(padded, max(1, -(-prefix // _LANES)) * _LANES)
        self.pref = np.ascontiguousarray(self.rows[:, :kp].T)

    def queries(self, q: np.ndarray) -> np.ndarray:
        """``q`` (N, D) uint8 with its coordinates permuted and padded like the references."""
        out = np.zeros((q.shape[0], self.rows.shape[1]), np.uint8)
        out[:, :self.dim] = q.take(self.order, axis=1)
        return out

    def chunk(self, cache_bytes: int = 1 << 19) -> int:
        """References per chunk: the chunk's rows fit in ``cache_bytes`` (a core's L2 on current CPUs),
        within 256..1024 (measured best on Fashion-MNIST and CIFAR-sized rows)."""
        return max(256, min(1024, cache_bytes // self.rows.shape[1] // 64 * 64))


def _qblock(nq: int, qblock: int | None) -> int:
    """Queries per block of the filter kernels: 64 (each reference chunk is then read once per 64
    queries), fewer when that would leave threads idle (at least two blocks per thread)."""
    if qblock is not None:
        return qblock
    return max(1, min(64, -(-nq // (2 * numba.get_num_threads()))))


def numba_nearest_prefix(q: np.ndarray, qy: np.ndarray, refs: PrefixRefs, best_d: np.ndarray,
                         best_i: np.ndarray, chunk: int | None = None, qblock: int | None = None) -> None:
    """CPU kernel for uint8 data (see :func:`_numba_filter_kernel`); ``q`` from ``refs.queries``."""
    _numba_filter_kernel(q, qy, refs.pref, refs.rows, refs.orig, refs.seg_start, refs.seg_end, refs.seg_class,
                         best_d, best_i, refs.chunk() if chunk is None else chunk, _qblock(len(q), qblock))


def numba_top2_prefix(q: np.ndarray, refs: PrefixRefs, best_d: np.ndarray, best_i: np.ndarray, best_c: np.ndarray,
                      chunk: int | None = None, qblock: int | None = None) -> None:
    """CPU top-2 kernel for uint8 data (see :func:`_numba_top2_filter_kernel`): ``refs`` built with class
    indices 0..C-1 as labels, ``q`` from ``refs.queries``, ``best_*`` (nq, 2) as for :func:`numba_top2`."""
    _numba_top2_filter_kernel(q, refs.pref, refs.rows, refs.orig, refs.seg_start, refs.seg_end, refs.seg_class,
                              best_d, best_i, best_c, refs.chunk() if chunk is None else chunk, _qblock(len(q), qblock))


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
