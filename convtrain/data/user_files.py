"""Data sources read from the user's own files: ``folder`` (image folders) and ``csv``, built into
the same :class:`~convtrain.data.types.DataBundle` of uint8 :class:`~convtrain.data.types.Split` tensors as MNIST.

One load: list the files (:mod:`convtrain.data.imagefolder` / :mod:`convtrain.data.csvdata`), decode them
once or take them from the cache (:mod:`convtrain.data.cache`), refuse (or, with
``data.skip_unreadable``, skip and count) bad files, hold out the missing val/test splits by a
seeded shuffle, and compute mean/std from the training split. A folder whose decoded images would
exceed ``data.memory_budget_mb`` stays on disk: its splits are :class:`FileSplit` lists of files,
decoded per sample by the DataLoader path (every file is still decoded once up front, to find bad
files before training; the cache then remembers which files were bad, and the pixel statistics).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from . import cache as datacache
from . import csvdata, imagefolder
from .batches import SplitDataset
from .types import DEFAULT_FILE_HOLDOUT, DataBundle, Origin, Split, Where, check_split, resolve_size, seeded_subset

MAX_LISTED = 3  # bad files named in the one-line error; all of them go to results.json / inspect --json


@dataclass
class FileSplit:
    """Images left on disk: file paths and labels, decoded per sample (the streaming path)."""

    files: list[Path]
    labels: Tensor
    shape: tuple[int, int, int]  # channels, size, size after decoding

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.shape

    def take(self, index: Tensor) -> FileSplit:
        return FileSplit([self.files[i] for i in index.tolist()], self.labels[index], self.shape)

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the files' split/class/name and the labels (the files are not read)."""
        h = hashlib.sha256()
        for f, label in zip(self.files, self.labels.tolist()):
            h.update(f"{'/'.join(f.parts[-3:])}\t{label}\n".encode())
        return h.hexdigest()[:16]

    def dataset(self, mean: list[float], std: list[float]) -> FileDataset:
        return FileDataset(self, mean, std)

    @property
    def origin(self) -> Origin:
        return _files_origin(self.files)

    def image(self, i: int) -> Tensor:
        c, size, _ = self.shape
        return imagefolder.decode(self.files[i], c, size)[0]


def _files_origin(files: list[Path]) -> Origin:
    """Image n is the file ``files[n]``."""
    return Origin.of(Where("", "path", files=tuple(str(f) for f in files)), torch.arange(len(files)))


class FileDataset(SplitDataset):
    """Decode one file per sample (same decoding as the tensor path), then ToTensor + Normalize."""

    def pixels(self, i: int) -> Tensor:
        c, size, _ = self.split.shape
        return imagefolder.decode(self.split.files[i], c, size)[0]


@dataclass
class FileData:
    """One source's splits as found on disk, before hold-outs."""

    root: Path
    classes: list[str]
    splits: dict  # "train" / "val" / "test" -> Split or FileSplit (only those present on disk)
    bad: list[str]
    stats: tuple[list[float], list[float]] | None  # streaming: mean/std over the train folder's images
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def streamed(self) -> bool:
        return isinstance(self.splits["train"], FileSplit)


def build_folder(data_cfg, seed: int) -> DataBundle:
    """The DataBundle of an image folder (see the module docstring)."""
    return build(load_folder(data_cfg), data_cfg, seed)


def build_csv(data_cfg, seed: int) -> DataBundle:
    """The DataBundle of a train.csv file (see the module docstring)."""
    return build(load_csv(data_cfg), data_cfg, seed)


def eval_folder(data_cfg, seed: int, split: str = "test") -> DataBundle:
    """``eval --data FOLDER``: see :func:`build_eval`."""
    return build_eval(load_folder(data_cfg), data_cfg, seed, split)


def eval_csv(data_cfg, seed: int, split: str = "test") -> DataBundle:
    """``eval --data FILE.csv``: see :func:`build_eval`."""
    return build_eval(load_csv(data_cfg), data_cfg, seed, split)


def build(loaded: FileData, data_cfg, seed: int) -> DataBundle:
    """Refuse or skip bad files, hold out the missing splits, compute mean/std."""
    _refuse_bad(loaded, data_cfg)
    if len(loaded.classes) < 2:  # a CSV with one label value (a folder with one class folder is refused on scan)
        raise DataError(f"{loaded.root} has {len(loaded.classes)} class(es) ({', '.join(loaded.classes[:1]) or 'none'}); "
                        "a classifier needs at least 2")
    train, val, test = hold_out(loaded, data_cfg, seed)
    if data_cfg.test_subset is not None:
        test = seeded_subset(test, data_cfg.test_subset, seed)
    for name, split in (("train", train), ("val", val), ("test", test)):
        _check(split, len(loaded.classes), f"{data_cfg.name} dataset {loaded.root} ({name} split)")
    computed = loaded.stats or pixel_stats(train.images)
    mean, std = (list(data_cfg.mean), list(data_cfg.std)) if data_cfg.mean is not None else computed
    info = {**loaded.info, "computed_mean": computed[0], "computed_std": computed[1],
            "held_out": [s for s in ("val", "test") if s not in loaded.splits]}
    return DataBundle(train, val, test, list(loaded.classes), mean, std, notes=loaded.notes,
                      skipped=list(loaded.bad), tensor_resident=not loaded.streamed, info=info)


def build_eval(loaded: FileData, data_cfg, seed: int, split: str = "test") -> DataBundle:
    """The images ``convtrain eval --data`` scores, as the bundle's ``test`` (also its train and val).

    Never a hold-out with the checkpoint's settings: the data's own test split (``split="val"``:
    its val split); without one, the ``data.test_size`` images training would hold out (same seed,
    same images) when that key is set, else every image of the files.
    """
    _refuse_bad(loaded, data_cfg)
    where = f"{data_cfg.name} dataset {loaded.root}"
    if split == "val" or "test" in loaded.splits:
        if split not in loaded.splits:
            raise ConfigError(f"{loaded.root} has no {split} split on disk; eval --data scores its test split "
                              "(or every image when it has none): drop --split")
        chosen, what = loaded.splits[split], split
    elif data_cfg.test_size is not None:
        full = loaded.splits["train"]
        n_test = resolve_size(data_cfg.test_size, len(full), DEFAULT_FILE_HOLDOUT)
        if n_test > len(full):
            raise ConfigError(f"{loaded.root}: data.test_size={data_cfg.test_size} is more than its {len(full)} "
                              "images")
        chosen = full.take(torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))[:n_test])
        what = f"test (held out: data.test_size={data_cfg.test_size})"
    else:
        parts = [loaded.splits[s] for s in ("train", "val") if s in loaded.splits]
        chosen, what = _concat(parts), "all images"
    if data_cfg.test_subset is not None:
        chosen = seeded_subset(chosen, data_cfg.test_subset, seed)
    _check(chosen, len(loaded.classes), f"{where} ({what})")
    info = {**loaded.info, "split": what}
    return DataBundle(chosen, chosen, chosen, list(loaded.classes), [0.0], [1.0], notes=loaded.notes,
                      skipped=list(loaded.bad), tensor_resident=not loaded.streamed, info=info)


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, FileSplit) for p in parts):
        return FileSplit([f for p in parts for f in p.files], torch.cat([p.labels for p in parts]), parts[0].shape)
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                 Origin.cat([p.origin for p in parts]))


def _check(split, num_classes: int, where: str) -> None:
    if isinstance(split, Split):
        check_split(split, num_classes, split.image_shape, where)
    elif len(split) == 0:
        raise DataError(f"{where}: no images")


def pixel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixel/255 over a uint8 ``[N, C, H, W]`` tensor, in chunks."""
    c = images.shape[1]
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for chunk in images.split(8192):
        v = chunk.double().div_(255).transpose(0, 1).flatten(1)
        total += v.sum(1)
        squares += v.square().sum(1)
    return _mean_std(total, squares, images.shape[0] * images.shape[2] * images.shape[3])


def _mean_std(total: Tensor, squares: Tensor, n: int) -> tuple[list[float], list[float]]:
    mean = total / max(n, 1)
    std = (squares / max(n, 1) - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)  # a blank set: no 0 std
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def hold_out(loaded: FileData, data_cfg, seed: int) -> tuple:
    """Train / val / test: a split missing on disk is held out of train by a seeded shuffle; the test
    images come first off the permutation, so they depend only on the seed and data.test_size."""
    full = loaded.splits["train"]
    n = len(full)
    n_test = 0 if "test" in loaded.splits else resolve_size(data_cfg.test_size, n, DEFAULT_FILE_HOLDOUT)
    n_val = 0 if "val" in loaded.splits else resolve_size(data_cfg.val_size, n, DEFAULT_FILE_HOLDOUT)
    if n_test + n_val >= n:
        raise ConfigError(f"{loaded.root}: holding out {n_test} test and {n_val} val images leaves no training "
                          f"images of the {n}; lower data.test_size / data.val_size (a count, or a fraction "
                          "such as 0.1), or add val/ and test/ splits")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test = loaded.splits["test"] if "test" in loaded.splits else full.take(perm[:n_test])
    val = loaded.splits["val"] if "val" in loaded.splits else full.take(perm[n_test:n_test + n_val])
    train_idx = perm[n_test + n_val:]
    if data_cfg.train_subset is not None:
        train_idx = train_idx[:data_cfg.train_subset]
    return full.take(train_idx), val, test


def _refuse_bad(loaded: FileData, data_cfg) -> None:
    """Every bad file is named: the run stops (before anything is written) unless skipping was asked for."""
    bad = loaded.bad
    if not bad:
        return
    listed = "; ".join(bad[:MAX_LISTED]) + (f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else "")
    if not data_cfg.skip_unreadable:
        raise DataError(f"{len(bad)} unreadable file(s) or malformed row(s) in {loaded.root}: {listed}; fix or remove "
                        "them, or set data.skip_unreadable=true to skip them (counted in the log and results.json)")
    loaded.notes.append(f"data: skipped {len(bad)} unreadable file(s) or malformed row(s) (data.skip_unreadable): "
                        f"{listed}")
    counts = torch.bincount(loaded.splits["train"].labels, minlength=len(loaded.classes))
    empty = [c for c, k in zip(loaded.classes, counts.tolist()) if k == 0]
    if empty:
        raise DataError(f"{loaded.root}: class(es) {', '.join(empty)} have no readable training images left")


# --------------------------------------------------------------------------------------------
# Image folders


def load_folder(data_cfg) -> FileData:
    listing = imagefolder.scan(data_cfg.root)
    files = listing.all_files()
    c, size = data_cfg.channels, data_cfg.image_size
    streamed = len(files) * c * size * size > data_cfg.memory_budget_mb * 1_000_000
    cache_key = datacache.key("folder", listing.root, imagefolder.fingerprint(files, listing.root),
                              {"channels": c, "image_size": size, "pixels": not streamed})
    payload, notes = _cached(data_cfg, cache_key, {k: len(v) for k, v in listing.files.items()})
    if payload is None:
        start = time.perf_counter()
        payload = _decode_folder(listing, c, size, keep=not streamed)
        payload["seconds"] = time.perf_counter() - start
        notes.append(f"data: decoded {len(files)} images of {listing.root} in {payload['seconds']:.1f}s"
                     + ("" if data_cfg.cache else " (data.cache is off)"))
        if data_cfg.cache:
            notes += [n for n in [datacache.save(cache_key, payload)] if n]
    else:
        notes.append(f"data: {len(files)} images of {listing.root} from the cache "
                     f"(decoding took {payload['seconds']:.1f}s)")
        notes.append(f"{datacache.CACHE_FILE_NOTE}{datacache.path_for(cache_key)}")
    if streamed:
        notes.append(f"data: {len(files)} images x {c}x{size}x{size} bytes exceed data.memory_budget_mb="
                     f"{data_cfg.memory_budget_mb}: streaming them from disk (DataLoader path)")
    notes += folder_notes(listing)
    if listing.ignored:
        notes.append(f"data: ignored {len(listing.ignored)} non-image file(s) or folder(s) (e.g. {listing.ignored[0]}); "
                     f"images are {', '.join(imagefolder.IMAGE_SUFFIXES)}")
    return _folder_loaded(listing, payload, (c, size, size), streamed, notes)


def folder_notes(listing: imagefolder.Listing) -> list[str]:
    """Which folder the val split came from (when not val/), and the folders beside train/ not used."""
    notes = []
    if listing.folders.get("val", "val") != "val":
        notes.append(f"data: the val split is {listing.root / listing.folders['val']}/ (picks best.pt)")
    if listing.unknown:
        notes.append(f"data: not used: folder(s) {', '.join(f'{u}/' for u in listing.unknown)} beside train/ in "
                     f"{listing.root} (the splits are train/, val/ (or valid/, validation/) and test/)")
    return notes


def _cached(data_cfg, cache_key: str, counts: dict[str, int] | None = None) -> tuple[dict | None, list[str]]:
    """The cached payload, when it has every field, with images of the asked shape (``counts``: the
    number of files per split of a folder); a file with the right key but other contents is decoded again."""
    if not data_cfg.cache:
        return None, []
    payload, note = datacache.load(cache_key)
    if payload is not None:
        problem = _payload_problem(payload, (data_cfg.channels, data_cfg.image_size, data_cfg.image_size), counts)
        if problem:
            payload, note = None, f"ignored the cache file {datacache.path_for(cache_key)} ({problem}); decoding again"
    return payload, [note] if note else []


def _payload_problem(payload: dict, shape: tuple, counts: dict[str, int] | None) -> str | None:
    """Why a cache payload cannot be used as it is (None: it can)."""
    missing = [k for k in ("splits", "errors", "sizes", "seconds", *(("stats",) if counts else ("classes",)))
               if k not in payload]
    if missing or not isinstance(payload["splits"], dict):
        return f"missing {', '.join(missing) or 'splits'}"
    for split, part in payload["splits"].items():
        images = part.get("images") if isinstance(part, dict) else None
        ok = part.get("ok") if isinstance(part, dict) else None
        n = int(ok.sum()) if isinstance(ok, torch.Tensor) else len(part.get("labels", [])) if isinstance(part, dict) else -1
        if counts is not None and (not isinstance(ok, torch.Tensor) or len(ok) != counts.get(split, -1)):
            return f"split {split}: not one entry per file"
        if images is not None and (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8
                                   or tuple(images.shape) != (n, *shape)):
            return f"split {split}: images of another shape"
        if counts is None and not (isinstance(part, dict) and isinstance(part.get("rows"), torch.Tensor)
                                   and len(part["rows"]) == n):
            return f"split {split}: no row numbers (written by an older convtrain)"  # a CSV's: eval --report names rows
    return None


def _decode_folder(listing: imagefolder.Listing, c: int, size: int, keep: bool) -> dict:
    payload = {"splits": {}, "errors": [], "sizes": {}}
    for split, files in listing.files.items():
        d = imagefolder.decode_all(files, c, size, keep=keep)
        payload["splits"][split] = {"ok": d["ok"], **({"images": d["images"]} if keep else {})}
        payload["errors"] += d["errors"]
        for k, v in d["sizes"].items():
            payload["sizes"][k] = payload["sizes"].get(k, 0) + v
        if split == "train":
            payload["stats"] = [d["sum"], d["sum_sq"], d["pixels"]]
    return payload


def _folder_loaded(listing: imagefolder.Listing, payload: dict, shape: tuple, streamed: bool, notes: list) -> FileData:
    splits = {}
    for split, files in listing.files.items():
        ok = payload["splits"][split]["ok"]
        labels = torch.tensor(listing.labels[split], dtype=torch.int64)[ok] if len(files) else \
            torch.empty(0, dtype=torch.int64)
        kept = [f for f, good in zip(files, ok.tolist()) if good]
        if streamed:
            splits[split] = FileSplit(kept, labels, shape)
        else:
            splits[split] = Split(payload["splits"][split]["images"], labels, _files_origin(kept))
    stats = _mean_std(*payload["stats"]) if streamed else None
    info = {"source": "folder", "root": str(listing.root), "image_sizes": payload["sizes"],
            "ignored": listing.ignored, "decode_seconds": payload["seconds"],
            "folders": dict(listing.folders), "unknown_folders": list(listing.unknown)}
    return FileData(listing.root, listing.classes, splits, listing.broken + payload["errors"], stats, info, notes)


# --------------------------------------------------------------------------------------------
# CSV files


def load_csv(data_cfg) -> FileData:
    files, unlabelled = csvdata.split_files(data_cfg.root)
    root = files["train"]
    c, size = data_cfg.channels, data_cfg.image_size
    fingerprint = imagefolder.fingerprint(list(files.values()), root.parent)
    cache_key = datacache.key("csv", root.parent, fingerprint, {"channels": c, "image_size": size})
    payload, notes = _cached(data_cfg, cache_key)
    notes = unlabelled + notes
    if payload is None:
        start = time.perf_counter()
        payload = _parse_csv(files, c, size)
        payload["seconds"] = time.perf_counter() - start
        notes.append(f"data: parsed {', '.join(str(p) for p in files.values())} in {payload['seconds']:.1f}s")
        if data_cfg.cache:
            notes += [n for n in [datacache.save(cache_key, payload)] if n]
    else:
        notes.append(f"data: {root} from the cache (parsing took {payload['seconds']:.1f}s)")
        notes.append(f"{datacache.CACHE_FILE_NOTE}{datacache.path_for(cache_key)}")
    splits = {s: Split(v["images"], v["labels"], Origin.of(Where(str(files[s]), "row"), v["rows"]))
              for s, v in payload["splits"].items()}
    info = {"source": "csv", "root": str(root), "image_sizes": payload["sizes"], "ignored": [],
            "decode_seconds": payload["seconds"]}
    return FileData(root, list(payload["classes"]), splits, list(payload["errors"]), None, info, notes)


def _parse_csv(files: dict[str, Path], c: int, size: int) -> dict:
    parsed = {s: csvdata.read(p) for s, p in files.items()}
    classes = csvdata.class_names(parsed["train"].labels)
    index = {name: i for i, name in enumerate(classes)}
    payload = {"classes": classes, "splits": {}, "errors": [], "sizes": {}}
    for split, part in parsed.items():
        unknown = [i for i, lab in enumerate(part.labels) if lab not in index]
        if unknown:
            raise DataError(f"{part.path}: {len(unknown)} row(s) have labels that train.csv does not have (first: "
                            f"'{part.labels[unknown[0]][:40]}'; train classes: {', '.join(classes[:20])})")
        side = part.images.shape[-1]
        if len(part.labels):
            payload["sizes"][f"{side}x{side} L"] = payload["sizes"].get(f"{side}x{side} L", 0) + len(part.labels)
        payload["splits"][split] = {"images": csvdata.convert(part.images, c, size),
                                    "labels": torch.tensor([index[lab] for lab in part.labels], dtype=torch.int64),
                                    "rows": torch.tensor(part.rows, dtype=torch.int64)}
        payload["errors"] += part.bad
    return payload
