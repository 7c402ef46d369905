"""The head contract every model shares, and the helpers model files build on."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .. import ops
from . import shapes


class Classifier(nn.Module):
    """``backbone`` maps images to a flat feature vector; ``head`` is one ``nn.Linear`` to the classes.

    Parameter names therefore start with ``backbone.`` or ``head.``, which is what fine-tuning
    freezes, re-initialises and gives its own learning rate, for any registered model.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def reset_head(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes."""
        ref = self.head.weight
        self.head = nn.Linear(self.head.in_features, num_classes, device=ref.device, dtype=ref.dtype)

    def freeze(self, prefixes: list[str]) -> list[str]:
        """Stop training every parameter whose name starts with one of ``prefixes``.

        A normalization layer whose parameters are all frozen also keeps its running statistics
        (it stays in eval mode), so a frozen feature extractor is truly unchanged by training.
        Returns the frozen parameter names; a prefix that matches nothing raises ValueError.
        """
        names = [n for n, _ in self.named_parameters()]
        for prefix in prefixes:
            if not any(n == prefix or n.startswith(prefix.rstrip(".") + ".") for n in names):
                tops = sorted({n.rsplit(".", 1)[0] for n in names})
                raise ValueError(f"'{prefix}' matches no parameter; prefixes include: backbone, head, {', '.join(tops)}")
        frozen = []
        for name, param in self.named_parameters():
            if any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes):
                param.requires_grad_(False)
                frozen.append(name)
        self._frozen_norms = [m for m in self.modules()
                              if isinstance(m, nn.modules.batchnorm._NormBase)
                              and any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())]
        self.train(self.training)
        return frozen

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        for module in getattr(self, "_frozen_norms", ()):
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


CONV_IMPLS = {"torch": nn.Conv2d, "scratch": ops.Conv2d}


def conv_class(impl: str) -> type[nn.Module]:
    """The conv layer class for ``impl`` ('torch' = nn.Conv2d, 'scratch' = convtrain.ops.Conv2d)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv must be one of {', '.join(CONV_IMPLS)}, got {impl!r}")
    return CONV_IMPLS[impl]


@torch.no_grad()
def flat_size(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> int:
    """Length of ``features``' flattened output, so no model hard-codes 9216: one dry run on a real
    device; on the meta device (config checks) worked out from the layers' settings (shapes.py)."""
    n = None
    if any(p.is_meta for p in features.parameters()):
        with contextlib.suppress(shapes.Unknown):
            n = math.prod(shapes.output_shape(features, (in_channels, *input_size)))
    if n is None:
        was_training = features.training
        features.eval()  # BatchNorm must not update its running stats on the dummy input
        out = features(torch.zeros(1, in_channels, *input_size))
        features.train(was_training)
        n = out.flatten(1).shape[1]
    if n == 0:
        raise ValueError(f"the feature map shrinks to nothing for {input_size[0]}x{input_size[1]} input")
    return n
