"""The on-disk cache of decoded folder/csv datasets, so the second run does not decode again.

A cache file holds the decoded uint8 tensors of one dataset. Its name is a hash of every file's
relative name, size and modification time plus the decode settings (channels, image size) and this
format's version, so any added, removed, replaced or touched file, or another image size, misses
the cache and decodes again. Files live in ``CONVTRAIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/convtrain``,
else ``~/.cache/convtrain`` (never inside the dataset folder, which may be read-only or shared).
Writes are atomic (temp file + rename); a cache file that cannot be read (damaged, truncated, from
another version) is ignored and rebuilt; a cache folder that cannot be written only costs the
next run its decode time. The cache is never needed for correctness.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .. import atomic
from ..errors import interrupt_in
from ..process import pid_alive

VERSION = 1

CACHE_FILE_NOTE = "data: cache file "  # the note naming the cache file: train.log only (or --verbose)


def folder() -> Path:
    if os.environ.get("CONVTRAIN_CACHE_DIR"):
        return Path(os.environ["CONVTRAIN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convtrain"


def key(kind: str, root: Path, fingerprint: list[tuple[str, int, int]], settings: dict) -> str:
    text = json.dumps({"v": VERSION, "kind": kind, "root": str(Path(root).resolve()), "files": fingerprint,
                       "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def path_for(cache_key: str) -> Path:
    return folder() / "datasets" / f"{cache_key[:40]}.pt"


def load(cache_key: str) -> tuple[dict | None, str | None]:
    """(payload, None) on a hit; (None, note) when a cache file was there but unusable; (None, None) on a miss."""
    path = path_for(cache_key)
    if not path.is_file():
        return None, None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("key") != cache_key:
            raise ValueError("another dataset's or version's cache")
        return payload, None
    except Exception as exc:  # noqa: BLE001 - any damage: decode again and overwrite it
        return None, f"ignored the unreadable cache file {path} ({type(exc).__name__}); decoding again"


def save(cache_key: str, payload: dict) -> str | None:
    """Write atomically; returns a note when the cache could not be written (the run goes on)."""
    path = path_for(cache_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers_temps(path.parent)
        with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
            torch.save({**payload, "key": cache_key}, f)
        return None
    except (OSError, RuntimeError) as exc:
        interrupt = interrupt_in(exc)  # torch's zip writer wraps a Ctrl-C inside the write in a RuntimeError
        if interrupt is not None:
            raise interrupt from None
        return f"could not write the data cache in {path.parent} ({getattr(exc, 'strerror', None) or exc}); " \
               "the next run decodes again (set CONVTRAIN_CACHE_DIR to a writable folder)"


def _remove_dead_writers_temps(folder: Path) -> None:
    """Delete the temporary files (``.NAME.tmp-PID``) of cache writes whose process died (killed
    mid-write): without this they stayed in the cache folder for good. A live writer's file is kept."""
    for tmp in folder.glob(f".*{atomic.TEMP_MARK}*"):
        pid = atomic.temp_owner(tmp)
        if pid is None or pid == os.getpid():
            continue
        if pid_alive(pid):
            continue  # it may still be writing
        try:
            tmp.unlink()
        except OSError:
            pass
