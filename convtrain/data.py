"""Datasets and the tensor-resident batch iterator.

MNIST-like datasets are small (60k images of 28x28 bytes = 47 MB), so they are decoded once into
one uint8 tensor that lives on the training device. Each batch is indexed out of it, converted to
float and normalized on the device; there is no per-sample Python work in the hot loop. The
batch order of an epoch is a pure function of ``(seed, epoch)``, which is what makes resume
(and sharding across ranks) exact.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

# FILE_SOURCES: data read from the user's own files (sources.py); one list, which config reads without torch
from .catalog import FILE_SOURCES
from .errors import ConfigError, DataError

_RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetSpec:
    """An MNIST-style dataset loaded through torchvision."""

    name: str
    torchvision_class: str
    folder: str  # torchvision's folder under the data root
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # training-set statistics of pixel/255
    std: tuple[float, ...]
    image_shape: tuple[int, int, int] = (1, 28, 28)  # channels, height, width of every image in the files
    # small enough to decode once into one tensor on the device (data.loader: auto picks the fast path)
    tensor_resident: bool = True

    def expected_files(self, root: str | Path) -> list[Path]:
        return [Path(root) / self.folder / "raw" / f for f in _RAW_FILES]


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "MNIST", "MNIST", tuple(str(i) for i in range(10)), (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "FashionMNIST", "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,), (0.3530,)),
}

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


_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def check_idx_files(images: Path, labels: Path, image_shape: tuple[int, int, int]) -> None:
    """Check the headers of an MNIST-style pair of IDX files against each other and the sizes.

    Reads 16 bytes of each and the file sizes, so a truncated file, pixels that are not bytes,
    images of another size or a count mismatch is named before anything is decoded.
    """
    import struct

    headers = {}
    for path, ndim in ((images, 3), (labels, 1)):
        with path.open("rb") as f:
            head = f.read(4 + 4 * ndim)
        if len(head) < 4 + 4 * ndim or head[:2] != b"\0\0":
            raise DataError(f"{path} is not an IDX file (header of {len(head)} bytes: {head[:8].hex()})")
        if head[2] != 0x08:
            raise DataError(f"{path} stores {_IDX_TYPES.get(head[2], f'type 0x{head[2]:02x}')} values; "
                            "MNIST-style files hold uint8 pixels and labels")
        if head[3] != ndim:
            raise DataError(f"{path} has {head[3]} dimensions, expected {ndim}")
        dims = struct.unpack(f">{ndim}I", head[4:])
        want = 4 + 4 * ndim + math.prod(dims)
        have = path.stat().st_size
        if have != want:
            raise DataError(f"{path} is {'truncated' if have < want else 'longer than its header says'}: "
                            f"the header says {'x'.join(map(str, dims))} = {want:,} bytes, the file has {have:,}")
        headers[path] = dims
    n, h, w = headers[images]
    if (1, h, w) != tuple(image_shape):
        raise DataError(f"{images} holds {h}x{w} images; this dataset's images are "
                        f"{image_shape[1]}x{image_shape[2]}")
    if n != headers[labels][0]:
        raise DataError(f"{images} holds {n} images but {labels} holds {headers[labels][0]} labels")


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


def read_idx(path: Path) -> Tensor:
    """The uint8 array of an IDX file whose header check_idx_files has checked: the same tensor as
    torchvision's reader, without importing torchvision (0.3-0.9 s of every run's start-up here)."""
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).view(*dims)


def load_split(name: str, root: str | Path, train: bool, download: bool) -> Split:
    """Decode one split of a registered dataset and check it; a missing or broken file is a DataError."""
    spec = DATASETS[name]
    files = spec.expected_files(root)
    missing = [f for f in files if not f.is_file()]
    images_file, labels_file = files[0:2] if train else files[2:4]
    if not missing:
        check_idx_files(images_file, labels_file, spec.image_shape)
    try:
        if missing and not download:
            raise RuntimeError("files missing and download is off")
        if missing:
            import torchvision.datasets as tvd

            # torchvision reports download progress on stdout; keep stdout clean for --json output.
            with contextlib.redirect_stdout(sys.stderr):
                ds = getattr(tvd, spec.torchvision_class)(root=str(root), train=train, download=download)
            images, labels = ds.data, ds.targets
        else:
            images, labels = read_idx(images_file), read_idx(labels_file)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, ValueError... for the same cause
        folder = Path(root) / spec.folder / "raw"
        how = ("files missing; downloading failed" if missing and download else
               "files missing; download is off (data.download=false)" if missing else "a file is unreadable or truncated")
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot load dataset '{name}' from '{root}' ({how}: {detail}); expected {folder}/"
            f"{{{', '.join(_RAW_FILES)}}}; fix: --data-root DIR, --set data.root=DIR or CONVTRAIN_DATA_ROOT=DIR "
            "pointing at a folder with those files, or data.download=true on a machine with internet"
        ) from None
    if images.dim() == 3:
        images = images.unsqueeze(1)
    split = Split(images.contiguous(), labels.to(torch.int64))
    check_split(split, len(spec.classes), spec.image_shape, f"dataset '{name}' ({images_file}, {labels_file.name})")
    return split


@dataclass
class DataBundle:
    """Everything a run needs to know about its data."""

    train: Split
    val: Split
    test: Split
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


def resolve_size(size: int | float | None, n: int, default: int | float) -> int:
    """A count-or-fraction setting (data.val_size, data.test_size) as a count of the ``n`` images."""
    size = default if size is None else size
    return size if isinstance(size, int) else max(1, round(size * n))


def split_train_val(full: Split, val_size: int | float | None, seed: int, train_subset: int | None) -> tuple[Split, Split]:
    """Hold out ``val_size`` images by a seeded shuffle (the files are sorted by label)."""
    val_size = resolve_size(val_size, len(full), DEFAULT_VAL_SIZE)
    if val_size >= len(full):  # known only once the files are read, but the fix is in the config
        raise ConfigError(f"'data.val_size' is {val_size}, but the training set has only {len(full)} images; "
                          f"set data.val_size below {len(full)}")
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    return full.take(train_idx), full.take(val_idx)


def build(data_cfg, seed: int) -> DataBundle:
    """Load train/val/test splits for ``data_cfg`` (a :class:`~convtrain.config.DataConfig`)."""
    if data_cfg.name in FILE_SOURCES:
        from . import sources

        return sources.build(data_cfg, seed)
    spec = DATASETS[data_cfg.name]
    train_full = load_split(spec.name, data_cfg.root, train=True, download=data_cfg.download)
    test = load_split(spec.name, data_cfg.root, train=False, download=data_cfg.download)
    train, val = split_train_val(train_full, data_cfg.val_size, seed, data_cfg.train_subset)
    if data_cfg.test_subset is not None:
        # a seeded sample, not the first N: the files are sorted by label
        test = test.take(torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:data_cfg.test_subset])
    mean = list(data_cfg.mean) if data_cfg.mean is not None else list(spec.mean)
    std = list(data_cfg.std) if data_cfg.std is not None else list(spec.std)
    channels = train.images.shape[1]
    if len(mean) not in (1, channels):  # load_config checks this too; a DataConfig built in code may not have been
        raise ConfigError(f"'data.mean' has {len(mean)} values but '{spec.name}' has {channels} channel(s)")
    return DataBundle(train, val, test, list(spec.classes), mean, std)


def load_eval_split(name: str, root: str | Path, split: str, val_size: int | float | None, seed: int,
                    download: bool) -> Split:
    """The test split, or the exact validation split a run held out (same seed, same size)."""
    if split == "test":
        return load_split(name, root, train=False, download=download)
    full = load_split(name, root, train=True, download=download)
    return split_train_val(full, val_size, seed, None)[1]


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
                 channels_last: bool = False) -> None:
        self.split, self.batch_size, self.normalizer = split, batch_size, normalizer
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.augment, self.channels_last = augment, channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        return shard_indices(len(self.split), self.shuffle, self.seed, self.epoch, self.rank, self.world_size)

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


def shard_indices(n: int, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int) -> Tensor:
    """This rank's sample indices for one epoch; both batch iterators use it, so they agree.

    Training: a permutation seeded by ``(seed, epoch)``, cut to a multiple of ``world_size``, every
    ``world_size``-th index from ``rank``. Evaluation: file order, samples ``rank, rank + world_size, ...``.
    """
    if shuffle:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
        return perm[: (n // world_size) * world_size][rank::world_size]
    return torch.arange(rank, n, world_size)


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


class _EpochSampler(torch.utils.data.Sampler):
    def __init__(self, batches: LoaderBatches) -> None:
        self.batches = batches

    def __iter__(self):
        b = self.batches
        return iter(shard_indices(len(b.dataset), b.shuffle, b.seed, b.epoch, b.rank, b.world_size).tolist())

    def __len__(self) -> int:
        return self.batches.num_samples()


class LoaderBatches:
    """The generic path: a ``torch.utils.data.DataLoader`` over any dataset of ``(normalized image,
    label)`` samples, with worker processes, pinned memory and persistent workers. Same sample order
    and sharding as :class:`TensorBatches`; batches are moved to ``device`` and augmented there."""

    def __init__(self, dataset, batch_size: int, device: torch.device, *, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, workers: int = 2, augment: AugmentParams | None = None,
                 channels_last: bool = False) -> None:
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.augment, self.channels_last = augment, channels_last
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
                 augment: AugmentParams | None = None, channels_last: bool = False):
    """TensorBatches (``loader="tensor"``: ``split`` must already be on ``device``) or LoaderBatches."""
    if hasattr(split, "dataset"):  # a sources.FileSplit: images decoded from their files per sample
        return LoaderBatches(split.dataset(bundle.mean, bundle.std), batch_size, device, shuffle=shuffle, seed=seed,
                             rank=rank, world_size=world_size, workers=workers, augment=augment,
                             channels_last=channels_last)
    if loader == "tensor":
        return TensorBatches(split, batch_size, Normalizer(bundle.mean, bundle.std, device), shuffle=shuffle,
                             seed=seed, rank=rank, world_size=world_size, augment=augment, channels_last=channels_last)
    return LoaderBatches(SplitDataset(split, bundle.mean, bundle.std), batch_size, device, shuffle=shuffle, seed=seed,
                         rank=rank, world_size=world_size, workers=workers, augment=augment, channels_last=channels_last)


def data_root_from_env(default: str) -> str:
    """``CONVTRAIN_DATA_ROOT`` if set, else ``default``."""
    return os.environ.get("CONVTRAIN_DATA_ROOT") or default
