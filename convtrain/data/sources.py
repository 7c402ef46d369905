"""Where a run's data comes from: one record per data source, and the only place that knows them by name.

A :class:`Source` answers everything the other rooms ask about a source: how to build a run's
train/val/test splits (``build``) and the one split ``convtrain eval`` scores (``build_eval``),
whether ``--data PATH`` is one of its files (``claims``) and what the run is then called, whether
it is a registered dataset found under a data root or the user's own files (``registered``: the
data-root rule and what may change on resume), whether its images are light ink on a dark ground
(``mnist_style``: ``--invert auto``, export metadata), the image shape a model must take before any
file is read (``input_spec``), and which files ``convtrain predict`` reads many images from
(``rows``). Every loader returns the same :class:`~convtrain.data.types.DataBundle`, so nothing
after this table knows which source a run uses.

The table is plain data and imports no torch: the config's name check, ``--help`` and ``config keys``
read it; each loader module is imported the first time it builds. A new source is one module in
``data/`` and one record here (or :func:`register` from anywhere, as a test does); tests/project/
test_layout.py fails when another room compares source names instead of asking the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from .types import DataBundle, ImageRows


def _as_configured(data_cfg: Any, where: str) -> tuple[tuple[int, int, int], int]:
    """The user's files are decoded to data.channels x data.image_size^2; their classes are known only
    once the files are read, and 2 is the fewest a run allows."""
    return (data_cfg.channels, data_cfg.image_size, data_cfg.image_size), 2


def _claims_nothing(path: Path) -> Path | None:
    return None


@dataclass(frozen=True)
class Source:
    """One data source: what every room asks about it, so that none of them names it."""

    name: str  # data.name
    build: Callable[[Any, int], DataBundle]  # (data config, split seed) -> train / val / test
    # (data config, split seed, "test" or "val") -> the split `eval` scores, as the bundle's test: a registered
    # dataset's test files or the run's held-out val; the user's files: their own split, else all of them
    build_eval: Callable[[Any, int, str], DataBundle]
    # True: a registered dataset whose files are found under a data root (CONVTRAIN_DATA_ROOT, --data-root;
    # data.root may change on resume). False: the user's own files, where data.root is the data itself.
    registered: bool = False
    mnist_style: bool = False  # light ink on a dark ground: --invert auto turns dark-on-light pictures around
    # --data PATH: the data.root this source reads PATH as, or None when PATH is not its kind of file
    claims: Callable[[Path], Path | None] = _claims_nothing
    run_name: Callable[[Path], str] = lambda root: root.stem  # runs/<name>-<time> for `train --data`
    # (data config, where) -> (image shape, fewest classes) the model must take, before a file is read
    input_spec: Callable[[Any, str], tuple[tuple[int, int, int], int]] = _as_configured
    rows: Callable[[Path], ImageRows | None] | None = None  # predict: PATH as a file of many images, or None
    data_help: str = ""  # what `--data` takes, for --help: "a train.csv file (label,pixel0,...)"
    root_help: str = ""  # what data.root is, for `config keys`: "the train.csv file"
    rows_help: str = ""  # what predict takes, for --help: "unlabelled CSV files (pixel0,..., one image per row)"


def _lazy(load: Callable[[], ModuleType], function: str) -> Callable:
    """``load().function``, imported on the first call: the loaders import torch, this table must not."""
    def call(*args, **kwargs):
        return getattr(load(), function)(*args, **kwargs)

    call.__name__ = call.__qualname__ = function
    return call


def _mnist() -> ModuleType:
    from . import mnist

    return mnist


def _user_files() -> ModuleType:
    from . import user_files

    return user_files


def _csvdata() -> ModuleType:
    from . import csvdata

    return csvdata


def _npzdata() -> ModuleType:
    from . import npzdata

    return npzdata


def _csv_claims(path: Path) -> Path | None:
    """A .csv file, or a folder holding a train.csv and no train/ folder (Kaggle's download)."""
    if path.is_dir() and not (path / "train").is_dir() and (path / "train.csv").is_file():
        return path / "train.csv"
    return path if path.suffix.lower() == ".csv" and path.is_file() else None


def _folder_claims(path: Path) -> Path | None:
    """Any other folder: its train/<class>/ images (the scan says what is missing)."""
    return path if path.is_dir() and _csv_claims(path) is None else None


def _csv_run_name(root: Path) -> str:
    """A train.csv is named after its folder (Kaggle's train.csv: the competition's folder)."""
    return root.stem if root.stem != "train" else root.resolve().parent.name


def _registered_idx(name: str) -> Source:
    """An MNIST-style dataset of IDX files (:mod:`convtrain.data.mnist`)."""
    return Source(name, _lazy(_mnist, "build"), _lazy(_mnist, "build_eval"), registered=True, mnist_style=True,
                  input_spec=_lazy(_mnist, "input_spec"))


SOURCES: dict[str, Source] = {s.name: s for s in (
    _registered_idx("fashion_mnist"),
    _registered_idx("mnist"),
    Source("folder", _lazy(_user_files, "build_folder"), _lazy(_user_files, "eval_folder"), claims=_folder_claims,
           run_name=lambda root: root.resolve().name,
           data_help="a folder (DIR/train/<class>/*, optional val/ and test/)",
           root_help="DIR with train/<class>/ (val/, test/ optional)"),
    Source("csv", _lazy(_user_files, "build_csv"), _lazy(_user_files, "eval_csv"), claims=_csv_claims,
           run_name=_csv_run_name, rows=_lazy(_csvdata, "unlabelled_rows"),
           data_help="a train.csv file (label,pixel0,...)", root_help="the train.csv file",
           rows_help="unlabelled CSV files (pixel0,..., one image per row)"),
    Source("npz", _lazy(_npzdata, "build"), _lazy(_npzdata, "build_eval"), rows=_lazy(_npzdata, "unlabelled_rows"),
           claims=lambda p: p if p.suffix.lower() == ".npz" and p.is_file() else None,
           data_help="an .npz file (x_train, y_train, x_test, y_test or x, y)", root_help="the .npz file",
           rows_help=".npz files (the images of x, else x_test)"),
)}


def register(source: Source) -> Source:
    """Add ``source`` to the table (a plug-in, a test); its name must be new."""
    if source.name in SOURCES:
        raise ValueError(f"data source '{source.name}' is already registered")
    SOURCES[source.name] = source
    return source


def names() -> list[str]:
    """Every data.name: the registered datasets (sorted), then the kinds of the user's own files."""
    return sorted(n for n, s in SOURCES.items() if s.registered) + [n for n, s in SOURCES.items() if not s.registered]


def registered_names() -> list[str]:
    return [n for n in names() if SOURCES[n].registered]


def find(name: str) -> Source | None:
    """The record of ``name``, or None when no source of that name is registered in this process (a
    checkpoint of a source registered elsewhere)."""
    return SOURCES.get(name)


def get(name: str) -> Source:
    """The record of ``name``; an unknown name is a ConfigError with the closest one."""
    found = SOURCES.get(name)
    if found is None:
        raise ConfigError(f"unknown dataset '{name}'{did_you_mean(name, SOURCES)}; datasets: {', '.join(names())}")
    return found


def claim(path: str | Path) -> tuple[Source, Path]:
    """``--data PATH``: the source whose files PATH is, and the data.root it stands for."""
    p = Path(path)
    for source in SOURCES.values():
        root = source.claims(p)
        if root is not None:
            return source, root
    what = "not found" if not p.exists() else "not a dataset convtrain reads"
    raise ConfigError(f"--data {path}: {what}; give {data_help()}")


def either(parts: list[str]) -> str:
    """``a, b or c``."""
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]


def data_help() -> str:
    """What ``--data`` takes, from the records: "a folder (...) or a train.csv file (...)"."""
    return either([s.data_help for s in SOURCES.values() if s.data_help])


def data_names_help() -> str:
    """The data.name values ``--data`` sets: "folder or csv"."""
    return either([s.name for s in SOURCES.values() if s.data_help])


def root_help() -> str:
    """What data.root is for each kind of the user's files: "folder: DIR with ...; csv: the train.csv file"."""
    return "; ".join(f"{s.name}: {s.root_help}" for s in SOURCES.values() if s.root_help)


def own_files() -> str:
    """The kinds of the user's own files, as config help names them: "folder/csv"."""
    return "/".join(n for n, s in SOURCES.items() if not s.registered)


def rows_help() -> list[str]:
    """The files of many images ``predict`` reads, from the records."""
    return [s.rows_help for s in SOURCES.values() if s.rows_help]


def image_rows(path: Path) -> ImageRows | None:
    """``path`` as a file of many images that some source reads (``convtrain predict``), or None."""
    for source in SOURCES.values():
        found = source.rows(path) if source.rows is not None else None
        if found is not None:
            return found
    return None


def build(data_cfg, seed: int) -> DataBundle:
    """Load train/val/test splits for ``data_cfg`` (a :class:`~convtrain.config.schema.DataConfig`)."""
    return get(data_cfg.name).build(data_cfg, seed)


def build_eval(data_cfg, seed: int, split: str = "test") -> DataBundle:
    """The one split ``convtrain eval`` scores for ``data_cfg``, as the bundle's ``test`` (see :class:`Source`)."""
    return get(data_cfg.name).build_eval(data_cfg, seed, split)
