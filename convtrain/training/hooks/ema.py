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

from ...config.schema import RunConfig
from ...errors import CheckpointError
from ..events import Hook


class NoEMA(Hook):
    """``train.ema.decay: null``: the trained model is the evaluated one. Present all the same, so
    last.pt keeps its ``ema: null`` key as it always had."""

    state_key = "ema"
    order = 10


class WeightEMA(Hook):
    """The EMA copy of the run's plain model (not its DDP/compile wrapper)."""

    state_key = "ema"
    order = 10

    def __init__(self, decay: float, every: int) -> None:
        self.decay, self.every = decay, every
        self.steps = 0  # optimizer steps seen (the EMA is updated every ``every`` of them)

    def setup(self, run) -> None:
        self.attach(run.model)

    def attach(self, source: nn.Module) -> None:
        """Follow ``source``: the copy starts from its current weights."""
        self.source = source
        self.model = copy.deepcopy(source).eval()  # same device and memory layout as the trained model
        for p in self.model.parameters():
            p.requires_grad_(False)
        ema_p = dict(self.model.named_parameters())
        self._params = [(ema_p[n], p) for n, p in source.named_parameters() if p.dtype.is_floating_point]
        ema_b = dict(self.model.named_buffers())
        self._buffers = [(ema_b[n], b) for n, b in source.named_buffers()]

    def eval_model(self, model: nn.Module) -> nn.Module:
        return self.model  # validation, best.pt, epoch-NNN.pt and the final test use the EMA weights

    @torch.no_grad()
    def on_update(self) -> None:
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


def build(cfg: RunConfig, is_main: bool) -> NoEMA | WeightEMA:
    ema = cfg.train.ema
    return NoEMA() if ema.decay is None else WeightEMA(ema.decay, ema.every)
