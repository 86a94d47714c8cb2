"""What a table measures on its finished runs beyond their evaluation, side by side: AutoAttack on a few rows,
each run's robustness curve, its attack checks (:mod:`rll_core.indicators`) and its certified bracket
(:mod:`rll_core.bracket`), one job per run and measurement in the workers of :mod:`rll_core.pool`.

Each measurement is stored in its run folder by the function that makes it, so a job that finds its file reads it
back.  A job in a worker runs at one torch thread, so its numbers are those of one thread (the thread count is part
of "same seed, same bits": see :mod:`rll_core.pool`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .bracket import bracket_curve, run_bracket
from .checks import check_int, check_real, resolve_device
from .indicators import indicator_summary, run_indicators
from .pool import default_workers, run_jobs
from .progress import progress_bar
from .runs import evaluate_run, robustness_curve, run_settings
from .stats import readable
from .storage import user_path

__all__ = ["KINDS", "follow_up"]

#: The measurements, the longest first: AutoAttack costs seconds per robust point, the checks run four attacks
#: after the curve, the bracket one bound propagation and an ascent.
KINDS = ("autoattack", "checks", "curve", "bracket")


def follow_up(runs_dir: str | os.PathLike[str], runs: Sequence[str], *, radii: Sequence[float] = (),
              n_curve: int = 100, autoattack: Sequence[str] = (), n_autoattack: int = 25, n_checks: int = 0,
              n_certify: int = 0, curves: Sequence[str] | None = None, data_dir: str | os.PathLike[str] | None = None,
              device: str = "auto", precision: str = "auto", workers: int | None = None,
              progress: bool = True) -> dict[str, dict[str, Any]]:
    """Every measurement asked for, of every run in ``runs``, in ``workers`` processes (the longest first).

    Args:
        runs_dir: the folder of the run folders.
        runs: run folder names (rows' ``run``).
        radii: the robustness curves' radii (:func:`rll_core.runs.robustness_curve`); default none (no curves).
        n_curve: the curves' test points (default 100).
        autoattack: the runs evaluated with AutoAttack, on their first ``n_autoattack`` test points (default none).
        n_autoattack: (default 25).
        n_checks: the attack checks on the first ``n_checks`` test points of every run, with its curve's
            monotonicity where ``radii`` are given (:func:`rll_core.indicators.run_indicators`; default 0: none).
        n_certify: the certified bracket on the first ``n_certify`` test points of every run, at its eps
            (:func:`rll_core.bracket.run_bracket`) and against the radius (:func:`rll_core.bracket.bracket_curve`);
            default 0: none.
        curves: the runs whose robustness curve is measured (default: every run in ``runs``); a run that is
            checked gets its curve in any case.
        data_dir, device, precision: as for :func:`rll_core.runs.evaluate_run`.
        workers: processes of one torch thread each (default None: one per core, one on a GPU; 1: here).
        progress: a bar over the jobs and one line per finished job (default True).

    Returns:
        ``{run: {kind: result}}`` for every run of ``runs`` and each :data:`KINDS` asked of it: ``autoattack``
        (:func:`~rll_core.runs.evaluate_run`'s row), ``curve`` (the curve), ``checks`` (the indicators) and
        ``bracket`` and ``bracket_curve`` (:func:`~rll_core.bracket.run_bracket`'s and
        :func:`~rll_core.bracket.bracket_curve`'s dicts).

    Raises:
        ValueError: a bad size, radius or worker count, an AutoAttack run not in ``runs``, before any work;
            RunMismatchError: a folder without a finished run, before any work; whatever a measurement raises.

    Example:
        >>> out = follow_up("results/runs", [r["run"] for r in rows], radii=[0, 0.05, 0.1], n_checks=50)  # doctest: +SKIP
        >>> out[rows[0]["run"]]["checks"]  # doctest: +SKIP
    """
    for name, n in (("n_curve", n_curve), ("n_autoattack", n_autoattack)):
        check_int(name, n)
    for name, n in (("n_checks", n_checks), ("n_certify", n_certify)):
        check_int(name, n, lo=0)
    for e in radii:  # as robustness_curve checks them, but before any job starts
        check_real("eps", e, lo=0, hi=1)
    root = user_path(runs_dir)
    runs = list(runs)
    stray = sorted(set(autoattack) - set(runs)) + sorted(set(curves or ()) - set(runs))
    if stray:
        raise ValueError(f"runs asked for a measurement are not among the runs: {', '.join(stray)}")
    for r in runs:  # a folder without a finished run: refused here, not in a worker after other jobs began
        run_settings(root / r)
    with_curve = set(runs if curves is None else curves)  # a checked run gets its curve from its checks' job
    with_autoattack = set(autoattack)
    common: dict[str, Any] = {"data_dir": data_dir, "device": device, "precision": precision}
    jobs: list[dict[str, Any]] = [{"kind": "autoattack", "run": r, "n": n_autoattack, **common}
                                  for r in runs if r in with_autoattack]
    jobs += [{"kind": "checks", "run": r, "n": n_checks, "radii": list(radii), "n_curve": n_curve, **common}
             for r in runs if n_checks]
    jobs += [{"kind": "curve", "run": r, "radii": list(radii), "n_curve": n_curve, **common}
             for r in runs if radii and not n_checks and r in with_curve]
    jobs += [{"kind": "bracket", "run": r, "n": n_certify, **common} for r in runs if n_certify]
    for j in jobs:
        j["folder"] = str(root / j["run"])
    n_workers = default_workers(len(jobs), resolve_device(device)) if workers is None else check_int("workers", workers)
    bar = progress_bar(total=len(jobs), desc="measurements", disable=not progress or not jobs, unit="job")

    def done(i: int, result: dict[str, Any]) -> None:
        bar.update(1)
        if progress:
            bar.write(f"{jobs[i]['run']}: {_summary(jobs[i]['kind'], result)} ({result['seconds']:.0f} s)")

    results = run_jobs(_job, jobs, workers=n_workers, on_done=done)
    bar.close()
    out: dict[str, dict[str, Any]] = {r: {} for r in runs}
    for job, result in zip(jobs, results, strict=True):
        out[job["run"]].update({k: v for k, v in result.items() if k != "seconds"})
    return out


def _job(job: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement of one run (a worker's job): ``{kind: result}`` (a check also gives its curve), seconds."""
    t0 = time.perf_counter()
    folder, kind = Path(job["folder"]), job["kind"]
    common = {k: job[k] for k in ("data_dir", "device", "precision")}
    out: dict[str, Any] = {}
    if kind == "autoattack":
        out["autoattack"] = evaluate_run(folder, attacks=("autoattack",), n_eval=job["n"], splits=("test",),
                                         progress=False, **common)
    elif kind in ("checks", "curve"):
        curve = robustness_curve(folder, job["radii"], n_eval=job["n_curve"], **common) if job["radii"] else None
        if curve is not None:
            out["curve"] = curve
        if kind == "checks":
            out["checks"] = run_indicators(folder, n=job["n"], curve=curve, **common)
    else:
        out["bracket"] = run_bracket(folder, n=job["n"], **common)
        out["bracket_curve"] = bracket_curve(folder, n=job["n"], **common)
    return {**out, "seconds": time.perf_counter() - t0}


def _summary(kind: str, result: Mapping[str, Any]) -> str:
    """One line on a finished job, for a headless log."""
    if kind == "autoattack":
        r = result["autoattack"]
        return f"AutoAttack {r['test_autoattack_accuracy']:.2f} on {r['test_n']} test points"
    if kind == "checks":
        return f"attack checks {indicator_summary(result['checks'])}"
    if kind == "curve":
        return f"robustness curve at {len(result['curve']['eps'])} radii"
    b = result["bracket"]
    return (f"certified {b['test_certified_accuracy']:.2f}, Lipschitz {readable(b['test_lipschitz_attained'])} <= true <= "
            f"{readable(b['test_lipschitz_bound'])} on {b['test_certified_n']} points")
