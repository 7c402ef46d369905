"""Stochastic weight averaging against the same recipe without it: 3 seeds, MNIST and Fashion-MNIST.

The recipe is the article's (configs/mnist.yaml: its CNN, Adam 1e-3 without a schedule, batch 64),
shortened to fit a CPU: ``--epochs`` epochs on ``--train-subset`` training images (5,000 held out for
validation, the full 10,000-image test set). The SWA arm adds ``train.swa.start=0.5`` (the second
half of the epochs averaged) with ``train.swa.lr`` equal to the recipe's rate, reached at once: both
arms then train exactly the same weights, and the only difference is what is evaluated, kept and
tested, the average or the last weights. Each arm runs through ``convtrain train --seeds``, whose
summary.json gives the mean and sample std of best.pt's test accuracy; the last epoch's test
accuracy (train.test_every_epoch: the average in the SWA arm) is read from metrics.csv.

    python bench/swa.py [--out bench-swa] [--epochs 6] [--train-subset 10000] [--seeds 0,1,2]

Accuracy only: the runs share the machine with whatever else runs, so their seconds mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

ARMS = {"plain": [], "swa": ["train.swa.start=0.5", "train.swa.lr=1e-3", "train.swa.anneal_epochs=0"]}
DATASETS = ("mnist", "fashion_mnist")


def run_arm(out: Path, dataset: str, arm: str, args) -> dict:
    """One arm on one dataset, once per seed; its numbers from the runs' own files."""
    root = out / f"{dataset}-{arm}"
    sets = [f"data.name={dataset}", f"train.epochs={args.epochs}", f"data.train_subset={args.train_subset}",
            "log.plots=false", *(["speed.threads=1"] if args.one_thread else []), *ARMS[arm]]
    cmd = [sys.executable, "-m", "convtrain", "train", "--config", "configs/mnist.yaml", "--device", "cpu",
           "--seeds", args.seeds, "--run-dir", str(root), *[a for s in sets for a in ("--set", s)]]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((root / "summary.json").read_text())
    last = []
    for r in summary["runs"]:
        with open(Path(r["run_dir"]) / "metrics.csv") as f:
            last.append(float(list(csv.DictReader(f))[-1]["test_acc"]))
    return {"best_pt": [r["test_accuracy"] for r in summary["runs"]], "best_epoch": [r["best_epoch"] for r in summary["runs"]],
            "last_epoch": last}


def stats(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f}% ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-swa"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--one-thread", action="store_true", help="speed.threads=1 (beside other jobs)")
    args = ap.parse_args()
    found = {(d, a): run_arm(args.out, d, a, args) for d in DATASETS for a in ARMS}
    (args.out / "swa.json").write_text(json.dumps({f"{d}/{a}": v for (d, a), v in found.items()}, indent=2) + "\n")
    print("| data | arm | best.pt test acc (mean ± sample std) | last epoch's test acc | per seed (best.pt) | best epochs |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (d, a), v in found.items():
        seeds = " / ".join(f"{100 * x:.2f}" for x in v["best_pt"])
        print(f"| {d} | {a} | {stats(v['best_pt'])} | {stats(v['last_epoch'])} | {seeds} | "
              f"{', '.join(map(str, v['best_epoch']))} |")


if __name__ == "__main__":
    main()
