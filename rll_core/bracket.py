"""Every empirical number of a run bracketed by a certificate: on its first test points, the local Lipschitz
constant between what rll's ascent attains (below) and :func:`rll_core.certify.lipschitz_bound` (above), and robust
accuracy between certified accuracy (below) and PGD's (above), per point and on average.

:func:`run_bracket` stores them as ``bracket-*.json`` (the row's numbers) and ``.npz`` (per point) in the run
folder, each setting its own file; the tables show ``test certified acc`` and ``test Lipschitz bound`` beside the
attacked and ascended numbers.  :func:`bracket_curve` does the same at radii from a fiftieth of eps up to eps
(:func:`bracket_radii`): robust accuracy between certified and PGD's, the Lipschitz constant between the ascent
(:func:`rll_core.measure.lipschitz_curve`, never falling as the radius grows) and the bound, as notebook 02 shows
for the Section 4 classifier.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .certify import METHOD, certify
from .checks import check_radii, check_real
from .evaluation import paper_attack
from .measure import lipschitz_curve, measure_points, sweep_radii
from .stats import standard_error
from .storage import load_json, load_npz, save_json, save_npz

__all__ = ["BRACKET_FRACTIONS", "bracket_curve", "bracket_radii", "run_bracket"]

#: The radii of :func:`bracket_curve`, as fractions of the run's eps: where certificates still hold on networks
#: trained without them (about a tenth of MNIST's 0.1 on the `quick` models) up to the eps itself.
BRACKET_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def bracket_radii(eps: float) -> list[float]:
    """The radii of :func:`bracket_curve` at a run's ``eps``: :data:`BRACKET_FRACTIONS` of it.

    >>> bracket_radii(0.1)
    [0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
    """
    eps = check_real("eps", eps, lo=0, hi=1, lo_open=True)
    return [float(f"{f * eps:.6g}") for f in BRACKET_FRACTIONS]


def run_bracket(out_dir: str | os.PathLike[str], *, n: int = 100, checkpoint: str = "last", eps: float | None = None,
                data_dir: str | os.PathLike[str] | None = None, device: str = "auto",
                precision: str = "auto") -> dict[str, Any]:
    """The Lipschitz bracket and certified accuracy of a run folder's model on its first ``n`` test points, at the
    run's eps (or ``eps``), with the ascent and PGD from the run's seed on the same points.

    Args:
        out_dir: a folder written by :func:`rll_core.runs.train_run` or ``rll train``.
        n: test points (default 100).
        checkpoint: ``"last"`` or ``"best"``.
        eps: the radius in (0, 1] (default the run's).
        data_dir: where the run's data is (default where it was trained from).
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.
        precision: of the ascent's and PGD's steps (verdicts and ratios in fp32; the certificates are fp32).

    Returns:
        ``test_certified_accuracy`` and ``test_certified_n``; ``test_lipschitz_bound`` (mean, with ``_se``) and
        ``test_lipschitz_attained`` (the ascent's mean on the same points); ``bracket_ratio`` (the median over the
        points of bound / attained); ``certified_not_pgd_robust`` (points certified but broken by PGD: 0 unless a
        certificate is wrong); the settings.

    Raises:
        ValueError: a bad argument; UnsupportedLayerError: a layer the bounds cannot go through, named;
        RunMismatchError: no finished run, or other data.

    Example:
        >>> run_bracket("runs/at")["test_certified_accuracy"]  # doctest: +SKIP
    """
    from .runs import run_points

    rp = run_points(out_dir, n, checkpoint=checkpoint, eps=eps, data_dir=data_dir, device=device, precision=precision)
    ev_eps = rp.record["eps"]
    record, path = _bracket_file(rp)
    if path.exists() and path.with_suffix(".npz").exists():
        return dict(load_json(path))
    sub, net = rp.load()
    x, y = torch.from_numpy(sub.float_images()), sub.labels
    cert = certify(net, x, y, eps=ev_eps, batch_size=record["batch_size"])
    m = measure_points(net, x, y, eps=ev_eps, attacks=[paper_attack("pgd", ev_eps)], lipschitz=["ascent"],
                       seed=rp.settings["seed"], batch_size=record["batch_size"], precision=rp.precision)
    bound, found = cert["lipschitz_bound"].numpy(), m.lipschitz["ascent"]
    wrong = int((cert["certified"] & ~m.verdicts["pgd"]).sum())
    row = {"test_certified_accuracy": float(cert["certified"].mean()), "test_certified_n": int(len(sub)),
           "test_lipschitz_bound": float(np.mean(bound, dtype=np.float64)),
           "test_lipschitz_bound_se": standard_error(bound), "test_lipschitz_attained": m.lipschitz_mean(),
           "bracket_ratio": float(np.median(bound / np.maximum(found, 1e-12))), "certified_not_pgd_robust": wrong,
           "bracket": record}
    save_npz(path.with_suffix(".npz"), lipschitz_bound=bound, lipschitz_attained=found,
             margin=cert["margin"].numpy(), certified=cert["certified"], pgd=m.verdicts["pgd"])
    head = {"run": rp.folder.name, "method": rp.settings.get("method"), "epoch": rp.epoch}
    save_json(path, {**head, **row})
    return {**head, **row}


def _bracket_file(rp: Any) -> tuple[dict[str, Any], Path]:
    """:func:`run_bracket`'s settings and its ``.json`` file for the points ``rp`` (:func:`rll_core.runs.run_points`)."""
    from .runs import eval_stem

    record = {**rp.record, "certify": METHOD}
    return record, rp.folder / f"{eval_stem(record, rp.epoch, 'bracket')}.json"


def bracket_curve(out_dir: str | os.PathLike[str], *, n: int = 25, radii: Sequence[float] | None = None,
                  checkpoint: str = "last", data_dir: str | os.PathLike[str] | None = None, device: str = "auto",
                  precision: str = "auto") -> dict[str, Any]:
    """Both brackets of a run folder's model at several radii, on its first ``n`` test points.

    Per radius, on the same points: certified accuracy (:func:`rll_core.certify.certify`, a lower bound of robust
    accuracy) and PGD's accuracy (the paper's PGD there, an upper bound); the mean certified Lipschitz bound and the
    mean of :func:`rll_core.measure.lipschitz_curve` (a ratio attained in the ball, never falling as it grows),
    and the median over the points of their ratio.  Stored as ``bracket-curve-*.json`` with an ``.npz`` of the
    per-point values (one row per radius) in the run folder; a finished one is read back.

    Args:
        out_dir: a folder written by :func:`rll_core.runs.train_run` or ``rll train``.
        n: test points (default 25).
        radii: radii in (0, 1], distinct (default :func:`bracket_radii` of the run's eps); sorted ascending.
        checkpoint, data_dir, device, precision: as for :func:`run_bracket`.

    Returns:
        ``eps`` (the radii), ``certified``, ``pgd``, ``lipschitz_bound``, ``lipschitz_attained``, ``bracket_ratio``
        (one value per radius), ``n``, ``certified_not_pgd_robust`` (points certified but broken by PGD, over all
        radii: 0 unless a certificate is wrong), ``run``, ``method``, ``epoch`` and the settings (``bracket``).

    Raises:
        ValueError: a bad size or radius; UnsupportedLayerError: a layer the bounds cannot go through, named;
        RunMismatchError: no finished run, or other data.

    Example:
        >>> c = bracket_curve("runs/at")  # doctest: +SKIP
        >>> list(zip(c["eps"], c["certified"], c["pgd"]))  # doctest: +SKIP
    """
    from .runs import eval_stem, run_points

    rp = run_points(out_dir, n, checkpoint=checkpoint, data_dir=data_dir, device=device, precision=precision)
    grid = check_radii(bracket_radii(rp.record["eps"]) if radii is None else radii)
    record = {**rp.record, "radii": grid, "certify": METHOD,
              "lipschitz": "lipschitz_curve"}
    path = rp.folder / f"{eval_stem(record, rp.epoch, 'bracket-curve')}.json"
    if path.exists() and path.with_suffix(".npz").exists():
        return dict(load_json(path))
    sub, net = rp.load()
    x, y = torch.from_numpy(sub.float_images()), sub.labels
    seed, bs = rp.settings["seed"], record["batch_size"]
    # at the run's eps run_bracket has made the same certificates and PGD verdicts on these points (same calls,
    # seed and batch size: the same bits); where its file is there they are read, not made twice
    done = _bracket_file(rp)[1].with_suffix(".npz")
    certs: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # radius -> (certified, Lipschitz bound) per point
    verdicts: dict[float, np.ndarray] = {}  # radius -> PGD's verdict per point
    if done.exists() and rp.record["eps"] in grid:
        known = load_npz(done)
        certs[rp.record["eps"]] = (known["certified"], known["lipschitz_bound"])
        verdicts[rp.record["eps"]] = known["pgd"]
    fresh = [e for e in grid if e not in verdicts]
    for e in fresh:
        c = certify(net, x, y, eps=e, batch_size=bs)
        certs[e] = (c["certified"], c["lipschitz_bound"].numpy())
    verdicts.update(zip(fresh, sweep_radii(net, x, y, fresh, seed=seed, batch_size=bs, precision=rp.precision),
                        strict=True))
    certified = np.stack([certs[e][0] for e in grid])
    bound = np.stack([certs[e][1] for e in grid])
    pgd = np.stack([verdicts[e] for e in grid])
    found = lipschitz_curve(net, x, grid, seed=seed, batch_size=bs, precision=rp.precision).numpy().T
    save_npz(path.with_suffix(".npz"), eps=np.array(grid), certified=certified, pgd=pgd, lipschitz_bound=bound,
             lipschitz_attained=found)
    out = {"run": rp.folder.name, "method": rp.settings.get("method"), "epoch": rp.epoch, "eps": grid,
           "n": int(len(sub)), "certified": certified.mean(1).tolist(), "pgd": pgd.mean(1).tolist(),
           "lipschitz_bound": bound.mean(1, dtype=np.float64).tolist(),
           "lipschitz_attained": found.mean(1, dtype=np.float64).tolist(),
           "bracket_ratio": np.median(bound / np.maximum(found, 1e-12), axis=1).tolist(),
           "certified_not_pgd_robust": int((certified & ~pgd).sum()), "bracket": record}
    save_json(path, out)
    return out
