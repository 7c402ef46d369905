"""Issue 31 item 4: a study's trials are named as `convtrain runs` prints them, a study folder means its best
trial, a sweep folder is refused naming its seed runs, `latest` looks inside studies and sweeps, and
`runs`, tune.json and the report agree on counts and seconds; best.yaml keeps the data keys as given;
the history plot has whole-number trial ticks.

Breaks tried: checkpoint_args._named removed (`--checkpoint trial-001`: "checkpoint not found"); _inside_group
returning the folder (a study: "not a run directory"; a sweep: the same line, no seeds named); latest_run
looking at top-level entries only (a sweep newest: "no finished run"); listing._failed_without_run returning []
(runs says 0 failed, tune.json 1); the report's seconds from the wall clock again (tune.json 8 s, runs 3 s);
best_config without data_given (root /work/shared/data, download: true); the MaxNLocator line removed
(ticks 0.0, 0.5, ...).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from convtrain.cli.app import app

from ..conftest import run_cli

# each test runs convtrain in a new process or builds a model first (2-11 s each): the full suite
# (make test) runs them; make test-fast stays under 90 s
pytestmark = pytest.mark.slow

optuna = pytest.importorskip("optuna")

TINY = ["--config", "smoke", "--device", "cpu", "--set", "model.name=lenet5", "--set", "data.train_subset=600",
        "--set", "data.val_size=200", "--set", "data.test_subset=200", "--set", "train.epochs=1",
        "--set", "log.plots=false", "--set", "train.batch_size=64"]
runner = CliRunner()


@pytest.fixture(scope="module")
def study_runs(data_root, tmp_path_factory) -> Path:
    """A runs folder holding a finished 3-trial study (and, added to its database, a trial that failed before
    its run began)."""
    root = tmp_path_factory.mktemp("named")
    (root / "space.yaml").write_text("optim.lr: {float: [1.0e-3, 1.0e-2], log: true}\n")
    folder = root / "runs" / "study"
    r = run_cli("tune", *TINY, "--space", str(root / "space.yaml"), "--trials", "3", "--study-dir", str(folder))
    assert r.returncode == 0, r.stderr + r.stdout
    (root / "tune-stdout.txt").write_text(r.stdout)
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{folder / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                              user_attrs={"run_dir": str(folder / "trial-003")}))
    return root / "runs"


def _eval(where: Path, spec: str, monkeypatch):
    monkeypatch.chdir(where)
    return runner.invoke(app, ["eval", "--checkpoint", spec, "--json", "--device", "cpu"])


def test_trials_are_named_as_runs_prints_them_and_a_study_means_its_best(study_runs, monkeypatch):
    root = study_runs.parent
    report = json.loads((study_runs / "study" / "tune.json").read_text())
    best = Path(report["best"]["run_dir"]).name
    for spec, trial in (("trial-001", "trial-001"), ("study/trial-002", "trial-002"), ("runs/study", best),
                        ("study", best)):
        r = _eval(root, spec, monkeypatch)
        assert r.exit_code == 0, (spec, r.stderr)
        assert json.loads(r.stdout)["checkpoint"] == f"runs/study/{trial}/checkpoints/best.pt", spec


def test_a_sweep_is_refused_naming_its_seeds_and_latest_looks_inside(study_runs, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(study_runs / "study", runs / "study", ignore=shutil.ignore_patterns("*.db"))
    for seed in (0, 1):  # fresh times: the sweep is the newest entry, as a --seeds run made after the study
        shutil.copytree(study_runs / "study" / "trial-000", runs / "sweep" / f"seed-{seed}",
                        copy_function=shutil.copy)
    r = _eval(tmp_path, "runs/sweep", monkeypatch)
    assert r.exit_code == 2
    assert "runs/sweep is a --seeds sweep (2 seeds): give one of its runs: runs/sweep/seed-0, runs/sweep/seed-1" \
        in r.stderr
    r = _eval(tmp_path, "latest", monkeypatch)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["checkpoint"] == "runs/sweep/seed-1/checkpoints/best.pt"
    shutil.copytree(runs / "sweep" / "seed-0", runs / "other" / "seed-0")  # a second seed-0: ambiguous
    r = _eval(tmp_path, "seed-0", monkeypatch)
    assert r.exit_code == 2 and "'seed-0' names 2 runs under runs/" in r.stderr


def test_runs_the_report_and_tune_json_agree_on_counts_and_seconds(study_runs):
    rep = run_cli("tune", "--report", str(study_runs / "study"))
    assert rep.returncode == 0, rep.stderr
    assert "3 done, 0 pruned, 1 failed" in rep.stdout
    report = json.loads((study_runs / "study" / "tune.json").read_text())
    assert report["states"] == {"complete": 3, "fail": 1}
    (row,) = json.loads(runner.invoke(app, ["runs", str(study_runs), "--json"]).stdout)
    assert row["trials_count"] == {"done": 3, "pruned": 0, "failed": 1, "running": 0}
    listed = {t["name"]: t["seconds"] for t in row["trials"]}
    for t in report["trials"][:3]:
        assert t["seconds"] == pytest.approx(listed[f"trial-{t['number']:03d}"], abs=1e-4)  # metrics.csv keeps 6 digits
        assert t["wall_seconds"] >= t["seconds"]
    logged = (study_runs.parent / "tune-stdout.txt").read_text()
    for t in report["trials"][:3]:
        assert f"trial {t['number']} finished: best val_acc {t['value']:.4f} in 1 epoch(s), {t['seconds']:.1f}s" \
            in logged


def test_best_yaml_keeps_the_data_keys_as_given(study_runs):
    text = (study_runs / "study" / "best.yaml").read_text()
    best = yaml.safe_load(text)
    # smoke's data keys, then TINY's --set: no root from CONVTRAIN_DATA_ROOT, no defaults such as download
    assert best["data"] == {"name": "mnist", "val_size": 200, "train_subset": 600, "test_subset": 200}
    assert "/shared/data" not in text


def test_the_history_plot_has_whole_trial_numbers(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from convtrain.tune import report

    seen = {}

    def keep(plt, fig, path):
        fig.canvas.draw()
        seen["ticks"] = [t for t in fig.axes[0].get_xticks()]
        plt.close(fig)
        return path

    monkeypatch.setattr(report, "_save", keep)
    rows = [{"number": n, "state": "complete", "best": 0.5 + n / 10, "value": 0.5 + n / 10} for n in range(3)]
    from convtrain.artifacts.plots import _pyplot

    report._history(_pyplot(), {"direction": "maximize", "metric": "val_acc", "study": "s"}, rows, tmp_path / "h.png")
    assert seen["ticks"] and all(float(t).is_integer() for t in seen["ticks"]), seen["ticks"]
