"""Typed, read-only readers for the files of a run directory.

``runs``, ``plot`` and ``--resume`` read what a run wrote (perhaps by an older convtrain, perhaps damaged
by a full disk or a hand edit). Each reader returns a typed value or raises :class:`RunFileError`
(exit code 1) with one line that names the file, and the row or key. None of them writes, locks or
deletes anything, so they are safe on a run that is still training.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, RunDirError, RunFileError, shown
from .metrics import MetricsRow

STATUSES = ("finished", "interrupted", "failed", "pruned")  # pruned: a `convtrain tune` trial stopped early
# MetricsRow fields without a default: a metrics.csv header must name them all
_REQUIRED_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def require_run_dir(run_dir: str | Path) -> Path:
    """The run directory as a Path; RunDirError (exit 2) when it is missing or not a convtrain run."""
    run = Path(run_dir)
    if not run.exists():
        raise RunDirError(f"run directory {run} does not exist")
    if not run.is_dir():
        raise RunDirError(f"{run} is not a directory; pass a run directory (it holds config.yaml)")
    if not (run / "config.yaml").exists() and not (run / "config.yaml").is_symlink():
        raise RunDirError(f"{run} is not a convtrain run directory (no config.yaml)")
    return run


def _read_text(path: Path) -> str | None:
    """The file's text (UTF-8), or None when it does not exist; RunFileError for anything unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RunFileError(f"{path} is a directory, not a file; move it away") from None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path} is not UTF-8 text (byte {exc.start}); the file is damaged") from None


# ---------------------------------------------------------------------------------------------
# metrics.csv


def read_metrics(run_dir: str | Path) -> list[MetricsRow]:
    """The rows of RUN/metrics.csv, in file order; [] when there is no file (or it is still empty)."""
    path = Path(run_dir) / "metrics.csv"
    text = _read_text(path)
    if not text:
        return []
    if "\x00" in text:
        raise RunFileError(f"{path} holds NUL bytes; the file is damaged")
    if not text.endswith("\n") and "\n" in text:
        # a live training appends one whole line at a time: an unfinished last line is being written now
        text = text[:text.rindex("\n") + 1]
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in _REQUIRED_COLUMNS if c not in header]
        if missing:
            raise RunFileError(f"{path}: the header line lacks column '{missing[0]}' "
                               f"(is this a convtrain metrics.csv?)")
        rows = []
        for raw in reader:
            where = f"{path} row {reader.line_num - 1}"
            if None in raw:
                raise RunFileError(f"{where}: more fields than the header has columns")
            row = MetricsRow.from_csv(raw, where)
            _check_row(row, where)
            rows.append(row)
    except csv.Error as exc:
        raise RunFileError(f"{path} line {reader.line_num}: {exc}") from None
    return rows


def _check_row(row: MetricsRow, where: str) -> None:
    for name in ("train_acc", "val_acc", "test_acc", "val_macro_f1", "val_balanced_acc"):
        value = getattr(row, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise RunFileError(f"{where}: column '{name}' is {value}, not an accuracy between 0 and 1")
    for name in ("seconds", "val_seconds", "test_seconds"):
        value = getattr(row, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise RunFileError(f"{where}: column '{name}' is {value}, not a number of seconds")


# ---------------------------------------------------------------------------------------------
# results.json


@dataclass(frozen=True)
class Results:
    """What RUN/results.json says: how the run ended and, when it finished, its test numbers.

    One typed view for both directions: :func:`read_results` fills the keys the commands read back
    (the first block), the run writes it through :meth:`RunDir.write_results
    <convtrain.artifacts.rundir.RunDir.write_results>` (:meth:`to_json` decides the keys and their order)."""

    status: str  # finished / interrupted / failed / pruned
    test_accuracy: float | None = None  # finished runs only
    test_loss: float | None = None
    best_epoch: int | None = None
    best_val_acc: float | None = None
    train_seconds: float | None = None
    confusion_matrix: list[list[int]] | None = None  # [true][predicted] counts, square
    classes: list[str] | None = None
    epoch: int | None = None  # where an interrupted or failed run stopped
    reason: str | None = None  # why a failed run failed
    split_seed: int | None = None  # the seed that held out val/test (runs before data.split_seed: absent)
    test_fingerprint: str | None = None  # names the test images (same fingerprint: same test set)
    test_macro_f1: float | None = None  # the mean F1 over the classes (runs before this key: None)
    test_balanced_accuracy: float | None = None  # the mean recall over the classes
    # written for people and scripts, not read back by the commands
    step: int | None = None  # a clean interrupt: the step inside ``epoch`` that last.pt holds (None: its end)
    test_num_samples: int | None = None
    test_per_class_accuracy: list[float] | None = None
    best_metric: str | None = None  # train.best_metric: what picked best_epoch (absent before that key: val_acc)
    epochs: int | None = None  # epochs trained
    stopped_by: str | None = None  # early_stopping / stop_at / max_time; None: the whole schedule ran
    stopped_epoch: int | None = None
    world_size: int | None = None
    device: str | None = None
    skipped_files: tuple[str, ...] = ()  # data.skip_unreadable: every file or CSV row left out
    added: dict = field(default_factory=dict)  # the keys the run's hooks add (stopping: time_to_target...)

    def to_json(self) -> dict:
        """The JSON object: a finished run's numbers; else its status with where (and why) it ended."""
        if self.status != "finished":
            if self.reason is None:  # a clean stop on a signal: last.pt holds this epoch and step
                return {"status": self.status, "epoch": self.epoch, "step": self.step}
            return {"status": self.status, "reason": self.reason, **({} if self.epoch is None else {"epoch": self.epoch})}
        return {
            "status": self.status, "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc,
            "best_metric": self.best_metric,
            "test_accuracy": self.test_accuracy, "test_loss": self.test_loss, "test_num_samples": self.test_num_samples,
            "test_macro_f1": self.test_macro_f1, "test_balanced_accuracy": self.test_balanced_accuracy,
            "test_per_class_accuracy": self.test_per_class_accuracy, "test_confusion_matrix": self.confusion_matrix,
            "classes": self.classes, "epochs": self.epochs, "train_seconds": self.train_seconds,
            "split_seed": self.split_seed, "test_fingerprint": self.test_fingerprint,
            "stopped_early": self.stopped_by is not None, "stopped_by": self.stopped_by,
            "stopped_epoch": self.stopped_epoch, **self.added, "world_size": self.world_size, "device": self.device,
            **({"skipped_unreadable": len(self.skipped_files), "skipped_files": list(self.skipped_files)}
               if self.skipped_files else {})}


def read_results(run_dir: str | Path) -> Results | None:
    """RUN/results.json as :class:`Results`, or None when there is none (killed, or still training)."""
    path = Path(run_dir) / "results.json"
    text = _read_text(path)
    if text is None:
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, or [[[[...]]]] 10^5 deep
        detail = str(exc).split(";")[0][:80] or type(exc).__name__
        raise RunFileError(f"{path} is not a results file ({detail})") from None
    if not isinstance(raw, dict):
        raise RunFileError(f"{path} must hold a JSON object, not {_json_type(raw)}")
    get = _Getter(raw, path)
    status = get("status", str, required=True)
    if status not in STATUSES:
        raise RunFileError(f"{path}: key 'status' is {status!r}, not one of {', '.join(STATUSES)}")
    finished = status == "finished"
    results = Results(
        status=status, test_accuracy=get("test_accuracy", float, required=finished, unit=True),
        test_loss=get("test_loss", float), best_epoch=get("best_epoch", int),
        best_val_acc=get("best_val_acc", float, unit=True),
        train_seconds=get("train_seconds", float), confusion_matrix=_matrix(raw.get("test_confusion_matrix"), path),
        classes=get("classes", list), epoch=get("epoch", int), reason=get("reason", str),
        split_seed=get("split_seed", int), test_fingerprint=get("test_fingerprint", str),
        test_macro_f1=get("test_macro_f1", float, unit=True),
        test_balanced_accuracy=get("test_balanced_accuracy", float, unit=True))
    if results.classes is not None:
        if not all(isinstance(c, str) for c in results.classes):
            raise RunFileError(f"{path}: key 'classes' must be a list of strings")
        if results.confusion_matrix is not None and len(results.classes) != len(results.confusion_matrix):
            raise RunFileError(f"{path}: {len(results.classes)} classes but a "
                               f"{len(results.confusion_matrix)}x{len(results.confusion_matrix)} confusion matrix")
    return results


class _Getter:
    """``get(key, type)``: the value of one key, checked, or RunFileError naming the file and key."""

    _NAMES = {float: "a number", int: "an integer", str: "a string", list: "a list"}

    def __init__(self, raw: dict, path: Path) -> None:
        self.raw, self.path = raw, path

    def __call__(self, key: str, kind: type, required: bool = False, unit: bool = False):
        value = self.raw.get(key)
        if value is None:
            if required:
                raise RunFileError(f"{self.path}: key '{key}' is missing")
            return None
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok and kind is float and (not math.isfinite(value) or (unit and not 0.0 <= value <= 1.0)):
            ok = False
        if not ok:
            want = "a number between 0 and 1" if unit else self._NAMES[kind]
            raise RunFileError(f"{self.path}: key '{key}' is {shown(value, as_json=True)}, not {want}")
        return value


def _matrix(value, path: Path) -> list[list[int]] | None:
    if value is None:
        return None
    n = len(value) if isinstance(value, list) else 0
    if not (n and all(isinstance(r, list) and len(r) == n for r in value)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for r in value for v in r)):
        raise RunFileError(f"{path}: key 'test_confusion_matrix' must be a square matrix of counts "
                           f"(a list of equally long lists of integers >= 0)")
    return value


def _json_type(value) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


# ---------------------------------------------------------------------------------------------
# config.yaml


def read_run_config(run_dir: str | Path) -> dict:
    """RUN/config.yaml (the resolved config the run saved) as a mapping; RunFileError when it is not one."""
    path = Path(run_dir) / "config.yaml"
    text = _read_text(path)
    if text is None:
        raise RunDirError(f"{run_dir} is not a convtrain run directory (no config.yaml)")
    from ..config.yamlsafe import parse_yaml

    try:
        # the config loader's limits (nesting depth, alias expansion, duplicate keys): a damaged or
        # hostile config.yaml in a runs folder must not hang `convtrain runs`
        cfg = parse_yaml(text, str(path))
    except ConfigError as exc:
        raise RunFileError(str(exc)) from None
    except (ValueError, TypeError) as exc:  # e.g. a date 2020-02-30
        raise RunFileError(f"{path} is not a run config ({type(exc).__name__}: {str(exc)[:60]})") from None
    if not isinstance(cfg, dict):
        raise RunFileError(f"{path} must hold a mapping (key: value lines), not {_yaml_type(cfg)}")
    return cfg


@dataclass(frozen=True)
class RunInfo:
    """What ``runs`` and ``plot`` need from RUN/config.yaml (None where the config lacks the key)."""

    model: str | None
    dataset: str | None
    epochs: int | None
    config: dict


def read_run_info(run_dir: str | Path) -> RunInfo:
    """:func:`read_run_config` plus the keys the listing and the plots show, type-checked."""
    cfg = read_run_config(run_dir)
    where = Path(run_dir) / "config.yaml"
    return RunInfo(model=config_value(cfg, "model.name", str, where),
                   dataset=config_value(cfg, "data.name", str, where),
                   epochs=config_value(cfg, "train.epochs", int, where), config=cfg)


def config_value(cfg: dict, key: str, kind: type, where: Path):
    """``cfg["a"]["b"]`` for ``key="a.b"``, checked to be ``kind``; None when absent; RunFileError otherwise."""
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            raise RunFileError(f"{where}: '{'.'.join(parts[:i])}' must be a mapping, not {_yaml_type(node)}")
        node = node.get(part)
        if node is None:
            return None
    if not isinstance(node, kind) or isinstance(node, bool):
        raise RunFileError(f"{where}: '{key}' is {shown(node)}, not {_Getter._NAMES.get(kind, kind.__name__)}")
    return node


def _yaml_type(value) -> str:
    if value is None:
        return "an empty document"
    return _json_type(value) if isinstance(value, (list, str, bool, int, float)) else type(value).__name__


