"""What ``--data PATH`` names, without importing torch: the source (folder or csv), the overrides
it stands for, and the run's default name; and the data root from ``CONVTRAIN_DATA_ROOT``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


def data_root_from_env(default: str) -> str:
    """``CONVTRAIN_DATA_ROOT`` if set, else ``default``."""
    return os.environ.get("CONVTRAIN_DATA_ROOT") or default


def detect(path: str | Path) -> str:
    """``--data PATH``: ``folder`` for a directory, ``csv`` for a .csv file."""
    p = Path(path)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() == ".csv" and p.is_file():
        return "csv"
    raise ConfigError(f"--data {path}: " + ("not found" if not p.exists() else "not a folder or a .csv file")
                      + "; give a folder with train/<class>/ images, or a train.csv file")


def data_overrides(data: str | None, sets: list[str] | None, named_by_config: bool) -> list[str]:
    """``--data PATH`` as the ``--set`` overrides it stands for, before the user's own (which win).

    Without a config file to name the run (``named_by_config`` False) and no ``name=`` override,
    the run is named after the data: ``runs/<folder>-<time>``, a train.csv after its folder.
    """
    if data is None:
        return list(sets or [])
    p = Path(data)
    name = detect(p)
    extra = [f"data.name={name}", f"data.root={p}"]
    if not named_by_config and not any(s.partition("=")[0].strip() == "name" for s in sets or []):
        stem = p.resolve().name if name == "folder" else (p.stem if p.stem != "train" else p.resolve().parent.name)
        extra.append(f"name={stem or 'run'}")
    return extra + list(sets or [])
