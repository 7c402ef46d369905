"""Issue 31 item 9: `convtrain runs` never cuts a run's name (what a user pastes into --checkpoint): on a
narrow terminal the other columns go first (data, model, time, best val acc, epochs), then words wrap.

Breaks tried: the run column without no_wrap/min_width (the names end in "…" at 80 columns, the test fails);
_show_runs dropping no column (at 60 columns the name is cut again); the least width of the status column
taken from rich's own measure (its cells end in "…").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ..conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "run-52beffa"
NAMES = ["fashion_mnist-finetune-20261206-101500", "mnist_strong-seeds-20261206-094512"]


@pytest.mark.parametrize("columns", [60, 80, 100])
def test_every_run_name_is_shown_whole(tmp_path, columns):
    runs = tmp_path / "runs"
    for name in NAMES:
        shutil.copytree(FIXTURE, runs / name, ignore=shutil.ignore_patterns("*.pt"))
    for seed in (0, 1):
        shutil.copytree(FIXTURE, runs / "a-long-sweep-name-20261206" / f"seed-{seed}", ignore=shutil.ignore_patterns("*.pt"))
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "convtrain", "runs", str(runs)], capture_output=True, text=True,
                       env=env, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # at 60 columns the names and the columns left (test acc, status) are wider than the terminal: the table
    # goes 2 columns wider rather than cut a name
    assert max(len(line) for line in lines[1:]) <= max(columns, 62)  # (the title names the tmp folder)
    for name in [*NAMES, "a-long-sweep-name-20261206 (2 seeds)", "seed-0", "seed-1"]:
        assert any(f"│ {name} " in line or f"│   {name} " in line for line in lines), (name, r.stdout)
    assert "…" not in r.stdout  # columns are left out, words wrap: no cell is cut
    assert r.stdout.count("finished") == 5
