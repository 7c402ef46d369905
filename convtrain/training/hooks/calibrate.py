"""``train.calibrate: true``: at the end of the run, fit a temperature on the validation split and save
it in best.pt (what ``convtrain calibrate --checkpoint RUN`` does afterwards; see
:mod:`convtrain.training.calibration`).

It runs once results.json is written (``on_finish``), before the trackers upload best.pt, on rank 0
alone: the weights in best.pt are saved again unchanged, next to their ``calibration``, atomically.
The temperature is the command's (the same validation split); the test numbers are on the run's own
test split (what results.json scored, ``data.test_subset`` included), the command's on the whole one.
"""

from __future__ import annotations

from ...artifacts import checkpoint
from ..calibration import fit, logits_of, split_batches, summary
from ..events import Hook


class Calibrate(Hook):
    """Temperature scaling of best.pt after the final test."""

    order = 45  # after the kept checkpoints (30s), before the trackers (50s) upload best.pt

    def __init__(self, batch_size: int, workers: int) -> None:
        self.batch_size, self.workers = batch_size, workers

    def on_finish(self, run) -> None:
        path = run.rundir.path / "checkpoints" / "best.pt"
        raw = checkpoint.load(path)
        model = checkpoint.rebuild_model(raw, path).to(run.dist.device)
        bundle, device = run.data.bundle, run.dist.device
        val = logits_of(model, split_batches(bundle.val, bundle, self.batch_size, device, self.workers), device)
        test = logits_of(model, split_batches(bundle.test, bundle, self.batch_size, device, self.workers), device)
        record = fit(val, test)
        with run.signals.protected():  # a signal now waits for the save: best.pt is whole either way
            run.rundir.save_checkpoint("best.pt", checkpoint.with_calibration(raw, record))
        run.reporter.info(summary(record))


def build(cfg, is_main: bool) -> Calibrate | None:
    return Calibrate(cfg.train.eval_batch_size, cfg.data.workers) if cfg.train.calibrate and is_main else None
