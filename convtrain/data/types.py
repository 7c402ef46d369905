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


@dataclass(frozen=True)
class Where:
    """One file (or dataset file) that images came from, and how an image is found in it."""

    file: str  # the CSV or .npz file, the dataset's IDX file, or the image folder
    key: str  # "path": ``files[id]``; "row": the CSV line ``id`` (the header is line 1); "index": position ``id``
    files: tuple[str, ...] = ()  # key "path": the image files
    array: str | None = None  # an .npz file's array (x_train, x_test...)
    dataset: str | None = None  # a registered dataset: its name and split ("mnist", "test")
    split: str | None = None

    def describe(self, i: int) -> dict:
        """Where image ``i`` (its id) came from, as JSON: ``{"path"}``, ``{"file", "row"}`` or ``{"file", "index"}``
        (with ``array`` for an .npz, ``dataset`` and ``split`` for a registered dataset)."""
        if self.key == "path":
            return {"path": self.files[i]}
        found = {"file": self.file, self.key: int(i)}
        extra = {"array": self.array, "dataset": self.dataset, "split": self.split}
        return {**{k: v for k, v in extra.items() if v is not None}, **found}


@dataclass(frozen=True)
class Origin:
    """Where each image of a split came from (``eval --report`` names its mistakes with it): image ``n`` is
    ``parts[part[n]]``'s image ``ids[n]``. It follows the split through every ``take`` (hold-outs, subsets)."""

    ids: Tensor  # int64 [N], on the CPU
    part: Tensor  # int64 [N]: which entry of ``parts``
    parts: tuple[Where, ...]

    @classmethod
    def of(cls, where: Where, ids: Tensor | list[int]) -> Origin:
        ids = torch.as_tensor(ids, dtype=torch.int64)
        return cls(ids, torch.zeros_like(ids), (where,))

    def take(self, index: Tensor) -> Origin:
        index = index.cpu()
        return Origin(self.ids[index], self.part[index], self.parts)

    def describe(self, n: int) -> dict:
        return self.parts[int(self.part[n])].describe(int(self.ids[n]))

    @staticmethod
    def cat(origins: list[Origin | None]) -> Origin | None:
        if any(o is None for o in origins):
            return None
        parts, ids, part = [], [], []
        for o in origins:
            ids.append(o.ids)
            part.append(o.part + len(parts))
            parts += o.parts
        return Origin(torch.cat(ids), torch.cat(part), tuple(parts))


@dataclass
class Split:
    """Images as uint8 ``[N, C, H, W]`` and labels as int64 ``[N]``; ``origin`` says where each came from
    (None when unknown)."""

    images: Tensor
    labels: Tensor
    origin: Origin | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def take(self, index: Tensor) -> Split:
        return Split(self.images[index], self.labels[index], None if self.origin is None else self.origin.take(index))

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device), self.origin)

    def image(self, i: int) -> Tensor:
        """Image ``i`` as the model takes it (uint8 ``[C, H, W]``, on the CPU)."""
        return self.images[i].cpu()

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

    @property
    def origin(self) -> Origin | None:
        """Where each image came from (its file)."""

    def image(self, i: int) -> Tensor:
        """Image ``i`` decoded as the model takes it (uint8 ``[C, H, W]``)."""


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
