"""A tighter local Lipschitz bound for networks with two ReLU layers (affine, ReLU, affine, ReLU, affine): the
two-layer MLPs users bring and the issue's benchmark network.  :mod:`rll_core.certify` takes the smaller of this
bound and its interval one per point; both are sound.

For a sign vector ``u`` of the classes, ``J^T u = W1^T D1 W2^T D2 W3^T u``: ``D1``, ``D2`` diagonal with the
ReLUs' derivatives, 1 or 0 on a unit whose pre-activation bounds decide it, anything in [0, 1] on an undecided
one.  The interval pull-back bounds every coordinate of ``J^T u`` as if each coordinate could pick its own
``D2``; here ``D2``'s undecided entries stay one shared variable ``d`` in the box [0, 1]^k:

* ``g = W2^T D2 W3^T u = a + B d`` exactly (linear in ``d``);
* a decided-on unit ``j`` of the first layer passes ``g_j``; an undecided one passes ``t g_j``, ``t`` in [0, 1],
  at most ``max(0, g_j)`` and at least ``min(0, g_j)``, and these are bounded by the chord (upper) and the
  chord of the negation (lower) over the range ``[L, U]`` that ``W1_ji g_j`` takes on the box, as the
  linear relaxation of a ReLU does;
* so each coordinate ``(J^T u)_i`` lies between two functions linear in ``d``, whose extremes over the box are
  exact; the coordinate's magnitude (or one side of it, at a face of [0, 1]) summed over ``i`` and maximised over
  ``u`` bounds ``||J||_{inf->1}`` over the ball.

Measured on the issue's random 784-100-100-10 MLPs (docs/evaluation.md): about 2.7 times tighter than the interval
pull-back at eps 0.01.  The matrices are the layers' own (float32 products of at most a stretch's layers) and the
arithmetic after them float64, so rounding stays far below the ``ROUNDING`` margin :mod:`rll_core.certify` adds to
every bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["TAIL_WORK", "restricted_sums", "tail_matrices", "tail_norm_bound"]

#: the refinement runs on a point where sign vectors x input coordinates x undecided units (its work) stays under
#: this, and on networks whose matrices do; elsewhere the interval bound alone stands
TAIL_WORK = 1 << 28
#: the largest intermediate tensor of one chunk of sign vectors, in elements (float64: 128 MiB)
CHUNK_ELEMENTS = 1 << 24
#: sign vectors per chunk at most: small enough that the search stops soon after the bound is reached
SIGN_CHUNK = 32


def tail_matrices(layers: Sequence[nn.Module], relu: type[nn.Module], affine: tuple[type[nn.Module], ...],
                  in_shape: tuple[int, ...], linear_part: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The dense matrices ``W1 (n1, D)``, ``W2 (n2, n1)``, ``W3 (K, n2)`` of the three affine stretches of a
    network made of ``affine`` layers and exactly two ``relu`` layers (``linear_part``: a layer's bias-free linear
    map), in float64; None for any other network (a max-pool anywhere: it is not affine) or one whose matrices
    would exceed :data:`TAIL_WORK` entries."""
    kinds = [isinstance(m, relu) for m in layers]
    affine_elsewhere = all(k or isinstance(m, affine) for m, k in zip(layers, kinds, strict=True))
    if sum(kinds) != 2 or kinds[0] or kinds[-1] or not affine_elsewhere:
        return None
    first, second = [i for i, k in enumerate(kinds) if k]
    if second == first + 1:
        return None
    mats = []
    shape = in_shape
    for stretch in (layers[:first], layers[first + 1:second], layers[second + 1:]):
        d = int(torch.Size(shape).numel())
        dev = next((p.device for m in stretch for p in m.parameters()), torch.device("cpu"))
        z = torch.eye(d, device=dev).reshape(d, *shape)  # each column's image: exact for one layer (one term)
        with torch.no_grad():
            for m in stretch:
                z = linear_part(m)(z)
        if z[0].numel() * d > TAIL_WORK:
            return None
        shape = tuple(z.shape[1:])
        mats.append(z.reshape(d, -1).T.double().contiguous())
    return mats[0], mats[1], mats[2]


def restricted_sums(lo: torch.Tensor, hi: torch.Tensor, up_only: torch.Tensor,
                    down_only: torch.Tensor) -> torch.Tensor:
    """From bounds ``[lo, hi]`` of ``u^T J`` (``(..., D)``), bounds of ``sup_v u^T J v`` over the allowed steps for
    ``u`` and for ``-u`` (whose row is ``[-hi, -lo]``), concatenated on the last axis: a free coordinate counts its
    largest magnitude, an up-only one its largest positive part, a down-only one its largest negative part."""
    both = torch.maximum(hi.abs(), lo.abs())
    pos, neg = hi.clamp(min=0), (-lo).clamp(min=0)
    plus = torch.where(up_only, pos, torch.where(down_only, neg, both))
    minus = torch.where(up_only, neg, torch.where(down_only, pos, both))
    return torch.cat([plus.sum(-1), minus.sum(-1)], -1)


def _chord(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and offset of the least linear upper bound of ``max(0, y)`` over ``y`` in ``[lo, hi]``."""
    slope = torch.where(lo >= 0, torch.ones_like(lo),
                        torch.where(hi <= 0, torch.zeros_like(lo), hi / (hi - lo).clamp_min(1e-300)))
    return slope, torch.where((lo < 0) & (hi > 0), -slope * lo, torch.zeros_like(lo))


def tail_norm_bound(mats: tuple[torch.Tensor, ...], z1: tuple[torch.Tensor, torch.Tensor],
                    z2: tuple[torch.Tensor, torch.Tensor], signs: torch.Tensor, ceiling: torch.Tensor,
                    up_only: torch.Tensor, down_only: torch.Tensor) -> torch.Tensor:
    """Per point, an upper bound of ``sup ||J||_{inf->1} = sup max_u ||J^T u||_1`` over the box whose
    pre-activation bounds are ``z1`` (first ReLU's input, ``(N, n1)``) and ``z2`` (``(N, n2)``): the largest over the
    sign vectors ``signs`` ``(m, K)`` and their negations of the smaller of this refinement and ``ceiling``
    ``(N, 2m)`` (``u``'s, then ``-u``'s), another sound bound of each (the interval pull-back's).  The sign vectors
    are taken in descending ``ceiling``, and the search stops where no remaining ceiling exceeds the bound found,
    which changes nothing and skips most of the work.  A coordinate of ``up_only`` (``down_only``) counts only its
    upper (lower) side.  A point whose work exceeds :data:`TAIL_WORK` keeps its largest ceiling."""
    w1, w2, w3 = mats
    out = []
    m_all = len(signs)
    c_all = signs.to(w3) @ w3  # (m, n2): W3^T u for every sign vector
    for p in range(z1[0].shape[0]):
        roofs = ceiling[p].double()  # u's, then -u's
        roof = torch.maximum(roofs[:m_all], roofs[m_all:])
        lo1, hi1 = z1[0][p].reshape(-1).double(), z1[1][p].reshape(-1).double()
        lo2, hi2 = z2[0][p].reshape(-1).double(), z2[1][p].reshape(-1).double()
        on1, open1 = lo1 > 0, (hi1 > 0) & ~(lo1 > 0)
        on2, open2 = lo2 > 0, (hi2 > 0) & ~(lo2 > 0)
        k2 = open2.nonzero().flatten()
        j1 = open1.nonzero().flatten()
        width = w1.shape[1] * max(1, len(k2), len(j1))
        if len(signs) * width > TAIL_WORK:
            out.append(roof.max())
            continue
        chunk = max(1, min(SIGN_CHUNK, CHUNK_ELEMENTS // width))
        up, down = up_only[p].reshape(-1), down_only[p].reshape(-1)
        order = torch.argsort(roof, descending=True)
        best = torch.zeros((), dtype=torch.float64, device=w1.device)
        w1_on, w1_j = w1 * on1[:, None], w1[j1]  # (n1, D), (|J1|, D)
        wp, wn = w1_j.clamp(min=0), w1_j.clamp(max=0)  # (|J1|, D)
        for s in range(0, len(signs), chunk):
            pick = order[s:s + chunk]
            if roof[pick[0]] <= best:  # no sign vector left can raise the bound
                break
            c = c_all[pick]
            a = (c * on2) @ w2  # (m, n1): g = a + B d
            b = c[:, k2, None] * w2[k2][None]  # (m, |K2|, n1)
            lin_c = a @ w1_on  # (m, D): the decided-on first-layer units, exact
            lin_d = torch.einsum("mkj,jd->mdk", b, w1_on)  # (m, D, |K2|)
            aj, bj = a[:, j1], b[:, :, j1]  # (m, |J1|), (m, |K2|, |J1|)
            bp, bn = bj.clamp(min=0).sum(1), bj.clamp(max=0).sum(1)  # (m, |J1|): g_j's range over the box, from a_j
            y0 = aj[:, :, None] * w1_j[None]  # (m, |J1|, D): W1_ji a_j
            y_hi = y0 + bp[:, :, None] * wp[None] + bn[:, :, None] * wn[None]
            y_lo = y0 + bn[:, :, None] * wp[None] + bp[:, :, None] * wn[None]
            s_up, o_up = _chord(y_lo, y_hi)  # t y <= max(0, y) <= s_up y + o_up
            s_dn, o_dn = _chord(-y_hi, -y_lo)  # t y >= min(0, y) >= s_dn y - o_dn
            up_c = lin_c + (s_up * y0 + o_up).sum(1)
            dn_c = lin_c + (s_dn * y0 - o_dn).sum(1)
            # the coefficients of d: sum_j slope_ij W1_ji B_kj, one batched product per slope
            up_d = lin_d + torch.einsum("mjd,mkj->mdk", s_up * w1_j[None], bj)
            dn_d = lin_d + torch.einsum("mjd,mkj->mdk", s_dn * w1_j[None], bj)
            hi = up_c + up_d.clamp(min=0).sum(-1)
            lo = dn_c + dn_d.clamp(max=0).sum(-1)
            both = restricted_sums(lo, hi, up[None], down[None])  # (2m,): the chunk's u, then their -u
            best = torch.maximum(best, torch.minimum(both[:len(pick)], roofs[pick]).max())
            best = torch.maximum(best, torch.minimum(both[len(pick):], roofs[m_all + pick]).max())
        out.append(best)
    return torch.stack(out)
