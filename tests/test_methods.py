"""The training methods as losses, each against an independent computation: the reference's definitions
written out (TRADES' official loss), finite differences, closed forms, the regulariser switched off."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rll_core.attacks import pgd
from rll_core.evaluation import paper_attack
from rll_core.lipschitz import local_lipschitz
from rll_core.methods import AT, GR, LLR, RST, TRADES, Natural, augment_batch, make_method
from rll_core.models import build_model
from rll_core.theory import LipschitzClassifier
from tests.helpers import batch, loss_and_grads, tiny


@pytest.mark.parametrize("off", [TRADES(eps=0.1, beta=0.0), GR(lam=0.0), LLR(eps=0.1, lam=0.0, mu=0.0),
                                 RST(eps=0.1, lam=0.0)])
def test_regulariser_off_is_exactly_natural(off):
    model = tiny(dropout=0.3).train()
    x, y = batch()
    ref_loss, ref_grads = loss_and_grads(Natural(), model, x, y)
    loss, grads = loss_and_grads(off, model, x, y)
    assert torch.equal(loss, ref_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))
    assert model.training and model[3].training  # mode left as found


def test_gr_is_ce_plus_an_explicit_finite_difference_counted_once():
    model = tiny().double()
    x, y = batch(8)
    x = x.double()
    lam, h = 0.7, 0.01
    # independent computation: v from a separate autograd call, then CE at x and at x + h v
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    v = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    ce = F.cross_entropy(model(x), y, reduction="none")
    ce_h = F.cross_entropy(model(x + h * v), y, reduction="none")
    # the reference's convention (tulip_loss: lambd * sum(dl^2) / 2 on a summed CE), as a mean over the batch
    penalty = (((ce_h - ce) / h) ** 2).mean() / 2
    # the penalty approximates ||grad_x CE||^2 / 2 (h small), which checks the finite difference's scale
    assert penalty.item() == pytest.approx((g.flatten(1).norm(dim=1) ** 2).mean().item() / 2, rel=0.05)
    ref = ce.mean() + lam * penalty
    ref_grads = torch.autograd.grad(ref, list(model.parameters()), retain_graph=True)
    twice = torch.autograd.grad(2 * ce.mean() + lam * penalty, list(model.parameters()))
    loss, grads = loss_and_grads(GR(lam=lam, h=h), model, x, y)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-12) for a, b in zip(grads, ref_grads, strict=True))
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(grads, twice, strict=True))


def test_llr_input_gradient_is_real():
    model = tiny().double().eval()
    x, y = batch(4)
    x = x.double()
    g = LLR(eps=0.1).input_gradient(model, x, y)
    assert float(g.abs().max()) > 0
    # central finite differences of the per-example CE along random directions
    d = torch.randn_like(x)
    t = 1e-6
    fd = (F.cross_entropy(model(x + t * d), y, reduction="none")
          - F.cross_entropy(model(x - t * d), y, reduction="none")) / (2 * t)
    assert torch.allclose((g * d).flatten(1).sum(1), fd, rtol=1e-5, atol=1e-8)


def test_llr_terms_train_the_parameters():
    """gamma and |delta . grad| enter the loss with parameter gradients (double backprop); the loss is at
    least the CE and grows with lam and mu."""
    model = tiny().double()
    x, y = batch(8)
    x = x.double()
    base, _ = loss_and_grads(Natural(), model, x, y)
    l1, g1 = loss_and_grads(LLR(eps=0.1, lam=4.0, mu=3.0, steps=3), model, x, y)
    l0, g0 = loss_and_grads(LLR(eps=0.1, lam=0.0, mu=3.0, steps=3), model, x, y)
    assert l1 > l0 > base
    assert not all(torch.allclose(a, b) for a, b in zip(g1, g0, strict=True))


def test_inner_searches_leave_every_module_in_training_mode():
    """AT, TRADES and LLR search in eval mode and hand the model back as they found it, dropout included
    (their values are checked against independent computations in test_structure / test_paper)."""
    model = tiny(dropout=0.3).train()
    x, y = batch(8)
    for method in (AT(eps=0.1, steps=2), TRADES(eps=0.1, steps=2), LLR(eps=0.1, steps=2)):
        loss_and_grads(method, model, x, y)
        assert all(m.training for m in model.modules()), method.name
    model.eval()
    loss_and_grads(AT(eps=0.1, steps=2), model, x, y)
    assert not any(m.training for m in model.modules())


def test_make_method_registry_and_errors():
    assert make_method("trades", eps=0.3).beta == 6.0
    assert make_method("RST", eps=0.1, lam=2).settings() == {"method": "rst", "eps": 0.1, "lam": 2,
                                                              "steps": 10, "step_size": None}
    with pytest.raises(ValueError, match="unknown method 'madry'; valid: natural, gr, llr, at, trades, rst"):
        make_method("madry")
    with pytest.raises(ValueError, match="no hyperparameter beta; valid: eps, lam"):
        make_method("rst", beta=1)
    for bad in (dict(eps=-0.1), dict(beta=-1.0), dict(steps=0)):
        with pytest.raises(ValueError):
            make_method("trades", **{"eps": 0.1, **bad})
    with pytest.raises(ValueError, match="h must be"):
        make_method("gr", h=0.0)


def test_augment_is_a_padded_crop_or_its_mirror():
    x = torch.rand(12, 3, 8, 8)
    out = augment_batch(x, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (4, 4, 4, 4)).numpy()
    seen_flip = seen_shift = False
    for i in range(len(x)):
        o = out[i].numpy()
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if np.array_equal(o, (lambda c: c[:, :, ::-1] if f else c)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert hits, f"image {i} is not a crop of its padded input"
        seen_flip |= any(f for *_, f in hits)
        seen_shift |= any((dy, dx) != (4, 4) for dy, dx, _ in hits)
    assert seen_flip and seen_shift


def test_at_loss_is_the_cross_entropy_at_pgds_point_from_the_same_draws():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    torch.manual_seed(5)
    loss = AT(eps=0.1, steps=3)(model, x, y)
    g = torch.Generator().manual_seed(5)
    x_adv = pgd(model, x, y, eps=0.1, step_size=2 * 0.1 / 3, steps=3, generator=g)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-6)


def test_trades_loss_is_linear_in_beta_for_one_inner_search():
    """The inner search does not depend on beta, so CE + beta KL is affine in beta: a wrong scaling, or a
    search that used beta, breaks it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    values = {}
    for beta in (0.0, 3.0, 6.0):
        torch.manual_seed(1)
        values[beta] = TRADES(eps=0.1, beta=beta, steps=3)(model, x, y).item()
    assert values[0.0] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    assert values[6.0] - values[0.0] == pytest.approx(2 * (values[3.0] - values[0.0]), rel=1e-5)
    assert values[6.0] > values[0.0]


def test_llr_gamma_vanishes_with_eps_under_dropout():
    """With dropout on (cnn001, training mode), gamma -> 0 as eps -> 0: the clean pass and the x + delta
    pass see the same masks.  (With the masks of two different draws, gamma stays ~0.04 at eps = 1e-6.)"""
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28).double().train()
    x = torch.rand(16, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    gammas = {}
    for eps in (1e-2, 1e-4, 1e-6):
        torch.manual_seed(1)
        gammas[eps] = float(LLR(eps=eps).terms(model, x, y)["gamma"].detach().mean())
    assert gammas[1e-6] < 1e-8, gammas
    assert gammas[1e-4] < gammas[1e-2], gammas
    assert model.training


def test_llr_defaults_are_the_search_every_table_trains():
    """LLR() is the reference's search (2 steps of eps / 2), the one run_grid and rll train resolve: a direct
    LLR(eps=...) trains the LLR the tables show."""
    from rll_core.runs import resolve_hyper
    table = resolve_hyper("mnist", "llr", None, 0.1)
    assert (table["steps"], table["step_size"]) == (2, 0.05)
    model, (x, y) = tiny(), batch(8, seed=5)
    searches = []
    for method in (LLR(eps=0.1), make_method("llr", **table), LLR(eps=0.1, steps=2, step_size=0.05)):
        torch.manual_seed(3)
        searches.append(method.search(model, x, y))
    assert torch.equal(searches[0], searches[1]) and torch.equal(searches[0], searches[2])
    torch.manual_seed(3)
    assert not torch.equal(LLR(eps=0.1, steps=2, step_size=0.1).search(model, x, y), searches[0])


def test_llr_search_compares_eval_mode_values_only():
    """The inner search's objective is 0 at delta = 0 even with dropout: its reference point is an
    eval-mode pass, not the training-mode clean loss."""
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28).double().train()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    delta = LLR(eps=1e-7, steps=1).search(model, x, y)
    assert float(delta.abs().max()) <= 1e-7 + 1e-15
    assert model.training


def test_numpy_scalars_are_numbers_everywhere():
    at = AT(eps=np.float64(0.1), steps=np.int64(3))
    assert at.settings() == {"method": "at", "eps": 0.1, "steps": 3, "step_size": None}
    json.dumps(make_method("trades", eps=np.float32(0.25), beta=np.float32(3)).settings())
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))
    pgd(model, x, y, eps=np.float32(0.1), step_size=np.float64(0.02), steps=np.int64(2))
    local_lipschitz(model, x, eps=np.float32(0.1), steps=np.int32(2))
    spec = paper_attack("pgd", np.float32(0.25))
    assert type(spec.eps) is float and spec.eps == 0.25
    for bad in (True, float("nan"), "0.1", None):
        with pytest.raises(ValueError, match="eps"):
            AT(eps=bad)
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.9]], dtype=np.float32)
    assert LipschitzClassifier(pts, np.array([0, 1, 1]), r=np.float32(0.17)).r == pytest.approx(0.17)


def _official_trades_loss(model, x_natural, y, step_size, epsilon, perturb_steps, beta):
    """TRADES' own ``trades_loss`` (yaodongyu/TRADES, trades.py, L-inf branch), written out from its
    definition: eval-mode sign ascent on the summed KL from x + 0.001 N(0, 1), clipped to the eps-box and
    [0, 1]; then in training mode CE(x) + beta / batch * summed KL(f(x) || f(x_adv)), the target f(x) from a
    forward pass of its own (not detached)."""
    kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x_natural)) * kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
    return loss_natural + beta * loss_robust


@pytest.mark.parametrize("n, beta", [(8, 6.0), (32, 1.0)])
def test_trades_equals_the_official_trades_loss_in_value_and_gradient(n, beta):
    """Against an independent transcription of the official loss: the robust term's scale (``batchmean``: a
    sum would grow with the batch), the search's steps and clipping, the start's noise draw, and the gradient
    flowing through both sides of the KL all have to agree."""
    model = tiny()  # float32 as the official code runs; no dropout: its extra clean forward pass equals ours
    x, y = batch(n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no implicit softmax dimension, no deprecated call
        ours, grads = loss_and_grads(TRADES(eps=0.1, beta=beta, steps=4, step_size=0.02), model, x, y, seed=3)
    torch.manual_seed(3)
    model.zero_grad()
    theirs = _official_trades_loss(model, x, y, step_size=0.02, epsilon=0.1, perturb_steps=4, beta=beta)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-7)
    for a, p in zip(grads, model.parameters(), strict=True):  # float32 sums in another order: 1e-5 of the largest
        assert torch.allclose(a, p.grad, rtol=1e-5, atol=1e-5 * float(p.grad.abs().max()))
    robust = (ours - F.cross_entropy(model(x), y)).item()
    assert robust > 1e-6  # the robust term is there, and scaled per example


def _llr_written_out(model, x, y, eps, lam, mu, steps, step):
    """LLR (Qin et al. 2019) as rll defines it, written out: delta* = the eval-mode maximiser of
    |CE(x + d) - CE(x) - d . grad_x CE(x)| over the eps-box (projected sign ascent from a uniform start), then in
    training mode CE + lam mean |CE(x + delta*) - CE(x) - delta* . grad CE| + mu mean |delta* . grad CE|, the input
    gradient kept differentiable."""
    model.eval()
    x0 = x.detach().requires_grad_(True)
    ce0_all = F.cross_entropy(model(x0), y, reduction="none")
    (g0,) = torch.autograd.grad(ce0_all.sum(), x0)
    ce0, g0 = ce0_all.detach(), g0.detach()
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    z = torch.max(torch.min(x + (2 * torch.rand_like(x) - 1) * eps, hi), lo)
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        obj = (F.cross_entropy(model(z), y, reduction="none") - ce0 - ((z - x) * g0).flatten(1).sum(1)).abs().sum()
        (g,) = torch.autograd.grad(obj, z)
        z = torch.max(torch.min(z.detach() + step * g.sign(), hi), lo)
    delta = (z - x).detach()
    model.train()
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    ce = F.cross_entropy(logits, y, reduction="none")
    (gx,) = torch.autograd.grad(ce.sum(), xg, create_graph=True)
    lin = (delta * gx).flatten(1).sum(1)
    gamma = (F.cross_entropy(model(x + delta), y, reduction="none") - ce - lin).abs()
    return ce.mean() + lam * gamma.mean() + mu * lin.abs().mean()


def test_llr_equals_its_definition_written_out_in_value_and_gradient():
    model = tiny().double()
    x, y = batch(8)
    x = x.double()
    ours, grads = loss_and_grads(LLR(eps=0.1, lam=1.7, mu=0.6, steps=3, step_size=0.03), model, x, y, seed=2)
    torch.manual_seed(2)
    model.zero_grad()
    theirs = _llr_written_out(model, x, y, 0.1, 1.7, 0.6, 3, 0.03)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    for a, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-10, atol=1e-14)
    t = LLR(eps=0.1, steps=3).terms(model, x, y)
    assert set(t) == {"logits", "ce", "gamma", "lin"} and torch.equal(t["ce"], F.cross_entropy(t["logits"], y,
                                                                                                  reduction="none"))


def test_rst_and_at_are_the_cross_entropy_at_pgds_point_with_their_own_step():
    model = tiny().double()
    x, y = batch(8)
    x = x.double()
    torch.manual_seed(4)
    rst = RST(eps=0.1, lam=0.7, steps=3, step_size=0.05)(model, x, y)
    x_adv = pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, generator=torch.Generator().manual_seed(4))
    expect = F.cross_entropy(model(x), y) + 0.7 * F.cross_entropy(model(x_adv), y)
    assert rst.item() == pytest.approx(expect.item(), rel=1e-12)
    torch.manual_seed(4)
    at = AT(eps=0.1, steps=3, step_size=0.05)(model, x, y)
    assert at.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-12)
    torch.manual_seed(4)
    assert AT(eps=0.1, steps=3)(model, x, y).item() != pytest.approx(at.item(), rel=1e-9)  # the default step differs


@pytest.mark.parametrize("make, message", [
    (lambda: LLR(lam=-1.0), r"^lam must be a finite number in \[0, inf\], got -1.0$"),
    (lambda: LLR(mu=-1.0), r"^mu must be a finite number in \[0, inf\], got -1.0$"),
    (lambda: GR(lam=-2.0), r"^lam must be a finite number in \[0, inf\], got -2.0$"),
    (lambda: RST(lam=-0.5), r"^lam must be a finite number in \[0, inf\], got -0.5$"),
    (lambda: TRADES(beta=-1.0), r"^beta must be a finite number in \[0, inf\], got -1.0$"),
    (lambda: AT(steps=0), r"^steps must be an integer >= 1, got 0$"),
    (lambda: AT(step_size=0.0), r"^step_size must be a finite number in \(0, inf\], got 0.0$"),
    (lambda: LLR(step_size=-0.1), r"^step_size must be a finite number in \(0, inf\], got -0.1$"),
    (lambda: TRADES(eps=1.5), r"^eps must be a finite number in \[0, 1\], got 1.5$"),
    (lambda: make_method("rst", beta=1, gamma=2), r"^method 'rst' has no hyperparameter beta, gamma; valid: eps, lam, "
                                                  r"steps, step_size$"),
    (lambda: make_method("natural", eps=0.1), r"^method 'natural' has no hyperparameter eps; valid: \(none\)$"),
])
def test_each_bad_hyperparameter_is_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_augmentation_draws_from_its_generator_over_every_offset_and_flips_half():
    x = torch.rand(600, 1, 6, 6)
    state = torch.get_rng_state()
    a = augment_batch(x, pad=2, generator=torch.Generator().manual_seed(7))
    b = augment_batch(x, pad=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)  # its own stream, the global one untouched
    padded = F.pad(x, (2, 2, 2, 2))
    offsets, flips = set(), 0
    for i in range(len(x)):
        for dy in range(5):
            for dx in range(5):
                crop = padded[i, :, dy:dy + 6, dx:dx + 6]
                if torch.equal(a[i], crop) or torch.equal(a[i], crop.flip(2)):
                    offsets.add((dy, dx))
                    flips += not torch.equal(a[i], crop)
    assert offsets == {(dy, dx) for dy in range(5) for dx in range(5)}  # 0 .. 2 pad on both axes
    assert 0.4 < flips / len(x) < 0.6
    kept = augment_batch(x[:50], pad=2, flip=False, generator=torch.Generator().manual_seed(7))
    for i in range(50):  # without flips every image is a plain crop, at the offsets the flipping call drew
        assert any(torch.equal(kept[i], padded[i, :, dy:dy + 6, dx:dx + 6]) for dy in range(5) for dx in range(5))
