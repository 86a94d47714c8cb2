"""A robustness card's files: its summary table (csv, md, booktabs), its figures and a one-page ``card.md``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data import ImageDataset
from ..indicators import checks_description, indicator_summary
from ..paper import display_name
from ..plotting import (
    plot_accuracy_by_distance,
    plot_indicators,
    plot_pair_gallery,
    plot_robustness_curves,
    save_figure,
    set_caption,
    wrapped,
)
from ..stats import readable
from ..storage import array_digest, load_npz, save_table

__all__ = ["card_rows", "model_name", "plot_least_smooth", "write_card"]

_NAMES = {"clean": "clean accuracy", "pgd": "PGD-10 accuracy", "multitarget": "multi-targeted accuracy (9 x 20)",
          "worst": "worst case of PGD and multi-targeted", "autoattack": "AutoAttack (standard) accuracy"}


def card_rows(card: Mapping[str, Any]) -> list[dict[str, str]]:
    """The card's numbers as a table: quantity, value, 95 % interval (or ± s.e.), n."""
    a, lip, sep = card["stages"]["attacks"], card["stages"]["lipschitz"], card["stages"]["separation"]
    rows = []
    for key, name in _NAMES.items():
        if key in a:
            lo, hi = a[f"{key}_ci"]
            rows.append({"quantity": name, "value": f"{a[key]:.3f}", "95 % interval": f"[{lo:.3f}, {hi:.3f}]",
                         "n": str(a.get(f"{key}_n", a["n"]))})
    for proc, name in (("ascent", "local Lipschitz (rll's ascent: quote this)"),
                       ("reference", "local Lipschitz (ref. proc.: only beside the paper's tables)")):
        rows.append({"quantity": name, "value": readable(lip[proc]),
                     "95 % interval": f"± {readable(lip[f'{proc}_se'], like=lip[proc])} (s.e.)", "n": str(lip["n"])})
    cert = card["stages"].get("certified")
    if cert and "error" not in cert:  # bound propagation (rll_core.certify) on the checks' points
        lo, hi = cert["certified_ci"]
        rows.append({"quantity": "certified accuracy (a lower bound of robust accuracy)", "value": f"{cert['certified']:.3f}",
                     "95 % interval": f"[{lo:.3f}, {hi:.3f}]", "n": str(cert["n"])})
        rows.append({"quantity": "local Lipschitz upper bound (certified; ascent <= true <= bound)",
                     "value": readable(cert["lipschitz_bound"]),
                     "95 % interval": f"± {readable(cert['lipschitz_bound_se'], like=cert['lipschitz_bound'])} (s.e.)",
                     "n": str(cert["n"])})
    checks = card["stages"].get("checks")
    if checks:  # a card made before the indicators has none
        found = checks["indicators"]
        rows.append({"quantity": "attack checks (did an attack fail?)", "value": indicator_summary(found),
                     "95 % interval": "-", "n": str(found[0]["n"])})
    t1 = sep["table1"]
    rows.append({"quantity": "data: r (half the train-train minimum)", "value": f"{sep['r']:.4f}",
                 "95 % interval": "exact", "n": str(t1.get("n_train", ""))})
    rows.append({"quantity": "data: test-train minimum distance", "value": f"{t1['test_train_min']:.4f}",
                 "95 % interval": "exact", "n": str(t1.get("n_test", ""))})
    return rows


def model_name(card: Mapping[str, Any]) -> str:
    """The model as its user knows it: its file, run folder or factory (and the weights' digest), else the digest."""
    src = card.get("source") or {}
    named = src.get("path") or src.get("factory") or src.get("class")
    return f"{Path(str(named)).name} ({card['settings']['model']})" if named else str(card["settings"]["model"])


def plot_least_smooth(x: np.ndarray, x_adv: np.ndarray, values: np.ndarray, k: int = 6, title: str = "",
                      caption: str = "") -> Any:
    """The ``k`` points with the largest local Lipschitz estimate: each image, the input in its ball that
    attains the estimate, and their difference (grey: none; scaled to the ball's radius).  Six points fill a
    two-column page (6.8 in) at the figure's own size; ``caption`` (the settings) goes beside it."""
    import matplotlib.pyplot as plt

    order = np.argsort(-values)[:k]
    fig, axes = plt.subplots(3, len(order), figsize=(1.05 * len(order) + 0.5, 3.9), squeeze=False)
    for j, i in enumerate(order):
        diff = x_adv[i] - x[i]
        radius = float(np.abs(diff).max()) or 1.0
        gray = x[i].shape[0] == 1
        shown = [x[i], x_adv[i], 0.5 + diff / (2 * radius)]  # the difference: grey 0.5 where none
        for r, img in enumerate(shown):
            ax = axes[r][j]
            if gray:
                ax.imshow(img[0], cmap="gray" if r < 2 else "coolwarm", vmin=0, vmax=1)
            else:
                ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][j].set_title(f"test #{i}\nL = {readable(values[i])}", fontsize=7)
    for r, name in enumerate(("image x", "x' (attains L)", "x' - x, scaled")):
        axes[r][0].set_ylabel(name, fontsize=7)
    fig.suptitle(wrapped(title or "The least smooth test points", 90), fontsize=9)
    set_caption(fig, (f"{caption}. " if caption else "") + "Per point (the largest local Lipschitz estimates L of "
                "rll's ascent): the image, the input in its ε-ball that attains L, and their difference (red: "
                "brighter, blue: darker, grey: unchanged; scaled to the largest change).")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _caption(card: Mapping[str, Any], what: str) -> str:
    """The card's caption: the points, eps against the data's r, what each number bounds, the checks' rules."""
    st, stages = card["settings"], card["stages"]
    aa = f" (AutoAttack on the first {st['n_autoattack']})" if st["n_autoattack"] else ""
    r = stages["separation"]["r"]
    return (f"Robustness card: {what}; the first {st['n_eval']} test points{aa}. ε = {st['eps']:g} is "
            f"{st['eps'] / r:.2f} r of the training data (r = {r:.3f}: below r, separation allows robust accuracy 1 "
            "on the training points). Accuracies with 95 % Wilson intervals (PGD, multi-targeted and AutoAttack "
            "accuracies are upper bounds of the true robust accuracy); local Lipschitz constants as mean ± standard "
            "error: quote rll's ascent (the largest ratio it attains in the ε-ball, a lower bound of the true local "
            "constant), the reference procedure's only beside the paper's tables (it reports a last iterate, "
            "typically 15-25 times smaller); distances exact." + (
                f" Certified (rll_core.certify, bound propagation on the first {stages['certified']['n']} points): "
                "certified accuracy is a lower bound of robust accuracy, the Lipschitz bound an upper bound of the "
                "local constant." if "n" in stages.get("certified", {}) else "") + (
                f" Attack checks on the first {st['n_checks']} points: {checks_description()} (card.json: every "
                "value)." if "checks" in stages else ""))


def _caption_line(png: Path) -> str:
    """The caption written beside a figure (``<stem>.caption.txt``), in italics, or nothing."""
    cap = png.with_name(f"{png.stem}.caption.txt")
    return f"*{cap.read_text().strip()}*" if cap.exists() else ""


def write_card(card: Mapping[str, Any], train: ImageDataset, sub: ImageDataset,
               formats: Iterable[str] = ("png", "pdf", "svg")) -> list[Path]:
    """Write a card's files into its folder: ``card_summary.{csv,md,tex}``, the five figures, ``card.md``.

    Args:
        card: what :func:`rll_core.card.robustness_card` returns.
        train: the training split it was measured against (for the closest pairs).
        sub: the evaluated test points (for the least smooth ones).
        formats: figure formats (default PNG, PDF and SVG).

    Returns:
        The paths written.

    Raises:
        KeyError: a card without its stages; ValueError: ``train`` or ``sub`` is not the data the card was measured
            on (its stored digests), before anything is written.

    Example:
        >>> write_card(card, train, test.subset(500, seed=None))  # doctest: +SKIP
    """
    st, stages = card["settings"], card["stages"]
    for given, key, what in ((train, "train_digest", f"training split (n_train {st['n_train']})"),
                             (sub, "eval_digest", f"first {st['n_eval']} test points")):
        if array_digest(given.images, given.labels) != st[key]:
            raise ValueError(f"the {given.name} data given ({len(given)} images) is not the {what} this card was "
                             "measured on: pass the same split and subset (make_card does)")
    folder = Path(card["folder"])
    data = display_name(st["dataset"])
    what = f"{data}, ε = {st['eps']:g}, model {model_name(card)}"
    rows = card_rows(card)
    cap = _caption(card, what)
    files = [save_table(folder / "card_summary.csv", rows), save_table(folder / "card_summary.md", rows, caption=cap),
             save_table(folder / "card_summary.tex", rows, caption=cap)]
    curve, sep = stages["curve"], stages["separation"]
    curves = [{"method": "model", "label": "your model (PGD-10)", "eps": curve["eps"], "accuracy": curve["accuracy"],
               "n": curve["n"]},
              {"method": "theory", "label": f"Section 4 classifier (r={curve['certified_r']:.3f}),\ncertified lower bound",
               "eps": curve["eps"], "accuracy": curve["certified"], "n": curve["n"]}]
    cert = stages.get("certified") or {}
    if "curve" in cert:
        curves.insert(1, {"method": "model_certified", "certified": True, "label": "your model, certified\n(lower bound)",
                          "eps": curve["eps"], "accuracy": cert["curve"], "n": cert["n"]})
    fig = plot_robustness_curves(curves, r=sep["r"], eps_mark=st["eps"], caption=f"{what}; r of the training set",
                                 eps_label="the card's ε")
    files += save_figure(fig, folder / "fig_card_robustness_vs_eps", formats)
    by = sep["by_distance"]
    attack = {"multitarget": "multi-targeted", "pgd": "PGD-10", "clean": "clean"}[sep.get("binned", "pgd")]
    fig = plot_accuracy_by_distance([{"accuracy": by["accuracy"], "n": by["n"], "method": "model",
                                      "label": f"your model ({attack})"}], sep["edges"],
                                    caption=what)
    files += save_figure(fig, folder / "fig_card_robustness_by_distance", formats)
    lip = load_npz(folder / "lipschitz.npz")
    fig = plot_least_smooth(sub.float_images(), lip["ascent_inputs"], lip["ascent"], caption=what)
    files += save_figure(fig, folder / "fig_card_least_smooth", formats)
    fig = plot_pair_gallery(sep["pairs"], train, train, cols=4,
                            title=f"{data}: the closest train-train pairs of different classes")
    files += save_figure(fig, folder / "fig_card_closest_pairs", formats)
    if "checks" in stages:
        fig = plot_indicators([{"label": "your model", "indicators": stages["checks"]["indicators"]}],
                              caption=what)
        files += save_figure(fig, folder / "fig_card_attack_checks", formats)
    lines = [f"# Robustness card: {what}", "", cap, "", *Path(files[1]).read_text().splitlines()[2:], "",
             *[line for p in files if p.suffix == ".png" for line in (f"![{p.stem}]({p.name})", _caption_line(p), "")]]
    (folder / "card.md").write_text("\n".join(lines))
    return [*files, folder / "card.md"]
