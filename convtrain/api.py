"""The Python API for notebooks and scripts: train, fine-tune, evaluate, predict, load.

Each function does what its command does, through the same library code: :func:`train` and
:func:`finetune` write the same run directory (``config.yaml``, ``metrics.csv``, checkpoints,
``results.json``, ``train.log``) and print the same progress as ``convtrain train``; they return
typed results instead of printing tables. Errors are :class:`convtrain.ConvtrainError` subclasses
with the message the command would print.

A checkpoint argument takes a ``.pt`` file, a run directory (its ``checkpoints/best.pt``) or a
:class:`TrainResult`. Importing this module imports no torch; each function imports what it needs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # for type checkers only: importing torch here would cost ~1.5 s on `import convtrain`
    from torch import nn

    from .artifacts.metrics import MetricsRow
    from .config.schema import RunConfig
    from .training.reporter import Reporter

PathLike = Union[str, Path]
Overrides = Union[Mapping[str, Any], Iterable[str]]


@dataclass(frozen=True)
class TrainResult:
    """What a training run returns: where it wrote, and its numbers (all accuracies are fractions)."""

    run_dir: Path | None  # None only on the processes other than rank 0 of a multi-process run (they write nothing)
    test_accuracy: float  # of best.pt, on the test split
    test_loss: float
    best_epoch: int  # chosen on the validation split, never on the test split
    best_val_acc: float
    epochs: list[MetricsRow] = field(repr=False)  # one row per epoch, as metrics.csv has them
    train_seconds: float = 0.0
    stopped_by: str | None = None  # early_stopping / stop_at / max_time; None: the whole schedule ran

    @property
    def checkpoint(self) -> Path:
        """The run's ``checkpoints/best.pt``."""
        if self.run_dir is None:
            from .errors import ConfigError

            raise ConfigError("this process wrote no run directory (only rank 0 of a multi-process run does)")
        return self.run_dir / "checkpoints" / "best.pt"

    def rows(self) -> list[dict]:
        """The per-epoch rows as plain dicts (e.g. for ``pandas.DataFrame(result.rows())``)."""
        return [r.as_dict() for r in self.epochs]


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint's numbers on one split. ``confusion_matrix[true][predicted]`` counts images."""

    accuracy: float
    loss: float
    num_samples: int
    per_class_accuracy: dict[str, float]
    confusion_matrix: list[list[int]] = field(repr=False)
    classes: list[str] = field(repr=False)
    split: str = "test"
    dataset: str = ""
    checkpoint: Path | None = None


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the top class and every class's probability (highest first)."""

    image: str  # the path, or ``<image N>`` for an image given in memory
    label: str  # the top class's name
    index: int  # the top class's index in the checkpoint's class list
    probability: float
    probabilities: dict[str, float] = field(repr=False)


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


# --------------------------------------------------------------------------------------------
# Training


def train(config: PathLike | Mapping | RunConfig | None = None, *, data: PathLike | None = None,
          overrides: Overrides = (), run_dir: PathLike | None = None, progress: bool = True) -> TrainResult:
    """Train a model, as ``convtrain train`` does, and return its numbers.

    ``config``: a YAML file, a packaged recipe's name (``"smoke"``, ``"mnist"``...), a mapping of
    config keys, a :class:`~convtrain.config.schema.RunConfig`, or None for the schema defaults (the
    article's setup). ``data``: your own labelled images, a folder (``DIR/train/<class>/*``) or a
    ``train.csv`` (``--data``). ``overrides``: ``["train.epochs=2", ...]`` or
    ``{"train.epochs": 2}`` (``--set``). ``run_dir``: a new or empty folder (default
    ``runs/<name>-<time>``). ``progress``: print the progress bar (a terminal, or Jupyter with
    ipywidgets) or plain lines and the epoch lines; ``train.log`` is written either way.

    Example: ``convtrain.train("smoke", overrides={"train.epochs": 1}).test_accuracy``
    """
    from .training.start import Start

    cfg = _resolve_config(config, data, overrides)
    return _run(Start(cfg, Path(run_dir) if run_dir is not None else None), progress)


def finetune(checkpoint: PathLike | TrainResult, config: PathLike | Mapping | RunConfig | None = None, *,
             data: PathLike | None = None, overrides: Overrides = (), run_dir: PathLike | None = None,
             progress: bool = True) -> TrainResult:
    """A new run from ``checkpoint``'s weights, as ``convtrain finetune`` does (the architecture
    comes from the checkpoint; the head is re-initialised when the classes differ). The other
    arguments are :func:`train`'s."""
    from .training.start import prepare_finetune

    cfg = _resolve_config(config, data, overrides)
    return _run(prepare_finetune(checkpoint_path(checkpoint), cfg, run_dir), progress)


def _resolve_config(config, data, overrides: Overrides) -> RunConfig:
    """defaults < config (file, recipe, mapping or RunConfig) < ``data`` < ``overrides``."""
    from .config.load import load_config
    from .config.schema import RunConfig, to_dict
    from .data.detect import data_overrides

    sets = _override_strings(overrides)
    named = config is not None
    if data is not None:
        sets = data_overrides(str(data), sets, named)
    if isinstance(config, RunConfig):
        return load_config(None, sets, base=to_dict(config), where="config")
    if isinstance(config, Mapping):
        return load_config(None, sets, base=dict(config), where="config")
    return load_config(config, sets)


def _override_strings(overrides: Overrides) -> list[str]:
    """``{"train.epochs": 2}`` -> ``["train.epochs=2"]``; values as JSON, which the YAML parser reads back as given."""
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return [str(o) for o in overrides]


def _run(start, progress: bool) -> TrainResult:
    from .training.runner import run

    reporter = _reporter(progress)
    result = run(start, reporter=reporter)
    test = result.test
    if progress and result.is_main:  # the command's closing lines (not in train.log, as with the command)
        reporter.console.print(f"best epoch {result.best_epoch} (val acc {result.best_val_acc:.4f}); "
                               f"test accuracy of best.pt: {test['accuracy']:.4f}", highlight=False, markup=False)
        reporter.console.print(f"run directory: {result.run_dir}", highlight=False, markup=False, soft_wrap=True)
    run_dir = Path(result.run_dir) if result.run_dir is not None else None
    return TrainResult(run_dir=run_dir, test_accuracy=float(test["accuracy"]), test_loss=float(test["loss"]),
                       best_epoch=result.best_epoch, best_val_acc=float(result.best_val_acc),
                       epochs=list(result.epochs), train_seconds=float(result.train_seconds),
                       stopped_by=result.stopped_by)


def _reporter(progress: bool) -> Reporter:
    """The CLI's reporter on this process's console (the run directory's train.log is attached to it
    either way); ``progress=False`` keeps the log and prints nothing."""
    from rich.console import Console

    from .training.reporter import Reporter

    if not progress:
        return Reporter(Console(quiet=True, force_terminal=False, force_jupyter=False))
    reporter = Reporter(Console())
    if reporter.console.is_jupyter and _has_ipywidgets():
        reporter.live = True  # rich draws its live bar in a notebook through an ipywidgets Output
    return reporter


def _has_ipywidgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


# --------------------------------------------------------------------------------------------
# Using a trained checkpoint


def checkpoint_path(checkpoint: PathLike | TrainResult) -> Path:
    """A checkpoint file: ``checkpoint`` itself, a run directory's ``checkpoints/best.pt``, ``"latest"``
    (the newest finished run under ``runs/``), or a result's; the same rule as every command."""
    if isinstance(checkpoint, TrainResult):
        return checkpoint.checkpoint
    from .artifacts.checkpoint_args import resolve_checkpoint

    return resolve_checkpoint(checkpoint)


def evaluate(checkpoint: PathLike | TrainResult, data: PathLike | None = None, *, split: str = "test",
             device: str = "auto") -> Evaluation:
    """Evaluate a checkpoint, as ``convtrain eval`` does: on its own dataset's ``split`` (``test`` or
    ``val``), or on ``data``, another labelled folder or CSV file with the same classes."""
    from .inference.evaluate import evaluate_checkpoint

    path = checkpoint_path(checkpoint)
    r = evaluate_checkpoint(path, split=split, device=device, data_path=str(data) if data is not None else None)
    classes = list(r["classes"])
    return Evaluation(accuracy=float(r["accuracy"]), loss=float(r["loss"]), num_samples=int(r["num_samples"]),
                      per_class_accuracy=dict(zip(classes, map(float, r["per_class_accuracy"]))),
                      confusion_matrix=[list(map(int, row)) for row in r["confusion_matrix"]], classes=classes,
                      split=r["split"], dataset=str(r["dataset"]), checkpoint=path)


def predict(checkpoint: PathLike | TrainResult | LoadedModel, images: Any, *, invert: str = "auto",
            device: str = "auto") -> list[Prediction]:
    """Classify images, as ``convtrain predict`` does (same preparation, same probabilities).

    ``images``: one image or a list of them; each a file path, a folder (its images, by name), PNG/JPEG
    bytes, a PIL image, or a uint8 array/tensor ``[H, W]``, ``[H, W, C]`` (numpy) or ``[C, H, W]``
    (torch). ``invert``: ``auto`` (MNIST-style: dark ink on a light border is inverted), ``yes``, ``no``.
    """
    import torch

    from .data.images import check_invert, image_to_input
    from .inference.predict import classify, effective_invert
    from .training.distributed import resolve_device

    check_invert(invert)
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load(checkpoint)
    invert = effective_invert(loaded.dataset, invert)
    named = _named_sources(images)
    channels, size = loaded.image_shape[0], loaded.image_shape[1:]
    batch = torch.stack([image_to_input(src, channels, size, invert, name=name) for name, src in named])
    dev = resolve_device(device)
    from .data.batches import Normalizer

    found = classify(loaded.model.to(dev), Normalizer(list(loaded.mean), list(loaded.std), dev), batch.to(dev),
                     loaded.classes, top_k=len(loaded.classes))
    loaded.model.to("cpu")
    return [Prediction(image=name, label=r["name"], index=r["label"], probability=r["topk"][0]["prob"],
                       probabilities={t["name"]: t["prob"] for t in r["topk"]}) for (name, _), r in zip(named, found)]


def _named_sources(images: Any) -> list[tuple[str, Any]]:
    """(name, path or encoded bytes) for each image; folders expanded like ``convtrain predict``."""
    from .inference.predict import expand_paths

    items = list(images) if isinstance(images, (list, tuple)) or hasattr(images, "__next__") else [images]
    out: list[tuple[str, Any]] = []
    for i, img in enumerate(items):
        if isinstance(img, (str, Path)):
            out.extend((str(p), p) for p in expand_paths([img]))
        elif isinstance(img, (bytes, bytearray, memoryview)):
            out.append((f"<image {i}>", bytes(img)))
        else:
            out.append((f"<image {i}>", _encode(img, i)))
    return out


def _encode(img: Any, i: int) -> bytes:
    """A PIL image or a uint8 array/tensor as PNG bytes, so it goes through the same decoding as a file."""
    from PIL import Image

    from .errors import DataError

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


def load(checkpoint: PathLike | TrainResult) -> LoadedModel:
    """The model a checkpoint holds (CPU, eval mode) with its classes, normalization and config.

    The checkpoint is loaded with ``weights_only=True`` and checked, like every command does.
    """
    from .artifacts.checkpoint import open_checkpoint

    path = checkpoint_path(checkpoint)
    ckpt = open_checkpoint(path)
    return LoadedModel(model=ckpt.rebuild(), classes=list(ckpt.classes), model_name=ckpt.model_name,
                       dataset=ckpt.dataset, image_shape=ckpt.image_shape, mean=ckpt.mean, std=ckpt.std,
                       epoch=ckpt.epoch, config=ckpt.config_dict(), path=path)
