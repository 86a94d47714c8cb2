"""Certificates for trained networks: what the paper's Section 5 measures from one side, bounded from the other.

The ascent of :func:`rll_core.lipschitz.local_lipschitz` finds a ratio attained in the ball, a *lower* bound of
the local Lipschitz constant; an attack's accuracy is an *upper* bound of robust accuracy.  This module bounds
both the other way, per point, by bound propagation over ``B = {x' : ||x' - x||_inf <= eps} ∩ [0, 1]^D``:

* :func:`lipschitz_bound` - a sound *upper* bound of the local Lipschitz constant in the paper's definition
  (logits, L1 over L-inf): interval bounds of every pre-activation over ``B`` fix the stable ReLUs (and the
  max-pool windows whose winner is decided) and range the others in [0, 1]; a backward pass then bounds every
  entry of the Jacobian over ``B`` (Fast-Lip, Weng et al. 2018, in interval form), and
  ``||J||_{inf->1} = max_{u in {-1, 1}^K} ||J^T u||_1`` is bounded from those entries, per input coordinate
  with the sign its box allows (a pixel at 0 can only grow).  By the mean value theorem along the segment
  from ``x`` to ``x'`` (inside the convex ``B``), no ratio in ``B`` exceeds it.
* :func:`certified_margin` - a lower bound over ``B`` of ``z_y - max_{j != y} z_j`` from the same interval
  bounds, the label's row folded into the last linear layer; a point is *certified* robust where it is > 0.
* :func:`certify` - both, with the certified verdicts, on a dataset in batches.

Networks: a composition of Linear, Conv2d (zero padding), ReLU, max-pooling with its kernel equal to its stride,
average pooling, BatchNorm in eval mode, Flatten, Dropout and Identity (identities in eval mode), and the
per-channel normalisation in front (:class:`ChannelAffine`); ``nn.Sequential`` and any module with a
``bound_layers()`` method (the package's ``cnn001`` and ``cnn002``, the card's ``Normalized``) are expanded into
their layers.  Anything else is refused in one line naming the layer.  The bounds are sound for the model's
float computation up to rounding (a relative 1e-5 is added to every bound to cover it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._search import eval_mode, num_classes_of
from ._tail import restricted_sums, tail_matrices, tail_norm_bound
from .checks import as_float_images, check_eps, check_images, check_int, check_labels, default_batch_size, model_device
from .models import MaxPool2x2
from .progress import progress_bar

__all__ = ["METHOD", "ChannelAffine", "UnsupportedLayerError", "certified_margin", "certify", "layers_of",
           "lipschitz_bound"]

#: What the certificates are, stored with every result made from them: a stored result of another revision is
#: made again, not read back (revision 2 counts a step that leaves [0, 1] for -u as for u: revision 1 took the
#: two as equal, which under-states the bound where the ball meets a face of [0, 1])
METHOD = ("interval bounds tightened by a linear relaxation, a symbolic tail for two ReLU layers, one-sided steps "
          "at the faces of [0, 1] (rll_core.certify, revision 2)")

#: the sign vectors of ||J||_{inf->1} are enumerated up to this many classes (2^(K-1) of them); beyond it the
#: bound sums every entry's largest magnitude (sound, looser)
MAX_ENUMERATED_CLASSES = 12
#: every bound is widened by this relative amount, to cover float rounding in the model's own arithmetic
ROUNDING = 1e-5
#: an affine layer's output (before a ReLU or a max-pool) gets the linear relaxation's bounds besides the
#: intervals when its units times the inputs of every layer behind it stay under this (one backward pass per
#: unit: it pays for the dense layers of an MLP, not behind cnn001's convolutions, where it took 3.5 s a point)
RELAXED_WORK = 1 << 22
#: the sign vectors are pulled back as rows of their own when their number times the layers' inputs stays under
#: this (an MLP's), else the classes' rows are and combined after (cnn001's: 51 times cheaper, about 2 times looser)
SIGN_ROW_WORK = 1 << 24


class UnsupportedLayerError(ValueError):
    """A layer bound propagation cannot bound, named in one line."""


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (the normalisation ``(x - mean) / std`` in front of a network)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).float())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).float())

    scale: torch.Tensor
    shift: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_AFFINE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
           ChannelAffine)
_MAXPOOL = (nn.MaxPool2d, MaxPool2x2)


def layers_of(model: nn.Module) -> list[nn.Module]:
    """``model`` as the list of layers whose composition it computes (identities dropped), or one line naming the
    first layer that cannot be bounded.

    Raises:
        UnsupportedLayerError: a layer outside the supported set (residual blocks, other activations, a max-pool
            whose windows overlap, a convolution with non-zero padding mode, a BatchNorm without running statistics).

    Example:
        >>> [type(m).__name__ for m in layers_of(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU()))]
        ['Flatten', 'Linear', 'ReLU']
    """
    out: list[nn.Module] = []

    def visit(m: nn.Module, name: str) -> None:
        if isinstance(m, nn.Sequential):
            for k, child in m.named_children():
                visit(child, f"{name}.{k}" if name else k)
        elif callable(parts := getattr(m, "bound_layers", None)):
            for i, child in enumerate(parts()):
                visit(child, f"{name}[{i}]" if name else f"[{i}]")
        elif isinstance(m, _IDENTITY):
            return
        elif isinstance(m, (nn.ReLU, *_AFFINE, *_MAXPOOL)):
            _check_layer(m, name or type(m).__name__)
            out.append(m)
        else:
            raise UnsupportedLayerError(
                f"cannot bound layer {name or '(the model)'} ({type(m).__name__}): supported are Linear, Conv2d, "
                "ReLU, max-pooling with kernel = stride, average pooling, BatchNorm (eval), Flatten, Dropout, and "
                "nn.Sequential or modules with bound_layers()")

    visit(model, "")
    if not out:
        raise UnsupportedLayerError("the model has no layer to bound")
    return out


def _check_layer(m: nn.Module, name: str) -> None:
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        raise UnsupportedLayerError(f"cannot bound layer {name} (Conv2d with padding_mode={m.padding_mode!r})")
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_var is None:
        raise UnsupportedLayerError(f"cannot bound layer {name} (BatchNorm without running statistics)")
    if isinstance(m, nn.MaxPool2d):
        k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
        if k != s or _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1) or m.ceil_mode:
            raise UnsupportedLayerError(f"cannot bound layer {name} (MaxPool2d with overlapping windows, padding, "
                                        "dilation or ceil_mode)")


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pool_size(m: nn.Module) -> tuple[int, int]:
    return (2, 2) if isinstance(m, MaxPool2x2) else _pair(m.kernel_size)  # type: ignore[arg-type]


def _bn_scale(m: nn.Module) -> torch.Tensor:
    scale = 1 / torch.sqrt(m.running_var + m.eps)  # type: ignore[operator]
    return scale * m.weight if m.weight is not None else scale  # type: ignore[operator]


def _linear_parts(m: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The bias-free linear map of an affine layer and the same map with every coefficient's magnitude."""
    if isinstance(m, nn.Linear):
        w = m.weight
        return (lambda z: F.linear(z, w)), (lambda z: F.linear(z, w.abs()))
    if isinstance(m, nn.Conv2d):
        w, conv = m.weight, m

        def apply(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.conv2d(z, v, None, conv.stride, conv.padding, conv.dilation, conv.groups)  # type: ignore[arg-type]

        return (lambda z: apply(z, w)), (lambda z: apply(z, w.abs()))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, ChannelAffine)):
        s = _bn_scale(m) if not isinstance(m, ChannelAffine) else m.scale.flatten()
        shape = (1, -1) + (1,) * (2 if isinstance(m, (nn.BatchNorm2d, ChannelAffine)) else 0)

        def scaled(z: torch.Tensor, v: torch.Tensor = s) -> torch.Tensor:
            return z * v.reshape(shape[:z.ndim]).to(z.dtype)

        return scaled, (lambda z: scaled(z, s.abs()))
    return m, m  # pooling by averages, Flatten: linear with non-negative coefficients, no bias


@dataclass
class _Trace:
    """What the forward interval pass keeps of one layer for the backward pass."""

    layer: nn.Module
    in_shape: tuple[int, ...]
    lo: torch.Tensor | None = None  # the layer's input bounds (ReLU, max-pool)
    hi: torch.Tensor | None = None


def _interval_forward(layers: Sequence[nn.Module], lo: torch.Tensor, hi: torch.Tensor,
                      stop: int | None = None, relax: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[_Trace]]:
    """Bounds through ``layers[:stop]`` from the input box ``[lo, hi]``: intervals (centre-radius form for the
    affine layers, monotone for ReLU and max-pooling), and where an affine layer's output has at most
    units per point that its work stays under :data:`RELAXED_WORK` and feeds a ReLU or a max-pool (``relax``), the
    linear relaxation's bounds of that output (:func:`_relaxed_bounds`), the two intersected."""
    traces: list[_Trace] = []
    box = (lo, hi)
    for i, m in enumerate(layers[:stop]):
        t = _Trace(m, tuple(lo.shape[1:]))
        if isinstance(m, nn.ReLU):
            t.lo, t.hi = lo, hi
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        elif isinstance(m, _MAXPOOL):
            t.lo, t.hi = lo, hi
            k = _pool_size(m)
            lo, hi = F.max_pool2d(lo, k), F.max_pool2d(hi, k)
        else:
            _, absolute = _linear_parts(m)
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            mid, rad = m(mid), absolute(rad)
            rad = rad + ROUNDING * (mid.abs() + rad)
            lo, hi = mid - rad, mid + rad
            feeds = i + 1 < len(layers) and isinstance(layers[i + 1], (nn.ReLU, *_MAXPOOL))
            units = int(np.prod(lo.shape[1:]))
            work = units * sum(int(np.prod(u.in_shape)) for u in [*traces, t])
            if relax and feeds and any(u.lo is not None for u in traces) and work <= RELAXED_WORK:
                rows = torch.eye(units, device=lo.device).reshape(units, *lo.shape[1:])
                r_lo, r_hi = _relaxed_bounds([*traces, t], rows, box)
                assert r_hi is not None
                lo, hi = torch.maximum(lo, r_lo.reshape(lo.shape)), torch.minimum(hi, r_hi.reshape(hi.shape))
        traces.append(t)
    return lo, hi, traces


def _relaxed_bounds(traces: Sequence[_Trace], rows: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor],
                    per_point: bool = False, upper: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lower and upper bounds over the box of ``r . h`` for every row ``r`` and point, where ``h`` is the output of
    the traced layers: the rows pulled back with each ReLU and max-pool replaced by linear bounds (CROWN, Zhang et
    al. 2018: an undecided ReLU ``[l, u]`` lies under the chord ``u (z - l) / (u - l)`` and over ``z`` or 0,
    whichever is nearer; an undecided max-pool window over its largest lower bound's input and under its largest
    upper bound), then the box's corner.  ``rows``: ``(r, *shape)`` for every point, or ``(batch, r, *shape)``
    with ``per_point``.  Returns ``(batch, r)`` twice (the upper ones None without ``upper``); rows go in chunks
    that keep memory bounded."""
    x_lo, x_hi = box
    batch = x_lo.shape[0]
    r = rows.shape[1] if per_point else rows.shape[0]
    widest = max(int(np.prod(t.in_shape)) for t in traces)
    chunk = max(1, (1 << 24) // widest)
    lows, highs = [], []
    flat = rows.reshape(batch * r, *rows.shape[2:]) if per_point else None
    for s in range(0, batch * r, chunk):
        idx = torch.arange(s, min(s + chunk, batch * r), device=x_lo.device)
        pts = idx // r
        lam = flat[idx] if flat is not None else rows[idx % r]
        lows.append(_relaxed_rows(traces, lam, pts, x_lo, x_hi, upper=False))
        if upper:
            highs.append(_relaxed_rows(traces, lam, pts, x_lo, x_hi, upper=True))
    return torch.cat(lows).reshape(batch, r), torch.cat(highs).reshape(batch, r) if upper else None


def _relaxed_rows(traces: Sequence[_Trace], lam: torch.Tensor, pts: torch.Tensor, x_lo: torch.Tensor,
                  x_hi: torch.Tensor, upper: bool) -> torch.Tensor:
    """One bound (``upper`` or lower) of ``lam_i . h`` for rows ``lam`` of the points ``pts``."""
    bias = torch.zeros(len(lam), device=lam.device, dtype=lam.dtype)
    slack = torch.zeros_like(bias)
    for t in reversed(traces):
        m = t.layer
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        if isinstance(m, nn.ReLU):
            assert t.lo is not None and t.hi is not None
            lo, hi = t.lo[pts], t.hi[pts]
            on, undecided = lo >= 0, (lo < 0) & (hi > 0)
            width = torch.where(undecided, hi - lo, torch.ones_like(hi))
            chord = torch.where(undecided, hi / width, on.to(lam.dtype))
            cut = torch.where(undecided, -lo * chord, torch.zeros_like(lo))
            under = torch.where(undecided, (hi >= -lo).to(lam.dtype), on.to(lam.dtype))
            over_side, under_side = (pos, neg) if upper else (neg, pos)
            lam = over_side * chord + under_side * under
            bias = bias + (over_side * cut).flatten(1).sum(1)
        elif isinstance(m, _MAXPOOL):
            assert t.lo is not None and t.hi is not None
            lo, hi = t.lo[pts], t.hi[pts]
            k = _pool_size(m)
            floor, where = F.max_pool2d(lo, k, return_indices=True)
            can = _window_winners(_Trace(m, t.in_shape, lo, hi))[0]
            count = F.avg_pool2d(can.to(lam.dtype), k) * (k[0] * k[1])
            sure = count == 1
            over_side, under_side = (pos, neg) if upper else (neg, pos)
            to_input = torch.where(sure, lam, under_side)  # coefficients on each window's largest lower bound
            bias = bias + (torch.where(sure, torch.zeros_like(lam), over_side) * F.max_pool2d(hi, k)).flatten(1).sum(1)
            lam = F.max_unpool2d(to_input, where, k, output_size=list(t.in_shape[-2:]))
        else:
            lin, _ = _linear_parts(m)
            offset = m(torch.zeros((1, *t.in_shape), device=lam.device, dtype=lam.dtype))
            term = (lam * offset).flatten(1).sum(1)
            bias = bias + term
            slack = slack + term.abs()
            lam = _transpose(lin, t.in_shape, lam)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    a, b = (x_hi[pts], x_lo[pts]) if upper else (x_lo[pts], x_hi[pts])
    value = (pos * a + neg * b).flatten(1).sum(1) + bias
    scale = (lam.abs() * torch.maximum(x_lo[pts].abs(), x_hi[pts].abs())).flatten(1).sum(1) + slack
    return value + (ROUNDING * scale if upper else -ROUNDING * scale)


def _transpose(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], c: torch.Tensor) -> torch.Tensor:
    """``A^T c`` for the linear map ``fn`` (``A``), rows of ``c`` as a batch, by one backward pass."""
    z = torch.zeros((c.shape[0], *in_shape), dtype=c.dtype, device=c.device, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fn(z), z, grad_outputs=c)
    return g


def _window_winners(t: _Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input of a max-pool: whether it can be its window's maximum over the box, and whether it surely is
    (the only one that can)."""
    assert t.lo is not None and t.hi is not None
    k = _pool_size(t.layer)
    h, w = t.lo.shape[-2] // k[0] * k[0], t.lo.shape[-1] // k[1] * k[1]
    floor = F.max_pool2d(t.lo, k).repeat_interleave(k[0], -2).repeat_interleave(k[1], -1)
    can = torch.zeros_like(t.lo, dtype=torch.bool)
    can[..., :h, :w] = t.hi[..., :h, :w] >= floor
    count = F.avg_pool2d(can.to(t.lo.dtype), k) * (k[0] * k[1])
    sure = can.clone()
    sure[..., :h, :w] &= count.repeat_interleave(k[0], -2).repeat_interleave(k[1], -1) == 1
    return can, sure


def _pull_back(traces: Sequence[_Trace], rows: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``[lo, hi]`` of ``r^T J`` over the box for every row ``r`` of ``rows`` ``(k, K)`` and every point,
    ``(batch, k, D)``: the rows pulled back through the layers in interval form (a ReLU or max-pool input whose
    derivative is undecided ranges its factor in [0, 1]).  Rows that are the sign vectors of the norm keep the
    classes' correlation that entry-wise bounds lose (Fast-Lip's order of operations)."""
    k = rows.shape[0]
    start = rows.repeat(batch, 1)  # point-major, row-minor
    cl, cu = start, start.clone()
    for t in reversed(traces):
        m = t.layer
        if isinstance(m, nn.ReLU):
            assert t.lo is not None and t.hi is not None
            on = (t.lo > 0).repeat_interleave(k, 0).reshape(cl.shape)
            maybe = ((t.hi > 0) & ~(t.lo > 0)).repeat_interleave(k, 0).reshape(cl.shape)
            cl = torch.where(on, cl, torch.where(maybe, cl.clamp(max=0), torch.zeros_like(cl)))
            cu = torch.where(on, cu, torch.where(maybe, cu.clamp(min=0), torch.zeros_like(cu)))
        elif isinstance(m, _MAXPOOL):
            can, sure = _window_winners(t)
            ks = _pool_size(m)
            size = t.in_shape[-2:]

            cl, cu = _spread(cl, ks, size), _spread(cu, ks, size)
            can_r = can.repeat_interleave(k, 0)
            sure_r = sure.repeat_interleave(k, 0)
            cl = torch.where(sure_r, cl, torch.where(can_r, cl.clamp(max=0), torch.zeros_like(cl)))
            cu = torch.where(sure_r, cu, torch.where(can_r, cu.clamp(min=0), torch.zeros_like(cu)))
        else:
            lin, absolute = _linear_parts(m)
            mid, rad = (cl + cu) / 2, (cu - cl) / 2
            mid = _transpose(lin, t.in_shape, mid)
            rad = _transpose(absolute, t.in_shape, rad) if bool((rad != 0).any()) else torch.zeros_like(mid)
            rad = rad + ROUNDING * (mid.abs() + rad)
            cl, cu = mid - rad, mid + rad
    return cl.reshape(batch, k, -1), cu.reshape(batch, k, -1)


def _spread(c: torch.Tensor, k: tuple[int, int], size: tuple[int, ...]) -> torch.Tensor:
    """A max-pool output's values copied to every input of its window (rows and columns the pool dropped: 0)."""
    up = c.repeat_interleave(k[0], -2).repeat_interleave(k[1], -1)
    return F.pad(up, (0, size[1] - up.shape[-1], 0, size[0] - up.shape[-2]))


def _signs(k: int, device: torch.device) -> torch.Tensor:
    """Every u in {-1, 1}^k with u_0 = 1 (``-u`` is read from ``u``'s row: :func:`restricted_sums`)."""
    rows = [(1.0, *s) for s in itertools.product((1.0, -1.0), repeat=k - 1)]
    return torch.tensor(rows, device=device)


def _norm_bound(traces: Sequence[_Trace], k: int, batch: int, up_only: torch.Tensor,
                down_only: torch.Tensor) -> torch.Tensor:
    """Per point and sign vector, an upper bound of ``sup_v u^T J v`` over the box and the steps ``v`` it allows
    (``|v_i| <= 1``; up only at a coordinate on its box's floor, down only at its ceiling): every ``u`` of
    :func:`_signs` pulled back as a row, the values for ``u`` then for ``-u``, ``(batch, 2^k)`` (up to
    :data:`MAX_ENUMERATED_CLASSES` classes; ``u`` and ``-u`` differ only where a step is one-sided); beyond them the
    entry-wise sum, a bound for every ``u`` at once, ``(batch, 1)``.  Its largest value bounds the local constant."""
    dev = next((t.lo.device for t in traces if t.lo is not None), up_only.device)
    if k > MAX_ENUMERATED_CLASSES:  # |u^T J_d| <= sum_k |J_kd|
        jl, ju = _pull_back(traces, torch.eye(k, device=dev), batch)
        return torch.maximum(jl.abs(), ju.abs()).sum((1, 2))[:, None]
    u = _signs(k, dev)
    if len(u) * sum(int(np.prod(t.in_shape)) for t in traces) <= SIGN_ROW_WORK:
        lo, hi = _pull_back(traces, u, batch)  # (batch, 2^(k-1), D): each sign vector's row, correlations kept
    else:  # the classes' rows, combined per sign vector afterwards (entries independent: looser, 2^(k-1)/k cheaper)
        jl, ju = _pull_back(traces, torch.eye(k, device=dev), batch)
        pos, neg = u.clamp(min=0), (-u).clamp(min=0)
        hi, lo = pos @ ju - neg @ jl, pos @ jl - neg @ ju
    return restricted_sums(lo, hi, up_only[:, None, :], down_only[:, None, :])


def _box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def lipschitz_bound(model: nn.Module, x: np.ndarray | torch.Tensor, *, eps: float,
                    batch_size: int | None = None) -> torch.Tensor:
    """A certified upper bound, per point, of the local Lipschitz constant in the paper's definition:
    ``max ||f(x) - f(x')||_1 / ||x - x'||_inf`` over ``x'`` in the eps-ball intersected with [0, 1]^D.

    Args:
        model: a network of the supported layers (:func:`layers_of`) returning logits ``(N, K)``.
        x: images ``(N, ...)`` in [0, 1] (uint8 pixels are divided by 255).
        eps: the ball's L-inf radius, in [0, 1] (0: the norm of the Jacobian at ``x``).
        batch_size: points per batch (default the device's).

    Returns:
        ``(N,)`` float tensor on the CPU; each value is at least the ratio at any ``x'`` of the ball (and so at
        least what :func:`rll_core.lipschitz.local_lipschitz` finds).

    Raises:
        UnsupportedLayerError: a layer it cannot bound, named; ValueError: a bad radius or images.

    Example:
        >>> lipschitz_bound(model, x_test[:100], eps=0.1).mean()  # doctest: +SKIP
    """
    return certify(model, x, None, eps=eps, batch_size=batch_size)["lipschitz_bound"]


def certified_margin(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, eps: float,
                     batch_size: int | None = None) -> torch.Tensor:
    """A lower bound, per point, of ``z_y(x') - max_{j != y} z_j(x')`` over the eps-ball intersected with
    [0, 1]^D (interval bounds, the label's row folded into the last linear layer): where it is > 0 no input of
    the ball is misclassified.

    Example:
        >>> (certified_margin(model, x, y, eps=0.1) > 0).float().mean()  # certified accuracy  # doctest: +SKIP
    """
    return certify(model, x, y, eps=eps, batch_size=batch_size)["margin"]


def _margin(traces: Sequence[_Trace], h: tuple[torch.Tensor, torch.Tensor], z: tuple[torch.Tensor, torch.Tensor],
            box: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``min_{j != y}`` of a lower bound of ``z_y - z_j`` over the box, from the forward pass's bounds (``h``: of the
    last layer's input, ``z``: of the logits) and its traces: the larger of the interval bound (the rows
    ``W_y - W_j`` folded into the last Linear layer) and the linear relaxation's."""
    (h_lo, h_hi), (z_lo, z_hi), last = h, z, traces[-1].layer
    low = z_lo.gather(1, y[:, None]) - z_hi
    if isinstance(last, nn.Linear):
        mid, rad = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
        w = last.weight[y][:, None, :] - last.weight[None, :, :]  # (N, K, H): W_y - W_j
        b = (last.bias[y][:, None] - last.bias[None, :]) if last.bias is not None else 0.0
        folded = (w * mid[:, None, :]).sum(-1) - (w.abs() * rad[:, None, :]).sum(-1) + b
        folded = folded - ROUNDING * ((w * mid[:, None, :]).abs().sum(-1) + (w.abs() * rad[:, None, :]).sum(-1))
        low = torch.maximum(low, folded)
    k = z_lo.shape[1]
    rows = F.one_hot(y, k).to(z_lo.dtype)[:, None, :] - torch.eye(k, device=z_lo.device)[None]  # (N, K, K)
    relaxed, _ = _relaxed_bounds(traces, rows, box, per_point=True, upper=False)
    low = torch.maximum(low, relaxed)
    return low.scatter(1, y[:, None], float("inf")).amin(1)


def certify(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None, *, eps: float,
            batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Certificates of ``model`` at radius ``eps`` on ``(x, y)``, batch by batch on the model's device.

    Args:
        model: a network of the supported layers (:func:`layers_of`).
        x: images ``(N, ...)`` in [0, 1].
        y: integer labels ``(N,)``, or None (the Lipschitz bound only).
        eps: the L-inf radius, in [0, 1].
        batch_size: points per batch (default the device's).
        progress: a progress bar (default False).

    Returns:
        ``{"lipschitz_bound": (N,) tensor, "margin": (N,) tensor, "certified": (N,) bool array, "eps", "n"}`` (the
        last three with labels only): ``certified`` where the point is classified correctly at every input of the
        ball.

    Raises:
        UnsupportedLayerError: a layer it cannot bound; ValueError: a bad radius, images or labels.

    Example:
        >>> c = certify(model, x, y, eps=0.1)  # doctest: +SKIP
        >>> c["certified"].mean(), c["lipschitz_bound"].mean()  # doctest: +SKIP
    """
    layers = layers_of(model)
    check_eps(eps)
    xt = as_float_images(x)
    check_images(xt)
    dev = model_device(model)
    batch_size = default_batch_size(dev) if batch_size is None else check_int("batch_size", batch_size)
    yt = None if y is None else torch.as_tensor(np.asarray(y)).long()
    if yt is not None and len(xt):
        check_labels(yt, len(xt), num_classes_of(model, xt[:1].to(dev)))
    bounds, margins = [], []
    tail = (tail_matrices(layers, nn.ReLU, _AFFINE, tuple(xt.shape[1:]), lambda m: _linear_parts(m)[0])
            if len(xt) else None)  # two ReLU layers: the second, tighter Lipschitz bound (rll_core._tail)
    with torch.no_grad(), eval_mode(model):
        for s in progress_bar(range(0, len(xt), batch_size), desc="certify", disable=not progress, unit="batch"):
            xb = xt[s:s + batch_size].to(dev, torch.float32)
            lo, hi = _box(xb, eps)
            # one forward pass of bounds serves both certificates: to the last layer's input, then through it
            h_lo, h_hi, traces = _interval_forward(layers, lo, hi, stop=len(layers) - 1)
            z_lo, z_hi, last = _interval_forward(layers[-1:], h_lo, h_hi, relax=False)
            traces += last
            flat_lo, flat_hi, flat_x = lo.flatten(1), hi.flatten(1), xb.flatten(1)
            edge = eps > 0  # a coordinate at a face of [0, 1] can only move inwards (at eps 0: the Jacobian's norm)
            k, up, down = int(z_lo.shape[1]), (flat_lo >= flat_x) & edge, (flat_hi <= flat_x) & edge
            per_sign = _norm_bound(traces, k, len(xb), up, down)
            if tail is not None and k <= MAX_ENUMERATED_CLASSES:  # two ReLU layers: the tighter bound per sign vector
                r1, r2 = (traces[i] for i, m in enumerate(layers) if isinstance(m, nn.ReLU))
                assert r1.lo is not None and r1.hi is not None and r2.lo is not None and r2.hi is not None
                bound = tail_norm_bound(tail, (r1.lo, r1.hi), (r2.lo, r2.hi), _signs(k, xb.device), per_sign, up,
                                        down).to(per_sign.dtype)
            else:
                bound = per_sign.amax(-1)
            bounds.append((bound * (1 + ROUNDING)).cpu())
            if yt is not None:
                margins.append(_margin(traces, (h_lo, h_hi), (z_lo, z_hi), (lo, hi),
                                       yt[s:s + batch_size].to(dev)).cpu())
    out: dict[str, Any] = {"lipschitz_bound": torch.cat(bounds) if bounds else torch.zeros(0), "eps": float(eps),
                           "n": len(xt)}
    if yt is not None:
        out["margin"] = torch.cat(margins) if margins else torch.zeros(0)
        out["certified"] = (out["margin"] > 0).numpy()
    return out
