"""An image-folder dataset on disk: ``DIR/train/<class>/*`` (and optional ``val/``, ``test/``).

The val split may also be called ``valid/`` (Roboflow's exports) or ``validation/``; the log says
which folder it came from. Any other folder beside ``train/`` is named (in the log and ``data
inspect``) as not used, never dropped silently.

Listing follows fixed rules, so nothing is dropped silently:

- a class is a sub-folder of ``DIR/train``; class names are the sorted folder names;
- an image is a file whose suffix is in :data:`IMAGE_SUFFIXES` (any case); every other file
  (``README.txt``, ``.DS_Store``, hidden files) and any deeper sub-folder is *ignored* and counted,
  never read (so symlink loops below a class folder are never followed);
- an image file that cannot be decoded (truncated, not an image, over the size limits of
  :mod:`convtrain.data.images`, a broken or looping symlink) is *unreadable*: an error naming the
  files, or skipped and counted with ``data.skip_unreadable: true``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError
from .images import IMAGE_SUFFIXES, MAX_BYTES, _read_bytes, image_to_input

SPLITS = ("train", "val", "test")
VAL_FOLDERS = ("val", "valid", "validation")  # the names the val split goes by (Roboflow exports say valid/)


@dataclass
class Listing:
    """The files of one folder dataset, before anything is decoded."""

    root: Path
    classes: list[str]
    files: dict[str, list[Path]]  # split -> image files, sorted (class, name)
    labels: dict[str, list[int]]
    ignored: list[str] = field(default_factory=list)  # non-image files and sub-folders, relative to root
    broken: list[str] = field(default_factory=list)  # "path: reason" for links that lead nowhere
    folders: dict[str, str] = field(default_factory=dict)  # split -> the folder it was read from ("valid")
    unknown: list[str] = field(default_factory=list)  # folders beside train/ that are no split: not used

    def all_files(self) -> list[Path]:
        return [f for s in self.files.values() for f in s]


def scan(root: str | Path) -> Listing:
    """List ``root``'s splits, classes and image files; a layout mistake is a DataError saying the fix."""
    try:
        return _scan(Path(root))
    except OSError as exc:  # a folder without read permission, a name too long, a vanished folder...
        raise DataError(f"cannot list {exc.filename or root}: {exc.strerror or exc}") from None


def _scan(root: Path) -> Listing:
    if not root.is_dir():
        raise DataError(f"data folder not found: {root} (expected {root}/train/<class>/<images>)")
    if not (root / "train").is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        hint = f"; found the folders {', '.join(found[:5])}: if those are classes, move them into {root}/train/" \
            if found else ""
        raise DataError(f"{root} has no train/ folder: expected {root}/train/<class>/<images> "
                        f"(val/ and test/ beside it are optional){hint}")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}/train has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
                        "a classifier needs at least 2: one sub-folder of images per class")
    listing = Listing(root, classes, {}, {})
    vals = [v for v in VAL_FOLDERS if (root / v).is_dir()]
    if len(vals) > 1:
        raise DataError(f"{root} has {len(vals)} validation folders ({', '.join(f'{v}/' for v in vals)}); keep one "
                        "(merge or rename the others) so it is clear which images pick best.pt")
    listing.folders = {"train": "train", **({"val": vals[0]} if vals else {}),
                       **({"test": "test"} if (root / "test").is_dir() else {})}
    known = set(listing.folders.values())
    listing.unknown = sorted(p.name for p in root.iterdir()
                             if p.is_dir() and p.name not in known and not p.name.startswith("."))
    for split in SPLITS:
        if split in listing.folders:
            _scan_split(listing, split)
    return listing


def _scan_split(listing: Listing, split: str) -> None:
    folder = listing.root / listing.folders[split]
    index = {c: i for i, c in enumerate(listing.classes)}
    files, labels = [], []
    for entry in sorted(folder.iterdir()):
        rel = str(entry.relative_to(listing.root))
        if entry.name.startswith("."):
            listing.ignored.append(rel)
        elif entry.is_dir():
            if entry.name not in index:
                raise DataError(f"{entry} is a class folder that {listing.root}/train does not have (train classes: "
                                f"{', '.join(listing.classes)}); every class needs training images")
            found = _scan_class(listing, entry)
            if not found and split == "train":
                raise DataError(f"class folder {entry} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                                "add images or remove the folder")
            files += found
            labels += [index[entry.name]] * len(found)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            raise DataError(f"{entry} lies directly in {folder}; put each image in its class folder "
                            f"({folder}/<class>/{entry.name})")
        else:
            listing.ignored.append(rel)
    listing.files[split], listing.labels[split] = files, labels


def _scan_class(listing: Listing, folder: Path) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir()):
        rel = str(entry.relative_to(listing.root))
        if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_SUFFIXES:
            listing.ignored.append(rel)
        elif entry.is_symlink() and not entry.exists():  # exists() follows the link: False when broken or a loop
            listing.broken.append(f"{entry}: a broken or looping symbolic link")
        elif entry.is_dir():
            listing.ignored.append(rel)
        else:
            found.append(entry)
    return found


def fingerprint(files: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime in ns) of every file: the cache key; a changed or touched file changes it."""
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((str(f.relative_to(root)), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(f.relative_to(root)), -1, -1))  # vanished: decoding names it
    return out


def decode(path: Path, channels: int, size: int) -> tuple[torch.Tensor, str]:
    """One image file as uint8 ``[channels, size, size]`` plus what it was (``"32x40 RGB"``).

    The same treatment as ``convtrain predict`` (pad to a square with the border colour, resize),
    without the automatic inversion: a folder's images are taken as they are.
    """
    from PIL import Image

    name = str(path)
    data = _read_bytes(path, name, MAX_BYTES)
    try:
        with Image.open(io.BytesIO(data)) as im:  # the header only: size and mode as found
            found = f"{im.width}x{im.height} {im.mode}"
    except Exception:  # noqa: BLE001 - image_to_input below says what is wrong with it
        found = "?"
    return image_to_input(data, channels, (size, size), "no", name=name), found


def decode_all(files: list[Path], channels: int, size: int, keep: bool = True) -> dict:
    """Decode ``files``: the good ones' uint8 images (``keep``), which decoded, sizes found, errors, and
    per-channel pixel sums (mean/std without holding the images, for the streaming path)."""
    images = torch.empty((len(files) if keep else 0, channels, size, size), dtype=torch.uint8)
    ok, sizes, errors, n = [], {}, [], 0
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for f in files:
        try:
            x, found = decode(f, channels, size)
        except DataError as exc:
            ok.append(False)
            errors.append(str(exc))
            continue
        if keep:
            images[n] = x
        n += 1
        ok.append(True)
        sizes[found] = sizes.get(found, 0) + 1
        v = x.double().div_(255).flatten(1)
        total += v.sum(1)
        squares += v.square().sum(1)
    return {"images": images[:n].clone() if keep else None, "ok": torch.tensor(ok, dtype=torch.bool),
            "sizes": sizes, "errors": errors, "sum": total, "sum_sq": squares, "pixels": n * size * size}
