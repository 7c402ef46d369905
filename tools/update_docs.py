"""Regenerate the two generated pages of the docs site (``make docs`` runs this, then ``mkdocs build``).

- docs/configuration.md: the config reference between its markers, from the schema
  (:func:`convtrain.config.reference.markdown_reference`, also ``convtrain config keys --markdown``);
- docs/cli.md: every command's ``--help``, rendered from the Typer app at 100 columns.

tests/project/test_docs.py fails when either page and the code disagree: after changing a config key or a
command's options or help, run ``python tools/update_docs.py`` (or ``make docs``) and commit the pages.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIG_PAGE, CLI_PAGE = DOCS / "configuration.md", DOCS / "cli.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
HELP_ENV = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1", "TERMINAL_WIDTH": "100"}
CLI_INTRO = """# Command-line reference

Every command's `--help`, generated from the Typer app by `tools/update_docs.py` (`make docs`);
`tests/project/test_docs.py` fails when this page and the commands disagree. Every command exits with 0 on
success, 2 for a usage or config error, 1 for a runtime failure and 130 when interrupted
([safety and exit codes](safety.md)); options that take a config key are described on
[the configuration page](configuration.md).
"""


def render_config(text: str) -> str:
    """``text`` (the configuration page) with the table between the markers regenerated."""
    from convtrain.config.reference import markdown_reference, schema_rows

    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown_reference(schema_rows())}{END}{tail}"


def _commands(command, path: list[str]):
    """(words, command) for the app and every sub-command, in the order --help lists them."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, [*path, name])


def render_cli() -> str:
    """The command-line reference page: one section per command with its ``--help`` text."""
    import typer
    from typer.testing import CliRunner

    from convtrain.cli.app import app

    runner = CliRunner()
    parts = [CLI_INTRO]
    for words, _ in _commands(typer.main.get_command(app), []):
        result = runner.invoke(app, [*words, "--help"], env=HELP_ENV, prog_name="convtrain", color=False)
        if result.exit_code != 0:
            raise SystemExit(f"convtrain {' '.join(words)} --help failed: {result.output}")
        text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)  # no colour codes, whatever the environment says
        lines = [line.rstrip() for line in text.strip("\n").splitlines()]
        parts.append(f"## `{' '.join(['convtrain', *words])}`\n\n```text\n" + "\n".join(lines).strip("\n") + "\n```\n")
    return "\n".join(parts)


def main() -> int:
    pages = {CONFIG_PAGE: render_config(CONFIG_PAGE.read_text(encoding="utf-8")), CLI_PAGE: render_cli()}
    for page, new in pages.items():
        if not page.exists() or page.read_text(encoding="utf-8") != new:
            page.write_text(new, encoding="utf-8")
            print(f"{page.relative_to(DOCS.parent)}: updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
