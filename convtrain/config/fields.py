"""How a config field is declared and checked: :func:`opt` (default, help, choices, check), the
value checks the schema's fields share, and the count-or-fraction annotations. Plain Python, no
imports from the rest of the package: :mod:`convtrain.config.schema` builds the dataclasses from these."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import field
from typing import Any


def opt(default: Any, help: str, *, choices: Callable[[], Iterable[str]] | Sequence[str] | None = None,
         check: Callable[[Any], str | None] | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """Declare one config field: its default, one line of help and how to validate it."""
    meta = {"help": help, "choices": choices, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def positive(v: Any) -> str | None:
    return None if v is None or v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v is None or v >= 0 else "must be >= 0"


def fraction(v: float) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def unit_open(v: float) -> str | None:
    return None if 0 < v < 1 else "must be in (0, 1)"


def between(low: int, high: int) -> Callable[[Any], str | None]:
    """``low <= v <= high``: upper bounds stop values that would exhaust memory or never finish."""
    def check(v: Any) -> str | None:
        if v is None or low <= v <= high:
            return None
        if v < low:
            return "must be > 0" if low == 1 else f"must be >= {low}"
        return f"must be at most {high:,}"

    return check


class CountOrFraction:
    """Annotation for a size given as a count of images (``5000``) or a fraction of them (``0.1``).

    Counts are whole numbers >= 1, fractions are numbers strictly between 0 and 1; ``1.0`` or ``2.5``
    are neither and are refused, so a typo cannot hold out 250% of a dataset.
    """

    name = "count or fraction"  # in the configuration reference
    what, whole, example = "a count of images (e.g. 5000) or a fraction (e.g. 0.1)", "a count", "5000"


class EpochOrFraction(CountOrFraction):
    """Annotation for an epoch (``8``) or a fraction of ``train.epochs`` (``0.75``), by the same rules."""

    name = "epoch or fraction"
    what, whole, example = "an epoch (e.g. 8) or a fraction of train.epochs (e.g. 0.75)", "an epoch", "8"
