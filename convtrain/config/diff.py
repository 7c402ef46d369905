"""Two configs compared key by key: the one rule for ``--resume`` (which keys changed) and
``convtrain runs diff`` (what differs between two runs), and the flat key names MLflow logs.

A config is compared as its flat key paths (``train.epochs``, ``model.kwargs.hidden``), so a
difference inside ``model.kwargs`` names the keyword that changed.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = None  # what a key absent from one side reads as (the YAML of an older run may lack it)


def flatten(cfg: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping stays one value."""
    flat = {}
    for key, value in cfg.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def config_diff(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(key path, value in a, value in b)`` for every key whose values differ, sorted by key path;
    a key on one side only reads as None on the other; keys in ``ignore`` are left out."""
    fa, fb = flatten(a), flatten(b)
    absent = object()
    return [(k, fa.get(k, MISSING), fb.get(k, MISSING)) for k in sorted(set(fa) | set(fb))
            if k not in ignore and fa.get(k, absent) != fb.get(k, absent)]
