"""Weight-initialization schemes for conv and linear layers, chosen by ``model.init``."""

from __future__ import annotations

from torch import nn

from .. import ops

_LAYERS = (nn.Conv2d, nn.Linear, ops.Conv2d)


def apply_init(model: nn.Module, scheme: str) -> None:
    """Re-initialise every conv and linear layer; ``default`` keeps PyTorch's own initialization."""
    if scheme == "default":
        return
    for module in model.modules():
        if not isinstance(module, _LAYERS):
            continue
        w = module.weight
        if scheme == "kaiming_normal":
            nn.init.kaiming_normal_(w, nonlinearity="relu")
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(w, nonlinearity="relu")
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(w)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(w)
        elif scheme == "normal":
            nn.init.normal_(w, 0.0, 0.01)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
