"""Runs by name: seeded and bit-identical, one eps per run, evaluations never overwritten, refusals,
robustness curves and the Section 4 row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rll_core.cli import main
from rll_core.runs import evaluate_run, robustness_curve, train_run
from rll_core.section4 import theory_curve, theory_row
from rll_core.training import RunMismatchError, load_checkpoint


def test_best_checkpoint_and_the_data_digest_refusal(tmp_path, own_npz):
    kw = dict(dataset=str(own_npz), epochs=2, batch_size=16, optimizer="adam", lr=1e-3, n_val=8, device="cpu",
              progress=False)
    for m in ("natural", "at"):
        train_run(tmp_path / "runs" / m, method=m, hyper={"steps": 1} if m == "at" else None, **kw)
    best = evaluate_run(tmp_path / "runs" / "at", checkpoint="best", n_eval=8, attacks=("pgd",), device="cpu",
                        progress=False)
    hist = json.loads((tmp_path / "runs" / "at" / "history.json").read_text())["history"]
    assert best["epoch"] == max(hist, key=lambda h: h["val_pgd_accuracy"])["epoch"]  # first of the best
    nat = evaluate_run(tmp_path / "runs" / "natural", n_eval=8, attacks=("pgd",), device="cpu", progress=False)
    assert (best["method"], nat["method"]) == ("at", "natural")
    assert best["hyper"]["steps"] == 1 and "step_size" in best["hyper"]  # every field of the method, steps included
    # the data changed under the run: evaluation is refused
    z = dict(np.load(own_npz))
    z["images"] = z["images"][::-1].copy()
    np.savez(own_npz, **z)
    with pytest.raises(RunMismatchError, match="differs from the data"):
        evaluate_run(tmp_path / "runs" / "natural", n_eval=4, attacks=("pgd",), device="cpu", progress=False)


def test_an_evaluation_without_the_reference_procedure_is_a_file_of_its_own(tmp_path, own_npz):
    """lipschitz=("ascent",) (the gaps preset's) or the reference procedure on test only (the tables'): the same
    verdicts and values, no column for what was left out, another file; an unknown procedure is refused first."""
    run = tmp_path / "runs" / "natural"
    train_run(run, dataset=str(own_npz), epochs=1, batch_size=16, n_val=8, device="cpu", progress=False)
    both = evaluate_run(run, n_eval=8, attacks=("pgd",), device="cpu", progress=False)
    ascent = evaluate_run(run, n_eval=8, attacks=("pgd",), lipschitz=("ascent",), device="cpu", progress=False)
    assert ascent["eval_file"] != both["eval_file"] and "test_lipschitz_reference" not in ascent
    for k in ("test_pgd_accuracy", "train_pgd_accuracy", "test_lipschitz", "train_lipschitz"):
        assert ascent[k] == both[k], k
    assert ascent["evaluation"]["lipschitz"] == ["ascent"] and "lipschitz" not in both["evaluation"]
    test_only = evaluate_run(run, n_eval=8, attacks=("pgd",), test_only=("reference",), device="cpu", progress=False)
    assert "train_lipschitz_reference" not in test_only and test_only["eval_file"] != both["eval_file"]
    assert test_only["test_lipschitz_reference"] == both["test_lipschitz_reference"]
    files = sorted(run.glob("eval-*"))
    with pytest.raises(ValueError, match="test_only names attacks or Lipschitz procedures that are not evaluated"):
        evaluate_run(run, n_eval=4, attacks=("pgd",), lipschitz=("ascent",), test_only=("reference",), device="cpu")
    with pytest.raises(ValueError, match="Lipschitz procedures must be distinct names of ascent, reference"):
        evaluate_run(run, n_eval=4, lipschitz=("ascent", "steepest"), device="cpu", progress=False)
    assert sorted(run.glob("eval-*")) == files


def test_a_grid_runs_on_an_npz_of_your_own(tmp_path, own_npz):
    from rll_core.grids import run_grid

    rows = run_grid(tmp_path / "runs", dataset=str(own_npz), methods=[("natural", {})], epochs=1, n_eval=8,
                    device="cpu", progress=False)
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("own-cnn001-natural-eps0.1-n2000-e1-s0-quick")
    assert rows[0]["dataset"] == str(own_npz.resolve()) and rows[0]["test_n"] == 8


def test_a_grid_refuses_bad_arguments_before_the_first_run_trains(tmp_path, monkeypatch):
    """eps 0 (only evaluation used to refuse it, after a whole run trained), a method's own eps (it trained at its
    eps under the grid's folder name, key and label); a spec string is read as parse_methods reads it."""
    import rll_core.grids as grids

    trained = []
    monkeypatch.setattr(grids, "train_run", lambda out, **kw: trained.append(kw) or (_ for _ in ()).throw(
        RuntimeError("stop after the checks")))
    kw = dict(dataset="mnist", epochs=1, n_eval=4, device="cpu", progress=False)
    for bad, message in (({"eps": 0}, r"eps must be a finite number in \(0, 1\], got 0"),
                         ({"eps": 1.5}, r"eps must be a finite number in \(0, 1\]"),
                         ({"methods": "natural,at:eps0.2"}, "method 'at:eps0.2' sets its own eps 0.2: a grid has one eps"),
                         ({"methods": [("at", {"eps": 0.2})]}, "sets its own eps 0.2"),
                         ({"methods": ["natural"]}, "methods must be a spec like 'natural,at' or \\(name, hyper\\) pairs"),
                         ({"methods": "natural,fgsm"}, "unknown method 'fgsm'")):
        with pytest.raises(ValueError, match=message) as e:
            grids.run_grid(tmp_path / "runs", **{"methods": "natural", **kw, **bad})
        assert "\n" not in str(e.value)
    assert trained == [] and not (tmp_path / "runs").exists()
    with pytest.raises(RuntimeError, match="stop after the checks"):  # a spec string reaches the first run
        grids.run_grid(tmp_path / "runs", methods="natural,trades:beta6", **kw)
    assert [t["method"] for t in trained] == ["natural"] and trained[0]["eps"] == 0.1


def _cli_train(out, *extra):
    return main(["train", "--dataset", "mnist", "--method", "llr", "--epochs", "1", "--n-train", "96", "--n-test",
                 "32", "--batch-size", "32", "--out", str(out), "--no-progress", "--device", "cpu", *extra])


def test_two_cli_runs_with_one_seed_are_bit_identical(tmp_path, mnist):
    """cnn001 with dropout, LLR: weights, optimizer state and metrics equal bit for bit."""
    assert _cli_train(tmp_path / "a") == 0 and _cli_train(tmp_path / "b") == 0
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]]
    # another seed gives other initial weights
    assert _cli_train(tmp_path / "c", "--seed", "1") == 0
    c = load_checkpoint(tmp_path / "c" / "last.pt")
    assert not torch.equal(a["model"]["features.0.weight"], c["model"]["features.0.weight"])


def test_one_eps_per_run_and_evaluations_never_overwrite(tmp_path, mnist, capsys):
    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="at", eps=0.05, hyper={"steps": 2}, epochs=1, n_train=64, n_test=32,
              n_val=16, batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    settings = json.loads((run / "settings.json").read_text())
    assert settings["eps"] == settings["val_eps"] == 0.05
    best = load_checkpoint(run / "best.pt")
    assert best["settings"]["val_eps"] == 0.05
    row = evaluate_run(run, n_eval=16, device="cpu", progress=False)
    assert row["eps"] == 0.05 and row["evaluation"]["attacks"]["pgd"]["eps"] == 0.05
    row2 = evaluate_run(run, n_eval=16, eps=0.1, attacks=("pgd",), steps=5, restarts=2, device="cpu",
                        progress=False)
    assert row2["evaluation"]["attacks"] == {"pgd": {"name": "pgd", "eps": 0.1, "steps": 5, "step_size": 0.04,
                                                     "restarts": 2, "random_start": True}}
    assert len(list(run.glob("eval-*.json"))) == 2 and len(list(run.glob("eval-*.npz"))) == 2
    first = (run / row["eval_file"]).read_bytes()
    assert evaluate_run(run, n_eval=16, device="cpu", progress=False) == row  # read back, not recomputed
    assert (run / row["eval_file"]).read_bytes() == first
    capsys.readouterr()
    assert main(["evaluate", str(run), "--checkpoint", "best", "--n-eval", "8", "--eps", "0.05", "--no-progress",
                 "--device", "cpu", "--attacks", "pgd", "--checks", "8"]) == 0
    assert len(list(run.glob("eval-*.json"))) == 3
    said = capsys.readouterr().out.splitlines()
    assert said[-1].startswith("attack checks on 8 test points: ") and any(ln.startswith("unbounded: ") for ln in said)
    assert len(list(run.glob("checks-best-*-eps0p05-n8-*.json"))) == 1  # stored beside the evaluation
    assert main(["evaluate", str(run), "--attacks", "fgsm"]) == 2
    assert "unknown attack 'fgsm'" in capsys.readouterr().err


def test_cli_refuses_bad_numbers_before_work(tmp_path, capsys):
    for argv in (["train", "--lr", "0", "--out", str(tmp_path / "x")], ["train", "--eps", "25", "--out", "x"],
                 ["separation", "--eps", "1e9"], ["evaluate", "x", "--eps", "-0.1"], ["evaluate", "x", "--checks", "-1"],
                 ["train", "--lr", "nan", "--out", "x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "must be" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_fewer_epochs_than_the_folder_holds_is_refused_and_settings_kept(tmp_path, mnist, capsys):
    run = tmp_path / "run"
    args = ["--method", "natural", "--n-train", "64", "--n-test", "16", "--batch-size", "32"]
    assert main(["train", "--dataset", "mnist", *args, "--epochs", "2", "--out", str(run), "--no-progress",
                 "--device", "cpu"]) == 0
    before = (run / "settings.json").read_bytes()
    assert main(["train", "--dataset", "mnist", *args, "--epochs", "1", "--out", str(run), "--no-progress",
                 "--device", "cpu"]) == 2
    assert "already holds 2 trained epochs, more than the 1 asked" in capsys.readouterr().err
    assert (run / "settings.json").read_bytes() == before
    with pytest.raises(RunMismatchError, match="already holds 2"):
        train_run(run, dataset="mnist", method="natural", epochs=1, n_train=64, n_test=16, batch_size=32,
                  device="cpu", progress=False)


def test_a_run_without_overrides_stores_the_reference_settings(tmp_path, mnist):
    """train_run fills every unset value from rll_core.paper; settings.json says exactly which."""
    train_run(tmp_path / "llr", dataset="mnist", method="llr", epochs=1, n_train=64, n_test=16, n_val=8,
              device="cpu", progress=False)
    s = json.loads((tmp_path / "llr" / "settings.json").read_text())
    assert (s["optimizer"], s["lr"], s["momentum"], s["batch_size"], s["milestones"]) == \
        ("sgd", pytest.approx(1e-4 * 64), 0.9, 64, [10, 15])
    assert (s["architecture"], s["eps"], s["val_eps"], s["lam"], s["mu"], s["steps"], s["step_size"]) == \
        ("cnn001", 0.1, 0.1, 4.0, 3.0, 2, 0.05)
    assert s["augment"] is None and s["dropout"] is None


def test_robustness_curve_agrees_with_the_evaluation_at_its_radii(tmp_path, mnist):
    run = tmp_path / "run"
    train_run(run, dataset="mnist", method="natural", eps=0.1, epochs=1, n_train=128, n_test=32, n_val=8,
              batch_size=32, optimizer="adam", lr=1e-3, device="cpu", progress=False)
    row = evaluate_run(run, n_eval=24, attacks=("pgd",), device="cpu", progress=False)
    curve = robustness_curve(run, [0.3, 0.1, 0.0], n_eval=24, device="cpu")
    assert curve["eps"] == [0.0, 0.1, 0.3] and curve["n"] == 24
    # eps 0 is the clean accuracy; at the run's eps the same PGD from the same seed gives the same verdicts
    assert curve["accuracy"][:2] == [row["test_accuracy"], row["test_pgd_accuracy"]]
    # each attack has its own random stream: PGD beside multi-targeted (the tables' evaluation, which runs
    # multi-targeted on test only) gives PGD's verdicts alone, point by point, on both splits
    both = evaluate_run(run, n_eval=24, test_only=("multitarget",), device="cpu", progress=False)
    alone, beside = (np.load(run / f"{r['eval_file'][:-5]}.npz") for r in (row, both))
    for split in ("train", "test"):
        assert np.array_equal(alone[f"{split}_pgd"], beside[f"{split}_pgd"])
    assert "test_multitarget" in beside and "train_multitarget" not in beside
    assert "train_multitarget_accuracy" not in both and both["gap_adversarial"] == row["gap_adversarial"]
    with pytest.raises(ValueError, match="not evaluated"):
        evaluate_run(run, n_eval=24, attacks=("pgd",), test_only=("multitarget",), device="cpu")
    (path,) = run.glob("curve-last-e1-n24-*.json")
    before = path.read_bytes()
    assert robustness_curve(run, [0.0, 0.1, 0.3], n_eval=24, device="cpu") == curve  # read back
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="eps"):
        robustness_curve(run, [0.1, 2.0], n_eval=24)
    with pytest.raises(ValueError, match="empty"):
        robustness_curve(run, [], n_eval=24)


def test_notebook_02s_sweep_is_astuteness_at_each_of_its_radii(mnist):
    from rll_core.section4 import astuteness_radii, astuteness_sweep
    from rll_core.theory import LipschitzClassifier, astuteness

    tr, te = mnist[0].subset(200, seed=0), mnist[1].subset(12, seed=0)
    clf = LipschitzClassifier(tr.images, tr.labels)
    grid = astuteness_radii(clf.r, 0.1)
    # 9 radii from 0 to 2r, the paper's eps, 0.999 r (where the guarantee ends): 11, sorted, 2r the largest
    assert len(grid) == 11 and grid == sorted(grid) and grid[-1] == round(2 * clf.r, 4) and 0.999 * clf.r in grid
    assert astuteness_radii(clf.r, 0.1, [0.2, 0.0, 0.2]) == [0.0, 0.2]
    split = {"train": (torch.from_numpy(tr.subset(12, seed=1).float_images()).double(),
                       torch.from_numpy(tr.subset(12, seed=1).labels)),
             "test": (torch.from_numpy(te.float_images()).double(), torch.from_numpy(te.labels))}
    rows, curves = astuteness_sweep(clf, split, grid[::5])
    assert list(curves) == ["train certified", "train attacked", "test certified", "test attacked"]
    for i, e in enumerate(grid[::5]):
        for k, (x, y) in split.items():
            a = astuteness(clf, x, y, e)
            assert rows[i][f"{k}_certified"] == a.certified == curves[f"{k} certified"][i]
            assert rows[i][f"{k}_attacked"] == a.attacked == curves[f"{k} attacked"][i]
            assert rows[i][f"{k}_accuracy"] == a.accuracy and rows[i]["eps"] == e
    assert curves["train certified"][0] == 1.0  # below r the theorem holds on the training points


def test_the_section4_row_is_stored_and_read_back_not_recomputed(mnist, tmp_path, monkeypatch, capsys):
    import rll_core.section4 as section4

    tr, te = mnist
    tr, te = tr.subset(200, seed=0), te.subset(50, seed=0)
    row = theory_row(tr, te, 0.1, n_eval=8, store=tmp_path, progress=True)
    assert "measuring" in capsys.readouterr().out
    (kept,) = tmp_path.glob("theory-*.json")
    assert row["test_n"] == row["train_n"] == 8 and 0 <= row["test_pgd_accuracy"] <= row["test_accuracy"] <= 1

    def no_work(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(section4, "measure_splits", no_work)
    again = theory_row(tr, te, 0.1, n_eval=8, store=tmp_path)
    assert again == json.loads(json.dumps(row)) and f"read from {kept}" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="measured again"):  # another radius, other data: another row
        theory_row(tr, te, 0.05, n_eval=8, store=tmp_path)
    with pytest.raises(AssertionError, match="measured again"):
        theory_row(tr.subset(150, seed=1), te, 0.1, n_eval=8, store=tmp_path)


def test_theory_curve_is_certified_accuracy_by_radius(mnist):
    train, test = mnist
    tr, te = train.subset(300, seed=0), test.subset(40, seed=0)
    c = theory_curve(tr, te, [0.0, 0.05, 10 ** -9, 0.9], n_eval=40)
    assert c["eps"] == [0.0, 1e-9, 0.05, 0.9] and c["accuracy"][-1] == 0.0
    assert c["accuracy"] == sorted(c["accuracy"], reverse=True)  # certified accuracy cannot grow with eps
    assert c["accuracy"][0] == pytest.approx(float((c["radius"] > 0).mean()))
    d = theory_curve(tr, te, n_eval=40, also=[0.1])  # default radii: 0 .. 1.2 r, and the training eps
    assert d["eps"][0] == 0.0 and d["eps"][-1] == pytest.approx(1.2 * d["r"], abs=1e-3) and 0.1 in d["eps"]


def test_cli_train_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--method", "at", "--model", "cnn002", "--epochs", "1", "--n-train", "128", "--n-test", "64",
            "--batch-size", "32", "--lr", "0.05", "--steps", "2", "--out", str(run), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    assert "trained at for 1 epochs" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--n-eval", "32", "--no-progress", "--device", "cpu"]) == 0
    (path,) = run.glob("eval-*.json")
    assert f"wrote {path}" in capsys.readouterr().out
    row = __import__("json").loads(path.read_text())
    assert row["method"] == "at" and row["settings"]["steps"] == 2 and row["evaluation"]["n_eval"] == 32
    assert row["gap_standard"] == pytest.approx(row["train_accuracy"] - row["test_accuracy"])
    # the row's numbers are the means of the per-example arrays stored beside it
    arrays = np.load(path.with_suffix(".npz"))
    for split in ("train", "test"):
        assert row[f"{split}_accuracy"] == pytest.approx(arrays[f"{split}_clean"].mean())
        assert row[f"{split}_pgd_accuracy"] == pytest.approx(arrays[f"{split}_pgd"].mean())
        assert row[f"{split}_lipschitz"] == pytest.approx(arrays[f"{split}_lipschitz"].mean(), rel=1e-6)
        assert len(arrays[f"{split}_lipschitz_reference"]) == row[f"{split}_n"] == 32
    assert set(row["attack_settings"]) == {"pgd", "multitarget"}
    # --test-only: multi-targeted on the test points only; another file, PGD's verdicts unchanged
    assert main(["evaluate", str(run), "--n-eval", "32", "--test-only", "multitarget", "--no-progress",
                 "--device", "cpu"]) == 0
    (other,) = set(run.glob("eval-*.json")) - {path}
    both = np.load(other.with_suffix(".npz"))
    assert "train_multitarget" not in both and np.array_equal(both["train_pgd"], arrays["train_pgd"])
    assert main(["evaluate", str(run), "--attacks", "pgd", "--test-only", "multitarget"]) == 2
    assert "not evaluated" in capsys.readouterr().err
    for bad, msg in ((["--method", "madry"], "unknown method"),
                     (["--method", "natural", "--beta", "3"], "no hyperparameter beta")):
        assert main(["train", *bad, "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
        assert msg in capsys.readouterr().err
    assert main(["train", "--method", "at", "--lam", "1", "--epochs", "1", "--out", str(run)]) == 2
    assert main(["train", "--method", "at", "--model", "cnn002", "--epochs", "1", "--n-train", "128", "--n-test",
                 "64", "--batch-size", "32", "--lr", "0.1", "--steps", "2", "--out", str(run)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "0", "--out", str(run)])
    assert not (tmp_path / "x").exists()
