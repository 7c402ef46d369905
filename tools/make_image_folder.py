"""Write real MNIST / Fashion-MNIST images as PNG files into class folders (the "real run" of docs/data.md).

    python tools/make_image_folder.py OUT --dataset fashion_mnist --train 2000 --test 2000

OUT/train/<class>/*.png (and OUT/test/<class>/*.png) from the IDX files under CONVTRAIN_DATA_ROOT,
with word class names (tshirt, trouser, ... or zero, one, ...), a seeded sample (the files are
sorted by label). Never writes into the data root.
"""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = {"fashion_mnist": ("FashionMNIST", ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                                            "sneaker", "bag", "boot"]),
         "mnist": ("MNIST", ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])}


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    dims = struct.unpack(f">{raw[3]}I", raw[4:4 + 4 * raw[3]])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def write(out: Path, split: str, images: np.ndarray, labels: np.ndarray, n: int, seed: int, names: list[str]) -> None:
    for i in np.random.default_rng(seed).permutation(len(images))[:n]:
        folder = out / split / names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{split}{i:05d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--dataset", choices=sorted(NAMES), default="fashion_mnist")
    p.add_argument("--train", type=int, default=2000, help="images sampled from the training files")
    p.add_argument("--test", type=int, default=0, help="images sampled from the test files (0: no test/ folder)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    folder, names = NAMES[a.dataset]
    raw = Path(os.environ.get("CONVTRAIN_DATA_ROOT", "data")) / folder / "raw"
    write(a.out, "train", read_idx(raw / "train-images-idx3-ubyte"), read_idx(raw / "train-labels-idx1-ubyte"),
          a.train, a.seed, names)
    if a.test:
        write(a.out, "test", read_idx(raw / "t10k-images-idx3-ubyte"), read_idx(raw / "t10k-labels-idx1-ubyte"),
              a.test, a.seed + 1, names)


if __name__ == "__main__":
    main()
