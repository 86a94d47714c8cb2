"""The data every loader returns: :class:`ImageDataset` (uint8 images ``(N, C, H, W)``, int64 labels), and
:class:`DataError` for a dataset file that is missing, unreadable or not what it should be."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DataError", "ImageDataset"]


class DataError(RuntimeError):
    """A dataset file is missing, unreadable or not what it should be."""


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image set, as every loader returns it.

    Args:
        name: what outputs call it (``mnist``, or your file's stem).
        split: ``train``, ``test`` ...
        images: uint8 pixels ``(N, C, H, W)``.
        labels: int64 ``(N,)``.
        classes: class names (default none).
        source: where it was read from.
        kind: the format or registry entry it follows (``cifar10`` for a CIFAR-format folder you named
            ``my-photos``; ``npz`` for arrays of your own); defaults to ``name``.

    Raises:
        ValueError: images that are not uint8 ``(N, C, H, W)``, or labels of another length.

    Example:
        >>> ds = ImageDataset("toy", "train", np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1]))
        >>> ds.shape, len(ds.subset(1))
        ((1, 4, 4), 1)
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = field(default=())
    source: str = ""
    #: the format / registry entry the data follows (``cifar10`` for a CIFAR-format folder you named
    #: ``my-photos``; ``npz`` for arrays of your own); defaults to ``name``
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.name)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 of shape ({self.images.shape[0]},), got {self.labels.dtype} {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """The dataset's class count: its class names, else the largest label + 1 (a small subset can miss the
        last class, so not the labels present), at least 2."""
        return max(len(self.classes) or int(self.labels.max()) + 1, 2)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def flat(self) -> np.ndarray:
        """The images as a (N, C*H*W) uint8 view."""
        return self.images.reshape(len(self), -1)

    def float_images(self) -> np.ndarray:
        """The images scaled to [0, 1] as float32, as the paper does (``x / 255``)."""
        return self.images.astype(np.float32) / np.float32(255.0)

    def subset(self, n: int | None, seed: int | None = 0) -> ImageDataset:
        """The first ``n`` points (``seed=None``) or a seeded random sample of ``n`` points."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        if seed is None:
            idx = np.arange(n)
        else:
            idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return dataclasses.replace(self, images=np.ascontiguousarray(self.images[idx]), labels=self.labels[idx])
