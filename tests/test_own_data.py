"""Data of your own (.npz): every check a loader makes, in one line and before any work, and what the run
does with it (classes, shapes, the paper's eps for its shape)."""

from __future__ import annotations

import numpy as np
import pytest

from rll_core.data import DataError, check_dataset, dataset_label, load_npz_dataset, load_train_test, reference_key
from rll_core.paper import eps_for
from rll_core.runs import train_run
from rll_core.training import train


def _npz(path, labels, test_labels=None, shape=(28, 28), test_shape=None, **extra):
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8), "labels": np.asarray(labels)}
    if test_labels is not None:
        arrays |= {"test_images": rng.integers(0, 256, (len(test_labels), *(test_shape or shape)), dtype=np.uint8),
                   "test_labels": np.asarray(test_labels)}
    np.savez(path, **arrays, **extra)
    return path


def test_a_single_class_is_refused_in_one_line(tmp_path):
    p = _npz(tmp_path / "zeros.npz", [0] * 20, [0] * 5)
    with pytest.raises(DataError, match="every label is 0: a classifier needs at least two classes"):
        load_npz_dataset(p)
    with pytest.raises(DataError, match="at least two classes"):
        train_run(tmp_path / "run", dataset=str(p), epochs=1, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_labels_that_are_not_0_to_k_are_numbered_in_sorted_order_and_said_once(tmp_path, capsys):
    p = _npz(tmp_path / "shifted.npz", np.arange(1, 11).repeat(3), [10, 1, 5])
    tr, te = load_train_test(str(p))
    assert sorted(set(tr.labels.tolist())) == list(range(10))  # 1..10 -> 0..9: ten outputs, not eleven
    assert tr.classes == tuple(str(v) for v in range(1, 11))  # each class keeps its original label as its name
    assert te.labels.tolist() == [9, 0, 4]  # the test split is numbered the same way
    err = capsys.readouterr().err
    assert err.count("rll: note: shifted.npz: labels 1..10 are not 0..9") == 1  # one line for both splits
    two = _npz(tmp_path / "pair.npz", [0, 7] * 10, [7, 0])
    res = train_run(tmp_path / "run", dataset=str(two), epochs=1, batch_size=8, optimizer="adam", lr=1e-3, n_val=4,
                    device="cpu", progress=False)
    assert res.settings["num_classes"] == 2  # {0, 7}: two outputs, not eight
    assert "labels {0, 7} are not 0..1" in capsys.readouterr().err


def test_class_names_must_cover_the_labels(tmp_path):
    p = _npz(tmp_path / "names.npz", np.arange(10).repeat(2), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="3 class_names for labels up to 9: give one name per class"):
        load_npz_dataset(p)
    with pytest.raises(DataError, match="3 class_names"):
        train_run(tmp_path / "run", dataset=str(p), epochs=1, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()
    ok = _npz(tmp_path / "ok.npz", [0, 1, 2] * 4, class_names=np.array(["a", "b", "c", "unused"]))
    assert load_npz_dataset(ok).classes == ("a", "b", "c", "unused")  # named classes keep their labels


def test_test_images_of_another_shape_are_refused_before_any_work(tmp_path):
    p = _npz(tmp_path / "shapes.npz", [0, 1] * 10, [0, 1], test_shape=(32, 32))
    load_npz_dataset(p)  # the training split alone reads
    with pytest.raises(DataError, match="test_images are 1x32x32 but images 1x28x28"):
        load_npz_dataset(p, "test")
    with pytest.raises(DataError, match="both splits need one image shape"):
        train_run(tmp_path / "run", dataset=str(p), epochs=1, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()  # no folder left that would refuse the corrected file
    import torch
    from torch import nn

    from rll_core.methods import Natural

    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match=r"val_data images are \(1, 5, 5\), train_data images \(1, 4, 4\)"):
        train(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), (x, y), Natural(), epochs=1,
              val_data=(torch.rand(4, 1, 5, 5), y[:4]), val_eps=0.1, out_dir=tmp_path / "t", progress=False)
    assert not (tmp_path / "t").exists()


def test_empty_text_and_pickled_files_say_what_they_are(tmp_path):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64))
    with pytest.raises(DataError, match=r"images is empty \(shape \(0, 28, 28\)\)"):
        load_npz_dataset(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("images,labels\n1,2\n")
    with pytest.raises(DataError, match=r"is not an \.npz archive \(np\.savez writes one; this file starts with b'imag'\)"):
        load_npz_dataset(tmp_path / "text.npz")
    np.savez(tmp_path / "objects.npz", images=np.array([object()]), labels=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="holds pickled Python objects, not plain arrays"):
        load_npz_dataset(tmp_path / "objects.npz")


def test_the_paper_eps_and_the_names_of_a_dataset_argument(tmp_path):
    """One rule for each: the eps of a dataset, by name, by shape or loaded; the name its outputs carry."""
    assert eps_for("Fashion-MNIST") == eps_for("mnist") == eps_for((1, 28, 28)) == 0.1
    assert eps_for("svhn") == eps_for((3, 32, 32)) == 0.031 and eps_for((3, 64, 64)) == 0.005
    p = _npz(tmp_path / "mine.npz", [0, 1] * 5, [0, 1])
    own = load_npz_dataset(p)
    assert own.kind == "npz" and eps_for(own) == 0.1  # by its shape: MNIST's
    assert reference_key(str(p)) == "mnist" and dataset_label(str(p)) == "mine"
    assert check_dataset("Fashion-MNIST") == "fashion_mnist" and check_dataset(str(p)) == str(p)
    with pytest.raises(ValueError, match="no paper dataset has images of shape 1x30x30"):
        eps_for((1, 30, 30))
    with pytest.raises(ValueError, match="no such .npz file"):
        check_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*or the path of an .npz of your own"):
        check_dataset("cifar100")
