"""What using a trained checkpoint returns, as types: :class:`Evaluation` (``eval``), :class:`Prediction`
(``predict``, the server, the API) and :class:`LoadedModel` (a checkpoint's model with its metadata).

The one typed view each front end reads: ``convtrain eval --json`` prints :meth:`Evaluation.as_json`,
``convtrain predict --json`` :meth:`Prediction.as_json`, the server's ``/v2/predict`` the same objects, the Python
API returns the objects themselves (:class:`Predictions`: a list with the probabilities as one array on request).
Importing this module imports no torch (``import convtrain`` stays quick); :meth:`LoadedModel.open` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: torch is imported when a model is loaded
    from torch import nn


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint's numbers on one split. ``confusion_matrix[true][predicted]`` counts images."""

    accuracy: float
    loss: float
    num_samples: int
    per_class_accuracy: dict[str, float]  # class name -> accuracy, in the checkpoint's class order
    confusion_matrix: list[list[int]] = field(repr=False)
    classes: list[str] = field(repr=False)
    split: str = "test"  # test, val, or what was scored of another folder (e.g. "all images")
    dataset: str = ""
    checkpoint: Path | None = None
    model: str = ""
    epoch: int = 0
    seconds: float = field(default=0.0, repr=False)
    notes: list[str] | None = field(default=None, repr=False)  # folder/csv data: what reading it said
    skipped: list[str] | None = field(default=None, repr=False)  # folder/csv data: the files skipped

    @classmethod
    def from_numbers(cls, numbers: dict, *, checkpoint: Path, model: str, dataset: str, split: str, epoch: int,
                     classes: list[str], notes: list[str] | None = None,
                     skipped: list[str] | None = None) -> Evaluation:
        """From :func:`convtrain.training.engine.evaluate`'s numbers and what was evaluated."""
        return cls(accuracy=numbers["accuracy"], loss=numbers["loss"], num_samples=numbers["num_samples"],
                   per_class_accuracy=dict(zip(classes, numbers["per_class_accuracy"])),
                   confusion_matrix=numbers["confusion_matrix"], classes=list(classes), split=split,
                   dataset=dataset, checkpoint=Path(checkpoint), model=model, epoch=epoch,
                   seconds=numbers["seconds"], notes=notes, skipped=skipped)

    def as_json(self) -> dict:
        """``convtrain eval --json``'s object (its keys and their order are a documented format)."""
        files = {} if self.notes is None else {"notes": self.notes, "skipped": self.skipped}
        return {"checkpoint": str(self.checkpoint), "model": self.model, "dataset": self.dataset, "split": self.split,
                "epoch": self.epoch, "classes": list(self.classes), **files, "loss": self.loss,
                "accuracy": self.accuracy, "num_samples": self.num_samples,
                # class name -> accuracy, in class order: the API's shape (a name, never a position, says the class)
                "per_class_accuracy": {c: self.per_class_accuracy[c] for c in self.classes},
                "confusion_matrix": self.confusion_matrix, "seconds": self.seconds}


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the top class and the top-k classes' probabilities (highest first).

    The one vocabulary of predictions, here, in ``predict --json`` / ``--output`` and in the server's
    ``/v2/predict``: ``label`` is the class name, ``index`` its number in the checkpoint's class list,
    ``prob`` its probability, ``topk`` the top classes as ``{"label", "index", "prob"}``, highest first.
    """

    image: str  # the path, or ``<image N>`` for an image given in memory
    label: str  # the top class's name
    index: int  # the top class's index in the checkpoint's class list
    probability: float
    probabilities: dict[str, float] = field(repr=False)  # class name -> probability: the top k (the API: all)
    ranked: tuple[tuple[int, str, float], ...] = field(default=(), repr=False)  # the same as (index, name, prob)
    row: int | None = None  # an image read from an unlabelled CSV file: its data row (from 1, Kaggle's ImageId)
    scores: tuple[float, ...] = field(default=(), repr=False, compare=False)  # every class, in class order

    @property
    def prob(self) -> float:
        """The top class's probability (the vocabulary's name for :attr:`probability`)."""
        return self.probability

    def topk(self) -> list[dict]:
        """``[{"label", "index", "prob"}, ...]``, highest first: the ``topk`` of the JSON answers."""
        return [{"label": name, "index": i, "prob": prob} for i, name, prob in self.ranked]

    def as_json(self) -> dict:
        """``convtrain predict --json``'s object for this image (``path``, ``row`` for a CSV row, the top class)."""
        where = {"path": self.image, **({"row": self.row} if self.row is not None else {})}
        return {**where, "label": self.label, "index": self.index, "prob": self.probability, "topk": self.topk()}

    def as_v1_json(self) -> dict:
        """The server's answer before the one vocabulary (``/v1/predict``, kept for one release): ``label`` the
        class number, ``name`` the class name, ``topk`` as ``{"index", "name", "prob"}``."""
        return {"image": self.image, "label": self.index, "name": self.label,
                "topk": [{"index": i, "name": name, "prob": prob} for i, name, prob in self.ranked]}


class Predictions(list):
    """What :func:`convtrain.predict` returns: a list of :class:`Prediction`, in input order, with
    ``classes`` (the checkpoint's, in order) and, when asked for (``probabilities=True``), ``probabilities``:
    one float32 NumPy array ``[N, classes]``, row i for image i, column j for ``classes[j]``."""

    def __init__(self, items=(), classes: list[str] | None = None, probabilities=None) -> None:
        super().__init__(items)
        self.classes = list(classes or [])
        self.probabilities = probabilities


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint's model (CPU, eval mode, weights loaded) with what it was trained on."""

    model: nn.Module = field(repr=False)
    classes: list[str]
    model_name: str
    dataset: str
    image_shape: tuple[int, int, int]  # channels, height, width of one input
    mean: tuple[float, ...]  # the normalization: (pixel / 255 - mean) / std
    std: tuple[float, ...]
    epoch: int
    config: dict = field(repr=False)  # the run's resolved config
    path: Path | None = None

    @classmethod
    def open(cls, path: str | Path) -> LoadedModel:
        """Load and check a checkpoint file (``weights_only=True``, as every command does)."""
        from ..artifacts.checkpoint import open_checkpoint

        if Path(path).suffix.lower() == ".onnx" and Path(path).is_file():  # an export: onnxruntime and its metadata
            from .onnx_model import open_onnx

            return cls(**open_onnx(Path(path)))
        ckpt = open_checkpoint(path)
        return cls(model=ckpt.rebuild(), classes=list(ckpt.classes), model_name=ckpt.model_name,
                   dataset=ckpt.dataset, image_shape=ckpt.image_shape, mean=ckpt.mean, std=ckpt.std,
                   epoch=ckpt.epoch, config=ckpt.config_dict(), path=Path(path))


@dataclass(frozen=True)
class PredictionFile:
    """What ``predict --output`` wrote: the file, its format (csv, json, kaggle) and its number of images."""

    path: Path
    format: str
    images: int
