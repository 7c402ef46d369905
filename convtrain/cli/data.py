"""``convtrain data inspect`` and ``data make-folder``: look at a dataset without training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..data.detect import data_overrides
from ..data.sources import data_help
from .edge import escape_end, handle_errors, out
from .options import DataRootOpt, SetOpt, load_run_config


@handle_errors
def data_inspect(
    data: Optional[str] = typer.Option(None, "--data", show_default=False,
                                       help=f"{data_help()[:1].upper()}{data_help()[1:]}."),
    dataset: Optional[str] = typer.Option(None, "--dataset", show_default=False,
                                          help="A registered dataset instead (mnist, fashion_mnist)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="Take the data settings from this config or recipe."),
    set_: Optional[list[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
) -> None:
    """Splits, class counts, image sizes and channels, mean/std, unreadable and ignored files.

    Example: convtrain data inspect --data ./my_digits
    """
    from ..config.schema import held_out_seed
    from ..data.inspect import inspect_data

    sets = ([f"data.name={dataset}"] if dataset else []) + data_overrides(data, set_, config is not None)
    cfg = load_run_config(config, sets, None, None, data_root)
    r = inspect_data(cfg, held_out_seed(cfg))
    if as_json:
        print(json.dumps(r))
        return
    render(r, out)


@handle_errors
def data_make_folder(
    out_dir: Path = typer.Argument(..., help="New folder to write (must not exist, or be empty).", show_default=False),
    dataset: str = typer.Option("fashion_mnist", "--dataset", help="fashion_mnist or mnist."),
    train: int = typer.Option(2000, "--train", help="Images sampled from the training split."),
    test: int = typer.Option(0, "--test", help="Images sampled from the test split (0: no test/ folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    data_root: Optional[str] = DataRootOpt,
) -> None:
    """Write real MNIST / Fashion-MNIST images as OUT/train/<class>/*.png (and OUT/test/) to try --data on.

    Example: convtrain data make-folder fashion2k --train 2000 --test 2000
    """
    from ..data.detect import data_root_from_env
    from ..data.makefolder import make_folder

    r = make_folder(out_dir, dataset, train, test, seed, root=data_root or data_root_from_env("data"))
    out.print(f"wrote {escape(r['path'])}: {r['train']} training" + (f" and {r['test']} test" if r["test"] else "")
              + f" images of {r['dataset']} in {len(r['classes'])} class folders; "
              f"train on them with: convtrain train --data {escape(r['path'])}")


def render(r: dict, out) -> None:
    for note in r["notes"]:
        out.print(f"[dim]{escape(note)}[/]")
    out.print(f"[bold]{escape(r['source'])}[/] {escape(r['root'])}: {len(r['classes'])} classes, decoded as "
              f"{'x'.join(map(str, r['decoded_as']))} (channels x height x width)"
              f"{', streamed from disk' if r['streamed'] else ''}")
    table = Table(title="images per class and split (held out: taken from train by a seeded shuffle)")
    table.add_column("class")
    for name, s in r["splits"].items():
        table.add_column(f"{name}{' (held out)' if s['held_out'] else ''}", justify="right")
    for c in r["classes"]:
        table.add_row(escape_end(c), *(str(s["per_class"][c]) for s in r["splits"].values()))
    table.add_row("[bold]total[/]", *(f"[bold]{s['images']}[/]" for s in r["splits"].values()))
    out.print(table)
    sizes = sorted(r["image_sizes_found"].items(), key=lambda kv: -kv[1])
    out.print("image sizes and modes found: " + escape(", ".join(f"{k} ({v})" for k, v in sizes[:8]))
              + (f" and {len(sizes) - 8} more" if len(sizes) > 8 else ""))
    out.print(f"mean {r['mean']}  std {r['std']} (pixel/255, training split)")
    ratio = r["imbalance_ratio"]
    out.print(f"imbalance (largest / smallest class, training split): {'-' if ratio is None else f'{ratio:.1f}:1'}")
    if r["imbalance_hint"]:
        out.print(f"[yellow]{escape(r['imbalance_hint'])}[/]")
    out.print(f"unreadable: {len(r['unreadable'])}" + "".join(f"\n  {escape(b)}" for b in r["unreadable"][:20]))
    if r["folders"]:
        out.print("split folders: " + ", ".join(f"{k} {escape(v)}/" for k, v in r["folders"].items()))
    if r["unknown_folders"]:
        out.print("[yellow]not used[/] (folders that are no split): "
                  + escape(", ".join(f"{u}/" for u in r["unknown_folders"])))
    out.print(f"ignored (not images): {len(r['ignored'])}"
              + (f" (e.g. {escape(', '.join(r['ignored'][:5]))})" if r["ignored"] else ""))
