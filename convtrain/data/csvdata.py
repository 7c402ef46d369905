"""CSV datasets: one row per image, ``label,pixel0,...,pixelN`` with a header row (the layout of
Kaggle's digit-recognizer ``train.csv``), square grayscale images of 0..255 integer pixels.

``data.root`` is ``train.csv`` (``--data DIR`` finds ``DIR/train.csv``); ``val.csv`` and ``test.csv``
beside it are optional splits when they have labels. An unlabelled one (Kaggle's ``test.csv``:
``pixel0,...``, the images a submission is made for) is left out with a note: it is what
``convtrain predict`` is for (:func:`unlabelled_rows`). Blank lines are
skipped. A row with the wrong number of columns, an empty label, a pixel that is not an integer or
is outside 0..255 is *malformed*: an error naming the file and row, or skipped and counted with
``data.skip_unreadable: true``.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .types import ImageRows

MAX_SIDE = 1024  # pixels per side: a header declaring more is not an MNIST-style CSV
MAX_HEADER_BYTES = 16 * MAX_SIDE * MAX_SIDE  # "pixelN," for the largest side
SPLITS = ("train", "val", "test")


@dataclass
class CsvSplit:
    path: Path
    images: torch.Tensor  # uint8 [N, 1, side, side] as found
    labels: list[str]
    bad: list[str] = field(default_factory=list)  # "file row N: why"
    rows: list[int] = field(default_factory=list)  # each image's line in the file (the header is line 1)


def split_files(train_csv: str | Path) -> tuple[dict[str, Path], list[str]]:
    """``train.csv`` and whichever of ``val.csv`` / ``test.csv`` lie beside it with labels, and a note
    for each one without labels (left out)."""
    train = Path(train_csv)
    if not train.is_file():
        raise DataError(f"CSV file not found: {train} (data.root of a csv dataset is its train.csv)")
    found, notes = {"train": train}, []
    for split in SPLITS[1:]:
        p = train.with_name(f"{split}.csv")
        if p.is_file() and p.resolve() != train.resolve():
            if is_unlabelled(p):
                notes.append(f"data: {p} has no label column: not used as the {split} split (it is what "
                             f"`convtrain predict --checkpoint RUN {p} --output preds.csv` is for)")
            else:
                found[split] = p
    return found, notes


def _header(path: Path) -> list[str]:
    """The first row's fields (only the first line is decoded: a bad byte further down is the reader's to
    name, with its line); [] when it cannot be read."""
    try:
        with path.open("rb") as f:
            line = f.readline(MAX_HEADER_BYTES)
        text = line.decode("utf-8-sig")  # -sig: Excel's byte-order mark, as read() takes it
        return next(csv.reader([text.rstrip("\r\n")]), None) or []
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # read() says what is wrong with it


def is_unlabelled(path: Path) -> bool:
    """True for a CSV whose header starts with ``pixel0`` (no label column, as Kaggle's test.csv)."""
    header = _header(path)
    return bool(header) and header[0].strip().lower().startswith("pixel")


def unlabelled_side(path: Path) -> int:
    """The image side of an unlabelled CSV (``pixel0,...,pixelN``), or a DataError saying what it is not."""
    header = _header(path)
    if not header or not header[0].strip().lower().startswith("pixel"):
        raise DataError(f"{path}: expected an unlabelled CSV with the header 'pixel0,...,pixelN' "
                        f"(a labelled one starts with 'label': evaluate it with convtrain eval --data {path})")
    side = math.isqrt(len(header))
    if side * side != len(header) or side > MAX_SIDE:
        raise DataError(f"{path}: the header has {len(header)} pixel columns; a square image needs a square number")
    return side


def read_unlabelled(path: Path, batch: int):
    """Yield ``(row ids, uint8 [n, 1, side, side])`` batches of an unlabelled CSV, ``batch`` rows at a
    time (bounded memory); row ids count data rows from 1 (Kaggle's ImageId). A malformed row is a DataError."""
    side = unlabelled_side(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            yield from _unlabelled_batches(path, reader, side, batch)
        except UnicodeDecodeError as exc:  # decoded a block ahead of the rows: no line number to name
            raise DataError(f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save it as UTF-8 "
                            "CSV") from None
        except csv.Error as exc:  # a NUL byte, a field over the csv module's limit
            raise DataError(f"{path} row {reader.line_num + 1} is not readable CSV ({str(exc)[:120]})") from None


def _unlabelled_batches(path: Path, reader, side: int, batch: int):
    next(reader)
    ids, rows, n = [], [], 0
    for row in reader:
        if not row:
            continue
        n += 1
        try:
            pixels = np.array(row, dtype=np.int64)
        except (ValueError, OverflowError):  # OverflowError: a 20-digit value does not fit int64
            raise DataError(f"{path} row {reader.line_num}: a pixel is not an integer from 0 to 255") from None
        if len(row) != side * side or pixels.min() < 0 or pixels.max() > 255:
            raise DataError(f"{path} row {reader.line_num}: expected {side * side} pixels in 0..255")
        ids.append(n)
        rows.append(pixels.astype(np.uint8))
        if len(rows) == batch:
            yield ids, torch.from_numpy(np.stack(rows)).view(-1, 1, side, side)
            ids, rows = [], []
    if rows:
        yield ids, torch.from_numpy(np.stack(rows)).view(-1, 1, side, side)


def unlabelled_rows(path: Path) -> ImageRows | None:
    """``convtrain predict``'s view of a .csv input: its rows, ids from 1 (Kaggle's ImageId), fitted to the
    model's input; None for a path that is not a .csv file. A labelled or malformed header is refused here,
    before anything runs."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    unlabelled_side(path)

    def read(batch: int, shape: tuple[int, int, int]):
        c, h, w = shape
        if h != w:
            raise DataError(f"CSV rows are square images; this checkpoint takes {h}x{w} inputs")
        for ids, x in read_unlabelled(path, batch):
            yield ids, convert(x, c, h)

    with path.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    return ImageRows(path, max(0, lines - 1), read)


def read(path: Path) -> CsvSplit:
    """Parse one CSV file; the header decides the column count and the image side."""
    try:
        f = path.open(newline="", encoding="utf-8-sig")  # -sig: a byte-order mark (Excel's "CSV UTF-8") is not data
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            side = _check_header(path, header)
            split = _rows(path, reader, len(header), side)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path} is not a readable CSV text file (line {reader.line_num}: {exc})") from None
    if not split.labels and not split.bad:
        raise DataError(f"{path} has a header but no rows; expected one row per image after it")
    return split


def _check_header(path: Path, header: list[str] | None) -> int:
    if not header:
        raise DataError(f"{path} is empty; expected a header row 'label,pixel0,...,pixelN' and one row per image")
    if header[0].strip().lower() != "label":
        what = ("its first row is data, not a header" if header[0].strip().isdigit()
                else f"its first column is '{header[0][:40]}'")
        unlabelled = " (Kaggle's test.csv has no labels: it cannot be a val or test split)" \
            if header[0].strip().lower().startswith("pixel") else ""
        raise DataError(f"{path}: {what}; the header must be 'label,pixel0,...,pixelN'{unlabelled}")
    pixels = len(header) - 1
    side = math.isqrt(pixels)
    if pixels == 0 or side * side != pixels or side > MAX_SIDE:
        raise DataError(f"{path}: the header has {pixels} pixel columns; a square image of at most "
                        f"{MAX_SIDE}x{MAX_SIDE} needs a square number of them (784 = 28x28)")
    return side


def _rows(path: Path, reader, columns: int, side: int) -> CsvSplit:
    rows, labels, bad, lines = [], [], [], []
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        problem = _row_problem(row, columns)
        if problem is None:
            try:
                pixels = np.fromiter(map(int, row[1:]), dtype=np.int64, count=columns - 1)
            except (ValueError, OverflowError):  # OverflowError: a 20-digit value does not fit int64
                problem = "a pixel is not an integer from 0 to 255"
            else:
                if pixels.min() < 0 or pixels.max() > 255:
                    problem = f"pixel values {pixels.min()}..{pixels.max()} are outside 0..255"
        if problem is not None:
            bad.append(f"{path} row {line}: {problem}")
            continue
        rows.append(pixels.astype(np.uint8))
        labels.append(row[0].strip())
        lines.append(line)
    images = torch.from_numpy(np.stack(rows)).view(-1, 1, side, side) if rows else \
        torch.empty((0, 1, side, side), dtype=torch.uint8)
    return CsvSplit(path, images, labels, bad, lines)


def _row_problem(row: list[str], columns: int) -> str | None:
    if len(row) != columns:
        return f"{len(row)} columns, the header has {columns}"
    if not row[0].strip():
        return "empty label"
    return None


_INTEGER = re.compile(r"-?[0-9]{1,18}")


def class_names(labels: list[str]) -> list[str]:
    """Sorted label values: numerically when every label is an integer (so 10 comes after 9)."""
    unique = set(labels)
    if all(_INTEGER.fullmatch(v) for v in unique):  # not str.isdigit(): '²' and '--5' pass it, int() refuses them
        return sorted(unique, key=int)
    return sorted(unique)


def convert(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Resize ``[N, 1, s, s]`` to ``size`` (when it differs) and repeat to ``channels``."""
    if images.shape[-1] != size and len(images):
        out = []
        for chunk in images.split(4096):  # bounded float memory for large files
            x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(x.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(out)
    elif images.shape[-1] != size:
        images = torch.empty((0, 1, size, size), dtype=torch.uint8)
    return images.repeat(1, channels, 1, 1) if channels != 1 else images
