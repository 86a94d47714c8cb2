"""A dataset audit from the exact separation search (Section 3 extended), and robustness per point.

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
* :func:`point_robustness` - every evaluated test point of a trained run: its adversarial verdict and
  local Lipschitz value against its distance to the nearest other-class point of the run's own training
  set, saved with the run; :func:`accuracy_by_distance` bins it.

Everything is exact: the pairs and matrices come from the nearest-other-class search's own distances
and indices (``rll_core.separation``), no approximation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .checks import check_int, check_real
from .data import ImageDataset
from .separation import NearestOther, nearest_other_class
from .storage import array_digest

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FilterResult", "accuracy_by_distance", "class_matrix", "closest_pairs", "filter_close_pairs",
           "distance_bins", "plot_accuracy_by_distance", "plot_class_matrix", "plot_pair_gallery", "point_robustness", "save_filtered"]


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
    another distance is not replaced (OutputConflict, before anything is written)."""
    from .storage import OutputConflict, atomic_write_bytes, load_json, save_json, user_path

    p = user_path(path)
    if p.suffix != ".npz":
        raise ValueError(f"the filtered dataset is an .npz file, got {p.name!r}")
    settings = result.settings()
    if p.with_suffix(".json").exists():
        stored = load_json(p.with_suffix(".json"))
        diff = [k for k in ("dataset", "source_digest", "min_distance") if stored.get(k) != settings[k]]
        if diff:
            raise OutputConflict(f"{p} was filtered with other settings ({diff[0]}: stored {stored.get(diff[0])!r}, "
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
                     device: str = "auto") -> dict[str, np.ndarray]:
    """Per evaluated test point of a run: ``distance`` to the nearest other-class point of the run's own
    training set, the ``robust`` verdict of ``attack`` at the run's eps, ``lipschitz`` (rll's estimate)
    and ``correct`` (clean).  Reads (or makes) the run's table evaluation
    (:data:`rll_core.runs.TABLE_EVALUATION`, the one :func:`~rll_core.runs.run_grid` made); saves
    ``points-<eval file>.npz`` in the run folder."""
    from .data import load_train_test
    from .runs import TABLE_EVALUATION, evaluate_run, load_run
    from .storage import load_npz, save_npz, user_path

    out = user_path(run_dir)
    row = evaluate_run(out, n_eval=n_eval, **TABLE_EVALUATION, device=device, progress=False)
    stem = Path(row["eval_file"]).stem
    path = out / f"points-{stem}-{attack}.npz"
    if path.exists():
        return load_npz(path)
    ev = load_npz(out / f"{stem}.npz")
    if f"test_{attack}" not in ev:
        raise ValueError(f"the evaluation {stem} has no {attack!r} verdicts (attacks: "
                         f"{', '.join(k[5:] for k in ev if k.startswith('test_') and 'lipschitz' not in k)})")
    _, settings, _ = load_run(out, device="cpu")
    train, test = load_train_test(settings["dataset"], settings.get("data_dir"), settings["n_train"],
                                  settings["n_test"], settings["seed"])
    sub = test.subset(n_eval, seed=None)
    nn = nearest_other_class(sub.flat(), sub.labels, train.flat(), train.labels, device=device)
    arrays = {"distance": nn.dist, "robust": ev[f"test_{attack}"], "correct": ev["test_clean"],
              "lipschitz": ev["test_lipschitz"], "labels": sub.labels}
    save_npz(path, **arrays)
    return arrays


def distance_bins(distance: np.ndarray, bins: int = 4) -> np.ndarray:
    """Edges of up to ``bins`` bins holding equal numbers of points (quantiles; fewer bins where distances
    tie, as uint8 data's do), widened by half a grey level when every distance is the same."""
    d = np.asarray(distance, float)
    if d.size == 0:
        raise ValueError("no distances to bin")
    edges = np.unique(np.quantile(d, np.linspace(0, 1, check_int("bins", bins) + 1)))
    return edges if len(edges) >= 2 else np.array([edges[0] - 0.5 / 255, edges[0] + 0.5 / 255])


def accuracy_by_distance(distance: np.ndarray, robust: np.ndarray, edges: Sequence[float]) -> dict[str, np.ndarray]:
    """Robust accuracy of the points in each distance bin ``[edges[i], edges[i+1])`` (the last bin closed):
    ``accuracy`` (NaN for an empty bin), ``n`` per bin, the bin ``centre``."""
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or len(e) < 2 or not np.all(np.diff(e) > 0):
        raise ValueError("edges must be at least two increasing numbers")
    d, ok = np.asarray(distance, float), np.asarray(robust, bool)
    if d.shape != ok.shape:
        raise ValueError(f"distance {d.shape} and robust {ok.shape} differ in shape")
    b = np.clip(np.searchsorted(e, d, side="right") - 1, 0, len(e) - 2)
    inside = (d >= e[0]) & (d <= e[-1])
    n = np.bincount(b[inside], minlength=len(e) - 1)
    hits = np.bincount(b[inside], weights=ok[inside].astype(float), minlength=len(e) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    return {"accuracy": acc, "n": n, "centre": (e[:-1] + e[1:]) / 2}


# ----------------------------------------------------------------------------------------------
# figures


def _class_name(ds: Any, c: int) -> str:
    names = getattr(ds, "classes", ())
    return str(names[c]) if 0 <= c < len(names) else str(c)


def plot_pair_gallery(pairs: Sequence[Mapping[str, Any]], queries: Any, refs: Any, *, cols: int = 4,
                      title: str = "") -> Figure:
    """The closest cross-class pairs (:func:`rll_core.audit.closest_pairs`) side by side: each pair's two
    images with their split, index and label, and the L-inf distance between them."""
    import matplotlib.pyplot as plt

    if not pairs:
        raise ValueError("no pairs to show")
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.0 * 2 * cols * 0.62, 1.62 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    qname, rname = getattr(queries, "split", "query"), getattr(refs, "split", "ref")
    for k, p in enumerate(pairs):
        r, c = divmod(k, cols)
        for side, (ds, i, lab, where) in enumerate(((queries, p["query"], p["query_label"], qname),
                                                    (refs, p["ref"], p["ref_label"], rname))):
            ax = axes[r][2 * c + side]
            img = np.asarray(ds.images[i])
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{where} #{i}\n{_class_name(ds, lab)}", fontsize=7)
        axes[r][2 * c].text(1.05, -0.08, f"d = {p['distance']:.3f}", transform=axes[r][2 * c].transAxes,
                            ha="center", va="top", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_class_matrix(matrix: Mapping[str, np.ndarray], class_names: Sequence[str] = (), *, stat: str = "min",
                      title: str = "") -> Figure:
    """Heatmap of :func:`rll_core.audit.class_matrix`: row = a point's class, column = the class of its
    nearest other-class training point; the cell's ``stat`` distance (empty: no such point)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if stat not in ("min", "median"):
        raise ValueError(f"stat must be 'min' or 'median', got {stat!r}")
    m = matrix[stat]
    names = list(class_names) or [str(i) for i in range(len(m))]
    fig, ax = plt.subplots(figsize=(0.55 * len(m) + 2.2, 0.5 * len(m) + 1.4))
    sns.heatmap(m, ax=ax, annot=True, fmt=".2f", annot_kws={"fontsize": 7}, cmap="viridis", mask=np.isnan(m),
                xticklabels=names, yticklabels=names, cbar_kws={"label": f"{stat} L-inf distance"})
    lo = np.nanargmin(m)
    a, b = divmod(int(lo), m.shape[1])
    ax.add_patch(plt.Rectangle((b, a), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("class of the nearest other-class training point")
    ax.set_ylabel("class of the point")
    ax.tick_params(labelsize=7)
    ax.set_title(title or f"{stat} nearest-other-class distance (red: the pair that bounds r)", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_accuracy_by_distance(curves: Sequence[Mapping[str, Any]], edges: Sequence[float], *,
                              title: str = "") -> Figure:
    """Robust test accuracy per bin of the distance to the nearest other-class training point (one line
    per method: ``accuracy``, ``n``, ``method``, ``label``; bins from ``edges``), with 95 % Wilson bars:
    does a model fail where the data is least separated, or everywhere?  The bins are drawn side by side
    and labelled with their range and n (distances can crowd into a narrow range: on MNIST nearly every
    test point is 0.98-1.0 from the nearest other-class training point)."""
    import matplotlib.pyplot as plt

    from .plotting import method_style
    from .tables import wilson_errors

    e = np.asarray(edges, float)
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    for k, c in enumerate(curves):
        st = method_style(c.get("method", ""))
        acc, n = np.asarray(c["accuracy"], float), np.asarray(c["n"])
        ok = n > 0
        err = np.array([wilson_errors(a, int(m)) for a, m in zip(acc[ok], n[ok], strict=True)]).reshape(-1, 2).T
        shift = (k - (len(curves) - 1) / 2) * 0.06  # a little apart, so the bars do not hide each other
        theory = c.get("method") == "theory"
        ax.errorbar(np.flatnonzero(ok) + shift, acc[ok], yerr=err, label=str(c.get("label", c.get("method", "?"))),
                    capsize=2, elinewidth=0.8, linewidth=2.2 if theory else 1.5, linestyle="--" if theory else "-",
                    **st)
    n0 = np.asarray(curves[0]["n"]) if curves else np.zeros(len(e) - 1, int)
    ax.set_xticks(range(len(e) - 1), [f"[{e[i]:.3f}, {e[i + 1]:.3f}{']' if i == len(e) - 2 else ')'}\nn = {n0[i]}"
                                      for i in range(len(e) - 1)], fontsize=8)
    ax.set_xlabel(r"distance to the nearest other-class training point ($\ell_\infty$), bin")
    ax.set_ylabel("robust test accuracy in the bin")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
