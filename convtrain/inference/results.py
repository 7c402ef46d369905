"""What using a trained checkpoint returns, as types: :class:`Evaluation` (``eval``) and its :class:`Report`
(``eval --report``), :class:`Calibration` (``calibrate``), :class:`Prediction` (``predict``, the server, the
API) and :class:`LoadedModel` (a checkpoint's model with its metadata).

The one typed view each front end reads: ``convtrain eval --json`` prints :meth:`Evaluation.as_json`,
``convtrain predict --json`` :meth:`Prediction.as_json`, the server's ``/v2/predict`` the same objects, the Python
API returns the objects themselves (:class:`Predictions`: a list with the probabilities as one array on request).
Importing this module imports no torch (``import convtrain`` stays quick); :meth:`LoadedModel.open` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

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
    macro_f1: float | None = None  # the mean F1 over the classes (convtrain.training.scores)
    balanced_accuracy: float | None = None  # the mean recall over the classes that have images
    temperature: float = field(default=1.0, repr=False)  # the checkpoint's calibration: loss is of softmax(z / T)
    # evaluate(..., report=True): every image's logits and label, and the split (for report())
    outputs: Any = field(default=None, repr=False, compare=False)
    report_folder: Path | None = field(default=None, repr=False)  # evaluate(..., report=DIR): where it was written

    @classmethod
    def from_numbers(cls, numbers: dict, *, checkpoint: Path, model: str, dataset: str, split: str, epoch: int,
                     classes: list[str], notes: list[str] | None = None, skipped: list[str] | None = None,
                     temperature: float = 1.0, outputs: Any = None) -> Evaluation:
        """From :func:`convtrain.training.engine.evaluate`'s numbers and what was evaluated."""
        return cls(accuracy=numbers["accuracy"], loss=numbers["loss"], num_samples=numbers["num_samples"],
                   per_class_accuracy=dict(zip(classes, numbers["per_class_accuracy"])),
                   confusion_matrix=numbers["confusion_matrix"], classes=list(classes), split=split,
                   dataset=dataset, checkpoint=Path(checkpoint), model=model, epoch=epoch,
                   seconds=numbers["seconds"], notes=notes, skipped=skipped, macro_f1=numbers.get("macro_f1"),
                   balanced_accuracy=numbers.get("balanced_accuracy"), temperature=temperature, outputs=outputs)

    def report(self, mistakes: int = 25) -> Report:
        """The full report (``eval --report``): per-class precision/recall/F1, averages, the confusion matrix
        and the most-confused pairs, the ``mistakes`` most confident mistakes and least confident correct
        images, calibration. Needs the per-image scores: ``convtrain.evaluate(..., report=True)``."""
        if self.outputs is None:
            raise ConfigError("this Evaluation kept no per-image scores: call convtrain.evaluate(..., report=True)")
        return self.outputs.report(self, mistakes)  # inference.report.Outputs: torch is imported there

    def as_json(self) -> dict:
        """``convtrain eval --json``'s object (its keys and their order are a documented format)."""
        files = {} if self.notes is None else {"notes": self.notes, "skipped": self.skipped}
        return {"checkpoint": str(self.checkpoint), "model": self.model, "dataset": self.dataset, "split": self.split,
                "epoch": self.epoch, "classes": list(self.classes), **files, "loss": self.loss,
                "accuracy": self.accuracy, "num_samples": self.num_samples,
                # class name -> accuracy, in class order: the API's shape (a name, never a position, says the class)
                "per_class_accuracy": {c: self.per_class_accuracy[c] for c in self.classes},
                "confusion_matrix": self.confusion_matrix, "seconds": self.seconds,
                "macro_f1": self.macro_f1, "balanced_accuracy": self.balanced_accuracy, "temperature": self.temperature}


@dataclass(frozen=True)
class Example:
    """One image of a report's gallery: where it came from, its true class, what the model said."""

    position: int  # its place in the evaluated split (file order)
    label: str  # the true class's name
    index: int  # the true class's index
    predicted_label: str
    predicted_index: int
    prob: float  # the probability of the predicted class: the model's confidence
    true_prob: float  # the probability it gave the true class
    source: dict  # {"path": FILE} (folders), {"file": CSV, "row": LINE}, {"file": F, "index": I} (.npz, MNIST)
    image: Any = field(repr=False, compare=False)  # uint8 [C, H, W]: the image as the model took it

    def as_json(self, image_file: str | None = None) -> dict:
        return {"position": self.position, "true": {"label": self.label, "index": self.index, "prob": self.true_prob},
                "predicted": {"label": self.predicted_label, "index": self.predicted_index, "prob": self.prob},
                "source": self.source, **({"image": image_file} if image_file else {})}


@dataclass(frozen=True)
class Report:
    """``eval --report``: a checkpoint's per-class truth on one split (report.json is :meth:`as_json`).

    ``per_class``: one ``{"label", "index", "precision", "recall", "f1", "support"}`` per class, in class
    order; ``macro`` / ``weighted``: ``{"precision", "recall", "f1"}``; ``top_k``: ``{"k": 5, "accuracy"}``
    when there are more than 5 classes; ``most_confused``: ``{"true", "predicted", "count", "rate"}`` (rate:
    the share of the true class's images), largest first; ``calibration``: ECE (``bins`` equal-width bins),
    MCE, NLL, Brier, the bins, and the same numbers without the checkpoint's temperature when it has one.
    """

    checkpoint: Path
    model: str
    dataset: str
    split: str
    epoch: int
    classes: list[str] = field(repr=False)
    num_samples: int
    temperature: float
    accuracy: float
    balanced_accuracy: float
    macro: dict
    weighted: dict = field(repr=False)
    per_class: list[dict] = field(repr=False)
    top_k: dict | None
    confusion_matrix: list[list[int]] = field(repr=False)
    most_confused: list[dict] = field(repr=False)
    mistakes: list[Example] = field(repr=False)
    least_confident_correct: list[Example] = field(repr=False)
    calibration: dict = field(repr=False)
    writer: Any = field(default=None, repr=False, compare=False)  # inference.report_files.write_report

    def as_json(self, images: dict[int, str] | None = None) -> dict:
        """report.json's object; ``images``: each gallery image's file (by position), when written."""
        images = images or {}
        return {"checkpoint": str(self.checkpoint), "model": self.model, "dataset": self.dataset, "split": self.split,
                "epoch": self.epoch, "classes": list(self.classes), "num_samples": self.num_samples,
                "temperature": self.temperature, "accuracy": self.accuracy,
                "balanced_accuracy": self.balanced_accuracy, "macro": self.macro, "weighted": self.weighted,
                "top_k": self.top_k, "per_class": self.per_class, "confusion_matrix": self.confusion_matrix,
                "most_confused": self.most_confused,
                "mistakes": [e.as_json(images.get(e.position)) for e in self.mistakes],
                "least_confident_correct": [e.as_json(images.get(e.position)) for e in self.least_confident_correct],
                "calibration": self.calibration}

    def write(self, folder: str | Path) -> list[Path]:
        """Write report.json, report.md, report.html (self-contained), the confusion matrix (CSV, PNG of counts
        and row-normalized), reliability.png and the gallery's images into ``folder``; returns the files."""
        return self.writer(self, Path(folder))


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
    temperature: float = 1.0  # probabilities are softmax(logits / temperature): convtrain calibrate sets it

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
                   epoch=ckpt.epoch, config=ckpt.config_dict(), path=Path(path), temperature=ckpt.temperature)


@dataclass(frozen=True)
class Calibration:
    """What ``convtrain calibrate`` did: the temperature fitted on the validation split (minimum NLL) and
    saved in ``checkpoint``, and ECE / NLL on the test split before and after it (accuracy is unchanged:
    the predicted class of every image is the same). ``record`` is what the checkpoint holds."""

    checkpoint: Path
    temperature: float
    val_images: int
    val_nll_before: float
    val_nll_after: float
    test_images: int | None = None  # None: the data has no test split
    test_accuracy: float | None = None
    test_ece_before: float | None = None
    test_ece_after: float | None = None
    test_nll_before: float | None = None
    test_nll_after: float | None = None
    data: str = ""  # what was read: the checkpoint's own data, or --data

    @classmethod
    def from_record(cls, record: dict, checkpoint: Path, data: str) -> Calibration:
        keys = {f for f in cls.__dataclass_fields__ if f not in ("checkpoint", "data")}
        return cls(checkpoint=Path(checkpoint), data=data, **{k: record.get(k) for k in keys})

    def as_json(self) -> dict:
        """``convtrain calibrate --json``'s object."""
        return {"checkpoint": str(self.checkpoint), "data": self.data, "temperature": self.temperature,
                "val_images": self.val_images, "val_nll": {"before": self.val_nll_before, "after": self.val_nll_after},
                "test_images": self.test_images, "test_accuracy": self.test_accuracy,
                "test_ece": {"before": self.test_ece_before, "after": self.test_ece_after},
                "test_nll": {"before": self.test_nll_before, "after": self.test_nll_after}}


@dataclass(frozen=True)
class PredictionFile:
    """What ``predict --output`` wrote: the file, its format (csv, json, kaggle) and its number of images."""

    path: Path
    format: str
    images: int
