"""Argument checks shared by every module (one line per bad value, raised before any work), device
resolution and image conversion.

Numbers are accepted as any real number (Python ``int``/``float``, numpy scalars, anything registered
as :class:`numbers.Real`) except ``bool``, and returned as plain Python numbers, so
``LipschitzClassifier(x, y, r=np.float32(0.17))`` and ``AT(eps=np.float64(0.1))`` work as written.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["DEFAULT_BATCH", "ArrayLike", "as_float_images", "as_model_dtype", "as_numpy", "check_compatible", "check_eps", "check_images",
           "check_int", "check_labels", "check_points", "check_radii", "check_real", "default_batch_size", "is_real",
           "join_process_group", "leave_process_group", "model_device", "resolve_device", "rng_state", "set_rng_state",
           "within"]

#: Points as numpy arrays or torch tensors.
ArrayLike = np.ndarray | torch.Tensor


def is_real(v: Any) -> bool:
    """True for a real number that is not a bool (``np.float32(1)`` and ``np.int64(1)`` included)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def within(v: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, integral: bool = False) -> bool:
    """Whether ``v`` is a finite real number (an integral one with ``integral``) inside the bounds, each end open or
    closed: the one range rule of the library, the notebooks' parameters and the command line."""
    if not is_real(v) or not math.isfinite(float(v)) or (integral and not float(v).is_integer()):
        return False
    x = float(v)
    return ((lo is None or (x > lo if lo_open else x >= lo))
            and (hi is None or (x < hi if hi_open else x <= hi)))


def check_real(name: str, v: Any, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float:
    """``v`` as a finite float within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); ValueError otherwise."""
    if not within(v, lo, hi, lo_open=lo_open):
        where = ""
        if lo is not None or hi is not None:
            left = "(" if lo_open else "["
            where = f" in {left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        raise ValueError(f"{name} must be a finite number{where}, got {v!r}")
    return float(v)


def check_int(name: str, v: Any, *, lo: int = 1) -> int:
    """``v`` as an int >= ``lo`` (numpy integers accepted, bools and floats refused)."""
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or int(v) < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def check_radii(radii: Sequence[Any]) -> list[float]:
    """L-inf radii in (0, 1], at least one and each once, as floats in ascending order; ValueError otherwise.

    >>> check_radii([0.1, 0.02])
    [0.02, 0.1]
    """
    out = [check_real("eps", e, lo=0, hi=1, lo_open=True) for e in radii]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"radii must be distinct and at least one, got {out}")
    return sorted(out)


def check_eps(eps: Any, step_size: Any = None, steps: Any = None) -> None:
    """An L-inf radius for images in [0, 1] (0 <= eps <= 1), a step size > 0, steps >= 1."""
    check_real("eps", eps, lo=0, hi=1)
    if step_size is not None:
        check_real("step_size", step_size, lo=0, lo_open=True)
    if steps is not None:
        check_int("steps", steps)


# ----------------------------------------------------------------------------------------------
# tensors, points and devices


def check_images(x: torch.Tensor) -> None:
    """A floating tensor ``(N, ...)`` with N >= 1 and every value in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of images in [0, 1], got {x.dtype} "
                         "(convert uint8 pixels with x.float() / 255)")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    lo, hi = x.aminmax()
    if not (bool(lo >= 0) and bool(hi <= 1)):  # also false for NaN
        raise ValueError(f"x must lie in [0, 1], got values in [{float(lo)}, {float(hi)}]")


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None) -> None:
    """Integer labels of shape ``(n,)`` in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be an integer torch.Tensor, got "
                         f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in [{int(y.min())}, {int(y.max())}]")


def as_float_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; floating input is passed through as a tensor."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype == torch.uint8:
        return t.float().div_(255)
    return t


def as_model_dtype(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Floating images in the floating dtype of ``model``'s first floating parameter or buffer (float64 images
    for a float32 network become float32); unchanged for a model without one (the Section 4 classifier takes
    any float)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return x.to(t.dtype) if x.is_floating_point() and x.dtype != t.dtype else x
    return x


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy array or a torch tensor (detached, on the CPU) as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"expected a numpy array or torch tensor, got {type(x).__name__}")


def check_points(x: ArrayLike, y: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Labelled points as ``(N, D)`` uint8/float32/float64 and int64 labels (finite, non-empty)."""
    xa, ya = as_numpy(x), as_numpy(y)
    if xa.ndim < 2:
        raise ValueError(f"{name} must have shape (N, D) or (N, C, H, W), got {xa.shape}")
    n = xa.shape[0]
    dim = int(np.prod(xa.shape[1:]))
    if n == 0 or dim == 0:
        raise ValueError(f"{name} is empty: shape {xa.shape}")
    if xa.dtype not in (np.uint8, np.float32, np.float64):
        raise ValueError(f"{name} must be uint8 (raw pixels, exact integer distances) or float32/float64, "
                        f"got {xa.dtype}")
    if xa.dtype != np.uint8 and not np.isfinite(xa).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if ya.ndim != 1 or ya.shape[0] != n:
        raise ValueError(f"{name} labels must have shape ({n},), got {ya.shape}")
    if ya.dtype == np.bool_ or not np.issubdtype(ya.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers, got {ya.dtype}")
    return np.ascontiguousarray(xa.reshape(n, dim)), ya.astype(np.int64)


def check_compatible(q: np.ndarray, r: np.ndarray) -> None:
    """Queries and references of one dtype and one number of features."""
    if r.dtype != q.dtype:
        raise ValueError(f"queries ({q.dtype}) and refs ({r.dtype}) must have the same dtype")
    if r.shape[1] != q.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features per point, refs {r.shape[1]}")


#: Batch sizes of attacks, evaluation and Lipschitz estimates per device type: on a CPU 64 images of
#: cnn001's activations stay in cache (``make bench-eval`` on a 2-core AVX2 EPYC: PGD-10 145 img/s at 64
#: against 108 at 256, Lipschitz 138 against 96; an earlier session's Zen 4 measured 1.68x); on a GPU
#: larger batches fill the device (512: not yet measured, no GPU has been lent).
DEFAULT_BATCH = {"cpu": 64, "cuda": 512}


def default_batch_size(device: torch.device) -> int:
    """The default batch of attacks and evaluation on ``device`` (:data:`DEFAULT_BATCH`)."""
    return DEFAULT_BATCH.get(device.type, 64)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unsupported device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU "
                           f"(torch {torch.__version__}); use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use 'cpu', 'cuda' or 'auto'")
    return dev


def rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global random state that ``device``'s next draws (dropout masks, random starts) come from:
    the CPU generator's, plus the CUDA generator's on a GPU."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    """Put back a state from :func:`rng_state` (the CUDA part only where there is one)."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


# ----------------------------------------------------------------------------------------------
# torchrun


def join_process_group() -> tuple[int, int, torch.device | None, bool]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group (NCCL with GPUs, else gloo) and
    return (rank, world size, this rank's device, whether this call opened the group, so the caller
    closes it); (0, 1, None, False) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None, False
    import torch.distributed as dist

    opened = not dist.is_initialized()
    if opened:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dist.get_rank(), dist.get_world_size(), dev, opened


def leave_process_group(opened: bool, finished: bool = True) -> None:
    """Close the process group if :func:`join_process_group` opened it.  ``finished`` (the work ended without an
    error): first wait for every rank, since a rank that tears the group down while another is still in a
    collective aborts the job under gloo; after an error, close at once (the other ranks may never come)."""
    if opened:
        import torch.distributed as dist

        if finished:
            dist.barrier()
        dist.destroy_process_group()
