"""The robustness card: what the paper asks of its models, asked of yours, in one folder.

For a trained classifier and a dataset: clean, PGD-10, multi-targeted and AutoAttack accuracy with n and 95 %
Wilson intervals; the local Lipschitz constant (rll's ascent and the reference procedure) with standard errors,
and per point the input that attains it; robust accuracy against eps beside the data's r and the Section 4
classifier's certified curve; robust accuracy per bin of distance to the nearest other-class training point;
the dataset's Table 1 row and its closest cross-class pairs; whether any attack failed (the attack-failure
indicators of :mod:`rll_core.indicators` on the first :data:`CARD_CHECKS` points).  Every stage is stored as it finishes in the
card's ``card.json`` (with every setting and digest) and read back on the next call, so an interrupted card
resumes; the folder is named by the model's digest and a digest of the settings, so no card replaces another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..audit import closest_pairs
from ..certify import METHOD, UnsupportedLayerError, certify
from ..checks import check_int, check_real, resolve_device
from ..data import ImageDataset, load_train_test
from ..indicators import attack_indicators
from ..measure import measure_points, sweep_radii, worst_case
from ..paper import display_name, eps_for
from ..precision import check_precision, precision_record, resolve_precision
from ..section4 import default_radii, theory_curve
from ..separation import measure_separation, nearest_other_class
from ..stats import accuracy_by_distance, distance_bins, standard_error, wilson_interval
from ..storage import array_digest, load_json, load_npz, project_dir, save_json, save_npz, settings_digest, user_path
from .load import ModelLoadError, model_digest

__all__ = ["CARD_ATTACKS", "CARD_CHECKS", "LIPSCHITZ_PROCEDURES", "card_folder", "card_on", "check_fits", "check_n_eval", "check_request",
           "default_model", "robustness_card"]

#: the attacks a card can run on the test points (AutoAttack on the first ``n_autoattack`` of them)
CARD_ATTACKS = ("pgd", "multitarget", "autoattack")
#: the card's two local Lipschitz numbers: rll's ascent (the one to quote: a ratio attained in the ball, the
#: largest the ascent finds) and the paper's published procedure (to relate to its tables only)
LIPSCHITZ_PROCEDURES = ("ascent", "reference")
#: the attack-failure indicators run on the first this many evaluated points (fewer when the card has fewer)
CARD_CHECKS = 50


def check_fits(model: nn.Module, data: ImageDataset) -> int:
    """The model's class count, after one forward of two images of ``data``; a one-line refusal otherwise.

    Raises:
        ModelLoadError: the model does not take the data's input shape, or has fewer outputs than the data has
            classes.
    """
    x = torch.from_numpy(data.subset(2, seed=None).float_images())
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001 - whatever the model raises, one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()
        raise ModelLoadError(f"the model does not take {data.name}'s inputs of shape {tuple(x.shape[1:])}: {first}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        raise ModelLoadError(f"the model returns {getattr(out, 'shape', type(out).__name__)} for 2 images, "
                             "not logits of shape (2, classes)")
    k, need = int(out.shape[1]), int(data.labels.max()) + 1
    if k < need:
        raise ModelLoadError(f"the model has {k} outputs but {data.name} has labels up to {need - 1}")
    return k


def default_model(dataset: str, runs_dir: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None,
                  device: str = "auto") -> Path:
    """The run folder of the AT model of the ``quick`` preset on ``dataset`` (notebook 3's), trained if missing."""
    from ..grids import parse_methods, run_grid

    rows = run_grid(runs_dir, dataset=dataset, methods=parse_methods("at"), preset="quick", data_dir=data_dir,
                    device=device, progress=False)
    return user_path(runs_dir) / str(rows[0]["run"])


def card_folder(out_dir: str | os.PathLike[str], dataset: str, model_id: str, settings: dict[str, Any]) -> Path:
    """``<out_dir>/card-<dataset>-<model digest>-<settings digest>``: one folder per model and settings."""
    digest = settings_digest(settings, 8)
    return user_path(out_dir) / f"card-{dataset}-{model_id}-{digest}"


def _stage(card: dict[str, Any], path: Path, name: str, work: Callable[[], dict[str, Any]], say: Callable[[str], None]
           ) -> dict[str, Any]:
    """Run one stage unless ``card.json`` holds it; store the card after it (an interrupted card resumes here)."""
    if name in card["stages"]:
        say(f"  {name}: read from {path.name}")
        return dict(card["stages"][name])
    say(f"  {name} ...")
    card["stages"][name] = work()
    save_json(path, card)
    return dict(card["stages"][name])


#: AutoAttack's batch on a card: small, so its progress bar moves (and estimates the time left) every few points
AUTOATTACK_BATCH = 16


def _attacks(card: dict[str, Any], path: Path, model: nn.Module, x: torch.Tensor, y: np.ndarray, eps: float,
             attacks: Sequence[str], n_aa: int, seed: int, precision: str, say: Callable[[str], None],
             progress: bool) -> dict[str, Any]:
    """The clean verdicts, then each attack as a part of its own, stored in ``card.json`` (and its verdicts in
    ``verdicts-<name>.npz``) as it finishes: Ctrl-C keeps every finished attack, a rerun starts at the next.  Each
    attack draws from its own random stream, so its verdicts are those of the attacks run together."""
    folder = path.parent
    parts = card.setdefault("parts", {})
    for name in ("clean", *attacks):
        n = n_aa if name == "autoattack" else len(x)
        if name in parts or n == 0:
            if name in parts:
                say(f"    {name}: read from {path.name}")
            continue
        say(f"    {name} on {n} points" + (f" (batches of {AUTOATTACK_BATCH})" if name == "autoattack" else ""))
        m = measure_points(model, x[:n], y[:n], eps=eps, attacks=[] if name == "clean" else [name], seed=seed,
                           progress=progress, precision=precision,
                           batch_size=AUTOATTACK_BATCH if name == "autoattack" else None)
        save_npz(folder / f"verdicts-{name}.npz", verdicts=m.verdicts[name])
        parts[name] = {"n": m.n, "accuracy": m.accuracy(name), "ci": m.interval(name),
                       **({"settings": m.attacks[name]} if name != "clean" else {})}
        save_json(path, card)
    out: dict[str, Any] = {"n": parts["clean"]["n"], "clean": parts["clean"]["accuracy"], "clean_ci": parts["clean"]["ci"]}
    for name in attacks:
        if name in parts:
            out[name], out[f"{name}_ci"] = parts[name]["accuracy"], parts[name]["ci"]
    if "autoattack" in parts:
        out["autoattack_n"] = parts["autoattack"]["n"]
    out["attack_settings"] = {a: parts[a]["settings"] for a in attacks if a in parts and a != "autoattack"}
    verdicts = {a: load_npz(folder / f"verdicts-{a}.npz")["verdicts"] for a in ("clean", *attacks) if a in parts}
    worst = worst_case({a: v for a, v in verdicts.items() if a != "autoattack"})  # the attacks on every point
    if worst is not None:
        out["worst"] = float(worst.mean())
        out["worst_ci"] = [float(v) for v in wilson_interval(out["worst"], len(worst))]
    save_npz(folder / "verdicts.npz", **verdicts)
    return out


def _lipschitz(model: nn.Module, x: torch.Tensor, y: np.ndarray, eps: float, seed: int, precision: str,
               folder: Path, progress: bool) -> dict[str, Any]:
    m = measure_points(model, x, y, eps=eps, lipschitz=LIPSCHITZ_PROCEDURES, seed=seed, precision=precision,
                       progress=progress, return_inputs=True)
    out: dict[str, Any] = {}
    for proc in LIPSCHITZ_PROCEDURES:
        out[proc], out[f"{proc}_se"] = m.lipschitz_mean(proc), m.lipschitz_se(proc)
    # the inputs that attain rll's estimate, kept for a look at the least smooth points
    save_npz(folder / "lipschitz.npz", **m.lipschitz, ascent_inputs=m.inputs)
    out["n"] = m.n
    return out


def _curve(model: nn.Module, x: torch.Tensor, y: np.ndarray, grid: Sequence[float], seed: int,
           precision: str, train: ImageDataset, test: ImageDataset, n_eval: int) -> dict[str, Any]:
    swept = sweep_radii(model, x, y, grid, seed=seed, precision=precision)
    theory = theory_curve(train, test, list(grid), n_eval=n_eval)
    return {"eps": list(grid), "accuracy": [float(v.mean()) for v in swept], "n": int(len(x)),
            "certified": theory["accuracy"], "certified_r": theory["r"]}


def _certified(model: nn.Module, x: torch.Tensor, y: np.ndarray, eps: float, radii: Sequence[float], n: int,
               folder: Path) -> dict[str, Any]:
    """Certificates on the first ``n`` points (:mod:`rll_core.certify`): certified accuracy at ``eps`` and at every
    radius of the curve, the Lipschitz bound beside the ascent's values there; a model with a layer the bounds
    cannot go through gets the refusal, not a failed card."""
    try:  # once per radius, the card's eps among them (eps 0: the clean verdicts)
        by_radius = {e: certify(model, x[:n], y[:n], eps=e) for e in sorted({*radii, eps})}
    except UnsupportedLayerError as e:
        return {"error": str(e), "certify": METHOD}
    at = by_radius[eps]
    curve = [float(by_radius[e]["certified"].mean()) for e in radii]
    bound = at["lipschitz_bound"].numpy()
    found = load_npz(folder / "lipschitz.npz")["ascent"][:n]
    return {"n": int(len(bound)), "certified": float(at["certified"].mean()),
            "certified_ci": [float(v) for v in wilson_interval(float(at["certified"].mean()), len(bound))],
            "lipschitz_bound": float(np.mean(bound, dtype=np.float64)), "lipschitz_bound_se": standard_error(bound),
            "attained": float(np.mean(found, dtype=np.float64)),
            "ratio": float(np.median(bound / np.maximum(found, 1e-12))),
            "curve": curve, "certify": METHOD}


def _separation(train: ImageDataset, test: ImageDataset, sub: ImageDataset, eps: float, cache_dir: Path | None,
                device: str, robust: np.ndarray) -> dict[str, Any]:
    res = measure_separation(train, test, eps, device=device, cache_dir=cache_dir)
    row = res.report.table1_row()
    nn_sub = nearest_other_class(sub.flat(), sub.labels, train.flat(), train.labels, device=device)
    edges = distance_bins(nn_sub.dist, 4)
    by = accuracy_by_distance(nn_sub.dist, robust, edges.tolist())
    pairs = closest_pairs(res.train_train, train.labels, train.labels, k=8, self_search=True)
    return {"table1": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
            "r": float(res.report.r_separation), "distance": [float(d) for d in nn_sub.dist],
            "edges": [float(e) for e in edges],
            "by_distance": {k: [int(a) if k == "n" else float(a) for a in v] for k, v in by.items()},
            "pairs": [{k: (int(v) if k != "distance" else float(v)) for k, v in p.items()} for p in pairs]}


def _settings(model_id: str, train: ImageDataset, sub: ImageDataset, eps: float, n_eval: int,
              attacks: Sequence[str], n_aa: int, grid: Sequence[float] | None, seed: int,
              precision: str) -> dict[str, Any]:
    """What a card's numbers depend on (its folder's digest): the model's weights, the data, every setting; not
    where the model file lay (kept beside them as ``source``)."""
    return {"model": model_id, "dataset": train.name, "n_train": len(train),
            "train_digest": array_digest(train.images, train.labels), "eval_digest": array_digest(sub.images, sub.labels),
            "eps": eps, "n_eval": n_eval, "attacks": list(attacks), "n_autoattack": n_aa,
            "eps_grid": None if grid is None else [float(e) for e in grid], "seed": seed,
            "n_checks": min(CARD_CHECKS, n_eval), **precision_record(precision)}


def check_request(attacks: Sequence[str], n_eval: int, n_autoattack: int, precision: str, eps: float | None,
                  eps_grid: Sequence[float] | None) -> tuple[float | None, list[float] | None]:
    """A card's settings checked before any data is read: ``(eps, sorted radii)`` (None where defaulted)."""
    unknown = [a for a in attacks if a not in CARD_ATTACKS]
    if unknown or not attacks:
        raise ValueError(f"attacks must be some of {', '.join(CARD_ATTACKS)}, got {list(attacks)}")
    check_int("n_eval", n_eval)
    check_int("n_autoattack", n_autoattack, lo=0)
    check_precision(precision)
    eps = None if eps is None else check_real("eps", eps, lo=0, hi=1, lo_open=True)
    grid = None if eps_grid is None else sorted({check_real("eps", e, lo=0, hi=1) for e in eps_grid})
    return eps, grid


def check_n_eval(n_eval: int, test: ImageDataset) -> None:
    """Refuse more evaluated points than the test split holds (before a model is trained or loaded)."""
    if n_eval > len(test):
        raise ValueError(f"n_eval {n_eval} is more than the {len(test)} test points of {test.name}")


def robustness_card(model: nn.Module, dataset: str, *, eps: float | None = None, n_eval: int = 500,
                    attacks: Sequence[str] = CARD_ATTACKS, n_autoattack: int = 100,
                    eps_grid: Sequence[float] | None = None, data_dir: str | os.PathLike[str] | None = None,
                    n_train: int | None = None, out_dir: str | os.PathLike[str] | None = None,
                    cache_dir: str | os.PathLike[str] | None = None, source: dict[str, Any] | None = None,
                    device: str = "auto", precision: str = "auto", seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Measure a classifier as the paper measures its models; every number stored with the settings behind it.

    Args:
        model: the classifier (logits ``(N, classes)`` for images in [0, 1]); :func:`load_model` reads files.
        dataset: a registry name or an ``.npz`` of your own.
        eps: the L-inf radius of the attacks and the Lipschitz ball (default: the paper's for the data's shape).
        n_eval: the first ``n_eval`` test points are evaluated (default 500).
        attacks: of :data:`CARD_ATTACKS` (default all three).
        n_autoattack: AutoAttack on the first this many of them (default 100).
        eps_grid: radii of the robustness curve (default 7 from 0 to 1.2 r, and ``eps``).
        data_dir: where the dataset's files are (default the project's).
        n_train: a seeded subset of the training split (default all of it).
        out_dir: where the card's folder goes (default the project's ``results/cards``).
        cache_dir: the separation search's cache (default the project's ``results/cache``, which notebook 01
            fills).
        source: where the model came from (what :func:`load_model` returns beside it), kept in the card.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (verdicts in fp32 always).
        seed: the attacks' and the ascent's seed (default 0).
        progress: say what each stage does, and the attacks' progress bars (default True).

    Returns:
        The card: ``settings``, ``folder``, and per stage (``attacks``, ``lipschitz``, ``curve``, ``separation``,
        ``checks``) its numbers; the files (figures, tables, ``card.json``) are written by :func:`write_card`.

    Raises:
        ModelLoadError: the model does not fit the data (input shape, class count).
        ValueError: a bad radius, size, attack or precision, before any work.

    Example:
        >>> card = robustness_card(net, "fashion_mnist", n_eval=200)  # doctest: +SKIP
        >>> card["stages"]["attacks"]["pgd"], card["folder"]  # doctest: +SKIP
    """
    eps, grid = check_request(attacks, n_eval, n_autoattack, precision, eps, eps_grid)
    train, test = load_train_test(dataset, data_dir, n_train, None)
    return card_on(model, train, test, eps=eps, n_eval=n_eval, attacks=attacks, n_autoattack=n_autoattack,
                   eps_grid=grid, out_dir=out_dir, cache_dir=cache_dir, source=source, device=device,
                   precision=precision, seed=seed, progress=progress)


def card_on(model: nn.Module, train: ImageDataset, test: ImageDataset, *, eps: float | None, n_eval: int,
            attacks: Sequence[str], n_autoattack: int, eps_grid: Sequence[float] | None,
            out_dir: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None,
            source: dict[str, Any] | None, device: str, precision: str, seed: int, progress: bool) -> dict[str, Any]:
    """:func:`robustness_card` on data already loaded and settings already checked (:func:`check_request`)."""
    eps = eps_for(train) if eps is None else eps
    check_n_eval(n_eval, test)
    model = model.eval()
    check_fits(model, test)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    sub = test.subset(n_eval, seed=None)
    settings = _settings(model_digest(model), train, sub, eps, n_eval, attacks,
                         min(n_autoattack, n_eval) if "autoattack" in attacks else 0, eps_grid, seed, prec)
    folder = card_folder(project_dir() / "results" / "cards" if out_dir is None else out_dir, train.name,
                         settings["model"], settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "card.json"
    card = load_json(path) if path.exists() else {"settings": settings, "stages": {}}
    if card.get("settings") != settings:  # a folder of the same digest holds the same settings, or was damaged
        card = {"settings": settings, "stages": {}}
    card["source"] = dict(source or {})
    say = print if progress else (lambda _s: None)
    say(f"robustness card of model {settings['model']} on {display_name(train.name)} (eps = {eps:g}, n = {n_eval}) "
        f"in {folder}")
    cache = project_dir() / "results" / "cache" if cache_dir is None else user_path(cache_dir)
    return _measure_card(card, path, model.to(dev), train, test, sub, eps, eps_grid, seed, prec, dev, cache, say,
                         progress)


def _measure_card(card: dict[str, Any], path: Path, model: nn.Module, train: ImageDataset, test: ImageDataset,
                  sub: ImageDataset, eps: float, grid: Sequence[float] | None, seed: int, prec: str, dev: Any,
                  cache_dir: Path | None, say: Callable[[str], None], progress: bool) -> dict[str, Any]:
    st = card["settings"]
    folder = path.parent
    x, y = torch.from_numpy(sub.float_images()), sub.labels
    _stage(card, path, "attacks", lambda: _attacks(card, path, model, x, y, eps, st["attacks"], st["n_autoattack"],
                                                   seed, prec, say, progress), say)
    _stage(card, path, "lipschitz", lambda: _lipschitz(model, x, y, eps, seed, prec, folder, progress), say)
    binned = next((a for a in ("pgd", "multitarget") if a in st["attacks"]), "clean")  # run on every point
    robust = np.asarray(load_npz(folder / "verdicts.npz")[binned], bool)
    sep = _stage(card, path, "separation",
                 lambda: {**_separation(train, test, sub, eps, cache_dir, str(dev), robust), "binned": binned}, say)
    r = sep["r"]
    radii = grid if grid is not None else default_radii(r, [eps])
    curve = _stage(card, path, "curve", lambda: _curve(model, x, y, radii, seed, prec, train, test, len(sub)), say)
    _stage(card, path, "checks", lambda: {"indicators": attack_indicators(
        model, x, y, eps=eps, n=st["n_checks"], seed=seed, precision=prec, curve=curve)}, say)
    if "certified" in card["stages"] and card["stages"]["certified"].get("certify") != METHOD:
        del card["stages"]["certified"]  # another revision's certificates: made again
    _stage(card, path, "certified", lambda: _certified(model, x, y, eps, curve["eps"], st["n_checks"], folder), say)
    card["folder"] = str(folder)
    return card
