"""convtrain's version: one string, read by the package, checkpoints and ``pyproject.toml``."""

__version__ = "0.1.0"
