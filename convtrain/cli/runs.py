"""``convtrain runs`` (list runs, ``runs diff``) and ``convtrain plot``: read run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .edge import handle_errors, out


@handle_errors
def runs(
    args: Optional[list[str]] = typer.Argument(None, help="FOLDER (default runs), or: diff RUN_A RUN_B.",
                                               show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot_to: Optional[Path] = typer.Option(None, "--plot", help="diff: both runs' validation curves in one PNG "
                                           "(needs matplotlib).", show_default=False),
) -> None:
    """List runs, newest first: model, data, epochs, accuracies, time, status; or compare two runs.

    Status is finished, interrupted, failed, running (its lock is held) or unreadable (a damaged file;
    --json gives the reason as "error"). Reads only: safe while runs are training.

    `convtrain runs diff RUN_A RUN_B` lists the resolved-config keys that differ, the metrics per epoch
    (B - A) and each run's final test accuracy (a folder named diff is listed with ./diff).

    Example: convtrain runs runs/ ; convtrain runs diff runs/a runs/b --plot ab.png
    """
    from ..errors import ConfigError

    args = list(args or [])
    if args[:1] == ["diff"]:
        if len(args) != 3:
            raise ConfigError("usage: convtrain runs diff RUN_A RUN_B [--plot OUT.png] [--json]")
        return _runs_diff(Path(args[1]), Path(args[2]), as_json, plot_to)
    if len(args) > 1:
        raise ConfigError(f"runs takes one folder, got {len(args)}; to compare two runs: convtrain runs diff A B")
    if plot_to is not None:
        raise ConfigError("--plot goes with convtrain runs diff RUN_A RUN_B")
    from ..artifacts.listing import list_runs

    folder = Path(args[0]) if args else Path("runs")
    found = list_runs(folder)
    if as_json:
        print(json.dumps(found))
        return
    if not found:
        out.print(f"no runs under {escape(str(folder))}")
        return
    _show_runs(found, folder)


NUMBERS = ("epochs", "best val acc", "test acc", "macro-F1", "bal acc", "time")
COLUMNS = ("run", "model", "data", *NUMBERS, "status")
# the run's name is what a user pastes into --checkpoint: it is never cut; on a narrow terminal these columns
# go first, in this order, until the name fits
DROPPED_FIRST = ("bal acc", "macro-F1", "data", "model", "time", "best val acc", "epochs")


def _show_runs(found: list[dict], folder: Path) -> None:
    table = _runs_table(found, folder, set())
    need = _least_widths(table.cells)
    dropped = 0
    while dropped < len(DROPPED_FIRST) and 1 + sum(3 + w for col, w in need.items()
                                                   if col not in DROPPED_FIRST[:dropped]) >= out.width:
        dropped += 1
    out.print(_runs_table(found, folder, set(DROPPED_FIRST[:dropped]), need))
    for r in [*found, *[t for r in found for t in r.get("trials", r.get("runs", []))]]:
        if r.get("error"):
            out.print(f"[magenta]unreadable:[/] {escape(r['error'])}")


def _runs_table(found: list[dict], folder: Path, dropped: set[str], least: dict[str, int] | None = None) -> Table:
    """The listing as a table without the ``dropped`` columns (the cells of those are left out too), no column
    narrower than ``least`` says."""
    table = _Narrowed(dropped, title=f"runs in {escape(str(folder))}")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in NUMBERS else "left",
                         no_wrap=col == "run", min_width=(least or {}).get(col))
    colors = {"finished": "green", "interrupted": "yellow", "failed": "red", "running": "cyan", "unreadable": "magenta",
              "pruned": "yellow"}
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    for r in found:
        if r.get("kind") == "study":  # a `convtrain tune` folder: one row, then its trials
            _add_study_row(table, r, pct)
            for t in r["trials"]:
                _add_run_row(table, t, colors, pct, indent="  ")
        elif r.get("kind") == "sweep":  # a --seeds folder: one row, then its seed runs
            _add_run_row(table, r, colors, pct, name=f"{r['name']} ({len(r['seeds'])} seeds)")
            for t in r["runs"]:
                _add_run_row(table, t, colors, pct, indent="  ")
        else:
            _add_run_row(table, r, colors, pct)
    return table


def _least_widths(rows: list[tuple[str, ...]]) -> dict[str, int]:
    """Each column's narrowest width without cutting a word (the run's name: without cutting it at all)."""
    from rich.text import Text

    def words(cell: str) -> list[int]:
        return [len(w) for w in Text.from_markup(cell).plain.split()] or [0]

    cols = list(zip(COLUMNS, *rows)) if rows else [(c,) for c in COLUMNS]
    return {c[0]: max(len(Text.from_markup(x).plain) for x in c) if c[0] == "run" else max(max(words(x)) for x in c)
            for c in cols}


class _Narrowed(Table):
    """A rich Table that leaves out the named columns and their cells (rows are added with every cell)."""

    def __init__(self, dropped: set[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self._dropped, self._keep, self.cells = dropped, [], []

    def add_column(self, header: str = "", **kwargs) -> None:
        self._keep.append(header not in self._dropped)
        if header not in self._dropped:
            super().add_column(header, **kwargs)

    def add_row(self, *cells, **kwargs) -> None:
        self.cells.append(cells)
        super().add_row(*(c for c, keep in zip(cells, self._keep) if keep), **kwargs)


def _add_run_row(table: Table, r: dict, colors: dict, pct, indent: str = "", name: str | None = None) -> None:
    total = "?" if r["epochs_total"] is None else r["epochs_total"]
    test = pct(r["test_acc"]) + (f" ± {r['test_acc_std']:.2%}" if r.get("test_acc_std") is not None else "")
    table.add_row(indent + escape(name or r["name"]), escape(r["model"] or "?"), escape(r["dataset"] or "?"),
                  f"{r['epochs']}/{total}", pct(r["best_val_acc"]), test, _score(r.get("test_macro_f1")),
                  pct(r.get("test_balanced_acc")), f"{r['seconds']:.0f}s",
                  f"[{colors.get(r['status'], 'white')}]{r['status']}[/]")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _add_study_row(table: Table, r: dict, pct) -> None:
    c = r["trials_count"]
    best = pct(r["best_val_acc"]) if r["metric"] == "val_acc" else \
        ("-" if r["best_value"] is None else f"{r['metric']} {r['best_value']:.4f}")
    table.add_row(f"[bold]{escape(r['name'])}[/] (study)", escape(r["model"] or "?"), escape(r["dataset"] or "?"),
                  str(r["epochs"]), best, "-", "-", "-", f"{r['seconds']:.0f}s",
                  f"{c['done']} done, {c['pruned']} pruned, {c['failed']} failed"
                  + (f", {c['running']} running" if c["running"] else ""))


def _runs_diff(a: Path, b: Path, as_json: bool, plot_to: Optional[Path]) -> None:
    from ..artifacts.rundiff import diff_runs, plot_diff, to_json

    d = diff_runs(a, b)
    if plot_to is not None:
        plot_diff(d, plot_to)
    if as_json:
        print(to_json(d))
        return
    out.print(f"A: {escape(d['a'])} ({d['status']['a'] or 'no results'})")
    out.print(f"B: {escape(d['b'])} ({d['status']['b'] or 'no results'})")
    cfg = Table(title="config differences" if d["config"] else "config: no differences")
    for col in ("key", "A", "B"):
        cfg.add_column(col)
    for c in d["config"]:
        cfg.add_row(escape(c["key"]), escape(repr(c["a"])), escape(repr(c["b"])))
    out.print(cfg)
    table = Table(title="per epoch (delta = B - A)")
    for col in ("epoch", "val acc A", "val acc B", "delta", "val loss A", "val loss B", "delta", "train loss delta"):
        table.add_column(col, justify="right")
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for e in d["epochs"]:
        va, vl, tl = e["val_acc"], e["val_loss"], e["train_loss"]
        table.add_row(str(e["epoch"]), f(va["a"], ".4f"), f(va["b"], ".4f"), f(va["delta"], "+.4f"),
                      f(vl["a"], ".4f"), f(vl["b"], ".4f"), f(vl["delta"], "+.4f"), f(tl["delta"], "+.4f"))
    out.print(table)
    for key, name in (("test_accuracy", "final test accuracy"), ("test_macro_f1", "test macro-F1"),
                      ("test_balanced_accuracy", "test balanced accuracy")):
        t = d[key]
        out.print(f"{name}: A {f(t['a'], '.4f')}, B {f(t['b'], '.4f')} (delta {f(t['delta'], '+.4f')})")
    if plot_to is not None:
        out.print(f"wrote {escape(str(plot_to))}")


@handle_errors
def plot(run_dir: Path = typer.Argument(..., help="A run directory.", show_default=False)) -> None:
    """Write curves.png (loss and accuracy per epoch) and confusion.png (test set) into a run.

    Reads the run's files only (safe while it trains); replaces nothing but those two pictures.

    Example: convtrain plot runs/mnist-20261128-152128
    """
    from ..artifacts.plots import plot_run

    for path in plot_run(run_dir):
        out.print(f"wrote {escape(str(path))}")
