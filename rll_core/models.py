"""The paper's classifiers (Section 5), built by name: ``build_model("wrn-16-4", in_channels=3, ...)``.

Every model takes images in [0, 1], shape ``(N, C, H, W)``, with no hidden normalisation (so an
L-inf radius means the same thing on the input as in the paper), and returns logits ``(N, classes)``.

* ``cnn001``: the paper's MNIST network, ``CNN001`` of the reference code (``lolip/models/torch_utils/
  archs.py``): conv 32 - ReLU - conv 64 - max-pool - dropout2d - fc 128 - ReLU - dropout - fc.  Unlike the
  PyTorch MNIST example it derives from, there is no ReLU after the second convolution.
* ``cnn002``: the small CNN of the TRADES repository (4 convolutions, 2 pools, fc 200 - dropout - fc
  200 - fc, last layer initialised to zero).
* ``wrn-D-W``: wide ResNet (Zagoruyko & Komodakis 2016), depth ``D = 6n + 4``, widen factor ``W``;
  the paper uses WRN-40-10 on CIFAR-10 and SVHN.  Dropout sits between the two convolutions of
  each block.
* ``resnet50``: bottleneck ResNet-50 (He et al. 2016) for 64 px Restricted ImageNet; dropout sits
  before the last (1x1) convolution of each bottleneck block.

``dropout=None`` keeps an architecture's own dropout (``cnn001``: 0.25 after the convolutions, 0.5
before the last layer; ``cnn002``: 0.5; the ResNets: none).  A number ``p`` sets it: the ResNets get
dropout ``p`` in every block (the paper: 0.2 on CIFAR-10, 0.5 on SVHN), ``cnn002`` gets ``p``, and
``cnn001`` gets ``p`` before the last layer and ``p / 2`` after the convolutions (the classic pair for
``p = 0.5``).  ``dropout=0`` removes all dropout.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import is_real

__all__ = ["CNN001", "CNN002", "MODELS", "MaxPool2x2", "ResNet50", "WideResNet", "build_model", "check_model",
           "OWN_DROPOUT", "count_parameters", "dropout_label", "model_names"]

#: each architecture's own dropout (``dropout=None``), in words
OWN_DROPOUT = {"cnn001": "0.25 after the convolutions, 0.5 before the last layer", "cnn002": "0.5"}

Builder = Callable[[int, int, int, "float | None"], nn.Module]


def _layout(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for an NHWC tensor, else the contiguous (NCHW) format."""
    nhwc = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max-pool, stride 2, through PyTorch's channels_last kernel (on a CPU its NCHW kernel is about 30x
    slower for cnn001's 64-channel maps); indices only when a backward needs them.  The same values, the same
    indices (first maximum in scan order) and so the same gradients as ``nn.MaxPool2d(2)``, bit for bit."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        fmt = _layout(x)
        out, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), [2, 2],
                                                          [2, 2], [0, 0], [1, 1], False)
        ctx.save_for_backward(x, idx)
        ctx.fmt = fmt
        return out.contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, idx = ctx.saved_tensors
        fmt = ctx.fmt
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(memory_format=fmt), x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx.contiguous(memory_format=fmt))


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` with the same results bit for bit, several times faster on a CPU (see
    :class:`_MaxPool2x2`); no parameters, so checkpoints of either load into the other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            return F.max_pool2d(x, 2)
        if torch.is_grad_enabled() and x.requires_grad:
            out: torch.Tensor = _MaxPool2x2.apply(x)
            return out
        # no backward will come: no indices
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous(memory_format=_layout(x))


def _check_dropout(p: float | None) -> None:
    if p is not None and not (is_real(p) and 0.0 <= p < 1.0):
        raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")


def _conv_out(size: int, *shrinks: Callable[[int], int]) -> int:
    for f in shrinks:
        size = f(size)
    return size


class CNN001(nn.Module):
    """conv3x3 32 - ReLU - conv3x3 64 - maxpool 2 - dropout2d - fc 128 - ReLU - dropout - fc (valid padding).

    As the reference's ``CNN001``: no activation between the second convolution and the max-pool.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float | None = None):
        super().__init__()
        p = 0.5 if dropout is None else dropout
        side = _conv_out(image_size, lambda s: s - 4, lambda s: s // 2)
        if side < 1:
            raise ValueError(f"cnn001 needs images of at least 6 px, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), MaxPool2x2(),
            nn.Dropout2d(p / 2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(p),
                                        nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def bound_layers(self) -> list[nn.Module]:
        """The layers whose composition :meth:`forward` is (for :mod:`rll_core.certify`)."""
        return [*self.features, *self.classifier]


class CNN002(nn.Module):
    """TRADES' small CNN: conv 32, conv 32, pool, conv 64, conv 64, pool, fc 200, dropout, fc 200, fc."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float | None = None):
        super().__init__()
        p = 0.5 if dropout is None else dropout
        side = _conv_out(image_size, lambda s: s - 4, lambda s: s // 2, lambda s: s - 4, lambda s: s // 2)
        if side < 1:
            raise ValueError(f"cnn002 needs images of at least 16 px, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), MaxPool2x2(),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), MaxPool2x2(), nn.Flatten())
        last = nn.Linear(200, num_classes)
        self.classifier = nn.Sequential(nn.Linear(64 * side * side, 200), nn.ReLU(), nn.Dropout(p),
                                        nn.Linear(200, 200), nn.ReLU(), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def bound_layers(self) -> list[nn.Module]:
        """The layers whose composition :meth:`forward` is (for :mod:`rll_core.certify`)."""
        return [*self.features, *self.classifier]


class _WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3 - dropout - BN-ReLU-conv3x3, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (nn.Identity() if cin == cout and stride == 1
                         else nn.Conv2d(cin, cout, 1, stride, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        # the projection shortcut sees the activated input (as in the reference WRN code)
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.drop(torch.relu(self.bn2(o))))
        return o + skip


class WideResNet(nn.Module):
    """WRN-depth-widen: three groups of ``(depth - 4) / 6`` blocks of widths 16k, 32k, 64k."""

    def __init__(self, depth: int, widen: int, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"wide ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth}")
        if widen < 1:
            raise ValueError(f"wide ResNet widen factor must be >= 1, got {widen}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for g in range(3):
            for i in range(n):
                cin = widths[g] if i == 0 else widths[g + 1]
                layers.append(_WideBlock(cin, widths[g + 1], (1 if g == 0 else 2) if i == 0 else 1, dropout))
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[3]), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(widths[3], num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class _Bottleneck(nn.Module):
    """1x1 - 3x3 (stride) - [dropout] - 1x1 (x4) bottleneck with BN after each convolution."""

    def __init__(self, cin: int, mid: int, stride: int, dropout: float):
        super().__init__()
        cout = 4 * mid
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if cin == cout and stride == 1 else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    """ResNet-50 (3, 4, 6, 3 bottleneck blocks); ImageNet stem, global average pool, fc."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                   nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for g, (blocks, mid) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
            for i in range(blocks):
                layers.append(_Bottleneck(cin, mid, 2 if i == 0 and g > 0 else 1, dropout))
                cin = 4 * mid
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _wrn(depth: int, widen: int) -> Builder:
    def build(c: int, k: int, s: int, p: float | None) -> nn.Module:
        if s < 4:
            raise ValueError(f"wide ResNets need images of at least 4 px, got {s}")
        return WideResNet(depth, widen, c, k, p or 0.0)
    return build


def _resnet50(c: int, k: int, s: int, p: float | None) -> nn.Module:
    if s < 32:
        raise ValueError(f"resnet50 needs images of at least 32 px, got {s}")
    return ResNet50(c, k, p or 0.0)


#: Fixed names; ``wrn-D-W`` is parsed for any valid depth and width.
MODELS: dict[str, Builder] = {
    "cnn001": CNN001,
    "cnn002": CNN002,
    "resnet50": _resnet50,
    "wrn-40-10": _wrn(40, 10),
    "wrn-16-4": _wrn(16, 4),
}
_WRN = re.compile(r"wrn-(\d+)-(\d+)")


def model_names() -> list[str]:
    """Registered names (any ``wrn-D-W`` with D = 6n + 4 is accepted as well)."""
    return sorted(MODELS)


def check_model(name: str, dropout: float | None = None) -> None:
    """Refuse an unknown architecture name or a dropout outside [0, 1) before anything is built or read."""
    _check_dropout(dropout)
    key = name.lower()
    if key not in MODELS and not _WRN.fullmatch(key):
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(model_names())} (or any wrn-<6n+4>-<k>)")


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
                dropout: float | None = None) -> nn.Module:
    """Build a registered architecture for ``(in_channels, image_size, image_size)`` inputs in [0, 1].

    No hidden normalisation: the model sees the images as they are.

    Args:
        name: ``cnn001`` (the reference's MNIST CNN), ``cnn002``, ``wrn-D-W`` (any ``D = 6n + 4``, e.g. the paper's
            ``wrn-40-10``) or ``resnet50`` (any case).
        in_channels: input channels, >= 1.
        num_classes: outputs, >= 2.
        image_size: the input height and width in pixels, >= 1.
        dropout: a rate in [0, 1), or None for the architecture's own (cnn001: 0.25 and 0.5; others: none).

    Returns:
        The ``nn.Module`` (freshly initialised from the global random stream).

    Raises:
        ValueError: an unknown name, a bad size or dropout rate.

    Example:
        >>> sum(p.numel() for p in build_model("cnn001", in_channels=1, num_classes=10, image_size=28).parameters())
        1199882
    """
    for what, v in (("in_channels", in_channels), ("num_classes", num_classes), ("image_size", image_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    _check_dropout(dropout)
    key = name.lower()
    if key in MODELS:
        return MODELS[key](in_channels, num_classes, image_size, dropout)
    m = _WRN.fullmatch(key)
    if m:
        return _wrn(int(m.group(1)), int(m.group(2)))(in_channels, num_classes, image_size, dropout)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(model_names())} (or any wrn-<6n+4>-<k>)")


def dropout_label(model: str, dropout: float | None) -> str:
    """The dropout a run trained with, in words: ``"cnn001's own (0.25 after the convolutions, ...)"``, ``"none"``,
    or ``"p = 0.2"`` (figures and captions)."""
    if dropout is None:
        own = OWN_DROPOUT.get(str(model))
        return f"{model}'s own ({own})" if own else "none"
    return "none" if float(dropout) == 0 else f"p = {float(dropout):g}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _describe() -> str:  # pragma: no cover - used to write the README's parameter table
    rows = []
    for name, c, s in (("cnn001", 1, 28), ("cnn002", 1, 28), ("wrn-16-4", 3, 32), ("wrn-40-10", 3, 32),
                       ("resnet50", 3, 64)):
        k = 9 if name == "resnet50" else 10
        rows.append(f"| {name} | {c}x{s}x{s}, {k} classes | {count_parameters(build_model(name, in_channels=c, num_classes=k, image_size=s)):,} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(_describe())
