"""The precision policy: bf16 for the gradient passes where the hardware computes it natively, fp32 for every
verdict.

``precision="auto"`` (every attack, evaluation, Lipschitz estimate and training run) resolves, from the hardware
the work runs on, to

* ``"bf16"`` on a CPU with native bf16 arithmetic (AVX-512 BF16 or AMX: Intel Sapphire Rapids and later, AMD
  Zen 4 and later) and on a CUDA GPU of compute capability 8.0 or more (A100, H100, H200);
* ``"fp32"`` elsewhere (an AVX2 CPU would emulate bf16, many times slower than fp32).

Under ``"bf16"`` the passes that only steer a search run in ``torch.autocast(bfloat16)``: an attack's gradient
steps, the Lipschitz ascent's steps, a training step's forward and backward.  What decides a number stays in
fp32: the forward that says whether a point is correct or robust, the margin that picks a multi-targeted
attack's target, the logits of every Lipschitz ratio reported.  No attack is weakened without a word: the
precision is stored with every evaluation and run, and ``precision="fp32"`` gives the fp32 path exactly.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .checks import resolve_device

__all__ = ["INHERIT", "PRECISIONS", "autocast", "check_precision", "cpu_description", "cpu_native_bf16", "layout_for",
           "model_layout", "nhwc", "precision_note", "precision_record", "resolve_precision"]

#: The precision settings a user passes: ``auto`` (from the hardware), ``fp32``, ``bf16``.
PRECISIONS = ("auto", "fp32", "bf16")

#: The package's own fourth value, never a user's: bf16 where the caller's code already runs under bf16 autocast
#: (the training methods' inner searches follow the training step they run in).
INHERIT = "_inherit"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX-512 BF16 or AMX tiles), as oneDNN uses them."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(p is not None for p in probes):
        return any(bool(p()) for p in probes if p is not None)
    flags = _cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_description() -> str:
    """``AMD EPYC (avx2, avx512f, avx512_bf16; torch AVX512)``: the CPU's model and the ISA flags that matter for
    speed, for every benchmark's header and every figure measured on it."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = _cpu_flags()
    keep = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(keep) or 'no SIMD flags read'}; torch {torch.backends.cpu.get_cpu_capability()})"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` (or the package's own :data:`INHERIT`), else ValueError in
    one line naming the three."""
    if precision not in PRECISIONS and precision != INHERIT:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """``"auto"`` -> ``"bf16"`` where ``device`` computes bf16 natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU
    of capability >= 8.0) and the work is in float32, else ``"fp32"``; ``"fp32"`` and ``"bf16"`` are kept as asked.

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` (or :data:`INHERIT`: what the surrounding autocast does).
        device: where the work runs (``"auto"``: as :func:`~rll_core.checks.resolve_device` picks).
        dtype: the work's floating dtype (float64 work, such as the Section 4 classifier's, stays as it is).

    Returns:
        ``"fp32"`` or ``"bf16"``.

    Raises:
        ValueError: an unknown precision.

    Example:
        >>> resolve_precision("fp32", "cpu")
        'fp32'
    """
    if check_precision(precision) not in ("auto", INHERIT):
        return precision
    dev = resolve_device(device) if str(device) == "auto" else torch.device(device)
    if precision == INHERIT:
        return "bf16" if torch.is_autocast_enabled(dev.type) and torch.get_autocast_dtype(dev.type) == torch.bfloat16 \
            else "fp32"
    if dtype != torch.float32:
        return "fp32"
    if dev.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(dev) >= (8, 0) else "fp32"
    return "bf16" if dev.type == "cpu" and cpu_native_bf16() else "fp32"


def precision_record(precision: str) -> dict[str, str]:
    """What a record of settings says of a resolved precision: ``{"precision": "bf16"}``, and nothing for fp32 (the
    path of every record written before the policy, so those records, their digests and file names stay valid)."""
    return {} if precision == "fp32" else {"precision": precision}


def precision_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """What a table's caption says of its rows' precision: ``""`` when every run trained and was evaluated in
    fp32, else which of them took bf16 gradient passes (training, the attacks and the Lipschitz ascent), with
    the verdicts' fp32 said."""
    runs = [r for r in rows if r.get("method") != "theory"]
    train = {str(r["settings"].get("precision", "fp32")) for r in runs if "settings" in r}
    ev = {str(r["evaluation"].get("precision", "fp32")) for r in runs if "evaluation" in r}
    if "bf16" not in train | ev:
        return ""

    def which(s: set[str]) -> str:
        return "every run" if s == {"bf16"} else "some runs" if "bf16" in s else "none"

    return (f"Gradient passes in bf16 (training: {which(train)}; attacks and Lipschitz ascent: {which(ev)}); every "
            "verdict and reported Lipschitz ratio in fp32.")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """The block under bf16 autocast on ``device`` when ``precision`` is ``"bf16"`` (already resolved), as it is
    otherwise."""
    dev = torch.device(device)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """A 4-D image batch with NHWC (``channels_last``) strides, the same values.

    A one-channel image is contiguous in both layouts, and ``contiguous(memory_format=channels_last)`` keeps its
    NCHW strides; a convolution then returns NCHW activations while the next one's (NHWC) gradient comes back NHWC,
    and every elementwise backward between them (a ReLU's) runs on mixed layouts, 15-30x slower (measured: 7.2
    against 0.27 ms for a 64x32x26x26 bf16 ReLU backward).  Such an image gets NHWC strides explicitly (the same
    memory order), so the whole pass stays NHWC."""
    if x.ndim == 4 and x.shape[1] == 1:
        h, w = x.shape[2:]
        return torch.empty_strided(x.shape, (h * w, 1, w, 1), dtype=x.dtype, device=x.device).copy_(x)
    return x.contiguous(memory_format=torch.channels_last)


def layout_for(x: torch.Tensor, precision: str) -> torch.Tensor:
    """``x`` in the layout the precision's passes run in: NHWC (:func:`nhwc`) for 4-D images under bf16 (oneDNN and
    tensor cores run bf16 convolutions fastest there), as it is otherwise."""
    return nhwc(x) if precision == "bf16" and x.ndim == 4 else x


@contextlib.contextmanager
def model_layout(model: torch.nn.Module, precision: str) -> Iterator[None]:
    """Under bf16, the model's 4-D weights (convolutions) in ``channels_last`` for the block, each put back in its
    own layout after (the values never change); nothing under fp32.  For blocks that read the weights only (attacks,
    evaluation): what the block writes into them is dropped with the copy."""
    changed = []
    if precision == "bf16":
        for t in (*model.parameters(), *model.buffers()):
            if t.ndim == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                changed.append((t, t.data))
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for t, data in changed:
            t.data = data

