"""The training loop: seeded, resumable and bit-identical, refusals, DDP, extra data, channels_last, bf16, compile."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rll_core.evaluation import evaluate
from rll_core.methods import AT, RST, TRADES, Natural, make_method
from rll_core.training import RunMismatchError, train
from tests.helpers import batch, tiny


def _fmnist_subset(fmnist, n_train, n_test):
    train_set, test_set = fmnist
    return train_set.subset(n_train, seed=3), test_set.subset(n_test, seed=3)


def test_adversarial_training_is_markedly_more_robust_on_fashion_mnist(fmnist):
    tr, te = _fmnist_subset(fmnist, 2000, 400)
    acc = {}
    for name, method in (("natural", Natural()), ("at", AT(eps=0.1))):
        model = tiny(seed=1)
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
    straight = tiny(dropout=0.2, seed=2)
    r_straight = train(straight, tr, method, epochs=3, out_dir=tmp_path / "a", **kw)
    resumed = tiny(dropout=0.2, seed=2)
    train(resumed, tr, method, epochs=2, out_dir=tmp_path / "b", **kw)
    again = tiny(dropout=0.2, seed=9)  # weights come from the checkpoint, not from this init
    r_resumed = train(again, tr, method, epochs=3, out_dir=tmp_path / "b", **kw)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), again.state_dict().values(), strict=True))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in r_straight.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in r_resumed.history]
    assert [h["lr"] for h in r_resumed.history] == pytest.approx([0.05, 0.005, 0.005])
    assert (tmp_path / "b" / "best.pt").exists() and r_resumed.best_epoch in (1, 2, 3)
    assert oct((tmp_path / "b" / "last.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    # a different method in the same folder: refused, nothing written
    before = (tmp_path / "b" / "last.pt").read_bytes()
    with pytest.raises(RunMismatchError, match="beta: stored 1.0, asked 3.0"):
        train(tiny(), tr, TRADES(eps=0.1, beta=3.0, steps=2), epochs=4, out_dir=tmp_path / "b", **kw)
    assert (tmp_path / "b" / "last.pt").read_bytes() == before
    # a corrupt checkpoint: one clear error
    (tmp_path / "b" / "last.pt").write_bytes(before[: len(before) // 2])
    with pytest.raises(RunMismatchError, match="corrupt"):
        train(tiny(), tr, method, epochs=4, out_dir=tmp_path / "b", **kw)


def test_validating_every_kth_epoch_leaves_the_weights_as_they_are(tmp_path, fmnist):
    """Validation draws from streams of its own: a run validated after epochs 2 and 3 (val_every=2, and the last)
    ends with the weights of the run validated after every epoch; best.pt is picked among the validated epochs."""
    tr, te = _fmnist_subset(fmnist, 96, 64)
    kw = dict(batch_size=32, optimizer="sgd", lr=0.05, seed=5, val_data=te, n_val=32, progress=False, epochs=3)
    every, sparse = tiny(dropout=0.2, seed=2), tiny(dropout=0.2, seed=2)
    r_every = train(every, tr, AT(eps=0.1, steps=2), out_dir=tmp_path / "every", **kw)
    r_sparse = train(sparse, tr, AT(eps=0.1, steps=2), out_dir=tmp_path / "sparse", val_every=2, **kw)
    assert all(torch.equal(a, b) for a, b in zip(every.state_dict().values(), sparse.state_dict().values(), strict=True))
    assert ["val_accuracy" in h for h in r_every.history] == [True, True, True]
    assert ["val_accuracy" in h for h in r_sparse.history] == [False, True, True]
    assert r_sparse.best_epoch in (2, 3) and r_sparse.settings["val_every"] == 2 and "val_every" not in r_every.settings
    with pytest.raises(ValueError, match="val_every must be an integer >= 1"):
        train(tiny(), tr, Natural(), val_every=0, **kw)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _ddp_worker(rank: int, port: int, out: str, x, y) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    torch.set_num_threads(1)
    model = tiny(seed=4)
    train(model, (x, y), Natural(), epochs=1, batch_size=16, lr=0.5, momentum=0.0, seed=0, progress=False,
          precision="fp32")
    assert not dist.is_initialized()  # train() opened the process group, and closed it
    if rank == 0:
        torch.save(model.state_dict(), out)


def test_ddp_with_gloo_matches_a_single_process_step(tmp_path):
    x, y = batch(16, seed=7)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    torch.multiprocessing.spawn(_ddp_worker, args=(port, out, x, y), nprocs=2, join=True)
    single = tiny(seed=4)
    train(single, (x, y), Natural(), epochs=1, batch_size=16, lr=0.5, momentum=0.0, seed=0, progress=False,
          precision="fp32")
    ddp = torch.load(out, weights_only=True)
    start = tiny(seed=4).state_dict()
    for k, v in single.state_dict().items():
        assert not torch.equal(v, start[k])  # the step moved the weights
        assert torch.allclose(ddp[k], v, atol=1e-6), k


def test_extra_pseudo_labelled_data_enters_every_batch(fmnist):
    """RST's extra data: images labelled 3 by a (pseudo-)labeller, mixed into every batch, pull the
    predictions towards 3 compared with the same training without them."""
    tr, te = _fmnist_subset(fmnist, 256, 200)
    extra = (tr.images[:128], np.full(128, 3, np.int64))
    preds = {}
    for name, kw in (("plain", {}), ("extra", {"extra_data": extra})):
        model = tiny(seed=6)
        res = train(model, tr, RST(eps=0.1, lam=0.5, steps=1), epochs=2, batch_size=32, optimizer="adam", lr=2e-3,
                    seed=0, progress=False, **kw)
        assert res.settings["n_extra"] == (128 if kw else 0)
        preds[name] = (model.eval()(torch.from_numpy(te.float_images())).argmax(1) == 3).float().mean().item()
    assert preds["extra"] > preds["plain"] + 0.1, preds


@pytest.mark.slow
def test_torch_compile_trains_and_evaluates_like_eager():
    """``compile_model``: the same losses, weights and verdicts as eager mode up to float rounding, and the
    settings say which produced a run (eager runs keep their settings unchanged)."""

    x, y = batch(96, seed=3)
    runs = {}
    for compiled in (False, True):
        model = tiny(seed=1)
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


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_train_takes_a_plain_loss_function_and_leaves_the_global_rng_alone():
    def smooth_ce(model, x, y):
        return F.cross_entropy(model(x), y, label_smoothing=0.1)

    model, data = _conv(), _data()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    res = train(model, data, smooth_ce, epochs=1, batch_size=8, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert res.settings["method"] == "smooth_ce"
    with pytest.raises(ValueError, match="loss callable"):
        train(_conv(), _data(), "natural", epochs=1, progress=False)  # type: ignore[arg-type]


def test_channels_last_gives_the_same_weights_and_bf16_stays_close():
    x, y = _data(64)
    plain, nhwc, bf16 = _conv(), _conv(), _conv()
    kw = dict(epochs=1, batch_size=16, optimizer="adam", lr=1e-2, progress=False, device="cpu")
    train(plain, (x, y), Natural(), **kw)
    train(nhwc, (x, y), Natural(), channels_last=True, **kw)
    r = train(bf16, (x, y), Natural(), precision="bf16", **kw)
    assert r.settings["amp"] is True and r.settings["precision"] == "bf16"  # the record's keys as before
    for (k, a), b, c in zip(plain.state_dict().items(), nhwc.state_dict().values(), bf16.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-5), k
        assert torch.allclose(a, c, atol=0.05), k  # bf16 rounds; 4 Adam steps stay near the float32 ones
        assert not torch.equal(a, c), k  # and it did run in bf16


def test_validation_needs_an_eps_for_methods_without_one():
    from rll_core.training import train

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = (torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,)))
    with pytest.raises(ValueError, match="val_eps is needed"):
        train(model, data, make_method("natural"), epochs=1, val_data=data, progress=False)
    with pytest.raises(ValueError, match="unknown augmentation"):
        train(model, data, TRADES(eps=0.1), epochs=1, augment="rotate", progress=False)
