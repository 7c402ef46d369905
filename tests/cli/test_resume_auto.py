"""`--resume auto --run-dir RUN`: one command for a job's first start and every restart. RUN missing
or empty: a new run; interrupted (here by a preemption notice, SIGUSR1: exit 75): resumed, ending with
the rows of an uninterrupted run; finished: exit 0 with a note and nothing touched; anything else:
refused in one line, nothing written. The same for `finetune` and for the Python API.

Breaks tried: "finished" taken for "resume" (the finished run trained again: its files changed, the
note missing); "empty" taken for "not a run" (exit 2 on the empty folder); the check that RUN is a run
directory skipped (the notes folder got config.yaml and a lock: "nothing written" failed); SIGUSR1 ending
with Interrupted (exit 130, not 75); the finished note printed without a run check in the API (the API
test's accuracy came from nowhere: it must equal results.json's).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import convtrain
from convtrain.cli.app import app

from ..conftest import REPO, run_cli

TINY = ["-c", "configs/smoke.yaml", "--device", "cpu", "--set", "data.train_subset=1024", "--set", "data.val_size=200",
        "--set", "data.test_subset=200", "--set", "train.epochs=2", "--set", "train.log_every=1",
        "--set", "log.plots=false", "--set", "speed.threads=1"]
TIMINGS = ("seconds", "val_seconds", "test_seconds")


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder``: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A run started by `--resume auto` on a run directory that does not exist yet."""
    run = tmp_path_factory.mktemp("auto") / "run"
    result = run_cli("train", *TINY, "--run-dir", str(run), "--resume", "auto")
    assert result.returncode == 0, result.stderr
    return run, result


@pytest.mark.slow
def test_missing_run_dir_starts_a_run(finished):
    run, result = finished
    assert json.loads((run / "results.json").read_text())["status"] == "finished"
    assert f"run: {run}" in result.stdout and "resuming" not in result.stdout


@pytest.mark.slow
def test_finished_run_exits_0_with_a_note_and_touches_nothing(finished):
    run, _ = finished
    before = _snapshot(run)
    result = run_cli("train", *TINY, "--run-dir", str(run), "--resume", "auto")
    assert result.returncode == 0, result.stderr
    accuracy = json.loads((run / "results.json").read_text())["test_accuracy"]
    assert result.stdout.strip() == f"note: {run} has finished (test accuracy of best.pt {accuracy:.4f}); nothing to resume"
    assert _snapshot(run) == before


@pytest.mark.slow
def test_empty_run_dir_starts_a_run(data_root, tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    result = run_cli("train", *TINY, "--set", "train.epochs=1", "--run-dir", str(run), "--resume", "auto")
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "results.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_preempted_run_resumes_to_the_rows_of_an_uninterrupted_one(finished, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "convtrain", "train", *TINY, "--run-dir", str(run), "--resume", "auto"]
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 240
    while "epoch 1/2 step 3/" not in (tmp_path / "out.txt").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert err.splitlines()[-1].startswith("error: preempted (SIGUSR1, exit 75) at epoch 1, step ")
    assert json.loads((run / "results.json").read_text())["status"] == "interrupted"

    resumed = run_cli(*cmd[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {run}" in resumed.stdout
    assert _rows(run) == _rows(finished[0])


@pytest.mark.parametrize("make", ["folder with a file", "a file", "a folder with a config.yaml of its own"])
def test_not_a_run_directory_is_refused_in_one_line_and_nothing_written(data_root, tmp_path, make):
    target = tmp_path / "target"
    if make == "a file":
        target.write_text("notes\n")
    else:
        target.mkdir()
        (target / ("config.yaml" if "config" in make else "notes.txt")).write_text("train:\n  epochs: 3\n")
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["train", *TINY, "--run-dir", str(target), "--resume", "auto"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --resume auto: {target} ") and "--run-dir must be a new folder" in line \
        if make != "a file" else line.startswith(f"error: --resume auto: {target} is a file")
    assert _snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["target"]


def test_resume_auto_needs_a_run_dir_and_finetune_takes_only_auto(tmp_path):
    result = CliRunner().invoke(app, ["train", *TINY, "--resume", "auto"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --resume auto needs --run-dir RUN")
    result = CliRunner().invoke(app, ["finetune", "--checkpoint", str(REPO / "tests" / "fixtures" / "run-52beffa"),
                                      "--resume", "latest", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "finetune --resume takes 'auto'" in result.stderr, result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_finetune_resume_auto_starts_then_says_finished(finished, tmp_path):
    run = tmp_path / "ft"
    cmd = ["finetune", "--checkpoint", str(finished[0]), *TINY, "--set", "train.epochs=1", "--run-dir", str(run),
           "--resume", "auto"]
    first = run_cli(*cmd)
    assert first.returncode == 0, first.stderr
    assert f"pretrained: {finished[0] / 'checkpoints' / 'best.pt'}" in first.stdout
    second = run_cli(*cmd)
    assert second.returncode == 0 and second.stdout.startswith(f"note: {run} has finished"), second.stderr


@pytest.mark.slow
def test_api_resume_auto_on_a_finished_run_returns_its_result(finished):
    run, _ = finished
    result = convtrain.resume("auto", run_dir=run, progress=False)
    saved = json.loads((run / "results.json").read_text())
    assert result.run_dir == run and result.test_accuracy == saved["test_accuracy"]
    assert result.best_epoch == saved["best_epoch"] and [r.epoch for r in result.epochs] == [1, 2]
