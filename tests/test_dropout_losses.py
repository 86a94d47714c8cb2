"""Every loss under dropout (the paper's MNIST model has it, and Table 4 is about it): which passes run in
training mode, which in eval mode, which share a dropout mask, and the value and parameter gradient against
the loss written out on those masks.

The network's dropout is a module that draws its mask from the global random stream, as dropout does, and logs
every call: its mode and its mask.  The written-out references evaluate the same weights as a plain function of
(input, mask), so a slip in a mode or a mask (a second draw where one mask is shared, a training-mode search)
changes the log or the value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rll_core.methods as methods
from rll_core.methods import AT, GR, LLR, RST, TRADES

P = 0.5


class LoggedDropout(nn.Module):
    """Inverted dropout whose mask comes from the global stream; every call logs ``(mode, mask)``."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, torch.Tensor | None]] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.log.append(("eval", None))
            return h
        keep = (torch.rand(h.shape[1:], dtype=h.dtype) >= P).to(h.dtype).expand_as(h)
        self.log.append(("train", keep))
        return h * keep / (1 - P)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), LoggedDropout(), nn.Linear(12, 3)).train()


def _f(net: nn.Sequential, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The network as a plain function of its input and a dropout mask (None: eval mode)."""
    h = torch.tanh(x.flatten(1) @ net[1].weight.T + net[1].bias)
    if keep is not None:
        h = h * keep / (1 - P)
    return h @ net[4].weight.T + net[4].bias


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)


def _same_value_and_gradient(net: nn.Module, loss: torch.Tensor, reference: torch.Tensor) -> None:
    params = list(net.parameters())
    got = torch.autograd.grad(loss, params, retain_graph=True)
    want = torch.autograd.grad(reference, params, retain_graph=True)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5, abs=1e-7)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def _modes(net: nn.Sequential) -> list[str]:
    return [m for m, _ in net[3].log]


def test_gr_takes_both_of_its_passes_on_one_mask():
    net, (x, y) = _net(), _batch()
    gr = GR(lam=2.0, h=0.5)
    loss = gr(net, x, y)
    (m1, keep), (m2, keep2) = net[3].log
    assert (m1, m2) == ("train", "train") and torch.equal(keep, keep2)
    xg = x.clone().requires_grad_(True)
    logits = _f(net, xg, keep)
    ce = F.cross_entropy(logits, y, reduction="none")
    (g,) = torch.autograd.grad(ce.sum(), xg, retain_graph=True)
    v = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    ce_h = F.cross_entropy(_f(net, x + 0.5 * v, keep), y, reduction="none")
    ref = F.cross_entropy(logits, y) + 2.0 * (((ce_h - ce) / 0.5) ** 2).mean() / 2
    _same_value_and_gradient(net, loss, ref)
    net[3].log.clear()
    torch.manual_seed(5)
    gr(net, x, y)
    torch.manual_seed(5)
    gr(net, x, y)  # the replay leaves the stream where the first draw left it: a repeat draws the same again
    assert torch.equal(net[3].log[0][1], net[3].log[2][1])


def test_llr_searches_in_eval_mode_and_shares_one_mask_between_its_training_terms(monkeypatch):
    net, (x, y) = _net(), _batch()
    llr = LLR(eps=0.2, lam=4.0, mu=3.0, steps=2)
    found = []
    real = LLR.search
    monkeypatch.setattr(LLR, "search", lambda self, *a: found.append(real(self, *a)) or found[-1])
    loss = llr(net, x, y)
    # training pass, the eval-mode search (its reference pass, then one forward per step), the replayed pass
    assert _modes(net) == ["train", "eval", "eval", "eval", "train"]
    keep, keep2 = net[3].log[0][1], net[3].log[-1][1]
    assert torch.equal(keep, keep2)
    (delta,) = found
    xg = x.clone().requires_grad_(True)
    logits = _f(net, xg, keep)
    ce = F.cross_entropy(logits, y, reduction="none")
    (gx,) = torch.autograd.grad(ce.sum(), xg, create_graph=True)
    lin = (delta * gx).flatten(1).sum(1)
    gamma = (F.cross_entropy(_f(net, x + delta, keep), y, reduction="none") - ce - lin).abs()
    ref = F.cross_entropy(logits, y) + 4.0 * gamma.mean() + 3.0 * lin.abs().mean()
    _same_value_and_gradient(net, loss, ref)
    # the search compares eval-mode values only: at delta = 0 its objective is 0 (not a train/eval difference)
    with methods.eval_mode(net):
        ce0 = F.cross_entropy(_f(net, x, None), y, reduction="none")
        assert torch.allclose(F.cross_entropy(net(x), y, reduction="none"), ce0)


def test_trades_searches_in_eval_mode_and_draws_fresh_masks_for_its_robust_term(monkeypatch):
    """As the official trades_loss: the natural logits and the robust forward are two training-mode passes
    (two masks), the search and its target distribution eval-mode passes."""
    net, (x, y) = _net(), _batch()
    trades = TRADES(eps=0.2, beta=6.0, steps=3)
    found = []
    real = methods.sign_ascent
    monkeypatch.setattr(methods, "sign_ascent", lambda *a, **k: found.append(real(*a, **k)) or found[-1])
    loss = trades(net, x, y)
    assert _modes(net) == ["train", "eval", "eval", "eval", "eval", "train"]  # logits, p_nat, 3 steps, robust
    keep, keep2 = net[3].log[0][1], net[3].log[-1][1]
    assert not torch.equal(keep, keep2)
    (x_adv,) = found
    logits = _f(net, x, keep)
    robust = F.kl_div(F.log_softmax(_f(net, x_adv, keep2), 1), F.softmax(logits, 1), reduction="batchmean")
    _same_value_and_gradient(net, loss, F.cross_entropy(logits, y) + 6.0 * robust)


@pytest.mark.parametrize("method", [AT(eps=0.2, steps=3), RST(eps=0.2, lam=0.5, steps=3)])
def test_at_and_rst_attack_in_eval_mode_and_train_on_fresh_masks(method, monkeypatch):
    net, (x, y) = _net(), _batch()
    found = []
    real = methods.pgd
    monkeypatch.setattr(methods, "pgd", lambda *a, **k: found.append(real(*a, **k)) or found[-1])
    loss = method(net, x, y)
    log = net[3].log
    train = [k for m, k in log if m == "train"]
    if isinstance(method, RST):  # clean pass, the eval-mode PGD, the adversarial pass
        assert _modes(net)[0] == "train" and _modes(net)[-1] == "train" and set(_modes(net)[1:-1]) == {"eval"}
        assert len(train) == 2 and not torch.equal(train[0], train[1])
        (x_adv,) = found
        ref = F.cross_entropy(_f(net, x, train[0]), y) + 0.5 * F.cross_entropy(_f(net, x_adv, train[1]), y)
    else:
        assert set(_modes(net)[:-1]) == {"eval"} and _modes(net)[-1] == "train"
        (x_adv,) = found
        ref = F.cross_entropy(_f(net, x_adv, train[0]), y)
    _same_value_and_gradient(net, loss, ref)
