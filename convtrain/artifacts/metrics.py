"""One typed metrics row: what a run records per epoch, in metrics.csv, results, the epoch line and plots.

Every place that writes or reads ``metrics.csv`` goes through :class:`MetricsRow`, so a column is
named in one place and a malformed file is reported once, with its row number, instead of
failing somewhere deep in a plot or a resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import RunFileError

# seconds = training time of the epoch; val_seconds / test_seconds = time of those evaluation passes;
# skipped = batches not applied because their loss was NaN/inf (train.nonfinite=skip);
# val_macro_f1 / val_balanced_acc = the mean F1 / recall over the classes (convtrain.training.scores)
COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "seconds",
           "val_seconds", "test_seconds", "skipped", "val_macro_f1", "val_balanced_acc")
# columns a file written by an older convtrain may lack; they read as their default
_OPTIONAL = {"skipped": 0, "val_seconds": None, "test_seconds": None, "val_macro_f1": None, "val_balanced_acc": None}


@dataclass(frozen=True)
class MetricsRow:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    test_loss: float | None = None  # only with train.test_every_epoch
    test_acc: float | None = None
    val_seconds: float | None = None
    test_seconds: float | None = None
    skipped: int = 0
    val_macro_f1: float | None = None  # rows of runs before these columns: None
    val_balanced_acc: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def score(self, metric: str) -> float:
        """The value of ``metric`` (train.best_metric); a row written before that column existed scores
        its validation accuracy, what picked best.pt then."""
        value = getattr(self, metric)
        return self.val_acc if value is None else value

    def to_csv(self) -> dict[str, str]:
        """Column -> text, in :data:`COLUMNS` order (6 significant digits, empty for None)."""
        return {c: _fmt(getattr(self, c)) for c in COLUMNS}

    @classmethod
    def from_csv(cls, raw: dict, where: str) -> MetricsRow:
        """Parse one ``csv.DictReader`` row; ``where`` names the file and row in the error."""
        values = {}
        for f in dataclasses.fields(cls):
            text = raw.get(f.name)
            if text is None or text == "":
                if f.name in _OPTIONAL or f.default is None:
                    values[f.name] = _OPTIONAL.get(f.name)
                    continue
                raise RunFileError(f"{where}: column '{f.name}' is missing or empty")
            try:
                number = int(text) if f.name in ("epoch", "skipped") else float(text)
            except (TypeError, ValueError):
                raise RunFileError(f"{where}: column '{f.name}' is {text!r}, not a number") from None
            values[f.name] = number
        if values["epoch"] < 1:
            raise RunFileError(f"{where}: epoch must be >= 1, got {values['epoch']}")
        return cls(**values)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
