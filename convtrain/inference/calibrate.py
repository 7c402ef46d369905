"""``convtrain calibrate``: fit a checkpoint's temperature on a validation split and save it in the
checkpoint (:mod:`convtrain.training.calibration` does the fitting).

The images come from the checkpoint's own data (the exact validation split its run held out, and its
test split), or from ``--data``: other labelled images with the same classes, which must have a
validation split of their own on disk (a ``val/`` folder, ``val.csv``, ``x_val``): the temperature is
fitted on images the model was not trained on, and a folder given without one may well be the
training data. The checkpoint is written again atomically with the same weights (the bytes of every
tensor unchanged) and a ``calibration`` record; nothing is written when anything is refused.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import checkpoint
from ..data.sources import build as build_data
from ..data.sources import find
from ..data.types import DataBundle
from ..errors import CheckpointError, ConfigError
from ..training import calibration, distributed
from .results import Calibration


def calibrate_checkpoint(path: str | Path, data_path: str | None = None, device: str = "auto",
                         data_root: str | None = None, batch_size: int | None = None) -> Calibration:
    """Fit the temperature of the checkpoint at ``path``, save it there, and return the numbers."""
    path = Path(path)
    raw = checkpoint.load(path)
    ckpt = checkpoint.Loaded.from_dict(raw, path, validated=True)
    bundle, what, cfg = _data(ckpt, path, data_path, data_root)
    dev = distributed.resolve_device(device)
    model = ckpt.rebuild().to(dev)
    size = batch_size or cfg.train.eval_batch_size
    val = calibration.logits_of(model, calibration.split_batches(bundle.val, bundle, size, dev, cfg.data.workers), dev)
    test = calibration.logits_of(model, calibration.split_batches(bundle.test, bundle, size, dev, cfg.data.workers),
                                 dev) if bundle.test is not None else None
    record = calibration.fit(val, test)
    checkpoint.save(checkpoint.with_calibration(raw, record), path)
    return Calibration.from_record(record, path, what)


def _data(ckpt: checkpoint.Loaded, path: Path, data_path: str | None, data_root: str | None):
    """The validation and test splits to use (test None when ``--data`` has none), what they are, the config."""
    from ..config.load import load_config
    from ..config.schema import held_out_seed, saved_raw

    cfg = load_config(None, [], base=saved_raw(ckpt.config_dict()), where=f"{path} (saved config)")
    if data_path is not None:
        from ..data.detect import resolve

        cfg.data.name, found = resolve(data_path)
        cfg.data.root = str(found)
        # only its own val/ and test/ splits are used: a split missing on disk is held out of train/ (one
        # image, whatever the run's sizes were) and then refused (val) or left out (test) below
        cfg.data.val_size = cfg.data.test_size = 1
    else:
        source = find(cfg.data.name)
        if source is None:
            raise ConfigError(f"{path} was trained on data '{cfg.data.name}', which this convtrain does not read; "
                              "calibrate it on labelled data with --data")
        if source.registered:
            cfg.data.root = ckpt.data_root(data_root)
            cfg.data.test_subset = None  # as eval scores a registered dataset: its whole test split
    cfg.data.train_subset = None  # the held-out splits do not depend on it; it would only cost decoding
    bundle = build_data(cfg.data, held_out_seed(cfg))
    held_out = bundle.info.get("held_out", []) if data_path is not None else []
    if "val" in held_out:
        raise ConfigError(f"calibrate --data {data_path}: it has no validation split of its own (a val/ folder, "
                          "val.csv or x_val); the temperature must be fitted on images the model was not trained "
                          "on: add one, or drop --data to use the run's own validation split")
    _check_fits(ckpt, path, bundle, cfg.data.root)
    bundle.mean, bundle.std = list(ckpt.mean), list(ckpt.std)  # the checkpoint's normalization, not the data's
    if "test" in held_out:
        bundle.test = None  # only images of the data's own test split measure the fit
    what = f"{cfg.data.name} {cfg.data.root}" if data_path is not None else f"{cfg.data.name} (the run's own splits)"
    return bundle, what, cfg


def _check_fits(ckpt: checkpoint.Loaded, path: Path, bundle: DataBundle, root: str) -> None:
    if list(bundle.classes) != list(ckpt.classes):
        raise CheckpointError(f"{path} predicts the classes [{', '.join(ckpt.classes)}] but {root} has "
                              f"[{', '.join(bundle.classes)}]; calibrate on data with the same classes")
    if bundle.train.image_shape != ckpt.image_shape:
        raise CheckpointError(f"{path} expects images of shape {list(ckpt.image_shape)}; {root} is decoded as "
                              f"{list(bundle.train.image_shape)} (data.channels / data.image_size)")
