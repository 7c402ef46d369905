"""The checkpoint-naming rule (artifacts/checkpoint_args.py) on placeholder files: the rule only looks at
which files exist, so it needs no trained run (issue 32: a planted break in it was caught only by slow
tests that train). Every command that takes a checkpoint resolves it through this one function.

Breaks tried (each failed here, then restored):
- best.pt and last.pt swapped (``name = "best.pt" if last else "last.pt"``): a run directory meant its
  last.pt (test_a_run_directory_means_best_pt_and_for_resume_last_pt);
- ``latest`` for ``--resume`` taking only finished runs: it resumed the older finished run instead of the
  newest interrupted one (test_latest_is_the_newest_finished_run_and_for_resume_the_newest_not_running);
- list_runs sorted oldest first: ``latest`` was the oldest run (the same test);
- the run-name lookup in the runs folder removed: ``new`` was returned as a missing path
  (test_a_runs_name_alone_is_looked_up_in_the_runs_folder);
- the ``checkpoints/`` folder rule removed: it was refused as "not a run directory"
  (test_a_runs_checkpoints_folder_means_the_same_file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from convtrain.artifacts.checkpoint_args import resolve_checkpoint
from convtrain.errors import ConfigError, RunDirError

from ..conftest import REPO

FINISHED = json.loads((REPO / "tests" / "fixtures" / "run-52beffa" / "results.json").read_text())


def placeholder_run(runs: Path, name: str, age_s: float, status: str | None, files=("best.pt", "last.pt")) -> Path:
    """A run directory of placeholder files: config.yaml written ``age_s`` seconds ago (its start, which
    orders the listing), a finished run's results.json (the 52beffa fixture's) or none (``status`` None:
    killed, so "interrupted"), empty checkpoint files."""
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    if status is not None:
        (run / "results.json").write_text(json.dumps({**FINISHED, "status": status}) + "\n")
    for f in files:
        (run / "checkpoints" / f).write_bytes(b"placeholder")
    t = 1_700_000_000 - age_s
    os.utime(run / "config.yaml", (t, t))
    return run


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    runs = tmp_path / "runs"
    placeholder_run(runs, "old", 300, "finished")
    placeholder_run(runs, "new", 200, "finished")
    placeholder_run(runs, "stopped", 100, None)  # newest: killed (no results.json), resumable
    monkeypatch.chdir(tmp_path)
    return runs


def test_a_pt_file_is_itself_and_a_missing_path_is_returned_as_given(runs):
    assert resolve_checkpoint("runs/old/checkpoints/last.pt") == Path("runs/old/checkpoints/last.pt")
    assert resolve_checkpoint("nowhere/model.pt") == Path("nowhere/model.pt")  # the reader says "not found"


def test_a_run_directory_means_best_pt_and_for_resume_last_pt(runs):
    assert resolve_checkpoint(runs / "old") == runs / "old" / "checkpoints" / "best.pt"
    assert resolve_checkpoint(runs / "old", last=True) == runs / "old" / "checkpoints" / "last.pt"


def test_a_runs_checkpoints_folder_means_the_same_file(runs):
    assert resolve_checkpoint(runs / "old" / "checkpoints") == runs / "old" / "checkpoints" / "best.pt"
    assert resolve_checkpoint(runs / "old" / "checkpoints", last=True) == runs / "old" / "checkpoints" / "last.pt"


def test_latest_is_the_newest_finished_run_and_for_resume_the_newest_not_running(runs):
    assert resolve_checkpoint("latest") == Path("runs/new/checkpoints/best.pt")
    assert resolve_checkpoint("latest", last=True) == Path("runs/stopped/checkpoints/last.pt")


def test_a_runs_name_alone_is_looked_up_in_the_runs_folder(runs):
    assert resolve_checkpoint("new") == Path("runs/new/checkpoints/best.pt")
    assert resolve_checkpoint("new", runs_dir=runs) == runs / "new" / "checkpoints" / "best.pt"


def test_a_quoted_glob_is_expanded_and_must_match_one_run(runs):
    assert resolve_checkpoint("runs/ne*") == Path("runs/new/checkpoints/best.pt")
    with pytest.raises(ConfigError, match="takes one checkpoint, got 2"):
        resolve_checkpoint("runs/*o*")  # old, stopped


def test_a_run_without_the_file_says_what_to_do(runs, tmp_path):
    bare = placeholder_run(runs, "died", 50, None, files=())
    assert resolve_checkpoint(bare, last=True) == bare  # --resume restarts it from epoch 1
    with pytest.raises(RunDirError, match="resume it with: convtrain train --resume"):
        resolve_checkpoint(bare)
    (tmp_path / "photos").mkdir()
    with pytest.raises(RunDirError, match="not a run directory"):
        resolve_checkpoint(tmp_path / "photos")
