"""Issue 31 item 8: config, key and option mistakes are refused before torch is imported (a test of the
modules imported, not of seconds: `python -X importtime` lists every import), `--resume` of a complete run
says so and how to extend it, `predict --format` without `--output` is refused, `config show` takes the
shortcuts `train` takes. (The server's ?model=NAME: tests/api/test_one_vocabulary_and_arrays.py.)

Breaks tried: api.train resolving the config after _import_training again (train, finetune, seeds: torch
imported before the key error); load_config validating the file with its model check before the overrides'
keys (every --set typo imported torch); cli/tune importing training.seeds at the top of _search; _launch
importing training.distributed first; api.predict importing inference.predict before checking --invert;
api.resume without _refuse_complete (the run was re-tested and re-plotted, exit 0, torch imported); predict
without the --format check (the table printed, the format ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from ..conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "run-52beffa"  # a finished run of 1 epoch


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusals")
    shutil.copytree(FIXTURE, root / "runs" / "done")
    os.utime(root / "runs" / "done" / "results.json")  # written after last.pt, as a run writes them (not git's order)
    (root / "space.yaml").write_text("optim.lr: {float: [1.0e-3, 1.0e-2], log: true}\n")
    return root


def imports_torch(*args: str, cwd) -> tuple[subprocess.CompletedProcess, bool]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "convtrain", *args], capture_output=True,
                         text=True, cwd=cwd, env=env, timeout=120)
    return out, re.search(r"\|\s+torch$", out.stderr, re.M) is not None


def _error(out: subprocess.CompletedProcess) -> str:
    return "\n".join(line for line in out.stderr.splitlines() if not line.startswith("import time:"))


@pytest.mark.parametrize("args, message", [
    (["train", "--set", "train.epohcs=3"], "unknown key 'train.epohcs' (did you mean 'train.epochs'?)"),
    (["train", "--config", "nope"], "config file not found: nope"),
    (["train", "--config", "smoke", "--set", "optim.lr=abc"], "'optim.lr' must be a number"),
    (["train", "--device", "cdua"], "'device' must be auto, cpu, cuda"),
    (["train", "--seeds", "0,1", "--set", "train.epohcs=3"], "unknown key 'train.epohcs'"),
    (["train", "--nproc-per-node", "2", "--set", "train.epohcs=3"], "unknown key 'train.epohcs'"),
    (["finetune", "--checkpoint", "runs/done", "--set", "train.epohcs=3"], "unknown key 'train.epohcs'"),
    (["eval", "--checkpoint", "runs/done", "--set", "data.tset_size=0.2"], "eval takes only the data keys"),
    (["predict", "--checkpoint", "runs/done", "--invert", "maybe", "x.png"], "--invert must be auto, yes or no"),
    (["predict", "--checkpoint", "runs/done", "--format", "kaggle", "test.csv"],
     "--format kaggle writes a file: give --output FILE"),
    (["config", "show", "--set", "train.epohcs=3"], "unknown key 'train.epohcs'"),
    (["tune", "--config", "smoke", "--space", "space.yaml", "--trials", "2", "--set", "train.epohcs=1"],
     "unknown key 'train.epohcs'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_mistake_is_refused_before_torch_is_imported(work, args, message):
    out, torch = imports_torch(*args, cwd=work)
    assert out.returncode == 2, _error(out)
    assert message in _error(out) and len(_error(out).splitlines()) == 1, _error(out)
    assert not torch, f"torch was imported before refusing: convtrain {' '.join(args)}"


def test_resume_of_a_complete_run_says_so_and_how_to_extend_it(work):
    out, torch = imports_torch("train", "--resume", "runs/done", cwd=work)
    assert out.returncode == 2 and not torch
    assert _error(out) == ("error: run runs/done is complete: 1 of 1 epochs trained; test accuracy 0.3467; to train "
                           "it longer: convtrain train --resume runs/done --epochs 2")
    assert not (work / "runs" / "done" / ".lock").exists()
    out, torch = imports_torch("train", "--resume", "runs/done", "--set", "train.epochs=1", cwd=work)
    assert out.returncode == 2 and "is complete" in _error(out) and not torch


@pytest.mark.slow
def test_resume_of_a_complete_run_leaves_a_changed_key_or_a_replaced_last_pt_to_the_resumes_checks(work, tmp_path):
    """A key the resume refuses to change is named as before (not "complete"); a last.pt written after
    results.json (replaced, damaged) is read and checked by the resume. Breaks tried: _refuse_complete without
    the key rule (optim.lr: "is complete"); without the mtime rule (a damaged last.pt: "is complete", exit 2)."""
    out, _ = imports_torch("train", "--resume", "runs/done", "--set", "optim.lr=0.1", cwd=work)
    assert out.returncode == 2 and "optim.lr" in _error(out) and "is complete" not in _error(out), _error(out)
    run = tmp_path / "damaged"
    shutil.copytree(work / "runs" / "done", run)
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    out, _ = imports_torch("train", "--resume", str(run), cwd=work)
    assert out.returncode == 1 and "last.pt" in _error(out) and "is complete" not in _error(out), _error(out)


def test_config_show_takes_the_shortcuts_train_takes(work):
    out, _ = imports_torch("config", "show", "--config", "smoke", "--epochs", "3", "--lr", "0.05",
                           "--batch-size", "32", cwd=work)
    assert out.returncode == 0, _error(out)
    assert "  epochs: 3\n" in out.stdout and "  lr: 0.05\n" in out.stdout and "  batch_size: 32\n" in out.stdout
