"""List the runs under a folder, newest first, from the files each run directory holds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .rundir import RunDir


def list_runs(folder: str | Path = "runs") -> list[dict]:
    """One summary dict per run directory under ``folder`` (runs need a config.yaml), newest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for cfg_path in root.glob("*/config.yaml"):
        run = cfg_path.parent
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        rows = [r.to_csv() for r in RunDir(run).read_metrics()]  # MetricsRow -> the csv text it reads
        results = {}
        if (run / "results.json").exists():
            try:
                results = json.loads((run / "results.json").read_text())
            except (OSError, json.JSONDecodeError):
                results = {}
        val = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
        total = int(cfg.get("train", {}).get("epochs", 0))
        found.append({
            "name": run.name,
            "path": str(run),
            "model": cfg.get("model", {}).get("name"),
            "dataset": cfg.get("data", {}).get("name"),
            "epochs": len(rows),
            "epochs_total": total,
            "best_val_acc": max(val) if val else None,
            "test_acc": results.get("test_accuracy"),
            "seconds": sum(float(r["seconds"]) for r in rows if r.get("seconds")),
            # no results.json: the run was killed (or is still going), so it did not finish
            "status": results.get("status", "interrupted"),
            "created": cfg_path.stat().st_mtime,
        })
    return sorted(found, key=lambda r: r["created"], reverse=True)
