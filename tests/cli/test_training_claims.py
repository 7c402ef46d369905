"""Claims of `convtrain train` checked on real runs whose outcome the test knows in advance.

Each test here was written to fail on a deliberately broken version of the feature it covers
(issue #10, part 1); the break tried for each is noted in its docstring. The runs are small real
MNIST runs on the CPU (``--device cpu``: the numbers below were measured there, and a GPU host must
not turn them into CUDA runs).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from convtrain.cli.app import app

from ..conftest import load_ckpt as _ckpt
from ..conftest import metrics_rows as _rows
from ..conftest import results_json as _results
from ..conftest import run_cli

runner = CliRunner()

TINY = ["--device", "cpu", "--set", "log.plots=false"]


# metrics.csv keeps 6 significant digits
CSV = dict(rel=1e-5, abs=1e-300)


def _first_argmax(values: list[float]) -> int:
    """1-based epoch of the first maximum (ties keep the earlier epoch)."""
    return max(range(len(values)), key=lambda i: (values[i], -i)) + 1


def _snapshot(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# best.pt is the epoch with the best validation accuracy


@pytest.fixture(scope="module")
def ruined_run(data_root, tmp_path_factory) -> Path:
    """4 epochs; the lr jumps 500x after epoch 3 (step schedule, gamma 500), which ruins epoch 4.

    Measured on the CPU (seed 2, 300 validation and 300 test images): val acc 0.913, 0.943, 0.930,
    0.123 and test acc 0.883, 0.917, 0.963, 0.093, so the best validation epoch (2) is neither the
    last epoch (4) nor the best test epoch (3). A real subprocess, so the thread count and the
    numbers are those of a fresh `convtrain train`.
    """
    run = tmp_path_factory.mktemp("claims") / "ruined"
    result = run_cli("train", "--config", "configs/smoke.yaml", *TINY, "--seed", "2",
                     "--set", "data.train_subset=2000", "--set", "data.val_size=300", "--set", "data.test_subset=300",
                     "--set", "data.split_seed=null",  # held out with seed 2, as measured (data.split_seed came later)
                     "--set", "train.epochs=4", "--set", "train.test_every_epoch=true", "--set", "sched.name=step",
                     "--set", "sched.step_epochs=3", "--set", "sched.gamma=500", "--run-dir", str(run))
    assert result.returncode == 0, result.stderr
    (run / "stdout.txt").write_text(result.stdout)  # for the summary-line check below
    return run


@pytest.mark.slow
def test_best_checkpoint_is_the_best_validation_epoch_not_the_last_nor_the_best_test(ruined_run):
    """Breaks tried: best = last epoch (improved = True); best chosen by test_acc when it is
    computed: both fail here."""
    rows = _rows(ruined_run)
    val = [float(r["val_acc"]) for r in rows]
    test = [float(r["test_acc"]) for r in rows]
    best = _first_argmax(val)
    # the run must separate the three candidates, or this test proves nothing
    assert best != len(rows), f"the last epoch is the best one: {val}"
    assert _first_argmax(test) != best, f"val and test agree on the best epoch: val {val}, test {test}"

    assert _ckpt(ruined_run, "best.pt")["epoch"] == best
    assert _ckpt(ruined_run, "last.pt")["epoch"] == len(rows)
    results = _results(ruined_run)
    assert results["status"] == "finished"
    assert results["best_epoch"] == best
    assert results["best_val_acc"] == pytest.approx(val[best - 1], **CSV)
    assert f"best epoch {best} (val acc {val[best - 1]:.4f})" in (ruined_run / "stdout.txt").read_text()

    # best.pt holds that epoch's weights: evaluating it on the validation split gives that row back,
    # and results.json's test accuracy is best.pt's, not the last epoch's
    evaluated = runner.invoke(app, ["eval", "--checkpoint", str(ruined_run / "checkpoints" / "best.pt"),
                                    "--split", "val", "--device", "cpu", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(val[best - 1], **CSV)
    assert results["test_accuracy"] == pytest.approx(test[best - 1], **CSV)


@pytest.fixture(scope="module")
def frozen_run(data_root, tmp_path_factory) -> Path:
    """3 epochs where epochs 2 and 3 barely move the weights (step schedule, gamma 1e-9 every epoch):
    the validation accuracy ties across all three, and the test set is not evaluated per epoch."""
    run = tmp_path_factory.mktemp("claims") / "frozen"
    result = runner.invoke(app, ["train", "--config", "configs/smoke.yaml", *TINY, "--set", "data.train_subset=1000",
                                 "--set", "data.val_size=300", "--set", "data.test_subset=300", "--set", "train.epochs=3",
                                 "--set", "sched.name=step", "--set", "sched.step_epochs=1", "--set", "sched.gamma=1e-9",
                                 "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.slow
def test_tied_validation_accuracy_keeps_the_earlier_epoch(frozen_run):
    """Break tried: `>=` instead of `>` when comparing with the best so far (best.pt becomes epoch 3): fails."""
    val = [float(r["val_acc"]) for r in _rows(frozen_run)]
    assert len(set(val)) == 1, f"the epochs were meant to tie: {val}"
    assert _ckpt(frozen_run, "best.pt")["epoch"] == 1
    assert _results(frozen_run)["best_epoch"] == 1


@pytest.mark.slow
def test_test_columns_are_filled_only_with_test_every_epoch(ruined_run, frozen_run):
    """Break tried: test metrics always computed (test columns filled in frozen_run): fails."""
    for r in _rows(ruined_run):  # train.test_every_epoch=true
        assert 0 <= float(r["test_acc"]) <= 1 and float(r["test_loss"]) > 0 and float(r["test_seconds"]) > 0
    for r in _rows(frozen_run):  # the default, false
        assert (r["test_loss"], r["test_acc"], r["test_seconds"]) == ("", "", "")
    # results.json always tests best.pt at the end
    assert _results(frozen_run)["test_num_samples"] == 300


@pytest.mark.slow
def test_train_seconds_is_the_sum_of_the_epochs_training_seconds(ruined_run):
    """Break tried: train_seconds also counting the validation seconds: fails."""
    rows = _rows(ruined_run)
    assert _results(ruined_run)["train_seconds"] == pytest.approx(sum(float(r["seconds"]) for r in rows), **CSV)
    assert all(float(r["seconds"]) > 0 for r in rows)


# --------------------------------------------------------------------------------------------
# A real divergence: results.json says failed, the last good checkpoint stays


@pytest.mark.slow
def test_real_divergence_marks_the_run_failed_and_keeps_the_last_good_epoch(data_root, tmp_path):
    """SGD at lr 0.01 for epoch 1, then 1e6 (step schedule, gamma 1e8): the loss is NaN at step 3 of
    epoch 2 (measured). No monkeypatching: the NaN comes from real arithmetic.
    Break tried: not writing status=failed (results.json missing): fails."""
    run = tmp_path / "nan"
    result = run_cli("train", "--config", "configs/smoke.yaml", *TINY, "--set", "data.train_subset=640",
                     "--set", "data.val_size=200", "--set", "data.test_subset=200", "--set", "train.epochs=3",
                     "--set", "optim.name=sgd", "--set", "optim.lr=0.01", "--set", "sched.name=step",
                     "--set", "sched.step_epochs=1", "--set", "sched.gamma=1e8", "--run-dir", str(run))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: loss is nan at epoch 2"), result.stderr
    results = _results(run)
    assert results["status"] == "failed" and results["epoch"] == 2
    assert [r["epoch"] for r in _rows(run)] == ["1"]
    last = _ckpt(run, "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"]["state_dict"].values())


# --------------------------------------------------------------------------------------------
# Learning-rate schedules follow their formulas at every step


def _expected_lr(name: str, base: float, t: int, spe: int, epochs: int, s: dict) -> float:
    """The lr after ``t`` optimizer steps, written from the documented formulas (not from the code)."""
    total = spe * epochs
    if name == "step":
        return base * s["gamma"] ** (t // (s["step_epochs"] * spe))
    if name == "cosine":
        warmup = round(s["warmup_epochs"] * spe)
        if t < warmup:  # linear warm-up: the k-th step (k = t + 1) runs at k/warmup of the lr
            return base * (t + 1) / warmup
        progress = min((t - warmup) / (total - warmup), 1.0)
        return s["min_lr"] + (base - s["min_lr"]) * 0.5 * (1 + math.cos(math.pi * progress))
    # onecycle: PyTorch's OneCycleLR (cosine anneal, div_factor 25, final_div_factor 1e4)
    start, low = base / 25, base / 25 / 1e4
    peak = s["pct_start"] * total - 1
    if t <= peak:
        a, b, pct = start, base, t / peak
    else:
        a, b, pct = base, low, (t - peak) / (total - 1 - peak)
    return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))


SCHEDULES = {
    "step": {"step_epochs": 1, "gamma": 0.5},
    "cosine": {"warmup_epochs": 0.5, "min_lr": 2e-4},
    "onecycle": {"pct_start": 0.3},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_lr_schedule_matches_its_formula_at_every_step(data_root, tmp_path, name):
    """The lr after every optimizer step (TensorBoard's train/lr), at each epoch's end (metrics.csv)
    and in last.pt, against the formula. 3 epochs of 8 steps; cosine warms up over 4 steps.
    Breaks tried: cosine warm-up (step + 1)/warmup -> step/warmup (off by one); min_lr ignored
    (floor 0); the scheduler stepped once per epoch instead of per step (engine); step schedule
    off by one step (gamma ** ((step - 1) // every)): each fails the matching case."""
    pytest.importorskip("tensorboard", reason="the per-step lr is read from TensorBoard event files")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spe, epochs, base = 8, 3, 1e-3
    params = SCHEDULES[name]
    run = tmp_path / name
    sets = [f"sched.{k}={v}" for k, v in params.items()]
    result = runner.invoke(app, ["train", "--config", "configs/smoke.yaml", *TINY, "--set", "data.train_subset=640",
                                 "--set", "data.val_size=200", "--set", "data.test_subset=200",
                                 "--set", f"train.epochs={epochs}", "--set", f"train.max_steps_per_epoch={spe}",
                                 "--set", f"optim.lr={base}", "--set", f"sched.name={name}",
                                 *[a for s in sets for a in ("--set", s)], "--set", "log.tensorboard=true",
                                 "--run-dir", str(run)])
    assert result.exit_code == 0, result.output

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/lr")}
    assert sorted(logged) == list(range(1, spe * epochs + 1))
    for t, lr in logged.items():  # TensorBoard stores float32
        assert lr == pytest.approx(_expected_lr(name, base, t, spe, epochs, params), rel=1e-5), f"after step {t}"
    for r in _rows(run):
        t = int(r["epoch"]) * spe
        assert float(r["lr"]) == pytest.approx(_expected_lr(name, base, t, spe, epochs, params), **CSV)
    groups = _ckpt(run, "last.pt")["training_state"]["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(_expected_lr(name, base, spe * epochs, spe, epochs, params), **CSV)
    # the schedules really move: not a constant lr that happens to match at one point
    assert len({round(v, 12) for v in logged.values()}) >= 3


# --------------------------------------------------------------------------------------------
# Resume with changed settings: allowed ones continue the run, the others are refused


@pytest.mark.slow
def test_resume_with_more_epochs_and_other_allowed_changes_continues_the_run(frozen_run, tmp_path):
    """A finished 3-epoch run (step schedule) resumed with --set train.epochs=4 plus every other
    setting that may change (device, train.log_every, speed.threads, speed.compile, out_dir).
    Breaks tried: train.epochs removed from the resumable settings (exit 2); the new epoch count
    ignored on resume (still 3 rows); metrics.csv rewritten from scratch (epochs 1-3 lost): all fail."""
    run = Path(shutil.copytree(frozen_run, tmp_path / "frozen"))
    before = _rows(run)
    created = (run / "config.yaml").stat().st_mtime_ns
    result = run_cli("train", "--resume", str(run), "--device", "cpu", "--set", "train.epochs=4",
                     "--set", "train.log_every=3", "--set", "speed.threads=1", "--set", "speed.compile=false",
                     "--set", f"out_dir={tmp_path / 'elsewhere'}")
    assert result.returncode == 0, result.stderr
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[:3] == before  # the finished epochs are kept as they were
    # the step schedule carries on from where it was: lr 2e-3 * gamma^4 after epoch 4
    assert float(rows[3]["lr"]) == pytest.approx(2e-3 * 1e-9 ** 4, **CSV)
    results = _results(run)
    assert results["status"] == "finished" and results["epochs"] == 4
    assert _ckpt(run, "last.pt")["epoch"] == 4
    assert not (tmp_path / "elsewhere").exists()  # out_dir only names new runs' parent folder
    # config.yaml tells what the run now does (`convtrain runs` shows 4/4 epochs), and keeps its time
    # (runs are listed by when they started). Break tried: no config update on resume: fails.
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 4
    assert (run / "config.yaml").stat().st_mtime_ns == created


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_resume_refuses_more_epochs_for_schedules_laid_out_over_the_run(data_root, tmp_path, schedule):
    """cosine and onecycle spread over the total step count, so train.epochs may not change on resume.
    Break tried: dropping the cosine/onecycle refusal (the resume then trains epoch 2): fails."""
    run = tmp_path / schedule
    result = runner.invoke(app, ["train", "--config", "configs/smoke.yaml", *TINY, "--set", "data.train_subset=640",
                                 "--set", "data.val_size=200", "--set", "data.test_subset=200", "--set", "train.epochs=1",
                                 "--set", "train.max_steps_per_epoch=3", "--set", f"sched.name={schedule}",
                                 "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    before = _snapshot(run)
    refused = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=2"])
    assert refused.exit_code == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
    assert "train.epochs: 1 -> 2" in lines[0]
    assert _snapshot(run) == before  # nothing on disk changed
