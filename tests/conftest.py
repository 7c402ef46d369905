"""Shared fixtures: the data root, and one small real training run reused by several tests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

# pytest-xdist's workers inherit COLUMNS=80 and LINES=24 (set by execnet), which convtrain honours for
# piped output: the same test then saw 80-column tables under `make test` and 120 under plain pytest.
# Tests measure the default pipe width; the ones about COLUMNS set it themselves.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


def _data_root() -> Path:
    return Path(os.environ.get("CONVTRAIN_DATA_ROOT") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The MNIST/Fashion-MNIST folder. In CI a missing folder fails the run instead of skipping."""
    root = _data_root()
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        message = f"MNIST not found under {root}; set CONVTRAIN_DATA_ROOT"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    os.environ["CONVTRAIN_DATA_ROOT"] = str(root)
    return root


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m convtrain ARGS`` in a real subprocess (exit codes and streams as a user sees them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


# A real run small enough for the test suite: the article CNN on 20k MNIST images for one epoch.
SMALL_RUN = ["--set", "data.train_subset=20000", "--set", "data.val_size=2000", "--set", "train.epochs=1",
             "--set", "optim.lr=2e-3", "--set", "train.test_every_epoch=false", "--device", "cpu"]


@pytest.fixture(scope="session")
def trained_run(data_root, tmp_path_factory) -> Path:
    """Train the article CNN once (about 10 s on 2 cores) and return its run directory."""
    run_dir = tmp_path_factory.mktemp("runs") / "mnist-small"
    result = run_cli("train", "--config", "configs/mnist.yaml", *SMALL_RUN, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr + result.stdout
    return run_dir


def metrics_rows(run: Path) -> list[dict]:
    """A run directory's metrics.csv as dicts of strings (as the file holds them)."""
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def results_json(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def load_ckpt(run: Path, name: str) -> dict:
    import torch

    return torch.load(run / "checkpoints" / name, weights_only=True)
