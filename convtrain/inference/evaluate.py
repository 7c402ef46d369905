"""Evaluate a checkpoint on its dataset's test or validation split, with nothing but the checkpoint.

A calibrated checkpoint's logits are divided by its temperature (the loss is that of the probabilities
every other reader gives; the accuracy is the same either way). With ``report=True`` every image's
logits are kept, with the split, for :meth:`~convtrain.inference.results.Evaluation.report`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts import checkpoint
from ..data.batches import TensorBatches, make_batches
from ..data.sources import build as build_data
from ..data.sources import find, registered_names
from ..data.types import seeded_subset
from ..errors import CheckpointError, ConfigError, did_you_mean
from ..training import distributed, engine
from .eval_keys import EVAL_KEYS, check_eval_overrides as _check_overrides  # noqa: F401 (EVAL_KEYS: re-exported)
from .results import Evaluation


def evaluate_checkpoint(path: str | Path, split: str = "test", data_root: str | None = None, device: str = "auto",
                        batch_size: int | None = None, dataset: str | None = None, data_path: str | None = None,
                        overrides: list[str] | tuple = (), report: bool = False) -> Evaluation:
    """Rebuild the model a checkpoint describes and evaluate it.

    The dataset, normalization, classes and (for ``split="val"``) the exact held-out validation
    images all come from the checkpoint. The data root is ``data_root``, else
    ``CONVTRAIN_DATA_ROOT``, else the root saved in the checkpoint's config. ``data_path`` (another
    folder, CSV...) is scored on its own test split, else on all its images (see
    :func:`convtrain.data.user_files.build_eval`). ``overrides`` are ``--set`` values of :data:`EVAL_KEYS`.
    Returns :func:`convtrain.training.engine.evaluate`'s numbers and what was evaluated, typed.
    """
    if split not in ("test", "val"):
        raise ConfigError(f"--split must be 'test' or 'val', got '{split}'")
    _check_overrides(overrides, data_path)
    ckpt = _open(path, split, data_path)
    if data_path is not None and dataset is not None:
        raise ConfigError("give --data (your own folder or csv) or --dataset (a registered one), not both")
    name = dataset or ckpt.dataset
    source = find(name)
    if data_path is not None or (dataset is None and source is not None and not source.registered):
        return _evaluate_files(ckpt, path, split, data_path, device, batch_size, overrides, report)
    if source is None or not source.registered:
        raise ConfigError(f"unknown dataset '{name}'{did_you_mean(name, registered_names())}")
    from ..config.schema import held_out_seed

    cfg = ckpt.config
    parsed = _config(ckpt, path, overrides)
    parsed.data.name, parsed.data.root = name, ckpt.data_root(data_root)  # a registered dataset: any data root
    bundle = source.build_eval(parsed.data, held_out_seed(parsed), split)
    if len(bundle.classes) != ckpt.num_classes:
        raise CheckpointError(f"{path} predicts {ckpt.num_classes} classes but dataset '{name}' has "
                              f"{len(bundle.classes)}; fine-tune it first (convtrain finetune)")
    split_data = bundle.test
    if overrides:  # data.test_subset: eval's own --set, not the saved run's; drawn as training draws it
        split_data = seeded_subset(split_data, parsed.data.test_subset, held_out_seed(parsed))
    shape = tuple(split_data.images.shape[1:])
    if shape != ckpt.image_shape:
        raise CheckpointError(f"{path} expects images of shape {list(ckpt.image_shape)}, "
                              f"dataset '{name}' has {list(shape)}")
    dev = distributed.resolve_device(device)
    channels_last = dev.type in ("cpu", "cuda")  # faster convolutions; the numbers are the same
    batches = TensorBatches(split_data.to(dev), batch_size or cfg["train"]["eval_batch_size"],
                            ckpt.normalizer(dev), shuffle=False, channels_last=channels_last)
    result, outputs = _score(ckpt, batches, split_data, dev, channels_last, report)
    return Evaluation.from_numbers(result, checkpoint=path, model=ckpt.model_name, dataset=name, split=split,
                                   epoch=ckpt.epoch, classes=list(ckpt.classes), temperature=ckpt.temperature,
                                   outputs=outputs)


class _Tempered(torch.nn.Module):
    """The checkpoint's model with its logits divided by its temperature (calibrate)."""

    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def _score(ckpt: checkpoint.Loaded, batches, split_data, dev: torch.device, channels_last: bool, report: bool):
    """engine.evaluate's numbers of the checkpoint's (tempered) model, and with ``report`` every image's logits."""
    model = ckpt.rebuild()
    if ckpt.temperature != 1.0:
        model = _Tempered(model, ckpt.temperature)
    model.to(dev, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    pieces = [] if report else None
    result = engine.evaluate(model, batches, ckpt.num_classes, dev, chunk=engine.eval_chunk(dev, None), outputs=pieces)
    if not report:
        return result, None
    from .report import Outputs

    return result, Outputs.gather(pieces, split_data)


def _open(path, split: str, data_path: str | None):
    """The checkpoint, or an ``.onnx`` export read through its metadata (scored on its dataset's test split, or
    on ``--data``: an export carries neither the run's held-out validation images nor its own-data root)."""
    if Path(path).suffix.lower() != ".onnx" or not Path(path).is_file():
        return checkpoint.open_checkpoint(path)
    from .onnx_model import OnnxExport

    export = OnnxExport(Path(path))
    source = find(export.dataset)
    if split == "val" or (data_path is None and (source is None or not source.registered)):
        raise ConfigError(f"{path} is an export of a '{export.dataset}' model: it carries no run config, so "
                          + ("--split val needs the checkpoint it came from" if split == "val" else
                             "give the images to score with --data, or evaluate the checkpoint it came from"))
    return export


def _config(ckpt: checkpoint.Loaded, path, overrides):
    """The checkpoint's saved config, with ``eval --set`` applied."""
    from ..config.load import load_config
    from ..config.schema import saved_raw

    where = f"{path} (saved config)"
    return load_config(None, list(overrides), base=saved_raw(ckpt.config_dict()), where=where)


def _evaluate_files(ckpt: checkpoint.Loaded, path, split: str, root: str | None, device: str,
                    batch_size: int | None, overrides=(), report: bool = False) -> Evaluation:
    """The user's own files: the ones the checkpoint was trained on (its saved config: same seed, same
    held-out splits), or ``root`` (``--data``), which must have exactly the checkpoint's classes and
    is scored on its own test split, else all its images (never a hold-out with the saved val_size)."""
    from ..config.schema import held_out_seed
    from ..data.detect import resolve
    from ..data.sources import build_eval

    cfg = _config(ckpt, path, overrides)
    if root is not None:
        name, found = resolve(root)
        cfg.data.name, cfg.data.root = name, str(found)
        bundle = build_eval(cfg.data, held_out_seed(cfg), split)
        split = bundle.info["split"]
    else:
        bundle = build_data(cfg.data, held_out_seed(cfg))
    if list(bundle.classes) != list(ckpt.classes):
        raise CheckpointError(f"{path} predicts the classes [{', '.join(ckpt.classes)}] but {cfg.data.root} has "
                              f"[{', '.join(bundle.classes)}]; evaluate on data with the same classes, or "
                              f"fine-tune the checkpoint on it (convtrain finetune --data {cfg.data.root})")
    if bundle.train.image_shape != ckpt.image_shape:
        raise CheckpointError(f"{path} expects images of shape {list(ckpt.image_shape)}; {cfg.data.root} is decoded "
                              f"as {list(bundle.train.image_shape)} (data.channels / data.image_size)")
    bundle.mean, bundle.std = list(ckpt.mean), list(ckpt.std)  # the checkpoint's normalization, not the data's
    dev = distributed.resolve_device(device)
    channels_last = dev.type in ("cpu", "cuda")
    split_data = bundle.val if split == "val" and root is None else bundle.test
    loader = "tensor" if bundle.tensor_resident else "dataloader"
    batches = make_batches(split_data.to(dev) if bundle.tensor_resident else split_data, bundle, loader,
                           batch_size or cfg.train.eval_batch_size, dev, shuffle=False, workers=cfg.data.workers,
                           channels_last=channels_last)
    result, outputs = _score(ckpt, batches, split_data, dev, channels_last, report)
    return Evaluation.from_numbers(result, checkpoint=path, model=ckpt.model_name,
                                   dataset=f"{cfg.data.name} {cfg.data.root}", split=split, epoch=ckpt.epoch,
                                   classes=list(ckpt.classes), notes=bundle.notes, skipped=bundle.skipped,
                                   temperature=ckpt.temperature, outputs=outputs)
