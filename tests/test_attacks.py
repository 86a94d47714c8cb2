"""Attacks and evaluation against closed forms (linear models), an independent PGD (ART), and the
conventions every attack must keep (box, mode, gradients, determinism, input checks)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rll_core.attacks import multi_targeted, pgd
from rll_core.evaluation import ATTACKS, AttackSpec, attack_generator, evaluate, paper_attack, predict

from .conftest import requires_cuda


class Binary(nn.Module):
    """Logits (0, w.x + b): class 1 iff w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.lin = nn.Linear(len(w), 1)
        with torch.no_grad():
            self.lin.weight.copy_(w[None])
            self.lin.bias.fill_(b)

    def forward(self, x):
        z = self.lin(x.flatten(1))
        return torch.cat([torch.zeros_like(z), z], 1)


def _linear_case(n=400, d=20, eps=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64).float()
    x = torch.rand(n, d, generator=g)
    x[: n // 4] = (x[: n // 4] > 0.5).float()  # many points on the [0, 1] faces, where clipping binds
    model = Binary(w, b=-float(w.sum()) / 2)
    y = predict(model, x)
    y[::7] = 1 - y[::7]  # some points misclassified already
    return model, x, y, w, eps


def _analytic_robust(model, x, y, w, eps):
    """The worst point of the eps-box ∩ [0, 1]^D for a linear score is a corner: each coordinate moves
    against sign(w) (towards the other class) as far as the box and [0, 1] allow."""
    direction = torch.where(y[:, None] == 1, -torch.sign(w), torch.sign(w))
    worst = torch.where(direction > 0, (x + eps).clamp(max=1), (x - eps).clamp(min=0))
    worst = torch.where(direction == 0, x, worst)
    return predict(model, worst) == y


def test_pgd_reaches_the_analytic_worst_case_of_a_linear_classifier():
    model, x, y, w, eps = _linear_case()
    robust = _analytic_robust(model, x, y, w, eps)
    assert 0.2 < robust.float().mean() < 0.8  # the case is not trivial
    spec = paper_attack("pgd", eps)
    x_adv = pgd(model, x, y, eps=eps, step_size=spec.step_size, steps=spec.steps,
                generator=torch.Generator().manual_seed(1))
    assert torch.equal(predict(model, x_adv) == y, robust)
    res = evaluate(model, x, y, eps=eps, attacks=["pgd"], batch_size=37, progress=False)
    assert res.adversarial_accuracy["pgd"] == pytest.approx(robust.float().mean().item())
    assert res.clean_accuracy == pytest.approx((predict(model, x) == y).float().mean().item())
    assert res.attacks["pgd"] == {"name": "pgd", "eps": eps, "steps": 10, "step_size": pytest.approx(0.02),
                                  "restarts": 1, "random_start": True}
    assert res.n == len(x) and res.seed == 0 and set(res.to_dict()) >= {"clean_accuracy", "attacks"}
    # too few steps to cross the box cannot reach the corner everywhere: the count is then higher
    weak = pgd(model, x, y, eps=eps, step_size=0.01, steps=2, random_start=False)
    assert (predict(model, weak) == y).sum() > robust.sum()


class ThreeWay(nn.Module):
    """Class 0 everywhere near x1 = 0.5; class 1 would need x1 > 0.65 (unreachable at eps 0.1) but has a
    steep logit that pulls the cross-entropy gradient towards it; class 2 wins once x1 < 0.45."""

    def forward(self, x):
        t = x[:, 0] - 0.5
        return torch.stack([torch.zeros_like(t), 10 * t - 1.5, -t - 0.05], 1)


def test_multi_targeted_finds_the_target_untargeted_pgd_misses():
    model = ThreeWay()
    x = torch.full((5, 2), 0.5)
    y = torch.zeros(5, dtype=torch.long)
    kw = dict(eps=0.1, step_size=0.02, steps=10, random_start=False)
    assert bool((predict(model, pgd(model, x, y, **kw)) == 0).all())
    x_mt = multi_targeted(model, x, y, **kw)
    assert bool((predict(model, x_mt) == 2).all())
    assert float((x_mt - x).abs().max()) <= 0.1 + 1e-7
    specs = [paper_attack(a, 0.1, random_start=False) for a in ("pgd", "multitarget")]
    res = evaluate(model, x, y, eps=0.1, attacks=specs, progress=False)
    assert res.adversarial_accuracy == {"pgd": 1.0, "multitarget": 0.0}
    assert res.attacks["multitarget"]["steps"] == 20 and not res.attacks["pgd"]["random_start"]


def test_each_attack_of_an_evaluation_has_its_own_stream():
    """PGD's stream is the evaluation's seed (so PGD alone, e.g. a robustness curve, repeats it); the other
    attacks' streams differ from it and from each other, and repeat for the same seed."""
    draws = {n: torch.rand(4, generator=attack_generator(3, n)) for n in ATTACKS}
    assert torch.equal(draws["pgd"], torch.rand(4, generator=torch.Generator().manual_seed(3)))
    assert len({tuple(d.tolist()) for d in draws.values()}) == len(ATTACKS)
    assert torch.equal(torch.rand(4, generator=attack_generator(3, "multitarget")), draws["multitarget"])
    assert not torch.equal(torch.rand(4, generator=attack_generator(4, "multitarget")), draws["multitarget"])
    with pytest.raises(ValueError, match="unknown attack"):
        attack_generator(3, "fgsm")


def test_multi_targeted_keeps_the_strongest_target():
    """Two reachable wrong classes: the kept point is the one whose margin over the label is larger."""

    class Two(nn.Module):
        def forward(self, x):
            t = x[:, 0] - 0.5
            return torch.stack([torch.zeros_like(t), t, -3 * t], 1)

    x, y = torch.full((3, 1), 0.5), torch.zeros(3, dtype=torch.long)
    x_mt = multi_targeted(Two(), x, y, eps=0.1, step_size=0.05, steps=4, random_start=False)
    assert torch.allclose(x_mt, torch.full((3, 1), 0.4))  # class 2 (margin 0.3) beats class 1 (0.1)


def _small_cnn():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.BatchNorm1d(4 * 36),
                         nn.Linear(4 * 36, 5))


@pytest.mark.parametrize("attack", [pgd, multi_targeted])
def test_box_mode_gradients_and_determinism(attack):
    model = _small_cnn()
    model.train()
    model[4].eval()  # a mixed-mode model must come back mixed
    x = torch.rand(9, 1, 8, 8)
    x[0] = 0.0
    x[1] = 1.0
    y = torch.arange(9) % 5
    eps = 0.05
    out = [attack(model, x, y, eps=eps, step_size=0.02, steps=3, generator=torch.Generator().manual_seed(5))
           for _ in range(2)]
    assert torch.equal(out[0], out[1])
    xa = out[0]
    assert bool((xa >= 0).all() and (xa <= 1).all())
    assert bool((xa <= x + eps).all() and (xa >= x - eps).all())
    assert model.training and model[2].training and not model[4].training
    assert all(p.grad is None for p in model.parameters())
    assert not xa.requires_grad
    other = attack(model, x, y, eps=eps, step_size=0.02, steps=3, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(other, xa)
    # batch of one works
    assert attack(model, x[:1], y[:1], eps=eps, step_size=0.02, steps=1).shape == (1, 1, 8, 8)


def test_bad_arguments_raise_before_any_work():
    model = _small_cnn().eval()
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    cases = [
        (dict(eps=-0.1), "eps"), (dict(steps=0), "steps"), (dict(step_size=0.0), "step_size"),
        (dict(x=x * 2), r"\[0, 1\]"), (dict(x=(x * 255).to(torch.uint8)), "floating"),
        (dict(y=torch.zeros(3, dtype=torch.long)), "shape"), (dict(y=torch.full((4,), 5)), "range|lie in"),
        (dict(y=torch.full((4,), -1)), "lie in"), (dict(y=torch.zeros(4)), "integer"),
        (dict(x=torch.full((4, 1, 8, 8), float("nan"))), r"\[0, 1\]"),
    ]
    for attack in (pgd, multi_targeted):
        for change, msg in cases:
            kw = dict(x=x, y=y, eps=0.1, step_size=0.01, steps=2) | change
            with pytest.raises(ValueError, match=msg):
                attack(model, kw.pop("x"), kw.pop("y"), **kw)
    with pytest.raises(ValueError, match="restarts"):
        pgd(model, x, y, eps=0.1, step_size=0.01, steps=2, restarts=0)
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate(model, x, y, eps=0.1, attacks=["fgsm"], progress=False)
    with pytest.raises(ValueError, match="unknown attack settings"):
        paper_attack("pgd", 0.1, stepz=3)


def test_pgd_restarts_keep_the_first_success():
    model, x, y, w, eps = _linear_case(n=200)
    one = pgd(model, x, y, eps=eps, step_size=0.005, steps=3, generator=torch.Generator().manual_seed(0))
    many = pgd(model, x, y, eps=eps, step_size=0.005, steps=3, restarts=8, generator=torch.Generator().manual_seed(0))
    fooled_one, fooled_many = predict(model, one) != y, predict(model, many) != y
    assert bool((fooled_one <= fooled_many).all())  # the first restart is the same, later ones only add
    assert fooled_many.sum() > fooled_one.sum()


@pytest.mark.slow
def test_pgd_agrees_with_art(fmnist_small_model):
    """Robust accuracy of a trained Fashion-MNIST CNN under our PGD and ART's, same settings: within a point."""
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    model, x, y = fmnist_small_model
    x, y, eps = x[:500], y[:500], 0.1
    ours = evaluate(model, x, y, eps=eps, attacks=["pgd"], progress=False, seed=0)
    assert ours.clean_accuracy > 0.7
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attack = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=2 * eps / 10, max_iter=10,
                                             num_random_init=1, batch_size=250, verbose=False)
    np.random.seed(0)
    x_art = attack.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()])
    art_robust = int((predict(model, torch.from_numpy(x_art)) == y).sum())
    ours_robust = int(ours.correct["pgd"].sum())
    assert abs(art_robust - ours_robust) <= 5, (art_robust, ours_robust)  # within 1 % of the 500 points
    assert ours.adversarial_accuracy["pgd"] < ours.clean_accuracy - 0.2  # the attack does something


@pytest.mark.gpu
@requires_cuda
def test_attacks_follow_the_input_device(fmnist_small_model):
    model, x, y = fmnist_small_model
    cpu = evaluate(model, x[:300], y[:300], eps=0.1, progress=False)
    gpu_model = __import__("copy").deepcopy(model).cuda()
    gpu = evaluate(gpu_model, x[:300], y[:300], eps=0.1, progress=False)
    assert cpu.clean_accuracy == gpu.clean_accuracy
    for k in cpu.adversarial_accuracy:
        assert abs(cpu.adversarial_accuracy[k] - gpu.adversarial_accuracy[k]) <= 0.02
    x_adv = pgd(gpu_model, x[:8].cuda(), y[:8].cuda(), eps=0.1, step_size=0.02, steps=2)
    assert x_adv.device.type == "cuda"


def _reference_pgd(model, x, y, eps, step, steps, generator):
    """PGD as first written here: uniform start, then step and project with fresh tensors each time."""
    x_adv = torch.minimum(torch.maximum(x + (2 * torch.rand(x.shape, generator=generator) - 1) * eps, x - eps),
                          x + eps).clamp(0, 1)
    for _ in range(steps):
        z = x_adv.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
        x_adv = torch.minimum(torch.maximum(x_adv + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def test_the_lean_inner_loop_gives_the_same_bits(fmnist_small_model):
    """In-place steps against bounds computed once, no verdict forward with one restart: x_adv equal bit for
    bit to the plain loop from the same random draws."""
    model, x, y = fmnist_small_model
    x, y = x[:64], y[:64]
    ours = pgd(model, x, y, eps=0.1, step_size=0.02, steps=10, generator=torch.Generator().manual_seed(3))
    ref = _reference_pgd(model.eval(), x, y, 0.1, 0.02, 10, torch.Generator().manual_seed(3))
    assert torch.equal(ours, ref)


@pytest.mark.slow
def test_multi_targeted_stopping_at_the_first_success_fools_the_same_points(fmnist_small_model):
    model, x, y = fmnist_small_model
    x, y = x[:300], y[:300]
    kw = dict(eps=0.1, step_size=0.01, steps=20)
    full = multi_targeted(model, x, y, generator=torch.Generator().manual_seed(0), **kw)
    lean = multi_targeted(model, x, y, generator=torch.Generator().manual_seed(0), stop_when_fooled=True, **kw)
    fooled_full, fooled_lean = predict(model, full) != y, predict(model, lean) != y
    assert int(fooled_full.sum()) > 30  # the attack does something on this model
    assert torch.equal(fooled_full, fooled_lean)
    assert bool(((lean - x).abs() <= 0.1 + 1e-6).all())


def test_rll_pgd_agrees_with_torchattacks_from_the_same_start(fmnist_small_model):
    """A second independent PGD: torchattacks' (no random start on either side, so both begin at x)."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = fmnist_small_model
    x, y = x[:64], y[:64]
    ours = pgd(model, x, y, eps=0.1, step_size=0.02, steps=10, random_start=False)
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=10, random_start=False)(x, y)
    # torchattacks averages the loss (we sum): the same signs, so the same steps up to float rounding
    assert (ours - theirs).abs().max().item() < 1e-6
    assert torch.equal(predict(model, ours), predict(model, theirs))


@pytest.mark.slow
def test_autoattack_is_at_least_as_strong_as_pgd_and_leaves_no_trace(fmnist_small_model):
    pytest.importorskip("torchattacks")
    from rll_core.attacks import autoattack

    model, x, y = fmnist_small_model
    x, y = x[:16], y[:16]
    model.train()
    before = torch.random.get_rng_state()
    res = evaluate(model, x, y, eps=0.1, attacks=("pgd", "autoattack"), seed=0, progress=False)
    assert model.training and torch.equal(torch.random.get_rng_state(), before)
    aa = res.correct["autoattack"]
    assert res.adversarial_accuracy["autoattack"] <= res.adversarial_accuracy["pgd"] < res.clean_accuracy
    assert not (aa & ~res.correct["clean"]).any()  # a misclassified point is never robust
    assert res.attacks["autoattack"]["steps"] == 100
    # the points it returns lie in the ball and the box, from a seed: the same bits (cheap settings here)
    model.eval()
    adv = autoattack(model, x, y, eps=0.1, steps=5, n_queries=100, seed=3)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(autoattack(model, x, y, eps=0.1, steps=5, n_queries=100, seed=3), adv)
    with pytest.raises(ValueError):
        autoattack(model, x, y, eps=1.5)


def test_autoattack_builds_the_standard_versions_four_attacks(monkeypatch):
    """The settings of fra31/auto-attack's standard version (autoattack.py, L-inf): APGD-CE and APGD-T with one
    restart, 100 iterations, eot_iter 1 and rho 0.75; targeted FAB over every other class, one restart; Square with
    5,000 queries, p_init 0.8, one restart and resc_schedule False; each on what the ones before it left robust."""
    torchattacks = pytest.importorskip("torchattacks")
    from rll_core.attacks import autoattack

    built = []

    def recorder(name):
        class Part:
            def __init__(self, model, **kw):
                built.append((name, kw))
                assert model is net  # every part attacks the model itself

        Part.__name__ = name
        return Part

    chained = []

    class Chain:
        def __init__(self, parts):
            chained.append([type(p).__name__ for p in parts])

        def __call__(self, x, y):
            chained.append((x, y))
            return x + 0.0

    for name in ("APGD", "APGDT", "FAB", "Square"):
        monkeypatch.setattr(torchattacks, name, recorder(name))
    monkeypatch.setattr(torchattacks, "MultiAttack", Chain)
    net = model = nn.Sequential(nn.Flatten(), nn.Linear(4, 7))
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 6, 3], dtype=torch.int32)
    out = autoattack(model, x, y, eps=np.float32(0.25), seed=11)
    assert torch.equal(out, x) and chained[0] == ["APGD", "APGDT", "FAB", "Square"]
    assert chained[1][0] is x and chained[1][1].dtype == torch.int64 and chained[1][1].tolist() == [0, 6, 3]
    common = {"norm": "Linf", "eps": 0.25, "seed": 11}
    assert built == [
        ("APGD", {"steps": 100, "n_restarts": 1, "loss": "ce", "eot_iter": 1, "rho": 0.75, **common}),
        ("APGDT", {"steps": 100, "n_restarts": 1, "n_classes": 7, "eot_iter": 1, "rho": 0.75, **common}),
        ("FAB", {"steps": 100, "n_restarts": 1, "multi_targeted": True, "n_classes": 7, **common}),
        ("Square", {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "resc_schedule": False, **common}),
    ]
    assert type(built[0][1]["eps"]) is float
    built.clear()
    assert torch.equal(autoattack(model, x, y, eps=0.0), x) and built == []  # nothing to attack in a ball of radius 0
    autoattack(model, x, y, eps=0.1)
    assert built[0][1]["seed"] == 0  # the default seed
    built.clear()
    autoattack(model, x, y, eps=0.1, validate=False)  # the class count from the model, without the checks
    assert built[1][1]["n_classes"] == 7
    with pytest.raises(ValueError, match=r"^n_queries must be an integer >= 1, got 0$"):
        autoattack(model, x, y, eps=0.1, n_queries=0)
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1, got 0$"):
        autoattack(model, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 7\)"):
        autoattack(model, x, torch.tensor([0, 9, 1]), eps=0.1)  # checked by default
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ImportError, match=r"^AutoAttack needs torchattacks: pip install --no-deps torchattacks==3.5.1 "
                                          r"\(make setup installs it\)$"):
        autoattack(model, x, y, eps=0.1)


def test_autoattack_without_torchattacks_is_refused_in_one_line_before_any_work(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchattacks" else real(name, *a))
    with pytest.raises(ValueError, match="AutoAttack needs torchattacks: pip install --no-deps"):
        paper_attack("autoattack", 0.1)
    assert paper_attack("pgd", 0.1).name == "pgd"


def test_targeted_pgd_reaches_the_target_of_a_linear_classifier():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3))  # z_c = 10 x_c: class c wins where pixel c is brightest
    with torch.no_grad():
        model[1].weight.copy_(10 * torch.eye(3))
        model[1].bias.zero_()
    x = torch.rand(40, 1, 1, 3, generator=torch.Generator().manual_seed(0))
    target = (predict(model, x) + 1) % 3
    far = pgd(model, x, target, eps=1.0, step_size=0.1, steps=40, targeted=True, random_start=False)
    assert bool((predict(model, far) == target).all())
    # descending the cross-entropy of the target: it never ends above where it started
    ce = F.cross_entropy(model(x), target, reduction="none")
    near = pgd(model, x, target, eps=0.05, step_size=0.01, steps=5, targeted=True, random_start=False)
    assert bool((F.cross_entropy(model(near), target, reduction="none") <= ce + 1e-6).all())


def test_unknown_attack_names_are_refused_in_attackspec():
    for name in ("fgsm", "PGD", "multi_targeted"):
        with pytest.raises(ValueError, match=f"unknown attack '{name}'"):
            AttackSpec(name, 0.1, 10, 0.02)
    with pytest.raises(ValueError, match="eps must be a finite number in \\[0, 1\\]"):
        AttackSpec("pgd", 25.0, 10, 0.02)
    with pytest.raises(ValueError, match="restarts apply to pgd only"):
        AttackSpec("multitarget", 0.1, 20, 0.01, restarts=3)
    assert paper_attack("pgd", 0.1, steps=20).step_size == pytest.approx(0.01)


def _multi_targeted_written_out(model, x, y, eps, step, steps, generator, stop_when_fooled=False, random_start=True):
    """The multi-targeted attack from its definition, one target after another: for target t = (y + k) mod C
    (k = 1 .. C-1), start x + U(-eps, eps) (drawn for every point, in this order), sign ascent on z_t - z_y within
    the eps-box and [0, 1]; per point keep the result whose margin max_{j != y} z_j - z_y is the largest so far
    (starting from the clean point's)."""
    k = model(x[:1]).shape[1]
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)

    def margin(z):
        out = model(z).detach()
        other = out.clone()
        other[torch.arange(len(z)), y] = -float("inf")
        return other.max(1).values - out[torch.arange(len(z)), y]

    best, best_m = x.clone(), margin(x)
    for shift in range(1, k):
        t = (y + shift) % k
        noise = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1) * eps if random_start else 0 * x
        z = (x + noise).clamp(lo, hi)
        for _ in range(steps):
            z = z.detach().requires_grad_(True)
            out = model(z)
            (g,) = torch.autograd.grad((out[torch.arange(len(z)), t] - out[torch.arange(len(z)), y]).sum(), z)
            z = (z.detach() + step * g.sign()).clamp(lo, hi)
        m = margin(z)
        better = (m > best_m) & ~((best_m > 0) & stop_when_fooled)  # a fooled point is left as it is
        best[better], best_m[better] = z[better], m[better]
    return best


def test_multi_targeted_equals_its_definition_and_stopping_early_fools_the_same_points():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 5)).double().eval()
    x, y = torch.rand(40, 1, 6, 6, dtype=torch.float64), torch.randint(0, 5, (40,))
    ours = multi_targeted(model, x, y, eps=0.03, step_size=0.01, steps=6, generator=torch.Generator().manual_seed(1))
    ref = _multi_targeted_written_out(model, x, y, 0.03, 0.01, 6, torch.Generator().manual_seed(1))
    assert torch.equal(ours, ref)
    fooled = predict(model, ours) != y
    assert 5 < int(fooled.sum()) < 40  # some points fooled, some not: the comparison means something
    g_lean, g_full = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    lean = multi_targeted(model, x, y, eps=0.03, step_size=0.01, steps=6, generator=g_lean, stop_when_fooled=True)
    assert torch.equal(predict(model, lean) != y, fooled)
    assert torch.equal(lean, _multi_targeted_written_out(model, x, y, 0.03, 0.01, 6, torch.Generator().manual_seed(1),
                                                         stop_when_fooled=True))  # the first target that fooled it
    multi_targeted(model, x, y, eps=0.03, step_size=0.01, steps=6, generator=g_full)
    assert torch.equal(g_lean.get_state(), g_full.get_state())  # the same draws: the next batch's starts agree
    fixed = multi_targeted(model, x, y, eps=0.03, step_size=0.01, steps=6, random_start=False)
    assert torch.equal(fixed, _multi_targeted_written_out(model, x, y, 0.03, 0.01, 6, None, random_start=False))
    one = torch.tensor([int(torch.nonzero(~fooled)[0])])  # a single point still robust: still attacked
    assert torch.equal(multi_targeted(model, x[one], y[one], eps=0.03, step_size=0.01, steps=6, stop_when_fooled=True,
                                      random_start=False), fixed[one])
    assert bool(((lean - x).abs() <= 0.03 + 1e-12).all()) and bool((lean >= 0).all() and (lean <= 1).all())
    still = ~fooled  # a point never fooled was attacked with every target: the same result either way
    assert torch.equal(lean[still], ours[still])


def test_restarts_keep_the_first_success_of_targeted_pgd_and_every_draw_is_kept_in_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    target = (predict(model, x) + 1) % 5
    one = pgd(model, x, target, eps=0.15, step_size=0.05, steps=3, targeted=True, generator=torch.Generator().manual_seed(4))
    three = pgd(model, x, target, eps=0.15, step_size=0.05, steps=3, targeted=True, restarts=3,
                generator=torch.Generator().manual_seed(4))
    reached = predict(model, one) == target
    assert 0 < int(reached.sum()) < 30
    assert torch.equal(three[reached], one[reached])  # reached in the first restart: kept from it
    assert bool((predict(model, three) == target).sum() >= reached.sum())
    with pytest.raises(ValueError, match=r"^restarts must be an integer >= 1, got 0$"):
        pgd(model, x, target, eps=0.1, step_size=0.02, steps=2, restarts=0)
    # a multi-targeted batch fooled by its first target still draws every target's start: the stream stays in step
    y = predict(model, x)
    g_lean, g_full = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    lean = multi_targeted(model, x, y, eps=0.9, step_size=0.5, steps=3, generator=g_lean, stop_when_fooled=True)
    multi_targeted(model, x, y, eps=0.9, step_size=0.5, steps=3, generator=g_full)
    assert bool((predict(model, lean) != y).all()) and torch.equal(g_lean.get_state(), g_full.get_state())


def test_a_model_that_returns_no_logits_is_named():
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
    for net, shape in ((nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0)), "(1,)"),
                       (nn.Sequential(nn.Flatten(), nn.Linear(4, 1)), "(1, 1)")):
        with pytest.raises(ValueError, match=rf"^the model must return logits of shape \(N, classes >= 2\), got "
                                             rf"{re.escape(shape)}$"):
            pgd(net, x, y, eps=0.1, step_size=0.02, steps=1)


def test_square_stays_in_the_ball_and_leaves_the_global_stream_alone(fmnist_small_model):
    pytest.importorskip("torchattacks")
    from rll_core.attacks import square

    model, x, y = fmnist_small_model
    xs, ys = x[:12], y[:12].long()
    state = torch.random.get_rng_state()
    for precision in ("fp32", "bf16"):
        out = square(model, xs, ys, eps=0.1, n_queries=20, precision=precision)
        assert out.dtype == xs.dtype and out.shape == xs.shape
        assert float((out - xs).abs().max()) <= 0.1 + 1e-6 and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(square(model, xs, ys, eps=0.1, n_queries=20, seed=3),
                       square(model, xs, ys, eps=0.1, n_queries=20, seed=3))  # seeded: the same points


def _pgd_any_iterate_written_out(model, x, y, eps, step, steps, generator):
    """The any-iterate verdict by brute force: the paper's PGD on every point for every step, a verdict after each
    iterate (the start included) and after the last; fooled where any says fooled."""
    x_adv = torch.minimum(torch.maximum(x + (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype) - 1) * eps,
                                        x - eps), x + eps).clamp(0, 1)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        z = x_adv.clone().requires_grad_(True)
        logits = model(z)
        fooled |= logits.detach().argmax(1) != y
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), z)
        x_adv = torch.minimum(torch.maximum(x_adv + step * g.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return fooled | (model(x_adv).argmax(1) != y), model(x_adv).argmax(1) != y


class _Counting(nn.Module):
    """A model that counts the examples it is asked about."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, 0

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)


def test_pgd_stopping_when_fooled_gives_the_any_iterate_verdict_and_stops_attacking():
    """stop_when_fooled: the points fooled are those fooled at some iterate (brute force, float64 so the smaller
    batches change no bit that matters), a superset of the paper's last-iterate verdict, every point in the ball;
    and a point fooled early costs no further forward (fewer examples seen than steps x n)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 5)).double().eval()
    x = torch.rand(300, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)  # every point correct at the start
    kw = dict(eps=0.2, step_size=0.04, steps=10)
    model = _Counting(net)
    ours = pgd(model, x, y, generator=torch.Generator().manual_seed(5), stop_when_fooled=True, precision="fp32", **kw)
    seen = model.seen
    any_iter, last_iter = _pgd_any_iterate_written_out(net, x, y, kw["eps"], kw["step_size"], kw["steps"],
                                                       torch.Generator().manual_seed(5))
    fooled = predict(net, ours) != y
    assert 30 < int(last_iter.sum()) < 270  # the attack does something, and not everything
    assert torch.equal(fooled, any_iter) and bool((fooled | ~last_iter).all())
    assert bool(((ours - x).abs() <= kw["eps"] + 1e-12).all()) and 0 <= float(ours.min()) and float(ours.max()) <= 1
    model.seen = 0
    pgd(model, x, y, generator=torch.Generator().manual_seed(5), precision="fp32", **kw)
    assert model.seen >= kw["steps"] * len(x) > seen  # the paper's PGD attacks every point every step


class _LiesInBf16(nn.Module):
    """``inner``'s logits, with class 0 raised far above the rest under bf16 autocast: there every point whose label
    is not 0 looks fooled, in fp32 none is (a bf16 verdict at its worst)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        if torch.is_autocast_enabled(x.device.type):
            out = out + 100.0 * F.one_hot(torch.zeros(len(x), dtype=torch.long), out.shape[1]).to(out.dtype)
        return out


def test_pgd_stopping_when_fooled_in_bf16_leaves_a_point_only_where_fp32_agrees(fmnist_small_model):
    """Under bf16 steps a point leaves the search only where an fp32 forward says it is fooled: every point the mode
    returns at an early iterate is fooled in fp32, so its verdict stays a superset of the last-iterate one, even on
    a model whose bf16 logits call every point fooled."""
    inner, x, y = fmnist_small_model
    model = _LiesInBf16(inner).eval()
    x, y = x[:128], y[:128]
    kw = dict(eps=0.1, step_size=0.02, steps=10, precision="bf16")
    last = predict(model, pgd(model, x, y, generator=torch.Generator().manual_seed(0), **kw)) != y
    ours = pgd(model, x, y, generator=torch.Generator().manual_seed(0), stop_when_fooled=True, **kw)
    assert bool(((predict(model, ours) != y) | ~last).all())


def test_the_any_iterate_mode_is_named_in_the_record_and_refused_where_it_means_nothing():
    """The record of the paper's PGD is as it always was (no new key: the same digests and file names); the mode is
    stored where it is on; the multi-targeted attack refuses it in one line."""
    assert "stop_when_fooled" not in paper_attack("pgd", 0.1).record()
    assert paper_attack("pgd", 0.1, stop_when_fooled=True).record()["stop_when_fooled"] is True
    with pytest.raises(ValueError, match="stop_when_fooled applies to pgd only"):
        paper_attack("multitarget", 0.1, stop_when_fooled=True)
