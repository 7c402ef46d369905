"""Is a process alive: the one rule, for run locks, tune trials and the decode cache's temp files.

A PID alone is not enough: an exited process that its parent has not reaped yet (a zombie) still
answers ``kill(pid, 0)``, and after a reboot or a busy day the same PID may belong to someone else.
Where /proc exists, the process's start time (field 22 of ``/proc/PID/stat``) tells the two apart;
where it does not (macOS), ``kill(pid, 0)`` is all there is.
"""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat``'s fields from the state on (field 3), or None without /proc or once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # the command name may hold spaces and ')'


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, as text), or None where /proc cannot tell."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs on this host and, when ``started`` (its :func:`start_time`) is given, is
    still the same process. A zombie is not alive."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OverflowError:
        return False  # a PID beyond the C int range (a damaged lock or study file)
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc (macOS): kill(0) is all we know
    if fields[0] in ("Z", "X"):
        return False  # exited, waiting to be reaped
    return started is None or len(fields) <= 19 or fields[19] == started
