"""convtrain/process.py, the one "is that process alive" rule (run locks, tune trials, cache temp files).

Breaks tried (each failed here): the zombie check removed (an exited, unreaped child counted as alive);
the start-time comparison removed (a reused PID counted as the old process); an OverflowError from a
huge PID escaping.
"""

from __future__ import annotations

import os
import subprocess
import time

from convtrain import atomic, process
from convtrain.data.cache import _remove_dead_writers_temps


def _zombie() -> subprocess.Popen:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 60
    while (process._stat(proc.pid) or ["?"])[0] != "Z":
        assert time.monotonic() < deadline, "`true` did not exit within 60 s"
        time.sleep(0.01)
    return proc


def test_this_process_is_alive_with_and_without_its_start_time():
    assert process.pid_alive(os.getpid())
    assert process.pid_alive(os.getpid(), process.start_time(os.getpid()))


def test_an_exited_child_not_yet_reaped_is_not_alive():
    proc = _zombie()
    try:
        assert not process.pid_alive(proc.pid)
    finally:
        proc.wait()


def test_a_pid_that_started_at_another_time_is_another_process():
    assert not process.pid_alive(os.getpid(), "1")  # this PID, but a start time it never had


def test_impossible_pids_are_not_alive():
    for pid in (0, -1, 2**80, True, "12"):
        assert not process.pid_alive(pid)


def test_the_decode_cache_removes_a_dead_writers_temp_file_and_keeps_a_live_ones(tmp_path):
    """The cache's clean-up asks the same rule: a zombie writer's temp file goes, this process's stays."""
    proc = _zombie()
    try:
        dead = tmp_path / f".data.pt{atomic.TEMP_MARK}{proc.pid}"
        live = tmp_path / f".other.pt{atomic.TEMP_MARK}{os.getppid()}"
        dead.write_bytes(b"x")
        live.write_bytes(b"x")
        _remove_dead_writers_temps(tmp_path)
        assert not dead.exists() and live.exists()
    finally:
        proc.wait()
