"""The study: where it lives (SQLite in DIR by default, any Optuna RDB URL), and opening it safely.

A study records what it searches (the metric, its direction, the space, the total number of
trials) in Optuna's study attributes; a second ``convtrain tune`` with the same study name and a
different metric, direction or space is refused before anything is written. DIR/study.json says
where the study is, so ``convtrain tune --report DIR`` and ``convtrain runs`` find it again.

Dead trials: every worker beats a heartbeat (Optuna's RDB heartbeat); a trial whose heartbeat
stopped for :data:`GRACE_S` seconds is marked failed by the next worker that starts a trial, and
its run directory's results.json says so. A trial of a process on this machine that no longer
exists (kill -9, a reboot) is marked failed at once when the study is opened again.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import ConfigError, OutputError
from ..extras import missing_extra, require_extra
from ..process import start_time
from .space import Space

METRICS = {"val_acc": "maximize", "val_loss": "minimize", "val_macro_f1": "maximize", "val_balanced_acc": "maximize"}
HEARTBEAT_S = 10  # seconds between a running trial's heartbeats
GRACE_S = 60  # a running trial without a heartbeat for this long is failed


def need_optuna():
    """Optuna, or one line naming the extra (exit 2) before anything runs."""
    optuna = require_extra("tune", "convtrain tune", "Optuna", "optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # convtrain prints its own line per trial
    # the heartbeat arguments are marked experimental; convtrain pins their use in its tests
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass
class StudyPlan:
    """What one ``convtrain tune`` searches, and where."""

    space: Space | None  # None when only reading a study (--report)
    trials: int  # the study's total of finished trials (complete + pruned)
    folder: Path  # DIR: study.json, trial-NNN/, the report
    storage: str | None  # None: sqlite in DIR/study.db
    name: str
    metric: str = "val_acc"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    epochs: int = 1  # the base config's train.epochs: Hyperband's largest budget
    data_given: dict | None = None  # the base config's data keys as the user gave them (best.yaml keeps these)

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @property
    def url(self) -> str:
        return self.storage or f"sqlite:///{(self.folder / 'study.db').resolve()}"


def redact(url: str) -> str:
    """The URL without its password (what study.json and messages show)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by open_storage
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str, on_stale=None):
    """Optuna's RDB storage with heartbeats; an unreachable or malformed database is one line, exit 2."""
    optuna = need_optuna()
    import sqlalchemy.exc

    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # workers of one machine take turns writing
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    # Optuna 5 calls the dead-trial callback heartbeat_stale_trial_callback; 4.x failed_trial_callback
    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    callback = {"heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
                else "failed_trial_callback": on_stale}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S, **callback)
        except ImportError as exc:
            raise missing_extra("tune-postgres", f"--storage {redact(url)}",
                                f"its database driver ({exc.name or exc})") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
            # two workers creating the tables of a new database at once: one of them loses ("relation
            # already exists", a duplicate key); a moment later the tables are there. Unreachable: no retry
            racing = isinstance(exc, sqlalchemy.exc.SQLAlchemyError) and (
                not isinstance(exc, sqlalchemy.exc.OperationalError) or "already exists" in str(exc))
            if attempt < 4 and racing:  # (SQLite says "table ... already exists" as an OperationalError)
                time.sleep(0.5 + attempt)
                continue
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise ConfigError(f"--storage {redact(url)}: cannot open the study database: "
                              f"{first[0] if first else type(exc).__name__}") from None
    raise AssertionError("unreachable")


def check_existing(plan: StudyPlan) -> None:
    """Refuse a study that exists with another metric, direction, space or total, before anything is written."""
    if plan.storage is None and not (plan.folder / "study.db").exists():
        return  # a new DIR: nothing to conflict with
    storage = open_storage(plan.url)
    optuna = need_optuna()
    try:
        study = optuna.load_study(study_name=plan.name, storage=storage)
    except KeyError:
        return
    _check_attrs(plan, study)


def _check_attrs(plan: StudyPlan, study) -> None:
    where = f"study '{plan.name}' in {redact(plan.url)}"
    direction = study.direction.name.lower()
    if direction != plan.direction:
        raise ConfigError(f"{where} exists and {direction}s its objective; --metric {plan.metric} needs "
                          f"{plan.direction}; pick another --study NAME or --study-dir")
    attrs = study.user_attrs
    if attrs.get("metric") not in (None, plan.metric):
        raise ConfigError(f"{where} exists with --metric {attrs['metric']}, not {plan.metric}; "
                          f"pick another --study NAME or --study-dir")
    if attrs.get("space") not in (None, plan.space.canonical()):
        raise ConfigError(f"{where} exists with another search space ({attrs['space']}); "
                          f"pick another --study NAME or --study-dir")


def open_study(plan: StudyPlan, worker: int = 0, on_stale=None, base_raw: dict | None = None):
    """Load or create the study (checked as :func:`check_existing`); the sampler is seeded with seed + worker."""
    optuna = need_optuna()
    storage = open_storage(plan.url, on_stale)
    sampler, pruner = _sampler(plan, worker), _pruner(plan)
    try:
        study = optuna.load_study(study_name=plan.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        study = optuna.create_study(storage=storage, study_name=plan.name, direction=plan.direction,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)  # another worker may win
    _check_attrs(plan, study)
    for key, value in (("metric", plan.metric), ("space", plan.space.canonical()), ("base_config", base_raw),
                       ("data_given", plan.data_given)):
        if key not in study.user_attrs and value is not None:
            study.set_user_attr(key, value)
    return study


def _sampler(plan: StudyPlan, worker: int):
    optuna = need_optuna()
    seed = plan.seed + worker  # workers of one study must not propose the same points
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if plan.sampler == "grid":
        return optuna.samplers.GridSampler(plan.space.grid(), seed=seed)
    # a third of the trials explore at random before TPE models them (at most Optuna's default of 10)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, plan.trials // 3)))


def _pruner(plan: StudyPlan):
    optuna = need_optuna()
    if plan.pruner == "none":
        return optuna.pruners.NopPruner()
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(plan.epochs, 1), reduction_factor=3)
    # after 2 finished trials, stop a trial whose epoch is worse than the median of earlier trials' same epoch
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def write_marker(plan: StudyPlan) -> None:
    """DIR/study.json: where the study lives, for --report and `convtrain runs` (no password in it)."""
    marker = plan.folder / "study.json"
    data = {"kind": "convtrain-study", "study": plan.name, "storage": redact(plan.url),
            "default_storage": plan.storage is None, "metric": plan.metric, "direction": plan.direction,
            "trials": plan.trials, "epochs": plan.epochs, "space": json.loads(plan.space.canonical()), "sampler": plan.sampler,
            "pruner": plan.pruner}
    try:
        plan.folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(marker, json.dumps(data, indent=2) + "\n")
    except OSError as exc:  # a read-only folder, a full disk: before any trial, nothing else written
        raise OutputError(f"cannot write the study folder {plan.folder}: {exc.strerror or exc}") from None


def existing_sqlite(url: str) -> None:
    """For a reader (--report): a SQLite study database must exist and hold Optuna's tables; opening a
    missing one created an empty database file (and its tables) where nothing was to be written."""
    if not url.startswith("sqlite:///"):
        return  # a server database: opening it creates no file
    import sqlite3

    path = Path(url.removeprefix("sqlite:///"))
    found = False
    if path.is_file():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                found = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'").fetchone()
        except sqlite3.Error:
            found = False
    if not found:
        raise ConfigError(f"no study database at {path} (missing, empty or not SQLite); pass the --study-dir of a "
                          "convtrain tune that has run, or --storage URL of its database")


# study.json's keys that a reader needs, with their types (older study files lack sampler/pruner/epochs)
MARKER_KEYS = {"study": str, "storage": str, "default_storage": bool, "metric": str, "trials": int}
MAX_MARKER_BYTES = 1_000_000
_KIND_NAMES = {str: "a string", bool: "true or false", int: "an integer"}


def read_marker(folder: Path) -> dict:
    """DIR/study.json, checked: a missing, damaged or hand-edited file is one line naming the key."""
    path = Path(folder) / "study.json"
    try:
        if path.stat().st_size > MAX_MARKER_BYTES or not path.is_file():
            raise ConfigError(f"{path} is not a convtrain study file (not a small regular file)")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{folder} is not a study folder (no study.json); pass the --study-dir of a "
                          f"convtrain tune") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[...]]]] nested 100,000 deep
        detail = getattr(exc, "strerror", None) or str(exc).split(";")[0][:80] or type(exc).__name__
        raise ConfigError(f"{path} is unreadable: {detail}") from None
    if not isinstance(data, dict) or data.get("kind") != "convtrain-study":
        raise ConfigError(f"{path} is not a convtrain study file")
    for key, kind in MARKER_KEYS.items():
        value = data.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: key '{key}' is missing or not {_KIND_NAMES[kind]} "
                              "(a damaged or hand-edited study file); run the tune command again to rewrite it")
    if data["metric"] not in METRICS or data["trials"] < 1:
        raise ConfigError(f"{path}: metric {data['metric']!r} / trials {data['trials']} are not a study's")
    return data


def owner() -> dict:
    """Who runs a trial: a process on a host (a trial whose process is gone is failed on reopening)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": start_time(os.getpid())}
