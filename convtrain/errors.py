"""Domain errors. The CLI turns each into one red line on stderr and its exit code.

Exit codes: 2 for usage and configuration mistakes (the user can fix the command or the file),
1 for failures at run time (missing data, a bad checkpoint, a full disk, a diverged run), 130 for
Ctrl-C or SIGTERM and 75 for a preemption notice (SIGUSR1), both with a resumable last.pt.
"""

from __future__ import annotations

import difflib
import json
import reprlib
from collections.abc import Iterable
from typing import Any


class ConvtrainError(Exception):
    """Base class: an error meant for a person, shown without a traceback."""

    exit_code = 1


class ConfigError(ConvtrainError):
    """A config file, a ``--set`` override or a command-line value is wrong."""

    exit_code = 2


class DataError(ConvtrainError):
    """A dataset is missing, truncated or unreadable."""


class CheckpointError(ConvtrainError):
    """A checkpoint is missing, corrupt, unsafe or does not fit what was asked."""


class RunDirError(ConvtrainError):
    """The run directory cannot be created or would overwrite an earlier run."""

    exit_code = 2


class RunFileError(ConvtrainError):
    """A file inside a run directory (metrics.csv, results.json, config.yaml) is unreadable or malformed."""


class TrainingError(ConvtrainError):
    """Training stopped on its own terms (a NaN loss, for instance)."""


class Interrupted(BaseException):
    """The user stopped the run (Ctrl-C, SIGTERM); ``last.pt`` was saved for ``--resume``.

    Not an ``Exception`` (like ``KeyboardInterrupt``): the signal handler raises it wherever the
    main thread is, and a library's ``except Exception`` there (torch's and torchvision's optional
    imports, Pillow's decoders, MLflow's logging, our own decoders) must never swallow it or take it
    for a broken file. The CLI catches it next to :class:`ConvtrainError`: one line, exit 130.
    """

    exit_code = 130


class Preempted(Interrupted):
    """The cluster asked the run to make room (SIGUSR1: SLURM's ``--signal=USR1@90``, a preemption
    notice) and it stopped as on Ctrl-C, ``last.pt`` saved: exit 75, "preempted, resumable".

    75 is sysexits' EX_TEMPFAIL ("a temporary failure; the user is invited to retry"): a job script
    requeues on it (``[ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID``) and on nothing else, so a
    crash (1), a usage mistake (2) or Ctrl-C (130, the person at the keyboard) is never requeued.
    It is below 128, so no shell or scheduler takes it for a death by a signal."""

    exit_code = 75


class RunStopped(ConvtrainError):
    """A caller's per-epoch hook ended a run early (``convtrain tune`` pruned a trial); the run's
    results.json records ``run_status`` (e.g. "pruned") and the message."""

    def __init__(self, message: str, run_status: str) -> None:
        super().__init__(message)
        self.run_status = run_status


def interrupt_in(exc: BaseException) -> BaseException | None:
    """The interrupt (Ctrl-C, SIGTERM) somewhere in ``exc``'s chain of causes, or None: torch's zip
    writer turns whatever its write callback raised, an interrupt included, into a RuntimeError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# Raised by one room each; here so that every exit code is in one file.

class DistributedError(ConvtrainError):
    """The processes of a distributed run could not meet, or lost one another."""


class WorkerFailed(ConvtrainError):
    """A process started by :func:`launch` failed; it printed its own message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class LaunchInterrupted(ConvtrainError):
    """Ctrl-C or SIGTERM reached the launcher; it passed the signal on to every process."""

    exit_code = 130


class OutputError(ConvtrainError):
    """An output file or folder cannot be written (read-only, disk full)."""


class ServeError(ConvtrainError):
    """The server cannot start (a port in use, a missing extra)."""


class RunLocked(ConvtrainError):
    """Another process writes this run directory (or may: a lock from another host)."""

    exit_code = 2


class MissingExtra(ConvtrainError):
    """An optional package is needed for this command (raised by :func:`convtrain.extras.require_extra`):
    the user fixes it by installing the extra, like a usage mistake."""

    exit_code = 2


class ExportError(ConvtrainError):
    """The exporter failed, or the exported model does not reproduce the checkpoint's outputs."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 60, 60, 40, 6, 6, 3


def shown(value: Any, *, as_json: bool = False) -> str:
    """``value`` short enough for a one-line error, whatever its size: Python's repr (``'abc'``), or
    with ``as_json`` the JSON spelling a JSON file holds (``"abc"``, ``null``), cut to ~60 characters."""
    if as_json:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = None
        if text is not None:
            return text if len(text) <= 60 else text[:57] + "..."
    try:
        return _REPR.repr(value)
    except ValueError:  # an integer of more than 4,300 digits has no repr (Python's int-string limit)
        return f"an integer of {value.bit_length():,} bits" if isinstance(value, int) else type(value).__name__
