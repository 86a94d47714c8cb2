"""Did an attack fail?  The attack-failure indicators of every row of a table (:mod:`rll_core.indicators`) as one
grid: a row per model, a column per indicator, each cell its value, coloured by its verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..indicators import INDICATORS, STRONG_RESTARTS, STRONG_STEPS, UNBOUNDED_EPS
from ._base import context_line, row_label, set_caption, wrapped

__all__ = ["plot_indicators"]

#: the verdicts' colours (colour-blind safe: Okabe-Ito's bluish green and vermillion, a light grey)
_COLORS = {"ok": "#cfe8df", "warning": "#f2b89c", "not run": "#eeeeee"}
#: each indicator's column header and how its value is written
_HEADS = {"unbounded": (f"PGD at\nε = {UNBOUNDED_EPS:g}", "{:.2f}"),
          "more effort": (f"PGD-{STRONG_STEPS}×{STRONG_RESTARTS}\nbreaks", "{:+.2f}"),
          "masked gradients": ("zero\ngradients", "{:.0%}"), "gradient-free": ("Square\nbreaks", "{:.2f}"),
          "monotone in eps": ("rise\nwith ε", "{:+.2f}")}


def plot_indicators(rows: Sequence[Mapping[str, Any]], title: str | None = None, caption: str | None = None) -> Figure:
    """Every row's attack-failure indicators (its ``indicators``, :func:`rll_core.indicators.run_indicators`):
    per cell the measured value (accuracy left at ε = 0.5; the drop in accuracy that more effort and Square
    reach; the share of zero input gradients; the largest rise of accuracy with ε), green where the indicator
    is quiet, orange where it warns, grey where it was not run.  Rows without indicators are left out.

    Raises:
        ValueError: no row carries indicators.

    Example:
        >>> fig = plot_indicators(rows)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("indicators")]
    if not rows:
        raise ValueError("no row carries attack-failure indicators (run rll_core.indicators.run_indicators)")
    names = [k for k in INDICATORS if any(i["indicator"] == k for r in rows for i in r["indicators"])]
    fig, ax = plt.subplots(figsize=(3.4, 0.28 * len(rows) + 1.5))
    for y, r in enumerate(rows):
        got = {i["indicator"]: i for i in r["indicators"]}
        for x, k in enumerate(names):
            i = got.get(k)
            verdict = "not run" if i is None else i["verdict"]
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=_COLORS[verdict], edgecolor="white"))
            text = "-" if i is None or not np.isfinite(i["value"]) else _HEADS[k][1].format(i["value"])
            ax.text(x, y, text, ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(names)), [_HEADS[k][0] for k in names], fontsize=6.5)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), [row_label(r) for r in rows], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    n = sorted({int(i["n"]) for r in rows for i in r["indicators"] if i["indicator"] == "unbounded"})
    ax.set_title(wrapped(title if title is not None else "Did an attack fail?", 60), fontsize=9, pad=28)
    set_caption(fig, f"{caption if caption is not None else context_line(rows)}. Attack-failure indicators "
                     "(rll_core.indicators) per model; each cell the measured value.")
    ax.set_xlabel(f"checks on the first {'/'.join(map(str, n))} test points · orange: warning, green: quiet",
                  fontsize=6.5)
    fig.tight_layout()
    plt.close(fig)
    return fig
