"""TensorBoard event files for a run (optional: needs the ``tensorboard`` package)."""

from __future__ import annotations

from pathlib import Path


class TensorBoardLogger:
    """Per-step training loss and learning rate, and every per-epoch metric, under RUN/tensorboard."""

    def __init__(self, folder: Path, every: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        self.every = every

    @classmethod
    def open(cls, folder: Path, every: int) -> TensorBoardLogger | None:
        """A logger, or None when the tensorboard package is not installed."""
        try:
            return cls(folder, every)
        except ImportError:
            return None

    def step(self, global_step: int, loss, lr: float) -> None:
        if global_step % self.every == 0:
            self.writer.add_scalar("train/loss_step", float(loss), global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and value is not None:
                split, _, metric = key.partition("_")
                self.writer.add_scalar(f"{split}/{metric}" if metric else key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
