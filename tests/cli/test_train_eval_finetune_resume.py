"""End to end through the real command line: train, eval, finetune, resume, on real MNIST."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from ..conftest import REPO, run_cli


def test_run_directory_contents(trained_run):
    names = sorted(p.name for p in trained_run.iterdir())
    plots = ["confusion.png", "curves.png"] if importlib.util.find_spec("matplotlib") else []
    assert names == sorted(["checkpoints", "config.yaml", "metrics.csv", "results.json", "train.log", *plots])
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["seed"] == 0 and cfg["data"]["train_subset"] == 20000 and cfg["model"]["name"] == "article_cnn"
    with open(trained_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(rows[0])
    assert "epoch 1/1" in (trained_run / "train.log").read_text()


def test_short_real_run_reaches_97_percent(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    assert results["status"] == "finished"
    assert results["test_num_samples"] == 10000
    assert results["test_accuracy"] >= 0.97, results["test_accuracy"]
    assert 0 < results["test_loss"] < 0.2


def test_checkpoints_open_with_weights_only(trained_run):
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(trained_run / "checkpoints" / name, weights_only=True)
        assert ckpt["model"]["name"] == "article_cnn"
        assert ckpt["classes"] == [str(i) for i in range(10)]
        assert ckpt["normalization"] == {"mean": [0.5], "std": [0.5]}
        assert ckpt["config"]["optim"]["lr"] == pytest.approx(2e-3)
    assert "optimizer" in torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)["training_state"]


@pytest.mark.slow
def test_eval_json_from_checkpoint_alone(trained_run):
    result = run_cli("eval", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"), "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is exactly one JSON object
    for key in ("accuracy", "loss", "num_samples", "per_class_accuracy", "confusion_matrix"):
        assert key in report
    assert report["num_samples"] == 10000
    assert len(report["confusion_matrix"]) == 10 and sum(map(sum, report["confusion_matrix"])) == 10000
    saved = json.loads((trained_run / "results.json").read_text())
    assert report["accuracy"] == pytest.approx(saved["test_accuracy"])


@pytest.mark.slow
def test_eval_val_split_matches_training_validation(trained_run):
    result = run_cli("eval", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"), "--split", "val",
                     "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with open(trained_run / "metrics.csv") as f:
        val_acc = float(next(csv.DictReader(f))["val_acc"])
    assert report["num_samples"] == 2000
    assert report["accuracy"] == pytest.approx(val_acc, abs=1e-6)


@pytest.mark.slow
def test_eval_human_output(trained_run):
    result = run_cli("eval", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"))
    assert result.returncode == 0, result.stderr
    assert "per-class accuracy" in result.stdout and "confusion matrix" in result.stdout


def test_eval_checkpoint_for_other_class_count(trained_run, tmp_path):
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    ckpt["num_classes"], ckpt["classes"] = 4, ["a", "b", "c", "d"]
    path = tmp_path / "four.pt"
    torch.save(ckpt, path)
    result = run_cli("eval", "--checkpoint", str(path))
    assert result.returncode == 1
    # the loader checks classes against the head before anything is built (a valid 4-class
    # checkpoint reaches evaluate's class-count check: tests/cli/test_everyday_commands.py)
    assert "has 10 outputs but the checkpoint names 4 classes" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_train_refuses_non_empty_run_dir(trained_run):
    before = (trained_run / "metrics.csv").read_bytes()
    result = run_cli("train", "--config", "configs/smoke.yaml", "--run-dir", str(trained_run))
    assert result.returncode == 2
    assert "not empty" in result.stderr and "--run-dir" in result.stderr
    assert (trained_run / "metrics.csv").read_bytes() == before


@pytest.mark.slow
def test_finetune_replaces_head_and_freezes_backbone(trained_run, tmp_path):
    pretrained = trained_run / "checkpoints" / "best.pt"
    run_dir = tmp_path / "ft"
    result = run_cli("finetune", "--checkpoint", str(pretrained), "--config", "configs/fashion_finetune.yaml",
                     "--set", "finetune.freeze=[backbone]", "--set", "data.train_subset=640", "--set", "train.epochs=1",
                     "--set", "data.val_size=500", "--set", "data.test_subset=500", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "re-initialised (2): head.weight, head.bias" in result.stdout
    assert "frozen (6): backbone.conv1.weight" in result.stdout
    before = torch.load(pretrained, weights_only=True)
    after = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert after["dataset"] == "fashion_mnist" and after["classes"][0] == "T-shirt/top"
    for k, v in before["model"]["state_dict"].items():
        same = torch.equal(v, after["model"]["state_dict"][k])
        assert same == k.startswith("backbone."), k
    # a new run: epoch counters start over, the optimizer only holds the trainable head
    assert after["epoch"] == 1
    assert len(after["training_state"]["optimizer"]["state"]) == 2
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["finetune"]["checkpoint"] == str(pretrained)


@pytest.mark.slow
def test_finetune_head_and_backbone_learning_rates(trained_run, tmp_path):
    run_dir = tmp_path / "ft-lr"
    result = run_cli("finetune", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"),
                     "--config", "configs/fashion_finetune.yaml", "--set", "sched.name=none",
                     "--set", "finetune.backbone_lr=3e-4", "--set", "finetune.head_lr=3e-3",
                     "--set", "train.max_steps_per_epoch=2", "--set", "train.epochs=1", "--set", "data.val_size=500",
                     "--set", "data.test_subset=200", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    groups = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["training_state"]["optimizer"]["param_groups"]
    assert {g["name"]: g["lr"] for g in groups} == {"backbone": pytest.approx(3e-4), "head": pytest.approx(3e-3)}


@pytest.mark.slow
def test_interrupted_then_resumed_run_is_bit_identical(data_root, tmp_path):
    common = ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--set", "data.train_subset=4000", "--set", "data.val_size=500",
              "--set", "data.test_subset=500", "--set", "train.epochs=2", "--set", "sched.name=onecycle",
              "--set", "train.log_every=5", "--set", "model.name=bn_cnn", "--set", "model.kwargs.width=8",
              "--set", "data.augment.enabled=true", "--device", "cpu"]
    straight = tmp_path / "straight"
    assert run_cli(*common, "--run-dir", str(straight)).returncode == 0

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, "-m", "convtrain", *common, "--run-dir", str(resumed)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    for line in proc.stdout:  # interrupt mid-way through epoch 1
        if "step 20/" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr
    assert json.loads((resumed / "results.json").read_text())["status"] == "interrupted"
    result = run_cli("train", "--resume", str(resumed))
    assert result.returncode == 0, result.stderr

    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def metrics(run):
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in csv.DictReader(f)]
    assert metrics(straight) == metrics(resumed)


@pytest.mark.slow
def test_resume_refuses_changed_config(trained_run):
    result = run_cli("train", "--resume", str(trained_run), "--set", "optim.lr=0.1")
    assert result.returncode == 2
    assert "optim.lr: 0.002 -> 0.1" in result.stderr


@pytest.mark.slow
def test_missing_data_is_one_clear_line(tmp_path):
    result = run_cli("train", "--config", "configs/smoke.yaml", "--data-root", str(tmp_path / "nothing"),
                     "--set", "data.download=false", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "cannot load dataset 'mnist'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start


@pytest.mark.slow
def test_models_command_and_module_entry_point():
    result = run_cli("models")
    assert result.returncode == 0
    for name in ("article_cnn", "article_cnn_scratch", "lenet5", "bn_cnn"):
        assert name in result.stdout
    listing = json.loads(run_cli("models", "--json").stdout)
    assert {r["name"]: r["parameters"] for r in listing}["article_cnn"] == 421642


@pytest.mark.slow
def test_dataloader_path_trains(data_root, tmp_path):
    run_dir = tmp_path / "dl"
    result = run_cli("train", "--config", "configs/smoke.yaml", "--set", "data.loader=dataloader", "--set", "data.workers=1",
                     "--set", "data.train_subset=2000", "--set", "data.val_size=500", "--set", "data.test_subset=500",
                     "--set", "log.plots=false", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "results.json").read_text())["test_accuracy"] > 0.8


@pytest.mark.slow
def test_seeds_continue_a_mid_epoch_interrupt_bit_identically(data_root, tmp_path):
    """``train --seeds 0,1 --run-dir D`` stopped by SIGINT inside seed 0's first epoch, then the same
    command again: seed 0 resumes from its mid-epoch last.pt, seed 1 runs, and seed 0's metrics and
    summary numbers equal those of an uninterrupted ``--seeds 0`` run."""
    common = ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--set", "data.train_subset=1600",
              "--set", "data.val_size=200", "--set", "data.test_subset=200", "--set", "train.epochs=2",
              "--set", "train.log_every=5", "--set", "model.name=bn_cnn", "--set", "model.kwargs.width=4",
              "--set", "log.plots=false"]
    straight = tmp_path / "straight"
    r = run_cli(*common, "--seeds", "0", "--run-dir", str(straight))
    assert r.returncode == 0, r.stderr

    sweep = tmp_path / "sweep"
    argv = [sys.executable, "-m", "convtrain", *common, "--seeds", "0,1", "--run-dir", str(sweep)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    for line in proc.stdout:  # seed 0's epoch 1: 25 steps of 64
        if "step 10/" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    seed0 = sweep / "seed-0"
    assert json.loads((seed0 / "results.json").read_text())["status"] == "interrupted"
    assert torch.load(seed0 / "checkpoints" / "last.pt", weights_only=True)["training_state"]["epoch_complete"] is False
    assert not (sweep / "seed-1").exists() and not (sweep / "summary.json").exists()

    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert again.returncode == 0, again.stderr
    part0, _, part1 = again.stdout.partition("seed 1: ")
    assert f"resuming: {seed0}" in part0 and f"run: {sweep / 'seed-1'}" in part1, again.stdout
    assert "epoch 1/2 step 5/" not in part0, "seed 0's epoch 1 restarted from its first step"

    def metrics(run):
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in csv.DictReader(f)]
    assert metrics(seed0) == metrics(straight / "seed-0") and len(metrics(seed0)) == 2
    assert json.loads((sweep / "seed-1" / "results.json").read_text())["status"] == "finished"
    alone = json.loads((straight / "summary.json").read_text())["runs"][0]
    both = json.loads((sweep / "summary.json").read_text())
    assert both["seeds"] == [0, 1] and both["test_accuracy"]["n"] == 2
    same = ("test_accuracy", "best_epoch", "epochs", "val_acc", "test_fingerprint", "split_seed")
    assert {k: both["runs"][0][k] for k in same} == {k: alone[k] for k in same}
