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
from .checks import check_int, check_real, default_batch_size, model_device
from .evaluation import paper_attack
from .measure import measure_points
from .precision import precision_record, resolve_precision
from .stats import standard_error
from .storage import load_json, save_json, save_npz, user_path

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
    from .runs import eval_stem, restore_run, run_settings

    out = user_path(out_dir)
    check_int("n", n)
    settings = run_settings(out, checkpoint)
    run_eps = settings.get("eps", settings.get("val_eps"))
    if eps is None and run_eps is None:
        raise ValueError(f"{out} records no eps (settings.json has neither eps nor val_eps): pass eps=")
    ev_eps = check_real("eps", run_eps if eps is None else eps, lo=0, hi=1, lo_open=True)
    _, test_set, net, settings, epoch = restore_run(out, checkpoint, data_dir, device)
    dev = model_device(net)
    prec = resolve_precision(precision, dev)
    record = {"checkpoint": checkpoint, "n_eval": n, "eps": ev_eps, "seed": settings["seed"],
              "batch_size": default_batch_size(dev), "certify": "intervals + relaxation (rll_core.certify)",
              **precision_record(prec)}
    path = out / f"{eval_stem(record, epoch, 'bracket')}.json"
    if path.exists() and path.with_suffix(".npz").exists():
        return dict(load_json(path))
    sub = test_set.subset(n, seed=None)
    x, y = torch.from_numpy(sub.float_images()), sub.labels
    cert = certify(net, x, y, eps=ev_eps, batch_size=record["batch_size"])
    m = measure_points(net, x, y, eps=ev_eps, attacks=[paper_attack("pgd", ev_eps)], lipschitz=["ascent"],
                       seed=settings["seed"], batch_size=record["batch_size"], precision=prec)
    bound, found = cert["lipschitz_bound"].numpy(), m.lipschitz["ascent"]
    wrong = int((cert["certified"] & ~m.verdicts["pgd"]).sum())
    row = {"test_certified_accuracy": float(cert["certified"].mean()), "test_certified_n": int(len(sub)),
           "test_lipschitz_bound": float(np.mean(bound, dtype=np.float64)),
           "test_lipschitz_bound_se": standard_error(bound), "test_lipschitz_attained": m.lipschitz_mean(),
           "bracket_ratio": float(np.median(bound / np.maximum(found, 1e-12))), "certified_not_pgd_robust": wrong,
           "bracket": record}
    save_npz(path.with_suffix(".npz"), lipschitz_bound=bound, lipschitz_attained=found,
             margin=cert["margin"].numpy(), certified=cert["certified"], pgd=m.verdicts["pgd"])
    save_json(path, {"run": out.name, "method": settings.get("method"), "epoch": epoch, **row})
    return {"run": out.name, "method": settings.get("method"), "epoch": epoch, **row}
