"""``convtrain docs [TOPIC]``: the documentation pages that ship inside the package (docs/*.md), read offline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markdown import Markdown
from rich.table import Table

from ..errors import ConfigError, did_you_mean
from .edge import handle_errors, out

DOCS = Path(__file__).resolve().parent.parent / "docs"  # the package's docs/ (in a clone: a link to docs/)


def topics() -> dict[str, str]:
    """Each page's topic (its file name) and title (its first line), in name order."""
    found = {}
    for page in sorted(DOCS.glob("*.md")):
        first = page.read_text(encoding="utf-8").splitlines()[:1]
        found[page.stem] = first[0].lstrip("# ").strip() if first else page.stem
    return found


@handle_errors
def docs(
    topic: Optional[str] = typer.Argument(None, show_default=False,
                                          help="A page's topic (convtrain docs lists them), e.g. deploy."),
    path: bool = typer.Option(False, "--path", help="Print the page's file (or the folder's) path instead."),
) -> None:
    """Read the documentation offline: the pages that ship with convtrain, in the terminal.

    Example: convtrain docs
    Example: convtrain docs deploy
    """
    known = topics() if DOCS.is_dir() else {}
    if not known:
        raise ConfigError(f"no documentation next to this convtrain ({DOCS} is missing); reinstall the package")
    if topic is None:
        if path:
            print(DOCS)
            return
        table = Table(title=f"convtrain docs TOPIC  (the pages: {DOCS})")
        table.add_column("topic", style="bold")
        table.add_column("page")
        for name, title in known.items():
            table.add_row(name, title)
        out.print(table)
        return
    if topic not in known:
        raise ConfigError(f"no documentation topic '{topic}'{did_you_mean(topic, known)}; topics: {', '.join(known)}")
    page = DOCS / f"{topic}.md"
    if path:
        print(page)
        return
    out.print(Markdown(page.read_text(encoding="utf-8")))
