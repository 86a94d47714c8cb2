"""Figures: the paper's Figure 2 (separation histograms) and figure export."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .storage import atomic_write_bytes, check_outputs, output_tag, record_outputs, user_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .separation import SeparationResult

__all__ = ["FIGURE_FORMATS", "METHOD_STYLES", "check_formats", "context_line", "export_separation", "histogram_edges",
           "method_style", "plot_astuteness_curves", "plot_decision_regions", "plot_dropout_comparison", "plot_gaps",
           "plot_lipschitz_vs_accuracy", "plot_robustness_curves", "plot_separation_histograms", "save_figure",
           "separation_outputs", "separation_tag", "table1_display"]

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
    from .paper import display_name

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
        ax.set_xlabel(r"$\ell_\infty$ distance to nearest other-class training point")
        ax.set_ylabel("count")
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
    from .paper import display_name

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

    ``tag`` (see :func:`rll_core.storage.output_tag`) says what sets the outputs apart, e.g. ``_n800-200`` for
    subsets, so a subset's table never overwrites the full data's.  ``fig`` is a Figure 2 already drawn
    (by :func:`plot_separation_histograms`), saved as it is and left open; without it one is drawn, saved
    and closed.  ``settings`` (:func:`rll_core.separation.separation_settings`): the outputs are refused when
    they hold another setting's result, and recorded beside them (:func:`rll_core.storage.check_outputs`)."""

    from .paper import display_name
    from .storage import save_json, save_table, user_path

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


# ----------------------------------------------------------------------------------------------
# Section 4 and 5 figures


def _label(r: Mapping[str, Any]) -> str:
    return str(r.get("label", r.get("method", "?")))


#: One colour and marker per method family (the swept members of a family share both; the legend names
#: them).  ``theory``: Section 4's classifier.
METHOD_STYLES: dict[str, tuple[str, str]] = {
    "natural": ("#000000", "o"), "gr": ("#E69F00", "s"), "llr": ("#56B4E9", "D"), "at": ("#D55E00", "^"),
    "trades": ("#009E73", "v"), "rst": ("#CC79A7", "P"), "theory": ("#0072B2", "*"),
}


def method_style(method: str) -> dict[str, Any]:
    """``color`` and ``marker`` of a method family (colour-blind safe, Okabe-Ito); grey for others."""
    color, marker = METHOD_STYLES.get(str(method).lower(), ("#999999", "X"))
    return {"color": color, "marker": marker}


def context_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """``MNIST, ε = 0.1 · trained on 2,000 images, 2 epochs · n = 100 test points``: what a figure shows."""
    from .paper import display_name

    run = next((r for r in rows if r.get("settings")), {})
    st = run.get("settings", {})
    parts = [display_name(str(st.get("dataset", run.get("dataset", "")))) + (
        f", ε = {run['eps']:g}" if isinstance(run.get("eps"), (int, float)) else "")]
    if st.get("n_train"):
        parts.append(f"trained on {int(st['n_train']):,} images, {st.get('epochs')} epochs")
    n = next((r.get("test_n", r.get("n")) for r in rows if r.get("test_n", r.get("n"))), None)
    if n:
        parts.append(f"n = {int(n)} test points")
    return " · ".join(p for p in parts if p)


def _family_shades(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, float, float]]:
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


def _wilson_err(acc: float, n: int | None) -> list[float]:
    from .tables import wilson_errors

    return list(wilson_errors(acc, n))


def plot_lipschitz_vs_accuracy(rows: Sequence[Mapping[str, Any]], attack: str = "pgd",
                               ax: Axes | None = None, title: str | None = None) -> Figure:
    """The paper's Section 5 correlation: test local Lipschitz constant (mean ± s.e., log scale) against
    adversarial test accuracy (95 % Wilson interval), one point per method, named in the legend."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = _fig_ax(ax, (7.2, 4.2))
    shades = _family_shades(rows)
    for r, color in zip(rows, shades, strict=True):
        x, y = r["test_lipschitz"], r[f"test_{attack}_accuracy"]
        yerr = np.array(_wilson_err(y, r.get("test_n")))[:, None]
        xerr = r.get("test_lipschitz_se") or 0.0
        ax.errorbar([x], [y], yerr=yerr, xerr=[[xerr], [xerr]], linestyle="none", markersize=8, capsize=2,
                    elinewidth=0.8, label=_label(r), markeredgecolor="black", markeredgewidth=0.4,
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
    ax.set_title(title if title is not None else context_line(rows), fontsize=9)
    fig.tight_layout()
    if owned:
        plt.close(fig)
    return fig


def plot_gaps(rows: Sequence[Mapping[str, Any]], ax: Axes | None = None, title: str | None = None) -> Figure:
    """Standard and adversarial generalization gaps (train minus test accuracy) per method, with Newcombe's
    95 % intervals."""
    import matplotlib.pyplot as plt

    owned = ax is None  # a figure the caller passed in stays open
    fig, ax = _fig_ax(ax, (max(5.5, 0.7 * len(rows) + 2), 3.8))
    pos = np.arange(len(rows))
    for off, key, name, color in ((-0.2, "gap_standard", "standard (clean)", "#999999"),
                                  (0.2, "gap_adversarial", "adversarial (PGD)", "#D55E00")):
        err = np.array([_interval(r, key) for r in rows]).T
        ax.bar(pos + off, [r[key] for r in rows], 0.4, yerr=err if err.any() else None, capsize=2, label=name,
               color=color, error_kw={"elinewidth": 0.8})
    ax.set_xticks(pos, [_label(r) for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("train − test accuracy")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    ax.set_title(title if title is not None else context_line(rows), fontsize=9)
    fig.tight_layout()
    if owned:
        plt.close(fig)
    return fig


def _interval(r: Mapping[str, Any], metric: str) -> list[float]:
    """Error bar half-lengths of a table cell: Wilson 95 % for accuracies, Newcombe's for gaps, ± s.e. for
    Lipschitz constants."""
    from .tables import GAPS, gap_interval

    if metric.endswith("_accuracy"):
        return _wilson_err(r[metric], r.get(f"{metric.split('_', 1)[0]}_n"))
    if metric in GAPS:
        ci = gap_interval(r, metric)
        return [0.0, 0.0] if ci is None else [r[metric] - ci[0], ci[1] - r[metric]]
    se = r.get(f"{metric}_se") or 0.0
    return [se, se]


def plot_dropout_comparison(without: Sequence[Mapping[str, Any]], with_dropout: Sequence[Mapping[str, Any]],
                            metrics: Sequence[str] = ("test_accuracy", "test_pgd_accuracy", "gap_adversarial",
                                                      "test_lipschitz"), title: str | None = None) -> Figure:
    """Table 4 side by side: each metric per method, without and with dropout (accuracies with 95 % Wilson
    intervals, Lipschitz constants with ± s.e.)."""
    import matplotlib.pyplot as plt

    from .tables import COLUMNS

    heads = {k: h for k, h, _ in COLUMNS}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    pos = np.arange(len(without))
    for ax, m in zip(axes[0], metrics, strict=True):
        for off, rows, name, color in ((-0.2, without, "no dropout", "#999999"),
                                       (0.2, with_dropout, "dropout", "#0072B2")):
            err = np.array([_interval(r, m) for r in rows]).T
            ax.bar(pos + off, [r[m] for r in rows], 0.4, yerr=err if err.any() else None, capsize=2, label=name,
                   color=color, error_kw={"elinewidth": 0.8})
        ax.set_xticks(pos, [_label(r) for r in without], rotation=35, ha="right", fontsize=8)
        ax.set_title(heads.get(m, m.replace("_", " ")), fontsize=9)
        if m.startswith("gap"):
            ax.axhline(0, color="black", linewidth=0.6)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.93), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title if title is not None else context_line([*without, *with_dropout]), fontsize=9, y=0.99)
    plt.close(fig)
    return fig


def plot_robustness_curves(curves: Sequence[Mapping[str, Any]], *, r: float | None = None,
                           eps_mark: float | None = None, ax: Axes | None = None, title: str = "") -> Figure:
    """Robust test accuracy against the radius eps, one curve per model (``eps``, ``accuracy``, ``n``,
    ``method``, ``label``: :func:`rll_core.runs.robustness_curve` / ``theory_curve``) with 95 % Wilson
    bands, the data's r and the radius the models were trained at: where practice falls short of what
    separation allows."""
    import matplotlib.pyplot as plt

    owned = ax is None
    fig, ax = _fig_ax(ax, (7.4, 4.2))
    for c, color in zip(curves, _family_shades(curves), strict=True):
        st = method_style(c.get("method", ""))
        eps, acc = np.asarray(c["eps"]), np.asarray(c["accuracy"])
        err = np.array([_wilson_err(a, c.get("n")) for a in acc])
        theory = c.get("method") == "theory"
        ax.plot(eps, acc, label=_label(c), color=color, marker=st["marker"], markersize=5,
                linewidth=2.2 if theory else 1.2, linestyle="--" if theory else "-",
                drawstyle="steps-post" if theory else "default")
        if not theory:
            ax.fill_between(eps, acc - err[:, 0], acc + err[:, 1], color=color, alpha=0.06, linewidth=0)
    if r is not None:
        ax.axvline(r, color="#0072B2", linestyle=":", linewidth=1.2)
        ax.annotate(f"r = {r:.3f}", (r, 1.0), xytext=(-4, -2), textcoords="offset points", ha="right", va="top",
                    fontsize=8, color="#0072B2")
    if eps_mark is not None:
        ax.axvline(eps_mark, color="#555555", linestyle=":", linewidth=1.0)
        ax.annotate(f"training ε = {eps_mark:g}", (eps_mark, 1.0), xytext=(4, -2), textcoords="offset points",
                    va="top", fontsize=8, color="#555555")
    ax.set_xlabel(r"radius $\epsilon$ ($\ell_\infty$)")
    ax.set_ylabel("robust test accuracy (PGD-10)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if owned:
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
        attacked = "attack" in name  # drawn over the certified side, hollow and thin, so equal values show both
        ax.plot(eps, values, marker="o", markersize=6 if attacked else 3, label=name, color=f"C{i // 2}",
                linestyle="--" if attacked else "-", linewidth=1.0 if attacked else 3.0,
                alpha=1.0 if attacked else 0.45, markerfacecolor="none" if attacked else None,
                drawstyle="steps-post", zorder=3 if attacked else 2)
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
                          attack: tuple[np.ndarray, np.ndarray] | None = None, grid: int = 800,
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


def _fig_ax(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return cast("Figure", ax.figure), ax
    fig, new_ax = plt.subplots(figsize=size)
    return fig, new_ax

