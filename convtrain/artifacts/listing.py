"""List the runs under a folder, newest first, from the files each run directory holds.

Read-only: it takes no lock and changes nothing, so it is safe while runs are training. A run whose
files are damaged is listed as "unreadable" (with the reason) instead of breaking the listing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConvtrainError, RunDirError, RunFileError
from . import runfiles, runlock


def list_runs(folder: str | Path = "runs") -> list[dict]:
    """One summary dict per run directory under ``folder`` (runs need a config.yaml), newest first.

    ``created`` is the time config.yaml was written (a run writes it once, at its start), in seconds
    since the epoch; ties (copies made with their times kept) go by name, newest-looking first.
    """
    root = Path(folder)
    if not root.exists():
        raise RunDirError(f"folder {root} does not exist; pass the folder that holds your run directories")
    if not root.is_dir():
        raise RunDirError(f"{root} is not a folder; pass the folder that holds your run directories")
    try:
        children = sorted(root.iterdir())
    except OSError as exc:
        raise RunFileError(f"cannot list {root}: {exc.strerror or exc}") from None
    found = []
    for run in children:
        cfg_path = run / "config.yaml"
        try:
            if not run.is_dir() or not os.path.lexists(cfg_path):
                continue
            created = (cfg_path if cfg_path.exists() else run).stat().st_mtime
        except OSError:
            continue  # vanished while we looked, or a folder we may not enter
        try:
            found.append({**summarize(run), "created": created})
        except ConvtrainError as exc:
            found.append({**_EMPTY, "name": run.name, "path": str(run), "status": "unreadable",
                          "error": str(exc), "created": created})
    return sorted(found, key=lambda r: (r["created"], r["name"]), reverse=True)


_EMPTY = {"model": None, "dataset": None, "epochs": 0, "epochs_total": None, "best_val_acc": None, "test_acc": None,
          "seconds": 0.0}


def summarize(run: Path) -> dict:
    """The listing's fields for one run; RunFileError when one of its files is damaged."""
    info = runfiles.read_run_info(run)
    rows = runfiles.read_metrics(run)
    results = runfiles.read_results(run)
    val = [r.val_acc for r in rows]
    if results is not None:
        status = results.status
    elif runlock.read_holder(run) is not None:
        status = "running"
    else:
        status = "interrupted"  # no results.json and nobody writing: the run was killed
    return {
        "name": run.name,
        "path": str(run),
        "model": info.model,
        "dataset": info.dataset,
        "epochs": len(rows),
        "epochs_total": info.epochs,
        "best_val_acc": max(val) if val else None,
        "test_acc": results.test_accuracy if results else None,
        "seconds": sum(r.seconds for r in rows),
        "status": status,
    }
