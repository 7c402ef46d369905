"""List the runs under a folder, newest first, from the files each run directory holds.

A ``--seeds`` folder (no config.yaml of its own, ``seed-<N>/`` run directories inside) is one
entry of kind ``sweep``: the mean (and std) over its seeds, its summary.json when written, and
its seed runs under ``runs``.

Read-only: it takes no lock and changes nothing, so it is safe while runs are training. A run whose
files are damaged is listed as "unreadable" (with the reason) instead of breaking the listing.
"""

from __future__ import annotations

import json
import os
import statistics
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
        entry = _entry(run)
        if entry is None:
            entry = _study(run) or _sweep(run)
        if entry is not None:
            found.append(entry)
    return sorted(found, key=lambda r: (r["created"], r["name"]), reverse=True)


def _entry(run: Path) -> dict | None:
    """One run directory's listing entry, or None when ``run`` is no run directory."""
    cfg_path = run / "config.yaml"
    try:
        if not run.is_dir() or not os.path.lexists(cfg_path):
            return None
        created = (cfg_path if cfg_path.exists() else run).stat().st_mtime
    except OSError:
        return None  # vanished while we looked, or a folder we may not enter
    try:
        return {**summarize(run), "kind": "run", "created": created}
    except ConvtrainError as exc:
        return {**_EMPTY, "name": run.name, "path": str(run), "status": "unreadable", "kind": "run",
                "error": str(exc), "created": created}


def _study(folder: Path) -> dict | None:
    """A ``convtrain tune`` folder (its study.json, no config.yaml) as one entry with its trials inside."""
    try:
        if not folder.is_dir() or os.path.lexists(folder / "config.yaml") or not (folder / "study.json").is_file():
            return None
    except OSError:
        return None
    return summarize_study(folder)


def _seed_of(path: Path) -> int | None:
    tail = path.name.removeprefix("seed-")
    return int(tail) if path.name.startswith("seed-") and tail.isdigit() else None


def _sweep(folder: Path) -> dict | None:
    """A ``--seeds`` folder as one entry (None when ``folder`` holds no seed runs)."""
    try:
        if not folder.is_dir():
            return None
        seeds = sorted((r for r in folder.iterdir() if _seed_of(r) is not None), key=_seed_of)
    except OSError:
        return None
    runs = [e for e in map(_entry, seeds) if e is not None]
    if not runs:
        return None
    tests = [r["test_acc"] for r in runs if r["test_acc"] is not None]
    vals = [r["best_val_acc"] for r in runs if r["best_val_acc"] is not None]
    mean = lambda key: statistics.fmean(v) if (v := [r[key] for r in runs if r[key] is not None]) else None  # noqa: E731
    statuses = {r["status"] for r in runs}
    status = next((s for s in ("unreadable", "failed", "running", "interrupted") if s in statuses), "finished")
    return {"name": folder.name, "path": str(folder), "kind": "sweep", "seeds": [_seed_of(Path(r["path"])) for r in runs],
            "model": runs[0]["model"], "dataset": runs[0]["dataset"],
            "epochs": max(r["epochs"] for r in runs), "epochs_total": runs[0]["epochs_total"],
            "best_val_acc": statistics.fmean(vals) if vals else None,
            "test_acc": statistics.fmean(tests) if tests else None,
            "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else None,
            "test_macro_f1": mean("test_macro_f1"), "test_balanced_acc": mean("test_balanced_acc"), "report": None,
            "seconds": sum(r["seconds"] for r in runs), "status": status,
            "summary": _read_summary(folder / "summary.json"), "runs": runs,
            "created": min(r["created"] for r in runs)}


def _read_summary(path: Path) -> dict | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # not written yet (the sweep runs), or damaged: the seed runs still list
    return raw if isinstance(raw, dict) else None


_EMPTY = {"model": None, "dataset": None, "epochs": 0, "epochs_total": None, "best_val_acc": None, "test_acc": None,
          "test_macro_f1": None, "test_balanced_acc": None, "seconds": 0.0, "report": None}


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
        "best_val_macro_f1": max((r.val_macro_f1 for r in rows if r.val_macro_f1 is not None), default=None),
        "best_val_balanced_acc": max((r.val_balanced_acc for r in rows if r.val_balanced_acc is not None), default=None),
        "test_acc": results.test_accuracy if results else None,
        # runs before these keys: None
        "test_macro_f1": results.test_macro_f1 if results else None,
        "test_balanced_acc": results.test_balanced_accuracy if results else None,
        "seconds": sum(r.seconds for r in rows),
        "status": status,
        "report": str(run / "report" / "report.html") if (run / "report" / "report.html").is_file() else None,
    }


def summarize_study(folder: Path) -> dict:
    """A `convtrain tune` study folder as one row: best value and trials done/pruned/failed, read from
    its trial run directories (no database, no Optuna), with those runs' rows under ``trials``."""
    import json

    try:
        marker = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        metric = marker.get("metric", "val_acc") if isinstance(marker, dict) else "val_acc"
    except (OSError, ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested 100,000 deep
        metric = "val_acc"
    if metric not in ("val_acc", "val_loss"):  # a hand-edited study file: the listing still shows its trials
        metric = "val_acc"
    trials = [r for r in list_runs(folder) if r.get("kind") != "study"]
    trials.sort(key=lambda r: r["name"])
    count = {"done": 0, "pruned": 0, "failed": 0, "running": 0}
    for r in trials:
        key = {"finished": "done", "pruned": "pruned", "running": "running"}.get(r["status"], "failed")
        count[key] += 1
    count["failed"] += len(_failed_without_run(folder, {r["name"] for r in trials}))
    values = [r[f"best_{metric}"] for r in trials if r.get(f"best_{metric}") is not None]
    best = (min(values) if metric == "val_loss" else max(values)) if values else None
    newest = max((r["created"] for r in trials), default=(folder / "study.json").stat().st_mtime)
    return {**_EMPTY, "name": folder.name, "path": str(folder), "kind": "study", "status": "study",
            "metric": metric, "best_value": best, "best_val_acc": best if metric == "val_acc" else None,
            "epochs": sum(r["epochs"] for r in trials), "seconds": sum(r["seconds"] for r in trials),
            "model": trials[0]["model"] if trials else None, "dataset": trials[0]["dataset"] if trials else None,
            "trials_count": count, "trials": trials, "created": newest}


def _failed_without_run(folder: Path, listed: set[str]) -> list[dict]:
    """The failed trials of the study's last report (tune.json) that left no run directory (they stopped
    before their run began): the study counts them, so the listing does too."""
    try:
        report = json.loads((folder / "tune.json").read_text(encoding="utf-8"))
        rows = report.get("trials") if isinstance(report, dict) else None
    except (OSError, ValueError, RecursionError):
        return []
    return [r for r in rows or [] if isinstance(r, dict) and r.get("state") == "fail"
            and Path(str(r.get("run_dir") or "")).name not in listed]
