"""Section 3's figures: Figure 2 (separation histograms), Table 1's files, and the dataset audit's pictures
(the closest cross-class pairs, the class matrix)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..paper import display_name
from ..storage import check_outputs, output_tag, record_outputs, save_json, save_table, user_path
from ._base import save_figure, set_caption, wrapped

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..separation import SeparationResult

__all__ = ["TABLE1_HEADERS", "class_name", "export_separation", "histogram_edges", "plot_class_matrix",
           "plot_pair_gallery", "plot_separation_histograms", "separation_outputs", "separation_tag", "table1_display"]



def histogram_edges(hi: float, bins: int, scale: float) -> np.ndarray:
    """About ``bins`` bins over [0, hi].  Distances of uint8 data (``scale`` 255) take only the values
    k/255, so the edges sit half-way between those values and every bin holds the same number of them
    (equal-width bins would alias into spikes)."""
    if bins <= 0:
        raise ValueError(f"bins must be positive, got {bins}")
    if scale == 1.0:
        return np.linspace(0.0, hi * 1.02, bins + 1)
    top = int(np.ceil(hi * scale))
    step = max(1, int(round(top / bins)))
    return (np.arange(0, top + step + 1, step) - 0.5) / scale


def plot_separation_histograms(result: SeparationResult, bins: int = 50, axes: tuple[Axes, Axes] | None = None,
                               title: str | None = None) -> Figure:
    """Figure 2: histograms of train-train and test-train nearest-other-class distances, with the
    ``2 * eps`` line and the minimum marked.  Distances are on the [0, 1] pixel scale; counts on a log scale,
    so that the few points of the tail (which set r) show beside the mass near 1."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rep = result.report
    panels = [("train-train", result.train_train.dist)]
    if result.test_train is not None:
        panels.append(("test-train", result.test_train.dist))
    owned = axes is None  # a figure the caller passed in stays open; one made here is closed (shown once)
    if axes is None:
        fig, ax_arr = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False,
                                   sharex=True)
        ax_list = list(ax_arr[0])
    else:
        ax_list = list(axes)[: len(panels)]
        fig = cast("Figure", ax_list[0].get_figure(root=True))
    hi = max(max(float(d.max()) for _, d in panels), 2 * rep.eps)
    edges = histogram_edges(hi, bins, result.train_train.scale)
    for ax, (name, d) in zip(ax_list, panels, strict=True):
        sns.histplot(d, bins=edges, ax=ax, color="tab:blue", edgecolor="white", linewidth=0.3)
        ax.axvline(2 * rep.eps, color="tab:red", linestyle="--", label=rf"$2\epsilon$ = {2 * rep.eps:.3g}")
        ax.axvline(float(d.min()), color="tab:green", linestyle=":", linewidth=1.5, label=f"min = {d.min():.3f}")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\ell_\infty$ distance to nearest other-class training point")
        ax.set_ylabel("count (log scale)")
        ax.set_title(f"{display_name(rep.dataset)} {name} (n = {len(d):,}, min {d.min():.3f})", fontsize=10)
        ax.legend(loc="upper left", frameon=True, framealpha=1.0, edgecolor="none")  # opaque over the 2ε line
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if owned:
        plt.close(fig)
    return fig


#: Table 1's columns as people read them (the csv keeps the keys).
TABLE1_HEADERS = {"dataset": "dataset", "n_train": "n train", "n_test": "n test", "train_train_min": "train-train min",
                  "train_train_mean": "train-train mean", "test_train_min": "test-train min",
                  "test_train_mean": "test-train mean", "2eps": "2ε", "r_separation": "r",
                  "separated_at_eps": "r ≥ ε", "frac_test_within_2eps": "test points within 2ε"}


def table1_display(row: Mapping[str, Any]) -> dict[str, Any]:
    """Table 1's row with readable headers and the dataset's usual name."""
    return {TABLE1_HEADERS.get(k, k): (display_name(v) if k == "dataset" else v) for k, v in row.items()}


def separation_tag(n_train: int | None, n_test: int | None, seed: int, eps: float | None) -> str:
    """What sets a separation job's outputs apart from the full data's at the paper's eps, for their names:
    ``_n800-200-seed0`` for subsets, ``-eps0.2`` for another eps, ``""`` for the default job."""
    subset = n_train is not None or n_test is not None
    return output_tag(n=f"{n_train or 'all'}-{n_test or 'all'}" if subset else None, seed=seed if subset else None,
                      eps=eps)


def separation_outputs(dataset: str, tag: str = "") -> str:
    """The name of a separation job's output set (its settings record is ``<name>.settings.json``)."""
    return f"separation_{dataset}{tag}"


def export_separation(result: SeparationResult, out_dir: str | os.PathLike[str],
                      formats: Iterable[str] | str = ("png", "pdf"), fig: Figure | None = None,
                      tag: str = "", settings: Mapping[str, Any] | None = None) -> dict[str, list[Path]]:
    """Write Table 1 (``table1_<dataset><tag>.csv`` / ``.md``), the report (``separation_<dataset><tag>.json``)
    and Figure 2 (``fig2_separation_<dataset><tag>.<fmt>``) under ``out_dir``.

    Args:
        result: a :class:`~rll_core.separation.SeparationResult` (:func:`rll_core.separation.measure_separation`).
        out_dir: the folder (``~`` expanded).
        formats: figure formats, a list or ``"png,pdf,svg"`` (default png and pdf).
        fig: a Figure 2 already drawn (:func:`plot_separation_histograms`), saved as it is and left open; without
            it one is drawn, saved and closed.
        tag: what sets the outputs apart (:func:`separation_tag`: ``_n800-200-seed0`` for subsets), so a subset's
            table never takes the full data's name.
        settings: :func:`rll_core.separation.separation_settings`: the outputs are refused when they hold another
            setting's or other data's result, and the settings are recorded beside them.

    Returns:
        ``{"tables": [...], "report": [...], "figures": [...]}``, the paths written.

    Raises:
        ValueError: an unknown format; OutputConflictError: the outputs hold another result.

    Example:
        >>> export_separation(res, "figures", "png,pdf,svg")  # doctest: +SKIP
    """

    out = user_path(out_dir)
    rep = result.report
    row = rep.table1_row()
    name = f"{rep.dataset}{tag}"
    if settings is not None:
        check_outputs(out, separation_outputs(rep.dataset, tag), settings)
    cap = (f"Table 1: {display_name(rep.dataset)}, exact L-inf distance from each point to the nearest training point "
           f"of another class (pixels in [0, 1]); r is half the train-train minimum; ε = {rep.eps:g}.")
    tables = [save_table(out / f"table1_{name}.csv", [row]),
              save_table(out / f"table1_{name}.md", [table1_display(row)], caption=cap)]
    report = [save_json(out / f"separation_{name}.json", rep.to_dict())]
    if fig is not None:
        figures = save_figure(fig, out / f"fig2_separation_{name}", formats)
    else:
        fig = plot_separation_histograms(result, title=f"{display_name(rep.dataset)}: nearest other-class distance")
        figures = save_figure(fig, out / f"fig2_separation_{name}", formats)
    if settings is not None:
        record_outputs(out, separation_outputs(rep.dataset, tag), settings, [*tables, *report, *figures])
    return {"tables": tables, "report": report, "figures": figures}


def class_name(ds: Any, c: int) -> str:
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
    # 0.85 in an image: four pairs a row fill a two-column page (6.8 in) at the figure's own size
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(0.85 * 2 * cols, 1.45 * rows + (0.35 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    qname, rname = getattr(queries, "split", "query"), getattr(refs, "split", "ref")
    seen: dict[tuple[str, int], int] = {}
    for p in pairs:  # an image in several pairs is marked, so that its repeats are not taken for new points
        for key in ((qname, int(p["query"])), (rname, int(p["ref"]))):
            seen[key] = seen.get(key, 0) + 1
    repeated = False
    for k, p in enumerate(pairs):
        r, c = divmod(k, cols)
        for side, (ds, i, lab, where) in enumerate(((queries, p["query"], p["query_label"], qname),
                                                    (refs, p["ref"], p["ref_label"], rname))):
            ax = axes[r][2 * c + side]
            img = np.asarray(ds.images[i])
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            mark = "*" if seen[(where, int(i))] > 1 else ""
            repeated |= bool(mark)
            ax.set_title(f"{where} #{i}{mark}\nlabel {class_name(ds, lab)}", fontsize=7)
        axes[r][2 * c].text(1.05, -0.08, f"d = {p['distance']:.3f}", transform=axes[r][2 * c].transAxes,
                            ha="center", va="top", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.03 if repeated else 0, 1, 1))
    if repeated:
        fig.text(0.5, 0.005, "* this image is in more than one of the pairs shown (it is close to several images "
                 "of other classes)", ha="center", va="bottom", fontsize=7)
    _frame_pairs(fig, axes, len(pairs), cols)
    plt.close(fig)
    return fig


def _frame_pairs(fig: Figure, axes: Any, n: int, cols: int) -> None:
    """A light box behind each pair's two images, so that the pairs read as pairs."""
    from matplotlib.patches import FancyBboxPatch

    for k in range(n):  # each pair's distance centred under its two images, as laid out
        left, right = axes[k // cols][2 * (k % cols)], axes[k // cols][2 * (k % cols) + 1]
        pl, pr = left.get_position(), right.get_position()
        for t in left.texts:
            t.set_x(((pl.x0 + pr.x1) / 2 - pl.x0) / pl.width)
    fig.canvas.draw()  # the titles' extents are known after a draw
    inv = fig.transFigure.inverted()
    for k in range(n):
        r, c = divmod(k, cols)
        boxes = [a.get_tightbbox().transformed(inv) for a in (axes[r][2 * c], axes[r][2 * c + 1])]
        x0, y0 = min(b.x0 for b in boxes), min(b.y0 for b in boxes)
        x1, y1 = max(b.x1 for b in boxes), max(b.y1 for b in boxes)
        fig.patches.append(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.004",
                                          transform=fig.transFigure, facecolor="#f0f0f0", edgecolor="#bbbbbb",
                                          linewidth=0.6, zorder=-1))


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
    fig, ax = plt.subplots(figsize=(0.55 * len(m) + 2.2, 0.5 * len(m) + 1.9))
    sns.heatmap(m, ax=ax, annot=True, fmt=".2f", annot_kws={"fontsize": 7}, cmap="viridis", mask=np.isnan(m),
                xticklabels=names, yticklabels=names, cbar_kws={"label": f"{stat} L-inf distance"})
    low = np.nanmin(m)
    for a, b in zip(*np.nonzero(np.isclose(m, low, atol=5e-4, rtol=0)), strict=True):  # every cell at the minimum
        ax.add_patch(plt.Rectangle((b, a), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("class of the nearest other-class training point")
    ax.set_ylabel("class of the point")
    ax.tick_params(labelsize=8)
    cbar = ax.collections[0].colorbar
    if cbar is not None:
        cbar.ax.tick_params(labelsize=8)
        cbar.set_label(f"{stat} L-inf distance", fontsize=8)
    blank = int(np.isnan(m).sum() - np.isnan(np.diag(m)).sum())
    set_caption(fig, (f"Row: a point's class; column: the class of its nearest other-class training point; each "
                      f"cell the {stat} L-inf distance. Red: the cells at the minimum ({low:.3f}), the pair that "
                      "bounds r (a pair shows in both of its cells). Blank: the diagonal") + (
        f", and {blank} cells where no point of the row's class has its nearest other-class point in the column's "
        "class." if blank else "."))
    ax.set_title(wrapped(title or f"{stat} nearest-other-class distance", 70), fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
