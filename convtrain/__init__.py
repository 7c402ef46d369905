"""convtrain: train, evaluate and fine-tune convolutional networks on MNIST-style data.

The command line (``convtrain ...``) is a thin layer over this package; everything it does is
importable: :func:`load_config` and :func:`run` for a training run, :func:`evaluate_checkpoint`
for evaluation, the model registry, and the from-scratch convolution in :mod:`convtrain.ops`.
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
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'convtrain' has no attribute {name!r}")
