"""The Lipschitz bracket against its reference (issue #40): rll_core.certify's upper bound and rll's ascent on
random 784-100-100-10 ReLU MLPs (torch's default initialisation) at eps 0.01 and 0.03, on uniform random points in
[0, 1]^784, several seeds of the network.  The baseline is auto_LiRPA's bound measured on this CPU class for the
issue (it cannot be installed beside this torch): 202.6 (24x the ascent's 8.57) at eps 0.01 and 785.2 (98x the
ascent's 8.05) at 0.03, 84-114 s per point.  Prints bound, ascent, their ratio (of the means, as the issue's) and
the CPU seconds per point; the bound is timed in interleaved rounds with the ascent (benchmarks/_timing.py).

    python benchmarks/certify.py [--seeds 3] [--points 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import interleaved, machine  # noqa: E402

from rll_core.certify import lipschitz_bound  # noqa: E402
from rll_core.lipschitz import local_lipschitz  # noqa: E402

#: auto_LiRPA's numbers as the issue measured them: eps -> (its bound, the ascent there, seconds per point)
REFERENCE = {0.01: (202.6, 8.57, (84, 114)), 0.03: (785.2, 8.05, (84, 114))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print(machine())
    print("| seed | eps | bound (mean) | ascent (mean) | bound / ascent | auto_LiRPA / ascent (issue) | bound CPU s/point |"
          " ascent CPU s/point |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in range(a.seeds):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)).eval()
        x = torch.rand(a.points, 784, generator=torch.Generator().manual_seed(100 + seed))
        for eps in REFERENCE:
            bound = lipschitz_bound(net, x, eps=eps)
            found = local_lipschitz(net, x, eps=eps, precision="fp32", generator=torch.Generator().manual_seed(0))
            times = interleaved({"bound": lambda n=net, z=x, e=eps: lipschitz_bound(n, z, eps=e),
                                 "ascent": lambda n=net, z=x, e=eps: local_lipschitz(
                                     n, z, eps=e, precision="fp32", generator=torch.Generator().manual_seed(0))},
                                a.rounds)
            ref, ref_ascent, _ = REFERENCE[eps]
            print(f"| {seed} | {eps:g} | {bound.mean():.1f} | {found.mean():.2f} | {bound.mean() / found.mean():.1f} | "
                  f"{ref / ref_ascent:.1f} | {times['bound'].median() / a.points:.4f} | "
                  f"{times['ascent'].median() / a.points:.4f} |", flush=True)
    print(f"auto_LiRPA (issue #40, this CPU class): 84-114 s per point; {a.points} points per row here")


if __name__ == "__main__":
    main()
