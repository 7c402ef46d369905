"""Classify images with a checkpoint: one :func:`classify` for ``convtrain predict`` and the web service.

An image of any size is made to look like the training data (:func:`convtrain.data.images.image_to_input`),
normalized with the checkpoint's mean/std, and the model's top-k classes come back with their
probabilities, in input order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..artifacts import checkpoint
from ..data.images import IMAGE_SUFFIXES, check_invert, image_to_input
from ..errors import DataError
from ..train import distributed


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


def classify(model: torch.nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
             classes: list[str] | tuple[str, ...], top_k: int) -> list[dict]:
    """Top-k of uint8 ``images [N, C, H, W]``: ``{"label", "name", "topk": [{"index", "name", "prob"}]}`` each.

    ``images`` must be on the model's device; ``top_k`` is capped at the number of classes.
    """
    k = max(1, min(top_k, len(classes)))
    with torch.inference_mode():
        probs = torch.softmax(model(normalize(images)).float(), dim=1).cpu()
    top = probs.topk(k, dim=1)
    return [{"label": int(idx[0]), "name": classes[int(idx[0])],
             "topk": [{"index": int(i), "name": classes[int(i)], "prob": float(p)} for p, i in zip(pr, idx)]}
            for pr, idx in zip(top.values, top.indices)]


def effective_invert(dataset: str, invert: str) -> str:
    """``--invert auto`` means ``no`` for a model of the user's own images (folder/csv): it saw them as
    they are, with no MNIST-style inversion."""
    return "no" if invert == "auto" and dataset in ("folder", "csv") else invert


def predict_images(ckpt_path: str | Path, paths: list[str | Path], top_k: int = 3, invert: str = "auto",
                   device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image file (folders expanded); one dict per image."""
    check_invert(invert)
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    invert = effective_invert(ckpt.dataset, invert)
    model = ckpt.rebuild()
    files = expand_paths(paths)
    images = torch.stack([image_to_input(f, ckpt.in_channels, ckpt.input_size, invert) for f in files])
    dev = distributed.resolve_device(device)
    model.to(dev)
    found = classify(model, ckpt.normalizer(dev), images.to(dev), ckpt.classes, top_k)
    return [{"path": str(f), "label": r["label"], "topk": r["topk"]} for f, r in zip(files, found)]
