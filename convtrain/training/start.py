"""Where a run starts from: fresh, ``--resume`` (the same run, its full state) or ``finetune``
(a new run from pretrained weights). Each checkpoint is loaded here, once, and nothing is written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import checkpoint
from ..artifacts.rundir import check_is_run
from ..artifacts.runfiles import read_results
from ..artifacts.runlock import LOCK_NAME
from ..config.diff import config_diff
from ..config.load import load_config
from ..config.schema import RunConfig, from_dict, saved_raw, to_dict
from ..config.yamlsafe import read_yaml
from ..data.sources import get as get_source
from ..errors import CheckpointError, ConfigError, RunDirError

# Settings that may change when a run is resumed: they do not alter what the finished run means.
# How long to train (epochs, max_time, stop_at) may change like train.epochs always could; which
# extra checkpoints are kept and where results are logged change no weights; deterministic picks
# algorithms, not the recipe. Not resumable: train.ema and train.early_stopping (their saved state
# was computed under the old settings) and train.accumulate (it changes the schedule's length).
RESUMABLE_CHANGES = ("train.epochs", "device", "train.log_every", "speed.threads", "speed.compile", "out_dir",
                     "train.max_time", "train.stop_at.val_acc", "train.stop_at.val_loss", "train.deterministic",
                     "checkpoint.keep_top_k", "checkpoint.every_n_epochs", "log.mlflow", "log.mlflow_uri",
                     "log.wandb", "log.wandb_project", "log.wandb_mode", "log.wandb_log_model", "train.calibrate")


@dataclass
class Start:
    """Where a run begins: a config, plus what :func:`prepare_resume` / :func:`prepare_finetune` loaded."""

    cfg: RunConfig
    run_dir: Path | None = None  # None: <out_dir>/<name>-<time>
    resume: dict | None = None  # the resumed run's last.pt
    reopen: bool = False  # the run directory exists already (resume, or restart of a run without last.pt)
    pretrained: dict | None = None  # fine-tuning: the checkpoint the weights come from
    notes: list[str] = field(default_factory=list)  # lines to print when the run starts




# --------------------------------------------------------------------------------------------
# --resume auto: one command for a job's first start and every restart

AUTO = "auto"  # --resume auto


def auto_plan(run_dir: str | Path) -> str:
    """What ``--resume auto --run-dir RUN`` does with RUN: ``"start"`` (missing, or empty), ``"resume"``
    (a run that has not finished: its last.pt, or its config.yaml when it stopped before its first save)
    or ``"finished"`` (nothing to do). Anything else is a RunDirError (exit 2), one line; nothing is
    written. Every rank of a multi-process run decides before any of them can write: rank 0 creates
    RUN only after all of them have joined the process group, so they all see RUN as it was."""
    path = Path(run_dir)
    if not path.exists():
        return "start"
    if not path.is_dir():
        raise RunDirError(f"--resume auto: {path} is a file, not a run directory; give --run-dir a new folder, an "
                          "empty one, or a run's")
    if not any(p.name != LOCK_NAME for p in path.iterdir()):
        return "start"
    try:
        check_is_run(path)
    except RunDirError as exc:
        raise RunDirError(f"--resume auto: {exc}; --run-dir must be a new folder, an empty one, or a run's") from None
    results = read_results(path)
    return "finished" if results is not None and results.status == "finished" else "resume"


# --------------------------------------------------------------------------------------------
# Where a run starts from: each checkpoint is loaded here, once


def prepare_resume(path: str | Path, cfg: RunConfig | None = None, overrides: list[str] | tuple = (),
                   data_root: str | None = None) -> Start:
    """What ``--resume PATH`` continues: a run directory or its ``checkpoints/last.pt``.

    ``cfg`` (from ``--config``) or ``overrides`` (``--set``, on the run's saved config) may only
    change :data:`RESUMABLE_CHANGES`. A run directory that has its config.yaml but no last.pt (it
    died before its first save) starts again from epoch 1 with its saved config. Nothing is written.
    """
    path = Path(path)
    if path.is_dir() and (path / "config.yaml").is_file() and not (path / "checkpoints" / "last.pt").exists():
        check_is_run(path)
        where = f"{path / 'config.yaml'}"
        saved = _resumed_config(read_yaml(path / "config.yaml"), where, cfg, overrides, data_root, path)
        note = (f"note: {path} has no checkpoint yet (it stopped before its first save); "
                f"starting it again from epoch 1 with its saved config")
        return Start(saved, path, reopen=True, notes=[note])
    last = path / "checkpoints" / "last.pt" if path.is_dir() else path
    run_dir = last.parent.parent
    ckpt = checkpoint.load(last)
    if "training_state" not in ckpt:
        raise CheckpointError(f"{last} has no training state (is it a best.pt?); resume needs a run's last.pt")
    # resuming writes into RUN (metrics, results, checkpoints): never into whatever folder holds a stray file
    check_is_run(run_dir, last)
    saved = _resumed_config(ckpt["config"], f"{last} (saved config)", cfg, overrides, data_root, run_dir)
    return Start(saved, run_dir, resume=ckpt, reopen=True)


def prepare_finetune(pretrained: str | Path, cfg: RunConfig, run_dir: str | Path | None = None) -> Start:
    """A new run from ``pretrained``'s weights: the architecture comes from the checkpoint."""
    ckpt = checkpoint.load(pretrained)
    cfg.finetune.checkpoint = str(pretrained)
    cfg.model.name, cfg.model.kwargs = ckpt["model"]["name"], dict(ckpt["model"]["kwargs"])
    return Start(cfg, Path(run_dir) if run_dir is not None else None, pretrained=ckpt)


def _resumed_config(raw: dict, where: str, cfg: RunConfig | None, overrides, data_root, run_dir: Path) -> RunConfig:
    """The run's saved config, with the resumable changes of ``cfg`` (or of ``overrides``) applied."""
    raw = saved_raw(raw)
    saved = from_dict(raw, where)
    if cfg is None and (overrides or data_root):
        cfg = load_config(None, list(overrides), data_root=data_root, base=raw, where=where)
    if cfg is None:
        return saved
    diffs = config_diff(to_dict(saved), to_dict(cfg))
    resumable = _resumable(saved)
    refused = [d for d in diffs if d[0] not in resumable and d[0] != "name"]
    if saved.sched.name in ("cosine", "onecycle"):
        # these schedules are laid out over the total step count: more epochs would change them
        refused += [d for d in diffs if d[0] == "train.epochs"]
    if refused:
        listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in refused)
        raise ConfigError(f"cannot resume {run_dir} with a different config ({listing}); "
                          f"only these may change: {', '.join(RESUMABLE_CHANGES)}")
    for key, _, new in diffs:
        if key in resumable:
            _set_path(saved, key, new)
    return saved


def _resumable(saved: RunConfig) -> tuple[str, ...]:
    """RESUMABLE_CHANGES, plus data.root for a registered dataset: there the root only says where the
    same IDX files are (the run copied to another machine, CONVTRAIN_DATA_ROOT elsewhere); for the user's
    own files (a folder, a CSV...) the root is the data itself, so it stays fixed."""
    return RESUMABLE_CHANGES + (("data.root",) if get_source(saved.data.name).registered else ())


def _set_path(cfg: RunConfig, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, copy.deepcopy(value))
