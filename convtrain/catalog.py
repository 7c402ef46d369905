"""The built-in models as plain data, for commands that should not import torch.

`convtrain models`, `convtrain config keys` and the config's name checks read this table
instead of building every model (importing torch costs ~1.5 s before one line is printed); the data
sources have their own torch-free table, :data:`convtrain.data.sources.SOURCES`.
tests/ground/test_catalog_matches_registries.py checks every entry against the real registries (names, descriptions,
parameter counts, keyword defaults), so a change to a model fails that test until it is copied here.
"""

from __future__ import annotations

# (name, parameters with 10 classes and 1x28x28 input, description, keyword defaults), in name order
MODELS = [
    {"name": "article_cnn", "parameters": 421642,
     "description": "the article's CNN: 2x (3x3 conv, ReLU, max-pool 2), linear 3136-128, ReLU, linear 128-10",
     "kwargs": {"hidden": 128, "conv": "torch", "width1": 32, "width2": 64}},
    {"name": "article_cnn_scratch", "parameters": 421642,
     "description": "article_cnn with convtrain's from-scratch conv2d in place of nn.Conv2d", "kwargs": {"hidden": 128}},
    {"name": "bn_cnn", "parameters": 871082,
     "description": "VGG-style CNN: 2x2 (3x3 conv, BatchNorm, ReLU) + pools, dropout, linear 256",
     "kwargs": {"width": 32, "hidden": 256, "dropout": 0.25, "conv": "torch"}},
    {"name": "fast_cnn", "parameters": 215194,
     "description": "tuomaso's fast MNIST CNN: 5x5 conv 24, pool, 3x3 conv 32, pool, linear 256 (no padding)",
     "kwargs": {"width1": 24, "width2": 32, "hidden": 256, "kernel1": 5, "kernel2": 3, "stride1": 1, "conv": "torch"}},
    {"name": "lenet5", "parameters": 61706,
     "description": "LeNet-5: 5x5 conv 6, pool, 5x5 conv 16, pool, linear 120, 84 (61k parameters)",
     "kwargs": {"conv": "torch"}},
]
