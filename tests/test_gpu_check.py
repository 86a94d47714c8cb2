"""`make gpu-check`'s script, run at toy sizes on the CPU so that it cannot rot between GPU sessions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_section_on_the_cpu(tmp_path, mnist):
    out = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    text = out.read_text()
    for section in ("## Environment", "## pytest -m gpu", "## Separation", "## Training", "## Attacks and Lipschitz",
                    "## End to end"):
        assert section in text
    assert "FAILED" not in text and text.rstrip().endswith("failed sections: none")
    # the separation rows agree with the CPU kernel, and every training mode produced a rate
    assert "| mnist train-train | 600 | torch | cpu |" in text and "| False |" not in text
    assert text.count("| cnn001 | MNIST |") == 9  # natural, AT, TRADES x fp32, auto, fp32 channels_last
    assert text.count("| PGD-10 | fp32 |") == 1 and "precision=\"auto\" resolves to " in text
    assert "`rll train --dataset mnist --method at" in text and "eval-last-e1" in text
    # no CUDA here: the CLI refuses the default device in one line
    bad = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "x.md")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no CUDA device here" in bad.stderr


def test_budget_sums_what_the_job_recorded(tmp_path, capsys):
    """benchmarks/budget.py reads papermill's cell times and the runs' own seconds: its totals are their sums."""
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from budget import main

    nbs, runs = tmp_path / "nb", tmp_path / "runs"
    nbs.mkdir()
    for name, cells in (("01_a", [4.0, 6.0]), ("02_b", [30.0])):
        nb = {"metadata": {"papermill": {"duration": sum(cells) + 1}},
              "cells": [{"source": [f"step_{k}()\n"], "metadata": {"papermill": {"duration": d}}}
                        for k, d in enumerate(cells)]}
        (nbs / f"{name}.ipynb").write_text(json.dumps(nb))
    run = runs / "mnist-cnn001-at-eps0.1-n2000-e2-s0-quick"
    run.mkdir(parents=True)
    (run / "history.json").write_text(json.dumps({"history": [{"seconds": 10.5}, {"seconds": 9.5}]}))
    ev = {"n_eval": 100, "attacks": {"pgd": {}, "multitarget": {}}, "test_only": ["multitarget"]}
    (run / "eval-last-e2-x.json").write_text(json.dumps({"evaluation": ev, "seconds": 12.0}))
    (runs / "other-long").mkdir()  # another preset's run is not counted
    assert main(["--notebooks", str(nbs), "--runs", str(runs), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "| 01_a | 11 | 26% | 6: `step_1()` |" in out and "| all | 42 (0.7 min) |" in out
    assert "| mnist-cnn001-at-eps0.1-n2000-e2-s0-quick | 2 | 20 | n=100 multitarget (test only)+pgd: 12 |" in out
    assert "| all 1 runs | | 20 | 12 |" in out
    assert main(["--notebooks", str(tmp_path / "none")]) == 2
