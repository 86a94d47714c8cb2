"""Architectures: shapes, parameter counts against closed forms, dropout placement, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rll_core.models import build_model, count_parameters, model_names


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def test_cnn001_sizes_and_dropout():
    m = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    # conv 1->32, conv 32->64, fc 64*12*12 -> 128, fc 128 -> 10
    assert count_parameters(m) == _conv(1, 32, 3) + _conv(32, 64, 3) + (9216 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(m) == 1_199_882
    drops = [(type(d).__name__, d.p) for d in m.modules() if isinstance(d, (nn.Dropout, nn.Dropout2d))]
    assert drops == [("Dropout2d", 0.25), ("Dropout", 0.5)]
    m3 = build_model("cnn001", in_channels=3, num_classes=7, image_size=32, dropout=0.2)
    assert m3(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert [d.p for d in m3.modules() if isinstance(d, (nn.Dropout, nn.Dropout2d))] == [0.1, 0.2]


def _reference_cnn001(x, w):
    """The reference's CNN001.forward written out with torch.nn.functional (eval mode: dropout off):
    conv1 - relu - conv2 - max_pool2d(2) - flatten - fc1 - relu - fc2; no ReLU after conv2."""
    import torch.nn.functional as F

    h = F.relu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]))
    h = F.max_pool2d(F.conv2d(h, w["conv2.weight"], w["conv2.bias"]), 2)
    h = F.relu(F.linear(torch.flatten(h, 1), w["fc1.weight"], w["fc1.bias"]))
    return F.linear(h, w["fc2.weight"], w["fc2.bias"])


def test_cnn001_equals_the_reference_cnn001_with_copied_weights():
    torch.manual_seed(0)
    m = build_model("cnn001", in_channels=1, num_classes=10, image_size=28).eval()
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    fcs = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    w = {}
    for name, mod in zip(("conv1", "conv2", "fc1", "fc2"), convs + fcs, strict=True):
        w[f"{name}.weight"], w[f"{name}.bias"] = mod.weight.detach().clone(), mod.bias.detach().clone()
    # biases shifted negative so that a ReLU after conv2 would clip many activations (and change logits)
    w["conv2.bias"] -= 0.5
    with torch.no_grad():
        convs[1].bias.copy_(w["conv2.bias"])
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(m(x), _reference_cnn001(x, w), atol=1e-5, rtol=1e-5)


def test_cnn002_starts_at_zero_logits():
    m = build_model("cnn002", in_channels=1, num_classes=10, image_size=28)
    expected = (_conv(1, 32, 3) + _conv(32, 32, 3) + _conv(32, 64, 3) + _conv(64, 64, 3)
                + 1024 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10)
    assert count_parameters(m) == expected
    assert torch.equal(m.eval()(torch.rand(3, 1, 28, 28)), torch.zeros(3, 10))


@pytest.mark.parametrize("depth,widen", [(10, 1), (16, 4)])
def test_wide_resnet(depth, widen):
    m = build_model(f"wrn-{depth}-{widen}", in_channels=3, num_classes=10, image_size=32, dropout=0.3)
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    n = (depth - 4) // 6
    drops = [d for d in m.modules() if isinstance(d, nn.Dropout)]
    assert len(drops) == 3 * n and all(d.p == 0.3 for d in drops)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(convs) == 1 + 6 * n  # stem + two per block
    assert max(c.out_channels for c in convs) == 64 * widen
    assert not any(isinstance(d, nn.Dropout) for d in build_model(
        f"wrn-{depth}-{widen}", in_channels=3, num_classes=10, image_size=32).modules())


def test_wrn_40_10_and_resnet50_sizes():
    # WRN-40-10: 55.8M parameters (Zagoruyko & Komodakis, Table 1); ResNet-50: 23.5M + a 9-way head
    assert count_parameters(build_model("wrn-40-10", in_channels=3, num_classes=10, image_size=32)) == 55_841_754
    r = build_model("resnet50", in_channels=3, num_classes=9, image_size=64, dropout=0.1)
    assert count_parameters(r) == 23_508_032 + 2048 * 9 + 9
    assert r.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 9)
    assert sum(isinstance(d, nn.Dropout) for d in r.modules()) == 16  # one per bottleneck block


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*cnn001.*wrn"):
        build_model("vgg", in_channels=1, num_classes=10, image_size=28)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        build_model("wrn-15-2", in_channels=3, num_classes=10, image_size=32)
    with pytest.raises(ValueError, match="dropout"):
        build_model("cnn001", in_channels=1, num_classes=10, image_size=28, dropout=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn001", in_channels=1, num_classes=1, image_size=28)
    with pytest.raises(ValueError, match="at least 16 px"):
        build_model("cnn002", in_channels=1, num_classes=10, image_size=8)
    assert "cnn001" in model_names() and "resnet50" in model_names()
