"""The ``convtrain`` command line: :mod:`.app` registers the commands, :mod:`.edge` meets the process.

``main`` is the console script; importing this package imports Typer and Rich, never torch.
"""

from .app import app, main

__all__ = ["app", "main"]
