"""The search space: a YAML mapping from config key paths to ranges, checked against the schema.

::

    optim.lr: {float: [1.0e-4, 1.0e-2], log: true}
    train.batch_size: {choice: [64, 128, 256]}
    model.kwargs.width1: {int: [8, 32], step: 8}

Each key is a path of :class:`~convtrain.config.schema.RunConfig` (``model.kwargs.NAME`` for a
model's keyword argument). Before anything runs, every bound and every choice is put into the base
config and built through the schema (:func:`~convtrain.config.schema.from_dict`), so a value the
schema would refuse (a batch size of 0, a float where an integer goes, a width the model rejects)
is one line naming the key, not a failed trial an hour later. Nothing here imports Optuna except
:meth:`Param.suggest`, which receives the trial.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import RunConfig, _field_types, from_dict, to_dict
from ..config.yamlsafe import read_yaml
from ..errors import ConfigError, did_you_mean, shown

KINDS = ("float", "int", "choice")
OPTIONS = {"float": ("float", "log", "step"), "int": ("int", "log", "step"), "choice": ("choice",)}
MAX_GRID = 10_000  # --sampler grid: more combinations than this is a typo, not a search
MAX_CHOICES = 1_000  # values in one choice list: more is a range written out (or a typo)


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` float/int with ``low``..``high`` (``log``, ``step``), or choice of ``choices``."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """This key's value for an Optuna trial (the parameter is named after the key path)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def values_to_check(self) -> list:
        """What load_space builds through the schema: a range's bounds; a choice list's smallest and largest
        number (as for a range) and every other choice (strings, booleans, null). Each check builds a whole
        config (~20 ms): checking all of a 100,000-value list took half an hour."""
        if self.kind != "choice":
            return [self.low, self.high]
        numbers = [c for c in self.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        others = [c for c in self.choices if not (isinstance(c, (int, float)) and not isinstance(c, bool))]
        return ([min(numbers), max(numbers)] if numbers else []) + others

    def grid_size(self) -> int:
        """How many values :meth:`grid` would list, counted without listing them."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int" and not self.log:
            return (self.high - self.low) // (self.step or 1) + 1
        if self.kind == "float" and self.step is not None and not self.log:
            return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return len(self.grid())  # a continuous range: grid() says why it has no grid

    def grid(self) -> list:
        """Every value --sampler grid tries: the choices, or the range walked by ``step``."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.kind == "float" and self.step is not None and not self.log:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [round(self.low + i * self.step, 12) for i in range(n + 1)]
        raise ConfigError(f"--sampler grid: '{self.key}' is a continuous range; give it a step (not with log) "
                          f"or a choice list")

    def as_dict(self) -> dict:
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        out = {self.kind: [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    source: str  # the file, for messages

    def canonical(self) -> str:
        """The space as one JSON line (a study records it; another space under the same study is refused)."""
        return json.dumps({p.key: p.as_dict() for p in self.params}, sort_keys=True)

    def grid_size(self) -> int:
        """The number of --sampler grid combinations, refused above :data:`MAX_GRID` before any list is built
        (a range of 10**12 integers ended in MemoryError)."""
        size = math.prod(p.grid_size() for p in self.params)
        if size > MAX_GRID:
            raise ConfigError(f"--sampler grid: {size:,} combinations (at most {MAX_GRID:,}); narrow {self.source}")
        return size

    def grid(self) -> dict[str, list]:
        self.grid_size()
        return {p.key: p.grid() for p in self.params}


def load_space(path: str | Path, base: RunConfig) -> Space:
    """Read and check ``path`` against the schema and the base config ``base``; nothing is written."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space not found: {path}")
    raw = read_yaml(path)
    where = str(path)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: a search space is a mapping of config keys to ranges, e.g. "
                          f"optim.lr: {{float: [1.0e-4, 1.0e-2], log: true}}")
    params = tuple(_param(str(key), spec, where) for key, spec in raw.items())
    base_raw = to_dict(base)
    for p in params:
        _check_key(p.key, where)
        for value in p.values_to_check():
            apply_params(base_raw, {p.key: value}, f"{where}: '{p.key}' = {value!r}")
    return Space(params, where)


def apply_params(base_raw: dict, values: dict[str, Any], where: str) -> RunConfig:
    """The base config (plain data) with ``values`` set at their key paths, built through the schema."""
    raw = copy.deepcopy(base_raw)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return from_dict(raw, where)
    except ConfigError as exc:
        # "<where>: <schema's message without its own where>" reads as one line
        text = str(exc)
        raise ConfigError(text if text.startswith(where) else f"{where}: {text}") from None


def _param(key: str, spec: Any, where: str) -> Param:
    at = f"{where}: '{key}'"
    if not isinstance(spec, dict):
        raise ConfigError(f"{at} must be a mapping such as {{float: [1.0e-4, 1.0e-2], log: true}}, "
                          f"{{int: [8, 32]}} or {{choice: [64, 128]}}; got {shown(spec)}")
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        unknown = [k for k in spec if k not in ("log", "step", *KINDS)]
        hint = did_you_mean(unknown[0], KINDS) if unknown else ""
        raise ConfigError(f"{at} needs exactly one of float, int, choice; got {', '.join(map(str, spec)) or 'none'}"
                          f"{hint}")
    kind = kinds[0]
    extra = [k for k in spec if k not in OPTIONS[kind]]
    if extra:
        raise ConfigError(f"{at}: '{extra[0]}' does not go with {kind}{did_you_mean(extra[0], OPTIONS[kind])} "
                          f"(float and int take log and step; choice takes a list only)")
    if kind == "choice":
        return _choice(key, spec["choice"], at)
    return _range(key, kind, spec, at)


def _choice(key: str, choices: Any, at: str) -> Param:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{at}: choice needs a non-empty list, e.g. {{choice: [64, 128, 256]}}; got {shown(choices)}")
    if len(choices) > MAX_CHOICES:
        raise ConfigError(f"{at}: {len(choices):,} choices (at most {MAX_CHOICES:,}); a long list of numbers is a "
                          "range: {int: [low, high], step: N} or {float: [low, high]}")
    if any(not isinstance(c, (bool, int, float, str)) and c is not None for c in choices):
        raise ConfigError(f"{at}: choices must be numbers, strings, booleans or null; got {shown(choices)}")
    if len({json.dumps(c) for c in choices}) != len(choices):
        raise ConfigError(f"{at}: a choice is repeated in {shown(choices)}")
    return Param(key, "choice", choices=tuple(choices))


def _range(key: str, kind: str, spec: dict, at: str) -> Param:
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    number = int if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or any(isinstance(b, bool) or not isinstance(b, number) for b in bounds)):
        what = "two integers" if kind == "int" else "two numbers"
        raise ConfigError(f"{at}: {kind} needs [low, high], {what}; got {shown(bounds)}")
    low, high = (float(b) for b in bounds) if kind == "float" else bounds
    if not all(math.isfinite(b) for b in (low, high)):
        raise ConfigError(f"{at}: bounds must be finite, got {shown(bounds)}")
    if not low < high:
        raise ConfigError(f"{at}: low must be below high, got [{low}, {high}] (for one value, leave the key "
                          f"out of the space and --set it)")
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: log is true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{at}: a log range must stay above 0, got [{low}, {high}]")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or not step > 0:
            raise ConfigError(f"{at}: step must be a positive {'integer' if kind == 'int' else 'number'}, "
                              f"got {step!r}")
        if log:
            raise ConfigError(f"{at}: step and log do not go together (Optuna samples one or the other)")
    return Param(key, kind, low, high, log, float(step) if kind == "float" and step is not None else step)


def _check_key(key: str, where: str) -> None:
    """The key path exists in the schema (``model.kwargs.X``: any name; the model checks it)."""
    parts = key.split(".")
    cls: Any = RunConfig
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if cls is dict:
            if i != len(parts) - 1:
                raise ConfigError(f"{where}: '{key}': '{path}' is nested too deep")
            return
        known = {f.name: f for f in dataclasses.fields(cls)}
        if part not in known:
            raise ConfigError(f"{where}: unknown key '{path}'{did_you_mean(part, known)}")
        tp = _field_types(cls)[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(tp) or tp is dict:
            if last:
                raise ConfigError(f"{where}: '{key}' is a section; search one of its keys (e.g. {key}.NAME)")
            cls = tp
        elif not last:
            raise ConfigError(f"{where}: '{path}' has no sub-keys")
