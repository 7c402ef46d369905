"""``convtrain models``: the registered models, read from the torch-free catalog."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from .edge import handle_errors, out


@handle_errors
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered models.

    Example: convtrain models
    """
    from ..catalog import MODELS as rows  # the registry's models as plain data: no torch to import

    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="registered models (10 classes, 1x28x28 input)")
    table.add_column("name", style="bold")
    table.add_column("parameters", justify="right")
    table.add_column("kwargs")
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], f"{r['parameters']:,}", escape(", ".join(f"{k}={v}" for k, v in r["kwargs"].items())),
                      escape(r["description"]))
    out.print(table)
