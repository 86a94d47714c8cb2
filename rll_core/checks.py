"""Argument checks shared by every module: one line per bad value, raised before any work.

Numbers are accepted as any real number (Python ``int``/``float``, numpy scalars, anything registered
as :class:`numbers.Real`) except ``bool``, and returned as plain Python numbers, so
``LipschitzClassifier(x, y, r=np.float32(0.17))`` and ``AT(eps=np.float64(0.1))`` work as written.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_eps", "check_int", "check_real", "is_real"]


def is_real(v: Any) -> bool:
    """True for a real number that is not a bool (``np.float32(1)`` and ``np.int64(1)`` included)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_real(name: str, v: Any, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float:
    """``v`` as a finite float within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); ValueError otherwise."""
    ok = is_real(v) and math.isfinite(float(v))
    if ok and lo is not None:
        ok = float(v) > lo if lo_open else float(v) >= lo
    if ok and hi is not None:
        ok = float(v) <= hi
    if not ok:
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


def check_eps(eps: Any, step_size: Any = None, steps: Any = None) -> None:
    """An L-inf radius for images in [0, 1] (0 <= eps <= 1), a step size > 0, steps >= 1."""
    check_real("eps", eps, lo=0, hi=1)
    if step_size is not None:
        check_real("step_size", step_size, lo=0, lo_open=True)
    if steps is not None:
        check_int("steps", steps)
