"""Bad input, crashes and interruptions: one clear line, the right exit code, nothing lost."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app

from ..conftest import REPO, run_cli

runner = CliRunner()
QUICK = ["--set", "data.train_subset=640", "--set", "data.val_size=200", "--set", "data.test_subset=200",
         "--set", "train.epochs=1"]


def _snapshot(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cases(tmp: Path, trained: Path) -> list[tuple[str, list[str], int, str]]:
    """(name, argv, exit code, text the one-line message must contain)."""
    (tmp / "malformed.yaml").write_text("train:\n  epochs: 1\n bad: [\n")
    (tmp / "unknown.yaml").write_text("train:\n  epoch: 1\n")
    (tmp / "wrongtype.yaml").write_text("train:\n  batch_size: big\n")
    (tmp / "range.yaml").write_text("optim:\n  lr: -1\n")
    (tmp / "a_dir.yaml").mkdir()
    best = trained / "checkpoints" / "best.pt"
    blob = best.read_bytes()
    (tmp / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    (tmp / "notckpt.pt").write_text("definitely not a checkpoint")
    other = torch.load(best, weights_only=True)
    other["model"]["name"] = "lenet5"
    torch.save(other, tmp / "othermodel.pt")
    (tmp / "afile").write_text("x")
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return [
        ("malformed YAML", ["train", "-c", str(tmp / "malformed.yaml")], 2, "malformed YAML at line 3, column 2"),
        ("unknown key", ["train", "-c", str(tmp / "unknown.yaml")], 2, "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ("wrong type", ["train", "-c", str(tmp / "wrongtype.yaml")], 2, "'train.batch_size' must be an integer"),
        ("out of range", ["train", "-c", str(tmp / "range.yaml")], 2, "'optim.lr' must be > 0"),
        ("missing config", ["train", "-c", str(tmp / "nope.yaml")], 2, "config file not found"),
        ("config is a dir", ["train", "-c", str(tmp / "a_dir.yaml")], 2, "config path is a directory"),
        ("missing dataset", ["train", "-c", "configs/smoke.yaml", "--data-root", str(tmp / "empty"),
                             "--set", "data.download=false", "--run-dir", str(tmp / "r1")], 1, "cannot load dataset 'mnist'"),
        ("checkpoint missing", ["eval", "--checkpoint", str(tmp / "none.pt")], 1, "checkpoint not found"),
        ("truncated checkpoint", ["eval", "--checkpoint", str(tmp / "truncated.pt")], 1, "truncated or not a PyTorch checkpoint"),
        ("not a checkpoint", ["eval", "--checkpoint", str(tmp / "notckpt.pt")], 1, "truncated or not a PyTorch checkpoint"),
        ("checkpoint of another model", ["eval", "--checkpoint", str(tmp / "othermodel.pt")], 1, "weights do not fit model 'lenet5'"),
        ("classes of another dataset", ["eval", "--checkpoint", str(best), "--dataset", "emnist"], 2, "unknown dataset 'emnist'"),
        ("non-empty run dir", ["train", "-c", "configs/smoke.yaml", "--run-dir", str(trained)], 2, "is not empty"),
        ("unwritable run dir", ["train", "-c", "configs/smoke.yaml", *QUICK, "--run-dir", str(tmp / "afile" / "run")], 2,
         "cannot create run directory"),
        ("resume a non-run", ["train", "--resume", str(tmp / "a_dir.yaml")], 2, "is a folder, not a run directory"),
        ("bad --set", ["train", "-c", "configs/smoke.yaml", "--set", "optim.lr"], 2, "expected key.path=value"),
        ("image that cannot be decoded", ["predict", "--checkpoint", str(best), str(tmp / "broken.png")], 1,
         "cannot decode image"),
    ]


def test_bad_input_table(data_root, trained_run, tmp_path):
    before = _snapshot(trained_run)
    for name, argv, code, text in _cases(tmp_path, trained_run):
        result = runner.invoke(app, argv)
        assert result.exit_code == code, f"{name}: exit {result.exit_code}\n{result.output}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {result.stderr!r}"
        assert text in lines[0], f"{name}: {lines[0]}"
        assert "Traceback" not in result.output
    assert _snapshot(trained_run) == before  # nothing already on disk was modified


@pytest.mark.slow
def test_disk_full_while_saving(data_root, tmp_path, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("format") == checkpoint.FORMAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    result = runner.invoke(app, ["train", "-c", "configs/smoke.yaml", *QUICK, "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(p.name.startswith(".") for p in (tmp_path / "r" / "checkpoints").iterdir())  # no temp files left


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    from convtrain.training import engine

    real = engine.train_one_epoch

    def diverge_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise engine.NonFiniteLoss(2, 7, float("nan"))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", diverge_in_epoch_2)
    run_dir = tmp_path / "r"
    result = runner.invoke(app, ["train", "-c", "configs/smoke.yaml", *QUICK, "--set", "train.epochs=3",
                                 "--run-dir", str(run_dir)])
    assert result.exit_code == 1
    assert "loss is nan at epoch 2, step 7" in result.stderr
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 1  # the last good one


@pytest.mark.slow
def test_kill_9_never_corrupts_a_checkpoint(tmp_path):
    """SIGKILL a process that rewrites a large checkpoint in a loop, at several moments; the file
    on disk is always a complete, loadable checkpoint (the old one or the new one)."""
    target = tmp_path / "last.pt"
    script = (
        "import sys, torch\n"
        "from convtrain.artifacts import checkpoint\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    checkpoint.save({'format': checkpoint.FORMAT, 'version': 1, 'i': i,\n"
        "                     'w': torch.full((8_000_000,), float(i))}, sys.argv[1])\n"
        "    print(i, flush=True)\n"
    )
    seen = set()
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.15):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # one save finished; the next one is under way
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # never torn (torch.load: the dict is not a full convtrain schema, which checkpoint.load now checks)
        ckpt = torch.load(target, weights_only=True)
        assert torch.all(ckpt["w"] == ckpt["i"])
        seen.add(int(ckpt["i"]))
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.tmp-")]
        for p in leftovers:  # a killed writer leaves its temporary file, never a half-written last.pt
            p.unlink()
    assert seen  # every kill left a complete checkpoint


@pytest.mark.slow
def test_kill_9_during_training_then_resume_is_exact(data_root, tmp_path):
    """kill -9 right after epoch 1's summary line (while its checkpoints are being written) and a
    moment later; every time last.pt loads and the resumed run ends bit-identical."""
    common = ["train", "-c", "configs/smoke.yaml", "--device", "cpu", "--set", "data.train_subset=3000", "--set", "data.val_size=300",
              "--set", "data.test_subset=300", "--set", "train.epochs=3", "--set", "sched.name=cosine"]
    straight = tmp_path / "straight"
    assert run_cli(*common, "--run-dir", str(straight)).returncode == 0
    reference = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
    resumed_runs = 0
    for i, after_save in enumerate((False, True)):
        run_dir = tmp_path / f"killed{i}"
        proc = subprocess.Popen([sys.executable, "-m", "convtrain", *common, "--run-dir", str(run_dir)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in proc.stdout:
            if line.startswith("epoch 1/3  train loss"):
                break
        # the second kill waits for epoch 1's last.pt (a fixed 0.4 s came too early on a loaded machine,
        # so neither kill left anything to resume), then lands in epoch 2's training
        deadline = time.monotonic() + 60
        while after_save and not (run_dir / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for name in ("last.pt", "best.pt"):
            if (run_dir / "checkpoints" / name).exists():
                checkpoint.load(run_dir / "checkpoints" / name)  # complete, never torn
        if not (run_dir / "checkpoints" / "last.pt").exists():
            continue  # killed before the first last.pt landed: nothing to resume, nothing corrupt
        result = run_cli("train", "--resume", str(run_dir))
        assert result.returncode == 0, result.stderr
        resumed = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]["state_dict"]
        assert all(torch.equal(reference[k], resumed[k]) for k in reference)
        assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]  # stale temp files cleaned
        resumed_runs += 1
    assert resumed_runs >= 1
