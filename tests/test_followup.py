"""The measurements beyond a table's evaluation, side by side (rll_core.followup): each equals the function that
makes it called directly at one thread, each run gets what was asked of it, and bad requests are refused first."""

from __future__ import annotations

import numpy as np
import pytest

from rll_core.bracket import bracket_curve, run_bracket
from rll_core.followup import follow_up
from rll_core.indicators import run_indicators
from rll_core.pool import torch_threads
from rll_core.runs import evaluate_run, robustness_curve, train_run

RADII = [0.0, 0.05, 0.1]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("runs")
    for name, method in (("nat", "natural"), ("at", "at")):
        train_run(root / name, dataset="mnist", method=method, eps=0.1, epochs=1, n_train=96, n_test=24, n_val=8,
                  batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False, precision="fp32")
    return root


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items() if k not in ("seconds", "threads")}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.tolist() if isinstance(x, np.ndarray) else x


def test_each_measurement_equals_its_function_called_directly(two_runs, tmp_path):
    import shutil

    fresh = tmp_path / "runs"
    for name in ("nat", "at"):  # the trained weights, none of the measurement files
        (fresh / name).mkdir(parents=True)
        for f in ("settings.json", "last.pt", "best.pt", "history.json"):
            shutil.copy(two_runs / name / f, fresh / name / f)
    kw = dict(device="cpu", precision="fp32")
    got = follow_up(fresh, ["nat", "at"], radii=RADII, n_curve=12, autoattack=["at"], n_autoattack=4, n_checks=8,
                    n_certify=6, workers=2, progress=False, **kw)
    assert {k: sorted(v) for k, v in got.items()} == {"nat": ["bracket", "bracket_curve", "checks", "curve"],
                                                      "at": ["autoattack", "bracket", "bracket_curve", "checks",
                                                             "curve"]}
    with torch_threads(1):  # the workers' thread count
        for name in ("nat", "at"):
            curve = robustness_curve(two_runs / name, RADII, n_eval=12, **kw)
            assert _plain(got[name]["curve"]) == _plain(curve)
            assert _plain(got[name]["checks"]) == _plain(run_indicators(two_runs / name, n=8, curve=curve, **kw))
            assert _plain(got[name]["bracket"]) == _plain(run_bracket(two_runs / name, n=6, **kw))
            assert _plain(got[name]["bracket_curve"]) == _plain(bracket_curve(two_runs / name, n=6, **kw))
        aa = evaluate_run(two_runs / "at", attacks=("autoattack",), n_eval=4, splits=("test",), progress=False, **kw)
    assert got["at"]["autoattack"]["test_autoattack_accuracy"] == aa["test_autoattack_accuracy"]


def test_only_what_is_asked_and_refusals_before_any_work(two_runs):
    got = follow_up(two_runs, ["nat", "at"], radii=RADII, n_curve=12, curves=["at"], workers=1, progress=False,
                    device="cpu", precision="fp32")
    assert got == {"nat": {}, "at": {"curve": got["at"]["curve"]}}  # no checks: the curves asked for only
    assert follow_up(two_runs, ["nat"], workers=1, progress=False) == {"nat": {}}
    for bad, message in ((dict(autoattack=["other"]), "not among the runs: other"),
                         (dict(n_checks=-1), "n_checks must be an integer >= 0"),
                         (dict(workers=0), "workers must be an integer >= 1"),
                         (dict(radii=[0.0, 1.5]), "eps must be a finite number in \\[0, 1\\]")):
        with pytest.raises(ValueError, match=message):
            follow_up(two_runs, ["nat"], **bad)
    from rll_core.training import RunMismatchError

    with pytest.raises(RunMismatchError, match="holds no finished run"):  # before the first run's job starts
        follow_up(two_runs, ["nat", "missing"], n_certify=4, workers=1, progress=False, device="cpu")
    assert not list((two_runs / "nat").glob("bracket-last-e1-eps0p1-n4-*"))
