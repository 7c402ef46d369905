"""``convtrain config show|keys|list|copy``: look at a config before running it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..data.detect import data_overrides
from .edge import err, handle_errors, out
from .options import (BatchSizeOpt, DataOpt, DataRootOpt, EpochsOpt, ImportOpt, LrOpt, SetOpt, load_run_config,
                      with_import, with_shortcuts)


@handle_errors
def config_show(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (default: schema defaults).",
                                          show_default=False),
    set_: Optional[list[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    data: Optional[str] = DataOpt,
    epochs: Optional[int] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = BatchSizeOpt,
    import_: Optional[str] = ImportOpt,
) -> None:
    """Print the fully resolved config as YAML, without running anything.

    Example: convtrain config show --config mnist optim.lr=3e-3
    """
    from ..config.load import override_notes
    from ..config.schema import to_yaml

    sets = data_overrides(data, with_import(with_shortcuts(set_, epochs, lr, batch_size), import_), config is not None)
    print(to_yaml(load_run_config(config, sets, None, None, data_root)), end="")
    for note in override_notes(sets):  # on stderr: stdout stays the YAML (config show > my.yaml)
        err.print(escape(note))


@handle_errors
def config_keys(as_markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (as in convtrain docs configuration).")) -> None:
    """List every config key with its type, default and meaning.

    Example: convtrain config keys --markdown
    """
    # here, not at the top: the config package imports yaml and the schema (~35 ms of every --help)
    from ..config.reference import markdown_reference, schema_rows

    rows = schema_rows()
    if as_markdown:
        print(markdown_reference(rows), end="")
        return
    table = Table(title="config keys")
    for col in ("key", "type", "default", "meaning"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    out.print(table)


@handle_errors
def config_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the packaged recipes (usable as --config NAME from any folder).

    Example: convtrain config list
    """
    from ..config.recipes import listing

    rows = listing()
    if as_json:
        print(json.dumps(rows))
        return
    import textwrap

    out.print("packaged recipes: run one from any folder with the command under its name;")
    out.print("`convtrain config copy NAME FILE` writes one out to edit")
    width = max(40, min(out.width, 100))
    for r in rows:
        out.print(f"\n[bold]{escape(r['name'])}[/]\n  [cyan]{escape(r['command'])}[/]")
        out.print(escape(textwrap.fill(r["description"], width, initial_indent="  ", subsequent_indent="  ")))


@handle_errors
def config_copy(
    name: str = typer.Argument(..., help="Recipe name (convtrain config list).", show_default=False),
    dest: Path = typer.Argument(..., help="File to write, or a folder to write NAME.yaml in.", show_default=False),
) -> None:
    """Write a packaged recipe out to edit it (never overwrites a file).

    Example: convtrain config copy mnist my_mnist.yaml
    """
    from ..config.recipes import copy

    out.print(f"wrote {escape(str(copy(name, dest)))}")
