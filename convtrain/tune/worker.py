"""Running trials: each one an ordinary training run in DIR/trial-NNN, reporting every epoch to the study.

One worker takes trials until the study holds ``trials`` finished ones (complete or pruned):
rerunning the same command after Ctrl-C, a kill -9 or a reboot finishes the rest. ``--jobs J``
starts J worker processes on this machine (threads split between them); workers on other
machines join through a shared ``--storage``. A pruned trial's run stops after the epoch it was
pruned in (results.json: status "pruned"); a trial whose loss diverged is pruned too (TPE then
learns to avoid its region; a failed trial would teach it nothing).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..config.schema import RunConfig, to_dict
from ..errors import ConfigError, ConvtrainError, Interrupted, RunStopped, TrainingError
from ..process import pid_alive
from ..training.events import Hook
from .space import apply_params
from .study import StudyPlan, need_optuna, open_study, owner


class _Surplus(Exception):
    """Two workers asked for the last trial at once: the later one stands down (its trial is failed, empty)."""


def counts(study) -> dict[str, int]:
    """Trials by state name (complete, pruned, fail, running, waiting)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def done(study) -> int:
    c = counts(study)
    return c.get("complete", 0) + c.get("pruned", 0)


def work(plan: StudyPlan, base: RunConfig, *, console: Console, signals, resume_command: str,
         timeout: float | None = None, worker: int = 0, quiet: bool = False) -> None:
    """Run trials of ``plan``'s study until it holds ``plan.trials`` finished ones (or ``timeout`` passes)."""
    base_raw = to_dict(base)
    study = open_study(plan, worker, on_stale=_stale_trial_failed, base_raw=base_raw)
    fail_dead_local_trials(study)
    started = time.monotonic()
    while True:
        c = counts(study)
        if c.get("complete", 0) + c.get("pruned", 0) + c.get("running", 0) >= plan.trials:
            return
        if timeout is not None and time.monotonic() - started >= timeout:
            console.print(f"--timeout {timeout:g}s reached: no new trial started; {done(study)} of "
                          f"{plan.trials} trials finished; continue with: {escape(resume_command)}")
            return
        signals.immediate(lambda name: f"interrupted ({name}) between trials; {done(study)} of {plan.trials} "
                                       f"trials finished; finish the study with: {resume_command}")
        objective = _Objective(plan, base_raw, study, console, signals, quiet)
        try:
            study.optimize(objective, n_trials=1, catch=(_Surplus,))
        except Interrupted as exc:
            n = objective.number
            raise Interrupted(f"interrupted in trial {n} ({exc.args[0].split(';')[0]}); it is marked failed, its run "
                              f"directory kept; {done(study)} of {plan.trials} trials finished; finish the study "
                              f"with: {resume_command}") from None
        if objective.line:
            console.print(objective.line)


class _Objective:
    """One trial: suggest values, build the config through the schema, train, report each epoch."""

    def __init__(self, plan: StudyPlan, base_raw: dict, study, console: Console, signals, quiet: bool) -> None:
        self.plan, self.base_raw, self.study, self.console, self.signals = plan, base_raw, study, console, signals
        self.quiet, self.number, self.line = quiet, None, ""

    def __call__(self, trial) -> float:
        optuna = need_optuna()
        from ..training.reporter import Reporter
        from ..training.runner import run
        from ..training.start import Start

        self.number = n = trial.number
        if _surplus(self.study, trial, self.plan.trials):
            trial.set_user_attr("surplus", True)  # the report shows it as such (it never trained)
            raise _Surplus(f"the study already has {self.plan.trials} trials")
        values = {p.key: p.suggest(trial) for p in self.plan.space.params}
        cfg = apply_params(self.base_raw, values, f"trial {n}")
        cfg.name = f"trial-{n:03d}"
        path = self.plan.folder / cfg.name
        for key, value in {**owner(), "run_dir": str(path.resolve()), "config": to_dict(cfg)}.items():
            trial.set_user_attr(key, value)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        self.console.print(f"[bold]trial {n}[/] ({escape(shown)}): {escape(str(path))}")
        reporter = Reporter(self.console, enabled=not self.quiet)
        hook = _EpochReport(trial, self.plan.metric, cfg.train.epochs)
        try:
            result = run(Start(cfg, path), reporter=reporter, signals=self.signals, hooks=[hook])
        except RunStopped as exc:
            self.line = f"trial {n} pruned: {exc}"
            raise optuna.TrialPruned(str(exc)) from None
        except TrainingError as exc:  # diverged: the clearest case of a hopeless setting
            _mark_run(path, "pruned", f"diverged: {exc}")
            self.line = f"trial {n} pruned: training diverged"
            raise optuna.TrialPruned(f"diverged: {exc}") from None
        values = [getattr(row, self.plan.metric) for row in result.epochs]
        if not values:  # cannot happen for a fresh run; a NaN value would fail the trial and loop forever
            raise ConvtrainError(f"trial {n} ({path}) ended without a validation epoch")
        value = max(values) if self.plan.direction == "maximize" else min(values)
        self.line = (f"trial {n} finished: best {self.plan.metric} {value:.4f} in {len(result.epochs)} epoch(s), "
                     f"{result.train_seconds:.1f}s")
        return value


class _EpochReport(Hook):
    """A hook of the trial's run: once each epoch is saved, report the validation metric; prune (not
    after the last epoch) by ending the run with RunStopped (results.json: status "pruned")."""

    order = 100  # after every built-in hook: the epoch's checkpoints are written and logged

    def __init__(self, trial, metric: str, epochs: int) -> None:
        self.trial, self.metric, self.epochs = trial, metric, epochs
        self.seconds = 0.0

    def on_epoch_saved(self, row) -> None:
        value = getattr(row, self.metric)
        self.trial.report(value, row.epoch)
        # the trial's training seconds as its run counts them (metrics.csv; `convtrain runs`, the line above)
        self.seconds += row.seconds
        self.trial.set_user_attr("train_seconds", self.seconds)
        if row.epoch < self.epochs and self.trial.should_prune():
            raise RunStopped(f"pruned after epoch {row.epoch}: {self.metric} {value:.4f} is behind the study's "
                             f"other trials at that epoch", "pruned")


def _surplus(study, trial, total: int) -> bool:
    """True when ``trial`` is beyond the study's total among the trials not failed (two workers raced)."""
    from optuna.trial import TrialState

    alive = sorted(t.number for t in study.get_trials(deepcopy=False)
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    return trial.number in alive and alive.index(trial.number) >= total


def fail_dead_local_trials(study) -> list[int]:
    """Fail the running trials of processes of this host that no longer exist; their run directories say so."""
    from optuna.trial import TrialState

    me, failed = owner(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid, started = (t.user_attrs.get(k) for k in ("host", "pid", "started"))
        if host != me["host"] or not isinstance(pid, int) or pid == me["pid"] or \
                pid_alive(pid, started if isinstance(started, str) else None):
            continue
        try:  # Study.tell refuses a trial that is already finished: another worker failed it first
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 - optuna's refusal classes differ between versions and storages
            continue
        failed.append(t.number)
        _mark_run(t.user_attrs.get("run_dir"), "failed", f"its process ({pid}) died")
    return failed


def _stale_trial_failed(study, trial) -> None:
    """Optuna failed a trial whose heartbeat stopped: its run directory (when on this machine) says so."""
    _mark_run(trial.user_attrs.get("run_dir"), "failed", "its worker stopped beating (the process or its machine died)")


def _mark_run(run_dir: str | Path | None, status: str, reason: str) -> None:
    """Record a trial's end in its run directory's results.json (unless it ended on its own), through
    RunDir and its lock: a run still held by a live process (another host's, or one whose heartbeat
    only stalled) is left to it; the lock of a dead one is taken over, as ``--resume`` would."""
    if not run_dir or not Path(run_dir).is_dir() or not (Path(run_dir) / "config.yaml").exists():
        return
    from ..artifacts import runfiles
    from ..artifacts.rundir import RunDir

    try:
        rundir = RunDir.open(run_dir)
    except ConvtrainError:  # RunLocked: its writer lives; RunDirError: not a run we may write
        return
    try:
        with contextlib.suppress(ConvtrainError):
            results = runfiles.read_results(run_dir)
            if results is not None and results.status in ("finished", "pruned") and status == "failed":
                return
        with contextlib.suppress(ConvtrainError):
            rundir.write_results(runfiles.Results(status, reason=reason))
    finally:
        rundir.close()


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------------
# --jobs J: J worker processes on this machine


def run_jobs(jobs: int, argv: Callable[[int], list[str]], signals, resume_command: str) -> None:
    """Start ``jobs`` worker processes (``argv(i)``: the i-th's command line), wait for them all.

    Each runs in its own session, so a Ctrl-C at the terminal reaches this process only; it is passed
    on once to every worker, which stops after its current step like ``train``.
    """
    procs = [subprocess.Popen(argv(i), env={**os.environ, "CONVTRAIN_TUNE_WORKER": str(i)}, start_new_session=True)
             for i in range(jobs)]
    signals.graceful(lambda name: f"interrupted twice ({name}); the workers were asked to stop; "
                                  f"finish the study with: {resume_command}")
    forwarded = False
    try:
        while any(p.poll() is None for p in procs):
            if signals.is_set() and not forwarded:
                forwarded = True
                for p in procs:
                    with contextlib.suppress(ProcessLookupError):
                        p.send_signal(signal.SIGINT)
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
                p.wait()
    codes = [p.returncode for p in procs]
    if forwarded or 130 in codes:
        raise Interrupted(f"interrupted: the workers stopped after their current step; finish the study with: "
                          f"{resume_command}")
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        i, code = bad[0]
        raise ConfigError(f"tune worker {i} exited with {code} (its message is above)") if code == 2 else \
            ConvtrainError(f"tune worker {i} exited with {code} (its message is above)")


def threads_per_job(jobs: int) -> int:
    return max(1, math.floor((os.cpu_count() or 1) / jobs))
