"""Issue #22: Weights & Biases logging (log.wandb). A tiny run in offline mode (WANDB_MODE=offline: no
network, no account), read back from the offline run's own .wandb file; the missing package is one line."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrain.cli.app import app

from ..conftest import metrics_rows, run_cli
from .test_loop_features import TINY

cli = CliRunner()


def wandb_records(path):
    """The protobuf records of an offline run's .wandb file: W&B's log format (a 7-byte ':W&B' header, then
    32 KiB blocks of records, each crc32 + length + kind, FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the padding at a block's end
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B writes some keys as a one-part nested key


@pytest.mark.slow
def test_wandb_offline_logs_config_epochs_test_numbers_and_best_pt(data_root, tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra (pip install 'convtrain[wandb]')")
    run = tmp_path / "run"
    r = run_cli("train", "--config", "configs/smoke.yaml", "--device", "cpu", "--run-dir", str(run),
                *[a for s in TINY for a in ("--set", s)], "--set", "train.epochs=2", "--set", "log.plots=false",
                "--set", "log.wandb=true", "--set", "log.wandb_log_model=true",
                env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr + r.stdout
    (found,) = run.glob("wandb/offline-run-*/run-*.wandb")
    records = list(wandb_records(found))
    kinds = [x.WhichOneof("record_type") for x in records]
    (start,) = [x.run for x in records if x.WhichOneof("record_type") == "run"]
    config = {u.key: json.loads(u.value_json) for u in start.config.update}
    assert start.project == "convtrain" and config["train"]["epochs"] == 2 and config["log"]["wandb"] is True
    history = [{_key(i): json.loads(i.value_json) for i in x.history.item} for x in records
               if x.WhichOneof("record_type") == "history"]
    assert [(h["epoch"], h["_step"]) for h in history] == [(1, 1), (2, 2)]
    assert [h["val_acc"] for h in history] == [pytest.approx(float(x["val_acc"]), abs=1e-6) for x in metrics_rows(run)]
    summary = {_key(u): json.loads(u.value_json) for x in records if x.WhichOneof("record_type") == "summary"
               for u in x.summary.update}
    results = json.loads((run / "results.json").read_text())
    assert summary["test_accuracy"] == results["test_accuracy"] and summary["best_epoch"] == results["best_epoch"]
    (artifact,) = [x.artifact for x in records if x.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "model" and [m.path for m in artifact.manifest.contents] == ["best.pt"]
    assert "exit" in kinds
    assert "wandb: run " in (run / "train.log").read_text() and "(offline)" in (run / "train.log").read_text()


@pytest.mark.slow
def test_wandb_missing_is_one_line_saying_how_to_install_it(data_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    run = tmp_path / "run"
    r = cli.invoke(app, ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--run-dir", str(run),
                         *[a for s in TINY for a in ("--set", s)], "--set", "log.wandb=true"])
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: log.wandb needs Weights & Biases: pip install 'convtrain[wandb]'"
    assert not run.exists()  # refused before the run directory was made


def test_wandb_mode_is_checked():
    r = cli.invoke(app, ["config", "show", "--set", "log.wandb_mode=sometimes"])
    assert r.exit_code == 2 and "must be online, offline, disabled or null" in r.stderr


class _FakeWandb:
    """wandb's init and Settings, recording what each init was given (no wandb needed, nothing written)."""

    def __init__(self) -> None:
        self.inits: list[dict] = []

    def Settings(self, **kwargs):  # noqa: N802 - wandb's own name
        return kwargs

    def init(self, **kwargs):
        from types import SimpleNamespace

        self.inits.append(kwargs)
        return SimpleNamespace(id=kwargs["id"], settings=SimpleNamespace(mode=kwargs["mode"]))


def _started_id(fake: _FakeWandb, run_dir, monkeypatch) -> str:
    """The W&B id the wandb hook gives a run in ``run_dir`` (built as the runner builds it)."""
    from types import SimpleNamespace

    from convtrain.config.load import load_config
    from convtrain.training.hooks import wandblog

    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = load_config(None, ["log.wandb=true", "log.wandb_mode=offline"])
    logger = wandblog.build(cfg, True)
    logger.on_start(SimpleNamespace(reporter=SimpleNamespace(info=lambda text: None),
                                    rundir=SimpleNamespace(path=run_dir), cfg=cfg))
    return fake.inits[-1]["id"]


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    """The W&B id is derived from the run directory, so `train --resume` (another process, maybe another
    spelling of the path) continues the same W&B run, and another run never lands in it. Breaks tried
    (issue 32's audit planted the first; the slow offline test passed): the id left to W&B (``id=None``):
    no id given; the id from the folder's name alone: two runs named alike shared one; Python's ``hash``
    of the path (salted per process): the resuming process's id differed."""
    import subprocess

    fake = _FakeWandb()
    run = tmp_path / "runs" / "mnist-1"
    run.mkdir(parents=True)
    first = _started_id(fake, run, monkeypatch)
    assert fake.inits[-1]["resume"] == "allow" and first
    monkeypatch.chdir(tmp_path)
    assert _started_id(fake, Path("runs/mnist-1"), monkeypatch) == first  # the same folder, spelled relative
    other = tmp_path / "elsewhere" / "mnist-1"
    other.mkdir(parents=True)
    assert _started_id(fake, other, monkeypatch) != first  # another run of the same name
    code = "import sys; from convtrain.training.hooks.wandblog import run_id; print(run_id(sys.argv[1]))"
    resumed = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert resumed.stdout.strip() == first, resumed.stderr  # the resuming process computes the same id
