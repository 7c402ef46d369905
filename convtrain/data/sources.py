"""Where a run's data comes from: one dispatch table from ``data.name`` to the loader that builds it.

Every loader returns the same :class:`~convtrain.data.types.DataBundle` (uint8 splits, classes,
mean/std), so nothing after this table knows which source a run uses. A new source is one
function returning a DataBundle and one entry in :data:`SOURCES` (and its name in
:data:`convtrain.catalog.FILE_SOURCES` or ``DATASETS``, which the config checks without torch).
"""

from __future__ import annotations

from collections.abc import Callable

from . import mnist, user_files
from .types import DataBundle

SOURCES: dict[str, Callable[..., DataBundle]] = {
    **{name: mnist.build for name in mnist.DATASETS},
    "folder": user_files.build_folder,
    "csv": user_files.build_csv,
}


def build(data_cfg, seed: int) -> DataBundle:
    """Load train/val/test splits for ``data_cfg`` (a :class:`~convtrain.config.schema.DataConfig`)."""
    return SOURCES[data_cfg.name](data_cfg, seed)
