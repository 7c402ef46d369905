"""Run directories written by an earlier convtrain still evaluate, list and resume.

tests/fixtures/run-52beffa was written by convtrain at commit 52beffa (the last flat-package
version) with:

    convtrain train --set model.name=lenet5 --set data.train_subset=1000 --set data.val_size=300
      --set data.test_subset=300 --set train.epochs=1 --set train.batch_size=100
      --set train.ema.decay=0.9 --set train.early_stopping.patience=3 --set checkpoint.keep_top_k=1
      --set name=old-format --device cpu --seed 3 --run-dir old-run

(its plots left out, data.root in config.yaml made relative). last.pt holds every training-state
key of that version (EMA, stopping rules, kept checkpoints), so a loader that renames or drops
one refuses it here. The numbers below were measured with that version on 2026-12-04.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ..conftest import REPO, metrics_rows, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "run-52beffa"


@pytest.fixture
def old_run(tmp_path, data_root):
    run = tmp_path / "old-run"
    shutil.copytree(FIXTURE, run)
    return run


def test_an_old_best_pt_evaluates_to_the_same_numbers(old_run):
    r = run_cli("eval", "--checkpoint", str(old_run / "checkpoints" / "best.pt"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["num_samples"], out["accuracy"]) == (10000, 0.3352)
    assert out["loss"] == pytest.approx(2.26978, abs=1e-4)
    r = run_cli("eval", "--checkpoint", str(old_run / "checkpoints" / "best.pt"), "--split", "val", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(106 / 300)  # the run's own held-out images


@pytest.mark.slow
def test_an_old_last_pt_resumes_where_it_stopped(old_run, data_root, tmp_path):
    # the data root is not the one saved in last.pt (/work/shared/data): a run copied to another machine
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "MNIST").symlink_to(data_root / "MNIST", target_is_directory=True)
    r = run_cli("train", "--resume", str(old_run / "checkpoints" / "last.pt"), "--set", "train.epochs=2",
                env={"CONVTRAIN_DATA_ROOT": str(moved)})
    assert r.returncode == 0, r.stderr + r.stdout
    rows = metrics_rows(old_run)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0]["val_acc"] == "0.353333"  # epoch 1 as the old version wrote it, untouched
    # epoch 2 continued from the saved weights, moments and data order: 172 of 300 with that version
    assert float(rows[1]["val_acc"]) == pytest.approx(172 / 300, abs=1e-6)
    assert sorted(p.name for p in (old_run / "checkpoints").iterdir()) == ["best.pt", "epoch-002.pt", "last.pt"]
    listed = json.loads(run_cli("runs", str(old_run.parent), "--json").stdout)
    assert [(x["name"], x["status"], x["epochs"]) for x in listed] == [("old-run", "finished", 2)]


def test_the_data_root_may_move_on_resume_only_for_a_registered_dataset():
    """For mnist the root says where the same files are; for a folder or CSV the root is the data."""
    from convtrain.config.load import load_config
    from convtrain.training.start import _resumable

    assert "data.root" in _resumable(load_config(None, ["data.name=mnist"]))
    assert "data.root" not in _resumable(load_config(None, ["data.name=folder", "data.root=x"]))
