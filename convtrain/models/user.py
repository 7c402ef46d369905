"""Your own model without editing the package: ``model.name: package.module:function`` (a factory found by
its import path, registered under that name) or ``model.file: my_models.py`` (a file whose
``@register_model`` factories ``model.name`` then names; ``--import`` sets it). Both go through
:func:`~convtrain.models.registry.register_model`, so they are checked as the built-in models are, and both are
recorded in the run's config, so eval, predict, export, serve and resume import them again.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..errors import ConfigError
from . import registry

_FILES: dict[Path, object] = {}  # each file is imported once per process: a second run would register twice


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_file(file: str, where: str = "config") -> Path:
    """Import ``file`` (its ``@register_model`` calls register its models); returns its absolute path."""
    path = Path(file).expanduser().resolve()
    if path in _FILES:
        return path
    if path.suffix != ".py" or not path.is_file():
        what = "a folder" if path.is_dir() else "not a .py file" if path.exists() else "not found"
        raise ConfigError(f"{where}: 'model.file' {file}: {what}; give the Python file that registers your "
                          "model (e.g. --import my_models.py)")
    name = f"convtrain_user_models.{path.stem}_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # the user's code: any failure is one line naming the file
        del sys.modules[name]
        raise ConfigError(f"{where}: cannot import 'model.file' {file}: {_first_line(exc)}") from None
    _FILES[path] = module
    return path


def load_function(name: str, where: str = "config") -> None:
    """Register the factory ``package.module:function`` under ``name`` (once), checked as @register_model checks."""
    if name in registry._REGISTRY:
        return
    module_name, _, attr = name.partition(":")
    if not module_name or not attr.isidentifier():
        raise ConfigError(f"{where}: 'model.name' {name!r}: a model of your own is 'package.module:function'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))  # as `python -m` would: a module next to the user's files is found
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{where}: 'model.name' {name}: cannot import {module_name}: {_first_line(exc)}; "
                          "is it installed, or on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{where}: 'model.name' {name}: {module_name} has no function '{attr}'")
    doc = (factory.__doc__ or "").strip().splitlines()
    try:
        registry.register_model(name, doc[0] if doc else f"{attr} from {module_name}")(factory)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: 'model.name' {name}: {exc}") from None


def load_user_models(name: str, file: str | None, where: str = "config") -> str | None:
    """What ``model.file`` and ``model.name`` ask to import, imported; returns the file's absolute path."""
    path = load_file(file, where) if file else None
    if ":" in name:
        load_function(name, where)
    return str(path) if path is not None else None
