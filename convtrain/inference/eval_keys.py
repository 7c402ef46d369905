"""What ``eval --set`` may change, checked without torch (a mistake is refused before anything loads)."""

from __future__ import annotations

from ..errors import ConfigError

# the keys `eval --set` takes: which images are scored and how they are read, never the model or training
EVAL_KEYS = ("data.test_size", "data.test_subset", "data.skip_unreadable", "data.cache", "data.memory_budget_mb",
             "data.loader", "data.workers", "data.download")


def check_eval_overrides(overrides, data_path: str | None) -> None:
    """``eval --set``: only :data:`EVAL_KEYS`; data.test_size only with --data (on the run's own data it
    would move training images into the test set)."""
    from ..config.load import parse_override

    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key not in EVAL_KEYS:
            raise ConfigError(f"eval --set {text}: eval takes only the data keys {', '.join(EVAL_KEYS)}; "
                              f"'{key}' cannot change for a trained checkpoint")
        if key == "data.test_size" and data_path is None:
            raise ConfigError(f"eval --set {text}: data.test_size goes with --data (another folder or CSV); "
                              "the checkpoint's own data keeps the test split it was trained with")
