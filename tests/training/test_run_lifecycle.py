"""The run's life cycle through the CLI: what is refused before anything is written, what a crash
or a full disk leaves behind, how --resume picks a run up, and the skipped-batch count."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrain import atomic
from convtrain.artifacts import checkpoint
from convtrain.artifacts import rundir as rundir_mod
from convtrain.cli.app import app

from ..conftest import REPO, run_cli

runner = CliRunner()
QUICK = ["--set", "data.train_subset=640", "--set", "data.val_size=200", "--set", "data.test_subset=200",
         "--set", "train.epochs=1", "--set", "log.plots=false"]


def _snapshot(folder: Path) -> dict:
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def quick_run(data_root, tmp_path_factory) -> Path:
    """One epoch on 640 MNIST images (a few seconds): a pretrained checkpoint and a finished run."""
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    result = runner.invoke(app, ["train", "-c", "configs/smoke.yaml", *QUICK, "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.stdout  # only shown when batches were skipped
    return run_dir


def test_skipped_batches_are_counted_in_the_epoch_line_and_metrics(data_root, tmp_path):
    # sgd with lr 1e30: the first step blows the weights up to inf, so every later batch has a
    # non-finite loss; with train.nonfinite=skip those 9 of the 10 steps are skipped, not applied
    run_dir = tmp_path / "r"
    result = runner.invoke(app, ["train", "-c", "configs/smoke.yaml", *QUICK, "--set", "optim.name=sgd",
                                 "--set", "optim.lr=1e30", "--set", "train.nonfinite=skip", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("epoch 1/1  train loss"))
    assert "  skipped 9" in line
    with open(run_dir / "metrics.csv") as f:
        assert [r["skipped"] for r in csv.DictReader(f)] == ["9"]
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["metrics"]["skipped"] == 9


@pytest.mark.parametrize("case", ["freeze matches nothing", "freeze everything"])
def test_refused_finetune_leaves_no_run_dir_and_the_fixed_command_runs(quick_run, tmp_path, case):
    freeze = {"freeze matches nothing": "[backbone.nope]", "freeze everything": "[backbone,head]"}[case]
    run_dir = tmp_path / "ft"
    base = ["finetune", "--checkpoint", str(quick_run / "checkpoints" / "best.pt"), "-c", "configs/fashion_finetune.yaml",
            *QUICK, "--set", "train.max_steps_per_epoch=2", "--run-dir", str(run_dir)]
    refused = runner.invoke(app, [*base, "--set", f"finetune.freeze={freeze}"])
    assert refused.exit_code == 2, refused.output
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "freeze" in lines[0], refused.stderr
    assert not run_dir.exists()  # nothing half-made that would make the next attempt "not empty"
    fixed = runner.invoke(app, [*base, "--set", "finetune.freeze=[backbone]"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"


def test_bad_model_kwargs_leave_no_run_dir(data_root, tmp_path):
    run_dir = tmp_path / "r"
    result = runner.invoke(app, ["train", "-c", "configs/smoke.yaml", *QUICK, "--set", "model.name=bn_cnn",
                                 "--set", "model.kwargs.width=2.5", "--run-dir", str(run_dir)])
    assert result.exit_code == 2, result.output
    # refused when the config is loaded (the model's declared arguments), long before a run directory
    assert "'model.kwargs.width' must be an int" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_resume_of_a_last_pt_outside_a_run_dir_is_refused_and_writes_nothing(quick_run, tmp_path):
    outer = tmp_path / "outer"
    (outer / "checkpoints").mkdir(parents=True)
    shutil.copy(quick_run / "checkpoints" / "last.pt", outer / "checkpoints" / "last.pt")
    (outer / "notes.txt").write_text("someone else's folder\n")
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["train", "--resume", str(outer / "checkpoints" / "last.pt")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not inside a run directory" in lines[0], result.stderr
    assert _snapshot(tmp_path) == before  # no results.json, no temp files, nothing


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_then_resume_starts_again(data_root, tmp_path):
    run_dir = tmp_path / "r"
    args = ["train", "-c", "configs/smoke.yaml", "--set", "data.train_subset=3000", "--set", "data.val_size=200",
            "--set", "data.test_subset=200", "--set", "train.epochs=1", "--set", "train.log_every=1",
            "--set", "log.plots=false"]
    proc = subprocess.Popen([sys.executable, "-m", "convtrain", *args, "--run-dir", str(run_dir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "step 3/" in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints" / "last.pt").exists()
    again = run_cli("train", "--config", "configs/smoke.yaml", "--run-dir", str(run_dir))
    assert again.returncode == 2 and f"--resume {run_dir}" in again.stderr  # the refusal names the way out
    result = run_cli("train", "--resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert f"note: {run_dir} has no checkpoint yet" in result.stdout and "from epoch 1" in result.stdout
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"
    with open(run_dir / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["train.log", "metrics.csv", "results.json", "curves.png"])
def test_disk_full_on_a_run_file(data_root, tmp_path, monkeypatch, target):
    """ENOSPC on one file once epoch 1's last.pt exists: exit 1, one line naming the file, last.pt
    intact, results.json absent or complete."""
    run_dir = tmp_path / "r"

    def full(path: Path) -> bool:
        return Path(path).name.lstrip(".").startswith(target) and (run_dir / "checkpoints" / "last.pt").exists()

    real_open = open

    def open_(path, *args, **kwargs):
        if full(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    # the one atomic writer (results.json, config.yaml, a rewritten metrics.csv) and the run
    # directory's appends (train.log, metrics.csv rows): no other open() in the process is touched
    monkeypatch.setattr(atomic, "open", open_, raising=False)
    monkeypatch.setattr(rundir_mod, "open", open_, raising=False)
    import matplotlib.figure

    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        # plots render into an open temporary file (renamed into place): its name tells the target
        if full(getattr(fname, "name", fname)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    result = runner.invoke(app, ["train", "-c", "configs/smoke.yaml", *QUICK, "--set", "train.epochs=2",
                                 "--set", "log.plots=true", "--run-dir", str(run_dir)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and target in lines[0] and "No space left on device" in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] >= 1
    if target == "results.json":  # its final write failed, and so did recording the failure: never half a file
        assert not (run_dir / "results.json").exists()
    else:  # the plots fail after the run finished; any other file: the failure is recorded
        status = json.loads((run_dir / "results.json").read_text())["status"]
        assert status == ("finished" if target == "curves.png" else "failed")
    assert not [p for p in run_dir.rglob(".*tmp-*")]


@pytest.mark.slow
def test_final_test_reuses_the_last_epochs_test_pass_with_identical_results(data_root, tmp_path, monkeypatch):
    """best.pt is the last epoch and its test pass already ran: results.json is exactly what the extra
    pass would have written (per-class accuracy and confusion matrix included), with one pass fewer."""
    from convtrain.config.load import load_config
    from convtrain.training import engine
    from convtrain.training import runner as runner_mod

    cfg_args = ["data.train_subset=640", "data.val_size=200", "data.test_subset=300", "train.epochs=1",
                "log.plots=false", "train.test_every_epoch=true", "device=cpu"]
    calls = []
    evaluate = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: calls.append(1) or evaluate(*a, **k))
    results = {}
    for name in ("reused", "extra pass"):
        if name == "extra pass":
            monkeypatch.setattr(runner_mod, "_reused_test", lambda state: None)
        calls.clear()
        runner_mod.run(load_config("configs/smoke.yaml", cfg_args), run_dir=tmp_path / name)
        results[name] = (json.loads((tmp_path / name / "results.json").read_text()), len(calls))
    (reused, n_reused), (extra, n_extra) = results["reused"], results["extra pass"]
    assert (n_reused, n_extra) == (2, 3)  # validation + test, then the final test again
    for r in (reused, extra):
        r.pop("train_seconds")
    assert reused == extra and reused["test_num_samples"] == 300 and len(reused["test_confusion_matrix"]) == 10
