"""Certified beside empirical, against the radius, for trained networks (:func:`rll_core.bracket.bracket_curve`):
robust accuracy between certified (below) and PGD's (above), per model, as notebook 02 draws it for the Section 4
classifier; and how many times the certified Lipschitz bound exceeds the ratio the ascent attains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ._base import family_shades, method_style, row_label, set_caption

__all__ = ["plot_accuracy_brackets", "plot_lipschitz_brackets"]

#: panels per row of :func:`plot_accuracy_brackets` (a page's two columns: 6.8 in)
BRACKET_COLUMNS = 4


def _log_radius(ax: Axes, eps: Sequence[float]) -> None:
    """A log radius axis, ticks at 1, 2 and 5 of each decade, labelled at the decades alone (0.01, 0.1): more labels
    collide in a small panel."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _decade(v) else ""))
    ax.set_xlim(min(eps) / 1.4, max(eps) * 1.4)


def _decade(v: float) -> bool:
    return v > 0 and abs(np.log10(v) - round(np.log10(v))) < 1e-6


def plot_accuracy_brackets(curves: Sequence[Mapping[str, Any]], *, title: str = "", caption: str = "") -> Figure:
    """Robust test accuracy of each model against the radius, bracketed: PGD-10 (solid, an upper bound), certified
    (dashed, a lower bound) and the band between them, where the true robust accuracy lies; one panel per model
    (:data:`BRACKET_COLUMNS` a row).

    Args:
        curves: :func:`rll_core.bracket.bracket_curve` results (``eps``, ``certified``, ``pgd``, ``n``), each with
            ``method`` and ``label`` for its panel.
        title: the figure's title (default "Robust accuracy, certified and attacked").
        caption: the settings, put before what the figure draws in its caption (:func:`set_caption`).

    Returns:
        The figure (closed: show it with ``display`` or save it with :func:`save_figure`).

    Raises:
        ValueError: no curve.

    Example:
        >>> fig = plot_accuracy_brackets([{**bracket_curve("runs/at"), "label": "AT"}])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_accuracy_brackets needs at least one bracket curve")
    cols = min(BRACKET_COLUMNS, len(curves))
    rows = -(-len(curves) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.2, 1.75 * rows + 0.7), sharex=True, sharey=True,
                             squeeze=False)
    shades = family_shades(curves)
    for ax, c, color in zip(grid.flat, curves, shades, strict=False):
        eps, pgd, cert = np.asarray(c["eps"]), np.asarray(c["pgd"]), np.asarray(c["certified"])
        marker = method_style(str(c.get("method", "")))["marker"]
        ax.fill_between(eps, cert, pgd, color=color, alpha=0.18, linewidth=0)
        ax.plot(eps, pgd, color=color, marker=marker, markersize=3.5, linewidth=1.4, label="PGD-10 (upper bound)")
        ax.plot(eps, cert, color=color, marker=marker, markersize=3.5, linewidth=1.4, linestyle="--",
                markerfacecolor="white", label="certified (lower bound)")
        ax.set_title(row_label(c), fontsize=8)
        _log_radius(ax, [float(e) for e in eps])
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(grid.flat)[len(curves):]:
        ax.set_visible(False)
    for ax in grid[:, 0]:
        ax.set_ylabel("robust test accuracy", fontsize=8)
    for j in range(cols):  # the lowest visible panel of each column carries the radius
        col = [ax for ax in grid[:, j] if ax.get_visible()]
        col[-1].set_xlabel(r"radius $\epsilon$ ($\ell_\infty$)", fontsize=8)
        col[-1].xaxis.set_tick_params(labelbottom=True)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title or "Robust accuracy, certified and attacked", fontsize=9)
    n = int(curves[0]["n"])
    set_caption(fig, (f"{caption}. " if caption else "") + (
        f"On the same first {n} test points of each model: PGD-10's accuracy (solid) can only over-state robust "
        "accuracy, certified accuracy (dashed; interval bounds tightened by a linear relaxation, rll_core.certify) "
        "can only under-state it; the true robust accuracy lies in the shaded band."))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    plt.close(fig)
    return fig


def plot_lipschitz_brackets(curves: Sequence[Mapping[str, Any]], *, title: str = "", caption: str = "") -> Figure:
    """How wide the Lipschitz bracket is against the radius: per model, the median over its points of the certified
    bound divided by the ratio the ascent attains (1 would be exact), on log scales.

    Args:
        curves: :func:`rll_core.bracket.bracket_curve` results (``eps``, ``bracket_ratio``, ``n``), each with
            ``method`` and ``label``.
        title: the figure's title (default "How far the certified Lipschitz bound is above the ascent").
        caption: the settings, put before what the figure draws in its caption.

    Returns:
        The figure (closed).

    Raises:
        ValueError: no curve.

    Example:
        >>> fig = plot_lipschitz_brackets([{**bracket_curve("runs/at"), "label": "AT"}])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_lipschitz_brackets needs at least one bracket curve")
    fig, ax = plt.subplots(figsize=(3.3, 3.6 + 0.12 * len(curves)))
    for c, color in zip(curves, family_shades(curves), strict=True):
        ax.plot(c["eps"], c["bracket_ratio"], color=color, marker=method_style(str(c.get("method", "")))["marker"],
                markersize=4, linewidth=1.3, label=row_label(c))
    ax.set_yscale("log")
    _log_radius(ax, [e for c in curves for e in c["eps"]])
    ax.set_xlabel(r"radius $\epsilon$ ($\ell_\infty$)", fontsize=8)
    ax.set_ylabel("certified bound / attained ratio\n(median over the points)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or "Lipschitz bound over the ascent", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    n = int(curves[0]["n"])
    set_caption(fig, (f"{caption}. " if caption else "") + (
        f"On the first {n} test points of each model, the local Lipschitz constant lies between the ratio rll's "
        "ascent attains (never falling as the radius grows, rll_core.measure.lipschitz_curve) and the certified "
        "bound (rll_core.certify); drawn is the median of bound / attained: the bracket's width, 1 if exact."))
    fig.tight_layout()
    plt.close(fig)
    return fig
