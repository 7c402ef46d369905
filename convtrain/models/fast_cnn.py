"""A small CNN for the time-to-99% recipes, after tuomaso/train_mnist_fast.

That network (conv 24 5x5 -> max-pool -> conv 32 3x3 -> max-pool -> linear 256) reaches 99% on
MNIST in one epoch; here every width and the first kernel are arguments, so configs/speedrun.yaml
can trade them for time on a CPU.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Classifier, conv_class, flat_size
from .registry import CONV, Arg, register_model, width


@register_model("fast_cnn", "tuomaso's fast MNIST CNN: 5x5 conv 24, pool, 3x3 conv 32, pool, linear 256 (no padding)",
                args={"width1": width(4096), "width2": width(4096), "hidden": width(16384),
                      "kernel1": Arg(int, 1, 15), "kernel2": Arg(int, 1, 15), "stride1": Arg(int, 1, 2),
                      "conv": CONV})
def fast_cnn(num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
             width1: int = 24, width2: int = 32, hidden: int = 256, kernel1: int = 5, kernel2: int = 3,
             stride1: int = 1, conv: str = "torch") -> Classifier:
    Conv = conv_class(conv)
    # pool before ReLU: the same function (they commute), 4x less ReLU work (see cnn.py)
    first: list[tuple[str, nn.Module]] = [("conv1", Conv(in_channels, width1, kernel1, stride1))]
    if stride1 == 1:
        first.append(("pool1", nn.MaxPool2d(2)))
    features = nn.Sequential(OrderedDict([
        *first, ("relu1", nn.ReLU()),
        ("conv2", Conv(width1, width2, kernel2)), ("pool2", nn.MaxPool2d(2)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
    ]))
    n = flat_size(features, in_channels, input_size)  # 32 * 5 * 5 = 800 for 28x28 input
    features.add_module("fc1", nn.Linear(n, hidden))
    features.add_module("relu3", nn.ReLU())
    return Classifier(features, hidden, num_classes)
