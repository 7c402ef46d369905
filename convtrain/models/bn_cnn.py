"""A small VGG-style CNN with BatchNorm: the strong recipe (99.5%+ on MNIST with augmentation)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Classifier, conv_class, flat_size
from .registry import CONV, DROPOUT, register_model, width


def _block(Conv: type[nn.Module], cin: int, cout: int, name: str, pool: str | None = None) -> list[tuple[str, nn.Module]]:
    # bias=False: the BatchNorm right after has its own shift, a conv bias would be redundant
    layers = [(f"{name}_conv", Conv(cin, cout, 3, padding=1, bias=False)), (f"{name}_bn", nn.BatchNorm2d(cout))]
    if pool:  # pool before ReLU: the same function (they commute), 4x less ReLU work (see cnn.py)
        layers.append((pool, nn.MaxPool2d(2)))
    return layers + [(f"{name}_relu", nn.ReLU())]


@register_model("bn_cnn", "VGG-style CNN: 2x2 (3x3 conv, BatchNorm, ReLU) + pools, dropout, linear 256",
                args={"width": width(1024), "hidden": width(16384), "dropout": DROPOUT, "conv": CONV})
def bn_cnn(num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
           width: int = 32, hidden: int = 256, dropout: float = 0.25, conv: str = "torch") -> Classifier:
    Conv = conv_class(conv)
    layers = [*_block(Conv, in_channels, width, "b1a"), *_block(Conv, width, width, "b1b", pool="pool1"),
              *_block(Conv, width, 2 * width, "b2a"), *_block(Conv, 2 * width, 2 * width, "b2b", pool="pool2"),
              ("flatten", nn.Flatten())]
    features = nn.Sequential(OrderedDict(layers))
    n = flat_size(features, in_channels, input_size)
    features.add_module("drop1", nn.Dropout(dropout))
    features.add_module("fc1", nn.Linear(n, hidden, bias=False))
    features.add_module("fc1_bn", nn.BatchNorm1d(hidden))
    features.add_module("relu", nn.ReLU())
    features.add_module("drop2", nn.Dropout(dropout))
    return Classifier(features, hidden, num_classes)
