"""The last line of defence: an unexpected exception becomes one line on stderr and a crash file.

Domain errors (:class:`~convtrain.errors.ConvtrainError`) are handled by each command. Anything
else that escapes a command is a bug: the user still sees ONE line (exit code 1) naming the file
where the full traceback was saved, so a crash deep inside torch does not bury the terminal, yet
nothing needed for a bug report is lost. ``--debug`` or ``CONVTRAIN_DEBUG=1`` prints the
traceback on the terminal instead.

The crash file goes into the run directory when a run has one (whoever creates or reopens it
calls :func:`set_run_dir`), else into ``$XDG_CACHE_HOME/convtrain`` (``~/.cache/convtrain``),
else into the system temporary folder.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path

_run_dir: Path | None = None
_debug = False


def set_run_dir(path: str | Path | None) -> None:
    """Save crash files of this process into ``path`` (the run directory) from now on."""
    global _run_dir
    _run_dir = None if path is None else Path(path)


def set_debug(on: bool) -> None:
    """``--debug``: show tracebacks on the terminal instead of saving them."""
    global _debug
    _debug = bool(on)


def debug_enabled() -> bool:
    return _debug or os.environ.get("CONVTRAIN_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _candidate_folders() -> list[Path]:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convtrain"
    return [p for p in (_run_dir, cache, Path(tempfile.gettempdir())) if p is not None]


def save_traceback(exc: BaseException) -> Path | None:
    """Write the traceback (and what was run) to a new crash file; None when no folder takes it."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"convtrain crashed: {type(exc).__name__}\n"
            f"command: {' '.join(sys.argv)}\n"
            f"time: {datetime.datetime.now().isoformat(timespec='seconds')}  pid: {os.getpid()}\n"
            f"python: {sys.version.split()[0]}  torch: {_torch_version()}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for folder in _candidate_folders():
        path = folder / f"crash-{stamp}-{os.getpid()}.txt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8", errors="backslashreplace") as f:  # "x": never overwrite
                f.write(text)
            return path
        except OSError:
            continue  # read-only run directory, full disk, no home: try the next folder
    return None


def _torch_version() -> str:
    torch = sys.modules.get("torch")  # never import torch here: it may be what is broken
    return str(getattr(torch, "__version__", "not imported"))


def summary(exc: BaseException, limit: int = 200) -> str:
    """``TypeError: first line of the message`` (shortened), for the one-line report."""
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails must not break the backstop
        lines = []
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def crash_message(exc: BaseException) -> str:
    """Save the traceback and return the one line to show (without the ``error: `` prefix)."""
    path = save_traceback(exc)
    where = (f"the traceback is in {path}" if path is not None
             else "the traceback could not be saved to a file")
    return f"internal error ({summary(exc)}); {where}; please report it (rerun with --debug to see it here)"
