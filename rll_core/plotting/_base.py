"""What every figure shares: formats and saving (embedded TrueType fonts, no time stamps, so a paper's PDF
checks pass and an unchanged figure keeps its bytes), the method families' colours and markers, the context
line under a title, error bars.  Private to :mod:`rll_core.plotting`, which re-exports the public names."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..paper import display_name
from ..precision import precision_note
from ..stats import wilson_errors
from ..storage import atomic_write_bytes, user_path
from ..tables import GAPS, gap_interval, pooled_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FIGURE_FORMATS", "METHOD_STYLES", "bars_note", "caption_of", "check_formats", "context_line", "error_bars",
           "family_shades", "fig_ax", "method_style", "place_labels", "row_label", "save_figure", "set_caption",
           "wilson_bars", "wrapped"]


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


def set_caption(fig: Figure, text: str) -> Figure:
    """Attach ``text`` to ``fig`` as its caption: the settings, the n and what the bars are, which a figure's short
    title leaves out (:func:`save_figure` writes it beside the figure; the notebooks show it under it)."""
    fig.rll_caption = " ".join(text.split())  # type: ignore[attr-defined]
    return fig


def caption_of(fig: Figure) -> str:
    """The caption :func:`set_caption` attached, or ``""``."""
    return str(getattr(fig, "rll_caption", ""))


def save_figure(fig: Figure, stem: str | os.PathLike[str], formats: Iterable[str] | str = ("png", "pdf"),
                dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format, ready for a paper or a blog.

    PDFs embed their fonts as TrueType (``pdf.fonttype`` 42; matplotlib's default Type 3 fonts are flagged or
    refused by camera-ready checks), no file carries a time stamp (the same figure gives the same bytes, and an
    unchanged file is not rewritten), and each is written atomically (a reader sees the old file or the whole
    new one).  A figure with a caption (:func:`set_caption`) gets ``<stem>.caption.txt`` beside it, the text to
    paste under it.

    Args:
        fig: the matplotlib figure.
        stem: the path without suffix (``~`` expanded); ``<stem>.<fmt>`` is written per format.
        formats: a list or a comma-separated string of ``png``, ``pdf``, ``svg`` (default ``("png", "pdf")``).
        dpi: resolution of the PNG (default 200).

    Returns:
        The paths written, in the order of ``formats`` (then the caption's).

    Raises:
        ValueError: an unknown format (before anything is written).

    Example:
        >>> save_figure(fig, "figures/fig_toy", "png,pdf,svg")  # doctest: +SKIP
    """
    import matplotlib

    formats = check_formats(formats)
    stem = user_path(stem)
    out = []
    for fmt in formats:
        buf = io.BytesIO()
        meta = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
        with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
        out.append(atomic_write_bytes(stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))
    if caption_of(fig):
        out.append(atomic_write_bytes(stem.with_name(f"{stem.name}.caption.txt"), (caption_of(fig) + "\n").encode()))
    return out


#: One colour and marker per method family (the swept members of a family share both; the legend names
#: them).  ``theory``: Section 4's classifier; ``model``: the user's model on a robustness card.
METHOD_STYLES: dict[str, tuple[str, str]] = {
    "natural": ("#000000", "o"), "gr": ("#E69F00", "s"), "llr": ("#56B4E9", "D"), "at": ("#D55E00", "^"),
    "trades": ("#009E73", "v"), "rst": ("#CC79A7", "P"), "theory": ("#0072B2", "*"),
    # the card's: the user's model, attacked and certified
    "model": ("#D55E00", "o"), "model_certified": ("#D55E00", "X"),
}


def method_style(method: str) -> dict[str, Any]:
    """``color`` and ``marker`` of a method family (colour-blind safe, Okabe-Ito); grey for others."""
    color, marker = METHOD_STYLES.get(str(method).lower(), ("#999999", "X"))
    return {"color": color, "marker": marker}


def context_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """``MNIST, ε = 0.1 · trained on 2,000 images, 2 epochs · n = 100 test points``: what a figure shows."""
    run = next((r for r in rows if r.get("settings")), {})
    st = run.get("settings", {})
    parts = [display_name(str(st.get("dataset", run.get("dataset", "")))) + (
        f", ε = {run['eps']:g}" if isinstance(run.get("eps"), (int, float)) else "")]
    if st.get("n_train"):
        e = st.get("epochs")
        parts.append(f"trained on {int(st['n_train']):,} images, {e} epoch{'' if e == 1 else 's'}")
    n = next((r.get("test_n", r.get("n")) for r in rows if r.get("test_n", r.get("n"))), None)
    if n:
        parts.append(f"n = {int(n)} test points")
    if precision_note(rows):
        parts.append("bf16 gradient steps")
    return " · ".join(p for p in parts if p)


#: what a figure's bars are, by the kind of quantity
_BARS = {"acc": "accuracies: 95 % Wilson intervals", "gap": "gaps: Newcombe's 95 % interval of a difference",
         "lip": "Lipschitz constants: ± 1 standard error"}


def bars_note(rows: Sequence[Mapping[str, Any]], kinds: Sequence[str]) -> str:
    """``bars: accuracies: 95 % Wilson intervals; ... (n = 500 train and 500 test points)``: every figure says
    what its bars are and on how many points (rows pooled over seeds: a t interval over the seeds)."""
    k = max((int(r.get("seeds", 1) or 1) for r in rows), default=1)
    if k > 1:
        return (f"mean over {k} seeds (dots: each seed); bars: 95 % t interval over the seeds for accuracies and "
                "gaps, ± 1 standard error over the seeds for Lipschitz constants")
    tr = sorted({int(r["train_n"]) for r in rows if r.get("train_n")})
    te = sorted({int(r.get("test_n") or r.get("n") or 0) for r in rows if r.get("test_n") or r.get("n")})
    ns = "/".join(map(str, te))
    n = (f"n = {'/'.join(map(str, tr))} train and {ns} test points" if tr and tr != te else
         f"n = {ns} points per split" if tr else f"n = {ns} test points" if te else "")
    return "bars: " + "; ".join(_BARS[k] for k in kinds) + (f" ({n})" if n else "")


def place_labels(ax: Axes, points: Sequence[tuple[float, float]], texts: Sequence[str], fontsize: float = 7) -> list[Any]:
    """Short labels beside their points, each at the first of sixteen offsets where it touches its own point's
    neighbourhood and overlaps neither an earlier label nor another point's marker (where none is free, the
    offset that overlaps least): no label on another, none read as a neighbour's."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    # a marker's box, wide enough that a label beside another point is not read as that point's
    marks = [Bbox.from_bounds(x - 9, y - 9, 18, 18) for x, y in (ax.transData.transform(p) for p in points)]
    placed: list[Any] = []
    out: list[Any] = []
    offsets = [(6, 4), (6, -11), (-8, 4), (-8, -11), (0, 9), (0, -15), (12, -3), (-14, -3),
               (14, 12), (14, -19), (-16, 12), (-16, -19), (0, 18), (0, -24), (22, -3), (-24, -3)]
    for i, ((x, y), text) in enumerate(zip(points, texts, strict=True)):
        if not text:
            continue
        others = [m for j, m in enumerate(marks) if j != i]
        near_own = marks[i].padded(14)
        best: tuple[float, int, int] | None = None  # (overlapped area, not near its own point, offset index)
        for k, (dx, dy) in enumerate(offsets):
            a = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            color="0.25", ha="left" if dx >= 0 else "right")
            box = a.get_window_extent(renderer)
            a.remove()
            area = sum(_overlap(box, b) for b in [*placed, *others])
            score = (area, int(not near_own.overlaps(box)), k)
            if best is None or score < best:
                best = score
            if score[:2] == (0, 0):
                break
        assert best is not None
        dx, dy = offsets[best[2]]
        far = best[2] >= 8 or best[1]  # a label away from its point gets a leader line to it
        chosen = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                             color="0.25", ha="left" if dx >= 0 else "right",
                             arrowprops={"arrowstyle": "-", "color": "0.55", "linewidth": 0.5,
                                         "shrinkA": 0, "shrinkB": 4} if far else None)
        placed.append(chosen.get_window_extent(renderer))
        out.append(chosen)
    return out


def _overlap(a: Any, b: Any) -> float:
    """The area two display boxes share (0 when apart)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def wrapped(text: str, width: int = 95) -> str:
    """A title or note broken onto lines of at most ``width`` characters (no title wider than its figure)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if text else text


def family_shades(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, float, float]]:
    """Each row's family colour, lighter for the earlier members of a swept family (TRADES β=1 lightest,
    β=6 full colour), so members share a hue and marker yet stay apart."""
    from matplotlib.colors import to_rgb

    fams = [str(r.get("method", "")).lower() for r in rows]
    out = []
    for i, f in enumerate(fams):
        k, j = fams.count(f), fams[:i].count(f)
        t = 0.6 * (k - 1 - j) / k  # how far towards white
        out.append(tuple(c + (1 - c) * t for c in to_rgb(method_style(f)["color"])))
    return out  # type: ignore[return-value]


def wilson_bars(acc: float, n: int | None) -> list[float]:
    return list(wilson_errors(acc, n))


def error_bars(r: Mapping[str, Any], metric: str) -> list[float]:
    """Error bar half-lengths of a table cell: Wilson 95 % for accuracies, Newcombe's for gaps, ± s.e. for
    Lipschitz constants."""
    pooled = pooled_interval(r, metric)  # a row pooled over seeds: its t interval over them
    if pooled is not None:
        return [r[metric] - pooled[0], pooled[1] - r[metric]]
    if metric.endswith("_accuracy"):
        return wilson_bars(r[metric], r.get(f"{metric.split('_', 1)[0]}_n"))
    if metric in GAPS:
        ci = gap_interval(r, metric)
        return [0.0, 0.0] if ci is None else [r[metric] - ci[0], ci[1] - r[metric]]
    se = r.get(f"{metric}_se") or 0.0
    return [se, se]


def row_label(r: Mapping[str, Any]) -> str:
    return str(r.get("label", r.get("method", "?")))


def fig_ax(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return cast("Figure", ax.figure), ax
    fig, new_ax = plt.subplots(figsize=size)
    return fig, new_ax
