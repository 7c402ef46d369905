"""Classify images with a checkpoint: one :class:`Predictor` for ``convtrain predict``, the Python API
and the web service.

A :class:`Predictor` is a checkpoint ready to answer: its model on a device, the normalization it was
trained with, its classes, its invert rule (:func:`effective_invert`) and how many classes to report.
An image of any size is made to look like the training data
(:func:`convtrain.data.images.image_to_input`), normalized with the checkpoint's mean/std, and the
model's top-k classes come back as :class:`~convtrain.inference.results.Prediction` objects, in input order.

Inputs are image files, folders (searched recursively for the suffixes training reads,
:data:`~convtrain.data.images.IMAGE_SUFFIXES`), files of many images that a data source reads
(:func:`convtrain.data.sources.image_rows`: an unlabelled CSV such as Kaggle's ``test.csv``, an
``.npz``'s images) and, from the Python API, images in memory (bytes, PIL images, uint8 arrays). They are read and classified ``batch_size`` at a time (:meth:`Predictor.predictions`),
so :func:`predict_to_file` writes a CSV, a JSON list or a Kaggle ``ImageId,Label`` submission of any
size in bounded memory, through :mod:`convtrain.atomic` (a file that is cut short never replaces an
earlier one).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..data import sources
from ..data.batches import Normalizer
from ..data.images import IMAGE_SUFFIXES, check_invert, image_to_input
from ..errors import ConfigError, DataError
from ..training import distributed
from .results import LoadedModel, Prediction, PredictionFile

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
    """What predict reads, in the order given: images (files, folders expanded, or in memory) and files of
    many images (an unlabelled CSV...)."""

    items: list[tuple[str, str, Any]]  # ("image", name, path or encoded bytes) or ("rows", name, ImageRows)
    total: int  # images in all (rows counted without holding them)


def gather(images: Any) -> Inputs:
    """``images``: one image or a list of them; each a path (a file, a folder of images, a file of many
    images such as an unlabelled CSV), encoded bytes, a PIL image or a uint8 array/tensor (named ``<image N>``)."""
    listed = list(images) if isinstance(images, (list, tuple)) or hasattr(images, "__next__") else [images]
    items: list[tuple[str, str, Any]] = []
    total = 0
    for i, img in enumerate(listed):
        rows = sources.image_rows(Path(img)) if isinstance(img, (str, Path)) else None  # refuses a labelled file
        if rows is not None:
            items.append(("rows", str(rows.path), rows))
            total += rows.count
            continue
        if isinstance(img, (str, Path)):
            found = [("image", str(f), f) for f in expand_paths([img])]
        elif isinstance(img, (bytes, bytearray, memoryview)):
            found = [("image", f"<image {i}>", bytes(img))]
        else:
            found = [("image", f"<image {i}>", _encode(img, i))]
        items += found
        total += len(found)
    return Inputs(items, total)


def _encode(img: Any, i: int) -> bytes:
    """A PIL image or a uint8 array/tensor as PNG bytes, so it goes through the same decoding as a file."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        arr = img.detach().cpu().numpy() if hasattr(img, "detach") else img
        if not hasattr(arr, "dtype") or str(arr.dtype) != "uint8" or arr.ndim not in (2, 3):
            raise DataError(f"image {i}: give a path, bytes, a PIL image or a uint8 array [H, W] / [H, W, C] "
                            f"/ tensor [C, H, W]; got {type(img).__name__}"
                            + (f" of {arr.dtype} {list(arr.shape)}" if hasattr(arr, "shape") else ""))
        if arr.ndim == 3 and hasattr(img, "detach"):  # torch's [C, H, W] -> [H, W, C]
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# The predictor


class Predictor:
    """One checkpoint ready to classify: its model on ``device`` (eval mode), the normalization it was
    trained with, its classes, its invert rule and ``top_k`` (None: every class). Probabilities are
    softmax(logits / temperature), the checkpoint's calibration (1.0 when never calibrated): the argmax,
    so the predicted class, is the same either way.

    It uses ``loaded.model`` itself, moved to ``device``; build it with :meth:`open` from a file. Thread-safe
    for classifying (the server shares one between its request threads): nothing changes after it is built.
    """

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "auto", top_k: int | None = None) -> None:
        self.loaded = loaded
        self.device = distributed.resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.normalize = Normalizer(list(loaded.mean), list(loaded.std), self.device)
        self.classes = list(loaded.classes)
        self.top_k = top_k

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "auto", top_k: int | None = None) -> Predictor:
        """The checkpoint file at ``path``, loaded and checked (``weights_only=True``)."""
        return cls(LoadedModel.open(path), device, top_k)

    @property
    def mnist_style(self) -> bool:
        return mnist_style(self.loaded.dataset)

    def invert_rule(self, invert: str) -> str:
        """What ``invert`` (auto, yes, no) means for this model's images: :func:`effective_invert`."""
        check_invert(invert)
        return effective_invert(self.loaded.dataset, invert)

    def prepare(self, source: Any, invert: str, name: str | None = None) -> torch.Tensor:
        """One image (a path or encoded bytes) as the model's uint8 ``[C, H, W]``; ``invert`` as
        :meth:`invert_rule` gave it."""
        channels, *size = self.loaded.image_shape
        return image_to_input(source, channels, tuple(size), invert, name=name)

    def classify(self, images: torch.Tensor | list[torch.Tensor], names: list[str], top_k: int | None = None,
                 rows: list[int | None] | None = None) -> list[Prediction]:
        """One :class:`Prediction` per uint8 image ``[C, H, W]`` (a list, or a batch ``[N, C, H, W]``);
        ``top_k`` (default: the predictor's) is capped at the number of classes."""
        batch = torch.stack(images) if isinstance(images, list) else images
        k = max(1, min(top_k or self.top_k or len(self.classes), len(self.classes)))
        with torch.inference_mode():
            logits = self.model(self.normalize(batch.to(self.device))).float()
            probs = torch.softmax(logits / self.loaded.temperature, dim=1).cpu()
        top = probs.topk(k, dim=1)
        found = []
        for name, row, values, indices in zip(names, rows or [None] * len(names), top.values, top.indices):
            ranked = tuple((int(i), self.classes[int(i)], float(p)) for p, i in zip(values, indices))
            found.append(Prediction(image=name, label=ranked[0][1], index=ranked[0][0], probability=ranked[0][2],
                                    probabilities={n: p for _, n, p in ranked}, ranked=ranked, row=row))
        return found

    def predictions(self, inputs: Inputs, invert: str = "auto", top_k: int | None = None, batch_size: int = 256,
                    on_batch: Callable[[int, int], None] | None = None) -> Iterator[Prediction]:
        """One :class:`Prediction` per image of ``inputs``, in order, classified ``batch_size`` at a time;
        ``on_batch(done, total)`` after each batch (a progress bar)."""
        invert, done = self.invert_rule(invert), 0
        for keys, images in self._batches(inputs, invert, batch_size):
            yield from self.classify(images, [k[0] for k in keys], top_k, [k[1] for k in keys])
            done += len(keys)
            if on_batch is not None:
                on_batch(done, inputs.total)

    def _batches(self, inputs: Inputs, invert: str, batch_size: int) -> Iterator[tuple[list, torch.Tensor]]:
        """``(keys, uint8 images)`` batches; a key is ``(name, None)`` for an image, ``(path, row)`` for a row
        of a file of many images."""
        keys, images = [], []
        for kind, name, source in inputs.items:
            if kind == "rows":
                if images:  # keep the input order: flush the files before the rows
                    yield keys, torch.stack(images)
                    keys, images = [], []
                for ids, x in source.read(batch_size, self.loaded.image_shape):
                    yield [(name, i) for i in ids], x
                continue
            keys.append((name, None))
            images.append(self.prepare(source, invert, name))
            if len(images) == batch_size:
                yield keys, torch.stack(images)
                keys, images = [], []
        if images:
            yield keys, torch.stack(images)


def iter_predictions(checkpoint: str | Path | LoadedModel, images: Any, top_k: int | None = 3, invert: str = "auto",
                     device: str = "auto", batch_size: int = 256,
                     on_batch: Callable[[int, int], None] | None = None) -> Iterator[Prediction]:
    """``images`` (see :func:`gather`) classified by ``checkpoint`` (a file, or a loaded one, which is
    left as it is: its model is copied), ``batch_size`` at a time. The invert choice, the checkpoint and
    the inputs are checked, in that order, before the model moves to ``device``."""
    check_invert(invert)
    if isinstance(checkpoint, LoadedModel):
        loaded = dataclasses.replace(checkpoint, model=copy.deepcopy(checkpoint.model))
    else:
        loaded = LoadedModel.open(checkpoint)
    inputs = gather(images)
    return Predictor(loaded, device, top_k).predictions(inputs, invert, batch_size=batch_size, on_batch=on_batch)


def predict_images(checkpoint: str | Path | LoadedModel, images: Any, top_k: int | None = 3, invert: str = "auto",
                   device: str = "auto", batch_size: int = 256) -> list[Prediction]:
    """The top-k classes of each image (folders expanded, CSV rows), in order."""
    return list(iter_predictions(checkpoint, images, top_k, invert, device, batch_size))


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


def predict_to_file(checkpoint: str | Path | LoadedModel, paths: list[str | Path], output: str | Path, fmt: str = "auto",
                    top_k: int = 3, invert: str = "auto", device: str = "auto", batch_size: int = 256,
                    on_batch: Callable[[int, int], None] | None = None) -> PredictionFile:
    """Write one row per image to ``output``: csv (path, row, label, class, prob, top-k), json (a list of
    objects) or kaggle (``ImageId,Label`` for one unlabelled CSV, ids from 1). Returns what was written."""
    output = Path(output)
    fmt = output_format(output, fmt)
    if fmt == "kaggle" and not (len(paths) == 1 and _is_csv(Path(paths[0]))):
        raise ConfigError("--format kaggle writes ImageId,Label for one unlabelled CSV (Kaggle's test.csv); "
                          "give exactly one .csv input")
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: the folder {output.parent} does not exist")
    rows = iter_predictions(checkpoint, list(paths), top_k, invert, device, batch_size, on_batch)
    first = next(rows, None)  # errors in the inputs or the checkpoint surface before a file is opened
    n = 0
    with atomic.replacing(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        write = _WRITERS[fmt](f)
        for p in ([first] if first is not None else []):
            write(p)
            n += 1
        for p in rows:
            write(p)
            n += 1
        write(None)
    return PredictionFile(output, fmt, n)


def _csv_writer(f):
    w = csv.writer(f)
    w.writerow(["path", "row", "label", "class", "prob", "topk"])

    def write(p: Prediction | None):
        if p is not None:
            w.writerow([p.image, "" if p.row is None else p.row, p.index, p.label, f"{p.probability:.6f}",
                        ";".join(f"{name}:{prob:.6f}" for _, name, prob in p.ranked)])
    return write


def _json_writer(f):
    f.write("[")
    state = {"first": True}

    def write(p: Prediction | None):
        if p is None:
            f.write("\n]\n")
            return
        f.write(("\n" if state["first"] else ",\n") + json.dumps(p.as_json()))
        state["first"] = False
    return write


def _kaggle_writer(f):
    w = csv.writer(f)
    w.writerow(["ImageId", "Label"])

    def write(p: Prediction | None):
        if p is not None:
            w.writerow([p.row, p.label])
    return write


_WRITERS = {"csv": _csv_writer, "json": _json_writer, "kaggle": _kaggle_writer}
