"""``convtrain tune``: a hyperparameter search on Optuna (extra ``convtrain[tune]``), and ``--report DIR``."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..data.detect import data_overrides
from .edge import handle_errors, out
from .options import DataOpt, DataRootOpt, DeviceOpt, SetOpt, load_run_config


@handle_errors
def tune(
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="The base config: a YAML file or a recipe name (convtrain config list)."),
    space: Optional[Path] = typer.Option(None, "--space", show_default=False,
                                         help="Search space YAML: config key -> {float: [lo, hi], log: true} | "
                                              "{int: [lo, hi], step: N} | {choice: [a, b]}."),
    trials: Optional[int] = typer.Option(None, "--trials", show_default=False,
                                         help="The study's total of finished trials (complete + pruned); "
                                              "rerunning the command finishes the rest."),
    study_dir: Optional[Path] = typer.Option(None, "--study-dir", show_default=False,
                                             help="Folder of the study: study.db, trial-NNN/ run directories, the "
                                                  "report (default <out_dir>/tune-<config name>)."),
    storage: Optional[str] = typer.Option(None, "--storage", show_default=False,
                                          help="Shared study database, e.g. postgresql://user:pw@host/db "
                                               "(default sqlite in DIR/study.db)."),
    study: Optional[str] = typer.Option(None, "--study", show_default=False,
                                        help="Study name in the storage (default: the study folder's name)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Trials at once on this machine (one process each, "
                             "CPU threads split between them)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0, show_default=False,
                                            help="Start no new trial after this many seconds."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, random or grid."),
    pruner: str = typer.Option("median", "--pruner", help="median, hyperband or none."),
    metric: str = typer.Option("val_acc", "--metric", help="The validation metric to optimize: val_acc, "
                               "val_macro_f1 or val_balanced_acc (maximized) or val_loss (minimized). The test "
                               "set never chooses."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed (each --jobs worker adds its index)."),
    set_: Optional[list[str]] = SetOpt,
    data: Optional[str] = DataOpt,
    data_root: Optional[str] = DataRootOpt,
    device: Optional[str] = DeviceOpt,
    confirm: int = typer.Option(0, "--confirm", min=0, help="Retrain the top K configs and the base config with "
                                "--seeds and say whether the winner beats the base by more than the seeds' spread."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Seeds for --confirm."),
    report: Optional[Path] = typer.Option(None, "--report", show_default=False,
                                          help="Only write and show the report of the study in this folder."),
) -> None:
    """Search hyperparameters: every trial is an ordinary run directory, pruned trials stop early.

    Example: convtrain tune --config speedrun --space space.yaml --trials 20 --study-dir runs/tune-speedrun
    Example: convtrain tune --report runs/tune-speedrun
    """
    from ..errors import ConfigError

    if report is not None:
        return _report(report, storage, confirm, seeds, set_, device, data_root)
    if space is None or trials is None:
        raise ConfigError("convtrain tune needs --space SPACE.yaml and --trials N (or --report DIR)")
    return _search(config, space, trials, study_dir, storage, study, jobs, timeout, sampler, pruner, metric, seed,
                   data_overrides(data, set_, config is not None), data_root, device, confirm, seeds)


def _search(config, space, trials, study_dir, storage, study, jobs, timeout, sampler, pruner, metric, seed, sets,
            data_root, device, confirm, seeds) -> None:
    from ..training.signals import StopSignals

    if confirm:
        from ..training.seeds import parse_seeds  # (imports torch: only when it is needed)

        parse_seeds(seeds)  # a bad --seeds is refused before any trial runs
    worker = os.environ.get("CONVTRAIN_TUNE_WORKER")  # set by --jobs for its worker processes
    with StopSignals() as signals:
        from ..config.load import given_section
        from ..tune.search import plan_study
        from ..tune.search import tune as run_tune
        from ..tune.worker import threads_per_job

        base = load_run_config(config, sets, device, None, data_root)
        plan = plan_study(base, space, trials, study_dir, storage, study, sampler, pruner, metric, seed,
                          note=out.print)
        plan.data_given = given_section(config, sets, "data", data_root)
        threads = [] if base.speed.threads else [f"speed.threads={threads_per_job(jobs)}"]

        def command(i: int | None, extra_sets: list[str]) -> list[str]:
            """This search's arguments: the worker i of --jobs (i is not None), or the whole command."""
            args = ["--space", str(space), "--trials", str(trials if i is None else plan.trials), "--study-dir",
                    str(plan.folder), "--sampler", sampler, "--pruner", pruner, "--metric", metric,
                    "--seed", str(seed + (i or 0))]
            args += ["--config", str(config)] if config is not None else []
            for s in [*sets, *extra_sets]:
                args += ["--set", s]
            options = (("--storage", storage), ("--study", study if i is None else plan.name), ("--timeout", timeout),
                       ("--data-root", data_root), ("--device", device))
            if i is None:
                options += (("--jobs", jobs if jobs > 1 else None), ("--confirm", confirm or None),
                            ("--seeds", seeds if confirm else None))
            return args + [str(a) for flag, value in options if value is not None for a in (flag, value)]

        resume = "convtrain tune " + shlex.join(command(None, []))
        worker_argv = lambda i: [sys.executable, "-m", "convtrain", "tune", *command(i, threads)]  # noqa: E731
        summary = run_tune(plan, base, console=out, signals=signals, resume_command=resume, jobs=jobs,
                           timeout=timeout, worker_argv=worker_argv, worker=None if worker is None else int(worker))
        if summary is None:
            return
        _show(summary, plan.folder)
        if confirm:
            _confirm(plan.folder, storage, confirm, seeds, base, signals)


def _report(folder: Path, storage, confirm: int, seeds: str, sets, device, data_root) -> None:
    from ..training.signals import StopSignals
    from ..tune.search import open_report

    with StopSignals() as signals:
        study, plan, summary = open_report(folder, storage, note=out.print)
        _show(summary, folder)
        if confirm:
            from ..config.schema import from_dict

            base_raw = (study.user_attrs.get("base_config") or {})
            base = from_dict(base_raw, f"{folder}: base config") if base_raw else None
            _confirm(folder, storage, confirm, seeds, base, signals)


def _confirm(folder: Path, storage, k: int, seeds_text: str, base, signals) -> None:
    from ..errors import ConfigError
    from ..training.seeds import parse_seeds
    from ..tune.confirm import confirm
    from ..tune.search import open_report

    if base is None:
        raise ConfigError("--confirm needs the base config; run it with the tune command (--config ...)")
    seeds = parse_seeds(seeds_text)
    study, _, summary = open_report(folder, storage, note=lambda _: None)
    result = confirm(study, summary, base, k, seeds, folder, console=out, signals=signals)
    table = Table(title=f"--confirm: test accuracy over seeds {', '.join(map(str, seeds))} (after choosing)")
    for col in ("config", "mean", "std", "min", "max"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for e in result["entries"]:
        table.add_row(escape(e["name"]), f"{e['mean']:.4f}", "-" if e["std"] is None else f"{e['std']:.4f}",
                      f"{e['min']:.4f}", f"{e['max']:.4f}")
    out.print(table)
    out.print(escape(result["verdict"]))
    out.print(f"confirm: {escape(str(folder / 'confirm.json'))}")


def _show(summary: dict, folder: Path) -> None:
    """The trials table, the best trial and what pruning saved."""
    rows = summary["trials"]
    keys = sorted({k for r in rows for k in r["params"]})
    states = summary["states"]  # counted in `convtrain runs`' words: done, pruned, failed
    counts = f"{states.get('complete', 0)} done, {states.get('pruned', 0)} pruned, {states.get('fail', 0)} failed"
    table = Table(title=f"study {escape(summary['study'])}: {summary['finished']} of {summary['trials_target']} "
                        f"trials finished ({counts}; {summary['metric']}, {summary['direction']})")
    for col in ("trial", *keys, f"best {summary['metric']}", "epochs", "state", "seconds"):
        table.add_column(escape(col), justify="left" if col == "state" else "right")
    best = summary["best"]["number"] if summary["best"] else None
    for r in rows:
        mark = " *" if r["number"] == best else ""
        table.add_row(f"{r['number']}{mark}", *[_fmt(r["params"].get(k)) for k in keys],
                      "-" if r["best"] is None else f"{r['best']:.4f}", str(r["epochs"]), r["state"],
                      "-" if r["seconds"] is None else f"{r['seconds']:.0f}")
    out.print(table)
    p = summary["pruning"]
    out.print(f"pruning ({p['pruner']}): {p['pruned_trials']} trial(s) pruned, {p['epochs_saved']} of "
              f"{p['epochs_saved'] + p['epochs_trained']} epochs not trained (= {p['trials_saved']:.1f} full trials)")
    if best is not None:
        out.print(f"best: trial {best} ({escape(str(summary['best']['run_dir']))}), {summary['metric']} "
                  f"{summary['best']['value']:.4f}; config: {escape(str(summary.get('best_yaml')))}")
    out.print(f"report: {escape(str(folder / 'tune.json'))}"
              + "".join(f", {escape(p)}" for p in summary.get("plots", [])))


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else escape(str(v))
