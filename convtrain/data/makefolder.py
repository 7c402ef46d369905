"""``convtrain data make-folder``: real MNIST / Fashion-MNIST images written out as class folders of PNGs.

A folder to try ``convtrain train --data OUT`` on, shaped like a user's own images:
``OUT/train/<class>/*.png`` (and ``OUT/test/<class>/*.png``), with word class names (tshirt,
trouser, ... or zero, one, ...), a seeded sample of each split (the IDX files are sorted by
label). The images come from the registered dataset under the data root (downloaded when
missing, as training does); the data root itself is never written. OUT appears whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import atomic
from ..errors import ConfigError, did_you_mean, shown
from .mnist import load_split

WORD_NAMES = {
    "fashion_mnist": ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"],
    "mnist": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
}


def make_folder(out: str | Path, dataset: str = "fashion_mnist", train: int = 2000, test: int = 0, seed: int = 0,
                root: str | Path = "data", download: bool = True) -> dict:
    """Write ``train`` (and ``test``) sampled images of ``dataset`` into ``out``; returns what was written."""
    if dataset not in WORD_NAMES:
        raise ConfigError(f"unknown dataset '{dataset}'{did_you_mean(dataset, WORD_NAMES)}; "
                          f"make-folder takes {', '.join(WORD_NAMES)}")
    if train < 1 or test < 0:
        raise ConfigError(f"--train must be at least 1 and --test at least 0, got {train} and {test}")
    if not 0 <= seed < 2**63:  # torch's generators take 64-bit seeds ("Overflow when unpacking long long")
        raise ConfigError(f"--seed must be 0 to 2**63-1, got {shown(seed)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists already and is not an empty folder; choose a new one (nothing was written)")
    if not out.parent.is_dir():
        raise ConfigError(f"folder {out.parent} does not exist; create it first (nothing was written)")
    names = WORD_NAMES[dataset]
    # load (and check sizes) before writing anything
    splits = [(name, load_split(dataset, root, train=name == "train", download=download), n, (seed + k) % 2**63)
              for k, (name, n) in enumerate((("train", train), ("test", test))) if n]
    for name, data, n, _ in splits:
        if n > len(data):
            raise ConfigError(f"--{name} {n}: {dataset}'s {name} split has {len(data)} images")
    try:
        with atomic.creating_dir(out) as tmp:
            for name, data, n, split_seed in splits:
                _write_split(tmp / name, data, n, split_seed, names)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc} (nothing was written)") from None
    return {"path": str(out), "dataset": dataset, "classes": names, "train": train, "test": test}


def _write_split(folder: Path, data, n: int, seed: int, names: list[str]) -> None:
    from PIL import Image

    for i in torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].tolist():
        target = folder / names[int(data.labels[i])]
        target.mkdir(parents=True, exist_ok=True)  # a class the sample missed gets no (empty) folder
        Image.fromarray(data.images[i, 0].numpy()).save(target / f"{folder.name}{i:05d}.png")
