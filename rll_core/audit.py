"""A dataset audit from the exact separation search (Section 3 extended).

* :func:`closest_pairs` - the k closest cross-class pairs (train-train or test-train), with both labels,
  both indices and the distance: where the data is least separated, and often why (near-duplicates
  with different labels).
* :func:`class_matrix` - for the points of class a whose nearest other-class training point is of class
  b: how many, their minimum and median distance.  The smallest minimum is the train-train 2r, so the
  matrix says which pair of classes bounds r.
* :func:`filter_close_pairs` - drop both points of every train-train pair closer than a threshold and
  search again, until the rest is separated at it (the paper removed duplicates from SVHN and Restricted
  ImageNet by hand); :func:`save_filtered` writes the kept set as an ``.npz`` a training run can use,
  with the dropped indices and the settings beside it.
* :func:`point_robustness` - per evaluated test point of a trained run, its robust verdict beside its exact
  distance to the other classes (binned by :func:`rll_core.stats.accuracy_by_distance`).

Their pictures are :func:`rll_core.plotting.plot_pair_gallery` and :func:`rll_core.plotting.plot_class_matrix`.

Everything is exact: the pairs and matrices come from the nearest-other-class search's own distances
and indices (``rll_core.separation``), no approximation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_int, check_real
from .data import ImageDataset, load_train_test
from .grids import TABLE_EVALUATION
from .runs import evaluate_run, run_settings
from .separation import NearestOther, nearest_other_class
from .storage import (
    OutputConflictError,
    array_digest,
    atomic_write_bytes,
    load_json,
    load_npz,
    save_json,
    save_npz,
    user_path,
)

__all__ = ["FilterResult", "class_matrix", "closest_pairs", "filter_close_pairs", "point_robustness", "save_filtered"]


def closest_pairs(nearest: NearestOther, query_labels: np.ndarray, ref_labels: np.ndarray, k: int = 16, *,
                  self_search: bool) -> list[dict[str, Any]]:
    """The ``k`` closest (query, nearest other-class reference) pairs, closest first.

    ``self_search``: the search was train against train, so ``(i, j)`` and ``(j, i)`` are one pair (kept
    once).  Each pair: ``query``, ``ref`` (indices), ``query_label``, ``ref_label``, ``distance`` ([0, 1]
    pixel scale).  Ties are broken by the query index."""
    check_int("k", k)
    qy, ry = np.asarray(query_labels), np.asarray(ref_labels)
    if len(qy) != len(nearest):
        raise ValueError(f"{len(qy)} query labels for {len(nearest)} searched points")
    order = np.lexsort((np.arange(len(nearest)), nearest.raw_distance))
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for i in order:
        j = int(nearest.index[i])
        key = (min(int(i), j), max(int(i), j)) if self_search else (int(i), j)
        if key in seen:
            continue
        seen.add(key)
        out.append({"query": int(i), "ref": j, "query_label": int(qy[i]), "ref_label": int(ry[j]),
                    "distance": float(nearest.dist[i])})
        if len(out) == k:
            break
    return out


def class_matrix(nearest: NearestOther, query_labels: np.ndarray, ref_labels: np.ndarray,
                 num_classes: int | None = None) -> dict[str, np.ndarray]:
    """``count``, ``min`` and ``median`` (C x C): row a, column b describe the points of class a whose
    nearest other-class reference is of class b (NaN where there is none).  ``min`` over the whole
    matrix is the smallest nearest-other-class distance (2r for train-train)."""
    qy = np.asarray(query_labels, dtype=np.int64)
    nb = np.asarray(ref_labels, dtype=np.int64)[nearest.index]
    c = int(num_classes) if num_classes is not None else int(max(qy.max(), nb.max())) + 1
    d = nearest.dist
    count = np.zeros((c, c), dtype=np.int64)
    np.add.at(count, (qy, nb), 1)
    lo = np.full((c, c), np.inf)
    np.minimum.at(lo, (qy, nb), d)
    med = np.full((c, c), np.nan)
    for a, b in zip(*np.nonzero(count), strict=True):  # one median per non-empty cell (C^2 at most)
        med[a, b] = float(np.median(d[(qy == a) & (nb == b)]))
    return {"count": count, "min": np.where(count > 0, lo, np.nan), "median": med}


@dataclass(frozen=True)
class FilterResult:
    """The training set without its close cross-class pairs."""

    kept: ImageDataset
    #: indices into the original training set, in the order they were dropped round by round
    dropped: np.ndarray
    min_distance: float
    r_before: float
    r_after: float
    rounds: int
    #: digest of the training set it was filtered from (images and labels)
    source_digest: str = ""

    def settings(self) -> dict[str, Any]:
        return {"dataset": self.kept.name, "split": self.kept.split, "source_digest": self.source_digest,
                "n_before": len(self.kept) + len(self.dropped),
                "n_kept": len(self.kept), "n_dropped": len(self.dropped), "min_distance": self.min_distance,
                "r_before": self.r_before, "r_after": self.r_after, "rounds": self.rounds,
                "rule": "drop both points of every train-train cross-class pair closer than min_distance; repeat"}


def filter_close_pairs(train: ImageDataset, min_distance: float, *, device: str = "auto", backend: Any = "auto",
                       cache_dir: str | os.PathLike[str] | None = None, progress: bool = False,
                       max_rounds: int = 20) -> FilterResult:
    """Drop both points of every cross-class pair closer than ``min_distance`` (L-inf, [0, 1] scale) and
    search the rest again, until it is separated at ``min_distance`` (its 2r >= ``min_distance``)."""
    thr = check_real("min_distance", min_distance, lo=0, hi=1)
    check_int("max_rounds", max_rounds)
    idx = np.arange(len(train))
    dropped: list[np.ndarray] = []
    r_before = None
    for rounds in range(max_rounds + 1):
        x, y = train.flat()[idx], train.labels[idx]
        nn = nearest_other_class(x, y, device=device, backend=backend, cache_dir=cache_dir, progress=progress,
                                 desc=f"{train.name} filter round {rounds}")
        r_now = float(nn.dist.min()) / 2
        r_before = r_now if r_before is None else r_before
        close = nn.dist < thr
        if not close.any():
            break
        if rounds == max_rounds:
            raise RuntimeError(f"still pairs closer than {thr} after {max_rounds} rounds; raise max_rounds")
        local = np.unique(np.concatenate([np.flatnonzero(close), nn.index[close]]))
        dropped.append(idx[local])
        idx = np.delete(idx, local)
        if len(np.unique(train.labels[idx])) < 2:
            raise ValueError(f"min_distance {thr} drops all but one class; choose a smaller threshold")
    kept = dataclasses.replace(train, images=np.ascontiguousarray(train.images[idx]), labels=train.labels[idx])
    return FilterResult(kept, np.concatenate(dropped) if dropped else np.zeros(0, np.int64), thr,
                        float(r_before or 0.0), r_now, rounds, array_digest(train.images, train.labels))


def save_filtered(result: FilterResult, path: str | os.PathLike[str], test: ImageDataset | None = None) -> Path:
    """Write the kept training set (and ``test``, unchanged, if given) as an ``.npz`` dataset
    (:func:`rll_core.data.load_npz_dataset`; ``rll train --dataset <path>``) and, beside it, ``.json``
    with the dropped indices and the settings that produced them.  A file filtered from other data or at
    another distance is not replaced (OutputConflictError, before anything is written)."""
    p = user_path(path)
    if p.suffix != ".npz":
        raise ValueError(f"the filtered dataset is an .npz file, got {p.name!r}")
    settings = result.settings()
    if p.with_suffix(".json").exists():
        stored = load_json(p.with_suffix(".json"))
        diff = [k for k in ("dataset", "source_digest", "min_distance") if stored.get(k) != settings[k]]
        if diff:
            raise OutputConflictError(f"{p} was filtered with other settings ({diff[0]}: stored {stored.get(diff[0])!r}, "
                                 f"now {settings[diff[0]]!r}); choose another file name or delete it and its .json")
    import io

    arrays: dict[str, np.ndarray] = {"images": result.kept.images, "labels": result.kept.labels}
    if test is not None:
        arrays |= {"test_images": test.images, "test_labels": test.labels}
    if result.kept.classes:
        arrays["class_names"] = np.array(result.kept.classes)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    save_json(p.with_suffix(".json"), {**settings, "dropped": result.dropped.tolist()})
    return atomic_write_bytes(p, buf.getvalue())


def point_robustness(run_dir: str | os.PathLike[str], *, n_eval: int = 100, attack: str = "pgd",
                     device: str = "auto", precision: str = "auto",
                     evaluation: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Per evaluated test point of a run: ``distance`` to the nearest other-class point of the run's own
    training set, the ``robust`` verdict of ``attack`` at the run's eps, ``lipschitz`` (rll's estimate)
    and ``correct`` (clean).  Reads (or makes) the run's table evaluation (``evaluation``: the attacks, default
    :data:`rll_core.grids.TABLE_EVALUATION`, the one :func:`~rll_core.grids.run_grid` made for its preset); saves
    ``points-<eval file>.npz`` in the run folder."""
    out = user_path(run_dir)
    row = evaluate_run(out, n_eval=n_eval, **(TABLE_EVALUATION if evaluation is None else evaluation), device=device,
                       progress=False, precision=precision)
    stem = Path(row["eval_file"]).stem
    path = out / f"points-{stem}-{attack}.npz"
    if path.exists():
        return load_npz(path)
    ev = load_npz(out / f"{stem}.npz")
    if f"test_{attack}" not in ev:
        raise ValueError(f"the evaluation {stem} has no {attack!r} verdicts (attacks: "
                         f"{', '.join(k[5:] for k in ev if k.startswith('test_') and 'lipschitz' not in k)})")
    settings = run_settings(out)
    train, test = load_train_test(settings["dataset"], settings.get("data_dir"), settings["n_train"],
                                  settings["n_test"], settings["seed"])
    sub = test.subset(n_eval, seed=None)
    nn = nearest_other_class(sub.flat(), sub.labels, train.flat(), train.labels, device=device)
    arrays = {"distance": nn.dist, "robust": ev[f"test_{attack}"], "correct": ev["test_clean"],
              "lipschitz": ev["test_lipschitz"], "labels": sub.labels}
    save_npz(path, **arrays)
    return arrays
