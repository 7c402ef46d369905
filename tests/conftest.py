"""Shared fixtures: the data root, and small real training runs built once per suite (shared by the
pytest-xdist workers through a file lock, each worker using its own copy)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
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


# A command's time limit in the tests: a bound that catches a hang, never a slow machine (a 20k-image
# training took over 300 s on 2 cores beside another suite; alone it takes about 10 s).
CLI_TIMEOUT_S = 900


def run_cli(*args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python -m convtrain ARGS`` in a real subprocess (exit codes and streams as a user sees them).
    Past ``timeout`` the test fails naming the command, the time and the machine's load."""
    full_env = {**os.environ, **(env or {})}
    try:
        return subprocess.run([sys.executable, "-m", "convtrain", *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        told = (exc.stderr or b"")[-1500:]
        pytest.fail(f"`convtrain {' '.join(a[:60] for a in args)}` did not finish within {timeout:.0f} s (load "
                    f"average {os.getloadavg()[0]:.1f}); its stderr so far: {told!r}")


def wait_for_line(proc: subprocess.Popen, pattern: str, what: str, timeout: float = 300) -> str:
    """The first line of ``proc``'s stdout (text mode) that contains ``pattern``; fails after ``timeout`` s, or
    when the process exits first, naming ``what`` it waited for and what it printed. Readiness waits (a server's
    "serving on" line) use this: a bare readline() loop hung the suite when the line never came."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()

    def pump() -> None:  # stops at the line: the rest of stdout stays the caller's
        try:
            for line in iter(proc.stdout.readline, ""):
                lines.put(line)
                if pattern in line:
                    return
        except (OSError, ValueError):  # the caller closed the pipe
            pass
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=remaining) if remaining > 0 else ""
        except queue.Empty:
            line = ""
        if line and pattern in line:
            return line
        if line:
            seen.append(line)
            continue
        why = "exited first" if line is None else f"gave none within {timeout:.0f} s (load average {os.getloadavg()[0]:.1f})"
        pytest.fail(f"waited for {what} ({pattern!r} on stdout); the process {why}; it printed: {''.join(seen)[-1500:]!r}")


# ------------------------------------------------------------------------------------------------
# Runs trained once per suite (issue 32). Under pytest-xdist every worker used to train its own copy of
# the session fixtures, and on a busy machine the two trainings side by side ran past run_cli's 300 s:
# 58 errors in a fresh clone's `.ci/run` at load 7-18. Now the first worker that asks trains into a
# folder all workers of the session share (beside their own basetemp folders), under a file lock; the
# others wait for that lock and each gets its own copy (tests never share files across workers).

# how long a fixture may take to build, or to wait for another worker's build: minutes of training on a
# 2-core machine running a second suite (measured: the 20k-image run, about 10 s alone, took over 300 s there)
BUILD_TIMEOUT_S = 1800

# A real run small enough for the test suite: the article CNN on 20k MNIST images for one epoch.
SMALL_RUN = ["--set", "data.train_subset=20000", "--set", "data.val_size=2000", "--set", "train.epochs=1",
             "--set", "optim.lr=2e-3", "--set", "train.test_every_epoch=false", "--device", "cpu"]
# A real run that takes seconds, for tests that need a run directory's files, not a good model (the hostile tables)
TINY_RUN = ["--set", "data.train_subset=640", "--set", "data.val_size=200", "--set", "data.test_subset=200",
            "--set", "train.epochs=1", "--device", "cpu"]


def _shared_folder(tmp_path_factory) -> Path:
    """A folder of this session that every xdist worker sees: the parent of the workers' basetemp folders."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"


@contextlib.contextmanager
def _exclusive(lock: Path, what: str, wait_s: float):
    """Hold ``lock`` (flock); fail, naming ``what``, after ``wait_s`` seconds of another worker holding it."""
    import fcntl

    with open(lock, "a") as f:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > wait_s:
                    pytest.fail(f"waited {wait_s:.0f} s for another pytest worker to build {what} ({lock}); load "
                                f"average {os.getloadavg()[0]:.1f}")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def built_once(tmp_path_factory, name: str, what: str, build: Callable[[Path], str | None]) -> Path:
    """The folder ``build(folder)`` fills, built by the first worker of the session that asks for ``name``
    and reused by the others; ``build`` returns None, or why it failed (then every worker fails with that
    line, and none builds it again)."""
    shared = _shared_folder(tmp_path_factory)
    shared.mkdir(parents=True, exist_ok=True)
    done, failed = shared / name, shared / f"{name}.failed"
    with _exclusive(shared / f"{name}.lock", what, BUILD_TIMEOUT_S + 60):
        if not done.is_dir() and not failed.exists():
            building = shared / f"{name}.building"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            problem = build(building)
            if problem is None:
                building.rename(done)
            else:
                failed.write_text(f"building {what} failed: {problem}")
    if failed.exists():
        pytest.fail(failed.read_text()[-3000:])
    return done


def _trained(folder: Path, name: str, args: list[str], what: str) -> str | None:
    """Train ``args`` into ``folder/name``; None, or why not (with the load, for a timeout)."""
    start = time.monotonic()
    try:
        result = run_cli("train", *args, "--run-dir", str(folder / name), timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (f"{what} did not finish training within {BUILD_TIMEOUT_S} s (load average "
                f"{os.getloadavg()[0]:.1f})")
    if result.returncode != 0:
        return f"exit {result.returncode} after {time.monotonic() - start:.0f} s: {(result.stderr + result.stdout)[-2000:]}"
    return None


def copy_of(source: Path, tmp_path_factory, folder: str) -> Path:
    """A copy of a run built once, under this worker's own folder (same run directory name)."""
    return Path(shutil.copytree(source, tmp_path_factory.mktemp(folder) / source.name, symlinks=True))


@pytest.fixture(scope="session")
def trained_run_source(data_root, tmp_path_factory) -> Path:
    what = "the shared trained run (the article CNN on 20k MNIST images, one epoch)"
    args = ["--config", "configs/mnist.yaml", *SMALL_RUN]
    return built_once(tmp_path_factory, "trained-run", what,
                      lambda folder: _trained(folder, "mnist-small", args, what)) / "mnist-small"


@pytest.fixture(scope="session")
def trained_run(trained_run_source, tmp_path_factory) -> Path:
    """The article CNN trained once per suite (about 10 s on 2 idle cores), this worker's copy of its run directory."""
    return copy_of(trained_run_source, tmp_path_factory, "runs")


@pytest.fixture(scope="session")
def tiny_run_source(data_root, tmp_path_factory) -> Path:
    """One epoch of the smoke recipe on 640 images (seconds), trained once per suite: a real finished run
    directory (config.yaml, metrics.csv, results.json, best.pt, last.pt) for tests that read its files.
    Copy it (:func:`copy_of`) before changing anything in it."""
    what = "the shared tiny run (smoke recipe, 640 images, one epoch)"
    args = ["-c", "configs/smoke.yaml", *TINY_RUN]
    return built_once(tmp_path_factory, "tiny-run", what, lambda folder: _trained(folder, "small", args, what)) / "small"


def metrics_rows(run: Path) -> list[dict]:
    """A run directory's metrics.csv as dicts of strings (as the file holds them)."""
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def results_json(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def load_ckpt(run: Path, name: str) -> dict:
    import torch

    return torch.load(run / "checkpoints" / name, weights_only=True)
