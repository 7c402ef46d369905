"""The run directory: the only place a run writes, and only from rank 0.

Layout::

    RUN/config.yaml            resolved config (effective seed included), written once
    RUN/metrics.csv            one row per epoch
    RUN/checkpoints/last.pt    full training state, for --resume
    RUN/checkpoints/best.pt    best validation accuracy so far
    RUN/checkpoints/epoch-NNN.pt  epochs kept by checkpoint.keep_top_k / every_n_epochs
    RUN/results.json           final test metrics and the run's status
    RUN/train.log              what the run printed
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .. import atomic
from ..config.schema import from_dict
from ..config.yamlsafe import read_yaml
from ..errors import ConfigError, RunDirError, RunFileError
from . import checkpoint, runfiles
from .metrics import COLUMNS, MetricsRow
from .runlock import LOCK_NAME, RunLock


def write_text(path: Path, text: str) -> None:
    """A run file, written atomically (:mod:`convtrain.atomic`); a failed write keeps the old file."""
    try:
        atomic.write_text(path, text)
    except OSError as exc:
        raise _write_error(path, exc) from None


def _write_error(path: Path, exc: OSError) -> RunFileError:
    # exit 1: a full disk or a read-only folder is a failure at run time, not a mistake in the command
    return RunFileError(f"cannot write {path}: {exc.strerror or exc}")


PLOTS_NEED_MATPLOTLIB = "note: curves.png and confusion.png need matplotlib (pip install 'convtrain[plot]')"

def default_path(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/<name>-<YYYYmmdd-HHMMSS>``, with a suffix if that already exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


# what every config.yaml a run wrote has (the resolved config): a recipe or someone's own config.yaml may lack them
RESOLVED_KEYS = ("seed", "model", "data", "train", "optim")


def check_is_run(path: str | Path, checkpoint_file: str | Path | None = None) -> None:
    """RunDirError (exit 2) unless ``path`` proves to be a run directory before a resume writes into it:
    a ``checkpoints/`` folder, a ``config.yaml`` that is a resolved convtrain config, and, when a
    checkpoint file was named, that file inside ``checkpoints/``. A project folder holding its own
    config.yaml and a copied last.pt is not a run: resuming there overwrote that folder's files."""
    path = Path(path)
    hint = "--resume takes RUN_DIR or RUN_DIR/checkpoints/last.pt of a run convtrain wrote"
    what = f"{checkpoint_file} is not inside a run directory" if checkpoint_file is not None else \
        f"{path} is not a convtrain run directory"
    if checkpoint_file is not None and Path(checkpoint_file).parent.name != "checkpoints":
        raise RunDirError(f"{what} (it is not in a run's checkpoints/ folder, so {path} is not taken for one); {hint}")
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{what} (no {path / 'config.yaml'}); {hint}")
    if not (path / "checkpoints").is_dir():
        raise RunDirError(f"{what} (no {path / 'checkpoints'} folder); {hint}")
    try:
        raw = read_yaml(path / "config.yaml")
        missing = [k for k in RESOLVED_KEYS if k not in raw] if isinstance(raw, dict) else list(RESOLVED_KEYS)
        if missing:
            raise ConfigError(f"no {', '.join(missing)}")
        from_dict(raw, str(path / "config.yaml"))
    except ConfigError as exc:
        raise RunDirError(f"{what}: {path / 'config.yaml'} is not a run's resolved config ({exc}); {hint}") from None


class RunDir:
    """Writes one run's files.

    :meth:`create` (a new run) and :meth:`open` (``--resume``) are the only ways in; ranks other
    than 0 get :meth:`disabled`, an object with the same methods that writes nothing.
    """

    def __init__(self, path: Path, lock: RunLock, note: str | None = None) -> None:
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.lock = lock  # held from create/open until close(): one writer per run directory
        self.note = note  # set when the lock of a writer that died was taken over

    def close(self) -> None:
        self.lock.release()

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Make a fresh run directory; refuse one that exists and is not empty."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run directory {path} exists and is not a directory; pass --run-dir NEW_DIR")
        if path.is_dir() and _has_files(path):
            raise RunDirError(f"run directory {path} is not empty; pass --run-dir NEW_DIR for a new run, "
                              f"or --resume {path} to continue it")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
        lock = RunLock(path)
        note = lock.acquire()  # another `train --run-dir` into the same path that got here first: exit 2
        try:
            if _has_files(path):  # it finished (and let go) between our first look and the lock
                raise RunDirError(f"run directory {path} is not empty; pass --run-dir NEW_DIR for a new run")
            (path / "checkpoints").mkdir(exist_ok=True)
            if not os.access(path, os.W_OK):
                raise RunDirError(f"run directory {path} is not writable")
        except OSError as exc:
            lock.release()
            raise RunDirError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
        except RunDirError:
            lock.release()
            raise
        return cls(path, lock, note)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Reopen an existing run directory (for --resume)."""
        path = Path(path)
        if not (path / "config.yaml").is_file():  # a resume proved it is a run first: check_is_run
            raise RunDirError(f"{path} is not a convtrain run directory (no config.yaml)")
        lock = RunLock(path)
        note = lock.acquire()  # a resume of a run that is still going: exit 2
        # temp files of a killed writer are removed only now, by the lock holder: a reader (plot)
        # that cleaned them once deleted the checkpoint a live training was writing
        lock.clean_stale_temp_files()
        try:
            (path / "checkpoints").mkdir(exist_ok=True)
        except OSError as exc:
            lock.release()
            raise RunDirError(f"cannot reopen run directory {path}: {exc.strerror or exc}") from None
        return cls(path, lock, note)

    @staticmethod
    def disabled() -> NullRunDir:
        """The run directory of a rank that does not write."""
        return NullRunDir()

    def has_checkpoint(self, name: str) -> bool:
        return (self.checkpoints / name).is_file()

    def tensorboard_folder(self) -> Path:
        return self.path / "tensorboard"

    def write_config(self, yaml_text: str) -> None:
        write_text(self.path / "config.yaml", yaml_text)

    def update_config(self, yaml_text: str) -> None:
        """Rewrite config.yaml after a resume changed a setting, keeping its times: `convtrain runs`
        orders runs by when config.yaml was first written, and a resume does not make a run newer."""
        path = self.path / "config.yaml"
        if path.read_text(encoding="utf-8", errors="replace") == yaml_text:
            return
        times = path.stat()
        write_text(path, yaml_text)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))

    def append_metrics(self, row: MetricsRow) -> None:
        path = self.path / "metrics.csv"
        text = _csv([row], header=not path.exists())
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _write_error(path, exc) from None

    def read_metrics(self) -> list[MetricsRow]:
        return runfiles.read_metrics(self.path)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (written after the checkpoint a resume starts from)."""
        rows = [r for r in self.read_metrics() if r.epoch <= last_epoch]
        write_text(self.path / "metrics.csv", _csv(rows, header=True))

    def save_checkpoint(self, name: str, ckpt: dict) -> Path:
        path = self.checkpoints / name
        checkpoint.save(ckpt, path)
        return path

    def checkpoint_names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.checkpoints.iterdir() if p.is_file())
        except OSError:
            return []

    def remove_checkpoints(self, names: list[str]) -> None:
        """Delete checkpoints no longer kept (checkpoint.keep_top_k); a file already gone is fine."""
        for name in names:
            try:
                (self.checkpoints / name).unlink(missing_ok=True)
            except OSError as exc:
                raise _write_error(self.checkpoints / name, exc) from None

    def write_results(self, results: runfiles.Results) -> None:
        """RUN/results.json: the one writer of that file (the run, and ``convtrain tune`` marking a trial)."""
        write_text(self.path / "results.json", json.dumps(results.to_json(), indent=2) + "\n")

    def log(self, line: str) -> None:
        path = self.path / "train.log"
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line.rstrip("\n") + "\n")
        except OSError as exc:
            raise _write_error(path, exc) from None

    def write_plots(self, info: Callable[[str], None], background: bool = False,
                    detail: Callable[[str], None] | None = None):
        """curves.png and confusion.png (needs matplotlib: without it, a note instead).

        ``background``: leave them to a separate process (``convtrain plot RUN``) and return its
        Popen at once: the run's own process then exits without waiting ~1-2 s for matplotlib.
        results.json is already written and the plot command only renames finished pictures into
        place, so a Ctrl-C or crash of either process leaves the run's files whole.
        """
        if background:
            return self._plots_in_background(info, detail or info)
        from ..errors import MissingExtra
        from .plots import plot_run

        try:
            written = plot_run(self.path)
        except MissingExtra:
            info(PLOTS_NEED_MATPLOTLIB)
            return
        except OSError as exc:
            # results.json is already written: the run itself is complete, only the pictures are missing
            raise RunFileError(f"cannot write the plots (curves.png, confusion.png) into {self.path}: "
                               f"{exc.strerror or exc}; the run finished "
                               f"(results.json); redo them with: convtrain plot {self.path}") from None
        info(f"plots: {', '.join(p.name for p in written)}")
        return None

    def _plots_in_background(self, info: Callable[[str], None], detail: Callable[[str], None]):
        import importlib.util
        import subprocess
        import sys

        if importlib.util.find_spec("matplotlib") is None:
            info(PLOTS_NEED_MATPLOTLIB)
            return None
        # its own session: a Ctrl-C at the terminal after the run ended does not reach it
        proc = subprocess.Popen([sys.executable, "-m", "convtrain", "plot", str(self.path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        info("plots: curves.png and confusion.png are being written in the background")
        detail(f"plots: background process pid {proc.pid}; if the pictures do not appear: convtrain plot {self.path}")
        return proc


class NullRunDir:
    """What ranks other than 0 hold: every write does nothing, nothing is ever read."""

    path = None
    note = None

    def close(self) -> None:
        pass

    def has_checkpoint(self, name: str) -> bool:
        return False

    def tensorboard_folder(self) -> None:
        return None  # no event files from this rank

    def write_config(self, yaml_text: str) -> None:
        pass

    def update_config(self, yaml_text: str) -> None:
        pass

    def append_metrics(self, row: MetricsRow) -> None:
        pass

    def read_metrics(self) -> list[MetricsRow]:
        return []

    def truncate_metrics(self, last_epoch: int) -> None:
        pass

    def save_checkpoint(self, name: str, ckpt: dict) -> None:
        pass

    def checkpoint_names(self) -> list[str]:
        return []

    def remove_checkpoints(self, names: list[str]) -> None:
        pass

    def write_results(self, results: runfiles.Results) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def write_plots(self, info: Callable[[str], None], background: bool = False,
                    detail: Callable[[str], None] | None = None) -> None:
        pass


def _has_files(path: Path) -> bool:
    return any(p.name != LOCK_NAME for p in path.iterdir())


def _csv(rows: list[MetricsRow], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(r.to_csv() for r in rows)
    return buf.getvalue()
