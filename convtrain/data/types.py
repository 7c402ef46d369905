"""The shapes every data source returns: :class:`Split` (uint8 images in memory), the
:class:`StreamedSplit` protocol (images left on disk, decoded per sample) and :class:`DataBundle`;
and :class:`ImageRows`, a file of many unlabelled images as ``convtrain predict`` reads it.

Everything after :mod:`convtrain.data.sources` (batching, the training loop, eval, inspect) reads
these types only, so a new source needs no change beyond its loader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import DataError

DEFAULT_VAL_SIZE = 5000  # data.val_size: null on mnist / fashion_mnist (their 60,000 training images)
DEFAULT_FILE_HOLDOUT = 0.1  # data.val_size / data.test_size: null on folder / csv (any size of folder)


@dataclass
class Split:
    """Images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def take(self, index: Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the pixels and labels: equal for the same images in the same order."""
        h = hashlib.sha256()
        h.update(self.labels.cpu().numpy().astype("<i8").tobytes())
        h.update(self.images.cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


@runtime_checkable
class StreamedSplit(Protocol):
    """A split too large to hold decoded: its images stay files and the DataLoader path decodes
    them per sample (:class:`convtrain.data.user_files.FileSplit` is the one implementation)."""

    labels: Tensor

    def __len__(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def take(self, index: Tensor) -> StreamedSplit: ...

    def fingerprint(self) -> str:
        """16 hex digits naming the images and labels (equal for the same set in the same order)."""

    def dataset(self, mean: list[float], std: list[float]) -> torch.utils.data.Dataset:
        """The per-sample dataset: decode, then normalize with ``mean``/``std``."""


def check_split(split: Split, num_classes: int, image_shape: tuple[int, int, int], where: str) -> None:
    """Refuse a split whose tensors a model cannot train or be evaluated on; ``where`` names its files."""
    images, labels = split.images, split.labels
    if images.dtype != torch.uint8:
        raise DataError(f"{where}: images are {images.dtype}, expected uint8 pixels")
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"{where}: images have shape {'x'.join(map(str, images.shape[1:]))}, expected "
                        f"{'x'.join(map(str, image_shape))} (channels x height x width)")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0] if labels.dim() else 0} labels")
    if len(labels) == 0:
        raise DataError(f"{where}: no images")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise DataError(f"{where}: label {int(labels[i])} of image {i} is outside 0..{num_classes - 1} "
                        f"({int(bad.sum())} such labels); the file is corrupt or from another dataset")


@dataclass
class DataBundle:
    """Everything a run needs to know about its data."""

    train: Split | StreamedSplit
    val: Split | StreamedSplit
    test: Split | StreamedSplit
    classes: list[str]
    mean: list[float]
    std: list[float]
    # folder/csv: what the run log says about the data (cache hit, skipped files), and the files skipped
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tensor_resident: bool = True  # False: over data.memory_budget_mb, the splits are files decoded per sample
    info: dict = field(default_factory=dict)  # what `convtrain data inspect` shows beyond the splits

    @property
    def in_channels(self) -> int:
        return self.train.image_shape[0]

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.train.image_shape[1:])


@dataclass(frozen=True)
class ImageRows:
    """A file that holds many unlabelled images (an unlabelled CSV...), as ``convtrain predict`` reads it."""

    path: Path
    count: int  # images in the file, counted without decoding them
    # (batch size, (channels, height, width) the model takes) -> (ids, uint8 [n, C, H, W]) batches, in file order
    read: Callable[[int, tuple[int, int, int]], Iterator[tuple[list[int], Tensor]]]


def resolve_size(size: int | float | None, n: int, default: int | float) -> int:
    """A count-or-fraction setting (data.val_size, data.test_size) as a count of the ``n`` images."""
    size = default if size is None else size
    return size if isinstance(size, int) else max(1, round(size * n))


def seeded_subset(split, n: int | None, seed: int):
    """``data.test_subset``: the first ``n`` images of a shuffle seeded with the held-out seed (the files are
    sorted by label: the first ``n`` would be one class). Training and ``eval --set data.test_subset=N`` draw
    it here, with the same seed (:func:`convtrain.config.schema.held_out_seed`), so they score the same images."""
    if n is None:
        return split
    return split.take(torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n])
