"""The command line a new user meets (issue 21): naming checkpoints, eval on other data, overrides
typed as other tools take them, recipes for pip users, trackers alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import REPO
from ..data.test_own_data import sample, write_folder

DIGITS = [str(i) for i in range(10)]  # an MNIST checkpoint's class names


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m convtrain ARGS`` run from ``cwd`` (where ``runs/`` and ``latest`` are looked up)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def work(data_root, tmp_path_factory) -> Path:
    """A folder like a user's: runs/first (trained with the shortcuts and bare keys), runs/second (a
    newer finished copy) and runs/stopped (newest, interrupted: no results.json)."""
    work = tmp_path_factory.mktemp("work")
    r = cli("train", "--config", "mnist", "model.name=lenet5", "data.train_subset=600", "data.val_size=100",
            "data.test_subset=100", "train.test_every_epoch=false", "--epochs", "1", "--lr", "0.003",
            "--batch-size", "64", "--device", "cpu", "--run-dir", "runs/first", cwd=work, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    (work / "stdout.txt").write_text(r.stdout)
    now = time.time()
    for k, name in enumerate(("second", "stopped"), start=1):
        shutil.copytree(work / "runs" / "first", work / "runs" / name)
        os.utime(work / "runs" / name / "config.yaml", (now + 10 * k, now + 10 * k))
    (work / "runs" / "stopped" / "results.json").unlink()
    return work


def test_shortcuts_and_bare_keys_reach_the_config(work):
    saved = (work / "runs" / "first" / "config.yaml").read_text()
    for line in ("epochs: 1", "lr: 0.003", "batch_size: 64", "name: lenet5", "train_subset: 600"):
        assert line in saved, line


@pytest.mark.slow
def test_a_run_fits_80_columns_and_keeps_internals_in_its_log(work):
    out = (work / "stdout.txt").read_text().splitlines()
    assert max(len(line) for line in out) <= 80, max(out, key=len)
    epoch = next(line for line in out if line.startswith("epoch 1/1  train loss"))
    assert "val " in epoch and "*best" in epoch
    header = next(line for line in out if "┃ epoch" in line)
    assert "test acc" not in header  # no per-epoch test: no column of dashes
    log = (work / "runs" / "first" / "train.log").read_text()
    assert "lr 0.003" in log and "  val loss " in log  # the whole epoch line is in the log


@pytest.mark.slow
def test_a_run_directory_latest_or_a_run_name_names_a_checkpoint(work):
    from convtrain.artifacts.checkpoint_args import resolve_checkpoint
    from convtrain.errors import RunDirError

    runs = work / "runs"
    assert resolve_checkpoint(runs / "first") == runs / "first" / "checkpoints" / "best.pt"
    assert resolve_checkpoint(runs / "first" / "checkpoints") == runs / "first" / "checkpoints" / "best.pt"
    assert resolve_checkpoint("first", runs_dir=runs) == runs / "first" / "checkpoints" / "best.pt"
    # latest: the newest finished run (stopped is newer but has no results.json)
    assert resolve_checkpoint("latest", runs_dir=runs) == runs / "second" / "checkpoints" / "best.pt"
    # --resume: last.pt, and latest is the newest run that is not running
    assert resolve_checkpoint("latest", last=True, runs_dir=runs) == runs / "stopped" / "checkpoints" / "last.pt"
    assert resolve_checkpoint(runs / "first", last=True) == runs / "first" / "checkpoints" / "last.pt"
    with pytest.raises(RunDirError, match="not a run directory"):
        resolve_checkpoint(work)
    with pytest.raises(RunDirError, match="there is no runs-that-are-not-there/ here"):
        resolve_checkpoint("latest", runs_dir="runs-that-are-not-there")
    # through the command line, from the user's folder
    r = cli("eval", "--checkpoint", "latest", "data.test_subset=50", "--json", "--device", "cpu", cwd=work)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checkpoint"] == str(Path("runs") / "second" / "checkpoints" / "best.pt")
    assert json.loads(r.stdout)["num_samples"] == 50


@pytest.mark.slow
def test_several_checkpoints_where_one_is_expected_is_one_line(work, digits_png):
    runs = work / "runs"
    # what `--checkpoint runs/*` becomes in the shell
    r = cli("eval", "--checkpoint", str(runs / "first"), str(runs / "second"), cwd=work)
    assert "first" in one_line_error(r) and "second" in r.stderr and "pick one" in r.stderr
    best = [str(runs / n / "checkpoints" / "best.pt") for n in ("first", "second")]
    r = cli("predict", "--checkpoint", *best, str(digits_png), cwd=work)
    assert "pick one" in one_line_error(r) and best[1] in r.stderr
    r = cli("eval", "--checkpoint", "runs/*", cwd=work)  # quoted: the glob reaches us
    assert "got 3" in one_line_error(r)


@pytest.fixture(scope="module")
def digits_png(data_root, tmp_path_factory) -> Path:
    from ..data.test_own_data import _idx

    raw = data_root / "MNIST" / "raw"
    folder = tmp_path_factory.mktemp("digits")
    return write_folder(folder, sample((_idx(raw / "t10k-images-idx3-ubyte"), _idx(raw / "t10k-labels-idx1-ubyte")),
                                       1), names=DIGITS)[0]


@pytest.mark.slow
def test_eval_data_scores_its_test_split_or_all_its_images(work, tmp_path, monkeypatch, data_root):
    """A checkpoint whose run held out 100 validation images, on a folder of 60: never re-held-out."""
    from convtrain.inference.evaluate import evaluate_checkpoint

    from ..data.test_own_data import _idx

    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    raw = data_root / "MNIST" / "raw"
    mnist = _idx(raw / "t10k-images-idx3-ubyte"), _idx(raw / "t10k-labels-idx1-ubyte")
    folder = tmp_path / "more_digits"
    write_folder(folder, sample(mnist, 60, seed=5), names=DIGITS)
    best = work / "runs" / "first" / "checkpoints" / "best.pt"
    r = cli("eval", "--checkpoint", "runs/first", "--data", str(folder), "--json", "--device", "cpu", cwd=work,
            env={"CONVTRAIN_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_samples"] == 60 and json.loads(r.stdout)["split"] == "all images"
    # --set (or a bare key) for the data keys that make sense: hold out 20 as training would
    held = evaluate_checkpoint(best, data_path=str(folder), device="cpu", overrides=["data.test_size=20"])
    assert held.num_samples == 20 and "data.test_size=20" in held.split
    # the folder's own test split wins
    write_folder(folder, sample(mnist, 30, seed=6), split="test", names=DIGITS)
    own = evaluate_checkpoint(best, data_path=str(folder), device="cpu")
    assert own.num_samples == 30 and own.split == "test"
    r = cli("eval", "--checkpoint", "runs/first", "--set", "optim.lr=1", cwd=work)
    assert "data.test_size" in one_line_error(r) and "optim.lr" in r.stderr


@pytest.mark.slow
def test_overrides_as_other_tools_take_them(tmp_path):
    r = cli("config", "show", "train.epochs=3", "optim.lr=0.5", "--set", "seed=7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "epochs: 3" in r.stdout and "lr: 0.5" in r.stdout and "seed: 7" in r.stdout
    r = cli("train", "--train.epochs", "2", cwd=tmp_path)
    assert "use `train.epochs=2` or `--set train.epochs=2`" in one_line_error(r)
    r = cli("train", "--momentum=0.9", cwd=tmp_path)
    assert "`optim.momentum=0.9`" in one_line_error(r)
    r = cli("train", "train.epochs", "2", cwd=tmp_path)
    assert "use `train.epochs=2` or `--set train.epochs=2`" in one_line_error(r)
    r = cli("config", "show", "--set", "train.lr=0.1", cwd=tmp_path)
    assert "did you mean 'optim.lr'?" in one_line_error(r)
    from convtrain.version import __version__

    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"convtrain {__version__}"
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written


@pytest.mark.slow
def test_a_missing_tensorboard_is_one_line_before_the_run(tmp_path):
    fake = tmp_path / "site"
    (fake / "tensorboard").mkdir(parents=True)
    (fake / "tensorboard" / "__init__.py").write_text("raise ImportError('no tensorboard here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "convtrain", "train", "--config", "smoke", "--set", "log.tensorboard=true",
                        "--set", "data.train_subset=200", "--set", "data.val_size=50", "--set", "data.test_subset=50",
                        "--device", "cpu", "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                       env={**os.environ, **env}, cwd=tmp_path, timeout=300)
    assert "pip install 'convtrain[tensorboard]'" in one_line_error(r)
    assert not (tmp_path / "run").exists()


def test_recipes_for_pip_users(tmp_path):
    """config list: whole descriptions and commands that run outside a clone; config copy: a header
    that runs the copy; recipe errors name the recipe, not a site-packages path."""
    from convtrain.config import load_config, recipes
    from convtrain.errors import ConfigError

    for r in recipes.listing():
        text = (REPO / "configs" / f"{r['name']}.yaml").read_text()
        assert r["description"].endswith("."), r  # the whole paragraph, not its first line
        assert f"--config {r['name']}" in r["command"] and "configs/" not in r["command"]
        assert "make " not in text and "configs/" not in text, r["name"]
    smoke = {r["name"]: r for r in recipes.listing()}["smoke"]
    assert smoke["description"].endswith("It should reach ~97% test accuracy.")
    copied = recipes.copy("fashion_finetune", tmp_path / "mine.yaml").read_text()
    assert copied.splitlines()[0] == f"# convtrain finetune --checkpoint latest --config {tmp_path / 'mine.yaml'}"
    assert "recipe 'fashion_finetune'" in copied.splitlines()[1]
    assert load_config(tmp_path / "mine.yaml").name == "mine"
    with pytest.raises(ConfigError, match=r"^recipe 'smoke' \+ --set: 'train.epochs' must be > 0"):
        load_config("smoke", ["train.epochs=0"])
    r = cli("config", "list", cwd=tmp_path)
    assert r.returncode == 0 and "convtrain train --config speedrun\n" in r.stdout
    assert "lr 1e-2 as the anchor." in r.stdout.replace("\n  ", " ")  # the last words of a long description


@pytest.mark.slow
def test_data_make_folder_ships_with_the_package(tmp_path, data_root):
    r = cli("data", "make-folder", "digits", "--dataset", "mnist", "--train", "40", "--test", "20", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    train = sorted((tmp_path / "digits" / "train").rglob("*.png"))
    assert len(train) == 40 and len(list((tmp_path / "digits" / "test").rglob("*.png"))) == 20
    assert {p.parent.name for p in train} <= {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                              "nine"}
    assert len({p.parent.name for p in train}) >= 8  # a shuffled sample, not the first class of sorted files
    again = cli("data", "make-folder", "digits", cwd=tmp_path)
    assert "exists already" in one_line_error(again)
    # the old tools/ script is a thin caller of the same command
    old = subprocess.run([sys.executable, str(REPO / "tools" / "make_image_folder.py"), "old", "--dataset", "mnist",
                          "--train", "40"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert old.returncode == 0, old.stderr
    assert sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*.png")) == \
        [p.relative_to(tmp_path / "digits") for p in train]


def test_the_ctrl_c_acknowledgement_starts_its_own_line_on_a_terminal():
    """stdout a terminal (the progress bar's line is open): the line on stderr starts with a newline."""
    code = ("import os, pty\n"
            "master, slave = pty.openpty()\n"
            "os.dup2(slave, 1)\n"
            "from convtrain.training.signals import StopSignals\n"
            "StopSignals()._ack('SIGINT: stopping after this step')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    on_tty = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert on_tty.stderr == "\nSIGINT: stopping after this step\n", on_tty.stderr
    piped = subprocess.run([sys.executable, "-c", code.replace("os.dup2(slave, 1)\n", "")], capture_output=True,
                           text=True, env=env, timeout=60)
    assert piped.stderr == "SIGINT: stopping after this step\n"  # a log file gets no blank line


def test_a_long_evaluation_pass_shows_progress_and_a_short_one_nothing(monkeypatch):
    import io

    from rich.console import Console

    from convtrain.training import reporter as progress

    def shown(threshold: float) -> str:
        monkeypatch.setattr(progress, "PASS_BAR_AFTER", threshold)
        console = Console(file=io.StringIO(), force_terminal=True, width=80)
        reporter = progress.Reporter(console)
        tick = reporter.pass_progress("val", 10)
        for done in range(1, 11):
            tick(done)
        reporter.pass_end()
        return console.file.getvalue()

    assert "val" in shown(0.0) and "10/10" in shown(0.0)  # a pass past the threshold: a progress line
    assert shown(60.0) == ""  # a short pass: nothing


def test_internals_go_to_the_log_and_show_with_verbose(tmp_path, monkeypatch, data_root):
    import io

    from rich.console import Console

    from convtrain import config as config_mod
    from convtrain.data import cache as datacache
    from convtrain.data.sources import build as build_data
    from convtrain.training.reporter import Reporter

    from ..data.test_own_data import _idx

    for verbose in (False, True):
        console, log = Console(file=io.StringIO(), width=80), []
        reporter = Reporter(console, verbose=verbose)
        reporter.attach_log(log.append)
        reporter.detail("plots: background process pid 123")
        assert log == ["plots: background process pid 123"]
        assert ("pid 123" in console.file.getvalue()) == verbose
    # the cache file's absolute path is in its own note (the one the runner sends to detail), not in the others
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    raw = data_root / "MNIST" / "raw"
    write_folder(tmp_path / "d", sample((_idx(raw / "t10k-images-idx3-ubyte"), _idx(raw / "t10k-labels-idx1-ubyte")),
                                        60), names=DIGITS)
    cfg = config_mod.load_config(None, ["data.name=folder", f"data.root={tmp_path / 'd'}"])
    build_data(cfg.data, 0)
    notes = build_data(cfg.data, 0).notes  # the second time from the cache
    cached = [n for n in notes if str(tmp_path / "cache") in n]
    assert len(cached) == 1 and cached[0].startswith(datacache.CACHE_FILE_NOTE)
    assert any("from the cache" in n for n in notes)


@pytest.mark.slow
def test_serve_and_resume_take_latest(work):
    """The last test of this file: it finishes runs/stopped."""
    pytest.importorskip("fastapi")
    from convtrain.serve.app import parse_checkpoint_spec

    runs = work / "runs"
    assert parse_checkpoint_spec("latest", runs) == ("second", runs / "second" / "checkpoints" / "best.pt")
    assert parse_checkpoint_spec(f"web={runs / 'first'}", runs) == ("web", runs / "first" / "checkpoints" / "best.pt")
    r = cli("train", "--resume", "latest", "--device", "cpu", cwd=work)  # the newest run not running: stopped
    assert r.returncode == 0, r.stderr
    assert json.loads((runs / "stopped" / "results.json").read_text())["status"] == "finished"
