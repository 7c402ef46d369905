"""What a run prints: a rich progress bar on a terminal, plain periodic lines otherwise.

Every line that is not part of the live bar is also appended to the run directory's log (lines
printed before the run directory exists are kept and written when it is attached). Only rank 0
gets an enabled reporter; ``Reporter(enabled=False)`` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..artifacts.metrics import MetricsRow

PASS_BAR_AFTER = 2.0  # seconds an evaluation pass runs before it gets a progress line


class Reporter:
    def __init__(self, console: Console | None = None, enabled: bool = True, log_every: int = 100,
                 verbose: bool = False) -> None:
        self.console = console or Console()
        self.enabled = enabled
        self.log_every = log_every
        self.verbose = verbose  # internals (pids, cache files) on the terminal too, not only in train.log
        self._run_t0 = time.perf_counter()
        self._epoch_seconds: list[float] = []  # finished epochs this process ran: the whole-run ETA
        self.live = enabled and self.console.is_terminal
        self._log: Callable[[str], None] | None = None
        self._early: list[str] = []  # lines printed before attach_log, for the log
        self._progress: Progress | None = None
        self._task = None
        self._pass: Progress | None = None  # the progress line of a long validation / test pass
        self._pass_task = None

    def attach_log(self, log: Callable[[str], None]) -> None:
        """From now on every line also goes to ``log``; the lines printed so far go there first."""
        self._log = log
        early, self._early = self._early, []
        for line in early:
            log(line)

    def info(self, message: str, style: str | None = None, *, shown: str | None = None) -> None:
        """A line for the user and the log (``message`` is plain text, not rich markup); ``shown``: a
        shorter form for the terminal (the log keeps the whole line)."""
        if not self.enabled:
            return
        if shown != "":
            self.console.print(escape(message if shown is None else shown), style=style, highlight=False,
                               soft_wrap=True)
            if not self.live:
                self.console.file.flush()  # a log being tailed should see each line as it happens
        if self._log is not None:
            self._log(message)
        else:
            self._early.append(message)

    def detail(self, message: str) -> None:
        """An internal (a pid, a cache file): in train.log always, on the terminal with --verbose."""
        self.info(message, shown=None if self.verbose else "")

    def epoch_start(self, epoch: int, epochs: int, steps: int, batch_size: int, start_step: int = 0) -> None:
        if not self.enabled:
            return
        self._epoch, self._epochs, self._steps, self._batch = epoch, epochs, steps, batch_size
        self._t0, self._start_step = time.perf_counter(), start_step
        if self.live:
            self._progress = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[ips]} img/s"), TimeRemainingColumn(),
                TextColumn("{task.fields[run_eta]}"), console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("train", total=steps, completed=start_step, loss="-", ips="-",
                                                 run_eta="")

    def step(self, step: int, loss) -> None:
        """Called after every optimizer step with the loss tensor; syncs with the device only when it prints."""
        if not self.enabled:
            return
        if self.live:
            if step % 10 == 0 or step == self._steps:
                self._progress.update(self._task, completed=step, loss=f"{float(loss):.4f}", ips=f"{self._ips(step):.0f}",
                                      run_eta=self._run_eta(step))
        elif step % self.log_every == 0:
            self.info(f"epoch {self._epoch}/{self._epochs} step {step}/{self._steps} loss {float(loss):.4f} "
                      f"{self._ips(step):.0f} img/s")

    def _run_eta(self, step: int) -> str:
        """The whole run's time left (``run 3:20``): this epoch's rest at its current pace, plus the
        epochs still to come at the mean time of the finished ones (this epoch's pace before one has)."""
        if self._epochs <= self._epoch:
            return ""  # the last epoch: the bar's own estimate is the run's
        done = max(step - self._start_step, 1)
        elapsed = time.perf_counter() - self._t0
        this_rest = elapsed / done * (self._steps - step)
        per_epoch = (sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds
                     else elapsed / done * self._steps)
        left = int(this_rest + per_epoch * (self._epochs - self._epoch))
        return f"run {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}" if left >= 3600 else \
            f"run {left // 60}:{left % 60:02d}"

    def _ips(self, step: int) -> float:
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        return (step - self._start_step) * self._batch / elapsed

    def pass_progress(self, name: str, total: int) -> Callable[[int], None] | None:
        """For an evaluation pass of ``total`` batches: a callback that shows a transient progress line
        once the pass has taken :data:`PASS_BAR_AFTER` seconds (terminals only; short passes show nothing)."""
        if not (self.enabled and self.live):
            return None
        t0 = time.perf_counter()

        def tick(done: int) -> None:
            if self._pass is None:
                if time.perf_counter() - t0 < PASS_BAR_AFTER:
                    return
                self._pass = Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                      console=self.console, transient=True)
                self._pass.start()
                self._pass_task = self._pass.add_task(name, total=total)
            self._pass.update(self._pass_task, completed=done)

        return tick

    def pass_end(self) -> None:
        if self._pass is not None:
            self._pass.stop()
            self._pass = None

    def epoch_end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_summary(self, row: MetricsRow, epochs: int, improved: bool) -> None:
        """The one line that ends an epoch (``row`` is what metrics.csv gets)."""
        self._epoch_seconds.append(row.seconds)
        test = f"  test loss {row.test_loss:.4f} acc {row.test_acc:.4f}" if row.test_acc is not None else ""
        skipped = f"  skipped {row.skipped}" if row.skipped else ""  # batches with a NaN/inf loss, not applied
        # the terminal's line fits 80 columns (lr, the test loss and, with a test column, the time: train.log)
        tail = f"  test {row.test_acc:.2%}" if row.test_acc is not None else f"  {row.seconds:.1f}s"
        shown = (f"epoch {row.epoch}/{epochs}  train loss {row.train_loss:.4f} acc {row.train_acc:.2%}  "
                 f"val {row.val_loss:.4f} {row.val_acc:.2%}{tail}{skipped}{' *best' if improved else ''}")
        self.info(f"epoch {row.epoch}/{epochs}  train loss {row.train_loss:.4f} acc {row.train_acc:.4f}  "
                  f"val loss {row.val_loss:.4f} acc {row.val_acc:.4f}{test}  lr {row.lr:.3g}  "
                  f"{row.seconds:.1f}s{skipped}{'  *best' if improved else ''}", shown=shown)

    def close(self) -> None:
        self.epoch_end()
        self.pass_end()
