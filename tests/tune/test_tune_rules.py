"""`convtrain tune`'s rules that a broken feature would break, held by fast tests on a real SQLite study
without training (issue 32: the audit planted each break below and the study tests a developer would run
all passed): a trial whose process died or whose heartbeat stopped is failed when the study is reopened,
and best.yaml is the best trial's config, not the last one's.

Breaks tried (each failed here, then restored):
- ``work`` no longer calling ``fail_dead_local_trials`` on reopening: the dead process's trial stayed
  RUNNING and its run directory had no results.json (test_reopening_fails_a_trial_whose_process_died);
- ``open_study`` not passing ``on_stale`` to the storage: the stale trial was failed by Optuna but its run
  directory never said so (test_reopening_fails_a_trial_whose_heartbeat_stopped);
- ``best_config`` taking the last complete trial (``summary["trials"][-1]``) instead of the best: best.yaml
  held the last trial's learning rate (test_best_yaml_is_the_best_trials_config);
- ``summarize`` ranking with the direction reversed: the summary's best was the worst trial (3).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from convtrain.config.load import load_config
from convtrain.config.schema import RunConfig, to_dict

from ..conftest import results_json

optuna = pytest.importorskip("optuna")

SPACE = "optim.lr: {float: [1.0e-4, 1.0e-1], log: true}\n"


def plan_for(tmp_path: Path, trials: int = 1):
    from convtrain.tune.search import plan_study

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    plan = plan_study(RunConfig(), space, trials, folder=tmp_path / "s", note=lambda s: None)
    plan.folder.mkdir()  # as tune() makes it
    return plan


def trial_run(plan, number: int) -> Path:
    run = plan.folder / f"trial-{number:03d}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    return run


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the trial is asked by hand, not in optimize
def test_reopening_fails_a_trial_whose_process_died(tmp_path):
    from convtrain.process import start_time
    from convtrain.tune.study import open_study, owner
    from convtrain.tune.worker import work

    plan = plan_for(tmp_path)
    study = open_study(plan)
    trial = study.ask()  # RUNNING, as a worker killed with -9 leaves it
    run = trial_run(plan, trial.number)
    me = owner()
    for key, value in {"host": me["host"], "pid": dead_pid(), "started": start_time(me["pid"]),
                       "run_dir": str(run)}.items():
        trial.set_user_attr(key, value)
    # timeout=0: the reopening's checks run, then no trial starts (nothing trains)
    work(plan, RunConfig(), console=_Quiet(), signals=None, resume_command="convtrain tune ...", timeout=0)
    (again,) = optuna.load_study(study_name=plan.name, storage=plan.url).get_trials()
    assert again.state.name == "FAIL"
    assert results_json(run)["status"] == "failed" and "died" in results_json(run)["reason"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the trial is asked by hand, not in optimize
def test_reopening_fails_a_trial_whose_heartbeat_stopped(tmp_path, monkeypatch):
    """Another machine's trial (its pid means nothing here) whose heartbeat stopped: reopening the study as
    work() does (open_study with the worker's callback) and Optuna's check before the next trial fail it,
    and its run directory says so."""
    from convtrain.tune import study as study_mod
    from convtrain.tune.worker import _stale_trial_failed

    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(study_mod, "GRACE_S", 1)
    plan = plan_for(tmp_path)
    study = study_mod.open_study(plan, on_stale=_stale_trial_failed)
    trial = study.ask()
    run = trial_run(plan, trial.number)
    trial.set_user_attr("host", "another-machine")
    trial.set_user_attr("run_dir", str(run))
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # more than the grace period without a beat
    reopened = study_mod.open_study(plan, worker=1, on_stale=_stale_trial_failed)
    optuna.storages.fail_stale_trials(reopened)  # what optimize() runs before each trial
    assert reopened.get_trials()[0].state.name == "FAIL"
    assert results_json(run)["status"] == "failed" and "stopped beating" in results_json(run)["reason"]


def test_best_yaml_is_the_best_trials_config(tmp_path, monkeypatch):
    from convtrain.tune import report
    from convtrain.tune.report import write_report

    monkeypatch.setattr(report, "write_plots", lambda summary, folder: [])  # matplotlib: seconds, not the subject
    from convtrain.tune.study import open_study

    plan = plan_for(tmp_path, trials=4)
    study = open_study(plan)
    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    # the best is neither the first, nor the last, nor the one with the largest or smallest lr
    for number, (lr, value) in enumerate([(1e-3, 0.80), (3e-2, 0.95), (2e-3, 0.90), (5e-3, 0.70)]):
        cfg = RunConfig()
        cfg.optim.lr, cfg.name = lr, f"trial-{number:03d}"
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": lr}, distributions=dist, value=value,
            user_attrs={"config": to_dict(cfg), "run_dir": str(plan.folder / cfg.name)}))
    summary = write_report(study, plan, note=lambda s: None)
    assert summary["best"]["number"] == 1 and summary["best"]["params"] == {"optim.lr": 3e-2}
    best = load_config(plan.folder / "best.yaml")
    assert best.optim.lr == pytest.approx(3e-2)
    assert (plan.folder / "best.yaml").read_text().splitlines()[1].startswith("# the best trial (1) of study")


class _Quiet:
    def print(self, *args, **kwargs) -> None:
        pass
