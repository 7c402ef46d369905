"""LeNet-5 (LeCun et al., 1998), with ReLU and max-pooling as is usual today."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Classifier, conv_class, flat_size
from .registry import CONV, register_model


@register_model("lenet5", "LeNet-5: 5x5 conv 6, pool, 5x5 conv 16, pool, linear 120, 84 (61k parameters)",
                args={"conv": CONV})
def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
           conv: str = "torch") -> Classifier:
    Conv = conv_class(conv)
    features = nn.Sequential(OrderedDict(
        # padding 2 turns a 28x28 MNIST digit into the 32x32 field LeNet-5 was designed for
        # pool before ReLU: the same function (they commute), with 4x less ReLU work (see cnn.py)
        conv1=Conv(in_channels, 6, 5, padding=2), pool1=nn.MaxPool2d(2), relu1=nn.ReLU(),
        conv2=Conv(6, 16, 5), pool2=nn.MaxPool2d(2), relu2=nn.ReLU(),
        flatten=nn.Flatten(),
    ))
    n = flat_size(features, in_channels, input_size)
    features.add_module("fc1", nn.Linear(n, 120))
    features.add_module("relu3", nn.ReLU())
    features.add_module("fc2", nn.Linear(120, 84))
    features.add_module("relu4", nn.ReLU())
    return Classifier(features, 84, num_classes)
