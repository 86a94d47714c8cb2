"""Figures: the paper's Figure 2 (separation histograms) and figure export."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .separation import SeparationResult

__all__ = ["FIGURE_FORMATS", "export_separation", "histogram_edges", "plot_separation_histograms", "save_figure"]

FIGURE_FORMATS = ("png", "pdf", "svg")


def save_figure(fig: Figure, stem: str | os.PathLike[str], formats: Iterable[str] | str = ("png", "pdf"),
                dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format (written to a temp file, then renamed).

    ``formats`` is a list or a comma-separated string such as ``"png,pdf,svg"``."""
    if isinstance(formats, str):
        formats = [f.strip().lower() for f in formats.split(",") if f.strip()]
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        if fmt not in FIGURE_FORMATS:
            raise ValueError(f"unsupported figure format {fmt!r}; choose from {FIGURE_FORMATS}")
        path = stem.with_name(f"{stem.name}.{fmt}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
        out.append(path)
    return out


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
    ``2 * eps`` line.  Distances are on the [0, 1] pixel scale."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rep = result.report
    panels = [("train-train", result.train_train.dist)]
    if result.test_train is not None:
        panels.append(("test-train", result.test_train.dist))
    if axes is None:
        fig, ax_arr = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False,
                                   sharex=True)
        ax_list = list(ax_arr[0])
    else:
        ax_list = list(axes)[: len(panels)]
        fig = cast("Figure", ax_list[0].get_figure(root=True))
    hi = max(max(float(d.max()) for _, d in panels), 2 * rep.eps)
    edges = histogram_edges(hi, bins, result.train_train.scale)
    for ax, (name, d) in zip(ax_list, panels):
        sns.histplot(d, bins=edges, ax=ax, color="tab:blue", edgecolor="white", linewidth=0.3)
        ax.axvline(2 * rep.eps, color="tab:red", linestyle="--", label=rf"$2\epsilon$ = {2 * rep.eps:.3g}")
        ax.set_xlabel(r"$\ell_\infty$ distance to nearest other-class training point")
        ax.set_ylabel("count")
        ax.set_title(f"{rep.dataset} {name} (min {d.min():.3f})")
        ax.legend(loc="upper left", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def export_separation(result: SeparationResult, out_dir: str | os.PathLike[str],
                      formats: Iterable[str] | str = ("png", "pdf"), fig: Figure | None = None) -> dict[str, list[Path]]:
    """Write Table 1 (``table1_<dataset>.csv`` / ``.md``), the report (``separation_<dataset>.json``) and
    Figure 2 (``fig2_separation_<dataset>.<fmt>``) under ``out_dir``.

    ``fig`` is a Figure 2 already drawn (by :func:`plot_separation_histograms`), saved as it is and left
    open; without it one is drawn, saved and closed."""
    import matplotlib.pyplot as plt

    from .io import save_json, save_table

    out = Path(out_dir)
    rep = result.report
    row = rep.table1_row()
    tables = [save_table(out / f"table1_{rep.dataset}.csv", [row]), save_table(out / f"table1_{rep.dataset}.md", [row])]
    report = [save_json(out / f"separation_{rep.dataset}.json", rep.to_dict())]
    if fig is not None:
        figures = save_figure(fig, out / f"fig2_separation_{rep.dataset}", formats)
    else:
        fig = plot_separation_histograms(result, title=f"{rep.dataset}: nearest other-class distance")
        try:
            figures = save_figure(fig, out / f"fig2_separation_{rep.dataset}", formats)
        finally:
            plt.close(fig)
    return {"tables": tables, "report": report, "figures": figures}
