"""The registered MNIST-style datasets (mnist, fashion_mnist): their IDX files read directly
(torchvision only to download), the validation split held out by a seeded shuffle.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .types import DEFAULT_VAL_SIZE, DataBundle, Origin, Split, Where, check_split, resolve_size, seeded_subset

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
    # each image's index in its IDX file (eval --report names a mistake by it)
    where = Where(str(images_file), "index", dataset=name, split="train" if train else "test")
    split = Split(images.contiguous(), labels.to(torch.int64), Origin.of(where, torch.arange(len(labels))))
    check_split(split, len(spec.classes), spec.image_shape, f"dataset '{name}' ({images_file}, {labels_file.name})")
    return split


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
    """Train/val/test splits of a registered dataset: its IDX files, val held out by a seeded shuffle."""
    spec = DATASETS[data_cfg.name]
    train_full = load_split(spec.name, data_cfg.root, train=True, download=data_cfg.download)
    test = load_split(spec.name, data_cfg.root, train=False, download=data_cfg.download)
    train, val = split_train_val(train_full, data_cfg.val_size, seed, data_cfg.train_subset)
    if data_cfg.test_subset is not None:
        # a seeded sample, not the first N: the files are sorted by label
        test = seeded_subset(test, data_cfg.test_subset, seed)
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


def build_eval(data_cfg, seed: int, split: str = "test") -> DataBundle:
    """What ``convtrain eval`` scores, as the bundle's ``test``: the test files, or the validation images a
    run of ``data_cfg`` held out (data.test_subset is eval's own ``--set``, applied by the caller)."""
    spec = DATASETS[data_cfg.name]
    chosen = load_eval_split(spec.name, data_cfg.root, split, data_cfg.val_size, seed, data_cfg.download)
    return DataBundle(chosen, chosen, chosen, list(spec.classes), list(spec.mean), list(spec.std))


def input_spec(data_cfg, where: str) -> tuple[tuple[int, int, int], int]:
    """The image shape and class count of a registered dataset, for the config's model check.
    data.channels / data.image_size reshape folder and CSV images; these files are never resized."""
    spec = DATASETS[data_cfg.name]
    if (data_cfg.channels, data_cfg.image_size) != (spec.image_shape[0], spec.image_shape[1]):
        raise ConfigError(f"{where}: 'data.channels'/'data.image_size' convert folder and csv images; dataset "
                          f"'{spec.name}' is {spec.image_shape[0]}x{spec.image_shape[1]}x{spec.image_shape[2]}: "
                          f"leave them at {spec.image_shape[0]} and {spec.image_shape[1]}")
    return spec.image_shape, len(spec.classes)
