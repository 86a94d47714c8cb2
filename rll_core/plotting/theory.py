"""Section 4's figures: the 2-D toy's decision regions and the astuteness bracket against the radius."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._base import fig_ax

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_astuteness_curves", "plot_decision_regions"]



def plot_astuteness_curves(eps: Sequence[float], curves: Mapping[str, Sequence[float]], r: float | None = None,
                           ax: Axes | None = None, *, marks: Mapping[str, float] | None = None,
                           note: str = "") -> Figure:
    """Astuteness against the radius, measured at the markers: curves in pairs, certified then attacked,
    e.g. ``{"train certified": .., "train attacked": .., ...}``.

    Straight lines join the measured radii (nothing is drawn as if measured between them); ``r`` and each of
    ``marks`` (``{"paper's ε": 0.1}``) are vertical lines; ``note`` is printed under the axes (e.g. why
    certified and clean accuracy differ at ε = 0)."""
    import matplotlib.pyplot as plt

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = fig_ax(ax, (6.5, 3.9 if note else 3.6))
    for i, (name, values) in enumerate(curves.items()):
        # a bracket's two sides share a colour: solid for the certified side, dashed for the attacked one
        attacked = "attack" in name  # drawn over the certified side, hollow and thin, so equal values show both
        ax.plot(eps, values, marker="o", markersize=6 if attacked else 4, label=name, color=f"C{i // 2}",
                linestyle="--" if attacked else "-", linewidth=1.0 if attacked else 2.5,
                alpha=1.0 if attacked else 0.55, markerfacecolor="none" if attacked else None,
                zorder=3 if attacked else 2)
    if r is not None:
        ax.axvline(r, color="tab:red", linestyle="--", linewidth=1, label=f"r = {r:.3f}")
    for k, (label, x) in enumerate((marks or {}).items()):
        ax.axvline(x, color="0.35", linestyle=":" if k == 0 else "-.", linewidth=1.2, label=f"{label} = {x:g}")
    ax.set_xlabel(r"radius $\epsilon$ ($\ell_\infty$); markers: measured radii")
    ax.set_ylabel("astuteness (robust accuracy)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if note:
        import textwrap

        fig.text(0.01, 0.01, "\n".join(textwrap.wrap(note, 120)), fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.09 if note else 0, 1, 1))
    if owned:
        plt.close(fig)
    return fig


def plot_decision_regions(classifier: Any, x: np.ndarray, y: np.ndarray, *, r: float,
                          attack: tuple[np.ndarray, np.ndarray] | None = None, grid: int = 800,
                          ax: Axes | None = None) -> Figure:
    """A 2-D toy: the classifier's decision regions over [0, 1]^2, the training points with their L-inf
    balls of radius ``r`` (squares), and optionally an attack (arrows from points to perturbed points)."""
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.patches import Rectangle

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = fig_ax(ax, (4.8, 4.8))
    g = np.linspace(0, 1, grid)
    xx, yy = np.meshgrid(g, g)
    pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
    with torch.no_grad():
        pred = classifier(pts).argmax(1).numpy().reshape(xx.shape)
    # an image at (about) the figure's own resolution: the L-inf regions' diagonal edges show no steps
    from matplotlib.colors import ListedColormap

    # each class's region in a light shade of its points' colour
    ax.imshow(pred, origin="lower", extent=(0, 1, 0, 1), cmap=ListedColormap([f"C{i}" for i in range(10)]),
              vmin=-0.5, vmax=9.5, alpha=0.22, interpolation="antialiased", aspect="equal")
    for c in np.unique(y):
        ax.scatter(x[y == c, 0], x[y == c, 1], s=12, label=f"class {c}", zorder=3, color=f"C{int(c) % 10}")
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
