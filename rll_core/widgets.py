"""Interactive explorers for the notebooks (ipywidgets), one call each, testable without a browser.

Each function returns an ``ipywidgets.VBox`` whose ``.controls`` holds its widgets and whose ``.state``
records what the last redraw showed (so tests can move a control and check the plot's data).  The
notebooks build them only when their ``interactive`` parameter is true (headless runs pass False).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .paper import display_name
from .plotting import histogram_edges, place_labels
from .tables import COLUMNS

__all__ = ["DRAWN_PREFIX", "astuteness_explorer", "methods_explorer", "separation_explorer"]


_STATIC_LINE = "Interactive explorer: run this cell in a live Jupyter kernel to use its controls."


#: how the line under an explorer's plot begins that says, in text, what the last redraw showed
DRAWN_PREFIX = "drawn: "


def _box(children: Sequence[Any], controls: Mapping[str, Any]) -> Any:
    """The explorer's VBox.  Where no widget can be drawn (a notebook run headless by papermill or nbconvert,
    then viewed as a file) it shows as the plot it last drew and one line, not as ``VBox(children=...``.

    Under the plot, in the same output area, a line (:func:`_show`, kept as ``box.drawn``) says in text what
    the last redraw showed; it is printed after the plot, so a reader (or a browser test) that sees it name the
    control's value knows that the plot for that value is drawn."""
    import ipywidgets as W

    class Explorer(W.VBox):  # type: ignore[misc]
        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            bundle = super()._repr_mimebundle_(**kwargs) or {}
            bundle["text/plain"] = _STATIC_LINE
            if getattr(self, "figure", None) is not None:
                import base64
                import io

                buf = io.BytesIO()
                self.figure.savefig(buf, format="png", dpi=90, bbox_inches="tight")
                bundle["image/png"] = base64.b64encode(buf.getvalue()).decode()
            return bundle

    box = Explorer(list(children))
    box.drawn = ""
    box.controls = dict(controls)
    box.state = {}
    box.figure = None
    return box


def _show(box: Any, fig: Any, line: str) -> None:
    """Inside the explorer's output: the figure, then the line saying what it shows (see :func:`_box`)."""
    import matplotlib.pyplot as plt

    box.figure = fig
    plt.show()
    box.drawn = DRAWN_PREFIX + line
    print(box.drawn)


def separation_explorer(result: Any, *, load: Callable[[str], Any] | None = None,
                        datasets: Sequence[str] = (), eps: float | None = None) -> Any:
    """Histogram of nearest other-class distances with a movable ``2ε`` line.

    ``result``: a :class:`~rll_core.separation.SeparationResult`; ``load(name)`` returns one for another
    dataset (measured on demand); ``datasets``: the other names to offer (those installed).
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt
    name0 = result.report.dataset
    results = {name0: result}
    names = [name0] + [d for d in datasets if d != name0 and load is not None]
    out = W.Output()
    same = {"description_width": "60px"}  # the three controls' labels in one column
    pick = W.Dropdown(options=[(display_name(n), n) for n in names], value=name0, description="dataset",
                      disabled=len(names) == 1, style=same, layout=W.Layout(width="260px"))
    note = W.HTML("" if len(names) > 1 else "<i>the only installed dataset</i>")
    eps_w = W.FloatSlider(value=result.report.eps if eps is None else eps, min=0.0, max=0.5, step=0.001,
                          readout_format=".3f", description="ε", style=same, layout=W.Layout(width="420px"))
    split = W.ToggleButtons(options=["train-train", "test-train"], description="split",
                            style={"button_width": "90px", **same}, layout=W.Layout(width="auto"))
    box = _box([W.HBox([pick, note]), W.HBox([split]), eps_w, out],
               {"dataset": pick, "eps": eps_w, "split": split})

    def redraw(*_: Any) -> None:
        if pick.value not in results and load is not None:
            note.value = f"<i>computing the nearest other-class distances of {pick.value}…</i>"
            with out:
                out.clear_output()
            try:
                results[pick.value] = load(pick.value)
            finally:
                note.value = ""
        res = results[pick.value]
        nn = res.train_train if split.value == "train-train" or res.test_train is None else res.test_train
        d, e = nn.dist, eps_w.value
        frac = float((d < 2 * e).mean())
        box.state = {"dataset": pick.value, "split": split.value, "eps": e, "n": len(d), "within_2eps": frac}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3.2))
            ax.hist(d, bins=list(histogram_edges(max(float(d.max()), 2 * e), 50, nn.scale)), color="tab:blue")
            ax.axvline(2 * e, color="tab:red", linestyle="--", label=f"2ε = {2 * e:.3f}")
            ax.set_xlabel(r"$\ell_\infty$ distance to the nearest other-class training point")
            ax.set_ylabel("points")
            ax.set_title(f"{display_name(pick.value)} {split.value}: {frac:.2%} within 2ε", fontsize=10)
            ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
            _show(box, fig, f"{display_name(pick.value)} {split.value}, ε = {e:.3f}: {frac:.2%} within 2ε")

    for w in (pick, eps_w, split):
        w.observe(redraw, "value")
    redraw()
    return box


def _distinct_labels(grid: Sequence[float]) -> list[str]:
    """The radii as the slider shows them: 3 decimals, more where two radii would read the same (r and
    0.999 r)."""
    for d in range(3, 10):
        labels = [f"{e:.{d}f}" for e in grid]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(e) for e in grid]


def astuteness_explorer(grid: Sequence[float], curves: Mapping[str, Sequence[float]], *, r: float,
                        title: str = "", ylabel: str = "astuteness") -> Any:
    """A slider over the radii where astuteness was measured: the curves, the chosen radius marked, its values.

    Nothing is computed when the slider moves: the explorer reads the curves the notebook computed once
    (``astuteness`` at every radius of ``grid``), so each step only redraws.

    Args:
        grid: the radii (L-inf, in [0, 1]) of the curves, ascending.
        curves: ``{"train certified": [...], "test attacked": [...], ...}``, one fraction per radius.
        r: the classifier's separation radius, marked on the plot.
        title: the plot's title (default none).
        ylabel: the y axis' label (default "astuteness"; a robustness card's: robust accuracy).

    Returns:
        The explorer box; ``.state`` holds the radius shown and every curve's value there.

    Raises:
        ValueError: a curve of another length than ``grid``, or an empty grid.

    Example:
        >>> astuteness_explorer([0.0, 0.1], {"test certified": [0.5, 0.2]}, r=0.3)  # doctest: +SKIP
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    grid = [float(e) for e in grid]
    if not grid or any(len(v) != len(grid) for v in curves.values()):
        raise ValueError(f"every curve needs one value per radius of the grid ({len(grid)} radii)")
    out = W.Output()
    start = min(range(len(grid)), key=lambda i: abs(grid[i] - r))
    labels = _distinct_labels(grid)
    eps_w = W.SelectionSlider(options=[(lab, i) for i, lab in enumerate(labels)], value=start,
                              description="ε", layout=W.Layout(width="420px"))
    box = _box([eps_w, out], {"eps": eps_w})

    def redraw(*_: Any) -> None:
        i = int(eps_w.value)
        box.state = {"eps": grid[i], **{k: float(v[i]) for k, v in curves.items()}}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3.2))
            for k, v in curves.items():
                ax.plot(grid, v, marker="o", ms=3, ls="--" if "attacked" in k else "-", label=k)
            ax.axvline(grid[i], color="0.3", lw=1)
            ax.axvline(r, color="tab:red", lw=1, ls=":", label=f"r = {r:.3f}")
            ax.set(xlabel="ε (L∞)", ylabel=ylabel, ylim=(-0.02, 1.02))
            shown = {k: v for k, v in curves.items() if k.startswith("test")} or curves  # the test side, if split
            ax.set_title(title + ("\n" if title else "") + ", ".join(
                f"{k} {float(v[i]):.3f}" for k, v in shown.items()) + f" at ε = {labels[i]}", fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
            _show(box, fig, f"ε = {labels[i]}: " + ", ".join(f"{k} {float(v[i]):.3f}" for k, v in curves.items()))

    eps_w.observe(redraw, "value")
    redraw()
    return box


def methods_explorer(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Pick two table columns: each method as a labelled point (the Lipschitz-vs-accuracy view and more)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    numeric = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool)]
    cols = [c for c in ("test_lipschitz", "train_lipschitz", "test_pgd_accuracy", "test_multitarget_accuracy",
                        "test_accuracy", "train_accuracy", "gap_standard", "gap_adversarial") if c in numeric]
    out = W.Output()
    xw = W.Dropdown(options=cols, value=cols[0], description="x", layout=W.Layout(width="300px"))
    yw = W.Dropdown(options=cols, value="test_pgd_accuracy" if "test_pgd_accuracy" in cols else cols[-1],
                    description="y", layout=W.Layout(width="300px"))
    heads = {k: h for k, h, _ in COLUMNS}
    box = _box([W.HBox([xw, yw]), out], {"x": xw, "y": yw})

    def redraw(*_: Any) -> None:
        xs = np.array([r[xw.value] for r in rows], float)
        ys = np.array([r[yw.value] for r in rows], float)
        box.state = {"x": xw.value, "y": yw.value, "points": list(zip(xs.tolist(), ys.tolist(), strict=True))}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            ax.scatter(xs, ys)
            ax.set_xlabel(heads.get(xw.value, xw.value.replace("_", " ")))
            ax.set_ylabel(heads.get(yw.value, yw.value.replace("_", " ")))
            fig.tight_layout()
            place_labels(ax, list(zip(xs.tolist(), ys.tolist(), strict=True)),
                         [str(r.get("label", r.get("method"))) for r in rows], fontsize=8)  # none on another
            ax.grid(alpha=0.3)
            _show(box, fig, f"{yw.value} against {xw.value}, {len(rows)} points")

    xw.observe(redraw, "value")
    yw.observe(redraw, "value")
    redraw()
    return box
