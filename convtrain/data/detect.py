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


def resolve(path: str | Path) -> tuple[str, Path]:
    """``--data PATH``: the source and its root. A folder with ``train/`` is a ``folder`` dataset; a
    folder with ``train.csv`` and no ``train/`` (Kaggle's download) is the ``csv`` dataset of that
    file; a .csv file is a ``csv`` dataset."""
    p = Path(path)
    if p.is_dir():
        if not (p / "train").is_dir() and (p / "train.csv").is_file():
            return "csv", p / "train.csv"
        return "folder", p
    if p.suffix.lower() == ".csv" and p.is_file():
        return "csv", p
    raise ConfigError(f"--data {path}: " + ("not found" if not p.exists() else "not a folder or a .csv file")
                      + "; give a folder with train/<class>/ images or a train.csv, or a train.csv file")


def data_overrides(data: str | None, sets: list[str] | None, named_by_config: bool) -> list[str]:
    """``--data PATH`` as the ``--set`` overrides it stands for, before the user's own (which win).

    Without a config file to name the run (``named_by_config`` False) and no ``name=`` override,
    the run is named after the data: ``runs/<folder>-<time>``, a train.csv after its folder.
    """
    if data is None:
        return list(sets or [])
    name, p = resolve(data)
    extra = [f"data.name={name}", f"data.root={p}"]
    if not named_by_config and not any(s.partition("=")[0].strip() == "name" for s in sets or []):
        stem = p.resolve().name if name == "folder" else (p.stem if p.stem != "train" else p.resolve().parent.name)
        extra.append(f"name={stem or 'run'}")
    return extra + list(sets or [])
