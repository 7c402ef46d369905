"""What ``--data PATH`` names, without importing torch: the source whose files PATH is (each record in
:mod:`.sources` says what it claims), the overrides it stands for, and the run's default name; and the data
root from ``CONVTRAIN_DATA_ROOT``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .sources import claim


def data_root_from_env(default: str) -> str:
    """``CONVTRAIN_DATA_ROOT`` if set, else ``default``."""
    return os.environ.get("CONVTRAIN_DATA_ROOT") or default


def resolve(path: str | Path) -> tuple[str, Path]:
    """``--data PATH``: the source's name and its root (a folder with ``train/`` is a ``folder`` dataset; a
    folder with ``train.csv`` and no ``train/`` (Kaggle's download) is the ``csv`` dataset of that file...)."""
    source, root = claim(path)
    return source.name, root


def data_overrides(data: str | None, sets: list[str] | None, named_by_config: bool) -> list[str]:
    """``--data PATH`` as the ``--set`` overrides it stands for, before the user's own (which win).

    Without a config file to name the run (``named_by_config`` False) and no ``name=`` override,
    the run is named after the data: ``runs/<folder>-<time>``, a train.csv after its folder.
    """
    if data is None:
        return list(sets or [])
    source, p = claim(data)
    extra = [f"data.name={source.name}", f"data.root={p}"]
    if not named_by_config and not any(s.partition("=")[0].strip() == "name" for s in sets or []):
        extra.append(f"name={source.run_name(p) or 'run'}")
    return extra + list(sets or [])
