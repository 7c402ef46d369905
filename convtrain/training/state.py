"""The state of one training run: what the set-up phases build (:class:`Run`), what changes as
the run goes on and --resume restores (:class:`RunState`), and what it returns (:class:`RunResult`).
The phases that build and use them are in :mod:`convtrain.training.runner`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..artifacts.metrics import MetricsRow
from ..artifacts.rundir import NullRunDir, RunDir
from ..config.schema import RunConfig
from ..data.types import DataBundle
from . import distributed, engine, kept_checkpoints, mlflowlog, stopping, wandblog
from . import ema as ema_mod
from .reporter import Reporter
from .signals import StopSignals
from .tblog import NullLogger, TensorBoardLogger


@dataclass
class RunResult:
    run_dir: Path | None
    epochs: list[MetricsRow] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    test: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    stopped_by: str | None = None  # early_stopping / stop_at / max_time; None: the whole schedule ran
    time_to_target: float | None = None  # train.stop_at: training seconds until the target was reached
    is_main: bool = True  # False on ranks > 0: they share rank 0's terminal and render nothing


@dataclass
class RunState:
    """What changes as the run goes on; what --resume restores lives here."""

    result: RunResult
    epoch: int = 1  # the epoch being trained (or next to train)
    epoch_state: engine.EpochState | None = None  # position inside ``epoch`` when resuming mid-epoch
    best_val_acc: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None  # CPU copy of the best weights: the final test uses them
    status: str = "running"  # running -> finished / interrupted / failed (once results.json says so)
    stop: str | None = None  # why the loop ended before train.epochs (early_stopping / stop_at / max_time)
    last_test: dict | None = None  # this epoch's test pass (train.test_every_epoch), else None
    best_test: dict | None = None  # the test pass of best_state's weights, when one was made (not saved in last.pt)


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


@dataclass
class Optim:
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    scaler: torch.amp.GradScaler | None


@dataclass
class Run:
    """The parts of a run, built once by the set-up phases and read by the loop."""

    cfg: RunConfig
    dist: distributed.DistInfo
    reporter: Reporter
    signals: StopSignals
    data: Data
    model: nn.Module  # the plain model (checkpoints, evaluation)
    train_model: nn.Module  # the same, maybe wrapped in DDP / torch.compile
    optim: Optim
    rundir: RunDir | NullRunDir
    tb: TensorBoardLogger | NullLogger
    meta: dict  # what every checkpoint records besides weights (checkpoint.build keywords)
    mlflow: mlflowlog.NullMLflow | mlflowlog.MLflowLogger
    wandb: wandblog.NullWandb | wandblog.WandbLogger
    parts: dict  # the loop features saved in last.pt, by training-state key (build_loop_parts)
    # the caller's per-epoch hook (``convtrain tune`` reports to its study): called with each epoch's row
    # once its checkpoints are saved; raising RunStopped ends the run with results.json's status set by it
    on_epoch: Callable[[MetricsRow], None] | None = None

    @property
    def ema(self) -> ema_mod.NoEMA | ema_mod.WeightEMA:  # .model is what is evaluated and saved as best.pt
        return self.parts["ema"]

    @property
    def stops(self) -> stopping.Stops:  # early stopping, stop_at, max_time
        return self.parts["stops"]

    @property
    def kept(self) -> kept_checkpoints.Kept:  # checkpoints/epoch-NNN.pt (keep_top_k, every_n_epochs)
        return self.parts["kept"]
