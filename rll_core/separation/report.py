"""Summaries of the distances, the Table 1 report and :func:`measure_separation` (a dataset's train-train
and test-train search in one call).  See :mod:`rll_core.separation`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..checks import check_eps
from ..data import ImageDataset
from ..paper import eps_for
from ..storage import array_digest
from .search import Backend, NearestOther, nearest_other_class

__all__ = ["DEFAULT_PERCENTILES", "DistanceSummary", "SeparationReport", "SeparationResult", "measure_separation",
           "separation_settings", "summarize"]

DEFAULT_PERCENTILES: tuple[float, ...] = (1, 5, 10, 25, 50, 75, 90, 95, 99)


# ----------------------------------------------------------------------------------------------
# summaries


@dataclass(frozen=True)
class DistanceSummary:
    """Summary of a set of distances on the [0, 1] scale."""

    n: int
    min: float
    mean: float
    median: float
    std: float
    max: float
    percentiles: dict[float, float] = field(default_factory=dict)


def summarize(dist: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> DistanceSummary:
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of distances, got shape {d.shape}")
    pct: list[float] = np.percentile(d, list(percentiles)).tolist() if len(percentiles) else []
    return DistanceSummary(int(d.size), float(d.min()), float(d.mean()), float(np.median(d)), float(d.std()),
                           float(d.max()), {float(p): float(v) for p, v in zip(percentiles, pct, strict=True)})


@dataclass(frozen=True)
class SeparationReport:
    """Table 1 of the paper for one dataset: separation against ``2 * eps``."""

    dataset: str
    eps: float
    n_train: int
    n_test: int
    train_train: DistanceSummary
    test_train: DistanceSummary | None
    #: fraction of training points closer than 2*eps to another class (0 when r-separated at eps)
    frac_train_within_2eps: float
    #: fraction of test points closer than 2*eps to a training point of another class
    frac_test_within_2eps: float | None

    @property
    def r_separation(self) -> float:
        """The largest r for which the training set is r-separated: half the min train-train distance."""
        return self.train_train.min / 2

    @property
    def two_eps(self) -> float:
        return 2 * self.eps

    def table1_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "dataset": self.dataset,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_train_min": self.train_train.min,
            "train_train_mean": self.train_train.mean,
            "test_train_min": self.test_train.min if self.test_train else float("nan"),
            "test_train_mean": self.test_train.mean if self.test_train else float("nan"),
            "2eps": self.two_eps,
            "r_separation": self.r_separation,
            "separated_at_eps": self.r_separation >= self.eps,
            "frac_test_within_2eps": (self.frac_test_within_2eps if self.frac_test_within_2eps is not None
                                      else float("nan")),
        }
        return row

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["r_separation"] = self.r_separation
        return d


@dataclass(frozen=True)
class SeparationResult:
    report: SeparationReport
    train_train: NearestOther
    test_train: NearestOther | None

    @property
    def cached(self) -> bool:
        """Whether every distance array came from the cache."""
        return self.train_train.cached and (self.test_train is None or self.test_train.cached)


def separation_settings(train: ImageDataset, test: ImageDataset | None, eps: float | None = None) -> dict[str, Any]:
    """What a separation job's outputs depend on: the data (name, format, sizes and a digest of every image and
    label, so a folder of your own in a registry format is told apart from the original) and the eps (default
    the paper's).  Stored beside Table 1 and Figure 2; other settings are refused there."""
    arrays = [train.images, train.labels] + ([test.images, test.labels] if test is not None else [])
    return {"dataset": train.name, "kind": train.kind, "n_train": len(train), "n_test": len(test) if test else 0,
            "eps": float(eps_for(train) if eps is None else eps), "data_digest": array_digest(*arrays)}


def measure_separation(
    train: ImageDataset,
    test: ImageDataset | None = None,
    eps: float | None = None,
    *,
    device: str | torch.device = "auto",
    backend: Backend = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    query_chunk: int | None = None,
) -> SeparationResult:
    """Table 1 for one dataset: train-train and (with ``test``) test-train nearest-other-class distances.

    Args:
        train: the training set (an :class:`~rll_core.data.ImageDataset`).
        test: the held-out set, or None for train-train only.
        eps: the radius Table 1 compares ``2 eps`` against, in [0, 1] (default: the paper's for the dataset, or
            for data of your own the paper dataset of its image shape: :func:`rll_core.paper.eps_for`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        backend: the search kernel (see :func:`nearest_other_class`).
        cache_dir: where the distance arrays are cached and resumed from (default: no cache).
        progress: show progress bars (default False).
        query_chunk: queries per chunk (default: the backend's).

    Returns:
        A :class:`SeparationResult`: the :class:`SeparationReport` (``r_separation``, summaries, ``table1_row()``)
        and both :class:`NearestOther` results.

    Raises:
        ValueError: an eps outside [0, 1], no default eps for the data's shape, splits of different shapes.

    Example:
        >>> res = measure_separation(train, test, cache_dir="results/cache")  # doctest: +SKIP
        >>> res.report.table1_row()["r_separation"]  # doctest: +SKIP
    """
    if eps is None:  # the paper's radius for the dataset, or for data of your own its shape's paper dataset
        try:
            eps = eps_for(train)
        except ValueError as e:
            raise ValueError(f"no default eps for {train.name!r}: {e}; pass eps=") from None
    check_eps(eps)
    if test is not None and test.shape != train.shape:
        raise ValueError(f"test images {test.shape} and train images {train.shape} differ in shape")
    common: dict[str, Any] = dict(device=device, backend=backend, cache_dir=cache_dir, progress=progress,
                                  query_chunk=query_chunk)
    tt = nearest_other_class(train.flat(), train.labels, desc=f"{train.name} train-train",
                             meta={"dataset": train.name, "query_split": train.split, "ref_split": train.split},
                             **common)
    te = None
    if test is not None:
        te = nearest_other_class(test.flat(), test.labels, train.flat(), train.labels,
                                 desc=f"{train.name} test-train",
                                 meta={"dataset": train.name, "query_split": test.split, "ref_split": train.split},
                                 **common)
    report = SeparationReport(train.name, float(eps), len(train), len(test) if test is not None else 0,
                              summarize(tt.dist), summarize(te.dist) if te is not None else None,
                              float((tt.dist < 2 * eps).mean()),
                              float((te.dist < 2 * eps).mean()) if te is not None else None)
    return SeparationResult(report, tt, te)
