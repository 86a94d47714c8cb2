"""Training methods against independent computations, the loop (resume, refusal, DDP), and the CLI."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rll_core.cli import main
from rll_core.evaluation import evaluate
from rll_core.methods import AT, GR, LLR, RST, TRADES, Natural, augment_batch, make_method
from rll_core.training import RunMismatch, train


def _tiny(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(4 * 13 * 13, 10))


def _batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _loss_and_grads(method, model, x, y, seed=0):
    torch.manual_seed(seed)
    model.zero_grad()
    loss = method(model, x, y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("off", [TRADES(eps=0.1, beta=0.0), GR(lam=0.0), LLR(eps=0.1, lam=0.0, mu=0.0),
                                 RST(eps=0.1, lam=0.0)])
def test_regulariser_off_is_exactly_natural(off):
    model = _tiny(dropout=0.3).train()
    x, y = _batch()
    ref_loss, ref_grads = _loss_and_grads(Natural(), model, x, y)
    loss, grads = _loss_and_grads(off, model, x, y)
    assert torch.equal(loss, ref_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))
    assert model.training and model[3].training  # mode left as found


def test_gr_is_ce_plus_an_explicit_finite_difference_counted_once():
    model = _tiny().double()
    x, y = _batch(8)
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
    loss, grads = _loss_and_grads(GR(lam=lam, h=h), model, x, y)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-12) for a, b in zip(grads, ref_grads, strict=True))
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(grads, twice, strict=True))


def test_llr_input_gradient_is_real():
    model = _tiny().double().eval()
    x, y = _batch(4)
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
    model = _tiny().double()
    x, y = _batch(8)
    x = x.double()
    base, _ = _loss_and_grads(Natural(), model, x, y)
    l1, g1 = _loss_and_grads(LLR(eps=0.1, lam=4.0, mu=3.0, steps=3), model, x, y)
    l0, g0 = _loss_and_grads(LLR(eps=0.1, lam=0.0, mu=3.0, steps=3), model, x, y)
    assert l1 > l0 > base
    assert not all(torch.allclose(a, b) for a, b in zip(g1, g0, strict=True))


def test_inner_searches_leave_every_module_in_training_mode():
    """AT, TRADES and LLR search in eval mode and hand the model back as they found it, dropout included
    (their values are checked against independent computations in test_structure / test_paper)."""
    model = _tiny(dropout=0.3).train()
    x, y = _batch(8)
    for method in (AT(eps=0.1, steps=2), TRADES(eps=0.1, steps=2), LLR(eps=0.1, steps=2)):
        _loss_and_grads(method, model, x, y)
        assert all(m.training for m in model.modules()), method.name
    model.eval()
    _loss_and_grads(AT(eps=0.1, steps=2), model, x, y)
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


def _fmnist_subset(fmnist, n_train, n_test):
    train_set, test_set = fmnist
    return train_set.subset(n_train, seed=3), test_set.subset(n_test, seed=3)


def test_adversarial_training_is_markedly_more_robust_on_fashion_mnist(fmnist):
    tr, te = _fmnist_subset(fmnist, 2000, 400)
    acc = {}
    for name, method in (("natural", Natural()), ("at", AT(eps=0.1))):
        model = _tiny(seed=1)
        train(model, tr, method, epochs=4, batch_size=32, optimizer="adam", lr=2e-3, seed=0, progress=False)
        r = evaluate(model, te.images, te.labels, eps=0.1, attacks=["pgd"], progress=False)
        acc[name] = (r.clean_accuracy, r.adversarial_accuracy["pgd"])
    assert acc["natural"][0] > 0.6 and acc["at"][0] > 0.5  # both learned
    assert acc["at"][1] > acc["natural"][1] + 0.2, acc


def test_resume_is_bit_identical_and_other_settings_are_refused(tmp_path, fmnist):
    tr, te = _fmnist_subset(fmnist, 192, 64)
    kw = dict(batch_size=32, optimizer="sgd", lr=0.05, milestones=[2], augment=True, seed=5, val_data=te,
              n_val=32, progress=False)
    method = TRADES(eps=0.1, beta=1.0, steps=2)
    straight = _tiny(dropout=0.2, seed=2)
    r_straight = train(straight, tr, method, epochs=3, out_dir=tmp_path / "a", **kw)
    resumed = _tiny(dropout=0.2, seed=2)
    train(resumed, tr, method, epochs=2, out_dir=tmp_path / "b", **kw)
    again = _tiny(dropout=0.2, seed=9)  # weights come from the checkpoint, not from this init
    r_resumed = train(again, tr, method, epochs=3, out_dir=tmp_path / "b", **kw)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), again.state_dict().values(), strict=True))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in r_straight.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in r_resumed.history]
    assert [h["lr"] for h in r_resumed.history] == pytest.approx([0.05, 0.005, 0.005])
    assert (tmp_path / "b" / "best.pt").exists() and r_resumed.best_epoch in (1, 2, 3)
    assert oct((tmp_path / "b" / "last.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    # a different method in the same folder: refused, nothing written
    before = (tmp_path / "b" / "last.pt").read_bytes()
    with pytest.raises(RunMismatch, match="beta: stored 1.0, asked 3.0"):
        train(_tiny(), tr, TRADES(eps=0.1, beta=3.0, steps=2), epochs=4, out_dir=tmp_path / "b", **kw)
    assert (tmp_path / "b" / "last.pt").read_bytes() == before
    # a corrupt checkpoint: one clear error
    (tmp_path / "b" / "last.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(RunMismatch, match="corrupt"):
        train(_tiny(), tr, method, epochs=4, out_dir=tmp_path / "b", **kw)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _ddp_worker(rank: int, port: int, out: str, x, y) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    torch.set_num_threads(1)
    model = _tiny(seed=4)
    train(model, (x, y), Natural(), epochs=1, batch_size=16, lr=0.5, momentum=0.0, seed=0, progress=False)
    assert not dist.is_initialized()  # train() opened the process group, and closed it
    if rank == 0:
        torch.save(model.state_dict(), out)


def test_ddp_with_gloo_matches_a_single_process_step(tmp_path):
    x, y = _batch(16, seed=7)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    torch.multiprocessing.spawn(_ddp_worker, args=(port, out, x, y), nprocs=2, join=True)
    single = _tiny(seed=4)
    train(single, (x, y), Natural(), epochs=1, batch_size=16, lr=0.5, momentum=0.0, seed=0, progress=False)
    ddp = torch.load(out, weights_only=True)
    start = _tiny(seed=4).state_dict()
    for k, v in single.state_dict().items():
        assert not torch.equal(v, start[k])  # the step moved the weights
        assert torch.allclose(ddp[k], v, atol=1e-6), k


def test_cli_train_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--method", "at", "--model", "cnn002", "--epochs", "1", "--n-train", "128", "--n-test", "64",
            "--batch-size", "32", "--lr", "0.05", "--steps", "2", "--out", str(run), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert "trained at for 1 epochs" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--n-eval", "32", "--no-progress", "--device", "cpu"]) == 0
    (path,) = run.glob("eval-*.json")
    assert f"wrote {path}" in capsys.readouterr().out
    row = __import__("json").loads(path.read_text())
    assert row["method"] == "at" and row["settings"]["steps"] == 2 and row["evaluation"]["n_eval"] == 32
    assert row["gap_standard"] == pytest.approx(row["train_accuracy"] - row["test_accuracy"])
    # the row's numbers are the means of the per-example arrays stored beside it
    arrays = np.load(path.with_suffix(".npz"))
    for split in ("train", "test"):
        assert row[f"{split}_accuracy"] == pytest.approx(arrays[f"{split}_clean"].mean())
        assert row[f"{split}_pgd_accuracy"] == pytest.approx(arrays[f"{split}_pgd"].mean())
        assert row[f"{split}_lipschitz"] == pytest.approx(arrays[f"{split}_lipschitz"].mean(), rel=1e-6)
        assert len(arrays[f"{split}_lipschitz_reference"]) == row[f"{split}_n"] == 32
    assert set(row["attack_settings"]) == {"pgd", "multitarget"}
    # --test-only: multi-targeted on the test points only; another file, PGD's verdicts unchanged
    assert main(["evaluate", str(run), "--n-eval", "32", "--test-only", "multitarget", "--no-progress",
                 "--device", "cpu"]) == 0
    (other,) = set(run.glob("eval-*.json")) - {path}
    both = np.load(other.with_suffix(".npz"))
    assert "train_multitarget" not in both and np.array_equal(both["train_pgd"], arrays["train_pgd"])
    assert main(["evaluate", str(run), "--attacks", "pgd", "--test-only", "multitarget"]) == 2
    assert "not evaluated" in capsys.readouterr().err
    for bad, msg in ((["--method", "madry"], "unknown method"),
                     (["--method", "natural", "--beta", "3"], "no hyperparameter beta")):
        assert main(["train", *bad, "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
        assert msg in capsys.readouterr().err
    assert main(["train", "--method", "at", "--lam", "1", "--epochs", "1", "--out", str(run)]) == 2
    assert main(["train", "--method", "at", "--model", "cnn002", "--epochs", "1", "--n-train", "128", "--n-test",
                 "64", "--batch-size", "32", "--lr", "0.1", "--steps", "2", "--out", str(run)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0", "--out", str(run)])
    assert not (tmp_path / "x").exists()


def test_extra_pseudo_labelled_data_enters_every_batch(fmnist):
    """RST's extra data: images labelled 3 by a (pseudo-)labeller, mixed into every batch, pull the
    predictions towards 3 compared with the same training without them."""
    tr, te = _fmnist_subset(fmnist, 256, 200)
    extra = (tr.images[:128], np.full(128, 3, np.int64))
    preds = {}
    for name, kw in (("plain", {}), ("extra", {"extra_data": extra})):
        model = _tiny(seed=6)
        res = train(model, tr, RST(eps=0.1, lam=0.5, steps=1), epochs=2, batch_size=32, optimizer="adam", lr=2e-3,
                    seed=0, progress=False, **kw)
        assert res.settings["n_extra"] == (128 if kw else 0)
        preds[name] = (model.eval()(torch.from_numpy(te.float_images())).argmax(1) == 3).float().mean().item()
    assert preds["extra"] > preds["plain"] + 0.1, preds


@pytest.mark.slow
def test_torch_compile_trains_and_evaluates_like_eager():
    """``compile_model``: the same losses, weights and verdicts as eager mode up to float rounding, and the
    settings say which produced a run (eager runs keep their settings unchanged)."""

    x, y = _batch(96, seed=3)
    runs = {}
    for compiled in (False, True):
        model = _tiny(seed=1)
        res = train(model, (x, y), make_method("at", eps=0.1, steps=2), epochs=1, batch_size=32, lr=0.05,
                    compile_model=compiled, device="cpu", progress=False)
        runs[compiled] = (model, res)
    (m0, r0), (m1, r1) = runs[False], runs[True]
    assert "compile_model" not in r0.settings and r1.settings["compile_model"] is True
    assert r1.history[0]["loss"] == pytest.approx(r0.history[0]["loss"], rel=1e-4)
    for a, b in zip(m0.state_dict().values(), m1.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    e0 = evaluate(m0, x, y, eps=0.1, attacks=("pgd",), seed=0, progress=False)
    e1 = evaluate(m0, x, y, eps=0.1, attacks=("pgd",), seed=0, compile_model=True, progress=False)
    assert e1.clean_accuracy == e0.clean_accuracy
    assert abs(e1.adversarial_accuracy["pgd"] - e0.adversarial_accuracy["pgd"]) <= 2 / len(x)
