"""No result replaced by another: output names and settings records, identical files left alone, outputs in the
project's folders whatever the working directory, and failed writes said in one line."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rll_core.cli import main
from rll_core.data import PROJECT_DATA_DIR
from rll_core.storage import (
    OutputConflictError,
    WriteError,
    atomic_write_bytes,
    check_outputs,
    project_dir,
    record_outputs,
)

ROOT = Path(__file__).resolve().parents[1]


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    """``images`` (N, 28, 28) uint8 and ``labels`` as IDX files, the format MNIST and Fashion-MNIST ship in."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


def test_separation_outputs_of_other_data_are_refused_before_the_search(tmp_path, fmnist, mnist, capsys):
    out = tmp_path / "out"
    args = ["separation", "--dataset", "fashion_mnist", "--n-train", "200", "--n-test", "50", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress", "--formats", "png"]
    assert main(args) == 0
    table = out / "table1_fashion_mnist_n200-50-seed0.md"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    record = json.loads((out / "separation_fashion_mnist_n200-50-seed0.settings.json").read_text())
    assert record["settings"]["kind"] == "fashion_mnist" and table.name in record["files"]
    # valid IDX files of your own (MNIST digits) under the same dataset name: another result, so refused
    own = tmp_path / "own"
    for split, prefix in ((mnist[0], "train"), (mnist[1], "t10k")):
        sub = split.subset(300, seed=3)
        _write_idx(own, sub.images[:, 0], sub.labels.astype(np.uint8), prefix)
    capsys.readouterr()
    assert main([*args, "--data-dir", str(own)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rll: error: ") and "made with other settings (data_digest" in err[-1]
    assert not list((tmp_path / "cache").glob("*own*"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced
    # the same job again passes (a rerun), and so does the other data in a folder of its own
    assert main(args) == 0
    assert main([*args, "--data-dir", str(own), "--out", str(tmp_path / "mine")]) == 0


def test_a_settings_record_refuses_other_settings_and_passes_the_same(tmp_path):
    check_outputs(tmp_path, "job", {"n_eval": 20})  # nothing recorded yet
    record_outputs(tmp_path, "job", {"n_eval": 20, "eps": np.float64(0.1), "sizes": (1, 2)}, [tmp_path / "a.md"])
    check_outputs(tmp_path, "job", {"n_eval": 20, "eps": 0.1, "sizes": [1, 2]})  # as JSON reads them back: the same
    with pytest.raises(OutputConflictError, match=r"a\.md in .* were made with other settings \(n_eval: stored 20, now 30\)"):
        check_outputs(tmp_path, "job", {"n_eval": 30, "eps": 0.1, "sizes": [1, 2]})


def test_an_identical_file_is_not_rewritten(tmp_path):
    p = tmp_path / "fig.png"
    atomic_write_bytes(p, b"same bytes")
    old = time.time() - 3600
    os.utime(p, (old, old))
    atomic_write_bytes(p, b"same bytes")
    assert p.stat().st_mtime == pytest.approx(old)  # untouched: git and make see no change
    atomic_write_bytes(p, b"other bytes")
    assert p.read_bytes() == b"other bytes" and p.stat().st_mtime > old


def test_no_tracked_file_lives_where_runs_write():
    """`make run` writes figures/ and results/; the README's pictures live elsewhere, so a run leaves git clean."""
    tracked = subprocess.run(["git", "ls-files", "figures", "results"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(tracked) == ["figures/.gitkeep", "figures/README.md"] or sorted(tracked) == ["figures/README.md"]
    readme = (ROOT / "README.md").read_text()
    shown = [ln.split("](")[1].split(")")[0] for ln in readme.splitlines() if ln.startswith("![")]
    assert shown and all(not s.startswith(("figures/", "results/")) and (ROOT / s).is_file() for s in shown)


def test_default_folders_are_the_projects_whatever_the_working_directory(tmp_path, monkeypatch):
    from rll_core.notebook import Param, check_parameter

    monkeypatch.chdir(tmp_path)
    assert project_dir() == ROOT and PROJECT_DATA_DIR == ROOT / "data"
    assert check_parameter("figures_dir", None, Param("out_dir", folder="figures")) == ROOT / "figures"
    assert check_parameter("figures_dir", "mine", Param("out_dir", folder="figures")) == tmp_path / "mine"
    assert list(tmp_path.iterdir()) == [tmp_path / "mine"]  # nothing else written where the command ran


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    p = tmp_path / "result.json"
    atomic_write_bytes(p, b"old")

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=r"cannot write .*result\.json: No space left on device"):
        atomic_write_bytes(p, b"new result")
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["result.json"]  # no temp file left


def test_disk_full_during_training_ends_in_one_line_and_resumes(tmp_path, own_npz):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rll_core.cli", "train", "--dataset", str(own_npz), "--epochs", "2", "--n-train",
           "64", "--n-test", "16", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.001", "--out", str(run),
           "--device", "cpu", "--no-progress"]
    limit = 64 * 1024  # below a cnn001 checkpoint (about 14 MB): its write fails with "File too large"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rll: error: cannot write {run}/") and ".pt: File too large" in last
    assert "finished epochs are saved in the run folder; the same command resumes" in last
    assert "Traceback" not in proc.stderr
    assert not list(run.glob(".*.tmp"))  # the partial file is gone
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "trained natural for 2 epochs" in done.stdout


def test_a_notebook_saved_with_outputs_leaves_git_status_clean(tmp_path):
    """JupyterLab's save (`make lab`'s post-save hook): outputs are not a change git should list."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lab_config", ROOT / "tools" / "jupyter_server_config.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "strip_notebook.py").write_bytes((ROOT / "tools" / "strip_notebook.py").read_bytes())
    (tmp_path / ".gitattributes").write_text("notebooks/*.ipynb filter=rll-notebook\n")
    nb = tmp_path / "notebooks" / "02_theory.ipynb"
    nb.write_bytes((ROOT / "notebooks" / "02_theory.ipynb").read_bytes())
    git("init", "-q")
    git("config", "filter.rll-notebook.clean", f"{sys.executable} tools/strip_notebook.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    saved = json.loads(nb.read_text())
    for cell in saved["cells"]:
        if cell["cell_type"] == "code":
            cell |= {"outputs": [{"output_type": "stream", "name": "stdout", "text": ["4\n"]}], "execution_count": 1}
    nb.write_text(json.dumps(saved, indent=1))
    assert git("status", "--porcelain").strip() == "M notebooks/02_theory.ipynb"  # git's own view, before the hook
    hook.refresh_git_index(None, str(nb), None)
    assert git("status", "--porcelain") == "" and git("diff", "--cached") == ""  # clean, and nothing staged
    saved["cells"][0]["source"] = ["an edit of the source\n"]
    nb.write_text(json.dumps(saved, indent=1))
    hook.refresh_git_index(None, str(nb), None)
    assert git("status", "--porcelain").strip() == "M notebooks/02_theory.ipynb"  # a real edit stays unstaged
