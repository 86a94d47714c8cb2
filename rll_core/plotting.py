"""Figures: the paper's Figure 2 (separation histograms) and figure export."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .storage import atomic_write_bytes, user_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .separation import SeparationResult

__all__ = ["FIGURE_FORMATS", "check_formats", "export_separation", "histogram_edges", "plot_astuteness_curves",
           "plot_decision_regions", "plot_dropout_comparison", "plot_gaps", "plot_lipschitz_vs_accuracy",
           "plot_separation_histograms", "save_figure"]

FIGURE_FORMATS = ("png", "pdf", "svg")


def check_formats(formats: Iterable[str] | str) -> list[str]:
    """The figure formats as a list, or a ValueError naming the bad one (call it before long work)."""
    if isinstance(formats, str):
        formats = [f.strip().lower() for f in formats.split(",") if f.strip()]
    out = list(formats)
    for fmt in out:
        if fmt not in FIGURE_FORMATS:
            raise ValueError(f"unsupported figure format {fmt!r}; choose from {', '.join(FIGURE_FORMATS)}")
    if not out:
        raise ValueError(f"no figure format given; choose from {', '.join(FIGURE_FORMATS)}")
    return out


def save_figure(fig: Figure, stem: str | os.PathLike[str], formats: Iterable[str] | str = ("png", "pdf"),
                dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format (each written atomically: a reader sees the old file
    or the whole new one).

    ``formats`` is a list or a comma-separated string such as ``"png,pdf,svg"``."""
    formats = check_formats(formats)
    stem = user_path(stem)
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(atomic_write_bytes(stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))
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
    for ax, (name, d) in zip(ax_list, panels, strict=True):
        sns.histplot(d, bins=edges, ax=ax, color="tab:blue", edgecolor="white", linewidth=0.3)
        ax.axvline(2 * rep.eps, color="tab:red", linestyle="--", label=rf"$2\epsilon$ = {2 * rep.eps:.3g}")
        ax.set_xlabel(r"$\ell_\infty$ distance to nearest other-class training point")
        ax.set_ylabel("count")
        ax.set_title(f"{rep.dataset} {name} (min {d.min():.3f})")
        ax.legend(loc="upper left", frameon=True, framealpha=1.0, edgecolor="none")  # opaque over the 2ε line
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def export_separation(result: SeparationResult, out_dir: str | os.PathLike[str],
                      formats: Iterable[str] | str = ("png", "pdf"), fig: Figure | None = None,
                      tag: str = "") -> dict[str, list[Path]]:
    """Write Table 1 (``table1_<dataset><tag>.csv`` / ``.md``), the report (``separation_<dataset><tag>.json``)
    and Figure 2 (``fig2_separation_<dataset><tag>.<fmt>``) under ``out_dir``.

    ``tag`` (see :func:`rll_core.storage.output_tag`) says what sets the outputs apart, e.g. ``_n800-200`` for
    subsets, so a subset's table never overwrites the full data's.  ``fig`` is a Figure 2 already drawn
    (by :func:`plot_separation_histograms`), saved as it is and left open; without it one is drawn, saved
    and closed."""
    import matplotlib.pyplot as plt

    from .storage import save_json, save_table, user_path

    out = user_path(out_dir)
    rep = result.report
    row = rep.table1_row()
    name = f"{rep.dataset}{tag}"
    tables = [save_table(out / f"table1_{name}.csv", [row]), save_table(out / f"table1_{name}.md", [row])]
    report = [save_json(out / f"separation_{name}.json", rep.to_dict())]
    if fig is not None:
        figures = save_figure(fig, out / f"fig2_separation_{name}", formats)
    else:
        fig = plot_separation_histograms(result, title=f"{rep.dataset}: nearest other-class distance")
        try:
            figures = save_figure(fig, out / f"fig2_separation_{name}", formats)
        finally:
            plt.close(fig)
    return {"tables": tables, "report": report, "figures": figures}


# ----------------------------------------------------------------------------------------------
# Section 4 and 5 figures


def _label(r: Mapping[str, Any]) -> str:
    return str(r.get("label", r.get("method", "?")))


def plot_lipschitz_vs_accuracy(rows: Sequence[Mapping[str, Any]], attack: str = "pgd",
                               ax: Axes | None = None) -> Figure:
    """The paper's Section 5 correlation: test local Lipschitz constant against adversarial test accuracy,
    one labelled point per method."""
    import matplotlib.pyplot as plt

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = _fig_ax(ax, (5.5, 4))
    for r in rows:
        x, y = r["test_lipschitz"], r[f"test_{attack}_accuracy"]
        ax.scatter([x], [y], s=30)
        ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel(r"empirical local Lipschitz constant (test, $\ell_\infty \to \ell_1$)")
    ax.set_ylabel(f"adversarial test accuracy ({attack})")
    ax.grid(alpha=0.3)
    if owned:
        plt.close(fig)
    return fig


def plot_gaps(rows: Sequence[Mapping[str, Any]], ax: Axes | None = None) -> Figure:
    """Standard and adversarial generalization gaps (train minus test accuracy) per method."""
    import matplotlib.pyplot as plt

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = _fig_ax(ax, (max(5.0, 0.7 * len(rows) + 2), 3.5))
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r["gap_standard"] for r in rows], 0.4, label="standard (clean)")
    ax.bar(pos + 0.2, [r["gap_adversarial"] for r in rows], 0.4, label="adversarial (PGD)")
    ax.set_xticks(pos, [_label(r) for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("train − test accuracy")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    if owned:
        plt.close(fig)
    return fig


def plot_dropout_comparison(without: Sequence[Mapping[str, Any]], with_dropout: Sequence[Mapping[str, Any]],
                            metrics: Sequence[str] = ("test_accuracy", "test_pgd_accuracy", "gap_adversarial",
                                                      "test_lipschitz")) -> Figure:
    """Table 4 side by side: each metric per method, without and with dropout."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    pos = np.arange(len(without))
    for ax, m in zip(axes[0], metrics, strict=True):
        ax.bar(pos - 0.2, [r[m] for r in without], 0.4, label="no dropout")
        ax.bar(pos + 0.2, [r[m] for r in with_dropout], 0.4, label="dropout")
        ax.set_xticks(pos, [_label(r) for r in without], rotation=35, ha="right", fontsize=8)
        ax.set_title(m.replace("_", " "), fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, frameon=False)
    plt.close(fig)
    return fig


def plot_astuteness_curves(eps: Sequence[float], curves: Mapping[str, Sequence[float]], r: float | None = None,
                           ax: Axes | None = None) -> Figure:
    """Astuteness against the radius as steps (the value at a grid point holds until the next): curves in
    pairs, certified then attacked, e.g. ``{"train certified": .., "train attacked": .., ...}``."""
    import matplotlib.pyplot as plt

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = _fig_ax(ax, (6.5, 3.6))
    for i, (name, values) in enumerate(curves.items()):
        # a bracket's two sides share a colour: solid for the certified side, dashed for the attacked one
        ax.plot(eps, values, marker="o", markersize=3, label=name, color=f"C{i // 2}",
                linestyle="--" if "attack" in name else "-", drawstyle="steps-post")
    if r is not None:
        ax.axvline(r, color="tab:red", linestyle="--", linewidth=1)
        ax.annotate("r", (r, 0.02), xytext=(3, 0), textcoords="offset points", color="tab:red")
    ax.set_xlabel(r"radius $\epsilon$ ($\ell_\infty$)")
    ax.set_ylabel("astuteness (robust accuracy)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    if owned:
        plt.close(fig)
    return fig


def plot_decision_regions(classifier: Any, x: np.ndarray, y: np.ndarray, *, r: float,
                          attack: tuple[np.ndarray, np.ndarray] | None = None, grid: int = 300,
                          ax: Axes | None = None) -> Figure:
    """A 2-D toy: the classifier's decision regions over [0, 1]^2, the training points with their L-inf
    balls of radius ``r`` (squares), and optionally an attack (arrows from points to perturbed points)."""
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.patches import Rectangle

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = _fig_ax(ax, (4.8, 4.8))
    g = np.linspace(0, 1, grid)
    xx, yy = np.meshgrid(g, g)
    pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
    with torch.no_grad():
        pred = classifier(pts).argmax(1).numpy().reshape(xx.shape)
    ax.contourf(xx, yy, pred, levels=np.arange(pred.max() + 2) - 0.5, cmap="Pastel1", alpha=0.8)
    for c in np.unique(y):
        ax.scatter(x[y == c, 0], x[y == c, 1], s=12, label=f"class {c}", zorder=3)
    for p in x:
        ax.add_patch(Rectangle(p - r, 2 * r, 2 * r, fill=False, linewidth=0.4, alpha=0.5))
    if attack is not None:
        src, dst = attack
        for a, b in zip(src, dst, strict=True):
            ax.annotate("", b, a, arrowprops=dict(arrowstyle="->", color="black", linewidth=0.8), zorder=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    if owned:
        plt.close(fig)
    return fig


def _fig_ax(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return cast("Figure", ax.figure), ax
    fig, new_ax = plt.subplots(figsize=size)
    return fig, new_ax
