"""MLflow logging (``log.mlflow: true``): a hook on rank 0 only (the other ranks build none).

One MLflow run per convtrain run, tagged ``convtrain.run_dir`` (a resumed run logs into the MLflow
run it started, found by that tag): the resolved config as params (flattened, ``train.batch_size``),
every epoch's metrics (step = epoch), and at the end results.json and checkpoints/best.pt as
artifacts. The tracking URI is ``log.mlflow_uri``, else ``MLFLOW_TRACKING_URI``, else a local
``mlruns/`` file store in the working directory.

MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE=true`` (it prefers a database);
for a file store URI that variable is set here, since a local folder is what the issue asks for
and what needs no server. Uses only ``MlflowClient``, so the light ``mlflow-skinny`` package is
enough (the ``convtrain[mlflow]`` extra).

A logging failure in the middle of a run (a tracking server gone away) is one note, and logging
stops; the run itself goes on, since its own files are the record.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ...artifacts.metrics import MetricsRow
from ...config.diff import flatten
from ...config.schema import RunConfig, to_dict
from ...errors import ConfigError
from ...extras import require_extra
from ._tracker import Tracker

EXPERIMENT = "convtrain"
TAG = "convtrain.run_dir"


def tracking_uri(configured: str | None) -> str:
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults (7 retries with backoff, 120 s per request) stalled a 3 s training for over
        # 4 minutes on an unreachable server; bounded, a dead server costs seconds and one note
        for name, value in HTTP_BOUNDS.items():
            os.environ.setdefault(name, value)
    return uri


HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def build(run_cfg: RunConfig, is_main: bool) -> MLflowLogger | None:
    """The run's MLflow writer; with log.mlflow on and MLflow missing, one line saying how to install it."""
    cfg = run_cfg.log
    if not cfg.mlflow or not is_main:
        return None
    MlflowClient = require_extra("mlflow", "log.mlflow", "MLflow", "mlflow.tracking").MlflowClient  # noqa: N806
    uri = tracking_uri(cfg.mlflow_uri)
    try:
        client = MlflowClient(tracking_uri=uri)
    except Exception as exc:  # noqa: BLE001 - a file where a folder should be, an unknown scheme, /proc...
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"log.mlflow_uri {uri!r}: MLflow cannot use it ({reason}); give a writable folder, "
                          f"a file: URI or an http(s):// tracking server") from None
    return MLflowLogger(client)


class MLflowLogger(Tracker):
    service, order = "MLflow", 51

    def __init__(self, client) -> None:
        super().__init__()
        self.client, self.run_id = client, None

    def live(self) -> bool:
        return self.client is not None

    def stop(self) -> None:
        self.client = None

    def failure_detail(self) -> str:
        return " after MLflow's bounded retries" if str(self.client.tracking_uri).startswith("http") else ""

    def on_start(self, run) -> None:
        self.info = info = run.reporter.info
        self._call("starting the run", lambda: self._start(run.rundir.path, to_dict(run.cfg), run.resumed))
        if self.run_id is not None:
            info(f"mlflow: run {self.run_id} at {self.client.tracking_uri}")

    def _start(self, run_dir: Path, config: dict, resumed: bool) -> None:
        from mlflow.entities import Param

        c = self.client
        exp = c.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp is not None else c.create_experiment(EXPERIMENT)
        where = str(Path(run_dir).resolve())
        if resumed:
            found = c.search_runs([exp_id], filter_string=f"tags.`{TAG}` = '{where}'", max_results=1,
                                  order_by=["attributes.start_time DESC"])
            if found:
                self.run_id = found[0].info.run_id
                c.update_run(self.run_id, status="RUNNING")
                return  # params are fixed in MLflow; a resumable change (train.epochs) shows in config.yaml
        self.run_id = c.create_run(exp_id, tags={TAG: where}, run_name=Path(run_dir).name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            c.log_batch(self.run_id, params=params[i:i + 100])

    def on_epoch_end(self, row: MetricsRow) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, row.epoch) for k, v in row.as_dict().items()
                   if k != "epoch" and v is not None]
        self._call("logging epoch metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def on_finish(self, run) -> None:
        run_dir = run.rundir.path

        def upload() -> None:
            self.client.log_artifact(self.run_id, str(Path(run_dir) / "results.json"))
            best = Path(run_dir) / "checkpoints" / "best.pt"
            if best.is_file():
                self.client.log_artifact(self.run_id, str(best), artifact_path="checkpoints")
            self.client.set_terminated(self.run_id, "FINISHED")
        self._call("uploading results.json and best.pt", upload)
        self.client = None  # ended

    def on_end(self, status: str) -> None:
        """A run that did not finish: interrupted -> KILLED, failed (or pruned) -> FAILED; after
        :meth:`on_finish` there is nothing left to end."""
        if self.run_id is not None:
            self._call("ending the run", lambda: self.client.set_terminated(
                self.run_id, "KILLED" if status == "interrupted" else "FAILED"))
        self.client = None
