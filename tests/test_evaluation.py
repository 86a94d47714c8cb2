"""Dataset-level evaluation: the attacks by name and their settings, each attack's own random stream, and
:func:`evaluate` against its definition written out batch by batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rll_core.evaluation as E
from rll_core.attacks import multi_targeted, pgd
from rll_core.evaluation import ATTACKS, AttackSpec, attack_generator, evaluate, paper_attack, predict


def _model():
    """A small network fitted to the data below (so attacks have correct points to work on)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    x, y = _data(30)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _data(n=30):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("make, message", [
    (lambda: AttackSpec("fgsm", 0.1, 10, 0.02), r"^unknown attack 'fgsm'; valid: pgd, multitarget, autoattack$"),
    (lambda: AttackSpec("pgd", 1.5, 10, 0.02), r"^eps must be a finite number in \[0, 1\], got 1.5$"),
    (lambda: AttackSpec("pgd", 0.1, 10, 0.0), r"^step_size must be a finite number in \(0, inf\], got 0.0$"),
    (lambda: AttackSpec("pgd", 0.1, 0, 0.02), r"^steps must be an integer >= 1, got 0$"),
    (lambda: AttackSpec("pgd", 0.1, 10, 0.02, restarts=0), r"^restarts must be an integer >= 1, got 0$"),
    (lambda: AttackSpec("multitarget", 0.1, 20, 0.01, restarts=2),
     r"^restarts apply to pgd only, got 2 for 'multitarget'$"),
    (lambda: paper_attack("fgsm", 0.1), r"^unknown attack 'fgsm'; valid: pgd, multitarget, autoattack$"),
    (lambda: paper_attack("pgd", 0.1, steps=0), r"^steps must be an integer >= 1, got 0$"),
    (lambda: paper_attack("pgd", 0.1, gamma=1), r"^unknown attack settings \['gamma'\]; valid: steps, step_size, "
                                                r"restarts, random_start, stop_when_fooled$"),
    (lambda: attack_generator(0, "fgsm"), r"^unknown attack 'fgsm'; valid: pgd, multitarget, autoattack$"),
])
def test_bad_attack_settings_are_named_before_any_work(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_papers_settings_by_name():
    assert AttackSpec("pgd", 0.1, 10, 0.02, restarts=3).restarts == 3  # restarts are PGD's
    spec = paper_attack("pgd", np.float32(0.25))
    assert (spec.steps, spec.step_size, type(spec.eps), spec.restarts, spec.random_start) == (10, 0.05, float, 1, True)
    assert paper_attack("multitarget", 0.1).steps == 20 and paper_attack("multitarget", 0.1).step_size == 0.01
    assert paper_attack("pgd", 0.1, step_size=0.03, steps=7).step_size == 0.03
    if "autoattack" in ATTACKS:
        pytest.importorskip("torchattacks")
        aa = paper_attack("autoattack", 0.1)
        assert (aa.steps, aa.step_size) == (100, 0.2)  # APGD starts from 2 eps; the record says so


def test_each_attack_draws_from_a_stream_of_its_own():
    def state(g):
        return g.get_state()

    assert torch.equal(state(attack_generator(7, "pgd")), state(torch.Generator().manual_seed(7)))  # PGD's: the seed
    states = [state(attack_generator(s, n)) for s in (0, 1) for n in ATTACKS]
    assert len({bytes(t.numpy()) for t in states}) == len(states)  # no two attacks, no two seeds share one
    for k, name in enumerate(ATTACKS):
        if k:  # the others: mixed from the seed and the attack's place, deterministically
            mixed = int(np.random.SeedSequence([5, k]).generate_state(1, np.uint64)[0] >> 1)
            assert torch.equal(state(attack_generator(5, name)), state(torch.Generator().manual_seed(mixed)))
    assert attack_generator(3, "multitarget").device == torch.device("cpu")


def test_a_spec_runs_its_attack_with_its_settings(monkeypatch):
    calls = []
    monkeypatch.setattr(E, "pgd", lambda *a, **k: calls.append(("pgd", a, k)) or a[1])
    monkeypatch.setattr(E, "multi_targeted", lambda *a, **k: calls.append(("mt", a, k)) or a[1])
    monkeypatch.setattr(E, "autoattack", lambda *a, **k: calls.append(("aa", a, k)) or a[1])
    model, (x, y), g = _model(), _data(4), torch.Generator().manual_seed(2)
    AttackSpec("pgd", 0.1, 5, 0.03, restarts=2, random_start=False).run(model, x, y, g)
    AttackSpec("multitarget", 0.1, 4, 0.02).run(model, x, y, g, for_accuracy=True)
    AttackSpec("autoattack", 0.1, 9, 0.2).run(model, x, y, torch.Generator().manual_seed(2))
    AttackSpec("autoattack", 0.1, 9, 0.2).run(model, x, y, None, for_accuracy=True)
    (n1, a1, k1), (n2, a2, k2), (n3, a3, k3), (n4, a4, k4) = calls
    assert n1 == "pgd" and a1 == (model, x, y) and k1 == dict(eps=0.1, step_size=0.03, steps=5, random_start=False,
                                                             restarts=2, generator=g, stop_when_fooled=False,
                                                             validate=True, precision="auto")
    assert n2 == "mt" and a2 == (model, x, y) and k2 == dict(eps=0.1, step_size=0.02, steps=4, random_start=True,
                                                            generator=g, stop_when_fooled=True, validate=False,
                                                            precision="auto")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(2)))
    assert n3 == "aa" and a3 == (model, x, y) and k3 == dict(eps=0.1, steps=9, seed=seed, validate=True)
    assert k4 == dict(eps=0.1, steps=9, seed=0, validate=False)  # no generator: seed 0


def _evaluate_written_out(model, x, y, eps, batch, seed):
    """evaluate() from its definition: per batch the clean verdict, then each attack on the points still right,
    from the attack's own stream, each point robust when its attack point keeps the label."""
    out = {"clean": [], "pgd": [], "multitarget": []}
    gens = {n: attack_generator(seed, n) for n in ("pgd", "multitarget")}
    for s in range(0, len(x), batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        ok = predict(model, xb) == yb
        out["clean"].append(ok)
        for name in ("pgd", "multitarget"):
            robust = ok.clone()
            if ok.any():
                if name == "pgd":
                    adv = pgd(model, xb[ok], yb[ok], eps=eps, step_size=2 * eps / 10, steps=10, generator=gens[name])
                else:
                    adv = multi_targeted(model, xb[ok], yb[ok], eps=eps, step_size=2 * eps / 20, steps=20,
                                         generator=gens[name], stop_when_fooled=True)
                robust[ok] = predict(model, adv) == yb[ok]
            out[name].append(robust)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def test_evaluate_equals_its_definition_written_out(capsys):
    model, (x, y) = _model(), _data(30)
    r = evaluate(model, x, y, eps=0.2, batch_size=8, seed=4, progress=False)
    ref = _evaluate_written_out(model, x, y, 0.2, 8, 4)
    assert set(r.correct) == set(ref) and all(np.array_equal(r.correct[k], ref[k]) for k in ref)
    assert 0 < r.adversarial_accuracy["pgd"] < r.clean_accuracy  # the comparison means something
    assert (r.n, r.batch_size, r.seed, r.clean_accuracy) == (30, 8, 4, float(ref["clean"].mean()))
    assert r.adversarial_accuracy == {k: float(ref[k].mean()) for k in ("pgd", "multitarget")}
    # the record as it always was (no key for the any-iterate mode while it is off: the same digests and file names)
    fields = ("name", "eps", "steps", "step_size", "restarts", "random_start")
    assert r.attacks == {s.name: {k: getattr(s, k) for k in fields}
                         for s in (paper_attack("pgd", 0.2), paper_attack("multitarget", 0.2))}
    assert 0 < r.seconds < 60 and "correct" not in r.to_dict() and r.to_dict()["n"] == 30
    assert capsys.readouterr() == ("", "")  # no progress bar when not asked for
    default = evaluate(model, x, y, eps=0.2, attacks=("pgd",))
    assert "evaluate" in capsys.readouterr().err  # shown by default
    assert default.batch_size == 64 and np.array_equal(default.correct["pgd"], _evaluate_written_out(
        model, x, y, 0.2, 64, 0)["pgd"])  # a CPU's default batch, the default seed 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(attacks="pgd"), r"^attacks must be a sequence of names, got the string 'pgd'; write \('pgd',\)$"),
    (dict(attacks=("pgd", "pgd")), r"^each attack may appear once$"),
    (dict(batch_size=0), r"^batch_size must be an integer >= 1, got 0$"),
    (dict(eps=-0.1), r"^eps must be a finite number in \[0, 1\], got -0.1$"),
])
def test_bad_evaluation_arguments_are_named(kwargs, message):
    model, (x, y) = _model(), _data(4)
    with pytest.raises(ValueError, match=message):
        evaluate(model, x, y, **{"eps": 0.1, **kwargs})


def test_labels_the_model_cannot_output_are_refused():
    model, (x, _) = _model(), _data(4)
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 4\), got values in \[0, 7\]$"):
        evaluate(model, x, torch.tensor([0, 7, 1, 2]), eps=0.1)


def test_float64_images_are_evaluated_as_the_model_computes(fmnist_small_model):
    from rll_core.attacks import pgd
    from rll_core.evaluation import evaluate
    from rll_core.lipschitz import local_lipschitz

    model, x, y = fmnist_small_model
    x, y = x[:32], y[:32]
    r32 = evaluate(model, x, y, eps=0.1, attacks=("pgd",), progress=False)
    r64 = evaluate(model, x.double(), y, eps=0.1, attacks=("pgd",), progress=False)
    assert r64.correct["pgd"].tolist() == r32.correct["pgd"].tolist()  # float64 in [0, 1] cast to float32 exactly
    g = torch.Generator().manual_seed(0)
    lip64 = local_lipschitz(model, x.double(), eps=0.1, generator=g)
    assert torch.equal(lip64, local_lipschitz(model, x, eps=0.1, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"^x is torch.float64 but the model computes in torch.float32: pass "
                                         r"x.to\(torch.float32\) \(evaluate and local_lipschitz convert by themselves\)$"):
        pgd(model, x.double(), y, eps=0.1, step_size=0.02, steps=2)


def test_an_evaluation_prints_its_n_and_intervals():
    from rll_core.evaluation import EvalResult
    from rll_core.stats import wilson_interval

    r = EvalResult(n=200, clean_accuracy=0.9, adversarial_accuracy={"pgd": 0.55}, attacks={}, seed=0, seconds=1.0,
                   precision="bf16")
    assert r.interval("pgd") == wilson_interval(0.55, 200) and r.interval() == wilson_interval(0.9, 200)
    lo, hi = wilson_interval(0.55, 200)
    assert str(r) == r.summary() == (f"n = 200: clean 0.900 [{wilson_interval(0.9, 200)[0]:.3f}, "
                                      f"{wilson_interval(0.9, 200)[1]:.3f}], pgd 0.550 [{lo:.3f}, {hi:.3f}] "
                                      "(attack steps in bf16, verdicts in fp32)")


def test_the_summary_gives_the_worst_case_over_the_attacks():
    """The worst case is the points no attack fooled (not the smallest accuracy: two attacks fooling different
    points leave fewer robust than either), with its interval; absent with one attack or without verdicts."""
    from rll_core.evaluation import EvalResult
    from rll_core.stats import wilson_interval

    pgd_ok = np.array([1, 1, 1, 0, 0, 1, 1, 1, 0, 1], bool)  # 0.7
    mt_ok = np.array([1, 0, 1, 1, 0, 1, 1, 0, 0, 1], bool)  # 0.6; robust to both: 0.5
    r = EvalResult(n=10, clean_accuracy=0.8, adversarial_accuracy={"pgd": 0.7, "multitarget": 0.6}, attacks={},
                   seed=0, seconds=1.0, correct={"pgd": pgd_ok, "multitarget": mt_ok})
    assert r.worst_case() == pytest.approx(0.5)
    lo, hi = wilson_interval(0.5, 10)
    assert r.summary().endswith(f", worst case 0.500 [{lo:.3f}, {hi:.3f}]")
    assert EvalResult(n=10, clean_accuracy=0.8, adversarial_accuracy={"pgd": 0.7, "multitarget": 0.6}, attacks={},
                      seed=0, seconds=1.0).worst_case() is None  # read back without verdicts
    assert "worst case" not in EvalResult(n=10, clean_accuracy=0.8, adversarial_accuracy={"pgd": 0.7}, attacks={},
                                          seed=0, seconds=1.0, correct={"pgd": pgd_ok}).summary()
