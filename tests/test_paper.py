"""Section 5 you can trust: the reference's settings pinned value by value, seeded runs bit-identical,
LLR on matched dropout masks, the reference Lipschitz procedure, one eps per run, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rll_core import paper
from rll_core.attacks import pgd
from rll_core.cli import main
from rll_core.evaluation import AttackSpec, evaluate, paper_attack
from rll_core.lipschitz import local_lipschitz
from rll_core.methods import AT, GR, LLR, TRADES, make_method
from rll_core.models import build_model
from rll_core.runs import evaluate_run, robustness_curve, theory_curve, train_run
from rll_core.theory import LipschitzClassifier, astuteness
from rll_core.training import RunMismatch, load_checkpoint

# ----------------------------------------------------------------------------------------------
# the reference's settings, each value as read in its file (yangarbiter/robust-local-lipschitz@656616a)


def test_lr_milestones_follow_get_scheduler():
    # lolip/models/torch_utils/__init__.py, get_scheduler: upper epoch bound -> milestones
    expected = {1: (10, 15), 20: (10, 15), 21: (15, 25), 30: (15, 25), 40: (20, 30), 50: (25, 40), 60: (30, 50),
                70: (40, 60), 80: (30, 50, 70), 120: (40, 80, 100), 160: (40, 80, 120, 140),
                161: (60, 100, 140, 180), 400: (60, 100, 140, 180)}
    for epochs, ms in expected.items():
        assert paper.milestones(epochs) == ms, epochs
    # the datasets' own epoch counts (get_hyper) give the milestones the issue lists
    assert [paper.milestones(paper.SETTINGS[d].epochs) for d in ("mnist", "cifar10", "svhn", "restricted_imagenet")] \
        == [(40, 80, 120, 140), (40, 80, 100), (30, 50), (40, 60)]


def test_dataset_settings_are_the_references():
    s = paper.SETTINGS
    # get_hyper: CNN on MNIST / Fashion-MNIST
    for d in ("mnist", "fashion_mnist"):
        assert (s[d].model, s[d].optimizer, s[d].lr, s[d].momentum, s[d].batch_size, s[d].epochs) == \
            ("cnn001", "sgd", 1e-4, 0.9, 64, 160)
    # WRN-40-10: no momentum (TorchModel's default 0), batch 64, no dropout or augmentation outside Table 4
    for d, epochs in (("cifar10", 120), ("svhn", 60)):
        assert (s[d].model, s[d].optimizer, s[d].momentum, s[d].batch_size, s[d].epochs) == \
            ("wrn-40-10", "sgd", 0.0, 64, epochs)
        assert s[d].dropout is None and s[d].augment is None
    # Restricted ImageNet: -adambs128 rows, lr 1e-2, 70 epochs, RandomCrop(64, padding=8) without flip
    r = s["restricted_imagenet"]
    assert (r.model, r.optimizer, r.lr, r.batch_size, r.epochs, r.augment) == ("resnet50", "adam", 1e-2, 128, 70, "crop8")
    assert paper.EPS == {"mnist": 0.1, "fashion_mnist": 0.1, "cifar10": 0.031, "svhn": 0.031,
                         "restricted_imagenet": 0.005}


@pytest.mark.parametrize("dataset, method, reference_lr", [
    # CIFAR-10: natural, GR (tulip), TRADES at 1e-2; AT and LLR at 1e-2 through -lrem2; RST (advbeta) 1e-3
    ("cifar10", "natural", 1e-2), ("cifar10", "gr", 1e-2), ("cifar10", "trades", 1e-2), ("cifar10", "at", 1e-2),
    ("cifar10", "llr", 1e-2), ("cifar10", "rst", 1e-3),
    # SVHN rows carry no -lrem2: 'adv' and 'llr' in the loss name give 1e-3
    ("svhn", "natural", 1e-2), ("svhn", "trades", 1e-2), ("svhn", "at", 1e-3), ("svhn", "llr", 1e-3),
    ("svhn", "rst", 1e-3), ("mnist", "at", 1e-4), ("mnist", "natural", 1e-4)])
def test_learning_rates_per_method_converted_to_mean_losses(dataset, method, reference_lr):
    # SGD on a summed loss with rate a equals SGD on the mean loss with rate a * batch
    assert paper.lr(dataset, method) == pytest.approx(reference_lr * 64)


def test_adam_rate_is_kept_and_sgd_scaling_is_exact():
    """Adam's step does not depend on the loss scale (so the reference's rate is kept); SGD's needs x batch."""
    assert paper.lr("restricted_imagenet", "at") == 1e-2
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    lin = nn.Linear(5, 3)
    for name, rate_sum, rate_mean in (("sgd", 1e-3, 1e-3 * 8), ("adam", 1e-2, 1e-2)):
        out = []
        for reduction, rate in (("sum", rate_sum), ("mean", rate_mean)):
            m = nn.Linear(5, 3)
            m.load_state_dict(lin.state_dict())
            opt = torch.optim.SGD(m.parameters(), lr=rate) if name == "sgd" else torch.optim.Adam(m.parameters(), lr=rate)
            for _ in range(3):
                opt.zero_grad()
                F.cross_entropy(m(x), y, reduction=reduction).backward()
                opt.step()
            out.append(m.weight.detach())
        assert torch.allclose(out[0], out[1], atol=1e-6), name


def test_method_weights_and_inner_searches():
    # torch_model.py: llr 4/3 (sllr36: 3/6 on Restricted ImageNet), perturb_steps=2, step_size=eps/2;
    # tulip lambd 1, step_size 1e-0; adv nb_iter 10, eps_iter eps/5; trades 10 steps of 2 eps / 10
    assert paper.method_hyper("mnist", "llr") == {"lam": 4.0, "mu": 3.0, "steps": 2, "eps": 0.1, "step_size": 0.05}
    assert paper.method_hyper("restricted_imagenet", "llr")["lam"] == 3.0
    assert paper.method_hyper("restricted_imagenet", "llr")["mu"] == 6.0
    assert paper.method_hyper("cifar10", "gr") == {"lam": 1.0, "h": 1.0}
    assert GR().h == 1.0 and GR().lam == 1.0 and GR(h=0.01).h == 0.01
    at = make_method("at", **paper.method_hyper("svhn", "at"))
    assert (at.eps, at.steps) == (0.031, 10)
    assert paper.step_size(0.1, 10) == pytest.approx(0.1 / 5)
    trades = paper.method_hyper("mnist", "trades")
    assert (trades["beta"], trades["steps"]) == (6.0, 10)
    assert [h for _, h in paper.METHODS if _ == "rst"] == [{"lam": 0.5}, {"lam": 1.0}, {"lam": 2.0}]


def test_table4_rows_have_their_own_dropout_and_augmentation():
    # scripts/Table4.sh: SVHN WRN_40_10_drop50 without augmentation; CIFAR-10 aug01 with and without drop20
    assert paper.table4("svhn") == {"dropout": 0.5, "augment": None}
    assert paper.table4("cifar10") == {"dropout": 0.2, "augment": "crop-flip"}
    assert paper.table4("mnist") == {"dropout": None, "augment": None}
    assert paper.dataset_key("Fashion-MNIST") == "fashion_mnist" and paper.dataset_key("fmnist") == "fashion_mnist"
    with pytest.raises(ValueError, match="unknown dataset 'imagenet21k'"):
        paper.dataset_key("imagenet21k")


# ----------------------------------------------------------------------------------------------
# LLR: one function throughout


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


# ----------------------------------------------------------------------------------------------
# refusals and numpy scalars


def test_unknown_attack_names_are_refused_in_attackspec():
    for name in ("fgsm", "PGD", "multi_targeted"):
        with pytest.raises(ValueError, match=f"unknown attack '{name}'"):
            AttackSpec(name, 0.1, 10, 0.02)
    with pytest.raises(ValueError, match="eps must be a finite number in \\[0, 1\\]"):
        AttackSpec("pgd", 25.0, 10, 0.02)
    with pytest.raises(ValueError, match="restarts apply to pgd only"):
        AttackSpec("multitarget", 0.1, 20, 0.01, restarts=3)
    assert paper_attack("pgd", 0.1, steps=20).step_size == pytest.approx(0.01)


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


def test_theory_classifier_outputs_are_indexed_by_label():
    """Trained on classes {0, 2, 3}: evaluate() and astuteness() agree (1.0 on its own training points)."""
    rng = np.random.default_rng(0)
    x = rng.random((30, 1, 4, 4)).astype(np.float32)
    y = np.repeat(np.array([0, 2, 3]), 10)
    clf = LipschitzClassifier(x, y)
    xt = torch.from_numpy(x).double()
    assert clf(xt).shape == (30, 4)
    res = evaluate(clf, xt, torch.from_numpy(y), eps=clf.r / 2, attacks=["pgd"], progress=False)
    ast = astuteness(clf, xt, torch.from_numpy(y), clf.r / 2)
    assert res.clean_accuracy == ast.accuracy == 1.0
    assert res.adversarial_accuracy["pgd"] == 1.0  # below r nothing can flip it (Theorem 4.2)
    assert int(clf(xt).argmax(1).eq(torch.from_numpy(y)).sum()) == 30


# ----------------------------------------------------------------------------------------------
# the reference's Lipschitz procedure, written out per example


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


# ----------------------------------------------------------------------------------------------
# runs: seeded, one eps, nothing overwritten


def _cli_train(out, *extra):
    return main(["train", "--dataset", "mnist", "--method", "llr", "--epochs", "1", "--n-train", "96", "--n-test",
                 "32", "--batch-size", "32", "--out", str(out), "--no-progress", "--device", "cpu", *extra])


def test_two_cli_runs_with_one_seed_are_bit_identical(tmp_path, mnist):
    """cnn001 with dropout, LLR: weights, optimizer state and metrics equal bit for bit."""
    assert _cli_train(tmp_path / "a") == 0 and _cli_train(tmp_path / "b") == 0
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
    # another seed gives other initial weights
    assert _cli_train(tmp_path / "c", "--seed", "1") == 0
    c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert not torch.equal(a["model"]["features.0.weight"], c["model"]["features.0.weight"])


def test_one_eps_per_run_and_evaluations_never_overwrite(tmp_path, mnist, capsys):
    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="at", eps=0.05, hyper={"steps": 2}, epochs=1, n_train=64, n_test=32,
              n_val=16, batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    settings = json.loads((run / "settings.json").read_text())
    assert settings["eps"] == settings["val_eps"] == 0.05
    best = load_checkpoint(run / "best.pt")
    assert best["settings"]["val_eps"] == 0.05
    row = evaluate_run(run, n_eval=16, device="cpu", progress=False)
    assert row["eps"] == 0.05 and row["evaluation"]["attacks"]["pgd"]["eps"] == 0.05
    row2 = evaluate_run(run, n_eval=16, eps=0.1, attacks=("pgd",), steps=5, restarts=2, device="cpu",
                        progress=False)
    assert row2["evaluation"]["attacks"] == {"pgd": {"name": "pgd", "eps": 0.1, "steps": 5, "step_size": 0.04,
                                                     "restarts": 2, "random_start": True}}
    assert len(list(run.glob("eval-*.json"))) == 2 and len(list(run.glob("eval-*.npz"))) == 2
    first = (run / row["eval_file"]).read_bytes()
    assert evaluate_run(run, n_eval=16, device="cpu", progress=False) == row  # read back, not recomputed
    assert (run / row["eval_file"]).read_bytes() == first
    assert main(["evaluate", str(run), "--checkpoint", "best", "--n-eval", "8", "--eps", "0.05", "--no-progress",
                 "--device", "cpu", "--attacks", "pgd"]) == 0
    assert len(list(run.glob("eval-*.json"))) == 3
    assert main(["evaluate", str(run), "--attacks", "fgsm"]) == 2
    assert "unknown attack 'fgsm'" in capsys.readouterr().err


def test_cli_refuses_bad_numbers_before_work(tmp_path, capsys):
    for argv in (["train", "--lr", "0", "--out", str(tmp_path / "x")], ["train", "--eps", "25", "--out", "x"],
                 ["separation", "--eps", "1e9"], ["evaluate", "x", "--eps", "-0.1"],
                 ["train", "--lr", "nan", "--out", "x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "must be" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_fewer_epochs_than_the_folder_holds_is_refused_and_settings_kept(tmp_path, mnist, capsys):
    run = tmp_path / "run"
    args = ["--method", "natural", "--n-train", "64", "--n-test", "16", "--batch-size", "32"]
    assert main(["train", "--dataset", "mnist", *args, "--epochs", "2", "--out", str(run), "--no-progress",
                 "--device", "cpu"]) == 0
    before = (run / "settings.json").read_bytes()
    assert main(["train", "--dataset", "mnist", *args, "--epochs", "1", "--out", str(run), "--no-progress",
                 "--device", "cpu"]) == 2
    assert "already holds 2 trained epochs, more than the 1 asked" in capsys.readouterr().err
    assert (run / "settings.json").read_bytes() == before
    with pytest.raises(RunMismatch, match="already holds 2"):
        train_run(run, dataset="mnist", method="natural", epochs=1, n_train=64, n_test=16, batch_size=32,
                  device="cpu", progress=False)


def test_validation_needs_an_eps_for_methods_without_one():
    from rll_core.training import train

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = (torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
    with pytest.raises(ValueError, match="val_eps is needed"):
        train(model, data, make_method("natural"), epochs=1, val_data=data, progress=False)
    with pytest.raises(ValueError, match="unknown augmentation"):
        train(model, data, TRADES(eps=0.1), epochs=1, augment="rotate", progress=False)


def test_a_run_without_overrides_stores_the_reference_settings(tmp_path, mnist):
    """train_run fills every unset value from rll_core.paper; settings.json says exactly which."""
    train_run(tmp_path / "llr", dataset="mnist", method="llr", epochs=1, n_train=64, n_test=16, n_val=8,
              device="cpu", progress=False)
    s = json.loads((tmp_path / "llr" / "settings.json").read_text())
    assert (s["optimizer"], s["lr"], s["momentum"], s["batch_size"], s["milestones"]) == \
        ("sgd", pytest.approx(1e-4 * 64), 0.9, 64, [10, 15])
    assert (s["architecture"], s["eps"], s["val_eps"], s["lam"], s["mu"], s["steps"], s["step_size"]) == \
        ("cnn001", 0.1, 0.1, 4.0, 3.0, 2, 0.05)
    assert s["augment"] is None and s["dropout"] is None


def test_robustness_curve_agrees_with_the_evaluation_at_its_radii(tmp_path, mnist):
    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="natural", eps=0.1, epochs=1, n_train=128, n_test=32, n_val=8,
              batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    row = evaluate_run(run, n_eval=24, attacks=("pgd",), device="cpu", progress=False)
    curve = robustness_curve(run, [0.3, 0.1, 0.0], n_eval=24, device="cpu")
    assert curve["eps"] == [0.0, 0.1, 0.3] and curve["n"] == 24
    # eps 0 is the clean accuracy; at the run's eps the same PGD from the same seed gives the same verdicts
    assert curve["accuracy"][:2] == [row["test_accuracy"], row["test_pgd_accuracy"]]
    # each attack has its own random stream: PGD beside multi-targeted (the tables' evaluation, which runs
    # multi-targeted on test only) gives PGD's verdicts alone, point by point, on both splits
    both = evaluate_run(run, n_eval=24, test_only=("multitarget",), device="cpu", progress=False)
    alone, beside = (np.load(run / f"{r['eval_file'][:-5]}.npz") for r in (row, both))
    for split in ("train", "test"):
        assert np.array_equal(alone[f"{split}_pgd"], beside[f"{split}_pgd"])
    assert "test_multitarget" in beside and "train_multitarget" not in beside
    assert "train_multitarget_accuracy" not in both and both["gap_adversarial"] == row["gap_adversarial"]
    with pytest.raises(ValueError, match="not evaluated"):
        evaluate_run(run, n_eval=24, attacks=("pgd",), test_only=("multitarget",), device="cpu")
    (path,) = run.glob("curve-last-e1-n24-*.json")
    before = path.read_bytes()
    assert robustness_curve(run, [0.0, 0.1, 0.3], n_eval=24, device="cpu") == curve  # read back
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="eps"):
        robustness_curve(run, [0.1, 2.0], n_eval=24)
    with pytest.raises(ValueError, match="empty"):
        robustness_curve(run, [], n_eval=24)


def test_theory_curve_is_certified_accuracy_by_radius(mnist):
    train, test = mnist
    tr, te = train.subset(300, seed=0), test.subset(40, seed=0)
    c = theory_curve(tr, te, [0.0, 0.05, 10 ** -9, 0.9], n_eval=40)
    assert c["eps"] == [0.0, 1e-9, 0.05, 0.9] and c["accuracy"][-1] == 0.0
    assert c["accuracy"] == sorted(c["accuracy"], reverse=True)  # certified accuracy cannot grow with eps
    assert c["accuracy"][0] == pytest.approx(float((c["radius"] > 0).mean()))
    d = theory_curve(tr, te, n_eval=40, also=[0.1])  # default radii: 0 .. 1.2 r, and the training eps
    assert d["eps"][0] == 0.0 and d["eps"][-1] == pytest.approx(1.2 * d["r"], abs=1e-3) and 0.1 in d["eps"]
