"""NumPy ``.npz`` datasets: Keras' ``mnist.npz`` layout (``x_train``, ``y_train``, ``x_test``, ``y_test``;
``x_val``/``y_val`` too) or one ``x``/``y`` pair, with an optional ``classes`` array of names.

``data.root`` is the ``.npz`` file. Images are uint8 arrays ``[N, H, W]`` or ``[N, H, W, C]`` (C = 1 or 3)
of square images; labels are integers ``[N]`` (or ``[N, 1]``). Without ``classes`` the class names are the
sorted label values, as a CSV's; with it, labels are indices into it. A split missing from the file is
held out of the training images by ``data.split_seed``, as for CSV files, and the images are converted to
``data.channels`` x ``data.image_size``\\ :sup:`2` the same way.

The file is untrusted: arrays are read with ``allow_pickle=False`` (an array of Python objects is refused,
never unpickled), every array's shape and dtype come from its header and are checked before a byte of
data is read, and what the images need in memory (as stored plus decoded) must fit
``data.memory_budget_mb``. Each problem is one line naming the file and the array. ``convtrain predict``
streams the images of ``x`` (else ``x_test``) in batches, whatever the file's size.
"""

from __future__ import annotations

import difflib
import math
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import csvdata, user_files
from .types import DataBundle, ImageRows, Origin, Split, Where

PAIRS = {"train": ("x_train", "y_train"), "val": ("x_val", "y_val"), "test": ("x_test", "y_test")}
SINGLE = ("x", "y")  # one pair: val and test are held out of it
CLASSES = "classes"


@dataclass(frozen=True)
class Member:
    """One array of the archive, as its header describes it (nothing read yet)."""

    name: str  # the file's member name: "x_train.npy"
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"npz file not found: {path} (data.root of an npz dataset is the .npz file)") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        with path.open("rb") as f:
            head = f.read(6)
        what = ("a single .npy array (np.save), not an .npz archive: save with np.savez(path, x=..., y=...)"
                if head == b"\x93NUMPY" else f"not an .npz archive ({exc})")
        raise DataError(f"{path} is {what}") from None


def _header(z: zipfile.ZipFile, name: str, path: Path) -> Member:
    try:
        with z.open(name) as m:
            version = np.lib.format.read_magic(m)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(m)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise DataError(f"{path}: {name} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: {name[:-4]} is an array of Python objects (pickled); convtrain reads .npz files "
                        "with allow_pickle=False: save plain numeric arrays (and strings for classes)")
    return Member(name, tuple(shape), dtype, fortran)


def members(z: zipfile.ZipFile, path: Path) -> tuple[dict[str, Member], list[str]]:
    """The archive's arrays by key (``x_train``), from their headers, and the other entries it holds."""
    arrays, other = {}, []
    for name in z.namelist():
        if name.endswith(".npy") and "/" not in name:
            arrays[name[:-4]] = _header(z, name, path)
        else:
            other.append(name)
    return arrays, other


def _read(z: zipfile.ZipFile, member: Member, path: Path) -> np.ndarray:
    try:
        with z.open(member.name) as m:
            return np.lib.format.read_array(m, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: {member.name[:-4]} cannot be read, the file is truncated or damaged ({exc})") from None


def check_images(m: Member, path: Path) -> None:
    """uint8 ``[N, S, S]`` or ``[N, S, S, C]`` with C 1 or 3 and N > 0; else one line saying what it is."""
    key, shape = m.name[:-4], "x".join(map(str, m.shape))
    if m.dtype != np.uint8:
        raise DataError(f"{path}: {key} holds {m.dtype} values; images must be uint8 pixels 0..255 (for floats "
                        "in 0..1: (x * 255).round().astype(np.uint8))")
    if len(m.shape) not in (3, 4) or (len(m.shape) == 4 and m.shape[3] not in (1, 3)):
        raise DataError(f"{path}: {key} has shape {shape}; images are [N, H, W] or [N, H, W, C] with C 1 or 3")
    if m.shape[1] != m.shape[2] or not 1 <= m.shape[1] <= csvdata.MAX_SIDE:
        raise DataError(f"{path}: {key} holds {m.shape[1]}x{m.shape[2]} images; convtrain reads square images of "
                        f"at most {csvdata.MAX_SIDE}x{csvdata.MAX_SIDE} from .npz files")
    if m.shape[0] == 0:
        raise DataError(f"{path}: {key} holds no images")


def _check_labels(y: Member, x: Member, path: Path) -> None:
    key = y.name[:-4]
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} holds {y.dtype} values; labels must be integers (class indices)")
    if len(y.shape) == 2 and y.shape[1] > 1:
        raise DataError(f"{path}: {key} has shape {'x'.join(map(str, y.shape))}; one-hot labels? give one class "
                        "index per image (np.argmax(y, axis=1))")
    if len(y.shape) not in (1, 2) or y.shape[0] != x.shape[0]:
        raise DataError(f"{path}: {x.name[:-4]} holds {x.shape[0]} images but {key} has shape "
                        f"{'x'.join(map(str, y.shape))}; expected one label per image")


def _rename(want: str, keys) -> str:
    """`` (rename X_train to x_train?)`` for the array whose name is closest to the one expected, ignoring case."""
    lower = {k.lower(): k for k in keys}
    close = difflib.get_close_matches(want, list(lower), n=1, cutoff=0.6)
    return f" (rename {lower[close[0]]} to {want}?)" if close and lower[close[0]] != want else ""


def _pairs(arrays: dict[str, Member], path: Path) -> dict[str, tuple[Member, Member]]:
    """The (images, labels) arrays of each split the file has, checked against each other."""
    keys = sorted(arrays)
    if SINGLE[0] in arrays and PAIRS["train"][0] in arrays:
        raise DataError(f"{path} holds both x and x_train: keep one pair of training images")
    train = SINGLE if SINGLE[0] in arrays else PAIRS["train"]
    if train[0] not in arrays:
        raise DataError(f"{path} has no training images: expected x_train and y_train (Keras' mnist.npz) or x and "
                        f"y; it holds {', '.join(keys) or 'no arrays'}{_rename('x_train', keys)}")
    pairs = {}
    for split, (x, y) in {"train": train, "val": PAIRS["val"], "test": PAIRS["test"]}.items():
        if x in arrays and (y in arrays or split == "train"):
            if y not in arrays:
                raise DataError(f"{path} has {x} but no {y}{_rename(y, keys)}: training needs a label per image")
            check_images(arrays[x], path)
            _check_labels(arrays[y], arrays[x], path)
            pairs[split] = (arrays[x], arrays[y])
        elif y in arrays and x not in arrays:
            raise DataError(f"{path} has {y} but no {x}{_rename(x, keys)}")
    shapes = {m[0].shape[1:] for m in pairs.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits hold images of different shapes ({', '.join(map(str, sorted(shapes)))})")
    return pairs


def _check_budget(pairs: dict, data_cfg, path: Path) -> None:
    """As stored plus decoded to data.channels x data.image_size^2, before anything is read."""
    c, size = data_cfg.channels, data_cfg.image_size
    need = sum(x.nbytes + y.nbytes + x.shape[0] * c * size * size for x, y in pairs.values())
    if need > data_cfg.memory_budget_mb * 1_000_000:
        raise DataError(f"{path}: its images take {need / 1e6:,.0f} MB (as stored and decoded to {c}x{size}x{size}), "
                        f"over data.memory_budget_mb={data_cfg.memory_budget_mb}: raise it if this machine holds "
                        "them, or split the file")


def _named_classes(z: zipfile.ZipFile, m: Member, path: Path) -> list[str]:
    if m.dtype.kind not in "US" or len(m.shape) != 1 or not 0 < m.shape[0] <= 1_000_000:
        raise DataError(f"{path}: classes must be a 1-D array of names (strings), got {m.dtype} "
                        f"{'x'.join(map(str, m.shape))}")
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in _read(z, m, path).tolist()]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: classes names '{twice[:40]}' more than once")
    return names


def _class_names(z: zipfile.ZipFile, arrays: dict, labels: dict[str, np.ndarray], path: Path) -> tuple[list, dict]:
    """The class names and every split's labels as indices into them: into ``classes`` when the file has it,
    else into the sorted label values of the training images (a CSV's rule)."""
    for split, y in labels.items():
        if y.dtype == np.uint64 and y.size and int(y.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{path}: the {split} split has label {int(y.max())}, too large for a class index")
        labels[split] = y.astype(np.int64)
    if CLASSES in arrays:
        names = _named_classes(z, arrays[CLASSES], path)
        values, have = np.arange(len(names)), f"0..{len(names) - 1} (classes has {len(names)} names)"
    else:
        values = np.unique(labels["train"])
        names, have = [str(v) for v in values.tolist()], "the labels of the training images"
    out = {}
    for split, y in labels.items():
        pos = np.minimum(np.searchsorted(values, y), len(values) - 1)
        bad = values[pos] != y
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: label {int(y[i])} of image {i} of the {split} split is outside {have} "
                            f"({int(bad.sum())} such labels)")
        out[split] = torch.from_numpy(pos.astype(np.int64))
    return names, out


def fit(x: np.ndarray, channels: int, size: int) -> torch.Tensor:
    """uint8 ``[N, S, S(, C)]`` as ``[N, channels, size, size]``: RGB to grayscale as Pillow's "L" does,
    then csvdata's resize (and repeat to 3 channels)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)
    if t.shape[1] == 3 and channels == 1:
        out = []
        for chunk in t.split(8192):  # ITU-R 601-2 luma in 16-bit fixed point, Pillow's L conversion
            w = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
            out.append(((chunk.to(torch.int32) * w).sum(1, keepdim=True) + 0x8000).bitwise_right_shift(16)
                       .to(torch.uint8))
        t = torch.cat(out)
    # convert() repeats one channel to `channels`; 3 stored channels are kept as they are
    return csvdata.convert(t.contiguous(), channels // t.shape[1], size)


def load(data_cfg) -> user_files.FileData:
    """The file's splits as found (before hold-outs), checked; see the module docstring."""
    path = Path(data_cfg.root)
    start = time.perf_counter()
    with _archive(path) as z:
        arrays, other = members(z, path)
        pairs = _pairs(arrays, path)
        _check_budget(pairs, data_cfg, path)
        images = {s: _read(z, x, path) for s, (x, _) in pairs.items()}
        labels = {s: _read(z, y, path).reshape(-1) for s, (_, y) in pairs.items()}
        classes, labels = _class_names(z, arrays, labels, path)
    used = {m.name[:-4] for pair in pairs.values() for m in pair} | {CLASSES}
    ignored = sorted(set(arrays) - used) + other
    side, c = images["train"].shape[1], 1 if images["train"].ndim == 3 else images["train"].shape[3]
    splits = {s: Split(fit(images[s], data_cfg.channels, data_cfg.image_size), labels[s],
                       Origin.of(Where(str(path), "index", array=pairs[s][0].name[:-4]), torch.arange(len(labels[s]))))
              for s in pairs}
    seconds = time.perf_counter() - start
    notes = [f"data: read {', '.join(f'{m[0].name[:-4]} ({m[0].shape[0]:,})' for m in pairs.values())} of {path} "
             f"in {seconds:.1f}s"]
    notes += [f"data: {path}: {x} has no {y}: not used as the {s} split (it is what `convtrain predict "
              f"--checkpoint RUN {path}` is for)" for s, (x, y) in PAIRS.items() if x in arrays and s not in pairs]
    if ignored:
        notes.append(f"data: ignored {len(ignored)} array(s) of {path}: {', '.join(ignored[:10])}")
    info = {"source": "npz", "root": str(path), "ignored": ignored, "decode_seconds": seconds,
            "image_sizes": {f"{side}x{side} {'L' if c == 1 else 'RGB'}": sum(len(v) for v in images.values())}}
    return user_files.FileData(path, classes, splits, [], None, info, notes)


def build(data_cfg, seed: int) -> DataBundle:
    """Train/val/test of an .npz file: its own splits, the missing ones held out of train."""
    return user_files.build(load(data_cfg), data_cfg, seed)


def build_eval(data_cfg, seed: int, split: str = "test") -> DataBundle:
    """``eval --data FILE.npz``: its own test (or val) split, else all its images (see user_files.build_eval)."""
    return user_files.build_eval(load(data_cfg), data_cfg, seed, split)


def unlabelled_rows(path: Path) -> ImageRows | None:
    """``convtrain predict``'s view of an .npz input: the images of ``x`` (else ``x_test``), ids their index
    from 0, streamed ``batch`` at a time; None for a path that is not an .npz file."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    with _archive(path) as z:
        arrays, _ = members(z, path)
    key = next((k for k in ("x", "x_test") if k in arrays), None)
    if key is None:
        raise DataError(f"{path}: predict reads the images of x (or x_test); it holds "
                        f"{', '.join(sorted(arrays)) or 'no arrays'}{_rename('x', arrays)}")
    check_images(arrays[key], path)
    return ImageRows(path, arrays[key].shape[0], lambda batch, shape: _stream(path, arrays[key], batch, shape))


def _stream(path: Path, m: Member, batch: int, shape: tuple[int, int, int]) -> Iterator[tuple[list[int], torch.Tensor]]:
    c, h, w = shape
    if h != w:
        raise DataError(f"{path}: its images are square; this checkpoint takes {h}x{w} inputs")
    row = math.prod(m.shape[1:])
    with _archive(path) as z, z.open(m.name) as f:
        whole = _read(z, m, path) if m.fortran else None  # a Fortran-order array is not stored image by image
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        for i in range(0, m.shape[0], batch):
            n = min(batch, m.shape[0] - i)
            if whole is not None:
                x = whole[i:i + n]
            else:
                data = f.read(n * row)
                if len(data) != n * row:
                    raise DataError(f"{path}: {m.name[:-4]} is truncated after {i} images")
                x = np.frombuffer(bytearray(data), np.uint8).reshape(n, *m.shape[1:])
            yield list(range(i, i + n)), fit(x, c, h)
