"""Two processes on the CPU (gloo), started through `convtrain train --nproc-per-node 2`."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from convtrain import distributed
from convtrain.errors import ConfigError

from .conftest import run_cli

TINY = ["--config", "configs/smoke.yaml", "--set", "data.train_subset=4096", "--set", "data.val_size=1000",
        "--set", "data.test_subset=1000", "--set", "train.epochs=2", "--set", "train.log_every=1000",
        "--set", "optim.lr=1e-3"]


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ddp_runs(data_root, tmp_path_factory):
    """The same run as 2 processes x batch 32 and as 1 process x batch 64."""
    base = tmp_path_factory.mktemp("ddp")
    two, one = base / "two", base / "one"
    r2 = run_cli("train", *TINY, "--set", "train.batch_size=32", "--nproc-per-node", "2", "--run-dir", str(two))
    assert r2.returncode == 0, r2.stderr[-3000:]
    r1 = run_cli("train", *TINY, "--set", "train.batch_size=64", "--run-dir", str(one))
    assert r1.returncode == 0, r1.stderr
    return two, one, r2


@pytest.mark.slow
def test_two_process_run_writes_once(ddp_runs):
    two, _, result = ddp_runs
    rows = _rows(two)
    assert [r["epoch"] for r in rows] == ["1", "2"]  # one row per epoch, not one per rank
    assert result.stdout.count("epoch 1/2  train loss") == 1  # only rank 0 prints
    assert (two / "config.yaml").read_text().startswith("# resolved config; 2 process(es) x train.batch_size 32 = global batch 64")
    results = json.loads((two / "results.json").read_text())
    assert results["world_size"] == 2 and results["test_num_samples"] == 1000  # every test image counted once


@pytest.mark.slow
def test_validation_accuracy_equals_single_process_eval(ddp_runs):
    two, _, _ = ddp_runs
    best_row = max(_rows(two), key=lambda r: float(r["val_acc"]))
    report = json.loads(run_cli("eval", "--checkpoint", str(two / "checkpoints" / "best.pt"), "--split", "val",
                                "--json").stdout)
    assert report["num_samples"] == 1000
    assert report["accuracy"] == pytest.approx(float(best_row["val_acc"]), abs=1e-9)


@pytest.mark.slow
def test_two_by_32_matches_one_by_64(ddp_runs):
    """Same seed: rank r takes every 2nd index of the same permutation, so the two ranks' batches of 32
    together are exactly the single process's batch of 64 and DDP's averaged gradient is the same
    gradient. Only float summation order differs, so losses agree to far better than 1%; we allow 2%
    relative on training loss and 1 point of accuracy, which still catches a sharding or
    averaging mistake (those change the loss by tens of percent)."""
    two, one, _ = ddp_runs
    for a, b in zip(_rows(two), _rows(one)):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=0.02)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=0.02)
        assert abs(float(a["val_acc"]) - float(b["val_acc"])) <= 0.01


@pytest.mark.slow
def test_checkpoint_from_ddp_loads_in_single_process(ddp_runs):
    two, _, _ = ddp_runs
    ckpt = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"]["state_dict"])
    assert len(ckpt["training_state"]["rng"]) == 2  # per-rank RNG states, for an exact resume


def test_more_gpus_than_exist_is_refused_before_start(tmp_path):
    result = run_cli("train", *TINY, "--device", "cuda", "--nproc-per-node", "2", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "need 2 GPU(s), but" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_gpu_count_check_unit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    distributed.check_gpu_count("cuda", 2)
    with pytest.raises(ConfigError, match="3 process\\(es\\) with --device cuda need 3 GPU\\(s\\), but 2"):
        distributed.check_gpu_count("cuda", 3)
    with pytest.raises(ConfigError, match="names GPU 5"):
        distributed.check_gpu_count("cuda", 1, [5])
    distributed.check_gpu_count("cpu", 64)  # CPU processes need no GPU


@pytest.mark.slow
def test_sync_batchnorm_on_cpu_is_refused_before_start(data_root, tmp_path):
    result = run_cli("train", *TINY, "--set", "model.name=bn_cnn", "--set", "train.sync_batchnorm=true",
                     "--nproc-per-node", "2", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "train.sync_batchnorm needs GPUs" in result.stderr
    assert not (tmp_path / "r").exists()
