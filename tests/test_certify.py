"""Certified bounds: sound against brute force, exact where the network is linear, never below what the ascent and
the attacks find, the Jacobian's norm in the limit; unsupported layers refused in one line."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from rll_core.certify import (
    ChannelAffine,
    UnsupportedLayerError,
    certified_margin,
    certify,
    layers_of,
    lipschitz_bound,
)
from rll_core.lipschitz import local_lipschitz
from rll_core.measure import measure_points


def _inf_to_one(jac: torch.Tensor) -> torch.Tensor:
    """||J||_{inf->1} of each (K, D) Jacobian, written out: the largest ||J^T u||_1 over every u in {-1, 1}^K."""
    k = jac.shape[-2]
    signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=k)), dtype=jac.dtype)
    return (signs @ jac).abs().sum(-1).amax(-1)


def _jacobians(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The Jacobian of the logits at every row of ``z``, (N, K, D)."""
    jac = torch.func.vmap(torch.func.jacrev(lambda v: model(v[None])[0]))(z)
    return jac.reshape(len(z), jac.shape[1], -1)


def _mlp(seed: int, sizes=(2, 8, 8, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def test_the_bound_is_exact_on_a_linear_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    x = 0.3 + 0.4 * torch.rand(5, 1, 3, 4)  # the 0.1-ball lies inside [0, 1]: every direction is allowed
    exact = _inf_to_one(net[1].weight.detach()[None])[0]
    got = lipschitz_bound(net, x, eps=0.1)
    assert torch.allclose(got, exact.expand(5), rtol=1e-4)
    # the true constant, brute force: the ratio is largest at a vertex of the ball (4,096 of them)
    vertices = torch.tensor(list(itertools.product((1.0, -1.0), repeat=12))).reshape(-1, 1, 3, 4) * 0.1
    with torch.no_grad():
        true = (net(x[0] + vertices) - net(x[:1])).abs().sum(1).max() / 0.1
    assert float(got[0]) == pytest.approx(float(true), rel=1e-4)
    found = local_lipschitz(net, x, eps=0.1, precision="fp32", generator=torch.Generator().manual_seed(0))
    assert bool((found <= got).all())


@pytest.mark.parametrize("seed", range(4))
def test_no_jacobian_in_the_ball_exceeds_the_bound_on_small_relu_networks(seed):
    """Dense sampling of the ball (a 61 x 61 grid of a 2-D input) gives the largest Jacobian norm there from
    below; the bound must be above it (and above every ratio of the ball's points to the centre)."""
    net = _mlp(seed)
    x = torch.tensor([[0.4, 0.55], [0.5, 0.5], [0.25, 0.7]])
    for eps in (0.05, 0.2):
        bound = lipschitz_bound(net, x, eps=eps)
        g = torch.linspace(-eps, eps, 61)
        grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        for i in range(len(x)):
            z = (x[i] + grid).clamp(0, 1)
            with torch.no_grad():
                jmax = _inf_to_one(_jacobians(net, z)).max()
                z64, x64, net64 = z.double(), x[i:i + 1].double(), copy.deepcopy(net).double()  # no cancellation
                d = (z64 - x64).abs().amax(1)
                keep = d > 0
                ratio = ((net64(z64[keep]) - net64(x64)).abs().sum(1) / d[keep]).max()
            assert float(bound[i]) >= float(jmax) and float(bound[i]) >= float(ratio)


def test_no_jacobian_in_the_ball_exceeds_the_bound_through_convolutions_and_max_pooling():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.rand(3, 1, 4, 4)
    x[0, 0, 0] = 0.0  # a row of pixels at the floor: the ball only goes up there
    bound = lipschitz_bound(net, x, eps=0.05)
    gen = torch.Generator().manual_seed(0)
    for i in range(len(x)):
        z = (x[i] + 0.05 * (2 * torch.rand((20000, 1, 4, 4), generator=gen) - 1)).clamp(0, 1)
        with torch.no_grad():
            jmax = _inf_to_one(_jacobians(net, z)).max()
        assert float(bound[i]) >= float(jmax)


def test_the_bound_is_never_below_the_ascent_on_a_trained_network(fmnist_small_model):
    model, x, y = fmnist_small_model
    for eps in (0.01, 0.1):
        found = local_lipschitz(model, x[:30], eps=eps, precision="fp32", generator=torch.Generator().manual_seed(0))
        bound = lipschitz_bound(model, x[:30], eps=eps)
        assert bool((bound >= found).all()), (eps, float((bound - found).min()))


def test_the_bound_tends_to_the_jacobian_norm_as_the_ball_shrinks():
    net = _mlp(7, (6, 16, 16, 4))
    x = 0.2 + 0.6 * torch.rand(4, 6)  # inside (0, 1): every direction is allowed as eps -> 0
    exact = _inf_to_one(_jacobians(net, x).detach())
    assert torch.allclose(lipschitz_bound(net, x, eps=0.0), exact, rtol=1e-4)
    assert torch.allclose(lipschitz_bound(net, x, eps=1e-6), exact, rtol=1e-3)
    wide = lipschitz_bound(net, x, eps=0.1)
    assert bool((wide >= exact * (1 - 1e-5)).all())


def test_a_certified_point_is_robust_under_pgd_and_its_margin_is_below_the_true_one(fmnist_small_model):
    model, x, y = fmnist_small_model
    xs, ys = x[:60], y[:60]
    for eps in (0.005, 0.02):
        c = certify(model, xs, ys, eps=eps)
        m = measure_points(model, xs, ys, eps=eps, attacks=["pgd"], precision="fp32")
        assert c["certified"].any() or eps > 0.01  # some points are certified at the smallest radius
        assert not (c["certified"] & ~m.verdicts["pgd"]).any()  # certified <= attacked, point by point
        assert c["certified"].mean() <= m.accuracy("pgd")
        with torch.no_grad():
            z = model(xs)
        true = z.gather(1, ys[:, None].long())[:, 0] - z.scatter(1, ys[:, None].long(), float("-inf")).amax(1)
        assert bool((c["margin"] <= true + 1e-4).all())  # the ball holds x itself
    assert torch.equal(certified_margin(model, xs[:5], ys[:5], eps=0.02), certify(model, xs[:5], ys[:5], eps=0.02)["margin"])


def test_a_normalising_layer_in_front_is_bounded_as_the_composition():
    from rll_core.card import Normalized

    net = _mlp(1, (4, 8, 3))
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    wrapped = Normalized(nn.Sequential(nn.Flatten(), *net), mean, std).eval()
    x = 0.3 + 0.4 * torch.rand(3, 1, 2, 2)
    by_hand = nn.Sequential(ChannelAffine(1 / std, -mean / std), nn.Flatten(), *net).eval()
    assert torch.allclose(lipschitz_bound(wrapped, x, eps=0.05), lipschitz_bound(by_hand, x, eps=0.05))
    assert [type(m).__name__ for m in layers_of(wrapped)][:2] == ["ChannelAffine", "Flatten"]


def test_an_unsupported_layer_is_refused_in_one_line_naming_it():
    with pytest.raises(UnsupportedLayerError, match=r"^cannot bound layer 2 \(Tanh\): supported are"):
        layers_of(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Tanh()))
    from rll_core.models import build_model

    with pytest.raises(UnsupportedLayerError, match=r"cannot bound layer \(the model\) \(WideResNet\)"):
        lipschitz_bound(build_model("wrn-16-4", in_channels=3, num_classes=10, image_size=32), torch.rand(1, 3, 32, 32),
                        eps=0.1)
    with pytest.raises(UnsupportedLayerError, match="overlapping windows"):
        layers_of(nn.Sequential(nn.MaxPool2d(3, 2)))
    with pytest.raises(ValueError, match="eps"):
        lipschitz_bound(_mlp(0), torch.rand(2, 2), eps=1.5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):  # checked before any bound
        certify(_mlp(0), torch.rand(2, 2), torch.tensor([0, 7]), eps=0.1)
    assert len(layers_of(build_model("cnn001", in_channels=1, num_classes=10, image_size=28))) == 8  # dropouts dropped
    assert np.isfinite(lipschitz_bound(build_model("cnn002", in_channels=1, num_classes=10, image_size=28),
                                       torch.rand(1, 1, 28, 28), eps=0.1).numpy()).all()


def test_a_run_s_bracket_is_stored_and_holds_the_attained_value_and_pgd(tmp_path, mnist):
    import json

    from rll_core.bracket import run_bracket
    from rll_core.runs import train_run

    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="natural", eps=0.02, epochs=1, n_train=128, n_test=32, n_val=8,
              batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    b = run_bracket(run, n=16, device="cpu")
    (path,) = run.glob("bracket-last-e1-eps0p02-n16-*.json")
    arrays = np.load(path.with_suffix(".npz"))
    assert (arrays["lipschitz_bound"] >= arrays["lipschitz_attained"]).all()  # ascent <= true <= bound
    assert not (arrays["certified"] & ~arrays["pgd"]).any() and b["certified_not_pgd_robust"] == 0
    assert b["test_certified_accuracy"] == arrays["certified"].mean() <= arrays["pgd"].mean()
    assert b["test_lipschitz_bound"] == pytest.approx(arrays["lipschitz_bound"].mean())
    assert b["bracket_ratio"] == pytest.approx(np.median(arrays["lipschitz_bound"] / arrays["lipschitz_attained"]))
    path.write_text(json.dumps({**json.loads(path.read_text()), "test_certified_accuracy": -1.0}))
    assert run_bracket(run, n=16, device="cpu")["test_certified_accuracy"] == -1.0  # read back, not re-measured
    # bracket_curve made apart from run_bracket's file (a copy of the run without it) gives the same bits: reading
    # that file at the run's eps, as the curve beside it does, changes nothing
    import shutil

    alone = tmp_path / "alone"
    shutil.copytree(run, alone, ignore=shutil.ignore_patterns("bracket-*"))
    from rll_core.bracket import bracket_curve

    bracket_curve(alone, n=16, device="cpu")
    bracket_curve(run, n=16, device="cpu")
    (mine,) = alone.glob("bracket-curve-*.npz")
    (beside,) = run.glob("bracket-curve-*.npz")
    apart, reused = np.load(mine), np.load(beside)
    assert all(np.array_equal(apart[k], reused[k]) for k in ("certified", "pgd", "lipschitz_bound",
                                                            "lipschitz_attained"))
    _check_bracket_curve(run, arrays)


def _check_bracket_curve(run, at_eps) -> None:
    """bracket_curve on the same run: both brackets hold at every radius, point by point; the ascent's column never
    falls as the radius grows; at the run's eps it repeats run_bracket's certificates and PGD verdicts."""
    import json

    from rll_core.bracket import bracket_curve, bracket_radii

    c = bracket_curve(run, n=16, device="cpu")
    assert c["eps"] == bracket_radii(0.02) == sorted(c["eps"]) and c["eps"][-1] == 0.02
    (path,) = run.glob("bracket-curve-last-e1-eps0p02-n16-*.json")
    a = np.load(path.with_suffix(".npz"))
    assert a["certified"].shape == a["pgd"].shape == a["lipschitz_bound"].shape == (len(c["eps"]), 16)
    assert not (a["certified"] & ~a["pgd"]).any() and c["certified_not_pgd_robust"] == 0
    assert (a["lipschitz_bound"] >= a["lipschitz_attained"]).all()
    assert (np.diff(a["lipschitz_attained"], axis=0) >= 0).all()
    assert a["certified"][0].sum() > a["certified"][-1].sum()  # at a fiftieth of eps more points are certified
    assert (a["certified"][-1] == at_eps["certified"]).all() and (a["pgd"][-1] == at_eps["pgd"]).all()
    assert (a["lipschitz_attained"][-1] >= at_eps["lipschitz_attained"]).all()
    assert c["certified"] == pytest.approx(a["certified"].mean(1).tolist())
    assert c["bracket_ratio"] == pytest.approx(np.median(a["lipschitz_bound"] / a["lipschitz_attained"], axis=1).tolist())
    path.write_text(json.dumps({**json.loads(path.read_text()), "certified": [-1.0]}))
    assert bracket_curve(run, n=16, device="cpu")["certified"] == [-1.0]  # read back, not re-measured
    assert bracket_curve(run, n=16, radii=[0.01, 0.005], device="cpu")["eps"] == [0.005, 0.01]  # its own file
    for radii, message in (([0.01, 0.01], "distinct"), ([0.0], "eps"), ([], "at least one")):
        with pytest.raises(ValueError, match=message):
            bracket_curve(run, n=16, radii=radii, device="cpu")


@pytest.mark.parametrize("seed", range(3))
def test_the_two_relu_layer_refinement_holds_and_is_tighter(seed, monkeypatch):
    """On networks of two ReLU layers (rll_core._tail) the bound stays above every Jacobian norm sampled in the
    ball (20,000 points and every vertex of a 5-D input; where the ball meets a face of [0, 1] the norm over the
    directions it allows, up only there), never exceeds the interval bound alone, and is below it somewhere: the
    refinement acts, soundly."""
    import rll_core.certify as certify_module

    net = _mlp(10 + seed, (5, 12, 12, 4))
    x = torch.rand(4, 5, generator=torch.Generator().manual_seed(seed))
    x[0, 0] = 0.0  # at the floor: that coordinate only moves up
    gen = torch.Generator().manual_seed(1)
    for eps in (0.05, 0.2, 0.5):
        sharp = lipschitz_bound(net, x, eps=eps)
        with monkeypatch.context() as m:
            m.setattr(certify_module, "tail_matrices", lambda *a, **k: None)
            plain = lipschitz_bound(net, x, eps=eps)
        assert bool((sharp <= plain * (1 + 1e-6)).all())
        vertices = torch.tensor(list(itertools.product((1.0, -1.0), repeat=5))) * eps
        signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=4)))
        for i in range(len(x)):
            z = torch.cat([x[i] + eps * (2 * torch.rand((20000, 5), generator=gen) - 1), x[i] + vertices]).clamp(0, 1)
            with torch.no_grad():
                rows = signs @ _jacobians(net, z)  # (n, 8, 5): u^T J for every sign vector u
            up = (x[i] - eps <= 0)  # at the floor of [0, 1]: the ball's steps go up only, so only u^T J's positive part
            jmax = torch.where(up, rows.clamp(min=0), rows.abs()).sum(-1).max()
            assert float(sharp[i]) >= float(jmax), (eps, i)
        if eps == 0.2:
            assert bool((sharp < plain * 0.99).any()), (sharp, plain)
