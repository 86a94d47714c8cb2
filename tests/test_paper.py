"""The reference's settings (yangarbiter/robust-local-lipschitz@656616a): each value of rll_core.paper checked
against what the reference's own files say (its run names decoded by its naming rules, get_scheduler's table,
Table4.sh's rows), and the conversion of its summed-loss learning rates."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rll_core import paper
from rll_core.methods import GR, make_method

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


#: The run names the reference trains for Tables 2 and 3, as params.py lists them (mnistLip, cifarLip's first
#: grid, svhnLip's rows without dropout, resImgLips' ResNet50 grid), with each dataset's eps there.
REFERENCE_RUNS = {
    "mnist": (0.1, ["advbeta2ce-tor-CNN001", "advbetace-tor-CNN001", "advbeta.5ce-tor-CNN001", "strades6ce-tor-CNN001",
                    "strades3ce-tor-CNN001", "stradesce-tor-CNN001", "tulipce-tor-CNN001", "ce-tor-CNN001",
                    "advce-tor-CNN001", "sllrce-tor-CNN001"]),
    "cifar10": (0.031, ["ce-tor-WRN_40_10", "advbeta2ce-tor-WRN_40_10", "advbetace-tor-WRN_40_10",
                        "advbeta.5ce-tor-WRN_40_10", "tulipce-tor-WRN_40_10", "stradesce-tor-WRN_40_10",
                        "strades3ce-tor-WRN_40_10", "strades6ce-tor-WRN_40_10", "advce-tor-WRN_40_10-lrem2",
                        "sllrce-tor-WRN_40_10-lrem2"]),
    "svhn": (0.031, ["ce-tor-WRN_40_10", "advbeta2ce-tor-WRN_40_10", "advbetace-tor-WRN_40_10",
                     "advbeta.5ce-tor-WRN_40_10", "stradesce-tor-WRN_40_10", "strades3ce-tor-WRN_40_10",
                     "strades6ce-tor-WRN_40_10", "tulipce-tor-WRN_40_10", "advce-tor-WRN_40_10", "sllrce-tor-WRN_40_10"]),
    "restricted_imagenet": (0.005, [f"{m}ce-tor-ResNet50-adambs128" for m in (
        "", "advbeta2", "advbeta", "advbeta.5", "strades", "strades3", "strades6", "adv", "sllr36", "tulip")]),
}


def _decode(run: str, dataset: str) -> tuple[tuple[str, dict[str, float]], dict[str, float | str]]:
    """A reference run name as the reference reads it: the loss (advbetaK = RST lambda K, stradesK = TRADES beta K,
    K = 1 when absent; tulip = GR; sllr = LLR, sllr36 its lambda 3 / mu 6; adv = AT; plain ce = natural), then
    get_hyper's settings for the dataset and architecture with the name's suffixes (adam, bs128, lrem2) applied."""
    loss, _, rest = run.partition("-tor-")
    arch, *suffix = rest.split("-")
    m = re.fullmatch(r"(advbeta|strades|tulip|sllr|adv|)([0-9.]*)ce", loss)
    assert m, run
    name = {"advbeta": "rst", "strades": "trades", "tulip": "gr", "sllr": "llr", "adv": "at", "": "natural"}[m[1]]
    k = float(m[2] or 1) if name in ("rst", "trades") else None
    hyper = {"rst": {"lam": k}, "trades": {"beta": k}}.get(name, {})
    if name == "llr" and m[2] == "36":
        assert (paper.method_hyper(dataset, "llr")["lam"], paper.method_hyper(dataset, "llr")["mu"]) == (3.0, 6.0)
    cnn = "CNN" in arch
    hp: dict[str, float | str] = {"optimizer": "sgd", "momentum": 0.9 if cnn else 0.0, "batch_size": 64}
    hp["epochs"] = 160 if cnn else {"cifar10": 120, "svhn": 60, "restricted_imagenet": 70}[dataset]
    hp["lr"] = 1e-4 if cnn else 1e-2 if dataset == "restricted_imagenet" or name not in ("at", "llr", "rst") else 1e-3
    for sfx in suffix:
        hp["optimizer"] = "adam" if "adam" in sfx else hp["optimizer"]
        hp["batch_size"] = 128 if "bs128" in sfx else hp["batch_size"]
        hp["lr"] = 1e-2 if "lrem2" in sfx else hp["lr"]
    return (name, hyper), hp


@pytest.mark.parametrize("dataset", sorted(REFERENCE_RUNS))
def test_the_settings_are_the_ones_the_reference_runs_decode_to(dataset):
    """Each dataset's rows, eps, optimizer, rate, batch, momentum and epochs, from the reference's own run names
    and get_hyper's rules (lolip/models/__init__.py), not restated: a wrong constant in paper.py breaks it."""
    eps, runs = REFERENCE_RUNS[dataset]
    assert paper.eps_for(dataset) == eps
    decoded = [_decode(r, dataset) for r in runs]
    assert sorted(repr(m) for m, _ in decoded) == sorted(repr((n, dict(h))) for n, h in paper.METHODS)
    s = paper.SETTINGS[dataset]
    for (name, _), hp in decoded:
        assert (s.optimizer, s.momentum, s.batch_size, s.epochs) == (hp["optimizer"], hp["momentum"], hp["batch_size"],
                                                                      hp["epochs"]), (dataset, name)
        rate = paper.lr(dataset, name, s.optimizer, s.batch_size)
        assert rate == pytest.approx(hp["lr"] * (s.batch_size if s.optimizer == "sgd" else 1)), (dataset, name)


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


# ----------------------------------------------------------------------------------------------
# refusals and numpy scalars


# ----------------------------------------------------------------------------------------------
# the reference's Lipschitz procedure, written out per example


# ----------------------------------------------------------------------------------------------
# runs: seeded, one eps, nothing overwritten


