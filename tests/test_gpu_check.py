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
    assert text.count("| cnn001 | MNIST |") == 6  # natural, AT, TRADES x fp32, channels_last
    assert "`rll train --dataset mnist --method at" in text and "eval-last-e1" in text
    # no CUDA here: the CLI refuses the default device in one line
    bad = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "x.md")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no CUDA device here" in bad.stderr
