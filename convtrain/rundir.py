"""The run directory: the only place a run writes, and only from rank 0.

Layout::

    RUN/config.yaml            resolved config (effective seed included), written once
    RUN/metrics.csv            one row per epoch
    RUN/checkpoints/last.pt    full training state, for --resume
    RUN/checkpoints/best.pt    best validation accuracy so far
    RUN/results.json           final test metrics and the run's status
    RUN/train.log              what the run printed
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from . import checkpoint
from .errors import RunDirError

# seconds = training time of the epoch; val_seconds / test_seconds = time of those evaluation passes
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds",
                  "val_seconds", "test_seconds"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file via a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"cannot write {path}: {exc.strerror or exc}") from None


def default_path(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/<name>-<YYYYmmdd-HHMMSS>``, with a suffix if that already exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


class RunDir:
    """Writes one run's files. Create a new one with :meth:`create`, reopen one with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = path / "checkpoints"

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Make a fresh run directory; refuse one that exists and is not empty."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run directory {path} exists and is not a directory; pass --run-dir NEW_DIR")
        if path.is_dir() and any(path.iterdir()):
            raise RunDirError(f"run directory {path} is not empty; pass --run-dir NEW_DIR for a new run, "
                              f"or --resume {path} to continue it")
        try:
            (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
        if not os.access(path, os.W_OK):
            raise RunDirError(f"run directory {path} is not writable")
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Reopen an existing run directory (for --resume)."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise RunDirError(f"{path} is not a convtrain run directory (no config.yaml)")
        # stale temp files are cleaned by the run's lock holder (runlock.clean_stale_temp_files), never
        # here: a reader deleted the checkpoint a live training was writing
        return cls(path)

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.path / "config.yaml", yaml_text)

    def append_metrics(self, row: dict) -> None:
        path = self.path / "metrics.csv"
        new = not path.exists()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(v) for k, v in row.items()})
        with open(path, "a", encoding="utf-8") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        path = self.path / "metrics.csv"
        if not path.exists():
            return []
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (written after the checkpoint a resume starts from)."""
        rows = [r for r in self.read_metrics() if int(r["epoch"]) <= last_epoch]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    def save_checkpoint(self, name: str, ckpt: dict) -> Path:
        path = self.checkpoints / name
        checkpoint.save(ckpt, path)
        return path

    def write_results(self, results: dict) -> None:
        atomic_write_text(self.path / "results.json", json.dumps(results, indent=2) + "\n")

    def log(self, line: str) -> None:
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
