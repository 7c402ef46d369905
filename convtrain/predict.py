"""Classify image files with a checkpoint: PNG/JPEG of any size, made to look like the training data."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint, data, distributed
from .errors import ConfigError, DataError

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


def load_image(path: Path, channels: int, size: tuple[int, int], invert: str = "auto") -> torch.Tensor:
    """Decode ``path`` to uint8 ``[channels, H, W]`` shaped like MNIST-style training images.

    The image is converted to grayscale (or RGB), padded to a square with its own background
    colour (so the digit keeps its aspect ratio and stays centred), and resized to ``size``.
    MNIST-style data is light ink on a dark background: with ``invert="auto"`` an image whose
    border is mostly light (dark ink on paper) is inverted; ``"yes"``/``"no"`` force it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, channels)
    x = x.permute(2, 0, 1).float()
    border = torch.cat([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], dim=1)
    light_background = float(border.mean()) > 127.5
    if invert == "yes" or (invert == "auto" and light_background):
        x = 255.0 - x
        light_background = not light_background
    h, w = x.shape[1:]
    side = max(h, w)
    fill = float(torch.cat([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], dim=1).median())
    top, left = (side - h) // 2, (side - w) // 2
    x = F.pad(x, (left, side - w - left, top, side - h - top), value=fill)
    if (side, side) != tuple(size):
        x = F.interpolate(x.unsqueeze(0), size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def predict_images(ckpt_path: str | Path, paths: list[str | Path], top_k: int = 3, invert: str = "auto",
                   device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image; one dict per image, in input order."""
    if invert not in ("auto", "yes", "no"):
        raise ConfigError(f"--invert must be auto, yes or no, got '{invert}'")
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.rebuild_model(ckpt, ckpt_path)
    k = max(1, min(top_k, ckpt["num_classes"]))
    files = expand_paths(paths)
    images = torch.stack([load_image(f, ckpt["in_channels"], tuple(ckpt["input_size"]), invert) for f in files])
    dev = distributed.resolve_device(device)
    norm = data.Normalizer(ckpt["normalization"]["mean"], ckpt["normalization"]["std"], dev)
    model.to(dev).eval()
    with torch.inference_mode():
        probs = torch.softmax(model(norm(images.to(dev))).float(), dim=1).cpu()
    top = probs.topk(k, dim=1)
    classes = ckpt["classes"]
    return [{"path": str(f), "label": int(idx[0]),
             "topk": [{"index": int(i), "name": classes[int(i)], "prob": float(p)} for p, i in zip(pr, idx)]}
            for f, pr, idx in zip(files, top.values, top.indices)]
