"""A tracker whose service fails in the middle of a run (training/hooks/_tracker.py): one note naming the
tracker and what failed, then that tracker logs nothing more; the run goes on. Fake clients stand in for
the services. Breaks tried: stop() left out of Tracker._call (every later event fails again and adds a
note: 3 notes); MLflow's bounded-retries detail read after stop() (an AttributeError escapes): both fail."""

from __future__ import annotations

from types import SimpleNamespace

from convtrain.artifacts.metrics import MetricsRow
from convtrain.config.schema import RunConfig
from convtrain.training.hooks.mlflowlog import MLflowLogger
from convtrain.training.hooks.wandblog import WandbLogger


def _run(tmp_path, notes: list) -> SimpleNamespace:
    return SimpleNamespace(reporter=SimpleNamespace(info=notes.append), rundir=SimpleNamespace(path=tmp_path),
                           cfg=RunConfig(), resumed=False)


class _Down:
    """Every call fails, as a tracking server that went away."""

    tracking_uri = "http://127.0.0.1:9"

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("connection refused")
        return fail


def test_mlflow_down_is_one_note_and_logging_stops(tmp_path):
    notes: list[str] = []
    logger = MLflowLogger(_Down())
    logger.on_start(_run(tmp_path, notes))
    logger.on_epoch_end(MetricsRow(1, 0.5, 0.8, 0.4, 0.85, 1e-3, 1.0))
    logger.on_finish(_run(tmp_path, notes))
    assert notes == ["note: MLflow logging stopped (starting the run failed after MLflow's bounded retries: "
                     "connection refused); the run's own files are complete"]


def test_wandb_down_is_one_note_and_logging_stops(tmp_path):
    notes: list[str] = []
    logger = WandbLogger(_Down(), RunConfig().log)
    logger.on_start(_run(tmp_path, notes))
    logger.on_epoch_end(MetricsRow(1, 0.5, 0.8, 0.4, 0.85, 1e-3, 1.0))
    logger.on_end("failed")
    assert notes == ["note: W&B logging stopped (starting the run failed: connection refused); the run's own "
                     "files are complete"]
