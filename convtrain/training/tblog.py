"""TensorBoard event files for a run (optional: needs the ``tensorboard`` package).

:func:`open_logger` always returns an object with the same methods: the real logger, or a
:class:`NullLogger` when logging is off or this rank does not write. A missing package is refused
by :func:`require` before the run starts (one line naming the extra, exit 2), as for every extra.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts.metrics import MetricsRow
from ..extras import require_extra



def require(log_cfg, is_main: bool) -> None:
    """log.tensorboard on and the package missing: one line naming the extra (exit 2), before the run
    starts, as for MLflow; not a warning followed by a whole run without event files."""
    if log_cfg.tensorboard and is_main:
        require_extra("tensorboard", "log.tensorboard", "TensorBoard", "tensorboard", "torch.utils.tensorboard")


class TensorBoardLogger:
    """Per-step training loss and learning rate, and every per-epoch metric, under RUN/tensorboard."""

    def __init__(self, folder: Path, every: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        self.every = every

    def step(self, global_step: int, loss, lr: float) -> None:
        if global_step % self.every == 0:
            self.writer.add_scalar("train/loss_step", float(loss), global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, row: MetricsRow) -> None:
        for key, value in row.as_dict().items():
            if key != "epoch" and value is not None:
                split, _, metric = key.partition("_")
                self.writer.add_scalar(f"{split}/{metric}" if metric else key, value, row.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """TensorBoard off: every call does nothing."""

    def step(self, global_step: int, loss, lr: float) -> None:
        pass

    def epoch(self, row: MetricsRow) -> None:
        pass

    def close(self) -> None:
        pass


def open_logger(folder: Path | None, every: int) -> TensorBoardLogger | NullLogger:
    """The logger for ``folder`` (None: off); :func:`require` has checked the package before the run."""
    return NullLogger() if folder is None else TensorBoardLogger(folder, every)
