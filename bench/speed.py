"""convtrain vs the article's method, epoch by epoch, alternating in one run; then fast.yaml's time to 99%.

Two worker processes are started: bench/article_baseline.py and convtrain's configs/mnist.yaml
(the same recipe: article CNN, Adam 1e-3, batch 64, Normalize(0.5, 0.5)). They never run at the
same time: the driver lets the baseline run epoch 1, then convtrain epoch 1, then the baseline
epoch 2, ..., so drift in machine load hits both alike. Each reports its training seconds, the
seconds to evaluate the 10,000 test images, test accuracy and peak RSS per epoch. Finally
configs/fast.yaml runs alone and the training time until its test accuracy first reaches 99.0%
is printed.

    python bench/speed.py [--epochs 10] [--skip-fast]        (make bench-speed)
    python bench/speed.py --only-fast --fast-config configs/speedrun.yaml --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def convtrain_worker(config: str, epochs: int, device: str) -> None:
    """Run convtrain's real runner; block before each epoch until the driver says go."""
    from convtrain.config.load import load_config
    from convtrain.training.reporter import Reporter
    from convtrain.training.runner import run

    class Lockstep(Reporter):
        def epoch_start(self, *args, **kwargs) -> None:
            sys.stdin.readline()

        def step(self, step, loss) -> None:
            pass

        def info(self, message: str, style=None) -> None:
            pass

        def epoch_summary(self, row, epochs: int, improved: bool) -> None:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"epoch": row.epoch, "train_loss": row.train_loss, "test_acc": row.test_acc,
                              "train_seconds": row.seconds, "eval_seconds": row.test_seconds,
                              "peak_rss_mb": rss}), flush=True)

    cfg = load_config(config, [f"train.epochs={epochs}", "log.plots=false", f"device={device}"])
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, run_dir=Path(tmp) / "run", reporter=Lockstep(enabled=True))


def _start(cmd: list[str]) -> subprocess.Popen:
    # PASSIVE: an idle worker's OpenMP threads sleep instead of spinning while the other one runs
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": "PASSIVE"})


def _epoch(proc: subprocess.Popen) -> dict:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"worker {proc.args} stopped early (exit {proc.wait()})")
    return json.loads(line)


def time_to_99(config: str, device: str = "cpu", seed: int | None = None, sets: tuple[str, ...] = ()) -> None:
    """Training seconds until the test accuracy first reaches 99.0%, and the whole process's seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "fast"
        cmd = [sys.executable, "-m", "convtrain", "train", "--config", config, "--set", "train.test_every_epoch=true",
               "--set", "log.plots=false", "--device", device, "--run-dir", str(run_dir),
               *(["--seed", str(seed)] if seed is not None else []), *sum((["--set", x] for x in sets), [])]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        with open(run_dir / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        with open(run_dir / "results.json") as f:
            final = json.load(f)
    name = " ".join([config, *sets]) + ("" if seed is None else f" seed {seed}")
    elapsed = 0.0
    for r in rows:
        elapsed += float(r["seconds"])
        print(f"  {name} epoch {r['epoch']}: test acc {float(r['test_acc']):.2%}, {elapsed:.1f} s of training so far")
        if float(r["test_acc"]) >= 0.99:
            print(f"{name}: 99.0% test accuracy after {elapsed:.1f} s of training (epoch {r['epoch']}); best.pt's "
                  f"test accuracy {final['test_accuracy']:.2%}; whole process {wall:.1f} s; load {os.getloadavg()[0]:.2f}")
            return
    print(f"{name}: did not reach 99.0% in {len(rows)} epochs ({elapsed:.1f} s; best.pt's test accuracy "
          f"{final['test_accuracy']:.2%}); whole process {wall:.1f} s; load {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--config", default="configs/mnist.yaml")
    ap.add_argument("--fast-config", default="configs/fast.yaml")
    ap.add_argument("--skip-fast", action="store_true")
    ap.add_argument("--only-fast", action="store_true", help="only the time to 99%% of --fast-config")
    ap.add_argument("--fast-set", action="append", default=[], help="--set for the time-to-99%% run (repeatable)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds for the time to 99%% (default: the config's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for both sides")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return convtrain_worker(args.config, args.epochs, args.device)
    if args.only_fast:
        for seed in [int(s) for s in args.seeds.split(",")] if args.seeds else [None]:
            time_to_99(args.fast_config, args.device, seed, tuple(args.fast_set))
        return
    import torch

    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data {os.environ.get('CONVTRAIN_DATA_ROOT', 'data')}")
    base = _start([sys.executable, str(HERE / "article_baseline.py"), "--worker", "--epochs", str(args.epochs),
                   "--device", args.device])
    ours = _start([sys.executable, str(HERE / "speed.py"), "--worker", "--epochs", str(args.epochs),
                   "--config", args.config, "--device", args.device])
    print("epoch | baseline: train s, eval s, test acc | convtrain: train s, eval s, test acc | speed-up train, eval")
    totals = {"b_train": 0.0, "b_eval": 0.0, "o_train": 0.0, "o_eval": 0.0}
    b = o = {}
    for epoch in range(1, args.epochs + 1):
        b, o = _epoch(base), _epoch(ours)
        totals["b_train"] += b["train_seconds"]
        totals["b_eval"] += b["eval_seconds"]
        totals["o_train"] += o["train_seconds"]
        totals["o_eval"] += o["eval_seconds"]
        print(f"{epoch:5d} | {b['train_seconds']:6.1f} {b['eval_seconds']:5.2f} {b['test_acc']:.2%} | "
              f"{o['train_seconds']:6.1f} {o['eval_seconds']:5.2f} {o['test_acc']:.2%} | "
              f"{b['train_seconds'] / o['train_seconds']:4.2f}x {b['eval_seconds'] / o['eval_seconds']:4.2f}x", flush=True)
    for p in (base, ours):
        p.stdin.close()
        p.wait()
    n = args.epochs
    print(f"mean per epoch: baseline train {totals['b_train'] / n:.1f} s, eval {totals['b_eval'] / n:.2f} s; "
          f"convtrain train {totals['o_train'] / n:.1f} s, eval {totals['o_eval'] / n:.2f} s")
    print(f"ratio baseline/convtrain: training {totals['b_train'] / totals['o_train']:.2f}x, "
          f"evaluation {totals['b_eval'] / totals['o_eval']:.2f}x")
    print(f"peak RSS: baseline {b['peak_rss_mb']:.0f} MB, convtrain {o['peak_rss_mb']:.0f} MB")
    if not args.skip_fast:
        time_to_99(args.fast_config, args.device)


if __name__ == "__main__":
    main()
