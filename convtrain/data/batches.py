"""Datasets and the tensor-resident batch iterator.

MNIST-like datasets are small (60k images of 28x28 bytes = 47 MB), so they are decoded once into
one uint8 tensor that lives on the training device. Each batch is indexed out of it, converted to
float and normalized on the device; there is no per-sample Python work in the hot loop. The
batch order of an epoch is a pure function of ``(seed, epoch)``, which is what makes resume
(and sharding across ranks) exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConvtrainError
from .types import DataBundle, Split, StreamedSplit


class Normalizer:
    """uint8 images -> normalized float, in one fused multiply-add on the device."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device) -> None:
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # (x/255 - mean)/std  ==  x * scale + shift
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, images: Tensor) -> Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)


@dataclass(frozen=True)
class AugmentParams:
    degrees: float
    translate: float
    scale_min: float
    scale_max: float


def random_affine(x: Tensor, params: AugmentParams, generator: torch.Generator) -> Tensor:
    """Random rotation/shift/zoom of a float batch, one matrix per image, in one grid_sample.

    ``x`` must be normalized so that the background is its minimum; padding uses that value.
    """
    n = x.shape[0]
    # random numbers are drawn on the CPU from a seeded generator, so every device sees the same ones
    r = torch.rand(n, 4, generator=generator)
    angle = (r[:, 0] * 2 - 1) * math.radians(params.degrees)
    scale = params.scale_min + r[:, 1] * (params.scale_max - params.scale_min)
    tx, ty = [(r[:, i] * 2 - 1) * params.translate * 2 for i in (2, 3)]  # grid coords span 2 units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


def _mix(*values: int) -> int:
    """A stable 63-bit seed from several integers (not Python's salted hash)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class TensorBatches:
    """Batches ``(x, y)`` of a device-resident :class:`Split`, normalized on the device.

    Training order: a permutation seeded by ``(seed, epoch)``; with several ranks each takes every
    ``world_size``-th index of it (the tail that does not divide evenly is dropped so every rank
    runs the same number of steps). Evaluation order: in file order, rank ``r`` takes samples
    ``r, r + world_size, ...``, so each sample is counted exactly once across ranks.
    """

    def __init__(self, split: Split, batch_size: int, normalizer: Normalizer, *, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, augment: AugmentParams | None = None,
                 channels_last: bool = False, balance: Tensor | None = None) -> None:
        self.split, self.batch_size, self.normalizer = split, batch_size, normalizer
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.augment, self.channels_last = augment, channels_last
        self.balance = balance  # the labels (on the CPU) for data.sampler=balanced, else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        return shard_indices(len(self.split), self.shuffle, self.seed, self.epoch, self.rank, self.world_size,
                             self.balance)

    def num_samples(self) -> int:
        return shard_size(len(self.split), self.shuffle, self.rank, self.world_size)

    def __len__(self) -> int:
        return math.ceil(self.num_samples() / self.batch_size)

    def iter_from(self, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield batches from step ``start_step`` on (resuming mid-epoch skips the steps already done)."""
        device = self.split.images.device
        index = self._indices().to(device)
        for step in range(start_step, len(self)):
            idx = index[step * self.batch_size:(step + 1) * self.batch_size]
            x = self.normalizer(self.split.images[idx])
            if self.augment is not None:
                gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, step, self.rank, 1))
                x = random_affine(x, self.augment, gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.split.labels[idx]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)


def shard_indices(n: int, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int,
                  balance: Tensor | None = None) -> Tensor:
    """This rank's sample indices for one epoch; both batch iterators use it, so they agree.

    Training: a permutation seeded by ``(seed, epoch)`` (with ``balance``, the labels: the class-balanced
    draw of :func:`balanced_order` instead), cut to a multiple of ``world_size``, every ``world_size``-th
    index from ``rank``: the ranks share one epoch's draw without overlap. Evaluation: file order,
    samples ``rank, rank + world_size, ...``.
    """
    if shuffle:
        order = balanced_order(balance, seed, epoch) if balance is not None else \
            torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
        return order[: (n // world_size) * world_size][rank::world_size]
    return torch.arange(rank, n, world_size)


def balanced_order(labels: Tensor, seed: int, epoch: int) -> Tensor:
    """``data.sampler: balanced``: one epoch of ``len(labels)`` draws, a pure function of ``(seed, epoch)``
    (so a resumed epoch continues the same draws). Each draw picks one of the classes present with equal
    chance; a class's draws go through its images in a fresh random order each time round, so within an
    epoch every image of a class is drawn as often as the others of it, give or take one (a class of 60
    images drawn 6,000 times shows each image 100 times; a common class is sampled without repeats)."""
    gen = torch.Generator().manual_seed(_mix(seed, epoch, 2))
    labels = labels.cpu()
    classes = torch.unique(labels)
    which = torch.randint(len(classes), (len(labels),), generator=gen)
    order = torch.empty(len(labels), dtype=torch.int64)
    for k, c in enumerate(classes.tolist()):
        members = (labels == c).nonzero().squeeze(1)
        slots = (which == k).nonzero().squeeze(1)
        rounds = -(-len(slots) // len(members))
        picks = [members[torch.randperm(len(members), generator=gen)] for _ in range(rounds)]
        order[slots] = torch.cat(picks)[:len(slots)] if picks else members[:0]
    return order


def shard_size(n: int, shuffle: bool, rank: int, world_size: int) -> int:
    """``len(shard_indices(...))`` without drawing the permutation."""
    return n // world_size if shuffle else len(range(rank, n, world_size))


class SplitDataset(torch.utils.data.Dataset):
    """A :class:`Split` served one sample at a time, converted and normalized per sample (the
    classic torchvision ``ToTensor`` + ``Normalize`` pipeline), for the DataLoader path."""

    def __init__(self, split: Split, mean: list[float], std: list[float]) -> None:
        self.split = split
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return (self.pixels(i).float() / 255 - self.mean) / self.std, int(self.split.labels[i])

    def pixels(self, i: int) -> Tensor:
        """Image ``i`` as uint8 ``[C, H, W]`` (a subclass may decode it from a file instead)."""
        return self.split.images[i]


def _without_worker_traceback(exc: Exception) -> Exception:
    """A worker's error as the one line it was: the DataLoader re-raises it in this process as
    ``Caught DataError in DataLoader worker process 0.`` followed by the worker's whole traceback."""
    text = str(exc)
    if not text.startswith("Caught ") or "Traceback" not in text:
        return exc
    last = [line for line in text.splitlines() if line.strip()][-1]
    name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    message = last.split(name, 1)[1] if name in last else last
    try:
        return type(exc)(message)
    except TypeError:  # an error class with another constructor: keep it as it came
        return exc


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, batches: LoaderBatches) -> None:
        self.batches = batches

    def __iter__(self):
        b = self.batches
        return iter(shard_indices(len(b.dataset), b.shuffle, b.seed, b.epoch, b.rank, b.world_size,
                                  b.balance).tolist())

    def __len__(self) -> int:
        return self.batches.num_samples()


class LoaderBatches:
    """The generic path: a ``torch.utils.data.DataLoader`` over any dataset of ``(normalized image,
    label)`` samples, with worker processes, pinned memory and persistent workers. Same sample order
    and sharding as :class:`TensorBatches`; batches are moved to ``device`` and augmented there."""

    def __init__(self, dataset, batch_size: int, device: torch.device, *, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, workers: int = 2, augment: AugmentParams | None = None,
                 channels_last: bool = False, balance: Tensor | None = None) -> None:
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.augment, self.channels_last = augment, channels_last
        self.balance = balance  # the labels (on the CPU) for data.sampler=balanced, else None
        self.epoch = 0
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=_EpochSampler(self), num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_samples(self) -> int:
        return shard_size(len(self.dataset), self.shuffle, self.rank, self.world_size)

    def __len__(self) -> int:
        return math.ceil(self.num_samples() / self.batch_size)

    def iter_from(self, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        try:
            yield from self._iter_from(start_step)
        except ConvtrainError as exc:
            raise _without_worker_traceback(exc) from None

    def _iter_from(self, start_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        for step, (x, y) in enumerate(self.loader):
            if step < start_step:
                continue  # resuming mid-epoch: these batches were already trained on
            x = x.to(self.device, non_blocking=True)
            if self.augment is not None:
                gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, step, self.rank, 1))
                x = random_affine(x, self.augment, gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)


def make_batches(split: Split, bundle: DataBundle, loader: str, batch_size: int, device: torch.device, *,
                 shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 2,
                 augment: AugmentParams | None = None, channels_last: bool = False, sampler: str = "random"):
    """TensorBatches (``loader="tensor"``: ``split`` must already be on ``device``) or LoaderBatches.
    ``sampler``: data.sampler, ``random`` or ``balanced`` (:func:`balanced_order`; training order only)."""
    common = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, augment=augment,
                  channels_last=channels_last, balance=split.labels.cpu() if sampler == "balanced" else None)
    if isinstance(split, StreamedSplit):  # images decoded from their files per sample
        return LoaderBatches(split.dataset(bundle.mean, bundle.std), batch_size, device, workers=workers, **common)
    if loader == "tensor":
        return TensorBatches(split, batch_size, Normalizer(bundle.mean, bundle.std, device), **common)
    return LoaderBatches(SplitDataset(split, bundle.mean, bundle.std), batch_size, device, workers=workers, **common)
