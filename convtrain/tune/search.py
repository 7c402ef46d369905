"""``convtrain tune`` end to end: check everything, run the trials, write the answer.

:func:`plan_study` does every check that can fail (Optuna installed, the space against the schema,
the sampler and pruner, the storage reachable, an existing study of the same name compatible)
and writes nothing; :func:`tune` then runs the workers and writes the report; :func:`open_report`
reads a finished (or running) study folder again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from ..config.schema import RunConfig
from ..errors import ConfigError, did_you_mean
from .space import load_space
from .study import (METRICS, StudyPlan, check_existing, existing_sqlite, need_optuna, open_storage, read_marker,
                    write_marker)

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")


def default_folder(base: RunConfig) -> Path:
    """DIR when --study-dir is not given: the same for the same config, so a rerun continues the study."""
    return Path(base.out_dir) / f"tune-{base.name or 'run'}"


def plan_study(base: RunConfig, space_path: Path, trials: int, folder: Path | None = None, storage: str | None = None,
               study: str | None = None, sampler: str = "tpe", pruner: str = "median", metric: str = "val_acc",
               seed: int = 0, note: Callable[[str], None] = print) -> StudyPlan:
    """Everything checked, nothing written: the study to run (one line and exit 2 for any mistake)."""
    need_optuna()
    for name, value, options in (("--metric", metric, METRICS), ("--sampler", sampler, SAMPLERS),
                                 ("--pruner", pruner, PRUNERS)):
        if value not in options:
            raise ConfigError(f"{name} {value!r} is not one of: {', '.join(options)}{did_you_mean(value, options)}")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    space = load_space(space_path, base)
    folder = Path(folder) if folder is not None else default_folder(base)
    name = _study_name(folder, study)
    plan = StudyPlan(space=space, trials=trials, folder=folder, storage=storage, name=name,
                     metric=metric, sampler=sampler, pruner=pruner, seed=seed, epochs=base.train.epochs)
    if sampler == "grid":
        size = space.grid_size()
        if trials > size:
            note(f"note: --sampler grid has {size} combinations; --trials {trials} becomes {size}")
            plan.trials = size
    if storage is not None:
        open_storage(plan.url)  # unreachable, wrong driver, bad URL: refused here
    check_existing(plan)
    return plan


def _study_name(folder: Path, study: str | None) -> str:
    """The study a --study-dir holds: a new or empty folder starts one named after it; the folder of an
    earlier ``convtrain tune`` (its study.json) continues the study written there, whatever the folder is
    called now (a renamed or copied study folder was pointed at a new, empty study). Any other folder is
    refused: the study's files (best.yaml, tune.json...) would replace what it holds."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--study-dir {folder} exists and is not a folder")
    if (folder / "config.yaml").exists():
        raise ConfigError(f"--study-dir {folder} is a run directory; pass a folder for the study's trials")
    if (folder / "study.json").exists():
        held = read_marker(folder)["study"]
        if study is not None and study != held:
            raise ConfigError(f"--study-dir {folder} holds study '{held}', not '{study}'; drop --study to "
                              "continue it, or pass another --study-dir")
        return held
    try:
        held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    except OSError as exc:
        raise ConfigError(f"--study-dir {folder}: cannot list it ({exc.strerror or exc})") from None
    if held:
        raise ConfigError(f"--study-dir {folder} is not empty and not a study folder (it holds "
                          f"{', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); pass a new or empty folder, "
                          "or the folder of an earlier convtrain tune to continue it")
    return study or folder.name


def tune(plan: StudyPlan, base: RunConfig, *, console: Console, signals, resume_command: str, jobs: int = 1,
         timeout: float | None = None, worker_argv: Callable[[int], list[str]] | None = None,
         worker: int | None = None) -> dict | None:
    """Run the study to ``plan.trials`` finished trials, then write the report (not in a --jobs worker)."""
    from .report import write_report
    from .study import open_study
    from .worker import run_jobs, work

    if worker is None:
        write_marker(plan)
    if jobs > 1:
        # the database and the study exist before the workers start: they do not race to create them
        from ..config.schema import to_dict

        open_study(plan, base_raw=to_dict(base))
        run_jobs(jobs, worker_argv, signals, resume_command)
    else:
        work(plan, base, console=console, signals=signals, resume_command=resume_command, timeout=timeout,
             worker=worker or 0, quiet=worker is not None)
    if worker is not None:
        return None
    signals.immediate(lambda name: f"interrupted ({name}) while writing the report; the trials are safe in the "
                                   f"study; write it again with: convtrain tune --report {plan.folder}")
    return write_report(open_study(plan), plan, note=console.print)


def open_report(folder: Path, storage: str | None = None, note: Callable[[str], None] = print):
    """The study behind a study folder (its study.json), its plan, and its freshly written report."""
    optuna = need_optuna()
    from .report import write_report

    marker = read_marker(folder)
    url = storage or (None if marker.get("default_storage") else marker["storage"])
    if url is not None and "***" in url:
        raise ConfigError(f"{folder}/study.json keeps no password; pass --storage URL with it")
    epochs = marker.get("epochs", 1)
    plan = StudyPlan(space=None, trials=marker["trials"], folder=Path(folder), storage=url,
                     name=marker["study"], metric=marker["metric"], sampler=str(marker.get("sampler", "tpe")),
                     pruner=str(marker.get("pruner", "median")),
                     epochs=epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else 1)
    existing_sqlite(plan.url)
    try:
        study = optuna.load_study(study_name=plan.name, storage=open_storage(plan.url))
    except KeyError:
        raise ConfigError(f"study '{plan.name}' is not in {plan.url}") from None
    return study, plan, write_report(study, plan, note=note)
