"""Data of your own: an ``.npz`` of plain arrays, read with the checks a loader of the standard formats makes.

Arrays: ``images`` (uint8, ``(N, H, W)`` or ``(N, C, H, W)``) and integer ``labels``; optionally
``test_images`` / ``test_labels`` (the test split) and ``class_names``.  Refused in one line when read: a file
that is no ``.npz`` archive, an empty split, splits of different image shapes, fewer than two classes,
``class_names`` that do not cover the labels.  Labels that are not ``0 .. K-1`` and come without
``class_names`` (``1 .. 10``, or ``{0, 7}``) are numbered ``0 .. K-1`` in sorted order, said in one line, and
the classes keep the original labels as their names (so a model gets K outputs, not ``max + 1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .dataset import DataError, ImageDataset

__all__ = ["is_npz_path", "load_npz_dataset"]

#: (file, modification time) pairs whose label renumbering was already said (one note per file, not per split)
_NOTED: set[tuple[str, float]] = set()


def is_npz_path(name: str | os.PathLike[str]) -> bool:
    """Whether a dataset name is a path to an ``.npz`` file of your own (see :func:`load_npz_dataset`)."""
    return str(name).endswith(".npz")


def _read_arrays(p: Path) -> dict[str, np.ndarray]:
    """Every array of the archive ``p`` (no pickles), or a DataError that says what the file is instead."""
    if not p.is_file():
        raise DataError(f"{p} does not exist (an .npz dataset needs images and labels arrays)")
    with open(p, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK":  # np.savez writes a zip archive; anything else is not one
        raise DataError(f"{p} is not an .npz archive (np.savez writes one; this file starts with {head!r})")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError:
        raise DataError(f"{p.name} holds pickled Python objects, not plain arrays: save numeric arrays with "
                        "np.savez(path, images=..., labels=...) (class_names as an array of strings)") from None
    except Exception as e:  # a truncated or damaged zip
        raise DataError(f"{p} is not a readable .npz file ({type(e).__name__}: {e})") from None


def _split(arrays: dict[str, np.ndarray], name: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's images as ``(N, C, H, W)`` uint8 and its labels, checked."""
    if f"{prefix}images" not in arrays or f"{prefix}labels" not in arrays:
        raise DataError(f"{name} has no {prefix}images / {prefix}labels arrays (found: {', '.join(arrays) or 'none'})")
    x, y = arrays[f"{prefix}images"], arrays[f"{prefix}labels"]
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(f"{name}: {prefix}images must be uint8 of shape (N, H, W) or (N, C, H, W), got {x.dtype} "
                        f"{x.shape}")
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise DataError(f"{name}: {prefix}images is empty (shape {x.shape})")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],) or y.min() < 0:
        raise DataError(f"{name}: {prefix}labels must be non-negative integers of shape ({x.shape[0]},), got {y.dtype} "
                        f"{y.shape}")
    return np.ascontiguousarray(x[:, None] if x.ndim == 3 else x), y.astype(np.int64)


def _values(v: np.ndarray) -> str:
    """``1..10`` for a run of integers, else ``{0, 7}`` (the first six)."""
    if len(v) > 2 and np.array_equal(v, np.arange(v[0], v[0] + len(v))):
        return f"{v[0]}..{v[-1]}"
    return "{" + ", ".join(str(int(a)) for a in v[:6]) + (", ..." if len(v) > 6 else "") + "}"


def _classes(p: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The label numbering (a lookup table, or None to keep the labels) and the class names."""
    present = np.unique(np.concatenate([arrays[k].reshape(-1).astype(np.int64) for k in ("labels", "test_labels")
                                        if k in arrays]))
    if "class_names" in arrays:
        names = tuple(str(c) for c in np.asarray(arrays["class_names"]).reshape(-1))
        if int(present.max()) >= len(names):
            raise DataError(f"{p.name}: {len(names)} class_names for labels up to {int(present.max())}: give one "
                            f"name per class (labels 0..{len(names) - 1})")
    if len(present) < 2:
        raise DataError(f"{p.name}: every label is {int(present[0])}: a classifier needs at least two classes")
    if "class_names" in arrays:
        return None, names
    if np.array_equal(present, np.arange(len(present))):
        return None, ()
    lut = np.full(int(present.max()) + 1, -1, dtype=np.int64)
    lut[present] = np.arange(len(present))
    key = (str(p.resolve()), p.stat().st_mtime)
    if key not in _NOTED:
        _NOTED.add(key)
        print(f"rll: note: {p.name}: labels {_values(present)} are not 0..{len(present) - 1}; read as "
              f"0..{len(present) - 1} in sorted order ({present[0]} -> 0, {present[1]} -> 1, ...), each class named "
              "after its original label", file=sys.stderr, flush=True)
    return lut, tuple(str(int(v)) for v in present)


def load_npz_dataset(path: str | os.PathLike[str], split: str = "train") -> ImageDataset:
    """One split of an ``.npz`` dataset of your own (see the module docstring for the arrays and the checks).

    ``path``: the file (``~`` expanded); ``split``: ``"train"`` (``images`` / ``labels``) or ``"test"``
    (``test_images`` / ``test_labels``).  The dataset is named after the file (``toy.npz`` -> ``toy``) and has
    ``kind="npz"``.

    >>> np.savez("toy.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]))  # doctest: +SKIP
    >>> load_npz_dataset("toy.npz").shape  # doctest: +SKIP
    (1, 8, 8)

    Raises DataError (one line) for a file or array that fails a check, ValueError for an unknown split.
    """
    p = Path(path).expanduser()
    if split not in ("train", "test"):
        raise ValueError(f"an .npz dataset has splits 'train' and 'test', got {split!r}")
    arrays = _read_arrays(p)
    images, labels = _split(arrays, p.name, "" if split == "train" else "test_")
    if split == "test":
        train_shape = _split(arrays, p.name, "")[0].shape[1:]
        if images.shape[1:] != train_shape:
            raise DataError(f"{p.name}: test_images are {'x'.join(map(str, images.shape[1:]))} but images "
                            f"{'x'.join(map(str, train_shape))}: both splits need one image shape")
    lut, classes = _classes(p, arrays)
    if lut is not None:
        labels = lut[labels]
    return ImageDataset(p.stem, split, images, labels, classes, str(p), kind="npz")
