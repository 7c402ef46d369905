"""``convtrain data inspect``: what a dataset holds, as a run would load it (same code path, same cache)."""

from __future__ import annotations

import copy

import torch

from .sources import build as build_data


def inspect_data(cfg, split_seed: int) -> dict:
    """Splits, class counts, image sizes found, decoded shape, computed mean/std, unreadable and ignored files.

    Bad files are listed rather than refused (``data.skip_unreadable`` is forced on), so one look shows them all.
    """
    d = copy.deepcopy(cfg.data)
    d.skip_unreadable = True
    bundle = build_data(d, split_seed)  # the held-out seed (config.schema.held_out_seed: the one rule)
    info = dict(bundle.info)
    if not info:  # a registered dataset: its files are IDX arrays of one size
        from .user_files import pixel_stats

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
            "folders": info.get("folders", {}), "unknown_folders": info.get("unknown_folders", []),
            "streamed": not bundle.tensor_resident, "notes": bundle.notes}
