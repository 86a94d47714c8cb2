"""Empirical local Lipschitzness against exact constants (linear maps, by enumerating the sign vectors)
and a brute-force upper bound (a one-hidden-layer ReLU network)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from rll_core.lipschitz import lipschitz_ratio, local_lipschitz


def _signs(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)


@pytest.mark.parametrize("d,k,seed", [(4, 3, 0), (8, 5, 1), (12, 10, 2), (12, 4, 3)])
def test_linear_map_constant_is_reached_and_never_exceeded(d, k, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(d, k)
    w = lin.weight.detach().double()
    # max ||W u||_1 over ||u||_inf <= 1 is attained at a sign vector (a convex function on a cube)
    true = (_signs(d) @ w.T).abs().sum(1).max().item()
    x = torch.rand(6, d) * 0.6 + 0.2  # away from the [0, 1] faces so the whole eps-ball is allowed
    est = local_lipschitz(lin, x, eps=0.1, restarts=32, generator=torch.Generator().manual_seed(seed))
    assert est.shape == (6,)
    assert float(est.max()) <= true * (1 + 1e-5)
    assert float(est.min()) >= 0.99 * true


def test_relu_network_never_exceeds_a_brute_force_bound_and_beats_random_search():
    """f = W2 relu(W1 x + b1) + b2: f(x) - f(x') = W2 S W1 (x - x') with S diagonal in [0, 1] (ReLU
    secant slopes), so the ratio is at most the max of ||W2 S W1 u||_1 over S in {0,1}^h (convexity) and
    u in {-1,1}^d: enumerated exactly."""
    torch.manual_seed(4)
    d, h, k = 6, 7, 3
    net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))
    w1, w2 = net[0].weight.detach().double(), net[2].weight.detach().double()
    masks = _signs(h).clamp(min=0)  # all 0/1 vectors
    bound = max((((w2 * m) @ w1) @ _signs(d).T).abs().sum(0).max().item() for m in masks)
    x = torch.rand(20, d) * 0.6 + 0.2
    eps = 0.15
    est = local_lipschitz(net, x, eps=eps, restarts=8, generator=torch.Generator().manual_seed(0))
    assert float(est.max()) <= bound * (1 + 1e-5)
    # random search with 2000 points per example in the same ball finds no larger ratio than the ascent
    g = torch.Generator().manual_seed(1)
    best_random = torch.zeros(len(x))
    for _ in range(20):
        xr = (x[:, None] + (torch.rand(len(x), 100, d, generator=g) * 2 - 1) * eps).reshape(-1, d)
        r = lipschitz_ratio(net, x.repeat_interleave(100, 0), xr).detach().reshape(len(x), 100).amax(1)
        best_random = torch.maximum(best_random, r)
    assert bool((est >= best_random * (1 - 1e-4)).all())


def test_respects_the_unit_box_mode_and_inputs():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3)).train()
    x = torch.zeros(3, 1, 4, 4)  # on the lower face: only increases are allowed
    est = local_lipschitz(net, x, eps=0.2, generator=torch.Generator().manual_seed(0))
    assert net.training and all(p.grad is None for p in net.parameters())
    assert bool((est > 0).all())
    # uint8 pixels are taken as x / 255
    est8 = local_lipschitz(net, torch.zeros(3, 1, 4, 4, dtype=torch.uint8), eps=0.2,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(est, est8)
    for kw, msg in ((dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(eps=0.1, steps=0), "steps"),
                    (dict(eps=0.1, restarts=0), "restarts")):
        with pytest.raises(ValueError, match=msg):
            local_lipschitz(net, x, **kw)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        local_lipschitz(net, x + 2, eps=0.1)


def test_a_flat_model_has_constant_zero_and_a_steeper_one_more():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.init.zeros_(net[1].weight)
    x = torch.rand(5, 4)
    assert torch.equal(local_lipschitz(net, x, eps=0.1), torch.zeros(5))
    nn.init.ones_(net[1].weight)
    # f = (sum x, sum x): ||f(x) - f(x')||_1 = 2 |sum(x - x')| <= 2 * 4 * ||x - x'||_inf, equality on a corner
    est = local_lipschitz(net, x * 0.5 + 0.25, eps=0.1)
    assert torch.allclose(est, torch.full((5,), 8.0), rtol=1e-4)


def _reference_procedure_per_example(model, x, eps, step, steps, noise):
    """estimate_local_lip_v2 for one point at a time: start x + 0.001 noise; steps of step * sign(grad of
    minus the ratio) with 1e-6 added to the difference in the denominator; clip; ratio at the end."""
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        z = xi + 0.001 * noise[i:i + 1]
        fx = model(xi).detach()

        def ratio(z, fx=fx, xi=xi):
            return (fx - model(z)).abs().sum() / (xi - z + 1e-6).abs().max()

        for _ in range(steps):
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(-ratio(z), z)
            z = (xi + (z + step * g.sign() - xi).clamp(-eps, eps)).clamp(0, 1)
        out.append(float(ratio(z.detach()).detach()))
    return torch.tensor(out, dtype=torch.float64)


def test_reference_procedure_matches_its_definition_and_descends():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5)).double().eval()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    ours = local_lipschitz(model, x, eps=0.1, procedure="reference", generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = _reference_procedure_per_example(model, x, 0.1, 0.003, 10, noise)
    assert torch.allclose(ours.double(), ref, rtol=1e-6)
    ascent = local_lipschitz(model, x, eps=0.1, generator=torch.Generator().manual_seed(3))
    assert bool((ours < ascent).all())
    with pytest.raises(ValueError, match="unknown procedure"):
        local_lipschitz(model, x, eps=0.1, procedure="descent")


def _ascent_written_out(model, x, eps, step, steps, noise):
    """rll's estimate from its definition, one point at a time: from x + 0.001 noise (in the eps-box and
    [0, 1]), sign steps up the gradient of ||f(z) - f(x)||_1, the ratio ||f(z) - f(x)||_1 / ||z - x||_inf recorded
    at every iterate and at the last one; the largest ratio met."""
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        fx = model(xi).detach()
        lo, hi = (xi - eps).clamp(min=0), (xi + eps).clamp(max=1)
        z = torch.max(torch.min(xi + 0.001 * noise[i:i + 1], hi), lo)
        best = 0.0
        for k in range(steps + 1):
            z = z.detach().requires_grad_(True)
            num = (model(z) - fx).abs().sum()
            den = (z - xi).abs().max()
            best = max(best, float(num / den) if den > 0 else 0.0)
            if k == steps:
                break
            (g,) = torch.autograd.grad(num, z)
            z = torch.max(torch.min(z.detach() + step * g.sign(), hi), lo)
        out.append(best)
    return torch.tensor(out, dtype=torch.float64)


def test_the_ascent_equals_its_definition_written_out_per_point(capsys):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 5)).double().eval()
    x = torch.rand(7, 1, 4, 4, dtype=torch.float64)
    x[0] = 0.0  # images on the faces of [0, 1]: the start and the steps must stay inside
    x[1] = 1.0
    ours = local_lipschitz(model, x, eps=0.05, steps=4, step_size=0.02, batch_size=3,
                           generator=torch.Generator().manual_seed(5))
    noise = torch.cat([torch.randn(x[s:s + 3].shape, generator=g, dtype=torch.float64)
                       for g in [torch.Generator().manual_seed(5)] for s in range(0, 7, 3)])
    assert torch.allclose(ours.double(), _ascent_written_out(model, x, 0.05, 0.02, 4, noise), rtol=1e-12)
    assert capsys.readouterr() == ("", "")  # no progress bar unless asked
    local_lipschitz(model, x, eps=0.05, steps=1, progress=True)
    assert "local Lipschitz" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.0), r"^eps must be > 0 for a local Lipschitz estimate$"),
    (dict(eps=0.1, step_size=0.0), r"^step_size must be a finite number in \(0, inf\], got 0.0$"),
    (dict(eps=0.1, steps=0), r"^steps must be an integer >= 1, got 0$"),
    (dict(eps=0.1, restarts=0), r"^restarts must be an integer >= 1, got 0$"),
    (dict(eps=0.1, batch_size=0), r"^batch_size must be an integer >= 1, got 0$"),
    (dict(eps=0.1, procedure="reference", restarts=2), r"^the reference procedure has one start; restarts must be 1$"),
    (dict(eps=0.1, procedure="descent"), r"^unknown procedure 'descent'; valid: ascent, reference$"),
])
def test_each_bad_argument_is_named(kwargs, message):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match=message):
        local_lipschitz(model, torch.rand(2, 1, 2, 2), **kwargs)


@pytest.mark.parametrize("procedure, precision", [("ascent", "fp32"), ("ascent", "bf16"), ("reference", "fp32")])
def test_the_input_returned_attains_the_reported_ratio(procedure, precision):
    """return_inputs: per point an x' in the ball and [0, 1] whose ratio is the value reported, bit for bit
    with the values of a call without it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    x = torch.rand(9, 1, 4, 4) * 0.8 + 0.1
    kw = dict(eps=0.1, restarts=2 if procedure == "ascent" else 1, procedure=procedure, precision=precision)
    plain = local_lipschitz(net, x, generator=torch.Generator().manual_seed(3), **kw)
    values, inputs = local_lipschitz(net, x, generator=torch.Generator().manual_seed(3), return_inputs=True, **kw)
    assert torch.equal(values, plain) and inputs.shape == x.shape
    if procedure == "ascent":
        assert float((inputs - x).abs().amax()) <= 0.1 + 1e-6 and 0 <= float(inputs.min()) <= float(inputs.max()) <= 1
        with torch.no_grad():
            again = lipschitz_ratio(net, x, inputs)
        assert torch.allclose(again, values, rtol=1e-5, atol=1e-6)
        assert bool((values > 0).all())


def test_the_curve_never_falls_with_the_radius_where_single_ascents_do(fmnist_small_model):
    """A larger ball holds the smaller, so the estimate at a radius must not fall below one at a smaller radius.
    One ascent per radius does fall on this trained network (checked, so the test has something to mend); the curve
    never does, and at each radius it is at least the single ascent there with the same seed."""
    from rll_core.measure import lipschitz_curve

    model, x, _ = fmnist_small_model
    radii = [0.1, 0.005, 0.01, 0.02, 0.05]  # any order: the columns ascend
    ascending = sorted(radii)
    single = torch.stack([local_lipschitz(model, x[:40], eps=e, precision="fp32",
                                          generator=torch.Generator().manual_seed(3)) for e in ascending], 1)
    assert bool((single.diff(dim=1) < 0).any()), "no single ascent falls here: the test cannot tell the curve's mend"
    curve = lipschitz_curve(model, x[:40], radii, precision="fp32", seed=3)
    assert curve.shape == (40, len(radii))
    assert bool((curve.diff(dim=1) >= 0).all())
    assert bool((curve >= single).all())
    # and nothing beyond what was attained: each column is the largest single value up to its radius
    assert torch.equal(curve, single.cummax(1).values)


@pytest.mark.parametrize("radii,message", [([], "at least one"), ([0.1, 0.1], "distinct"), ([0.0, 0.1], "eps"),
                                           ([0.1, 1.5], "eps")])
def test_the_curve_refuses_bad_radii_in_one_line(radii, message):
    from rll_core.measure import lipschitz_curve

    with pytest.raises(ValueError, match=message):
        lipschitz_curve(nn.Flatten(), torch.zeros(2, 1, 2, 2), radii)
