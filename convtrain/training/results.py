"""What training returns, as types: :class:`TrainResult` (one run: ``train``, ``finetune``, ``--resume``)
and :class:`SeedsResult` (``train --seeds``: the runs' spread, as ``summary.json`` holds it).

The command line renders them and the Python API returns them. Importing this module imports no
torch (``import convtrain`` stays quick).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: the runner imports torch
    from ..artifacts.metrics import MetricsRow
    from .state import RunResult


@dataclass(frozen=True)
class TrainResult:
    """What a training run returns: where it wrote, and its numbers (all accuracies are fractions)."""

    run_dir: Path | None  # None only on the processes other than rank 0 of a multi-process run (they write nothing)
    test_accuracy: float  # of best.pt, on the test split
    test_loss: float
    best_epoch: int  # chosen on the validation split, never on the test split
    best_val_acc: float
    epochs: list[MetricsRow] = field(repr=False)  # one row per epoch, as metrics.csv has them
    train_seconds: float = 0.0
    stopped_by: str | None = None  # early_stopping / stop_at / max_time; None: the whole schedule ran
    test_num_samples: int = field(default=0, repr=False)  # images in the test split

    @classmethod
    def from_run(cls, result: RunResult) -> TrainResult:
        """The runner's result (:class:`convtrain.training.state.RunResult`) as the typed answer."""
        test = result.test
        return cls(run_dir=Path(result.run_dir) if result.run_dir is not None else None,
                   test_accuracy=float(test["accuracy"]), test_loss=float(test["loss"]), best_epoch=result.best_epoch,
                   best_val_acc=float(result.best_val_acc), epochs=list(result.epochs),
                   train_seconds=float(result.train_seconds), stopped_by=result.stopped_by,
                   test_num_samples=int(test["num_samples"]))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> TrainResult:
        """A finished run read back from its results.json and metrics.csv (``--resume auto`` on a run
        that has finished returns it without training)."""
        from ..artifacts.runfiles import read_metrics, read_results

        run = Path(run_dir)
        results, rows = read_results(run), read_metrics(run)
        if results is None or results.status != "finished":
            from ..errors import RunDirError

            raise RunDirError(f"{run} has not finished (its results.json says {results.status if results else 'nothing'})")
        return cls(run_dir=run, test_accuracy=float(results.test_accuracy), test_loss=float(results.test_loss or 0.0),
                   best_epoch=int(results.best_epoch or 0), best_val_acc=float(results.best_val_acc or 0.0),
                   epochs=rows, train_seconds=float(results.train_seconds or sum(r.seconds for r in rows)),
                   stopped_by=None, test_num_samples=sum(map(sum, results.confusion_matrix or [])))

    @property
    def checkpoint(self) -> Path:
        """The run's ``checkpoints/best.pt``."""
        if self.run_dir is None:
            from ..errors import ConfigError

            raise ConfigError("this process wrote no run directory (only rank 0 of a multi-process run does)")
        return self.run_dir / "checkpoints" / "best.pt"

    def rows(self) -> list[dict]:
        """The per-epoch rows as plain dicts (e.g. for ``pandas.DataFrame(result.rows())``)."""
        return [r.as_dict() for r in self.epochs]


@dataclass(frozen=True)
class Stats:
    """One number over the seeds: mean, sample standard deviation (ddof=1; None for one seed), min, max."""

    mean: float
    std: float | None
    min: float
    max: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "n": self.n}


@dataclass(frozen=True)
class SeedRun:
    """One seed's run of a ``--seeds`` folder, read back from its results.json and metrics.csv."""

    seed: int
    run_dir: Path
    test_accuracy: float
    split_seed: int | None
    test_fingerprint: str | None
    best_epoch: int
    train_seconds: float | None
    epochs: int
    val_acc: list[float] = field(repr=False)  # per epoch

    def as_dict(self) -> dict:
        return {"seed": self.seed, "run_dir": str(self.run_dir), "test_accuracy": self.test_accuracy,
                "split_seed": self.split_seed, "test_fingerprint": self.test_fingerprint,
                "best_epoch": self.best_epoch, "train_seconds": self.train_seconds, "epochs": self.epochs,
                "val_acc": list(self.val_acc)}


STD_NOTE = "sample standard deviation (ddof=1)"  # what summary.json says its "std" is


@dataclass(frozen=True)
class SeedsResult:
    """``train --seeds``: the same config once per seed under ``run_dir``, and what varies between them."""

    run_dir: Path  # the folder of the seed runs (RUN/seed-N) and of summary.json
    seeds: list[int]
    test_accuracy: Stats  # of each seed's best.pt
    train_seconds: Stats
    val_acc_per_epoch: dict[int, Stats] = field(repr=False)  # epoch -> the validation accuracy over the seeds
    runs: list[SeedRun] = field(repr=False)
    same_test_set: bool = True  # every seed was tested on the same images (data.split_seed)
    split_seeds: list[int] = field(default_factory=list, repr=False)
    test_fingerprint: str | None = field(default=None, repr=False)  # the test set's, when it is the same for all

    @property
    def summary_file(self) -> Path:
        return self.run_dir / "summary.json"

    @classmethod
    def from_summary(cls, run_dir: Path, summary: dict) -> SeedsResult:
        """From the summary dict :func:`convtrain.training.seeds.summarize` makes (summary.json's content)."""
        test_set = summary["test_set"]
        return cls(run_dir=Path(run_dir), seeds=list(summary["seeds"]), test_accuracy=_stats(summary["test_accuracy"]),
                   train_seconds=_stats(summary["train_seconds"]),
                   val_acc_per_epoch={e["epoch"]: _stats(e) for e in summary["val_acc_per_epoch"]},
                   runs=[SeedRun(**{**r, "run_dir": Path(r["run_dir"])}) for r in summary["runs"]],
                   same_test_set=test_set["same_for_all_seeds"], split_seeds=list(test_set["split_seeds"]),
                   test_fingerprint=test_set["fingerprint"])

    def as_dict(self) -> dict:
        """summary.json's content, key for key."""
        return {"seeds": list(self.seeds), "std": STD_NOTE,
                "test_set": {"split_seeds": list(self.split_seeds), "fingerprint": self.test_fingerprint,
                             "same_for_all_seeds": self.same_test_set},
                "test_accuracy": self.test_accuracy.as_dict(), "train_seconds": self.train_seconds.as_dict(),
                "val_acc_per_epoch": [{"epoch": e, **s.as_dict()} for e, s in self.val_acc_per_epoch.items()],
                "runs": [r.as_dict() for r in self.runs]}


def _stats(d: dict) -> Stats:
    return Stats(mean=d["mean"], std=d["std"], min=d["min"], max=d["max"], n=d["n"])
