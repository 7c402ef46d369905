"""convtrain: train, evaluate and fine-tune convolutional networks on MNIST-style data.

The command line (``convtrain ...``) is a thin layer over this package: each command calls a function
of the Python API (:mod:`convtrain.api`, documented in docs/python-api.md), which does what the
commands do::

    import convtrain
    result = convtrain.train("smoke", overrides={"train.epochs": 1})   # -> TrainResult
    convtrain.evaluate(result)                  # -> Evaluation (accuracy, loss, per class, confusion)
    convtrain.evaluate(result, report=True).report()  # -> Report (precision/recall/F1, mistakes, calibration)
    convtrain.calibrate(result)                 # -> Calibration (temperature saved in the checkpoint)
    convtrain.predict(result, ["digit.png"])    # -> [Prediction] (class names and probabilities)
    convtrain.load(result)                      # -> LoadedModel (the nn.Module and its metadata)
    convtrain.finetune(result, data="my_letters")
    convtrain.resume(result, overrides={"train.epochs": 2})      # -> TrainResult (train --resume)
    convtrain.seeds("smoke", [0, 1, 2])         # -> SeedsResult (train --seeds: mean, std, min, max)

plus :func:`load_config`, the model registry (:func:`create_model`, :func:`list_models`) and the
from-scratch convolution in :mod:`convtrain.ops`. ``import convtrain`` imports no torch; the first
call of a function does.
"""

from __future__ import annotations

import importlib

from .version import __version__  # noqa: F401  (in __all__)

# Public names, resolved on first use (PEP 562): `convtrain --help` and `python -m convtrain`
# import this package first, and importing the model registry eagerly would import torch
# (about 1.5 s) before a single line of help is printed.
_EXPORTS = {
    "RunConfig": "config", "load_config": "config",
    "CheckpointError": "errors", "ConfigError": "errors", "ConvtrainError": "errors", "DataError": "errors",
    "create_model": "models", "list_models": "models", "register_model": "models",
    "train": "api", "finetune": "api", "resume": "api", "seeds": "api", "evaluate": "api", "predict": "api",
    "predict_to_file": "api", "load": "api", "calibrate": "api",
    "TrainResult": "api", "SeedsResult": "api", "Evaluation": "api", "Prediction": "api", "PredictionFile": "api",
    "LoadedModel": "api", "Hook": "api", "register_hook": "api", "Calibration": "api", "Report": "api",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'convtrain' has no attribute {name!r}")
