"""TensorBoard event files for a run (``log.tensorboard``; needs the ``tensorboard`` package).

A hook on rank 0 only: per-step training loss and learning rate (every ``log.tensorboard_every``
steps) and every per-epoch metric, under RUN/tensorboard. A missing package is refused when the
hook is built, before the data is read (one line naming the extra, exit 2), as for every extra;
not a warning followed by a whole run without event files.
"""

from __future__ import annotations

from ...artifacts.metrics import MetricsRow
from ...config.schema import RunConfig
from ...extras import require_extra
from ..events import Hook


class TensorBoardLogger(Hook):
    order = 50

    def __init__(self, every: int) -> None:
        self.every, self.writer = every, None

    def on_start(self, run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.rundir.tensorboard_folder()))

    def on_step(self, global_step: int, loss, lr: float) -> None:
        if global_step % self.every == 0:
            self.writer.add_scalar("train/loss_step", float(loss), global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def on_epoch_end(self, row: MetricsRow) -> None:
        for key, value in row.as_dict().items():
            if key != "epoch" and value is not None:
                split, _, metric = key.partition("_")
                self.writer.add_scalar(f"{split}/{metric}" if metric else key, value, row.epoch)
        self.writer.flush()

    def on_end(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()


def build(cfg: RunConfig, is_main: bool) -> TensorBoardLogger | None:
    if not cfg.log.tensorboard or not is_main:
        return None
    require_extra("tensorboard", "log.tensorboard", "TensorBoard", "tensorboard", "torch.utils.tensorboard")
    return TensorBoardLogger(cfg.log.tensorboard_every)
