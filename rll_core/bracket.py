"""Every empirical number of a run bracketed by a certificate: on its first test points, the local Lipschitz
constant between what rll's ascent attains (below) and :func:`rll_core.certify.lipschitz_bound` (above), and robust
accuracy between certified accuracy (below) and PGD's (above), per point and on average.

:func:`run_bracket` stores them as ``bracket-*.json`` (the row's numbers) and ``.npz`` (per point) in the run
folder, each setting its own file; the tables show ``test certified acc`` and ``test Lipschitz bound`` beside the
attacked and ascended numbers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .certify import certify
from .evaluation import paper_attack
from .measure import measure_points
from .stats import standard_error
from .storage import load_json, save_json, save_npz

__all__ = ["run_bracket"]


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
    from .runs import eval_stem, run_points

    rp = run_points(out_dir, n, checkpoint=checkpoint, eps=eps, data_dir=data_dir, device=device, precision=precision)
    ev_eps = rp.record["eps"]
    record = {**rp.record, "certify": "intervals + relaxation (rll_core.certify)"}
    path = rp.folder / f"{eval_stem(record, rp.epoch, 'bracket')}.json"
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
