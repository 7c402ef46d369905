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
from ..errors import ConfigError, DataError, OutputError
from ..training import distributed
from .results import LoadedModel, Prediction, PredictionFile, Predictions

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


def gather(images: Any, channels: int | None = None) -> Inputs:
    """``images``: one image or a list of them; each a path (a file, a folder of images, a file of many
    images such as an unlabelled CSV), encoded bytes, a PIL image, or an array / tensor holding one image or
    a batch (:func:`split_array`; ``channels``: the model's, which tells a 3-D array's shape apart). Images
    in memory are named ``<image N>``, in order."""
    if _is_array(images):
        images = split_array(images, channels)
    listed = list(images) if isinstance(images, (list, tuple)) or hasattr(images, "__next__") else [images]
    items: list[tuple[str, str, Any]] = []
    total = 0
    for img in listed:
        rows = sources.image_rows(Path(img)) if isinstance(img, (str, Path)) else None  # refuses a labelled file
        if rows is not None:
            items.append(("rows", str(rows.path), rows))
            total += rows.count
            continue
        if isinstance(img, (str, Path)):
            found = [("image", str(f), f) for f in expand_paths([img])]
        elif isinstance(img, (bytes, bytearray, memoryview)):
            found = [("image", f"<image {total}>", bytes(img))]
        elif _is_array(img):
            found = [("image", f"<image {total + i}>", _encode(one, total + i))
                     for i, one in enumerate(split_array(img, channels))]
        else:
            found = [("image", f"<image {total}>", _encode(img, total))]
        items += found
        total += len(found)
    return Inputs(items, total)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (bytes, str))


ARRAYS_TAKE = ("images: arrays and tensors hold one image (H, W), (H, W, C), (C, H, W) or a batch (N, H, W), "
               "(N, H, W, C), (N, C, H, W), with C = 1, 3 or 4, as uint8 (0..255) or float (0..1)")


def split_array(x: Any, channels: int | None = None) -> list:
    """A NumPy array or torch tensor as a list of uint8 ``(H, W, C)`` arrays, one per image.

    Its shape says what it holds: 2-D is one image; 3-D is one image when its last axis is 1, 3 or 4 (H, W, C)
    or its first axis is the model's ``channels`` (C, H, W), else a batch (N, H, W); 4-D is a batch,
    (N, C, H, W) or (N, H, W, C) by where the 1, 3 or 4 channels are (both: a tensor is N, C, H, W). Floats
    are pixels / 255 (0..1). Anything else is a ValueError or TypeError naming ``images``."""
    import numpy as np

    torch_like = hasattr(x, "detach")
    arr = x.detach().cpu().numpy() if torch_like else np.asarray(x)
    arr = _as_uint8(arr)
    chans = (1, 3, 4)
    if arr.ndim == 2:
        return [arr[:, :, None]]
    if arr.ndim == 3:
        if arr.shape[2] in chans and arr.shape[0] not in chans:
            return [arr]
        if channels is not None and arr.shape[0] == channels:
            return [arr.transpose(1, 2, 0)]
        return [img[:, :, None] for img in arr]
    if arr.ndim == 4:
        first, last = arr.shape[1] in chans, arr.shape[3] in chans
        if first and (not last or torch_like):
            arr = arr.transpose(0, 2, 3, 1)
        elif not last:
            raise ValueError(f"{ARRAYS_TAKE}; got a batch of shape {tuple(arr.shape)}: "
                             f"{arr.shape[1]} or {arr.shape[3]} channels?")
        return list(arr)
    raise ValueError(f"{ARRAYS_TAKE}; got {arr.ndim} dimensions, shape {tuple(arr.shape)}")


def _as_uint8(arr):
    """uint8 pixels from uint8, other integers in 0..255, bools, or floats in 0..1 (ValueError/TypeError else)."""
    import numpy as np

    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind not in "biuf":
        raise TypeError(f"{ARRAYS_TAKE}; got dtype {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.uint8)
    low, high = float(arr.min()), float(arr.max())
    if kind == "f":
        if not (0.0 <= low and high <= 1.0):  # also NaN
            hint = "pixels 0..255 as floats? divide by 255" if 0 <= low and high <= 255 else "normalized? give pixels / 255"
            raise ValueError(f"{ARRAYS_TAKE}; got {arr.dtype} values from {low:g} to {high:g} ({hint}, or uint8)")
        return np.rint(arr * 255).astype(np.uint8)
    if low < 0 or high > 255:
        raise ValueError(f"{ARRAYS_TAKE}; got {arr.dtype} values from {low:g} to {high:g}")
    return arr.astype(np.uint8)


def _encode(img: Any, i: int) -> bytes:
    """A PIL image or one uint8 ``(H, W, C)`` array as PNG bytes, so it goes through the same decoding as a file."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        if not _is_array(img):
            raise TypeError(f"images[{i}]: give a path, bytes, a PIL image, a NumPy array or a torch tensor; "
                            f"got {type(img).__name__}")
        arr = img if img.ndim == 3 and img.dtype.kind == "u" and img.dtype.itemsize == 1 else split_array(img)[0]
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
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
        for name, row, values, indices, every in zip(names, rows or [None] * len(names), top.values, top.indices,
                                                     probs.tolist()):
            ranked = tuple((int(i), self.classes[int(i)], float(p)) for p, i in zip(values, indices))
            found.append(Prediction(image=name, label=ranked[0][1], index=ranked[0][0], probability=ranked[0][2],
                                    probabilities={n: p for _, n, p in ranked}, ranked=ranked, row=row,
                                    scores=tuple(every)))
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


def _ready(checkpoint: str | Path | LoadedModel, images: Any, top_k: int | None, invert: str,
           device: str) -> tuple[Predictor, Inputs]:
    """The predictor and the gathered inputs: the invert choice, the checkpoint and the inputs are checked,
    in that order, before the model moves to ``device``."""
    check_invert(invert)
    if isinstance(checkpoint, LoadedModel):
        loaded = dataclasses.replace(checkpoint, model=copy.deepcopy(checkpoint.model))
    else:
        loaded = LoadedModel.open(checkpoint)
    inputs = gather(images, loaded.image_shape[0])
    return Predictor(loaded, device, top_k), inputs


def iter_predictions(checkpoint: str | Path | LoadedModel, images: Any, top_k: int | None = 3, invert: str = "auto",
                     device: str = "auto", batch_size: int = 256,
                     on_batch: Callable[[int, int], None] | None = None) -> Iterator[Prediction]:
    """``images`` (see :func:`gather`) classified by ``checkpoint`` (a file, or a loaded one, which is
    left as it is: its model is copied), ``batch_size`` at a time."""
    predictor, inputs = _ready(checkpoint, images, top_k, invert, device)
    return predictor.predictions(inputs, invert, batch_size=batch_size, on_batch=on_batch)


def predict_images(checkpoint: str | Path | LoadedModel, images: Any, top_k: int | None = 3, invert: str = "auto",
                   device: str = "auto", batch_size: int = 256, *, probabilities: bool = False) -> Predictions:
    """The top-k classes of each image (folders expanded, CSV rows, arrays), in order; with ``probabilities``,
    every class's probability as one array too (:class:`~convtrain.inference.results.Predictions`)."""
    predictor, inputs = _ready(checkpoint, images, top_k, invert, device)
    found = list(predictor.predictions(inputs, invert, batch_size=batch_size))
    probs = None
    if probabilities:
        import numpy as np

        probs = np.array([p.scores for p in found], dtype=np.float32).reshape(len(found), len(predictor.classes))
    return Predictions(found, predictor.classes, probs)


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
                    on_batch: Callable[[int, int], None] | None = None, overwrite: bool = False) -> PredictionFile:
    """Write one row per image to ``output``: csv (path, row, label, index, prob, top-k), json (a list of
    objects) or kaggle (``ImageId,Label`` for one unlabelled CSV, ids from 1). Returns what was written.
    ``output`` is checked by :func:`check_output` first (``overwrite``: replace a file that is not an
    earlier predictions file)."""
    output = Path(output)
    fmt = output_format(output, fmt)
    if fmt == "kaggle" and not (len(paths) == 1 and _is_csv(Path(paths[0]))):
        raise ConfigError("--format kaggle writes ImageId,Label for one unlabelled CSV (Kaggle's test.csv); "
                          "give exactly one .csv input")
    check_output(output, paths, checkpoint.path if isinstance(checkpoint, LoadedModel) else checkpoint, overwrite)
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: the folder {output.parent} does not exist")
    rows = iter_predictions(checkpoint, list(paths), top_k, invert, device, batch_size, on_batch)
    first = next(rows, None)  # errors in the inputs or the checkpoint surface before a file is opened
    n = 0
    try:
        with atomic.replacing(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            write = _WRITERS[fmt](f)
            for p in ([first] if first is not None else []):
                write(p)
                n += 1
            for p in rows:
                write(p)
                n += 1
            write(None)
    except OSError as exc:  # a read-only folder, a full disk: the temporary file is gone, the output untouched
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}; nothing was written there") from None
    return PredictionFile(output, fmt, n)


# the first line of each format predict_to_file writes (and wrote before `label` became the class name):
# an existing file that starts so is an earlier output
_HEADERS = (b"path,row,label,index,prob,topk", b"path,row,label,class,prob,topk", b"ImageId,Label")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pt2", ".ts", ".onnx", ".safetensors")


def check_output(output: Path, inputs: list[str | Path], checkpoint: str | Path | None, overwrite: bool) -> None:
    """``predict --output``: never an input of the same command (an image, a folder's image, the CSV being
    predicted), the checkpoint in use or any checkpoint, a folder, or anything but a regular file (those even
    with ``overwrite``); an existing file only when it is an earlier predictions file or with ``overwrite``.
    ConfigError (exit 2) naming the reason; nothing is read from the inputs or written."""
    where = f"--output {output}"
    for given in map(Path, inputs):
        if _same_or_inside(output, given):
            raise ConfigError(f"{where} is an input of this command ({given}); write the predictions to another file")
    if checkpoint is not None and _same_file(output, Path(checkpoint)):
        raise ConfigError(f"{where} is the checkpoint in use; write the predictions to another file")
    if output.is_file() and not output.is_symlink() and _is_checkpoint_file(output):
        raise ConfigError(f"{where} is a checkpoint (or an exported model); predictions never replace one, "
                          "give another name")
    problem = atomic.replaceable(output, ours=_is_predictions, overwrite=overwrite)
    if problem:
        raise ConfigError(f"{where} {problem}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _same_or_inside(output: Path, given: Path) -> bool:
    """``output`` is the input ``given``, or one of the images of the folder ``given``."""
    if _same_file(output, given):
        return True
    try:
        inside = given.is_dir() and output.resolve().is_relative_to(given.resolve())
    except OSError:
        return False
    return inside and output.suffix.lower() in IMAGE_SUFFIXES and output.exists()


def _is_checkpoint_file(path: Path) -> bool:
    """A model file by its name or its first bytes (torch's zip archive, a pickle), without loading it."""
    if path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    torch_zip = head.startswith(b"PK\x03\x04") and b".pkl" in head  # torch.save's archive starts with data.pkl
    return torch_zip or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))  # a pickle


def _is_predictions(head: bytes) -> bool:
    """The first bytes of a file predict_to_file wrote (csv, kaggle or json)."""
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    return first in _HEADERS or head.startswith(b'[\n{"path": ') or head == b"[\n]\n"


def _csv_writer(f):
    w = csv.writer(f)
    w.writerow(["path", "row", "label", "index", "prob", "topk"])  # label: the class name, as everywhere

    def write(p: Prediction | None):
        if p is not None:
            w.writerow([p.image, "" if p.row is None else p.row, p.label, p.index, f"{p.probability:.6f}",
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
