"""The config reference generated from the schema: ``convtrain config keys`` and the table of docs/configuration.md."""

from __future__ import annotations

import dataclasses

import yaml

from .schema import RunConfig, _field_types, _type_name


def markdown_reference(rows) -> str:
    """The config reference table that docs/configuration.md embeds (tests/project/test_docs.py keeps them in sync)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | `{d}` | {h.replace('|', '/')} |" for k, t, d, h in rows]
    return "\n".join(lines) + "\n"


def schema_rows(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every leaf key, for docs and ``convtrain config keys``."""
    rows = []
    hints = _field_types(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(schema_rows(tp, path))
            continue
        default = getattr(instance, f.name)
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices is not None:
            help_text += f" ({' | '.join(choices() if callable(choices) else choices)})"
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        rows.append((path, _type_name(tp), shown, help_text))
    return rows
