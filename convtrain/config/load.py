"""From files and flags to one typed :class:`~convtrain.config.schema.RunConfig`.

Precedence (docs/cli-notes.md, "Overrides"), lowest first: the schema defaults < the YAML file or
packaged recipe (``--config``) < ``--data`` (the ``data.name``/``data.root`` it stands for) < ``--set
key.path=value`` and bare ``key.path=value``, applied in the order given < the shortcuts
``--epochs``, ``--lr``, ``--batch-size``, then ``--device`` and ``--seed`` (< ``--data-root`` /
``CONVTRAIN_DATA_ROOT`` for the data root). A key given more than once with different values is not
an error: the last one wins, and :func:`override_notes` says so in one note per key. Every key is
checked against the schema on the way in.

An override's value is split off at the first ``=`` and read as YAML 1.2 (the core schema): ``010``
is ten, not octal eight; ``1:30`` and ``yes`` are strings (YAML 1.1 read them as 90 and true);
``1e-3`` is a number. An integer of more than :data:`~convtrain.config.yamlsafe.MAX_INT_DIGITS`
digits is refused before Python converts it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, did_you_mean
from .schema import RunConfig, _field_types, _type_name, from_dict, suggest_key
from .yamlsafe import MAX_INT_DIGITS, YAMLLimitError, Yaml12Loader, read_yaml

# the order of precedence, as override_notes() prints it
PRECEDENCE = "--set and bare keys apply in the order given, then --epochs, --lr, --batch-size, --device, --seed"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed scalar value."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key.path=value")
    key, _, raw_value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{text}': expected key.path=value")
    try:
        value = _parse_set_value(raw_value) if raw_value.strip() else ""
    except YAMLLimitError as exc:
        raise ConfigError(f"--set {key}=...: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw_value  # not valid YAML: keep it as the string the user typed
    return key.split("."), value


def _parse_set_value(raw: str) -> Any:
    loader = Yaml12Loader(raw)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    """Apply ``--set`` overrides to a raw mapping, checking each key path against the schema."""
    raw = _deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        cls: Any = RunConfig
        node = raw
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if cls is dict:  # free-form mapping (model.kwargs): anything below is a key
                if i != len(parts) - 1:
                    raise ConfigError(f"--set {text}: '{path}' is nested too deep")
                node[part] = value
                break
            known = {f.name: f for f in dataclasses.fields(cls)}
            if part not in known:
                raise ConfigError(f"--set {text}: unknown key '{path}'{suggest_key(path)}")
            tp = _field_types(cls)[part]
            if i == len(parts) - 1:
                node[part] = value
                break
            if dataclasses.is_dataclass(tp) or tp is dict:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node, cls = child, tp
            else:
                raise ConfigError(f"--set {text}: '{path}' is a {_type_name(tp)}, it has no sub-keys")
    return raw


def override_notes(overrides: Iterable[str]) -> list[str]:
    """One note per key given more than once with different values (``train.epochs=2 train.epochs=3``,
    ``--epochs 1`` with ``train.epochs=2``): which value won, by :data:`PRECEDENCE` (the last one)."""
    given: dict[str, list[str]] = {}
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if sep:
            given.setdefault(key.strip(), []).append(value.strip())
    notes = []
    for key, values in given.items():
        if len(set(values)) > 1:
            listed = ", then ".join(_short(v) for v in values)
            notes.append(f"note: {key} is given {len(values)} times ({listed}); the last one wins: "
                         f"{key}={_short(values[-1])} ({PRECEDENCE})")
    return notes


def override_text(key: str, value: Any) -> str:
    """``{"train.epochs": 2}``'s entry as the override ``train.epochs=2`` (the Python API's mapping form):
    the value as JSON, which the YAML 1.2 reader reads back as given."""
    import json

    if isinstance(value, int) and not isinstance(value, bool) and abs(value).bit_length() > 64 * 5:
        raise ConfigError(f"overrides: '{key}' is an integer of more than {MAX_INT_DIGITS} digits; config "
                          "integers fit in 64 bits (at most 2**63-1)")
    try:
        return f"{key}={json.dumps(value, default=_path_text)}"
    except ValueError as exc:  # an integer of more than 4,300 digits inside a list
        raise ConfigError(f"overrides: '{key}': {str(exc).splitlines()[0][:80]}") from None
    except TypeError:  # what JSON cannot write and is no path (an object, a set)
        raise ConfigError(f"overrides: '{key}' is of type {type(value).__name__}, not a config value (a number, "
                          "a string, a bool, a list or a mapping)") from None


def _path_text(value: Any) -> str:
    """A Path (or any os.PathLike) is its text; anything else JSON cannot write is refused (TypeError)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(type(value).__name__)


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _deepcopy(raw: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v) for k, v in raw.items()}


def load_config(path: str | Path | None, overrides: Iterable[str] = (), *, data_root: str | None = None,
                base: dict | None = None, where: str | None = None) -> RunConfig:
    """Load a run config: schema defaults < YAML file (or ``base``) < ``--set`` overrides.

    Errors name the file (or ``--set``) and the key path. The data root is ``data_root`` if
    given, else a ``--set data.root=...``, else ``CONVTRAIN_DATA_ROOT``, else the file's value.
    When ``name`` is unset it becomes the config file's stem, so run directories are named
    after their recipe.
    """
    named = None
    if path is not None:
        named, path = str(path), resolve_config_path(path)
    raw = read_yaml(path) if path is not None else (base or {})
    if path is not None and named != str(path):  # a packaged recipe: named by its name, not its site-packages path
        where = where or f"recipe '{named}'"
    where = where or (str(path) if path is not None else "config")
    overrides = list(overrides)
    # Validate the file alone first, so its own mistakes are reported against the file; keys, types and
    # values (the file's, then the overrides') before the checks that build the model and import torch.
    from_dict(raw, where, cross=False)
    merged = apply_overrides(raw, overrides) if overrides else raw
    if overrides:
        from_dict(merged, f"{where} + --set", cross=False)
    from_dict(raw, where)
    if overrides:
        raw, where = merged, f"{where} + --set"
    cfg = from_dict(raw, where)
    if cfg.name is None and path is not None:
        cfg.name = Path(path).stem
    set_root = any(o.partition("=")[0].strip() == "data.root" for o in overrides)
    from ..data.sources import get as get_source

    if data_root:
        cfg.data.root = str(data_root)
    elif not get_source(cfg.data.name).registered:
        pass  # CONVTRAIN_DATA_ROOT locates the registered datasets; the root of the user's files is their own path
    elif not set_root and os.environ.get("CONVTRAIN_DATA_ROOT"):
        cfg.data.root = os.environ["CONVTRAIN_DATA_ROOT"]
    return cfg


def given_section(path: str | Path | None, overrides: Iterable[str] = (), section: str = "data",
                  data_root: str | None = None) -> dict:
    """The keys of ``section`` as the user gave them: the file or recipe, then ``--set`` (and ``--data-root``),
    without the schema's defaults or ``CONVTRAIN_DATA_ROOT`` (what a config written for someone else keeps)."""
    raw = read_yaml(resolve_config_path(path)) if path is not None else {}
    raw = apply_overrides(raw, overrides) if overrides else raw
    given = dict(raw.get(section) or {}) if isinstance(raw.get(section), dict) else {}
    if data_root and section == "data":
        given["root"] = str(data_root)
    return given


def resolve_config_path(path: str | Path) -> Path:
    """``--config``: a file path, or the name of a packaged recipe (``mnist``, ``fast``...).

    An existing file always wins, so a local ``mnist`` file is never shadowed by the recipe.
    """
    p = Path(path)
    if p.exists() or p.suffix or len(p.parts) != 1:
        return p
    from . import recipes

    found = recipes.find(str(p))
    if found is None:
        names = recipes.names()
        raise ConfigError(f"config file not found: {p}, and no packaged recipe of that name"
                          f"{did_you_mean(str(p), names)}; recipes: {', '.join(names)} (convtrain config list)")
    return found
