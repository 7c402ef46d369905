"""Classify image files with a checkpoint: PNG/JPEG of any size, made to look like the training data."""

from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts import checkpoint
from ..data.images import check_invert, image_to_input
from ..errors import DataError
from ..train import distributed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; a directory contributes its image files, sorted by name."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in directory {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"image not found: {p}")
    return out


def predict_images(ckpt_path: str | Path, paths: list[str | Path], top_k: int = 3, invert: str = "auto",
                   device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image; one dict per image, in input order."""
    check_invert(invert)
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    if invert == "auto" and ckpt.dataset in ("folder", "csv"):
        invert = "no"  # a model of the user's own images saw them as they are: no MNIST-style inversion
    model = ckpt.rebuild()
    k = max(1, min(top_k, ckpt.num_classes))
    files = expand_paths(paths)
    images = torch.stack([image_to_input(f, ckpt.in_channels, ckpt.input_size, invert) for f in files])
    dev = distributed.resolve_device(device)
    model.to(dev)
    with torch.inference_mode():
        probs = torch.softmax(model(ckpt.normalizer(dev)(images.to(dev))).float(), dim=1).cpu()
    top = probs.topk(k, dim=1)
    return [{"path": str(f), "label": int(idx[0]),
             "topk": [{"index": int(i), "name": ckpt.classes[int(i)], "prob": float(p)} for p, i in zip(pr, idx)]}
            for f, pr, idx in zip(files, top.values, top.indices)]
