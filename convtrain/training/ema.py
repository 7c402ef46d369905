"""Weight EMA (``train.ema``), like timm's ``--model-ema``: a second copy of the model whose weights
follow the trained ones, ``ema = decay * ema + (1 - decay) * weights``, after every ``every``
optimizer steps.

The EMA copy is what the run evaluates and keeps: validation, the choice of best.pt, best.pt itself
(so eval, predict, export and serve use it) and the final test. last.pt keeps both: the trained
weights as its model and the EMA weights in its training state, so --resume carries on exactly.

Buffers (BatchNorm running mean/var and its batch counter) are copied from the trained model, not
averaged: they already are running averages of recent batches, and averaging them again with a
decay near 1 would leave them near their initial values (mean 0, var 1) for thousands of steps,
statistics that match no weights at all. timm's ModelEmaV3 offers the same choice.

``decay`` 0 makes the EMA copy equal to the trained weights exactly (``0 * ema + 1 * w`` is ``w``
in floating point), so an EMA run with decay 0 matches a run without EMA bit for bit.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..config.schema import EMAConfig
from ..errors import CheckpointError


class NoEMA:
    """``train.ema.decay: null``: the trained model is the evaluated one; nothing to save."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model  # the model to evaluate and to save as best.pt

    def update(self) -> None:
        pass

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict | None) -> None:
        pass


class WeightEMA:
    """The EMA copy of ``source`` (the plain model, not its DDP/compile wrapper)."""

    def __init__(self, source: nn.Module, decay: float, every: int) -> None:
        self.source, self.decay, self.every = source, decay, every
        self.model = copy.deepcopy(source).eval()  # same device and memory layout as the trained model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.steps = 0  # optimizer steps seen (the EMA is updated every ``every`` of them)
        self._pairs()

    def _pairs(self) -> None:
        ema_p = dict(self.model.named_parameters())
        self._params = [(ema_p[n], p) for n, p in self.source.named_parameters() if p.dtype.is_floating_point]
        ema_b = dict(self.model.named_buffers())
        self._buffers = [(ema_b[n], b) for n, b in self.source.named_buffers()]

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        if self.steps % self.every:
            return
        ema, live = [e for e, _ in self._params], [p.detach() for _, p in self._params]
        torch._foreach_mul_(ema, self.decay)
        torch._foreach_add_(ema, live, alpha=1.0 - self.decay)
        for e, b in self._buffers:
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "steps": self.steps}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore from last.pt; without a saved EMA (None) it starts from the current weights."""
        if state is None:
            return
        try:
            self.model.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"the EMA weights in last.pt do not fit the model: {str(exc).splitlines()[0]}") \
                from None
        self.steps = state["steps"]


def create(cfg: EMAConfig, model: nn.Module) -> NoEMA | WeightEMA:
    return NoEMA(model) if cfg.decay is None else WeightEMA(model, cfg.decay, cfg.every)
