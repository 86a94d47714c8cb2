"""The exact nearest-other-class search (every backend, the on-disk cache and resume, shards across
processes): :func:`nearest_other_class`.  See :mod:`rll_core.separation`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .. import __version__
from .._kernels import UINT8_SENTINEL, PrefixRefs, dim_order, numba_nearest, numba_nearest_prefix, torch_nearest
from ..checks import ArrayLike, check_compatible, check_points, resolve_device
from ..progress import progress_bar
from ..storage import (
    CorruptFileError,
    array_digest,
    load_json,
    load_npz,
    lock_file,
    save_json,
    save_npz,
    set_aside,
    user_path,
)

__all__ = ["Backend", "NearestOther", "ScaledDistances", "nearest_other_class"]

Backend = Literal["auto", "numba", "torch", "triton"]
_CACHE_FORMAT = 1


class ScaledDistances:
    """Mixin for results holding ``raw_distance`` in data units and the ``scale`` to the [0, 1] pixel scale."""

    raw_distance: np.ndarray
    scale: float

    @property
    def dist(self) -> np.ndarray:
        """Distances on the [0, 1] pixel scale (float64)."""
        return self.raw_distance.astype(np.float64) / self.scale


@dataclass(frozen=True)
class NearestOther(ScaledDistances):
    """Per-query nearest point of another class.

    ``raw_distance`` is in data units (int32 0..255 for uint8 data, float64 for float data), ``index`` the
    reference index (int64), ``scale`` the divisor to the [0, 1] pixel scale (255 or 1).
    """

    raw_distance: np.ndarray
    index: np.ndarray
    scale: float
    #: True when the result was read from ``cache_dir`` rather than computed
    cached: bool = False

    def __len__(self) -> int:
        return int(self.raw_distance.shape[0])


# ----------------------------------------------------------------------------------------------
# input checking


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_backend(backend: str, dev: torch.device, dtype: np.dtype) -> str:
    if backend not in ("auto", "numba", "torch", "triton"):
        raise ValueError(f"unknown backend {backend!r}; choose 'auto', 'numba', 'torch' or 'triton'")
    if backend == "auto":
        if dev.type == "cpu":
            return "numba"
        return "triton" if dtype == np.uint8 and _triton_available() else "torch"
    if backend == "numba" and dev.type != "cpu":
        raise ValueError("backend 'numba' runs on the CPU; use backend='triton' or 'torch' on CUDA")
    if backend == "triton":
        if dtype != np.uint8:
            raise ValueError("backend 'triton' takes uint8 data; use backend='torch' for float data")
        if not _triton_available():
            raise ValueError("backend 'triton' needs the triton package (pip install triton)")
        if dev.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("backend 'triton' on the CPU needs TRITON_INTERPRET=1 (slow; for testing)")
    return backend


# ----------------------------------------------------------------------------------------------
# search


def _to_device(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    """A torch-owned copy on ``dev`` (never a view of numpy memory, which Triton's interpreter and
    in-place kernels must not resize or write through)."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dev, copy=True)


class _ResultCache:
    """``<dir>/nearest-<digest>.npz`` + ``.json`` for a finished result, ``.partial.npz`` while running."""

    def __init__(self, cache_dir: str | os.PathLike[str], digest: str) -> None:
        self.digest = digest
        base = user_path(cache_dir) / f"nearest-{digest[:24]}"
        self.final, self.meta, self.partial = (base.with_suffix(".npz"), base.with_suffix(".json"),
                                               base.with_name(base.name + ".partial.npz"))

    def lock(self) -> contextlib.AbstractContextManager[Path]:
        return lock_file(self.final.with_suffix(".lock"), self.final.with_suffix(""))

    def _read(self, path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """The arrays of ``path``; a file that cannot be read, or lacks ``keys``, is set aside (None)."""
        try:
            z = load_npz(path)
            if not set(keys) <= set(z):
                raise CorruptFileError(f"{path} lacks {sorted(set(keys) - set(z))}")
            return z
        except CorruptFileError:
            set_aside(path, "not a readable .npz file with the expected arrays")
            return None

    def load_final(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        if not (self.final.exists() and self.meta.exists()):
            return None
        z = self._read(self.final, ("distance", "index"))
        try:
            meta = load_json(self.meta)
        except CorruptFileError:
            set_aside(self.meta, "not valid JSON")
            return None
        if z is None or z["distance"].shape != (n,) or meta.get("digest") != self.digest:
            return None
        return z["distance"], z["index"]

    def load_partial(self, best_d: np.ndarray, best_i: np.ndarray) -> int:
        """Fill the finished prefix of ``best_d`` / ``best_i``; return its length (0 if none)."""
        if not self.partial.exists():
            return 0
        z = self._read(self.partial, ("distance", "index", "done", "digest"))
        if z is None or str(z["digest"]) != self.digest or z["distance"].shape != best_d.shape:
            return 0
        done = int(z["done"])
        best_d[:done] = z["distance"][:done]
        best_i[:done] = z["index"][:done]
        return done

    def save_partial(self, best_d: np.ndarray, best_i: np.ndarray, done: int) -> None:
        save_npz(self.partial, distance=best_d, index=best_i, done=np.int64(done), digest=np.str_(self.digest))

    def save_final(self, best_d: np.ndarray, best_i: np.ndarray, info: dict[str, Any]) -> None:
        save_npz(self.final, distance=best_d, index=best_i)
        save_json(self.meta, {"digest": self.digest, **info})
        self.partial.unlink(missing_ok=True)


class _NumbaFilter:
    """uint8 on the CPU: the SIMD-filter kernel over class-grouped, coordinate-permuted references."""

    def __init__(self, r: np.ndarray, ry: np.ndarray, dev: torch.device) -> None:
        self.refs = PrefixRefs(r, ry, dim_order(r))

    def search(self, q: np.ndarray, qy: np.ndarray, best_d: np.ndarray, best_i: np.ndarray, rows: slice | None) -> None:
        numba_nearest_prefix(self.refs.queries(q), qy, self.refs, best_d, best_i)


class _NumbaRows:
    """Float data on the CPU: the row kernel over coordinate-permuted references."""

    def __init__(self, r: np.ndarray, ry: np.ndarray, dev: torch.device) -> None:
        self.order = dim_order(r)
        self.r, self.ry = np.ascontiguousarray(r[:, self.order]), ry

    def search(self, q: np.ndarray, qy: np.ndarray, best_d: np.ndarray, best_i: np.ndarray, rows: slice | None) -> None:
        # train-train: the permuted references already hold the permuted queries
        qc = self.r[rows] if rows is not None else np.ascontiguousarray(q[:, self.order])
        numba_nearest(qc, qy, self.r, self.ry, best_d, best_i)


class _OnDevice:
    """Any device (torch tiles) or CUDA (Triton): the references copied to the device once."""

    def __init__(self, r: np.ndarray, ry: np.ndarray, dev: torch.device, triton: bool = False) -> None:
        self.r, self.ry, self.dev, self.triton = _to_device(r, dev), _to_device(ry, dev), dev, triton

    def search(self, q: np.ndarray, qy: np.ndarray, best_d: np.ndarray, best_i: np.ndarray, rows: slice | None) -> None:
        qt, qyt = _to_device(q, self.dev), _to_device(qy, self.dev)
        bd, bi = _to_device(best_d, self.dev), _to_device(best_i, self.dev)
        if self.triton:
            from .._triton import triton_nearest

            triton_nearest(qt, qyt, self.r, self.ry, bd, bi)
        else:
            torch_nearest(qt, qyt, self.r, self.ry, bd, bi, tile_bytes=(1 << 30) if self.dev.type == "cuda" else (64 << 20))
        best_d[:] = bd.cpu().numpy()
        best_i[:] = bi.cpu().numpy()


def _backend(name: str, r: np.ndarray, ry: np.ndarray, dev: torch.device) -> Any:
    """The search object for a resolved backend name (references prepared once)."""
    if name == "numba":
        return (_NumbaFilter if r.dtype == np.uint8 else _NumbaRows)(r, ry, dev)
    return _OnDevice(r, ry, dev, triton=name == "triton")


def _search_chunks(*, q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray, self_search: bool, be: str,
                   dev: torch.device, best_d: np.ndarray, best_i: np.ndarray, query_chunk: int, progress: bool,
                   desc: str, done: int, cache: _ResultCache | None, complete: bool = True) -> float:
    """Fill ``best_d`` / ``best_i`` from query ``done`` on, chunk by chunk (saving each finished chunk to
    ``cache``); return the seconds taken.  ``complete``: every query must find a reference of another
    class (false for one rank's shard of the references, which may hold a single class)."""
    search = _backend(be, r, ry, dev)
    nq = q.shape[0]
    t0 = time.perf_counter()
    with progress_bar(total=nq, initial=done, disable=not progress, desc=desc, unit="pt", smoothing=0.1) as bar:
        for s in range(done, nq, query_chunk):
            e = min(nq, s + query_chunk)
            search.search(q[s:e], qy[s:e], best_d[s:e], best_i[s:e], slice(s, e) if self_search else None)
            if cache is not None and e < nq:
                cache.save_partial(best_d, best_i, e)
            bar.update(e - s)
    if complete and (best_i < 0).any():  # cannot happen after the class check; guard the invariant anyway
        raise RuntimeError("internal error: a query found no point of another class")
    return time.perf_counter() - t0


def _check_search_input(queries: ArrayLike, query_labels: ArrayLike, refs: ArrayLike | None,
                        ref_labels: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Queries and references as checked ``(N, D)`` arrays (the queries themselves when ``refs`` is None),
    with every query's class facing at least one reference of another class."""
    q, qy = check_points(queries, query_labels, "queries")
    if refs is None:
        if ref_labels is not None:
            raise ValueError("ref_labels given without refs")
        r, ry = q, qy
    else:
        if ref_labels is None:
            raise ValueError("refs given without ref_labels")
        r, ry = check_points(refs, ref_labels, "refs")
        check_compatible(q, r)
    ref_classes = np.unique(ry)
    if ref_classes.size < 2:
        c = int(ref_classes[0])
        if (qy == c).any():
            raise ValueError(f"the reference labels hold a single class ({c}): points of that class have "
                             "no point of another class to measure against (need at least two classes)")

    return q, qy, r, ry


def nearest_other_class(
    queries: ArrayLike,
    query_labels: ArrayLike,
    refs: ArrayLike | None = None,
    ref_labels: ArrayLike | None = None,
    *,
    device: str | torch.device = "auto",
    backend: Backend = "auto",
    query_chunk: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    desc: str = "nearest other class",
    meta: dict[str, Any] | None = None,
) -> NearestOther:
    """Exact L-inf distance from every query to the nearest reference of another class, and its index.

    uint8 data is compared on the integer pixel scale (distances 0..255, reported divided by 255), float data in
    float64; ties go to the smallest reference index, so every backend returns the same arrays bit for bit.  Under
    ``torchrun`` (a process group of several ranks) the references are split into one shard per rank and the
    ranks' results merged with the same tie rule: every rank returns the single-process arrays.

    Args:
        queries: points ``(N, D)`` or ``(N, C, H, W)``, uint8 or float32/float64, numpy or torch.
        query_labels: integer labels ``(N,)``.
        refs: reference points of the queries' shape and dtype, or None for the queries themselves (train-train;
            a point's own class, so the point itself, is excluded).
        ref_labels: their labels (None with ``refs=None``).
        device: ``"auto"`` (a GPU if torch sees one), ``"cpu"``, ``"cuda[:N]"``.
        backend: ``"auto"`` (numba on a CPU, Triton on a GPU), ``"numba"``, ``"torch"``, ``"triton"``.
        query_chunk: queries per chunk, the unit of progress and resume (default: chosen by the backend).
        cache_dir: where results are stored (``nearest-<digest>.npz`` + ``.json``, keyed by a digest of the inputs)
            and interrupted searches resume from (default: no cache).
        progress: show a progress bar (default False).
        desc: the progress bar's label.
        meta: extra fields for the cache record.

    Returns:
        A :class:`NearestOther`: ``dist`` (float64 on the [0, 1] scale, ``(N,)``), ``raw_distance``, ``index``
        (int64 into the references), ``scale``, ``cached``.

    Raises:
        ValueError: mismatched shapes, dtypes or labels, non-finite values, an unknown backend or device.

    Example:
        >>> nn = nearest_other_class(test.flat(), test.labels, train.flat(), train.labels)  # doctest: +SKIP
        >>> nn.dist.min()  # doctest: +SKIP
    """
    q, qy, r, ry = _check_search_input(queries, query_labels, refs, ref_labels)
    rank, world = _process_group()
    kw: dict[str, Any] = dict(device=device, backend=backend, query_chunk=query_chunk, cache_dir=cache_dir, desc=desc,
                              meta=meta)
    if world == 1:
        return _nearest_local(q, qy, r, ry, refs is None, progress=progress, **kw)
    per = -(-r.shape[0] // world)
    lo, hi = min(rank * per, r.shape[0]), min((rank + 1) * per, r.shape[0])
    kw["meta"] = {**(meta or {}), "shard": [lo, hi], "rank": rank, "world_size": world}
    part = _nearest_local(q, qy, r[lo:hi], ry[lo:hi], False, progress=progress and rank == 0, complete=False, **kw)
    best_i = np.where(part.index >= 0, part.index + lo, -1)
    merged = _merge_shards(part.raw_distance, best_i, part.scale, world)
    return dataclasses.replace(merged, cached=part.cached)  # this rank's shard came from its cache


def _process_group() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _merge_shards(best_d: np.ndarray, best_i: np.ndarray, scale: float, world: int) -> NearestOther:
    """Every rank's (distance, global index) per query, gathered; per query the smallest distance and,
    among equal ones, the smallest index (a shard with no other-class point, index -1, never wins)."""
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    d_t, i_t = torch.from_numpy(best_d).to(dev), torch.from_numpy(best_i).to(dev)
    ds, is_ = [torch.empty_like(d_t) for _ in range(world)], [torch.empty_like(i_t) for _ in range(world)]
    dist.all_gather(ds, d_t)
    dist.all_gather(is_, i_t)
    d_all, i_all = torch.stack(ds).cpu().numpy(), torch.stack(is_).cpu().numpy()
    big = np.iinfo(np.int64).max
    i_key = np.where(i_all < 0, big, i_all)
    d_key = np.where(i_all < 0, np.inf, d_all.astype(np.float64))
    d_min = d_key.min(0)
    i_min = np.where(d_key == d_min, i_key, big).min(0)
    if (i_min == big).any():
        raise RuntimeError("internal error: a query found no point of another class on any rank")
    pick = np.argmax((d_key == d_min) & (i_key == i_min), axis=0)
    return NearestOther(d_all[pick, np.arange(d_all.shape[1])], i_min, scale)


def _nearest_local(q: np.ndarray, qy: np.ndarray, r: np.ndarray, ry: np.ndarray, self_search: bool, *,
                   device: str | torch.device, backend: Backend, query_chunk: int | None,
                   cache_dir: str | os.PathLike[str] | None, progress: bool, desc: str, meta: dict[str, Any] | None,
                   complete: bool = True) -> NearestOther:
    """The search in this process (checked inputs); ``complete`` as for ``_search_chunks``."""
    dev = resolve_device(device)
    be = _resolve_backend(backend, dev, q.dtype)
    is_int = q.dtype == np.uint8
    scale = 255.0 if is_int else 1.0
    nq = q.shape[0]
    if query_chunk is None:
        query_chunk = 4096 if be == "numba" else 16384
    if query_chunk <= 0:
        raise ValueError(f"query_chunk must be positive, got {query_chunk}")

    best_d = np.full(nq, UINT8_SENTINEL if is_int else np.inf, dtype=np.int32 if is_int else np.float64)
    best_i = np.full(nq, -1, dtype=np.int64)
    search: dict[str, Any] = dict(q=q, qy=qy, r=r, ry=ry, self_search=self_search, be=be, dev=dev, best_d=best_d,
                                  best_i=best_i, query_chunk=query_chunk, progress=progress, desc=desc,
                                  complete=complete)
    if r.shape[0] == 0:  # an empty shard (more ranks than references): nothing found here
        return NearestOther(best_d, best_i, scale)
    if cache_dir is None:
        _search_chunks(**search, done=0, cache=None)
        return NearestOther(best_d, best_i, scale)
    cache = _ResultCache(cache_dir, array_digest(
        q, qy, *(() if self_search else (r, ry)),
        extra=f"nearest_other_class/v{_CACHE_FORMAT}/self={self_search}"))
    hit = cache.load_final(nq)
    if hit is not None:
        return NearestOther(hit[0], hit[1], scale, cached=True)
    with cache.lock():  # one process computes an entry; a second one is told who
        elapsed = _search_chunks(**search, done=cache.load_partial(best_d, best_i), cache=cache)
        cache.save_final(best_d, best_i, {
            "n_queries": nq, "n_refs": int(r.shape[0]), "dim": int(q.shape[1]), "dtype": str(q.dtype),
            "self": self_search, "backend": be, "device": str(dev), "seconds": elapsed,
            "rll_version": __version__, **(meta or {})})
    return NearestOther(best_d, best_i, scale)
