"""What every experiment tracker of a run answers (MLflow, Weights & Biases), and the one that logs nothing.

A tracker is told the run's start (its directory and resolved config), each epoch's metrics row,
the finished run's files and, when the run did not finish, how it ended. A tracker that is off, or
any rank but 0, is a :class:`NullTracker`, so the runner never asks which one it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..artifacts.metrics import MetricsRow


class NullTracker:
    """Logs nothing: the tracker is off, or this process is not rank 0."""

    def start(self, run_dir: Path | None, config: dict, resumed: bool, info: Callable[[str], None]) -> None:
        pass

    def epoch(self, row: MetricsRow) -> None:
        pass

    def finish(self, run_dir: Path | None) -> None:
        pass

    def end(self, status: str) -> None:
        pass
