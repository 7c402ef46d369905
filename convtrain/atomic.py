"""The one way convtrain writes a file: a temporary name beside it, write, fsync, rename, fsync the folder.

A crash or ``kill -9`` at any moment leaves either the old file or the new one, never a torn one;
a failed write (disk full, read-only folder, Ctrl-C during the write) removes the temporary file
and leaves the old file as it was. Checkpoints, run files, plots, exports, recipes copied out and
the data cache all go through :func:`replacing` (or :func:`creating`, which never replaces);
a new folder of sample images (``convtrain data make-folder``) through :func:`creating_dir`. An output a
user names (``predict --output``) is first checked by :func:`replaceable`: never a folder or anything
but a regular file, and someone else's file only when asked to (``--overwrite``).

The temporary name is ``.NAME.tmp-PID`` in the destination's folder (the same file system, so the
rename is atomic); :func:`convtrain.artifacts.runlock.clean_stale_temp_files` removes those
a killed process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """The temporary file this process writes ``path`` through."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def temp_owner(path: Path) -> int | None:
    """The pid in a temporary file's name (``.NAME.tmp-PID``), or None for any other name."""
    pid = path.name.rpartition(TEMP_MARK)[2]
    return int(pid) if path.name.startswith(".") and TEMP_MARK in path.name and pid.isdigit() else None


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; when the block ends without an error, it replaces ``path``.

    The writer may open the temporary path itself (``torch.save``, ``savefig``, an exporter). On
    any exception, KeyboardInterrupt included, the temporary file (and an exporter's ``.data``
    sidecar) is removed and the exception goes on; ``path`` is untouched.
    """
    path = Path(path)
    refuse_non_regular(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        refuse_non_regular(path)  # it may have appeared while we wrote
        os.replace(tmp, path)
    finally:
        _remove(tmp)  # a no-op after the rename
    fsync_dir(path.parent)


def refuse_non_regular(path: str | Path) -> None:
    """OSError (EEXIST) when ``path`` exists and is not a regular file: a rename would replace a device
    node (``--plot /dev/null`` as root replaced /dev/null), a FIFO, a socket or a symbolic link."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a folder: the rename fails on its own
        raise FileExistsError(errno.EEXIST, "it exists and is not a regular file (a device, pipe, socket or "
                                            "link); convtrain only replaces regular files", str(path))


def replaceable(path: str | Path, *, ours: Callable[[bytes], bool], overwrite: bool = False) -> str | None:
    """Why a new output must not replace ``path`` (None: it may). A missing path may be written; a
    folder or anything that is not a regular file (a device such as /dev/full, a pipe, a socket, a
    symbolic link) is never replaced; a regular file only when its first bytes say this output's own
    writer made it (``ours``: an earlier run of the same command) or with ``overwrite``."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a folder; name a file (in it, or elsewhere)"
    if not stat.S_ISREG(mode):
        return ("exists and is not a regular file (a device, pipe, socket or symbolic link); convtrain only "
                "replaces regular files")
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        return f"exists and cannot be read ({exc.strerror or exc}); give another name"
    if overwrite or ours(head):
        return None
    return "exists and is not an earlier output of this command; give another name, or --overwrite to replace it"


HEAD_BYTES = 4096  # what replaceable() reads of an existing file to recognise its own outputs


@contextlib.contextmanager
def creating(path: str | Path) -> Iterator[Path]:
    """Like :func:`replacing`, but never replaces: raises FileExistsError if ``path`` exists by then."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.link(tmp, path)  # atomic and exclusive: fails if path appeared meanwhile
    finally:
        _remove(tmp)
    fsync_dir(path.parent)


@contextlib.contextmanager
def creating_dir(path: str | Path) -> Iterator[Path]:
    """A new folder, filled under a temporary name beside it and renamed into place when the block
    ends without an error (``path`` must not exist, or be an empty folder); on any error the
    temporary folder is removed and ``path`` is untouched. The files inside are not fsynced one by
    one (a folder of thousands of sample images); the folder rename is made durable."""
    import shutil

    path = Path(path)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, path)  # onto a missing or empty folder only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a no-op after the rename
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some platforms cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(tmp: Path) -> None:
    for leftover in (tmp, tmp.with_name(tmp.name + ".data")):  # torch.onnx may write weights beside the file
        with contextlib.suppress(OSError):
            leftover.unlink(missing_ok=True)
