"""Classify images with a checkpoint: one :func:`classify` for ``convtrain predict`` and the web service.

An image of any size is made to look like the training data (:func:`convtrain.data.images.image_to_input`),
normalized with the checkpoint's mean/std, and the model's top-k classes come back with their
probabilities, in input order.

Inputs are image files, folders (searched recursively for the suffixes training reads,
:data:`~convtrain.data.images.IMAGE_SUFFIXES`) and unlabelled CSV files (``pixel0,...``, one image
per row, as Kaggle's ``test.csv``). They are read and classified ``batch_size`` at a time
(:func:`iter_predictions`), so :func:`predict_to_file` writes a CSV, a JSON list or a Kaggle
``ImageId,Label`` submission of any size in bounded memory, through :mod:`convtrain.atomic`
(a file that is cut short never replaces an earlier one).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import atomic
from ..artifacts import checkpoint
from ..data import sources
from ..data.images import IMAGE_SUFFIXES, check_invert, image_to_input
from ..data.types import ImageRows
from ..errors import ConfigError, DataError
from ..training import distributed

FORMATS = ("auto", "csv", "json", "kaggle")


def _is_csv(p: Path) -> bool:
    return p.suffix.lower() == ".csv" and p.is_file()


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a directory contributes its image files, recursively, sorted by path (hidden
    files and folders skipped)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in directory {p} or its sub-folders")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"image not found: {p}")
    return out


def classify(model: torch.nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
             classes: list[str] | tuple[str, ...], top_k: int) -> list[dict]:
    """Top-k of uint8 ``images [N, C, H, W]``: ``{"label", "name", "topk": [{"index", "name", "prob"}]}`` each.

    ``images`` must be on the model's device; ``top_k`` is capped at the number of classes.
    """
    k = max(1, min(top_k, len(classes)))
    with torch.inference_mode():
        probs = torch.softmax(model(normalize(images)).float(), dim=1).cpu()
    top = probs.topk(k, dim=1)
    return [{"label": int(idx[0]), "name": classes[int(idx[0])],
             "topk": [{"index": int(i), "name": classes[int(i)], "prob": float(p)} for p, i in zip(pr, idx)]}
            for pr, idx in zip(top.values, top.indices)]


def mnist_style(dataset: str) -> bool:
    """A model of a registered MNIST-style dataset (light ink on dark): only its ``invert=auto`` turns
    dark-on-light pictures around."""
    source = sources.find(dataset)
    return source is not None and source.mnist_style


def effective_invert(dataset: str, invert: str) -> str:
    """``--invert auto`` means ``no`` for a model of the user's own images (folder, csv...): it saw them as
    they are, with no MNIST-style inversion. The one rule for predict, the Python API and the server."""
    return "no" if invert == "auto" and not mnist_style(dataset) else invert


@dataclass
class Inputs:
    """What predict reads: image files (folders expanded) and files of many images (an unlabelled CSV...),
    in the order given."""

    items: list[Path | ImageRows]  # an image file, or a file of many images
    total: int  # images in all (rows counted without holding them)


def gather(paths: list[str | Path]) -> Inputs:
    items: list[Path | ImageRows] = []
    total = 0
    for p in map(Path, paths):
        rows = sources.image_rows(p)  # a labelled or malformed file is refused here, before anything runs
        if rows is not None:
            items.append(rows)
            total += rows.count
        else:
            found = expand_paths([p])
            items += found
            total += len(found)
    return Inputs(items, total)


def _batches(inputs: Inputs, ckpt: checkpoint.Loaded, invert: str, batch_size: int) -> Iterator[tuple[list, torch.Tensor]]:
    """``(keys, uint8 images)`` batches; a key is ``{"path"}`` for a file, ``{"path", "row"}`` for a row of a
    file of many images."""
    c, (h, w) = ckpt.in_channels, ckpt.input_size
    keys, images = [], []
    for item in inputs.items:
        if isinstance(item, ImageRows):
            if images:  # keep the input order: flush the files before the rows
                yield keys, torch.stack(images)
                keys, images = [], []
            for ids, x in item.read(batch_size, (c, h, w)):
                yield [{"path": str(item.path), "row": i} for i in ids], x
            continue
        keys.append({"path": str(item)})
        images.append(image_to_input(item, c, (h, w), invert))
        if len(images) == batch_size:
            yield keys, torch.stack(images)
            keys, images = [], []
    if images:
        yield keys, torch.stack(images)


def iter_predictions(ckpt_path: str | Path, paths: list[str | Path], top_k: int = 3, invert: str = "auto",
                     device: str = "auto", batch_size: int = 256,
                     on_batch: Callable[[int, int], None] | None = None) -> Iterator[dict]:
    """One dict per image, in input order, classified ``batch_size`` at a time; ``on_batch(done, total)``
    after each batch (a progress bar)."""
    check_invert(invert)
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    invert = effective_invert(ckpt.dataset, invert)
    inputs = gather(paths)
    model = ckpt.rebuild()
    dev = distributed.resolve_device(device)
    model.to(dev)
    normalize, done = ckpt.normalizer(dev), 0
    for keys, images in _batches(inputs, ckpt, invert, batch_size):
        for key, r in zip(keys, classify(model, normalize, images.to(dev), ckpt.classes, top_k)):
            yield {**key, "label": r["label"], "name": r["name"], "prob": r["topk"][0]["prob"], "topk": r["topk"]}
        done += len(keys)
        if on_batch is not None:
            on_batch(done, inputs.total)


def predict_images(ckpt_path: str | Path, paths: list[str | Path], top_k: int = 3, invert: str = "auto",
                   device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image (folders expanded, CSV rows); one dict per image."""
    return list(iter_predictions(ckpt_path, paths, top_k, invert, device))


def output_format(output: Path, fmt: str) -> str:
    """``--format``: auto picks csv or json from the output's suffix."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if fmt != "auto":
        return fmt
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"--output {output}: name a .csv or .json file, or give --format csv|json|kaggle")
    return suffix[1:]


def predict_to_file(ckpt_path: str | Path, paths: list[str | Path], output: str | Path, fmt: str = "auto",
                    top_k: int = 3, invert: str = "auto", device: str = "auto", batch_size: int = 256,
                    on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Write one row per image to ``output``: csv (path, row, label, class, prob, top-k), json (a list of
    objects) or kaggle (``ImageId,Label`` for one unlabelled CSV, ids from 1). Returns what was written."""
    output = Path(output)
    fmt = output_format(output, fmt)
    if fmt == "kaggle" and not (len(paths) == 1 and _is_csv(Path(paths[0]))):
        raise ConfigError("--format kaggle writes ImageId,Label for one unlabelled CSV (Kaggle's test.csv); "
                          "give exactly one .csv input")
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: the folder {output.parent} does not exist")
    rows = iter_predictions(ckpt_path, paths, top_k, invert, device, batch_size, on_batch)
    first = next(rows, None)  # errors in the inputs or the checkpoint surface before a file is opened
    n = 0
    with atomic.replacing(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        write = _WRITERS[fmt](f)
        for r in ([first] if first is not None else []):
            write(r)
            n += 1
        for r in rows:
            write(r)
            n += 1
        write(None)
    return {"output": str(output), "format": fmt, "images": n}


def _csv_writer(f):
    w = csv.writer(f)
    w.writerow(["path", "row", "label", "class", "prob", "topk"])

    def write(r):
        if r is not None:
            w.writerow([r["path"], r.get("row", ""), r["label"], r["name"], f"{r['prob']:.6f}",
                        ";".join(f"{t['name']}:{t['prob']:.6f}" for t in r["topk"])])
    return write


def _json_writer(f):
    f.write("[")
    state = {"first": True}

    def write(r):
        if r is None:
            f.write("\n]\n")
            return
        f.write(("\n" if state["first"] else ",\n") + json.dumps(r))
        state["first"] = False
    return write


def _kaggle_writer(f):
    w = csv.writer(f)
    w.writerow(["ImageId", "Label"])

    def write(r):
        if r is not None:
            w.writerow([r["row"], r["name"]])
    return write


_WRITERS = {"csv": _csv_writer, "json": _json_writer, "kaggle": _kaggle_writer}
