"""What the trackers that talk to a service share (MLflow, Weights & Biases): a failure of that service
in the middle of a run is one note, and that tracker stops logging; the run goes on, since its own
files are the record. (A helper module: events.discover skips names that start with ``_``.)
"""

from __future__ import annotations

from collections.abc import Callable

from ..events import Hook


class Tracker(Hook):
    service = "the tracker"  # its name in the note

    def __init__(self) -> None:
        self.info: Callable[[str], None] = print  # the run's reporter from on_start on

    def live(self) -> bool:
        """Still logging (not ended, no failure yet)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Log nothing more."""
        raise NotImplementedError

    def failure_detail(self) -> str:
        return ""

    def _call(self, what: str, fn: Callable[[], object]) -> None:
        if not self.live():
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the services raise many kinds; the training must not die of them
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            self.info(f"note: {self.service} logging stopped ({what} failed{self.failure_detail()}: {reason}); "
                      f"the run's own files are complete")
            self.stop()
