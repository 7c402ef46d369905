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
            if run.is_dir() and not os.path.lexists(cfg_path) and (run / "study.json").is_file():
                found.append(summarize_study(run))  # a `convtrain tune` folder: one row, its trials inside
                continue
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
        "best_val_loss": min((r.val_loss for r in rows), default=None),
        "test_acc": results.test_accuracy if results else None,
        "seconds": sum(r.seconds for r in rows),
        "status": status,
    }


def summarize_study(folder: Path) -> dict:
    """A `convtrain tune` study folder as one row: best value and trials done/pruned/failed, read from
    its trial run directories (no database, no Optuna), with those runs' rows under ``trials``."""
    import json

    try:
        marker = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        metric = marker.get("metric", "val_acc") if isinstance(marker, dict) else "val_acc"
    except (OSError, ValueError):
        metric = "val_acc"
    trials = [r for r in list_runs(folder) if r.get("kind") != "study"]
    trials.sort(key=lambda r: r["name"])
    count = {"done": 0, "pruned": 0, "failed": 0, "running": 0}
    for r in trials:
        key = {"finished": "done", "pruned": "pruned", "running": "running"}.get(r["status"], "failed")
        count[key] += 1
    values = [r[f"best_{metric}"] for r in trials if r.get(f"best_{metric}") is not None]
    best = (max(values) if metric == "val_acc" else min(values)) if values else None
    newest = max((r["created"] for r in trials), default=(folder / "study.json").stat().st_mtime)
    return {**_EMPTY, "name": folder.name, "path": str(folder), "kind": "study", "status": "study",
            "metric": metric, "best_value": best, "best_val_acc": best if metric == "val_acc" else None,
            "epochs": sum(r["epochs"] for r in trials), "seconds": sum(r["seconds"] for r in trials),
            "model": trials[0]["model"] if trials else None, "dataset": trials[0]["dataset"] if trials else None,
            "trials_count": count, "trials": trials, "created": newest}
