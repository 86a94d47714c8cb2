"""Seeds as a dimension of every grid, and independent runs side by side in worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rll_core.grids import check_seeds, run_grid
from rll_core.pool import run_jobs, torch_threads

KW = dict(dataset="mnist", methods="natural", epochs=1, n_train=64, n_test=32, n_eval=8, device="cpu", progress=False,
          precision="fp32")


def _numbers(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "grid", "eval_file")} for r in rows]


def test_one_run_folder_per_seed_read_back_never_replaced(tmp_path):
    rows = run_grid(tmp_path, seeds=(0, 1), **KW)
    assert [r["seed"] for r in rows] == [0, 1] and {r["key"] for r in rows} == {"natural"}
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and folders[0].endswith("-s0-quick") and folders[1].endswith("-s1-quick")
    digests = {json.loads((tmp_path / f / "settings.json").read_text())["data_digest"] for f in folders}
    assert len(digests) == 2  # each seed draws its own training subset
    assert rows[0]["test_lipschitz"] != rows[1]["test_lipschitz"]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"}
    again = run_grid(tmp_path, seeds=[1, 0], **KW)  # read back, in the order asked, nothing rewritten
    assert _numbers(again) == _numbers(rows[::-1])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"} == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == folders
    assert all(r["threads"] == torch.get_num_threads() for r in rows)  # recorded with every evaluation


def test_seeds_are_checked_before_any_work():
    assert check_seeds(3) == [3] and check_seeds((2, 0, 1)) == [2, 0, 1]
    for bad, message in ((-1, "seed must be an integer >= 0"), ((0, 0), "seeds must differ"), ((), "seeds must be"),
                         ("0,1", "seeds must be"), (True, "seeds must be"), ((0.5,), "seed must be an integer")):
        with pytest.raises(ValueError, match=message):
            check_seeds(bad)


def test_two_workers_of_one_thread_give_the_sequential_one_thread_results(tmp_path):
    """The pool runs each job in a fresh process set to one torch thread: the same bits as the same jobs run here,
    one after another, at one thread (weights and every number of the evaluation)."""
    with torch_threads(1):
        here = run_grid(tmp_path / "here", seeds=(0, 1), **{**KW, "methods": "natural,at"}, workers=1)
    pooled = run_grid(tmp_path / "pool", seeds=(0, 1), **{**KW, "methods": "natural,at"}, workers=2)
    assert _numbers(pooled) == _numbers(here)
    assert [r["threads"] for r in pooled] == [1, 1, 1, 1]
    for a, b in zip(sorted((tmp_path / "here").iterdir()), sorted((tmp_path / "pool").iterdir()), strict=True):
        ca, cb = torch.load(a / "last.pt", weights_only=False), torch.load(b / "last.pt", weights_only=False)
        assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"]), a.name
        assert ca["history"][0]["threads"] == cb["history"][0]["threads"] == 1


def test_run_jobs_keeps_order_and_reports_each_job():
    seen = []
    assert run_jobs(abs, [-3, 1, -2], workers=2, on_done=lambda i, r: seen.append((i, r))) == [3, 1, 2]
    assert sorted(seen) == [(0, 3), (1, 1), (2, 2)]
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        run_jobs(abs, [1], workers=0)
    with pytest.raises(TypeError):  # a job's error reaches the caller
        run_jobs(abs, ["a", "b"], workers=2)


def test_history_records_the_thread_count(tmp_path):
    run_grid(tmp_path, **KW)
    (folder,) = Path(tmp_path).iterdir()
    ck = torch.load(folder / "last.pt", weights_only=False)
    assert ck["history"][0]["threads"] == torch.get_num_threads()


def test_workers_start_from_a_script_without_a_main_guard(tmp_path):
    """multiprocessing's spawn imports the caller's main module in every worker; a script without the guard would
    run its grid again in each (and break the pool): the workers leave it alone."""
    import subprocess
    import sys

    script = tmp_path / "grid.py"
    script.write_text("from rll_core.pool import run_jobs\nprint('ran', run_jobs(abs, [-1, -2, -3], workers=2))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("ran") == 1 and "ran [1, 2, 3]" in done.stdout


def test_a_grid_through_a_job_engine_in_its_local_mode_equals_the_sequential_grid(tmp_path, monkeypatch):
    """submitit's LocalExecutor runs each (method, seed) as a job of its own process, as its Slurm executor does on
    a cluster: the rows and weights equal the same grid run here at the same thread count, and a second
    submission reads every finished run back."""
    submitit = pytest.importorskip("submitit")
    kw = {**KW, "methods": "natural,at"}
    with torch_threads(1):
        here = run_grid(tmp_path / "here", seeds=(0, 1), **kw)
    ex = submitit.LocalExecutor(folder=tmp_path / "jobs")
    ex.update_parameters(timeout_min=10)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the engine's job processes start with one torch thread
    engine = run_grid(tmp_path / "engine", seeds=(0, 1), **kw, executor=ex)
    assert _numbers(engine) == _numbers(here)
    for a, b in zip(sorted((tmp_path / "here").iterdir()), sorted((tmp_path / "engine").iterdir()), strict=True):
        wa, wb = torch.load(a / "last.pt", weights_only=False)["model"], torch.load(b / "last.pt", weights_only=False)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), a.name
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "engine").rglob("*.pt")}
    assert _numbers(run_grid(tmp_path / "engine", seeds=(0, 1), **kw, executor=ex)) == _numbers(here)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "engine").rglob("*.pt")} == stamps  # resumed: nothing retrained


def test_grids_in_one_pool_equal_each_grid_on_its_own(tmp_path):
    """run_grids hands both dropout variants' runs to the same workers, the robust ones first: each grid's rows
    come back in run_grid's order, equal to the grid run on its own (weights included)."""
    from rll_core.grids import run_grids

    kw = {**KW, "methods": "natural,at"}
    with torch_threads(1):
        alone = [run_grid(tmp_path / "alone", seeds=(0, 1), dropout=d, **kw) for d in (0.0, 0.25)]
    together = run_grids(tmp_path / "together", [{"dropout": 0.0}, {"dropout": 0.25}], seeds=(0, 1), workers=2, **kw)
    assert [[(r["key"], r["seed"], r["dropout"]) for r in g] for g in together] == \
        [[(k, s, d) for k in ("natural", "at") for s in (0, 1)] for d in (0.0, 0.25)]
    assert [_numbers(g) for g in together] == [_numbers(g) for g in alone]
    for bad, message in (([], "at least one grid"), ([{"dropout": 0.0, "eps": 0.2}], "may set dropout, augment only"),
                         ([{"dropout": 0.5}, {"dropout": 0.5, "augment": None}], "variants must differ"),
                         ([{"dropout": 0.0}, {"dropout": 1.0}], "dropout")):
        with pytest.raises(ValueError, match=message):
            run_grids(tmp_path / "bad", bad, **kw)
    assert not (tmp_path / "bad").exists()
