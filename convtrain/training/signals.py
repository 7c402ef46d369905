"""Ctrl-C, SIGTERM and SIGUSR1 for a whole run, from start-up to the last plot: exit 130 (75 for
SIGUSR1, a cluster's preemption notice), never a torn file.

:class:`StopSignals` is installed before any start-up work and stays until the command returns.
What a signal does depends on where the run is:

* start-up, final test, plots (``immediate``): stop at once with one line (``Interrupted``);
* the training loop (``graceful``): the first signal asks the loop to stop after the current step
  (acknowledged on stderr); the loop saves ``last.pt`` and exits 130. A second signal stops at once,
  with its own message.

SIGUSR1 is a scheduler's preemption notice (SLURM's ``--signal=USR1@90``): it stops like the first
Ctrl-C, and the command exits 75 (:class:`~convtrain.errors.Preempted`, "preempted, resumable")
instead of 130, so that a job script requeues on that code alone. Repeated notices (SLURM signals
every process of a step, and a launcher passes the signal on as well) are one notice, never the
"second signal" that stops at once. Which ranks saw it is agreed in the runner, like the stop itself.

Inside :meth:`StopSignals.protected` (a checkpoint or results write) a signal waits until the write
is done, so a file is always the old one or the complete new one and no temporary file is left.
Deliberately torch-free: the CLI installs it before importing torch, and imports torch inside
``protected()`` (a signal raised inside an import was lost or left numpy half-imported).

SIGINT inherited as ignored (a background job of a script, ``nohup``, many CI runners) is not
honoured: the handlers are installed whatever the parent left, so ``kill -INT`` stops a background
``train`` (or ``serve``) like Ctrl-C stops a foreground one, with exit 130. On exit the inherited
handlers, ignored ones included, are put back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from ..errors import Interrupted, Preempted

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
NOTICE = signal.SIGUSR1  # a preemption notice: stop and save as on Ctrl-C, exit 75


def _ack_line(line: str) -> None:
    """The acknowledgement on stderr, on a line of its own: on a terminal the progress bar's line has
    no newline yet (and the terminal echoed ^C after it), so start a new line first."""
    os.write(2, (("\n" if os.isatty(1) else "") + line + "\n").encode())


class StopSignals:
    def __init__(self, ack: Callable[[str], None] | None = None) -> None:
        self.requested = False  # the loop was asked to stop after the current step
        self.preempted = False  # a preemption notice (SIGUSR1) came: the stop exits 75, not 130
        # os.write, not print: a handler that prints can hit "reentrant call" if the main thread was printing
        self._ack = ack or _ack_line
        self._graceful = False
        self._message: Callable[[str], str] = lambda name: f"interrupted ({name})"
        self._depth = 0  # >0 while inside protected()
        self._pending: int | None = None
        self._saved: dict = {}

    # ---- installation -------------------------------------------------------------------------
    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python only allows it there
            for sig in _SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved = {}
        return False

    # ---- what a signal means now --------------------------------------------------------------
    def immediate(self, message: Callable[[str], str]) -> None:
        """From now on a signal stops at once with ``message(signal_name)``."""
        self._graceful, self._message = False, message

    def graceful(self, twice: Callable[[str], str]) -> None:
        """From now on the first signal sets :meth:`is_set`; a second one stops with ``twice(name)``."""
        self._graceful, self._message = True, twice

    def is_set(self) -> bool:
        return self.requested

    @contextlib.contextmanager
    def protected(self):
        """A write that must not be cut in half: a signal arriving inside waits for its end."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending is not None:
            signum, self._pending = self._pending, None
            self._act(signum)

    # ---- the handler --------------------------------------------------------------------------
    def _handler(self, signum, frame) -> None:
        first_in_loop = self._graceful and not self.requested  # only sets a flag: harmless inside a write
        if self._depth and not first_in_loop:
            if self._pending is None or signum != NOTICE:  # a notice never hides a pending Ctrl-C
                self._pending = signum
            return
        self._act(signum)

    def _act(self, signum: int) -> None:
        name = signal.Signals(signum).name
        notice = signum == NOTICE
        self.preempted = self.preempted or notice
        if self._graceful and not self.requested:
            self.requested = True
            what = f"{name} (preemption notice)" if notice else name
            self._ack(f"{what}: stopping after this step and saving last.pt (Ctrl-C again to stop at once)")
            return
        if notice and self.requested:  # the same notice again: the stop it asked for is under way
            return
        raise (Preempted if notice else Interrupted)(self._message(name))


def pause_for_test(point: str) -> None:
    """Test hook: with ``CONVTRAIN_TEST_PAUSE=<point>:<seconds>`` sleep that long at ``point``.

    A signal test cannot otherwise prove *where* a signal landed (a step takes milliseconds); the
    pause prints ``test pause: <point>`` on stderr first, so the test sends its signal while the run
    is provably there. Points: ``start-up``, ``stop`` (a first signal was seen, before last.pt is
    written), ``save`` (inside the protected last.pt write), ``final-test``. Unset: does nothing.
    """
    spec = os.environ.get("CONVTRAIN_TEST_PAUSE", "")
    where, _, seconds = spec.partition(":")
    if where == point:
        print(f"test pause: {point}", file=sys.stderr, flush=True)
        time.sleep(float(seconds or 5))
