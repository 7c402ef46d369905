"""Two processes on the CPU (gloo), started through `convtrain train --nproc-per-node 2`."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from convtrain.errors import ConfigError
from convtrain.training import distributed

from ..conftest import REPO, run_cli

# Plain SGD (no momentum): unlike Adam it is not blind to the gradient's scale, and at this learning
# rate it does not amplify float rounding the way momentum does. One thread per process, the CPU
# forced (a GPU host would otherwise take --device auto to CUDA).
COMMON = ["--config", "configs/smoke.yaml", "--set", "data.train_subset=4096", "--set", "data.val_size=1000",
          "--set", "data.test_subset=1000", "--set", "train.epochs=2", "--set", "train.log_every=1000",
          "--set", "optim.name=sgd", "--set", "optim.lr=0.02", "--set", "optim.momentum=0", "--set", "speed.threads=1",
          "--set", "log.plots=false"]
TINY = [*COMMON, "--device", "cpu"]


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def ddp_runs(data_root, tmp_path_factory):
    """The same run as 2 processes x batch 32 and as 1 process x batch 64."""
    base = tmp_path_factory.mktemp("ddp")
    two, one = base / "two", base / "one"
    r2 = run_cli("train", *TINY, "--set", "train.batch_size=32", "--nproc-per-node", "2",
                 "--run-dir", str(two))
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
                                "--device", "cpu", "--json").stdout)
    assert report["num_samples"] == 1000
    assert report["accuracy"] == pytest.approx(float(best_row["val_acc"]), abs=1e-9)


@pytest.mark.slow
def test_two_by_32_matches_one_by_64(ddp_runs):
    """Same seed: rank r takes every 2nd index of the same permutation, so the two ranks' batches of 32
    together are exactly the single process's batch of 64 and DDP's averaged gradient is the same
    gradient. Only float summation order differs, and on some CPUs the kernels chosen for a batch of
    32 and one of 64 round differently; max-pool near-ties then route gradients differently and the
    runs drift apart. Measured (2 epochs, 128 SGD steps): on a 2-core AMD EPYC, losses equal to 6
    digits (relative 1.8e-6) and weights within 3.9e-6; on a 2-core AVX-512 Xeon (2026-12-02, the
    same on the commit before this round), epoch 1's train loss within 5.6e-6 but epoch 1's val loss
    1.4e-4, epoch 2's losses up to 3.1e-4, val accuracy 0.002 and weights 4.6e-3 apart. So epoch 1's
    train loss (the mean over exactly the same 64 first-epoch batches) carries the tight bound: a rank
    reading the wrong shard moves it by 0.14% (contiguous halves of the permutation instead of every
    2nd index: 1.78972 vs 1.7872) and a doubled gradient (loss x world size: 1.43768) by 20%; the rest
    is bounded at about 3x what the Xeon showed, which still catches a doubled gradient."""
    two, one, _ = ddp_runs
    rows_two, rows_one = _rows(two), _rows(one)
    assert len(rows_two) == len(rows_one) == 2
    assert float(rows_two[0]["train_loss"]) == pytest.approx(float(rows_one[0]["train_loss"]), rel=2e-5, abs=0)
    for a, b in zip(rows_two, rows_one):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3, abs=0)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-3, abs=0)
        assert abs(float(a["val_acc"]) - float(b["val_acc"])) <= 0.005  # at most 5 of 1000 images
    w2 = torch.load(two / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    w1 = torch.load(one / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    for name in w1:
        assert float((w2[name] - w1[name]).norm() / w1[name].norm()) < 1.5e-2, name


@pytest.mark.slow
def test_only_rank_0_prints_the_summary(ddp_runs):
    """Every rank runs the same command; only rank 0 may render the summary on the shared terminal."""
    _, _, result = ddp_runs
    assert result.stdout.count("run summary") == 1
    assert result.stdout.count("best epoch ") == 1
    assert result.stdout.count("run directory: ") == 1


@pytest.mark.slow
def test_checkpoint_from_ddp_loads_in_single_process(ddp_runs):
    two, _, _ = ddp_runs
    ckpt = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"]["state_dict"])
    assert len(ckpt["training_state"]["rng"]) == 2  # per-rank RNG states, for an exact resume


@pytest.mark.slow
def test_more_gpus_than_exist_is_refused_before_start(tmp_path):
    # hide every GPU, so that the check refuses on any machine (a 2-GPU host would otherwise start)
    result = run_cli("train", *COMMON, "--device", "cuda", "--nproc-per-node", "2", "--run-dir", str(tmp_path / "r"),
                     env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert "need 2 GPU(s), but 0 GPU(s) are visible" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_config_mistake_under_the_launcher_is_one_line_without_a_config_file(tmp_path):
    # with --set only (no --config) every worker used to load the config and print the same error
    result = run_cli("train", "--device", "cpu", "--set", "train.epochz=1", "--nproc-per-node", "2",
                     "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.count("unknown key 'train.epochz'") == 1, result.stderr
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


@pytest.mark.slow
def test_two_nodes_on_one_machine_write_one_run(data_root, tmp_path):
    """The multi-node command of docs/distributed.md, for real: two torchrun launchers (one process each) meet at
    a c10d rendezvous on 127.0.0.1 and train one run directory. c10d hands out ranks in arrival
    order (it ignores --node-rank), so either launcher may hold rank 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    stray = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in stray}
    train = ["-m", "convtrain", "train", "--config", "configs/smoke.yaml", "--device", "cpu",
             "--set", "data.train_subset=1024", "--set", "data.val_size=256", "--set", "data.test_subset=256",
             "--set", "train.epochs=2", "--set", "train.log_every=1000", "--set", "speed.threads=1",
             "--set", "log.plots=false", "--run-dir", str(run_dir)]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(n), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                               *train], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("run summary") == 1 and stdout.count("epoch 1/2  train loss") == 1  # rank 0 alone speaks
    assert [r["epoch"] for r in _rows(run_dir)] == ["1", "2"]
    log = (run_dir / "train.log").read_text().splitlines()
    assert sum(line.startswith("epoch 1/2  train loss") for line in log) == 1
    assert sum(line.startswith("epoch 2/2  train loss") for line in log) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert json.loads((run_dir / "results.json").read_text())["world_size"] == 2
    assert len(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["training_state"]["rng"]) == 2


@pytest.mark.slow
def test_accumulation_under_ddp_matches_one_process(data_root, tmp_path):
    """train.accumulate=2 under DDP: 2 processes x batch 32 x 2 batches per step against 1 process x
    batch 64 x 2. As above, the ranks' batches of 32 together are the single process's batch of 64, so
    each optimizer step sees the same 128 images and (no_sync on the first batch, all-reduce on the
    window's last) the same averaged gradient. Bounds as in test_two_by_32_matches_one_by_64. Measured
    (2026-12-04, 2-core host, 16 optimizer steps): losses equal to all 6 printed digits, weights within
    3.2e-7. Breaks tried: all-reduce on the window's first batch instead of its last (train loss 2.24007
    vs 2.23807) and never all-reducing (2.2395): both fail the 2e-5 bound on the train loss."""
    common = [*TINY, "--set", "data.train_subset=2048", "--set", "train.epochs=1", "--set", "train.accumulate=2"]
    two, one = tmp_path / "two", tmp_path / "one"
    r2 = run_cli("train", *common, "--set", "train.batch_size=32", "--nproc-per-node", "2", "--run-dir", str(two))
    assert r2.returncode == 0, r2.stderr[-3000:]
    r1 = run_cli("train", *common, "--set", "train.batch_size=64", "--run-dir", str(one))
    assert r1.returncode == 0, r1.stderr
    (a,), (b,) = _rows(two), _rows(one)
    assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=2e-5, abs=0)
    assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-3, abs=0)
    assert abs(float(a["val_acc"]) - float(b["val_acc"])) <= 0.005
    w2 = torch.load(two / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    w1 = torch.load(one / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    for name in w1:
        assert float((w2[name] - w1[name]).norm() / w1[name].norm()) < 1.5e-2, name
