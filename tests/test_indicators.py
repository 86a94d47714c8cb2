"""Attack-failure indicators: each fires on a model made to trip it and stays quiet on a sound one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from rll_core.evaluation import paper_attack
from rll_core.indicators import (
    INDICATORS,
    MASKED_MAX,
    UNBOUNDED_MAX,
    attack_indicators,
    indicator_summary,
    monotone_indicator,
    run_indicators,
)

pytest.importorskip("torchattacks")  # the gradient-free indicator is Square


class Saturated(nn.Module):
    """A sound network whose logits are scaled by 1e4: the softmax of every confident point is exactly one-hot in
    fp32, so the cross-entropy's input gradient is exactly 0 there (masked, not robust)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e4 * self.net(x)


class Quantized(nn.Module):
    """A sound network behind a non-differentiable input quantisation (4 grey levels): its input gradient is 0
    almost everywhere, so gradient attacks stall while the network itself is as fragile as before."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 3) / 3)


def _by_name(indicators):
    return {i["indicator"]: i for i in indicators}


def test_a_sound_model_raises_no_warning(fmnist_small_model):
    model, x, y = fmnist_small_model
    got = _by_name(attack_indicators(model, x, y, eps=0.1, n=40, precision="fp32"))
    assert list(got) == list(INDICATORS[:4])
    assert all(i["verdict"] == "ok" for i in got.values()), got
    assert got["unbounded"]["value"] <= UNBOUNDED_MAX and got["masked gradients"]["value"] == 0.0
    assert got["more effort"]["evidence"]["strong"] <= got["more effort"]["evidence"]["base"] + 1e-12
    assert indicator_summary(got.values()) == "ok"


def test_a_model_that_masks_its_gradients_is_caught(fmnist_small_model):
    model, x, y = fmnist_small_model
    got = _by_name(attack_indicators(Quantized(model), x, y, eps=0.1, n=40, precision="fp32"))
    assert got["masked gradients"]["verdict"] == "warning" and got["masked gradients"]["value"] > MASKED_MAX
    assert got["unbounded"]["verdict"] == "warning"  # PGD at eps 0.5 cannot move it: the attack failed, not the model
    # Square reads outputs only: it breaks points PGD could not move, each one a point PGD left robust
    free = got["gradient-free"]
    assert free["verdict"] == "warning" and free["value"] > free["limit"]
    assert set(free["evidence"]["broken_only_by_square"]) <= set(range(40)) and free["evidence"]["attacked"] > 0
    assert all(len(i["text"].splitlines()) == 1 for i in got.values())
    assert indicator_summary(got.values()).startswith("warning: unbounded, masked gradients, gradient-free")


def test_saturated_logits_mask_the_gradients(fmnist_small_model):
    model, x, y = fmnist_small_model
    got = _by_name(attack_indicators(Saturated(model), x, y, eps=0.1, n=40, precision="fp32"))
    assert got["masked gradients"]["verdict"] == "warning", got["masked gradients"]
    assert _by_name(attack_indicators(model, x, y, eps=0.1, n=40, precision="fp32"))["masked gradients"][
        "verdict"] == "ok"


def test_a_too_weak_evaluation_attack_is_caught_by_more_effort(fmnist_small_model):
    """One PGD step of eps / 20 is not an attack: 50 steps with restarts break far more points than its interval."""
    model, x, y = fmnist_small_model
    weak = paper_attack("pgd", 0.1, steps=1, step_size=0.005, random_start=False)
    got = _by_name(attack_indicators(model, x, y, eps=0.1, n=40, precision="fp32", attack=weak))
    effort = got["more effort"]
    assert effort["verdict"] == "warning" and effort["value"] > effort["limit"] > 0
    assert effort["value"] == pytest.approx(effort["evidence"]["base"] - effort["evidence"]["strong"])
    with pytest.raises(ValueError, match="^attack must be a PGD at eps 0.1, got multitarget at eps 0.1$"):
        attack_indicators(model, x, y, eps=0.1, attack=paper_attack("multitarget", 0.1))


def test_accuracy_rising_with_eps_beyond_its_interval_is_a_warning():
    assert monotone_indicator([0.0, 0.1, 0.2], [0.9, 0.5, 0.2], 100)["verdict"] == "ok"
    assert monotone_indicator([0.0, 0.1, 0.2], [0.9, 0.50, 0.52], 100)["verdict"] == "ok"  # inside its interval
    w = monotone_indicator([0.0, 0.1, 0.2], [0.9, 0.3, 0.6], 100)
    assert w["verdict"] == "warning" and w["value"] == pytest.approx(0.3) and "0.1 and 0.2" in w["text"]


def test_a_run_folder_s_indicators_are_stored_and_read_back(tmp_path, mnist):
    from rll_core.runs import robustness_curve, train_run

    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="natural", eps=0.1, epochs=1, n_train=128, n_test=32, n_val=8,
              batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    curve = robustness_curve(run, [0.0, 0.1, 0.2], n_eval=16, device="cpu")
    got = run_indicators(run, n=16, curve=curve, device="cpu")
    assert [i["indicator"] for i in got] == list(INDICATORS)
    files = list(run.glob("checks-last-e1-eps0p1-n16-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["checks"]["n_eval"] == 16 and stored["indicators"] == got[:4]  # the curve's is not stored
    files[0].write_text(json.dumps({**stored, "indicators": [{**got[0], "verdict": "from the file"}]}))
    import rll_core.runs

    def no_load(*_a, **_k):
        raise AssertionError("the model and data were loaded for a stored result")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rll_core.runs, "_restore", no_load)  # a stored result needs neither the data nor the model
        assert run_indicators(run, n=16, device="cpu")[0]["verdict"] == "from the file"  # read back, not re-measured
    assert len(list(run.glob("checks-*.json"))) == 1
    run_indicators(run, n=8, device="cpu")
    assert len(list(run.glob("checks-*.json"))) == 2  # another n: a file of its own
    # the evidence names evaluated points
    assert all(0 <= p < 16 for p in got[0]["evidence"]["robust_points"])
    assert np.isfinite(got[1]["value"])


def test_the_figure_colours_each_warning_and_refuses_rows_without_checks():
    from matplotlib.colors import to_hex

    from rll_core.plotting import plot_indicators
    from rll_core.plotting.checks import _COLORS

    def ind(name, verdict, value):
        return {"indicator": name, "verdict": verdict, "value": value, "limit": 0.1, "n": 50, "evidence": {}, "text": ""}

    rows = [{"label": "natural", "indicators": [ind("unbounded", "ok", 0.0), ind("masked gradients", "ok", 0.0)]},
            {"label": "GR", "indicators": [ind("unbounded", "ok", 0.02), ind("masked gradients", "warning", 0.4)]},
            {"label": "no checks"}]
    fig = plot_indicators(rows)
    ax = fig.axes[0]
    colours = [to_hex(p.get_facecolor()) for p in ax.patches]
    assert colours == [_COLORS["ok"]] * 3 + [_COLORS["warning"]]  # row by row; the unchecked row left out
    assert [t.get_text() for t in ax.texts] == ["0.00", "0%", "0.02", "40%"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["natural", "GR"]
    assert "checks on the first 50 test points" in ax.get_xlabel()
    with pytest.raises(ValueError, match="no row carries attack-failure indicators"):
        plot_indicators([{"label": "x"}])
