"""Weights & Biases logging (``log.wandb: true``): a hook on rank 0 only (the other ranks build none).

One W&B run per convtrain run, its files under ``RUN/wandb/``: the resolved config, every epoch's
metrics (``step`` = epoch), and at the end the final test numbers in the run summary and, with
``log.wandb_log_model: true``, ``checkpoints/best.pt`` as a model artifact. The run id is derived
from the run directory, so ``--resume`` continues the same W&B run. ``log.wandb_mode`` (else
``WANDB_MODE``, else W&B's default) picks online, offline (nothing leaves the machine; upload later
with ``wandb sync RUN/wandb/offline-run-*``) or disabled. Needs the ``convtrain[wandb]`` extra.

A logging failure in the middle of a run is one note, and logging stops; the run goes on, since its
own files are the record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...artifacts.metrics import MetricsRow
from ...config.schema import LogConfig, RunConfig, to_dict
from ...errors import ConfigError, shown
from ...extras import require_extra
from ._tracker import Tracker

RESULT_KEYS = ("test_accuracy", "test_loss", "test_num_samples", "best_epoch", "best_val_acc", "train_seconds")


# what W&B refuses in a project name (wandb's own check: at most 128 characters, none of these)
PROJECT_FORBIDDEN = "/\\#?%:"
PROJECT_MAX = 128


def build(run_cfg: RunConfig, is_main: bool) -> WandbLogger | None:
    """The run's W&B writer; with log.wandb on and wandb missing, one line saying how to install it. A
    project name W&B would refuse is one line (exit 2) on every rank, before any data is read: W&B refused
    it only when the run started, so nothing was logged and the run still ended with exit 0."""
    cfg = run_cfg.log
    if not cfg.wandb:
        return None
    problem = project_problem(cfg.wandb_project)
    if problem:
        raise ConfigError(f"log.wandb_project {shown(cfg.wandb_project)} {problem}; pick another name "
                          "(--set log.wandb_project=NAME)")
    if not is_main:
        return None
    return WandbLogger(require_extra("wandb", "log.wandb", "Weights & Biases", "wandb"), cfg)


def project_problem(name: str) -> str | None:
    """Why W&B would refuse ``name`` as a project, or None."""
    if not name.strip():
        return "is empty"
    if len(name) > PROJECT_MAX:
        return f"is {len(name)} characters long; W&B allows at most {PROJECT_MAX}"
    bad = sorted({c for c in name if c in PROJECT_FORBIDDEN})
    if bad:
        return f"contains {' '.join(bad)}, which W&B refuses in project names ({' '.join(PROJECT_FORBIDDEN)})"
    return None


def run_id(run_dir: Path) -> str:
    """A W&B run id that names the run directory: the same folder (a resumed run) gives the same id."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class WandbLogger(Tracker):
    service, order = "W&B", 52

    def __init__(self, wandb, cfg: LogConfig) -> None:
        super().__init__()
        self.wandb, self.cfg, self.run = wandb, cfg, None

    def live(self) -> bool:
        return self.wandb is not None

    def stop(self) -> None:
        self.wandb = None

    def on_start(self, run) -> None:
        self.info = info = run.reporter.info
        run_dir = Path(run.rundir.path)
        self._call("starting the run", lambda: self._start(run_dir, to_dict(run.cfg)))
        if self.run is not None:
            info(f"wandb: run {self.run.id} ({self.run.settings.mode}) in {Path(run_dir) / 'wandb'}")

    def _start(self, run_dir: Path, config: dict) -> None:
        self.run = self.wandb.init(project=self.cfg.wandb_project, name=run_dir.name, id=run_id(run_dir),
                                   resume="allow", dir=str(run_dir), config=config, mode=self.cfg.wandb_mode,
                                   settings=self.wandb.Settings(console="off", silent=True))

    def on_epoch_end(self, row: MetricsRow) -> None:
        values = {k: float(v) for k, v in row.as_dict().items() if k != "epoch" and v is not None}
        self._call("logging epoch metrics", lambda: self.run.log({**values, "epoch": row.epoch}, step=row.epoch))

    def on_finish(self, run) -> None:
        run_dir = run.rundir.path

        def upload() -> None:
            results = json.loads((Path(run_dir) / "results.json").read_text())
            self.run.summary.update({k: results[k] for k in RESULT_KEYS if results.get(k) is not None})
            best = Path(run_dir) / "checkpoints" / "best.pt"
            if self.cfg.wandb_log_model and best.is_file():
                artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model",
                                               metadata={k: results.get(k) for k in RESULT_KEYS})
                artifact.add_file(str(best), name="best.pt")
                self.run.log_artifact(artifact, aliases=["best"])
            self.run.finish(exit_code=0)
        self._call("logging the final test numbers and best.pt", upload)
        self.wandb = None  # ended

    def on_end(self, status: str) -> None:
        """A run that did not finish ends with a non-zero exit code (W&B marks it failed or crashed);
        after :meth:`on_finish` there is nothing left to end."""
        if self.run is not None:
            self._call("ending the run", lambda: self.run.finish(exit_code=130 if status == "interrupted" else 1))
        self.wandb = None
