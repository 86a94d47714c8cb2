"""Interactive explorers for the notebooks (ipywidgets), one call each, testable without a browser.

Each function returns an ``ipywidgets.VBox`` whose ``.controls`` holds its widgets and whose ``.state``
records what the last redraw showed (so tests can move a control and check the plot's data).  The
notebooks build them only when their ``interactive`` parameter is true (headless runs pass False).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .plotting import histogram_edges
from .theory import astuteness

__all__ = ["astuteness_explorer", "methods_explorer", "separation_explorer"]


_STATIC_LINE = "Interactive explorer: run this cell in a live Jupyter kernel to use its controls."


def _box(children: Sequence[Any], controls: Mapping[str, Any]) -> Any:
    """The explorer's VBox.  Where no widget can be drawn (a notebook run headless by papermill or nbconvert,
    then viewed as a file) it shows as the plot it last drew and one line, not as ``VBox(children=...``."""
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
    box.controls = dict(controls)
    box.state = {}
    box.figure = None
    return box


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
    pick = W.Dropdown(options=names, value=name0, description="dataset", disabled=len(names) == 1,
                      layout=W.Layout(width="260px"))
    note = W.HTML("" if len(names) > 1 else "<i>the only installed dataset</i>")
    eps_w = W.FloatSlider(value=result.report.eps if eps is None else eps, min=0.0, max=0.5, step=0.001,
                          readout_format=".3f", description="ε", layout=W.Layout(width="420px"))
    split = W.ToggleButtons(options=["train-train", "test-train"], description="split",
                            style={"button_width": "90px"}, layout=W.Layout(width="auto"))
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
            ax.set_title(f"{pick.value} {split.value}: {frac:.2%} within 2ε", fontsize=10)
            ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
            box.figure = fig
            plt.show()

    for w in (pick, eps_w, split):
        w.observe(redraw, "value")
    redraw()
    return box


def astuteness_explorer(classifier: Any, x: Any, y: Any, *, eps_max: float, label: str = "test") -> Any:
    """A slider over ε: the certified and attacked astuteness of the Section 4 classifier at that radius."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    out = W.Output()
    eps_w = W.FloatSlider(value=classifier.r, min=0.0, max=eps_max, step=eps_max / 100, readout_format=".3f",
                          description="ε", layout=W.Layout(width="420px"))
    box = _box([eps_w, out], {"eps": eps_w})

    def redraw(*_: Any) -> None:
        a = astuteness(classifier, x, y, eps_w.value)
        box.state = {"eps": eps_w.value, "certified": a.certified, "attacked": a.attacked}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 1.8))
            ax.barh(["attacked (upper)", "certified (lower)"], [a.attacked, a.certified],
                    color=["tab:orange", "tab:green"])
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"{label} astuteness at ε = {eps_w.value:.3f} (r = {classifier.r:.3f})")
            box.figure = fig
            plt.show()

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
    box = _box([W.HBox([xw, yw]), out], {"x": xw, "y": yw})

    def redraw(*_: Any) -> None:
        xs = np.array([r[xw.value] for r in rows], float)
        ys = np.array([r[yw.value] for r in rows], float)
        box.state = {"x": xw.value, "y": yw.value, "points": list(zip(xs.tolist(), ys.tolist(), strict=True))}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5.5, 3.8))
            ax.scatter(xs, ys)
            for r, a, b in zip(rows, xs, ys, strict=True):
                ax.annotate(str(r.get("label", r.get("method"))), (a, b), xytext=(4, 3), textcoords="offset points",
                            fontsize=8)
            ax.set_xlabel(xw.value.replace("_", " "))
            ax.set_ylabel(yw.value.replace("_", " "))
            ax.grid(alpha=0.3)
            box.figure = fig
            plt.show()

    xw.observe(redraw, "value")
    yw.observe(redraw, "value")
    redraw()
    return box
