"""Section 5's figures: local Lipschitzness against robustness, the generalization gaps, Table 4 side by side,
robust accuracy against the radius and per bin of distance to the other classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models import dropout_label
from ..stats import wilson_errors
from ..tables import COLUMNS
from ._base import (
    bars_note,
    context_line,
    error_bars,
    family_shades,
    fig_ax,
    method_style,
    place_labels,
    row_label,
    set_caption,
    wilson_bars,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_accuracy_by_distance", "plot_dropout_comparison", "plot_gaps", "plot_lipschitz_vs_accuracy",
           "plot_robustness_curves", "plot_train_vs_test"]



def plot_lipschitz_vs_accuracy(rows: Sequence[Mapping[str, Any]], attack: str = "pgd",
                               ax: Axes | None = None, title: str | None = None, caption: str | None = None) -> Figure:
    """The paper's Section 5 correlation: test local Lipschitz constant (mean ± s.e., log scale) against
    adversarial test accuracy (95 % Wilson interval), one point per method, named in the legend.  ``title``: a
    short one (default what is shown); ``caption``: the settings (default the rows'), with what the bars are
    appended (:func:`~rll_core.plotting.set_caption`)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = fig_ax(ax, (7.2, 4.2))
    shades = family_shades(rows)
    for r, color in zip(rows, shades, strict=True):
        x, y = r["test_lipschitz"], r[f"test_{attack}_accuracy"]
        yerr = np.array(wilson_bars(y, r.get("test_n")))[:, None]
        xerr = r.get("test_lipschitz_se") or 0.0
        ax.errorbar([x], [y], yerr=yerr, xerr=[[xerr], [xerr]], linestyle="none", markersize=8, capsize=2,
                    elinewidth=0.8, label=row_label(r), markeredgecolor="black", markeredgewidth=0.4,
                    color=color, marker=method_style(r.get("method", ""))["marker"])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(r"test local Lipschitz constant ($\ell_\infty \to \ell_1$, log scale)")
    ax.set_ylabel(f"adversarial test accuracy ({attack.upper() if attack == 'pgd' else attack})")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()  # markers only: an errorbar's glyph varies with its bars
    ax.legend([h[0] if isinstance(h, tuple) else h for h in handles], labels, fontsize=8, loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title if title is not None else "Local Lipschitz constant against robust accuracy", fontsize=9)
    set_caption(fig, f"{caption if caption is not None else context_line(rows)}. {_upper(bars_note(rows, ('acc', 'lip')))}.")
    fig.tight_layout()
    # members of a swept family named at their points, not only by their shade in the legend
    place_labels(ax, [(r["test_lipschitz"], r[f"test_{attack}_accuracy"]) for r in rows],
                 ["" if r.get("method") == "theory" else _short_label(r) for r in rows])
    if owned:
        plt.close(fig)
    return fig


def _upper(text: str) -> str:
    """``text`` with its first letter capitalised (a caption's sentence)."""
    return text[:1].upper() + text[1:]


def _short_label(r: Mapping[str, Any]) -> str:
    """``β=6`` of ``TRADES (β=6)``: the swept hyperparameter, or nothing."""
    label = row_label(r)
    return label[label.index("(") + 1:label.rindex(")")] if "(" in label and label.endswith(")") else ""


def plot_gaps(rows: Sequence[Mapping[str, Any]], ax: Axes | None = None, title: str | None = None,
              caption: str | None = None) -> Figure:
    """Standard and adversarial generalization gaps (train minus test accuracy) per method, with Newcombe's
    95 % intervals."""
    import matplotlib.pyplot as plt

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = fig_ax(ax, (min(6.8, max(5.5, 0.55 * len(rows) + 1.5)), 3.8))  # at most a two-column page
    pos = np.arange(len(rows))
    for off, key, name, color in ((-0.2, "gap_standard", "standard (clean)", "#999999"),
                                  (0.2, "gap_adversarial", "adversarial (PGD)", "#D55E00")):
        err = np.array([error_bars(r, key) for r in rows]).T
        ax.bar(pos + off, [r[key] for r in rows], 0.4, yerr=err if err.any() else None, capsize=2, label=name,
               color=color, error_kw={"elinewidth": 0.8})
    ax.set_xticks(pos, [row_label(r) for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("gap: train − test accuracy")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    ax.set_title(title if title is not None else "Generalization gaps: train minus test accuracy", fontsize=9)
    set_caption(fig, f"{caption if caption is not None else context_line(rows)}. {_upper(bars_note(rows, ('gap',)))}.")
    fig.tight_layout()
    if owned:
        plt.close(fig)
    return fig


def plot_dropout_comparison(without: Sequence[Mapping[str, Any]], with_dropout: Sequence[Mapping[str, Any]],
                            metrics: Sequence[str] = ("test_accuracy", "test_pgd_accuracy", "gap_adversarial",
                                                      "test_lipschitz"), title: str | None = None) -> Figure:
    """Table 4 side by side: each metric per method, without and with dropout (accuracies with 95 % Wilson
    intervals, Lipschitz constants with ± s.e.)."""
    import matplotlib.pyplot as plt

    heads = {k: h for k, h, _ in COLUMNS}
    kinds = {k: kind for k, _, kind in COLUMNS}
    units = {"acc": "accuracy", "gap": "train − test accuracy", "lip": "local Lipschitz constant"}
    cols = min(2, len(metrics))  # two panels a row: the figure fits a two-column page (6.8 in) at its own size
    n_rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.4 * cols, 2.6 * n_rows + 0.8), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    pos = np.arange(len(without))
    st: Mapping[str, Any] = next((r.get("settings", {}) for r in with_dropout if r.get("settings")), {})
    rate = dropout_label(str(st.get("architecture", "")), st.get("dropout")) if st else "with dropout"
    # hollow = without dropout, filled = with (as in the train-against-test figure); no grey, which means
    # "standard" in the gaps figure
    for ax, m in zip(axes.flat, metrics, strict=False):
        for off, rows, name, face in ((-0.2, without, "no dropout", "white"),
                                      (0.2, with_dropout, f"dropout: {rate}", "#0072B2")):
            err = np.array([error_bars(r, m) for r in rows]).T
            ax.bar(pos + off, [r[m] for r in rows], 0.4, yerr=err if err.any() else None, capsize=2, label=name,
                   color=face, edgecolor="#0072B2", linewidth=1.0, error_kw={"elinewidth": 0.8})
            for i, r in enumerate(rows):  # every seed's own value over its mean's bar
                seeds = (r.get("per_seed") or {}).get(m)
                if seeds:
                    ax.scatter(np.full(len(seeds), pos[i] + off), seeds, s=9, color="#333333", zorder=4,
                               linewidths=0)
        ax.set_xticks(pos, [row_label(r) for r in without], rotation=35, ha="right", fontsize=8)
        ax.set_title(heads.get(m, m.replace("_", " ")), fontsize=9)
        ax.set_ylabel(units.get(kinds.get(m, ""), m.replace("_", " ")), fontsize=8)
        if m.startswith("gap"):
            ax.axhline(0, color="black", linewidth=0.6)
    handles, labels = axes[0][0].get_legend_handles_labels()
    top = 1 - 0.75 / fig.get_size_inches()[1]  # room for the title and the legend, in inches
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, top), ncol=2, fontsize=8, frameon=False)
    rows_all = [*without, *with_dropout]
    used = sorted({kinds.get(m, "lip") for m in metrics}, key=["acc", "gap", "lip"].index)
    fig.suptitle(title if title is not None else "With and without dropout", fontsize=9, y=0.99)
    set_caption(fig, f"{context_line(rows_all)}. {_upper(bars_note(rows_all, used))}.")
    plt.close(fig)
    return fig


def plot_train_vs_test(without: Sequence[Mapping[str, Any]], with_dropout: Sequence[Mapping[str, Any]] | None = None,
                       *, attack: str = "pgd", ax: Axes | None = None, title: str | None = None) -> Figure:
    """Train against test adversarial accuracy, one point per model: the diagonal is no gap, the height above it
    the adversarial gap.  Without dropout open markers, with dropout filled, an arrow from one to the other;
    95 % Wilson bars on both axes (each split's own n).  Where the robust models crowd together, an inset in an
    empty corner shows them enlarged."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    owned = ax is None
    fig, ax = fig_ax(ax, (6.6, 4.6))
    tr, te = f"train_{attack}_accuracy", f"test_{attack}_accuracy"
    pairs = list(zip(without, with_dropout, strict=True)) if with_dropout is not None else [(r, None) for r in without]
    colors = family_shades(without)
    zoom = _crowded([r for pair in pairs for r in pair if r is not None and r.get("method") != "natural"], tr, te)
    inset = _inset_axes(ax, zoom, [r for pair in pairs for r in pair if r is not None], tr, te) if zoom else None
    for target in (ax, inset):
        if target is None:
            continue
        target.plot([0, 1], [0, 1], color="#555555", linewidth=0.8, linestyle="--", zorder=1)
        for (a, b), color in zip(pairs, colors, strict=True):
            _train_test_pair(target, a, b, color, tr, te, small=target is inset)
    t = _free_diagonal([r for pair in pairs for r in pair if r is not None], tr, te, inset is not None)
    ax.text(t, t + 0.01, "no gap (train = test)", rotation=45, rotation_mode="anchor", ha="left", va="bottom",
            fontsize=7, color="#555555")
    handles = [Line2D([], [], color=c, marker=method_style(a.get("method", ""))["marker"], linestyle="none",
                      markersize=7, label=row_label(a)) for (a, _), c in zip(pairs, colors, strict=True)]
    if with_dropout is not None:
        handles += [Line2D([], [], color="#333333", marker="o", markerfacecolor="white", linestyle="none",
                           label="no dropout"),
                    Line2D([], [], color="#333333", marker="o", linestyle="none", label="with dropout")]
    name = "PGD" if attack == "pgd" else attack
    ax.set_xlabel(f"test {name} accuracy")
    ax.set_ylabel(f"train {name} accuracy")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    rows_all = [*without, *(with_dropout or [])]
    st: Mapping[str, Any] = next((r.get("settings", {}) for r in (with_dropout or []) if r.get("settings")), {})
    rate = f"; dropout: {dropout_label(str(st.get('architecture', '')), st.get('dropout'))}" if st else ""
    ax.set_title(title if title is not None else f"Train against test {name} accuracy", fontsize=9)
    arrows = (" Arrows: from each method without dropout to it with dropout; the diagonal: no gap."
              if with_dropout else " The diagonal: no gap.")
    set_caption(fig, f"{context_line(rows_all)}. {_upper(bars_note(rows_all, ('acc',)))}{rate}.{arrows}")
    if owned:
        fig.tight_layout()
        plt.close(fig)
    return fig


def _train_test_pair(ax: Axes, a: Mapping[str, Any], b: Mapping[str, Any] | None, color: Any, tr: str, te: str,
                     small: bool) -> None:
    """One method's point without dropout (open), with dropout (filled) and the arrow between them."""
    st = method_style(a.get("method", ""))
    for r, filled in ((a, False), (b, True)):
        seeds = (r or {}).get("per_seed") or {}
        if tr in seeds and te in seeds:  # every seed's own model, small, behind the mean
            ax.scatter(seeds[te], seeds[tr], s=10 if small else 12, color=color, alpha=0.55, zorder=2, linewidths=0,
                       marker=st["marker"])
        if r is not None:
            ax.errorbar(r[te], r[tr], xerr=np.array([error_bars(r, te)]).T, yerr=np.array([error_bars(r, tr)]).T,
                        marker=st["marker"], markersize=6 if small else 7, color=color, capsize=1.5 if small else 2,
                        markerfacecolor=color if filled else "white", markeredgewidth=1.2, elinewidth=0.7,
                        linestyle="none", zorder=3)
    if b is not None:
        ax.annotate("", (b[te], b[tr]), (a[te], a[tr]), zorder=2,
                    arrowprops={"arrowstyle": "->", "color": color, "linewidth": 0.9, "shrinkA": 4, "shrinkB": 4})


def _free_diagonal(rows: Sequence[Mapping[str, Any]], tr: str, te: str, inset: bool) -> float:
    """Where along the diagonal its label (about 0.25 long) stays clear of every point and of an inset."""
    pts = np.array([(r[te], r[tr]) for r in rows])
    for t in (0.05, 0.45, 0.12, 0.62, 0.3):
        seg = np.linspace(t, t + 0.25, 12)
        clear = np.abs(pts[:, None, :] - np.stack([seg, seg], 1)[None]).max(axis=2).min() > 0.08
        if clear and not (inset and 0.5 < t < 0.7):  # clear of the inset's zoom lines
            return t
    return 0.05


def _crowded(rows: Sequence[Mapping[str, Any]], tr: str, te: str) -> tuple[float, float, float, float] | None:
    """The box (x0, x1, y0, y1) around the robust models' points and bars when two of them lie within 0.06 of
    each other in a box at most 0.4 wide (what an inset can enlarge), else None."""
    pts = np.array([(r[te], r[tr]) for r in rows])
    if len(pts) < 2:
        return None
    near = np.abs(pts[:, None, :] - pts[None, :, :]).max(axis=2) + np.eye(len(pts))
    lo = np.array([(r[te] - error_bars(r, te)[0], r[tr] - error_bars(r, tr)[0]) for r in rows]).min(axis=0) - 0.02
    hi = np.array([(r[te] + error_bars(r, te)[1], r[tr] + error_bars(r, tr)[1]) for r in rows]).max(axis=0) + 0.02
    side = float(max(hi - lo))
    if near.min() > 0.06 or side > 0.4:
        return None
    mid = (lo + hi) / 2  # a square box, so the inset keeps the diagonal at 45 degrees
    return float(mid[0] - side / 2), float(mid[0] + side / 2), float(mid[1] - side / 2), float(mid[1] + side / 2)


def _inset_axes(ax: Axes, box: tuple[float, float, float, float], rows: Sequence[Mapping[str, Any]], tr: str,
                te: str) -> Axes | None:
    """An inset showing ``box``, below the diagonal (lower right) or above it (upper left), whichever holds no
    point of the figure; None when neither is empty."""
    pts = np.array([(r[te], r[tr]) for r in rows])
    for (x0, y0) in ((0.58, 0.09), (0.04, 0.58)):  # clear of the main axes' tick labels
        inside = (pts[:, 0] > x0 - 0.06) & (pts[:, 0] < x0 + 0.44) & (pts[:, 1] > y0 - 0.06) & (pts[:, 1] < y0 + 0.44)
        if not inside.any():
            inset = ax.inset_axes((x0, y0, 0.38, 0.38), xlim=box[:2], ylim=box[2:])
            inset.set_aspect("equal")
            inset.tick_params(labelsize=6)
            inset.grid(alpha=0.3)
            ax.indicate_inset_zoom(inset, edgecolor="#777777", linewidth=0.7)
            return inset
    return None


#: the most curves one panel of :func:`plot_robustness_curves` holds; more go into small multiples by family
PANEL_CURVES = 4


def plot_robustness_curves(curves: Sequence[Mapping[str, Any]], *, r: float | None = None,
                           eps_mark: float | None = None, ax: Axes | None = None, title: str = "",
                           eps_label: str = "training ε", caption: str = "") -> Figure:
    """Robust test accuracy against the radius eps, one curve per model (``eps``, ``accuracy``, ``n``,
    ``method``, ``label``: :func:`rll_core.runs.robustness_curve` / ``theory_curve``) with 95 % Wilson
    bands, the data's r and the radius the models were trained at: where practice falls short of what
    separation allows.  More than :data:`PANEL_CURVES` models (and no ``ax``) are drawn as small multiples,
    one panel per family (a swept method's members together), each with the other curves' references (the
    certified ones and natural training, thin)."""
    import matplotlib.pyplot as plt

    shades = dict(zip(map(id, curves), family_shades(curves), strict=True))
    models = [c for c in curves if c.get("method") != "theory" and not c.get("certified")]
    panels = _family_panels(models) if ax is None and len(models) > PANEL_CURVES else [models]
    if len(panels) == 1:
        fig, axes = fig_ax(ax, (8.6, 4.6))
        axs = [axes]
    else:
        fig, grid = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 0.4, 4.3), sharey=True, squeeze=False)
        axs = list(grid[0])
    model_ids = {id(c) for c in models}  # by identity: a curve's arrays do not compare with ==
    refs = [c for c in curves if id(c) not in model_ids]
    natural = [c for c in models if c.get("method") == "natural"]
    for i, (a, group) in enumerate(zip(axs, panels, strict=True)):
        extra = natural if len(panels) > 1 and not any(c.get("method") == "natural" for c in group) else []
        _draw_curves(a, [*extra, *group, *refs], shades, reference=extra, r=r, eps_mark=eps_mark,
                     eps_label=eps_label, compact=len(panels) > 1)
        if len(panels) > 1:
            a.set_title(_family_name(group), fontsize=9)
            if i:
                a.set_ylabel("")
    n = next((int(c["n"]) for c in models if c.get("n")), None)
    bars = any(len(g) > PANEL_CURVES for g in panels)  # one family of more than four: bars, not bands
    what = (f"bars at the {eps_label}" if bars else "bands") + ": 95 % Wilson intervals" + (
        f" (n = {n} test points)" if n else "")
    if len(panels) > 1:
        fig.suptitle(title or "Robust accuracy against the radius ε", fontsize=9)
        what += "; natural training drawn thin in every panel as a reference"
    else:
        axs[0].set_title(title or "Robust accuracy against the radius ε", fontsize=9)
    set_caption(fig, (f"{caption}. " if caption else "") + what[0].upper() + what[1:] + ".")
    fig.tight_layout()
    if ax is None:
        plt.close(fig)
    return fig


def _family_panels(models: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The models grouped by method (in the order given), the groups packed into panels of at most
    :data:`PANEL_CURVES` curves without splitting a group (a larger group gets a panel of its own)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for c in models:
        groups.setdefault(str(c.get("method", "")), []).append(c)
    panels: list[list[Mapping[str, Any]]] = []
    for g in groups.values():
        if panels and len(panels[-1]) + len(g) <= PANEL_CURVES:
            panels[-1].extend(g)
        else:
            panels.append(list(g))
    return panels


def _family_name(group: Sequence[Mapping[str, Any]]) -> str:
    """A panel's title: its methods, a swept one by its name alone (``TRADES``)."""
    names = list(dict.fromkeys(row_label(c).split(" (")[0] for c in group))
    return ", ".join(names)


def _draw_curves(ax: Axes, curves: Sequence[Mapping[str, Any]], shades: Mapping[int, Any], *,
                 reference: Sequence[Mapping[str, Any]], r: float | None, eps_mark: float | None, eps_label: str,
                 compact: bool) -> None:
    """One panel of :func:`plot_robustness_curves`: the curves, their bands (or, past four, bars at the training
    eps), r and the training eps marked."""
    ref_ids = {id(c) for c in reference}
    models = [c for c in curves if c.get("method") != "theory" and not c.get("certified") and id(c) not in ref_ids]
    bands = len(models) <= PANEL_CURVES  # more bands than that blur into one haze: bars at the training eps instead
    for k, c in enumerate(curves):
        color, st = shades[id(c)], method_style(c.get("method", ""))
        eps, acc = np.asarray(c["eps"]), np.asarray(c["accuracy"])
        err = np.array([wilson_bars(a, c.get("n")) for a in acc])
        theory = c.get("method") == "theory"
        bound = theory or bool(c.get("certified"))  # a certified curve: a lower bound, drawn dashed
        mine = c.get("method") == "model" and not bound  # the card's model: the figure is about it
        thin = id(c) in ref_ids
        ax.plot(eps, acc, label=row_label(c), color="#999999" if thin else color,
                marker=None if thin else st["marker"], markersize=4 if compact else 5,
                linewidth=0.9 if thin else 2.6 if mine else 1.6 if bound else 1.2,
                linestyle="--" if bound else "-", zorder=1 if thin else 3 if mine else 2)
        if bound or thin:
            continue
        if bands:
            ax.fill_between(eps, acc - err[:, 0], acc + err[:, 1], color=color, alpha=0.12, linewidth=0)
        elif eps_mark is not None and np.isclose(eps, eps_mark).any():
            i = int(np.flatnonzero(np.isclose(eps, eps_mark))[0])
            dx = (k - (len(models) - 1) / 2) * 0.002  # side by side, so the bars do not hide each other; each
            ax.errorbar([eps[i] + dx], [acc[i]], yerr=err[i][:, None], color=color, capsize=1.5,  # bar has its point
                        elinewidth=0.8, linestyle="none", marker=st["marker"], markersize=3)
    if r is not None:
        ax.axvline(r, color="#0072B2", linestyle=":", linewidth=1.2)
        ax.annotate(f"r = {r:.3f}", (r, 1.0), xytext=(-4, -2), textcoords="offset points", ha="right", va="top",
                    fontsize=7 if compact else 8, color="#0072B2")
    if eps_mark is not None:
        ax.axvline(eps_mark, color="#555555", linestyle=":", linewidth=1.0)
        span = max(max(float(max(c["eps"])) for c in curves), r or 0.0) or 1.0
        near_r = r is not None and abs(eps_mark - r) < 0.35 * span  # two labels at the top would collide: one lower
        ax.annotate(f"{'ε' if compact else eps_label} = {eps_mark:g}", (eps_mark, 0.92 if near_r else 1.0),
                    xytext=(4, -2), textcoords="offset points", va="top", fontsize=7 if compact else 8,
                    color="#555555")
    ax.set_xlabel(r"radius $\epsilon$ ($\ell_\infty$)")
    theory = any(c.get("method") == "theory" for c in curves)
    if any(c.get("certified") for c in curves):
        ax.set_ylabel("robust test accuracy\n(solid: PGD-10, an upper bound;\ndashed: certified, a lower bound)")
    else:
        ax.set_ylabel("robust test accuracy\n(networks: PGD-10" + ("; Section 4: certified)" if theory else ")"))
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if compact:  # under its panel: inside, it would hide the curves
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, handlelength=1.6)
    else:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


#: A distance range narrower than this (about 13 grey levels) is drawn as points without lines, and said so.
NARROW_SPAN = 0.05


def plot_accuracy_by_distance(curves: Sequence[Mapping[str, Any]], edges: Sequence[float], *,
                              title: str = "", caption: str = "") -> Figure:
    """Robust test accuracy per bin of the distance to the nearest other-class training point (one line
    per method: ``accuracy``, ``n``, ``method``, ``label``; bins from ``edges``), with 95 % Wilson bars:
    does a model fail where the data is least separated, or everywhere?  The bins are drawn side by side
    and labelled with their range and n.  Distances can crowd into a narrow range (on MNIST the first 100 test
    points lie 0.988-1.0 from a 2,000-image training set): below :data:`NARROW_SPAN` the bins are ties a few grey
    levels apart, so their points are not joined by lines and the caption says so."""
    import matplotlib.pyplot as plt

    e = np.asarray(edges, float)
    narrow = e[-1] - e[0] < NARROW_SPAN  # bins of grey-level ties: points only, no line to read a trend along
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    for k, c in enumerate(curves):
        st = method_style(c.get("method", ""))
        acc, n = np.asarray(c["accuracy"], float), np.asarray(c["n"])
        ok = n > 0
        err = np.array([wilson_errors(a, int(m)) for a, m in zip(acc[ok], n[ok], strict=True)]).reshape(-1, 2).T
        shift = (k - (len(curves) - 1) / 2) * 0.06  # a little apart, so the bars do not hide each other
        theory = c.get("method") == "theory"
        ax.errorbar(np.flatnonzero(ok) + shift, acc[ok], yerr=err, label=str(c.get("label", c.get("method", "?"))),
                    capsize=2, elinewidth=0.8, linewidth=2.2 if theory else 1.5,
                    linestyle="none" if narrow else "--" if theory else "-", **st)
    n0 = np.asarray(curves[0]["n"]) if curves else np.zeros(len(e) - 1, int)
    ax.set_xticks(range(len(e) - 1), [f"[{e[i]:.3f}, {e[i + 1]:.3f}{']' if i == len(e) - 2 else ')'}\nn = {n0[i]}"
                                      for i in range(len(e) - 1)], fontsize=8)
    ax.set_xlabel(r"distance to the nearest other-class training point ($\ell_\infty$), bin")
    ax.set_ylabel("robust test accuracy in the bin")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title or "Robust accuracy by distance to the other classes", fontsize=9)
    set_caption(fig, (f"{caption}. " if caption else "") + "Bars: 95 % Wilson intervals; n per bin under it." + (
        f" Every point lies between {e[0]:.3f} and {e[-1]:.3f} from the other classes: the bins split ties a few "
        "grey levels apart, not a scale of separation, so the points are not joined and no trend is to be read "
        "from them." if narrow else ""))
    fig.tight_layout()
    plt.close(fig)
    return fig
