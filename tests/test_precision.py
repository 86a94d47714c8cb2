"""The precision policy: what "auto" resolves to, that bf16 steers only the gradient passes (every verdict and
reported ratio an fp32 forward), that it leaves the model as it found it, that it is recorded, and the
channels_last max-pool equal to nn.MaxPool2d(2) bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import rll_core.precision as P
from rll_core.attacks import multi_targeted, pgd
from rll_core.evaluation import evaluate
from rll_core.grids import run_name
from rll_core.lipschitz import local_lipschitz
from rll_core.methods import AT, TRADES, Natural
from rll_core.models import MaxPool2x2, build_model
from rll_core.precision import INHERIT, check_precision, layout_for, model_layout, resolve_precision
from rll_core.training import train

from .helpers import batch, tiny


def test_auto_follows_the_hardware_and_the_dtype(monkeypatch):
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu", torch.float64) == "fp32"  # float64 work (Section 4) stays as it is
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu", torch.float64) == "bf16"
    monkeypatch.setattr(P, "cpu_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for outright: emulated, but kept
    for cc, want in (((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, cc=cc: cc)
        assert resolve_precision("auto", "cuda") == want, cc
    with pytest.raises(ValueError, match=r"^precision must be one of auto, fp32, bf16, got 'fp16'$"):
        check_precision("fp16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("bfloat16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'inherit'"):
        check_precision("inherit")  # the package's own inherit value is not a user's setting


def test_inherit_follows_the_surrounding_autocast():
    assert resolve_precision(INHERIT, "cpu") == "fp32"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert resolve_precision(INHERIT, "cpu") == "bf16"
    with torch.autocast("cpu", dtype=torch.float16):
        assert resolve_precision(INHERIT, "cpu") == "fp32"


@pytest.mark.native_bf16
def test_this_cpu_is_read_from_its_own_flags():
    flags = P._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags here")
    assert P.cpu_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert resolve_precision("auto", "cpu") == ("bf16" if P.cpu_native_bf16() else "fp32")
    desc = P.cpu_description()
    assert "torch " in desc and all(f in desc for f in ("avx2", "avx512_bf16") if f in flags)


@pytest.mark.parametrize("shape", [(3, 64, 24, 24), (2, 5, 7, 9), (1, 1, 2, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("nhwc", [False, True])
def test_the_max_pool_equals_torchs_bit_for_bit(shape, dtype, nhwc):
    """Values, gradients (so indices: ties included, quantised pixels make many) and the layout kept."""
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randint(0, 4, shape, generator=g).to(dtype) / 4)  # few levels: ties in most windows
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    cot = torch.randn(x.shape[0], x.shape[1], x.shape[2] // 2, x.shape[3] // 2, generator=g).to(dtype)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, ref = MaxPool2x2()(a), nn.MaxPool2d(2)(b)
    assert torch.equal(ours, ref) and ours.is_contiguous() == ref.is_contiguous()
    ours.backward(cot)
    ref.backward(cot)
    assert torch.equal(a.grad, b.grad)
    with torch.no_grad():  # the path without indices
        assert torch.equal(MaxPool2x2()(x), nn.MaxPool2d(2)(x))
    assert torch.equal(MaxPool2x2()(x[0]), nn.MaxPool2d(2)(x[0]))  # unbatched (3-D) input


class _Spy(nn.Module):
    """Records, for every forward, whether it ran under bf16 autocast and whether it can be differentiated."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x):
        self.calls.append((torch.is_autocast_enabled("cpu"), torch.is_grad_enabled() and x.requires_grad))
        return self.net(x)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn001", num_classes=10, in_channels=1, image_size=28).eval()


def test_bf16_runs_the_gradient_passes_only_and_every_verdict_in_fp32():
    x, y = batch(24, seed=1)
    spy = _Spy(_cnn())
    r = evaluate(spy, x, y, eps=0.1, attacks=["pgd", "multitarget"], precision="bf16", progress=False)
    assert r.precision == "bf16"
    steps = [a for a, grad in spy.calls if grad]
    verdicts = [a for a, grad in spy.calls if not grad]
    assert steps and all(steps) and verdicts and not any(verdicts)
    spy.calls.clear()
    r32 = evaluate(spy, x, y, eps=0.1, attacks=["pgd"], precision="fp32", progress=False)
    assert r32.precision == "fp32" and not any(a for a, _ in spy.calls)
    spy.calls.clear()  # PGD's restarts: the verdict that keeps a restart's point is an fp32 forward too
    pgd(spy, x, y, eps=0.1, step_size=0.02, steps=3, restarts=2, precision="bf16")
    assert [a for a, grad in spy.calls if not grad] == [False, False]


def test_bf16_steps_differ_from_fp32_ones_and_leave_the_model_untouched():
    model = _cnn()
    before = {k: (v.data_ptr(), v.stride(), v.clone()) for k, v in model.state_dict().items()}
    x, y = batch(16, seed=2)
    a32 = pgd(model, x, y, eps=0.1, step_size=0.02, steps=5, precision="fp32",
              generator=torch.Generator().manual_seed(0))
    a16 = pgd(model, x, y, eps=0.1, step_size=0.02, steps=5, precision="bf16",
              generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a32, a16)  # it did run in bf16
    assert a16.is_contiguous() and a16.dtype == x.dtype  # returned in the caller's layout
    assert float((a16 - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(a16.min()) and float(a16.max()) <= 1
    mt = multi_targeted(model, x, y, eps=0.1, step_size=0.02, steps=3, precision="bf16")
    assert float((mt - x).abs().max()) <= 0.1 + 1e-6
    for k, v in model.state_dict().items():  # the same storage, layout and values: NHWC weights were a view
        ptr, stride, val = before[k]
        assert (v.data_ptr(), v.stride()) == (ptr, stride) and torch.equal(v, val), k


def test_model_layout_puts_every_weight_back_even_after_an_error():
    model = _cnn()
    conv = model.features[2].weight  # (64, 32, 3, 3): its NCHW and NHWC strides differ
    ptr = conv.data_ptr()
    with pytest.raises(RuntimeError, match="inside"), model_layout(model, "bf16"):
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        raise RuntimeError("inside")
    assert conv.is_contiguous() and conv.data_ptr() == ptr
    with model_layout(model, "fp32"):
        assert conv.is_contiguous()
    x = torch.rand(2, 1, 4, 4)
    assert layout_for(x, "fp32") is x and layout_for(x, "bf16").is_contiguous(memory_format=torch.channels_last)
    assert layout_for(x[0], "bf16") is x[0] or layout_for(x[0], "bf16").shape == x[0].shape


def _linear(d=12, k=10, seed=2):
    torch.manual_seed(seed)
    return nn.Linear(d, k)


def test_bf16_lipschitz_reaches_the_linear_constant_and_reports_fp32_ratios():
    """The case a bf16 forward cannot resolve (logits 0.001 apart at the start): the sign of the difference is
    fp32's, so the ascent reaches the exact constant as fp32 does, and never reports more."""
    import itertools
    lin = _linear()
    w = lin.weight.detach().double()
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=12)), dtype=torch.float64)
    true = (signs @ w.T).abs().sum(1).max().item()
    x = torch.rand(6, 12) * 0.6 + 0.2
    est = local_lipschitz(lin, x, eps=0.1, restarts=32, precision="bf16", generator=torch.Generator().manual_seed(2))
    assert float(est.max()) <= true * (1 + 1e-5) and float(est.min()) >= 0.99 * true
    flat = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nn.init.ones_(flat[1].weight)
    est = local_lipschitz(flat, torch.rand(5, 4) * 0.5 + 0.25, eps=0.1, precision="bf16")
    assert torch.allclose(est, torch.full((5,), 8.0), rtol=1e-4)


def test_bf16_lipschitz_ratios_are_fp32_forwards():
    """Per restart: the steps (forward and backward) in bf16, which rank the iterates against one bf16 f(x); the
    fp32 forwards: f(x), the start (the first step's direction), then the best-ranked and the last iterate."""
    spy = _Spy(_cnn())
    x, _ = batch(8, seed=3)
    est = local_lipschitz(spy, x, eps=0.1, steps=4, restarts=2, precision="bf16")
    steps = [a for a, grad in spy.calls if grad]
    no_grad = [a for a, grad in spy.calls if not grad]
    assert steps == [True] * 8 and sorted(no_grad) == [False] * 7 + [True]
    e32 = local_lipschitz(spy, x, eps=0.1, steps=4, precision="fp32")
    assert torch.allclose(est, e32, rtol=0.2) and not torch.equal(est, e32)
    # the reference procedure stays fp32 whatever is asked
    spy.calls.clear()
    local_lipschitz(spy, x, eps=0.1, steps=2, procedure="reference", precision="bf16")
    assert not any(a for a, _ in spy.calls)


def test_training_records_its_precision_and_its_inner_search_follows_it(tmp_path):
    x, y = batch(16, seed=4)
    kw = dict(epochs=1, batch_size=8, lr=0.1, progress=False, seed=0)
    r32 = train(tiny(), (x, y), Natural(), precision="fp32", **kw)
    assert r32.settings["amp"] is False and "precision" not in r32.settings
    spy = _Spy(tiny())
    r16 = train(spy, (x, y), AT(eps=0.1, steps=2), precision="bf16", **kw)
    assert r16.settings["amp"] is True and r16.settings["precision"] == "bf16"
    assert spy.calls and all(a for a, _ in spy.calls)  # the inner PGD inherits the step's bf16
    spy = _Spy(tiny())
    train(spy, (x, y), TRADES(eps=0.1, beta=1.0, steps=2), precision="fp32", **kw)
    assert spy.calls and not any(a for a, _ in spy.calls)
    with pytest.raises(ValueError, match="precision must be one of"):
        train(tiny(), (x, y), Natural(), precision="half", **kw)


def test_a_bf16_run_gets_its_own_name():
    kw = dict(eps=0.1, n_train=100, epochs=2, seed=0)
    fp32 = run_name("mnist", "cnn001", "at", {}, None, "quick", **kw)
    assert run_name("mnist", "cnn001", "at", {}, None, "quick", precision="fp32", **kw) == fp32
    assert run_name("mnist", "cnn001", "at", {}, None, "quick", precision="bf16", **kw) == fp32 + "-bf16"
    assert not fp32.endswith("fp32")  # fp32 runs keep the names they always had
    assert Path(fp32).name == fp32


def test_the_cli_takes_a_precision_and_keeps_each_in_its_own_file(tmp_path, mnist, capsys):
    from rll_core.cli import main
    run = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--method", "at", "--steps", "2", "--epochs", "1", "--n-train", "64",
                 "--n-test", "32", "--batch-size", "32", "--out", str(run), "--no-progress", "--device", "cpu",
                 "--precision", "bf16"]) == 0
    settings = __import__("json").loads((run / "settings.json").read_text())
    assert settings["precision"] == "bf16" and settings["amp"] is True
    # the line a reader takes: the validation accuracies with their n and intervals (was "val_accuracy 0.8900")
    n_val = settings["n_val"]
    out = capsys.readouterr().out
    assert f"(n = {n_val} validation points, 95 % Wilson intervals)" in out and "validation PGD accuracy 0." in out
    ev = ["evaluate", str(run), "--n-eval", "8", "--attacks", "pgd", "--no-progress", "--device", "cpu"]
    assert main([*ev, "--precision", "fp32"]) == 0 and main([*ev, "--precision", "bf16"]) == 0
    records = [__import__("json").loads(p.read_text())["evaluation"] for p in sorted(run.glob("eval-*.json"))]
    assert sorted(r.get("precision", "fp32") for r in records) == ["bf16", "fp32"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*ev, "--precision", "fp16"])
    assert e.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_a_caption_says_which_rows_took_bf16_steps():
    from rll_core.plotting import context_line
    from rll_core.tables import caption
    fp32 = {"method": "at", "dataset": "mnist", "eps": 0.1, "settings": {"dataset": "mnist"}, "evaluation": {}}
    bf16 = {**fp32, "settings": {"dataset": "mnist", "precision": "bf16"}, "evaluation": {"precision": "bf16"}}
    theory = {"method": "theory", "settings": {}, "evaluation": {}}
    assert "bf16" not in caption([fp32, theory]) and "bf16" not in context_line([fp32])
    assert caption([bf16, theory]).endswith(
        "Gradient passes in bf16 (training: every run; attacks and Lipschitz ascent: every run); every verdict and "
        "reported Lipschitz ratio in fp32.")
    mixed = {**fp32, "evaluation": {"precision": "bf16"}}
    assert "(training: none; attacks and Lipschitz ascent: some runs)" in caption([mixed, fp32])
    assert context_line([bf16]).endswith(" · bf16 gradient steps")


def test_a_one_channel_image_runs_its_bf16_pass_in_nhwc_throughout():
    """A one-channel image is contiguous in both layouts and contiguous(channels_last) keeps its NCHW strides, so the
    first convolution's activations came out NCHW while the gradient from the NHWC layers above came back NHWC: the
    ReLU's backward between them ran on mixed layouts, 15-30x slower.  layout_for gives it NHWC strides (the same
    values), and every 4-D activation of cnn001's bf16 pass is then NHWC."""
    from rll_core.models import build_model
    from rll_core.precision import autocast, layout_for, model_layout

    x = torch.rand(4, 1, 28, 28)
    z = layout_for(x, "bf16")
    assert torch.equal(z, x) and z.stride() == (784, 1, 28, 1) and layout_for(x, "fp32") is x
    assert layout_for(torch.rand(2, 3, 8, 8), "bf16").is_contiguous(memory_format=torch.channels_last)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28).eval()
    seen = []
    for m in model.features:
        m.register_forward_hook(lambda mod, i, o: seen.append(o) if o.ndim == 4 else None)
    with model_layout(model, "bf16"), autocast("bf16", "cpu"):
        model(z.requires_grad_(True)).float().sum().backward()
    assert len(seen) >= 3 and all(o.stride(1) == 1 for o in seen), [o.stride() for o in seen]
