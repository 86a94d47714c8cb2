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
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "autocast", "cpu_description", "cpu_native_bf16", "resolve_precision"]

#: The precision settings: ``auto`` (from the hardware), ``fp32``, ``bf16``.
PRECISIONS = ("auto", "fp32", "bf16")


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


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` where ``device`` computes bf16 natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU
    of capability >= 8.0), else ``"fp32"``; ``"fp32"`` and ``"bf16"`` are kept as asked.

    Args:
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
        device: where the work runs.

    Returns:
        ``"fp32"`` or ``"bf16"``.

    Raises:
        ValueError: an unknown precision.

    Example:
        >>> resolve_precision("fp32", "cpu")
        'fp32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(dev) >= (8, 0) else "fp32"
    return "bf16" if dev.type == "cpu" and cpu_native_bf16() else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """The block under bf16 autocast on ``device`` when ``precision`` is ``"bf16"`` (already resolved), as it is
    otherwise."""
    dev = torch.device(device)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield
