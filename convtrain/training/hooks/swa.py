"""Stochastic weight averaging (``train.swa``), with ``torch.optim.swa_utils`` (Izmailov et al. 2018;
Lightning's ``StochasticWeightAveraging``, timm's ``--swa``).

From the start epoch (``train.swa.start``: an epoch, or a fraction f of ``train.epochs``, which starts
at epoch ``int(f * epochs) + 1``) the learning rate follows ``SWALR``: annealed (cosine) from its
value at that moment to ``train.swa.lr`` over ``train.swa.anneal_epochs`` epochs, one step per
optimizer step, then constant. At the end of every such epoch the trained weights enter the average
(``AveragedModel``: the mean of the epochs' weights), and the average's BatchNorm statistics are
recomputed over that epoch's training batches (``update_bn``; nothing to do for a model without
BatchNorm; under DDP each process computes them on its shard and they are averaged over the
processes, so every process validates the same model).

**What is evaluated and kept.** From the first averaged epoch on, the average is the run's evaluated
model: validation, the choice of best.pt, best.pt and epoch-NNN.pt themselves and the final test
use it, exactly as for the EMA. best.pt stays chosen on validation: an earlier epoch whose plain
weights validated better than every average keeps best.pt (and the final test tests those
weights). last.pt keeps the trained weights as its model and the average, its count and the
schedule under ``training_state.swa``, so --resume (mid-epoch or not) carries on exactly. A
max_time stop inside an epoch leaves that epoch out of the average (it is added when a resume
finishes the epoch). The start epoch a fraction resolves to is saved too: a resume with more
``train.epochs`` keeps it.

With the EMA: refused (``config/schema.py``): both would replace the evaluated model, and an
average of averages (or an EMA of the SWA weights) is a third method nobody asked for.
"""

from __future__ import annotations

import itertools

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ...config.schema import RunConfig
from ...errors import CheckpointError
from ..distributed import all_reduce_sum
from ..events import Hook


def start_epoch(start: int | float, epochs: int) -> int:
    """``train.swa.start`` as an epoch: an epoch as it is, a fraction f of ``epochs`` as int(f * epochs) + 1
    (0.75 of 20 epochs: epochs 16 to 20 are averaged)."""
    return start if isinstance(start, int) else int(start * epochs) + 1


class SWA(Hook):
    state_key = "swa"
    order = 11  # decides the evaluated model, like the EMA (the two are never on together)

    def __init__(self, start: int, lr: float, anneal_epochs: int) -> None:
        self.start, self.lr, self.anneal_epochs = start, lr, anneal_epochs
        self.schedule: SWALR | None = None  # built at the start epoch

    def setup(self, run) -> None:
        self.model, self.optimizer = run.model, run.optim.optimizer
        self.data, self.world_size = run.data, run.dist.world_size
        self.average = AveragedModel(run.model)  # a copy on the model's device, n_averaged 0
        self.has_batchnorm = any(isinstance(m, _BatchNorm) for m in run.model.modules())

    @property
    def averaged(self) -> int:
        return int(self.average.n_averaged)

    def on_epoch_start(self, epoch: int) -> None:
        if epoch >= self.start and self.schedule is None:
            self._build_schedule()

    def _build_schedule(self) -> None:
        # SWALR counts its own steps: anneal_epochs of optimizer steps (SWALR reads the rate it anneals
        # from off the optimizer, so it is built at the start epoch, not before)
        self.schedule = SWALR(self.optimizer, swa_lr=self.lr, anneal_strategy="cos",
                              anneal_epochs=self.anneal_epochs * self.data.updates_per_epoch)

    def on_update(self) -> None:
        if self.schedule is None:
            return
        # the run's own schedule stepped first; from the start epoch SWALR alone sets the rate
        for group, lr in zip(self.optimizer.param_groups, self.schedule.get_last_lr()):
            group["lr"] = lr
        self.schedule.step()

    def on_train_epoch_end(self, epoch: int, complete: bool) -> None:
        if epoch < self.start or not complete:
            return
        self.average.update_parameters(self.model)
        if self.has_batchnorm:
            self._recompute_batchnorm()

    @torch.no_grad()
    def _recompute_batchnorm(self) -> None:
        """The average's BatchNorm statistics over this epoch's training batches (the averaged weights
        never saw those running statistics); averaged over the processes."""
        update_bn(itertools.islice(self.data.train.iter_from(0), self.data.steps_per_epoch), self.average.module)
        if self.world_size > 1:
            for buffer in self.average.module.buffers():
                if buffer.is_floating_point():
                    all_reduce_sum(buffer).div_(self.world_size)

    def eval_model(self, model):
        return self.average.module if self.averaged else model

    def state_dict(self) -> dict:
        weights = {k: v.detach().cpu().clone() for k, v in self.average.module.state_dict().items()}
        return {"start_epoch": self.start, "averaged": self.averaged, "state_dict": weights if self.averaged else None,
                "schedule": self.schedule.state_dict() if self.schedule is not None else None}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore from last.pt (None: a run saved before SWA began keeps the config's start)."""
        if state is None:
            return
        self.start = state["start_epoch"]
        if state["state_dict"] is not None:
            try:
                self.average.module.load_state_dict(state["state_dict"])
            except RuntimeError as exc:
                raise CheckpointError(f"the SWA weights in last.pt do not fit the model: "
                                      f"{str(exc).splitlines()[0]}") from None
        self.average.n_averaged.fill_(state["averaged"])
        if state["schedule"] is not None:
            self._build_schedule()
            self.schedule.load_state_dict(state["schedule"])


def build(cfg: RunConfig, is_main: bool) -> SWA | None:
    swa = cfg.train.swa
    if swa.start is None:
        return None
    return SWA(start_epoch(swa.start, cfg.train.epochs), swa.lr if swa.lr is not None else cfg.optim.lr,
               swa.anneal_epochs)
