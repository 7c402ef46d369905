"""RUN/.lock: one writer per run directory; read-only commands never take it and never delete anything."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrain import process
from convtrain.artifacts import runlock
from convtrain.artifacts.runlock import GARBAGE_GRACE_S, RunLock, clean_stale_temp_files, read_holder
from convtrain.cli.app import app
from convtrain.errors import RunLocked

from .test_damaged_run_files import make_run, snapshot

runner = CliRunner()


@pytest.fixture
def sleeper():
    """A live process that is not us (its PID stands for another training's)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: this PID no longer exists (and is not reused within the test)
    return proc.pid


def write_lock(run: Path, pid: int, host: str | None = None, **extra) -> None:
    info = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-11-28 12:00:00",
            "command": "convtrain train -c configs/mnist.yaml", **extra}
    (run / ".lock").write_text(json.dumps(info))


def test_acquire_writes_who_holds_it_and_release_removes_it(tmp_path):
    with RunLock(tmp_path) as lock:
        info = json.loads((tmp_path / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["command"]
        assert lock.took_over is None and read_holder(tmp_path).pid == os.getpid()
        with pytest.raises(RunLocked) as second:  # a second writer, even in the same process
            RunLock(tmp_path).acquire()
        assert second.value.exit_code == 2 and f"PID {os.getpid()}" in str(second.value)
    assert not (tmp_path / ".lock").exists() and read_holder(tmp_path) is None


def test_a_live_holder_refuses_a_second_writer_with_one_clear_line(tmp_path, sleeper):
    write_lock(tmp_path, sleeper.pid)
    with pytest.raises(RunLocked) as exc:
        RunLock(tmp_path).acquire()
    message = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in message
    assert f"run {tmp_path} is being written by PID {sleeper.pid} on host {socket.gethostname()}" in message
    assert "wait for it or stop it" in message
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == sleeper.pid  # left alone


def test_a_dead_holder_is_taken_over(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    lock = RunLock(tmp_path)
    note = lock.acquire()
    assert note is not None and f"PID {pid}" in note and "no longer running" in note and lock.took_over == note
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path, sleeper):
    # the PID exists, but it is a later process than the one that wrote the lock (other start time)
    write_lock(tmp_path, sleeper.pid, proc_start="1")
    with RunLock(tmp_path) as lock:
        assert lock.took_over and f"PID {sleeper.pid}" in lock.took_over


def test_a_holder_that_exited_but_is_not_reaped_yet_is_dead(tmp_path):
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 60  # exited, still a zombie: kill(pid, 0) succeeds, /proc says Z
    while (process._stat(proc.pid) or ["?"])[0] != "Z":
        assert time.monotonic() < deadline, "`true` did not exit within 60 s"
        time.sleep(0.01)
    try:
        write_lock(tmp_path, proc.pid)
        with RunLock(tmp_path) as lock:
            assert lock.took_over
    finally:
        proc.wait()


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    write_lock(tmp_path, 1, host="gpu-node-7")
    with pytest.raises(RunLocked) as exc:
        RunLock(tmp_path).acquire()
    assert "gpu-node-7" in str(exc.value) and f"remove {tmp_path / '.lock'}" in str(exc.value)
    assert read_holder(tmp_path).host == "gpu-node-7"  # `runs` shows it as running: it cannot tell


def test_an_unreadable_lock_file_is_stale_only_when_old(tmp_path):
    (tmp_path / ".lock").write_bytes(b"\x00\xffnot json")
    with pytest.raises(RunLocked, match="try again"):  # young: may be a lock being written right now
        RunLock(tmp_path).acquire()
    old = time.time() - GARBAGE_GRACE_S - 5
    os.utime(tmp_path / ".lock", (old, old))
    with RunLock(tmp_path) as lock:
        assert "unreadable lock file" in lock.took_over


def test_release_never_removes_another_process_lock(tmp_path, sleeper):
    lock = RunLock(tmp_path)
    lock.acquire()
    (tmp_path / ".lock").unlink()  # someone removed ours by hand and another writer took the run
    write_lock(tmp_path, sleeper.pid)
    lock.release()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == sleeper.pid


def _contend(run: str, barrier, results, tried, n: int) -> None:
    barrier.wait()
    try:
        lock = RunLock(run)
        lock.acquire()
        results.put(("won", os.getpid()))
        deadline = time.monotonic() + 120  # hold it until every other one has tried (not a fixed time:
        while tried.value < n - 1 and time.monotonic() < deadline:  # a loaded machine starts them late)
            time.sleep(0.01)
        lock.release()
    except RunLocked as exc:
        results.put(("lost", str(exc)))
        with tried.get_lock():
            tried.value += 1


@pytest.mark.parametrize("start", ["no lock", "stale lock"])
def test_of_many_simultaneous_writers_exactly_one_wins(tmp_path, start, monkeypatch):
    if start == "stale lock":
        write_lock(tmp_path, dead_pid())  # all of them find the same dead holder and want to take over
        # widen the gap between reading the dead holder and writing ourselves in, where a takeover
        # without the flock lets several processes in (the forked children inherit this)
        parse = runlock._parse
        monkeypatch.setattr(runlock, "_parse", lambda text: (time.sleep(0.3), parse(text))[1])
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier, results, tried = ctx.Barrier(n), ctx.Queue(), ctx.Value("i", 0)
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), barrier, results, tried, n)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [o for o, _ in outcomes].count("won") == 1, outcomes
    assert not (tmp_path / ".lock").exists()


def test_clean_stale_temp_files_keeps_live_writers_files(tmp_path, sleeper):
    run = make_run(tmp_path / "run")
    live = run / "checkpoints" / f".last.pt.tmp-{sleeper.pid}"
    dead = [run / "checkpoints" / f".last.pt.tmp-{dead_pid()}", run / f".results.json.tmp-{dead_pid()}"]
    for p in (live, *dead):
        p.write_bytes(b"partial")
    lock = RunLock(run)
    with pytest.raises(RuntimeError):
        lock.clean_stale_temp_files()  # only the lock holder may
    with lock:
        assert sorted(lock.clean_stale_temp_files()) == sorted(dead)
    assert live.exists() and not any(p.exists() for p in dead)
    assert clean_stale_temp_files(run) == []


def test_plot_and_runs_leave_a_training_in_flight_alone(tmp_path, sleeper):
    """The bug: `plot` on a training run deleted the checkpoint being written, and the training died."""
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    run = make_run(tmp_path / "run")
    (run / "results.json").unlink()  # still training
    write_lock(run, sleeper.pid)
    in_flight = [run / "checkpoints" / f".last.pt.tmp-{sleeper.pid}",
                 run / "checkpoints" / f".best.pt.tmp-{dead_pid()}",
                 run / f".metrics.csv.tmp-{sleeper.pid}"]
    for p in in_flight:
        p.write_bytes(b"half a checkpoint")
    before = snapshot(tmp_path, skip=("curves.png",))
    listing = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert listing.exit_code == 0 and json.loads(listing.stdout)[0]["status"] == "running"
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "curves.png").is_file()
    assert snapshot(tmp_path, skip=("curves.png",)) == before  # temp files and lock untouched


def test_runs_shows_a_killed_run_as_interrupted_not_running(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "results.json").unlink()
    write_lock(run, dead_pid())  # kill -9: the lock stays behind
    listing = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)
    assert listing[0]["status"] == "interrupted"
    assert (run / ".lock").exists()  # a reader does not clean up either


@pytest.mark.slow
def test_train_refuses_a_run_that_another_process_writes(trained_run, tmp_path, sleeper):
    import shutil

    from ..conftest import run_cli

    run = shutil.copytree(trained_run, tmp_path / "run")
    write_lock(run, sleeper.pid)  # a training of this run is still going
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_lock(fresh, sleeper.pid)  # a `train --run-dir fresh` that has just started
    before = snapshot(tmp_path)
    resumed = run_cli("train", "--resume", str(run), "--set", "train.epochs=2")
    second = run_cli("train", "-c", "configs/smoke.yaml", "--set", "train.epochs=1", "--run-dir", str(fresh))
    for result in (resumed, second):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert f"being written by PID {sleeper.pid}" in lines[0] and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before  # nothing truncated, logged or cleaned
