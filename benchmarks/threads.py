"""`make bench-threads`: which thread policy runs a grid fastest, on a quiet and on a busy machine.

The work is one job of the default `make run` grid at its own scale (notebook 04, `gaps` preset): an AT epoch of
cnn001 on 500 MNIST images (batch 64, PGD-10 inside) and a PGD-10 evaluation of 500 points.  Policies:

* ``1 run x 2 threads``: torch's default on 2 cores, one run after another;
* ``1 run x 2 threads, OMP_WAIT_POLICY=PASSIVE``: the same, its idle OpenMP threads sleeping instead of spinning;
* ``1 run x 1 thread``: one run after another, one thread;
* ``2 runs x 1 thread``: two runs side by side in two processes of one thread (what ``run_grid(workers=None)``
  does), timed as the wall time of both over 2.

Each policy's job runs in fresh processes, in interleaved rounds; "busy" adds a process that spins on one core
for the whole measurement (another user's job).  The table gives wall seconds and CPU seconds per job (medians
over rounds), and each policy's speed against the default in wall time per job (> 1: faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = {  # name: (processes side by side, torch threads each, extra environment)
    "1 run x 2 threads (torch's default)": (1, 2, {}),
    "1 run x 2 threads, OMP_WAIT_POLICY=PASSIVE": (1, 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "1 run x 1 thread": (1, 1, {}),
    "2 runs x 1 thread (run_grid workers)": (2, 1, {}),
}


def job(threads: int, precision: str) -> dict[str, float]:
    """One grid job's work at ``threads`` torch threads and ``precision``: its wall and CPU seconds."""
    import torch

    torch.set_num_threads(threads)
    from rll_core.data import load_train_test
    from rll_core.evaluation import evaluate
    from rll_core.methods import make_method
    from rll_core.models import build_model
    from rll_core.training import train

    tr, te = load_train_test("mnist", ROOT / "data", n_train=500, n_test=500, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
    w, c = time.perf_counter(), time.process_time()
    train(model, (tr.images, tr.labels), make_method("at", eps=0.1), epochs=1, batch_size=64, optimizer="adam",
          lr=1e-3, device="cpu", progress=False, precision=precision)
    evaluate(model, te.float_images(), te.labels, eps=0.1, attacks=("pgd",), progress=False, precision=precision)
    return {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}


def _policy(procs: int, threads: int, env: dict[str, str], precision: str) -> dict[str, float]:
    """Run the job in ``procs`` fresh processes side by side: wall per job (all of them over ``procs``), CPU
    seconds per job (their mean)."""
    cmd = [sys.executable, __file__, "--child", str(threads), "--precision", precision]
    t = time.perf_counter()
    # the policy's own environment only (importing rll_core here set OMP_WAIT_POLICY for this process)
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**base, **env}) for _ in range(procs)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
    if any(p.returncode for p in ps):
        raise SystemExit("a child process failed")
    both = time.perf_counter() - t
    inner = max(o["wall"] for o in outs)  # the work itself, without the processes' start (imports)
    return {"wall": inner / procs if procs > 1 else inner, "cpu": statistics.mean(o["cpu"] for o in outs),
            "start": (both - inner)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per machine state (default 3)")
    ap.add_argument("--precision", default="both", choices=["fp32", "auto", "both"],
                    help="fp32, auto (bf16 where the CPU computes it natively) or both (default)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(job(args.child, args.precision)))
        return 0
    from rll_core.pool import available_cores
    from rll_core.precision import cpu_description, resolve_precision

    precisions = ["fp32", "auto"] if args.precision == "both" else [args.precision]
    if "auto" in precisions and resolve_precision("auto", "cpu") == "fp32":
        precisions.remove("auto")  # auto is fp32 on this CPU: measured once
    print(f"# thread policies for a grid's jobs\n\nCPU: {cpu_description()}, {available_cores()} cores available; "
          f"{args.rounds} interleaved rounds; medians per job (AT epoch on 500 MNIST images + PGD-10 on 500 "
          "points)\n")
    print("| precision | machine | policy | wall s / job | CPU s / job | speed vs default (wall) |\n"
          "|---|---|---|---|---|---|")
    for precision, state in ((p, s) for p in precisions for s in ("quiet", "busy")):
        shown = "bf16 (auto)" if precision == "auto" else precision
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if state == "busy" else None
        try:
            times: dict[str, list[dict[str, float]]] = {k: [] for k in POLICIES}
            for r in range(args.rounds):
                for name, (procs, threads, env) in POLICIES.items():
                    times[name].append(_policy(procs, threads, env, precision))
                print(f"  {shown}, {state}: round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            if hog is not None:
                hog.kill()
        base = list(POLICIES)[0]
        for name in POLICIES:
            wall = statistics.median(t["wall"] for t in times[name])
            cpu = statistics.median(t["cpu"] for t in times[name])
            ratio = statistics.median(b["wall"] / t["wall"] for b, t in zip(times[base], times[name], strict=True))
            print(f"| {shown} | {state} | {name} | {wall:.1f} | {cpu:.1f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
