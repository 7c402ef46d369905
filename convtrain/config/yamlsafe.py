"""YAML read within limits: a config file is untrusted input.

Safe loading only (no Python objects), and bounds on size, nesting depth, aliases and nodes, so a
"billion laughs" file or a 100 MB file is one error line instead of a frozen machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Reading YAML: the safe loader, with limits a config file never comes near

MAX_CONFIG_BYTES = 1_000_000  # 1 MB: the shipped configs are < 2 kB; refused before parsing
MAX_YAML_DEPTH = 50  # nested mappings/lists; deeper input would exhaust Python's recursion limit
MAX_YAML_ALIASES = 1000  # *alias uses in one document
MAX_YAML_NODES = 1_000_000  # values after expanding aliases: stops "billion laughs" alias bombs
# digits of one integer: config integers fit in 64 bits (19 digits); far longer ones were an internal
# error (Python refuses to convert more than 4,300 digits) or seconds of arithmetic
MAX_INT_DIGITS = 100


class YAMLLimitError(yaml.YAMLError):
    """Input that is valid YAML but breaks one of the limits above, or repeats a key."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _LimitedLoader(yaml.SafeLoader):
    """The safe loader plus limits on depth, aliases and expanded size, and no duplicate keys.

    The sizes are counted while the document is composed (before any Python object is built),
    with each anchored node's expanded size computed once, so an alias bomb is refused after
    reading a few hundred bytes instead of after exhausting memory.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise YAMLLimitError(f"more than {MAX_YAML_ALIASES} *alias references; write the values out",
                                     self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"values nested more than {MAX_YAML_DEPTH} levels deep; flatten the file",
                                     self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._sizes.get(id(c), 1) for c in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
            else:
                size = 1
            if size > MAX_YAML_NODES:
                raise YAMLLimitError(f"*alias references expand to more than {MAX_YAML_NODES:,} values "
                                     "(an alias bomb?); write the values out", node.start_mark)
            self._sizes[id(node)] = size
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` keys are meant to be overridden
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue  # unhashable key: the base class reports it
                if first is not key_node.start_mark:
                    raise YAMLLimitError(f"duplicate key '{key}' (first at line {first.line + 1}); "
                                         "keep only one of them", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        _check_digits(self.construct_scalar(node), node)
        return super().construct_yaml_int(node)


def _check_digits(text: str, node: Any) -> None:
    digits = sum(c.isdigit() for c in str(text))
    if digits > MAX_INT_DIGITS:
        raise YAMLLimitError(f"an integer of {digits:,} digits; config integers fit in 64 bits (at most "
                             f"2**63-1, 19 digits)", node.start_mark)


_LimitedLoader.add_constructor("tag:yaml.org,2002:int", _LimitedLoader.construct_yaml_int)


class Yaml12Loader(_LimitedLoader):
    """The limited loader with YAML 1.2's core schema for plain scalars (what ``--set`` values are read
    with): ``010`` is ten (YAML 1.1: octal eight), ``1:30`` a string (1.1: 90, base 60), ``yes``/``on``
    strings (1.1: true), ``1e-3`` a number (PyYAML's 1.1: a string), ``1_000`` and dates strings."""

    yaml_implicit_resolvers: dict = {}

    def construct_yaml_int(self, node: Any) -> int:
        text = self.construct_scalar(node)
        _check_digits(text, node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)

    def construct_yaml_float(self, node: Any) -> float:
        text = self.construct_scalar(node).lower()
        return float(text.replace(".inf", "inf").replace(".nan", "nan"))


for _tag, _pattern, _first in (
        ("null", r"~|null|Null|NULL|", "~nN"),
        ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
        ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
        ("float", r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
         "-+.0123456789")):
    Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"),
                                       list(_first) + ([""] if _tag == "null" else []))
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", Yaml12Loader.construct_yaml_float)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the limited safe loader; any failure is a ConfigError naming ``where``.

    Every reader of config YAML uses this (config files, ``--set`` values, a run's config.yaml).
    """
    try:
        loader = _LimitedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, YAMLLimitError):
            raise ConfigError(f"{where}{f', line {mark.line + 1}' if mark else ''}: {problem}") from None
        raise ConfigError(f"{where}: malformed YAML{at}: {problem}") from None
    except RecursionError:  # belt and braces: the depth limit makes this unreachable
        raise ConfigError(f"{where}: values nested too deep; flatten the file") from None


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the limited safe loader; every failure is a ConfigError naming the file."""
    p = Path(path)
    try:
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        if p.is_dir():
            raise ConfigError(f"config path is a directory, not a file: {p}")
        if not p.is_file():  # a FIFO would block forever, /dev/zero never ends
            raise ConfigError(f"config path {p} is not a regular file (a pipe or a device); save the config to a file")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {p} is {p.stat().st_size:,} bytes, larger than the "
                              f"{MAX_CONFIG_BYTES:,}-byte limit for configs; is it the right file?")
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a path with a NUL byte
        raise ConfigError(f"cannot read config file {p!r}: {exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than the {MAX_CONFIG_BYTES:,}-byte limit for configs")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "save the file as UTF-8") from None
    data = parse_yaml(text, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data
