"""Imbalanced data and calibration, measured: the numbers of docs/results.md ("Imbalanced data" and
"Calibration"). Sized for a shared 2-core CPU: every training runs on one thread (speed.threads=1) and
the whole bench takes about 15 minutes.

1. A long-tailed MNIST (:func:`make_long_tailed`): the training images of classes 0-4 kept at
   ``--majority`` of MNIST's (default 20%: about 1,200 each), those of 5-9 cut to 1% (a seeded sample:
   54-63 each), an imbalance of about 20:1, as an .npz file whose test split is MNIST's full,
   balanced test set. Trained with the fast recipe (configs/fast.yaml: the article's CNN, batch 128,
   one-cycle Adam to 3e-3, 2 epochs) four ways, 3 seeds each: nothing for the imbalance, class weights
   ``auto``, the balanced sampler, focal loss. Reported: balanced accuracy and macro-F1 of best.pt on the
   test set (mean and sample std over the seeds) and the recall of the minority classes 5-9 (their
   mean). The 10% validation split is held out of the long-tailed training images, so it is long-tailed
   too, as a user's would be; best.pt is picked on validation accuracy (the default).
   Also the setup of tests/training/test_imbalanced_training.py (none vs auto, 1 epoch), whose bound
   on the minority recall gain comes from these rows.
2. Calibration: ECE (15 bins) and NLL on the test split before and after `convtrain calibrate`, for the
   article's recipe (configs/mnist.yaml on 10,000 images, 3 epochs) and for an over-confident one (the
   same CNN without label smoothing, 30 epochs on 600 images).

    python bench/imbalance.py [--out bench-imbalance] [--seeds 0,1,2] [--part imbalance|calibration|all]

Accuracy only: the runs share the machine with whatever else runs, so their seconds mean nothing.
Writes OUT/imbalance.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = {"none": {}, "auto": {"train.class_weights": "auto"}, "balanced": {"data.sampler": "balanced"},
           "focal": {"train.loss": "focal"}}
MINORITY = [5, 6, 7, 8, 9]


def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    dims = struct.unpack(f">{raw[3]}I", raw[4:4 + 4 * raw[3]])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def make_long_tailed(data_root: Path, out: Path, keep: float = 0.01, seed: int = 0,
                     minority: list[int] = MINORITY, majority: float = 1.0) -> Path:
    """MNIST's training images with only ``keep`` of each ``minority`` class's and ``majority`` of each
    other class's (seeded), and its whole test set, as ``out`` (.npz: x_train, y_train, x_test, y_test,
    classes)."""
    raw = Path(data_root) / "MNIST" / "raw"
    x, y = _idx(raw / "train-images-idx3-ubyte"), _idx(raw / "train-labels-idx1-ubyte")
    rng = np.random.default_rng(seed)
    kept = []
    for c in range(10):
        members = np.flatnonzero(y == c)
        share = keep if c in minority else majority
        kept.append(rng.permutation(members)[:max(1, round(share * len(members)))])
    index = np.sort(np.concatenate(kept))
    np.savez(out, x_train=x[index], y_train=y[index], x_test=_idx(raw / "t10k-images-idx3-ubyte"),
             y_test=_idx(raw / "t10k-labels-idx1-ubyte"), classes=np.array([str(c) for c in range(10)]))
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def imbalance(out: Path, data_root: Path, seeds: list[int], majority: float, methods: dict = METHODS,
              extra: dict | None = None, tag: str = "") -> dict:
    import convtrain

    data = make_long_tailed(data_root, out / f"longtail-{majority}.npz", majority=majority)
    found = {}
    for method, sets in methods.items():
        rows = []
        for seed in seeds:
            run = out / f"{tag}{method}-seed{seed}"
            overrides = {"data.name": "npz", "data.root": str(data), "seed": seed, "log.plots": False,
                         "speed.threads": 1, **(extra or {}), **sets}
            if not (run / "results.json").is_file():
                convtrain.train("fast", overrides=overrides, run_dir=run, progress=False)
            r = json.loads((run / "results.json").read_text())
            cm = r["test_confusion_matrix"]
            recall = [cm[c][c] / sum(cm[c]) for c in range(10)]
            rows.append({"balanced_accuracy": r["test_balanced_accuracy"], "macro_f1": r["test_macro_f1"],
                         "accuracy": r["test_accuracy"], "minority_recall": statistics.fmean(recall[c] for c in MINORITY),
                         "majority_recall": statistics.fmean(recall[c] for c in range(10) if c not in MINORITY)})
            print(method, seed, {k: round(v, 4) for k, v in rows[-1].items()}, flush=True)
        found[method] = {key: _stats([row[key] for row in rows]) for key in rows[0]}
    return found


def calibration(out: Path) -> dict:
    import convtrain

    quiet = {"log.plots": False, "speed.threads": 1, "train.test_every_epoch": False}
    recipes = {"article (configs/mnist.yaml, 10,000 images, 3 epochs)": (
                   "mnist", {"data.train_subset": 10000, "train.epochs": 3, **quiet}),
               "over-confident (600 images, 30 epochs, no smoothing)": (
                   "mnist", {"data.train_subset": 600, "train.epochs": 30, "train.label_smoothing": 0.0, **quiet})}
    found = {}
    for i, (name, (recipe, overrides)) in enumerate(recipes.items()):
        run = out / f"calibration-{i}"
        if not (run / "results.json").is_file():
            convtrain.train(recipe, overrides=overrides, run_dir=run, progress=False)
        c = convtrain.calibrate(run, device="cpu")  # best.pt
        found[name] = {"temperature": c.temperature, "test_ece": [c.test_ece_before, c.test_ece_after],
                       "test_nll": [c.test_nll_before, c.test_nll_after], "test_accuracy": c.test_accuracy,
                       "val_images": c.val_images}
        print(name, found[name], flush=True)
    return found


def _table(found: dict) -> str:
    pm = lambda s: f"{s['mean']:.2%} ± {s['std'] * 100:.2f}"  # noqa: E731
    lines = ["| method | balanced accuracy | macro-F1 | recall of 5-9 | recall of 0-4 | accuracy |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method, s in found.items():
        lines.append(f"| {method} | {pm(s['balanced_accuracy'])} | {s['macro_f1']['mean']:.4f} ± "
                     f"{s['macro_f1']['std']:.4f} | {pm(s['minority_recall'])} | {pm(s['majority_recall'])} | "
                     f"{pm(s['accuracy'])} |")
    return "\n".join(lines)


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-imbalance"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--part", choices=("imbalance", "test", "calibration", "all"), default="all")
    parser.add_argument("--majority", type=float, default=0.2, help="share of classes 0-4's images kept")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_root = Path(os.environ.get("CONVTRAIN_DATA_ROOT", "data"))
    path = args.out / "imbalance.json"
    seeds = [int(s) for s in args.seeds.split(",")]
    found = json.loads(path.read_text()) if path.is_file() else {}
    if args.part in ("imbalance", "all"):
        found["imbalance"] = imbalance(args.out, data_root, seeds, args.majority)
        print(_table(found["imbalance"]))
    if args.part in ("test", "all"):  # the test's setup: none vs auto, 1 epoch
        found["test_setup"] = imbalance(args.out, data_root, seeds, args.majority,
                                        {m: METHODS[m] for m in ("none", "auto")}, {"train.epochs": 1}, "test-")
        print(_table(found["test_setup"]))
    if args.part in ("calibration", "all"):
        found["calibration"] = calibration(args.out)
    path.write_text(json.dumps(found, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
