"""One writer per run directory: the lock file ``RUN/.lock``.

A training (new, or ``--resume``) holds the lock for as long as it writes the run; read-only commands
(``runs``, ``plot``, ``eval``) never take it and never delete anything. Without it, two trainings into
one directory interleave ``train.log`` and duplicate epochs in ``metrics.csv``, and a ``plot`` that
cleaned "stale" temporary files deleted the checkpoint a live training was writing.

The file holds JSON ``{pid, host, started, command, proc_start}``. Two mechanisms decide who holds it:

* **Creation** is atomic (``O_CREAT | O_EXCL``): of two processes that find no lock, one wins.
* **Liveness** is the holder's PID on this host (``proc_start``, the start time from /proc/PID/stat, guards
  against a reused PID), *or* an ``fcntl.flock`` the holder keeps on the file while it runs. The flock is
  what makes taking over a stale lock safe: the taker must get the flock before it rewrites the file,
  so two processes that both find the same dead holder cannot both take over. The kernel drops the
  flock when the holder dies (even of SIGKILL), so a lock is never "held" by a dead process through it.

A lock from another host cannot be checked (its PID means nothing here), so it is refused with the
command that removes it. An unparseable lock file is stale only when it is older than
:data:`GARBAGE_GRACE_S` and nobody holds its flock: younger, it may be a lock being written right now.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..process import pid_alive, start_time
from ..errors import RunLocked

LOCK_NAME = ".lock"
# an unreadable lock file younger than this may be one whose creator has not written it yet
GARBAGE_GRACE_S = 10.0




@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    started: str  # local time, for people
    command: str
    proc_start: str | None = None  # field 22 of /proc/PID/stat (clock ticks after boot); None off Linux

    def describe(self, run_dir: Path) -> str:
        return f"run {run_dir} is being written by PID {self.pid} on host {self.host} (started {self.started})"


def _this_process() -> LockInfo:
    return LockInfo(pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%d %H:%M:%S"),
                    command=shlex.join([_program(), *sys.argv[1:]]),
                    proc_start=start_time(os.getpid()))


def _program() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return "convtrain" if name in ("__main__.py", "convtrain") else name  # python -m convtrain: __main__.py


def _parse(text: str) -> LockInfo | None:
    try:
        raw = json.loads(text)
        info = LockInfo(pid=raw["pid"], host=raw["host"], started=str(raw.get("started", "?")),
                        command=str(raw.get("command", "?")), proc_start=raw.get("proc_start"))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    ok = (isinstance(info.pid, int) and not isinstance(info.pid, bool) and isinstance(info.host, str)
          and (info.proc_start is None or isinstance(info.proc_start, str)))
    return info if ok else None


def read_holder(run_dir: str | Path) -> LockInfo | None:
    """The live process that holds this run's lock, or None. Reads only: takes no lock, changes nothing.

    For ``convtrain runs`` ("running"). A lock from another host counts as held (it cannot be checked).
    """
    try:
        info = _parse((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    if info is None:
        return None
    if info.host != socket.gethostname():
        return info
    return info if pid_alive(info.pid, info.proc_start) else None


class RunLock:
    """``RUN/.lock`` for one writer. ``with RunLock(run) as lock:`` or ``acquire()`` ... ``release()``.

    ``acquire()`` returns None, or a one-line note when it took over a stale lock (a writer that died);
    it raises :class:`RunLocked` (exit code 2) when a live process, or one on another host, holds it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.took_over: str | None = None
        self._fd: int | None = None
        self._info: LockInfo | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str | None:
        if self._fd is not None:
            return self.took_over
        me = _this_process()
        for _ in range(20):  # each retry means the file changed under us (removed or replaced); rare
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                note = self._take_over_if_stale(me)
                if note is _RETRY:
                    continue
                self.took_over = note
                return note
            except OSError as exc:
                raise RunLocked(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
            try:
                # a fresh file: the only other process that can hold its flock is a checker, for a moment
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._own(fd, me)
            except BaseException:
                self.path.unlink(missing_ok=True)
                os.close(fd)
                raise
            return None
        raise RunLocked(f"cannot take the lock {self.path}: it keeps changing; is another convtrain starting?")

    def _take_over_if_stale(self, me: LockInfo):
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return _RETRY  # released between our create and open
        except OSError as exc:
            raise RunLocked(f"cannot open the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _parse(_read_fd(fd))
                if info is not None and info.host == socket.gethostname() and not pid_alive(info.pid, info.proc_start):
                    raise RunLocked(f"run {self.run_dir}: PID {info.pid} that locked it has exited, but a process "
                                    f"it started (a data loader worker?) still holds {self.path}; stop that "
                                    f"process") from None
                raise RunLocked(self._held_message(info)) from None
            if not _same_file(fd, self.path):
                return _RETRY  # released (and maybe re-created) while we waited for the flock
            text = _read_fd(fd)
            info = _parse(text)
            note = self._stale_note(info, text)
            self._own(fd, me)
            fd = None
            return note
        finally:
            if fd is not None:
                os.close(fd)  # also drops our flock

    def _stale_note(self, info: LockInfo | None, text: str) -> str:
        """Why the lock we hold the flock of may be taken over, or raise RunLocked when it may not."""
        if info is None:
            age = time.time() - self.path.stat().st_mtime
            if age < GARBAGE_GRACE_S:
                raise RunLocked(f"the lock file {self.path} is unreadable and {age:.0f} s old: another process "
                                f"may be creating it; try again in {GARBAGE_GRACE_S:.0f} s")
            return f"note: took over the unreadable lock file {self.path} ({len(text)} bytes, not convtrain's)"
        if info.host != socket.gethostname():
            raise RunLocked(f"{info.describe(self.run_dir)}, another host: this one cannot tell whether it still "
                            f"runs; if host {info.host} is gone or stopped that run, remove {self.path}")
        if pid_alive(info.pid, info.proc_start):
            raise RunLocked(self._held_message(info))
        return (f"note: took over the lock of PID {info.pid} (started {info.started}), which is no longer "
                f"running: it stopped without releasing {self.path}")

    def _held_message(self, info: LockInfo | None) -> str:
        if info is None:
            return f"run {self.run_dir} is locked by another process ({self.path}); wait for it or stop it"
        return f"{info.describe(self.run_dir)}; wait for it or stop it (command: {info.command})"

    def _own(self, fd: int, me: LockInfo) -> None:
        data = json.dumps(dataclasses.asdict(me), indent=1).encode() + b"\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as exc:
            raise RunLocked(f"cannot write the lock file {self.path}: {exc.strerror or exc}") from None
        self._fd, self._info = fd, me

    def release(self) -> None:
        """Remove the lock if it is still ours (never another process's); safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)  # unlink before unlocking: a waiter then sees a new file
        finally:
            os.close(fd)

    def clean_stale_temp_files(self) -> list[Path]:
        """Delete temp files of dead writers; only the lock holder may (see :func:`clean_stale_temp_files`)."""
        if self._fd is None:
            raise RuntimeError("clean_stale_temp_files needs the lock: call acquire() first")
        return clean_stale_temp_files(self.run_dir)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_RETRY = object()


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 1 << 16, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def clean_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete ``.NAME.tmp-PID`` files (an atomic write that was killed before its rename) in RUN and
    RUN/checkpoints; the real files are intact. Call it only while holding the run's :class:`RunLock`:
    then every other writer of this run is dead. A temp file whose PID is alive on this host is still kept
    (a writer from before the lock existed, or a ``plot`` writing its picture)."""
    run = Path(run_dir)
    removed = []
    pattern = f".*{atomic.TEMP_MARK}*"
    for tmp in [*run.glob(pattern), *(run / "checkpoints").glob(pattern)]:
        pid = atomic.temp_owner(tmp)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.EPERM, errno.EACCES):
                continue  # not ours to remove (a directory, or protected): leave it
            raise
        removed.append(tmp)
    return removed
