"""How every benchmark times: cases interleaved round by round, each timed in CPU seconds and wall time.

On a shared machine a neighbour's load comes and goes, and two threads can spin instead of working: timing
each case once, one after another, lets a quiet spell favour whichever ran in it.  Here every case runs once
to warm up (JIT, allocator, oneDNN's kernel choice), then ``rounds`` times, the cases in turn within each
round, and a ratio is the median over rounds of the two cases' ratio in the same round (paired), per CPU
second (the process's CPU time: every thread's work, spinning included) and per wall second.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rll_core.precision import cpu_description  # noqa: E402


@dataclass
class Times:
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def median(self, kind: str = "cpu") -> float:
        return statistics.median(getattr(self, kind))


def interleaved(cases: Mapping[Hashable, Callable[[], object]], rounds: int, *,
                warmup: bool = True) -> dict[Hashable, Times]:
    """Each case once to warm up (unless ``warmup`` is False: the caller did), then ``rounds`` rounds of every
    case in turn; the CPU and wall seconds of each call."""
    if rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {rounds}")
    out: dict[Hashable, Times] = {k: Times() for k in cases}
    for r in range(0 if warmup else 1, rounds + 1):
        for key, fn in cases.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            if r:  # round 0 is the warm-up
                out[key].cpu.append(time.process_time() - c)
                out[key].wall.append(time.perf_counter() - w)
        print(f"  round {r}/{rounds} done" if r else "  warm-up done", file=sys.stderr, flush=True)
    return out


def paired_ratio(times: Mapping[Hashable, Times], base: Hashable, this: Hashable, kind: str = "cpu",
                 work: Mapping[Hashable, float] | None = None) -> float:
    """Median over rounds of ``base``'s time over ``this``'s in the same round (> 1: ``this`` is faster); with
    ``work`` (each case's amount of work), of their times per unit of work."""
    a, b = getattr(times[base], kind), getattr(times[this], kind)
    wa, wb = (work[base], work[this]) if work is not None else (1.0, 1.0)
    return statistics.median((x / wa) / (y / wb) for x, y in zip(a, b, strict=True))


def machine() -> str:
    """The line every benchmark prints first: the CPU (model and ISA flags), threads, torch, any GPU."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"CPU: {cpu_description()}; {torch.get_num_threads()} torch threads; torch {torch.__version__}; {gpu}"


def target_table(times: Mapping[Hashable, Times], checks: Sequence[tuple[str, Hashable, Hashable, float]]) -> str:
    """The targets as a table: each check is (what is compared, the baseline's key, the row's key, the target
    ratio); the paired CPU-second ratio, and "yes" or by how much it falls short.  Checks whose cases did not run
    (no torchattacks) are left out."""
    lines = ["| comparison (per CPU second) | ratio | target | met |", "|---|---|---|---|"]
    for what, base, this, target in checks:
        if base in times and this in times:
            r = paired_ratio(times, base, this)
            met = "yes" if r >= target else f"no: {100 * (1 - r / target):.0f} % short"
            lines.append(f"| {what} | {r:.2f} | {target:g} | {met} |")
    return "\n".join(lines)
