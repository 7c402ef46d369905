"""When a run ends before ``train.epochs``: early stopping, ``train.stop_at`` and ``train.max_time``.

:class:`Stops` is one hook of the run (:mod:`convtrain.training.events`): it is told each
finished epoch (``on_epoch_end``) and asked, before each epoch, whether to go on (``stop_reason``:
None, or what stopped the run and the line to print); between optimizer steps it is asked
``should_stop`` (max_time), and a max_time stop in the middle of an epoch is validated, saved and
tested like a finished epoch. Everything it counts is in :meth:`Stops.state_dict`, saved in last.pt, so a
resumed run stops where the uninterrupted one would (the same epoch for early stopping and
stop_at; the same total of training seconds for max_time).

Seconds here are training seconds (metrics.csv's ``seconds`` column: optimizer steps only, not
validation, test or saves), the same as results.json's ``train_seconds``.
"""

from __future__ import annotations

from ...artifacts.metrics import MetricsRow
from ...config.schema import RunConfig, TrainConfig
from ..events import Hook, Stop


class EarlyStopping:
    """Lightning's ``EarlyStopping`` / Ultralytics' ``patience``: stop after ``patience`` epochs in a
    row that did not beat the best value by more than ``min_delta``. Off when ``patience`` is None."""

    def __init__(self, metric: str, patience: int | None, min_delta: float) -> None:
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best: float | None = None
        self.bad_epochs = 0  # epochs since the last improvement

    def observe(self, row: MetricsRow) -> None:
        value = getattr(row, self.metric)
        if self.best is None:
            better = True
        elif self.metric == "val_loss":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1

    def reason(self) -> str | None:
        return "early_stopping" if self.patience is not None and self.bad_epochs >= self.patience else None


class Target:
    """``train.stop_at``: the first epoch whose validation accuracy reaches (or loss falls to) the target."""

    def __init__(self, val_acc: float | None, val_loss: float | None) -> None:
        self.val_acc, self.val_loss = val_acc, val_loss
        self.epoch: int | None = None  # the epoch that reached it
        self.seconds: float | None = None  # training seconds up to the end of that epoch (time_to_target)

    def observe(self, row: MetricsRow, seconds: float) -> None:
        if self.epoch is not None:
            return
        if (self.val_acc is not None and row.val_acc >= self.val_acc) or \
                (self.val_loss is not None and row.val_loss <= self.val_loss):
            self.epoch, self.seconds = row.epoch, seconds

    def reason(self) -> str | None:
        return "stop_at" if self.epoch is not None else None


class Stops(Hook):
    """Early stopping, stop_at and max_time together; :meth:`reason` names the first that applies."""

    state_key = "stops"
    order = 20

    def __init__(self, train: TrainConfig) -> None:
        es, target = train.early_stopping, train.stop_at
        self.early = EarlyStopping(es.metric, es.patience, es.min_delta)
        self.target = Target(target.val_acc, target.val_loss)
        self.max_time, self.epochs = train.max_time, train.epochs
        self.seconds = 0.0  # training seconds of the finished epochs
        # a max_time stop inside an epoch: what last.pt saves is the count before that epoch, whose
        # steps a resume continues (its seconds are in the epoch's own saved state)
        self.resume_point: dict | None = None

    def time_up(self, epoch_seconds: float = 0.0) -> bool:
        """True once ``max_time`` is spent (``epoch_seconds``: the unfinished epoch's seconds so far)."""
        return self.max_time is not None and self.seconds + epoch_seconds >= self.max_time

    def should_stop(self, epoch_seconds: float) -> bool:
        return self.time_up(epoch_seconds)

    def on_train_epoch_end(self, epoch: int, complete: bool) -> None:
        if not complete:
            self.resume_point = self.counts()

    def on_epoch_end(self, row: MetricsRow) -> None:
        self.after_epoch(row)

    def after_epoch(self, row: MetricsRow) -> None:
        self.seconds += row.seconds
        self.early.observe(row)
        self.target.observe(row, self.seconds)

    def reason(self, timed_out: bool) -> str | None:
        """Why to stop now, or None (``timed_out``: :meth:`time_up`)."""
        return self.early.reason() or self.target.reason() or ("max_time" if timed_out else None)

    def stop_reason(self, last_epoch: int) -> Stop | None:
        by = self.reason(self.time_up())
        return None if by is None else Stop(by, self.note(by, last_epoch))

    def note(self, by: str, last: int) -> str:
        """The line a stopped run prints (``last``: the last epoch in metrics.csv)."""
        if by == "early_stopping":
            es = self.early
            return (f"early stopping: {es.metric} did not improve (by more than {es.min_delta:g}) for {es.patience} "
                    f"epoch(s); stopped after epoch {last} of {self.epochs}")
        if by == "stop_at":
            return (f"stop_at: target reached at epoch {self.target.epoch} after {self.target.seconds:.1f}s "
                    f"of training; stopped after epoch {last} of {self.epochs}")
        return f"max_time: {self.max_time:g}s of training spent; stopped in epoch {last} of {self.epochs}"

    def results(self) -> dict:
        """What results.json adds: when the stop_at target was reached (time_to_target)."""
        return {"time_to_target": self.target.seconds, "target_epoch": self.target.epoch}

    def counts(self) -> dict:
        return {"seconds": self.seconds, "early_best": self.early.best, "early_bad_epochs": self.early.bad_epochs,
                "target_epoch": self.target.epoch, "target_seconds": self.target.seconds}

    def state_dict(self) -> dict:
        return self.resume_point if self.resume_point is not None else self.counts()

    def load_state_dict(self, state: dict | None) -> None:
        """Restore from last.pt; a last.pt written before these features (None) starts from zero."""
        if state is None:
            return
        self.seconds = state["seconds"]
        self.early.best, self.early.bad_epochs = state["early_best"], state["early_bad_epochs"]
        self.target.epoch, self.target.seconds = state["target_epoch"], state["target_seconds"]


def build(cfg: RunConfig, is_main: bool) -> Stops:
    return Stops(cfg.train)  # always present: last.pt keeps its ``stops`` key even with every rule off
