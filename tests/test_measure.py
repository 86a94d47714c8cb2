"""The one measurement room (rll_core.measure): equal to the kernels called directly, its statistics written
out, its random streams on the model's device, and the floors above it (evaluations, curves, the Section 4 row,
the card) going through it and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rll_core.measure as measure
from rll_core.evaluation import evaluate, paper_attack
from rll_core.lipschitz import local_lipschitz
from rll_core.measure import measure_points, sweep_radii
from rll_core.stats import standard_error, wilson_interval

from .conftest import requires_cuda


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


@pytest.fixture
def points(mnist):
    sub = mnist[1].subset(24, seed=None)
    return torch.from_numpy(sub.float_images()), sub.labels


def test_measure_points_equals_evaluate_and_local_lipschitz_called_directly(points):
    x, y = points
    net = _net()
    m = measure_points(net, x, y, eps=0.1, attacks=["pgd", "multitarget"], lipschitz=["ascent", "reference"], seed=3,
                       batch_size=16, precision="fp32", return_inputs=True)
    direct = evaluate(net, x, y, eps=0.1, attacks=("pgd", "multitarget"), seed=3, batch_size=16, progress=False,
                      precision="fp32")
    assert m.n == 24 and set(m.verdicts) == {"clean", "pgd", "multitarget"}
    for k, v in direct.correct.items():
        assert np.array_equal(m.verdicts[k], v), k
        assert m.accuracy(k) == float(v.mean())
        assert m.interval(k) == list(wilson_interval(float(v.mean()), 24))
    assert m.attacks == direct.attacks
    for proc in ("ascent", "reference"):
        v, at = local_lipschitz(net, x, eps=0.1, procedure=proc, batch_size=16, precision="fp32",
                                generator=torch.Generator().manual_seed(3), return_inputs=True)
        assert np.array_equal(m.lipschitz[proc], v.numpy()), proc
        assert m.lipschitz_mean(proc) == pytest.approx(float(v.numpy().astype(np.float64).mean()), rel=1e-15)
        # the standard error written out: sample standard deviation (n - 1) over sqrt(n)
        w = v.numpy().astype(np.float64)
        assert m.lipschitz_se(proc) == pytest.approx(float(np.sqrt(((w - w.mean()) ** 2).sum() / 23) / np.sqrt(24)),
                                                     rel=1e-12)
        if proc == "ascent":
            assert np.array_equal(m.inputs, at.numpy())
    with pytest.raises(ValueError, match="return_inputs needs the ascent"):
        measure_points(net, x, y, eps=0.1, lipschitz=["reference"], return_inputs=True)


def test_standard_error_of_the_mean():
    assert standard_error([2.0]) == 0.0 and standard_error([]) == 0.0
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.sqrt(5 / 3) / 2)


def test_sweep_radii_is_pgd_at_each_radius_and_clean_at_zero(points):
    x, y = points
    net = _net(1)
    swept = sweep_radii(net, x, y, [0.0, 0.05, 0.1], seed=2, batch_size=16, precision="fp32")
    clean = evaluate(net, x, y, eps=0.1, attacks=(), seed=2, batch_size=16, progress=False).correct["clean"]
    assert np.array_equal(swept[0], clean)
    for v, e in zip(swept[1:], (0.05, 0.1), strict=True):
        pgd = evaluate(net, x, y, eps=e, attacks=[paper_attack("pgd", e)], seed=2, batch_size=16, progress=False,
                       precision="fp32").correct["pgd"]
        assert np.array_equal(v, pgd) and not np.any(v & ~clean)  # robust implies correct


def test_every_lipschitz_generator_lives_on_the_models_device(points, monkeypatch):
    """The card once seeded a CPU generator beside a model on the GPU; the room seeds on the model's device."""
    x, y = points
    net = _net()
    seen = []
    real = measure.local_lipschitz

    def spy(model, xs, **kw):
        seen.append((kw["generator"].device, next(model.parameters()).device))
        return real(model, xs, **kw)

    monkeypatch.setattr(measure, "local_lipschitz", spy)
    measure_points(net, x, y, eps=0.1, lipschitz=["ascent", "reference"])
    assert len(seen) == 2 and all(g == d for g, d in seen)


@requires_cuda
def test_measure_points_on_cuda(points):
    x, y = points
    m = measure_points(_net().cuda(), x, y, eps=0.1, attacks=["pgd"], lipschitz=["ascent", "reference"],
                       return_inputs=True)
    assert m.n == 24 and m.inputs is not None and m.inputs.shape == tuple(x.shape)


def test_the_floors_attack_and_estimate_only_through_the_room():
    """No module above the kernels calls evaluate or local_lipschitz itself (the copies that drifted)."""
    import ast
    from pathlib import Path

    root = Path(measure.__file__).parent
    callers = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        used = names & {"evaluate", "local_lipschitz"}
        if used:
            callers[str(path.relative_to(root))] = sorted(used)
    # the room, and training's validation pass (PGD accuracy on held-out points after each epoch, inside training)
    assert callers == {"measure.py": ["evaluate", "local_lipschitz"], "training.py": ["evaluate"]}, callers


def test_the_worst_case_over_attacks_is_the_per_point_minimum(points, tmp_path):
    """A point is robust only if no attack broke it: the worst-case accuracy never exceeds any attack's and
    equals the mean of the per-point AND; stored rows get it, and rows read back from an older file too."""
    from rll_core.data import ImageDataset
    from rll_core.measure import add_worst_case, measure_splits, worst_case

    v = {"clean": np.array([1, 1, 1, 1, 0], bool), "pgd": np.array([1, 1, 0, 0, 0], bool),
         "multitarget": np.array([1, 0, 1, 0, 0], bool)}
    assert worst_case(v).tolist() == [True, False, False, False, False]  # not broken by either attack: point 0 only
    x, y = points
    net = _net(2)
    m = measure_points(net, x, y, eps=0.2, attacks=["pgd", "multitarget"], seed=1, precision="fp32")
    w = worst_case(m.verdicts)
    assert np.array_equal(w, m.verdicts["pgd"] & m.verdicts["multitarget"])
    assert w.mean() <= min(m.accuracy("pgd"), m.accuracy("multitarget"))
    assert worst_case({"clean": m.verdicts["clean"], "pgd": m.verdicts["pgd"]}) is None
    ds = ImageDataset("t", "test", (x.numpy() * 255).round().astype(np.uint8), np.asarray(y))
    row: dict = {}
    specs = {"train": [paper_attack("pgd", 0.2)], "test": [paper_attack("pgd", 0.2), paper_attack("multitarget", 0.2)]}
    arrays = measure_splits(row, net, {"train": ds, "test": ds}, specs,
                            {"n_eval": 24, "eps": 0.2, "lipschitz_steps": 2, "batch_size": 16, "precision": "fp32"},
                            seed=1, progress=False, lipschitz=())
    assert row["test_worst_accuracy"] == float((arrays["test_pgd"] & arrays["test_multitarget"]).mean())
    assert "train_worst_accuracy" not in row  # one attack on train: its own verdicts are the worst case
    older = {k: v for k, v in row.items() if not k.endswith("_worst_accuracy")}
    assert add_worst_case(older, arrays, ["train", "test"])["test_worst_accuracy"] == row["test_worst_accuracy"]
