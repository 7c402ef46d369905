"""``convtrain data inspect``: what a dataset holds, as a run would load it (same code path, same cache)."""

from __future__ import annotations

import copy

import torch
from rich.markup import escape
from rich.table import Table

from . import data


def inspect_data(cfg) -> dict:
    """Splits, class counts, image sizes found, decoded shape, computed mean/std, unreadable and ignored files.

    Bad files are listed rather than refused (``data.skip_unreadable`` is forced on), so one look shows them all.
    """
    d = copy.deepcopy(cfg.data)
    d.skip_unreadable = True
    bundle = data.build(d, cfg.seed)
    info = dict(bundle.info)
    if not info:  # a registered dataset: its files are IDX arrays of one size
        from .sources import pixel_stats

        c, h, w = bundle.train.image_shape
        n = len(bundle.train) + len(bundle.val) + len(bundle.test)
        mean, std = pixel_stats(bundle.train.images)
        info = {"source": cfg.data.name, "root": str(cfg.data.root), "image_sizes": {f"{w}x{h} L": n},
                "ignored": [], "computed_mean": mean, "computed_std": std, "held_out": ["val"]}
    splits = {}
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        counts = torch.bincount(split.labels, minlength=len(bundle.classes)).tolist()
        splits[name] = {"images": len(split), "held_out": name in info["held_out"],
                        "per_class": dict(zip(bundle.classes, counts))}
    c, h, w = bundle.train.image_shape
    return {"source": info["source"], "root": info["root"], "classes": bundle.classes, "splits": splits,
            "image_sizes_found": info["image_sizes"], "decoded_as": [c, h, w],
            "mean": info["computed_mean"], "std": info["computed_std"],
            "unreadable": bundle.skipped, "ignored": info["ignored"],
            "streamed": not bundle.tensor_resident, "notes": bundle.notes}


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
        table.add_row(escape(c), *(str(s["per_class"][c]) for s in r["splits"].values()))
    table.add_row("[bold]total[/]", *(f"[bold]{s['images']}[/]" for s in r["splits"].values()))
    out.print(table)
    sizes = sorted(r["image_sizes_found"].items(), key=lambda kv: -kv[1])
    out.print("image sizes and modes found: " + escape(", ".join(f"{k} ({v})" for k, v in sizes[:8]))
              + (f" and {len(sizes) - 8} more" if len(sizes) > 8 else ""))
    out.print(f"mean {r['mean']}  std {r['std']} (pixel/255, training split)")
    out.print(f"unreadable: {len(r['unreadable'])}" + "".join(f"\n  {escape(b)}" for b in r["unreadable"][:20]))
    out.print(f"ignored (not images): {len(r['ignored'])}"
              + (f" (e.g. {escape(', '.join(r['ignored'][:5]))})" if r["ignored"] else ""))
