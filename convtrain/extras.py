"""One rule for an optional package: a feature whose extra is not installed stops before it starts,
with one line naming the extra to install, and exit 2 (like any other fixable mistake in a command).

Every optional import of the package goes through :func:`require_extra`; the extras it names are
checked against pyproject.toml's ``[project.optional-dependencies]`` by the test suite, so a
message never tells a user to install an extra that does not exist.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtra


def missing_extra(extra: str, needed_by: str, what: str) -> MissingExtra:
    """The error for a missing extra, in the one message shape: ``NEEDED_BY needs WHAT: pip install 'convtrain[EXTRA]'``."""
    return MissingExtra(f"{needed_by} needs {what}: pip install 'convtrain[{extra}]'")


def require_extra(extra: str, needed_by: str, what: str, *modules: str) -> ModuleType:
    """Import ``modules`` (the first is returned); if one is missing, raise :func:`missing_extra`'s error.

    Example: ``optuna = require_extra("tune", "convtrain tune", "Optuna", "optuna")``
    """
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError:
            raise missing_extra(extra, needed_by, what) from None
    return loaded[0]
