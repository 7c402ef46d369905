"""The state of one training run: what the set-up phases build (:class:`Run`), what changes as
the run goes on and --resume restores (:class:`RunState`), and what it returns (:class:`RunResult`).
The phases that build and use them are in :mod:`convtrain.training.runner`; the hooks they fire
are in :mod:`convtrain.training.events`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..artifacts.metrics import MetricsRow
from ..artifacts.rundir import NullRunDir, RunDir
from ..config.schema import RunConfig
from ..data.types import DataBundle
from . import distributed, engine
from .events import Hooks, Stop
from .reporter import Reporter
from .signals import StopSignals


@dataclass
class Best:
    """The best epoch so far, chosen on validation. Held once: the run's state and its result share it."""

    val_acc: float = -1.0  # -1: no epoch validated yet (what last.pt then stores)
    value: float = -1.0  # its train.best_metric (val_acc, val_macro_f1...): what a later epoch must beat
    epoch: int = 0  # 0: none yet
    state: dict | None = None  # CPU copy of that epoch's evaluated weights: the final test uses them
    test: dict | None = None  # the test pass of those weights, when one was made (not saved in last.pt)


@dataclass
class RunResult:
    run_dir: Path | None
    epochs: list[MetricsRow] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    test: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    stopped_by: str | None = None  # early_stopping / stop_at / max_time; None: the whole schedule ran
    time_to_target: float | None = None  # train.stop_at: training seconds until the target was reached
    is_main: bool = True  # False on ranks > 0: they share rank 0's terminal and render nothing

    @property
    def best_epoch(self) -> int:
        return self.best.epoch

    @property
    def best_val_acc(self) -> float:
        return self.best.val_acc


@dataclass
class RunState:
    """What changes as the run goes on; what --resume restores lives here."""

    result: RunResult
    epoch: int = 1  # the epoch being trained (or next to train)
    epoch_state: engine.EpochState | None = None  # position inside ``epoch`` when resuming mid-epoch
    status: str = "running"  # running -> finished / interrupted / failed (once results.json says so)
    stop: Stop | None = None  # why the loop ended before train.epochs (early_stopping, stop_at, max_time...)
    last_test: dict | None = None  # this epoch's test pass (train.test_every_epoch), else None
    stop_asked_at: float | None = None  # the epoch's seconds when a hook asked to stop between steps

    @property
    def best(self) -> Best:
        return self.result.best


@dataclass
class Data:
    bundle: DataBundle
    train: object  # batch iterators (make_batches)
    val: object
    test: object
    steps_per_epoch: int  # batches per epoch
    chunk: int | None  # evaluation piece size (engine.eval_chunk)
    channels_last: bool
    updates_per_epoch: int = 0  # optimizer steps per epoch: batches / train.accumulate, rounded up
    loss: object = None  # the training loss (training.losses.build_loss): train.loss, class weights, smoothing


@dataclass
class Optim:
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scaler: torch.amp.GradScaler | None


@dataclass
class Run:
    """The parts of a run, built once by the set-up phases and read by the loop and the hooks."""

    cfg: RunConfig
    dist: distributed.DistInfo
    reporter: Reporter
    signals: StopSignals
    data: Data
    model: nn.Module  # the plain model (checkpoints, evaluation)
    train_model: nn.Module  # the same, maybe wrapped in DDP / torch.compile
    optim: Optim
    meta: dict  # what every checkpoint records besides weights (checkpoint.build keywords)
    hooks: Hooks  # trackers, loop features and the caller's hooks, in their order
    resumed: bool = False  # the run directory existed already (--resume)
    rundir: RunDir | NullRunDir = field(default_factory=NullRunDir)  # set by open_run_dir (rank 0)


class EpochFiles:
    """What ``on_checkpoint`` gets: the run's checkpoint folder during one epoch's save.

    :meth:`save` writes ``name`` with the evaluated weights and this epoch's metrics; :meth:`remove`
    names files to delete once last.pt is written (so last.pt never lists a file already gone)."""

    def __init__(self, rundir: RunDir | NullRunDir, build) -> None:
        self.rundir, self.build, self.stale = rundir, build, []

    def names(self) -> list[str]:
        return self.rundir.checkpoint_names()

    def save(self, name: str) -> None:
        self.rundir.save_checkpoint(name, self.build())

    def remove(self, names: list[str]) -> None:
        self.stale += names
