"""convtrain: train, evaluate and fine-tune convolutional networks on MNIST-style data.

The command line (``convtrain ...``) is a thin layer over this package. The Python API
(:mod:`convtrain.api`, documented in docs/python-api.md) does what the commands do::

    import convtrain
    result = convtrain.train("smoke", overrides={"train.epochs": 1})   # -> TrainResult
    convtrain.evaluate(result)                  # -> Evaluation (accuracy, loss, per class, confusion)
    convtrain.predict(result, ["digit.png"])    # -> [Prediction] (class names and probabilities)
    convtrain.load(result)                      # -> LoadedModel (the nn.Module and its metadata)
    convtrain.finetune(result, data="my_letters")

plus :func:`load_config`, the model registry (:func:`create_model`, :func:`list_models`) and the
from-scratch convolution in :mod:`convtrain.ops`. ``import convtrain`` imports no torch; the first
call of a function does.

``convtrain.train`` is also the name of the training sub-package (``convtrain.train.runner``...).
Python binds a package's attribute to its sub-package once that is imported, so a plain function
named ``train`` would be replaced by the module as soon as anything imported ``convtrain.train.runner``.
Instead the sub-package itself is made callable here: calling it calls :func:`convtrain.api.train`,
whatever was imported before.
"""

from __future__ import annotations

import importlib
import types

from . import train as _train_package
from .version import __version__  # noqa: F401  (in __all__)

# Public names, resolved on first use (PEP 562): `convtrain --help` and `python -m convtrain`
# import this package first, and importing the model registry eagerly would import torch
# (about 1.5 s) before a single line of help is printed.
_EXPORTS = {
    "RunConfig": "config", "load_config": "config",
    "CheckpointError": "errors", "ConfigError": "errors", "ConvtrainError": "errors", "DataError": "errors",
    "create_model": "models", "list_models": "models", "register_model": "models",
    "finetune": "api", "evaluate": "api", "predict": "api", "load": "api",
    "TrainResult": "api", "Evaluation": "api", "Prediction": "api", "LoadedModel": "api",
}

__all__ = sorted([*_EXPORTS, "__version__", "train"])


class _CallableTrainPackage(types.ModuleType):
    """The class of the ``convtrain.train`` package: a module that trains when called."""

    def __call__(self, *args, **kwargs):
        from .api import train

        return train(*args, **kwargs)

    @property
    def __signature__(self):  # inspect.signature(convtrain.train) and notebooks' help show the function's
        import inspect

        from .api import train

        return inspect.signature(train)


_train_package.__class__ = _CallableTrainPackage


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'convtrain' has no attribute {name!r}")
