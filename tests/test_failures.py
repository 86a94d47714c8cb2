"""Failures a user meets: one clear line before any work, nothing lost or overwritten, your own data welcome."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from rll_core.checks import resolve_device
from rll_core.cli import build_parser, main
from rll_core.data import DataError, install_mnist, load_dataset, load_fashion_mnist, load_train_test
from rll_core.methods import Natural
from rll_core.runs import evaluate_run, load_run, train_run
from rll_core.separation import nearest_other_class
from rll_core.storage import CorruptFileError, FolderBusyError, folder_lock, load_json, lock_file
from rll_core.training import train


def _tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


# ----------------------------------------------------------------------------------------------
# nothing lost or overwritten


def test_a_busy_run_folder_names_its_holder(tmp_path):
    run = tmp_path / "run"
    with folder_lock(run):
        with pytest.raises(FolderBusyError, match=f"in use by process {os.getpid()}"):
            train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir=run, progress=False)
    train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir=run, progress=False)  # free again
    assert (run / "last.pt").exists()


def test_a_lock_held_by_another_process_is_refused_and_freed_when_it_dies(tmp_path):
    run = tmp_path / "run"
    code = textwrap.dedent(f"""
        import sys, time
        from rll_core.storage import folder_lock
        with folder_lock({str(run)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=f"in use by process {p.pid}"):
            with folder_lock(run):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with folder_lock(run):  # the kernel released the dead holder's lock
        pass


def test_a_separation_cache_entry_being_computed_is_locked(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 12), dtype=np.uint8), rng.integers(0, 3, 40)
    nearest_other_class(x, y, cache_dir=tmp_path)
    (meta,) = tmp_path.glob("nearest-*.json")
    stem = meta.with_suffix("")
    meta.unlink()  # no finished result: the next call computes, and must take the entry's lock
    with lock_file(stem.with_name(stem.name + ".lock")):
        with pytest.raises(FolderBusyError, match="in use by process"):
            nearest_other_class(x, y, cache_dir=tmp_path)


def test_a_corrupt_cache_is_set_aside_and_recomputed(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 255, (50, 10), dtype=np.uint8), rng.integers(0, 4, 50)
    first = nearest_other_class(x, y, cache_dir=tmp_path)
    (npz,) = tmp_path.glob("nearest-*[0-9a-f].npz")
    npz.write_bytes(npz.read_bytes()[:40])  # truncated
    again = nearest_other_class(x, y, cache_dir=tmp_path)
    assert np.array_equal(again.raw_distance, first.raw_distance) and np.array_equal(again.index, first.index)
    err = capsys.readouterr().err
    assert "corrupt" in err and npz.name in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.glob("*.corrupt*"))
    assert nearest_other_class(x, y, cache_dir=tmp_path).cached


def test_corrupt_json_names_its_file(tmp_path):
    bad = tmp_path / "settings.json"
    bad.write_text('{"epochs": 2,')
    with pytest.raises(CorruptFileError, match="settings.json is not valid JSON"):
        load_json(bad)
    train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir=tmp_path, progress=False)  # no epoch yet: replaced
    bad.write_text('{"epochs": 2,')  # beside a finished epoch it guards a result: refused, and named
    with pytest.raises(CorruptFileError, match="settings.json"):
        train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------------------------------
# one line before the work


def test_unknown_devices_and_unwritable_outputs_fail_first(tmp_path, capsys):
    with pytest.raises(ValueError, match="unsupported device 'tpu'"):
        resolve_device("tpu")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for argv in (["separation", "--device", "tpu"],
                 ["separation", "--out", str(blocker / "out")],
                 ["separation", "--cache-dir", str(blocker / "cache")],
                 ["train", "--device", "tpu", "--out", str(tmp_path / "r")],
                 ["train", "--dropout", "1.5", "--out", str(tmp_path / "r")],
                 ["train", "--model", "vgg", "--out", str(tmp_path / "r")],
                 ["train", "--out", str(blocker / "run")],
                 ["install-mnist", "--dest", str(blocker / "mnist")]):
        assert main([*argv, "--no-progress"] if argv[0] != "install-mnist" else argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("rll: error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    with pytest.raises(DataError, match="cannot write"):
        install_mnist(blocker / "mnist")


def test_evaluating_a_folder_written_by_train_says_what_is_missing(tmp_path):
    train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="written by train\\(\\) without a dataset"):
        evaluate_run(tmp_path)


def test_ctrl_c_ends_with_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    import rll_core.cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rll_core.cli, "train_run", interrupted)
    assert main(["train", "--out", str(tmp_path / "r"), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "same command" in err


# ----------------------------------------------------------------------------------------------
# your own data and files


def _write_idx(path, arr):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def _own_idx(folder, n=(30, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in zip(("train", "t10k"), n, strict=True):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count).astype(np.uint8))
    return folder


def test_valid_idx_files_of_your_own_are_welcome(tmp_path):
    own = _own_idx(tmp_path / "mine")
    train_set = load_fashion_mnist(own, "train")
    assert train_set.images.shape == (30, 1, 28, 28)


def test_home_is_expanded_in_every_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _own_idx(tmp_path / "data")
    train_set, test_set = load_train_test("fashion_mnist", "~/data")
    assert len(train_set) == 30 and len(test_set) == 10
    train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir="~/runs/a", progress=False)
    assert (tmp_path / "runs" / "a" / "last.pt").exists()


def _cifar_batch(path, n, byte_keys):
    rng = np.random.default_rng(len(str(path)))
    d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
    if byte_keys:
        d = {k.encode(): v for k, v in d.items()}
    path.write_bytes(pickle.dumps(d))


def test_cifar_batches_with_bytes_keys_and_a_name_of_your_own(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        _cifar_batch(root / f"data_batch_{i}", 4, byte_keys=True)
    _cifar_batch(root / "test_batch", 3, byte_keys=True)
    ds = load_dataset("cifar10", tmp_path, "train", dataset_name="my-photos", class_names=tuple("abcdefghij"))
    assert ds.name == "my-photos" and ds.kind == "cifar10" and ds.classes[0] == "a" and len(ds) == 20


def test_an_npz_of_your_own_is_a_dataset_everywhere(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(path, images=rng.integers(0, 256, (60, 1, 8, 8), dtype=np.uint8), labels=rng.integers(0, 3, 60),
             test_images=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), test_labels=rng.integers(0, 3, 20),
             class_names=np.array(["cat", "dog", "eel"]))
    train_set, test_set = load_train_test(str(path))
    assert train_set.name == "toy" and train_set.classes == ("cat", "dog", "eel") and test_set.shape == (1, 8, 8)
    rc = main(["separation", "--dataset", str(path), "--eps", "0.1", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "c"), "--formats", "png", "--no-progress", "--device", "cpu"])
    assert rc == 0 and "| toy |" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 8, 8), np.float32) + 2, labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="bad.npz: images must be uint8"):
        load_train_test(str(bad))


def test_load_run_gives_model_settings_history_and_evaluate_needs_no_data_dir(tmp_path, monkeypatch, capsys):
    own = _own_idx(tmp_path / "mine", n=(40, 20))
    run = tmp_path / "run"
    train_run(run, dataset="fashion_mnist", data_dir=own, method="natural", epochs=1, batch_size=8,
              optimizer="adam", lr=1e-3, n_val=4, device="cpu", progress=False)
    model, settings, history = load_run(run)
    assert isinstance(model, nn.Module) and settings["data_dir"] == str(own) and len(history) == 1
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    monkeypatch.setenv("RLL_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["evaluate", str(run), "--n-eval", "4", "--attacks", "pgd", "--no-progress", "--device", "cpu"]) == 0
    # printed as the tables print it: n, Wilson intervals, mean ± standard error (was "test_pgd_accuracy 0.2500")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("eps 0.1, n = 4 evaluation points per split (95 % Wilson intervals")
    shown = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in lines[1:] if ln.startswith("  "))
    assert re.fullmatch(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", shown["test PGD acc"]), shown
    assert " ± " in shown["test Lipschitz"] and shown["adv. gap"].startswith(("+", "-"))


def test_every_cli_option_has_help_with_its_default():
    parser = build_parser()
    assert "``" not in parser.format_help() and ":func:" not in parser.format_help()
    subs = parser._subparsers._group_actions[0].choices  # argparse keeps subparsers here
    for name, sub in subs.items():
        for action in sub._actions:
            if action.dest in ("help",) or not action.option_strings:
                continue
            assert action.help, (name, action.dest)
        text = sub.format_help()
        assert "default" in text, name
    train_help = subs["train"].format_help()
    assert "160" in train_help and "default: the paper's" in train_help


def test_unclear_lines_made_clear(tmp_path, capsys):
    import rll_core

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rll {rll_core.__version__}"
    with pytest.raises(SystemExit):
        main(["train", "--seed", "-1", "--out", str(tmp_path / "r")])
    assert "argument --seed: must be an integer >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path), "--eps", "0"])
    err = capsys.readouterr().err
    assert "argument --eps: must be in (0, 1]" in err
    assert "(0, 1]" in " ".join(build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help().split())
    train(_tiny_model(), _tiny_data(), Natural(), epochs=1, out_dir=tmp_path / "t", progress=False)
    with pytest.raises(ValueError, match="evaluate its model with rll_core.evaluate on your own data"):
        evaluate_run(tmp_path / "t")
    assert not (tmp_path / "r").exists()


def test_a_run_that_records_no_eps_is_not_evaluated_at_zero(tmp_path, own_npz):
    run = tmp_path / "run"
    train_run(run, dataset=str(own_npz), epochs=1, batch_size=16, optimizer="adam", lr=1e-3, n_val=4, device="cpu",
              progress=False)
    settings = load_json(run / "settings.json")
    for k in ("eps", "val_eps"):
        settings.pop(k)
    (run / "settings.json").write_text(__import__("json").dumps(settings))
    with pytest.raises(ValueError, match="records no eps .*: pass eps="):
        evaluate_run(run, n_eval=4, device="cpu", progress=False)
    row = evaluate_run(run, eps=0.05, n_eval=4, attacks=("pgd",), device="cpu", progress=False)
    assert row["eps"] == 0.05


def test_a_hand_edited_architecture_is_named_not_a_size_mismatch_traceback(tmp_path, own_npz):
    run = tmp_path / "run"
    train_run(run, dataset=str(own_npz), epochs=1, batch_size=16, optimizer="adam", lr=1e-3, n_val=4, device="cpu",
              progress=False)
    settings = load_json(run / "settings.json")
    settings["architecture"] = "cnn002"
    (run / "settings.json").write_text(__import__("json").dumps(settings))
    with pytest.raises(ValueError, match=r"last\.pt does not fit the architecture 'cnn002' .*was settings\.json edited\?"):
        load_run(run)
    assert main(["evaluate", str(run), "--n-eval", "4", "--no-progress", "--device", "cpu"]) == 2
