"""The speed goals from one run, whole processes alternating (make bench-speed); and the older comparisons.

Default (``make bench-speed``): on this machine, from one run,
  1. ``convtrain --help``, five times;
  2. whole processes, shell prompt to prompt, in rounds so that drift in the machine's load hits every
     side alike: the article's script for 1 epoch (bench/article_baseline.py), ``convtrain train
     --config configs/mnist.yaml`` for 1 epoch (plots off), and the speed recipe
     (``configs/speedrun.yaml``, one seed per process, spread over the rounds);
  3. the summary the issue asks for: the article's and mnist.yaml's process times and their ratio;
     the recipe's per-seed test accuracy, training time (its time to target: the recipe is one epoch,
     tested once at its end) and whole process, their mean and min, the ratio of its training time
     and of its whole process to the article's 1-epoch process, and its fixed cost (whole process
     minus training and the final test pass; validation counts as fixed), each against its goal.

    python bench/speed.py [--rounds 3] [--seeds 0,1,2,3,4] [--recipe configs/speedrun.yaml] [--device cpu]
    python bench/speed.py --lockstep [--epochs 10] [--skip-fast]   (epoch by epoch vs the article, then fast.yaml)
    python bench/speed.py --only-fast --fast-config configs/speedrun.yaml --seeds 0,1,2 [--fast-set K=V]

``--lockstep`` starts bench/article_baseline.py and convtrain's configs/mnist.yaml as two worker
processes that never run at the same time: baseline epoch 1, convtrain epoch 1, baseline epoch 2,
..., each reporting training and test seconds, test accuracy and peak RSS per epoch; then
``--fast-config`` runs alone and its training time to 99.0% test accuracy is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
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


def warm_worker(config: str, device: str, seed: int, sets: list[str], warmup_steps: int) -> None:
    """In one process: a short run of the same config (torch.compile's tracing, code generation and CUDA
    graph capture happen here), then the timed run, which reuses the compiled code (airbench's
    practice: the warm-up is reported, not counted). Prints one JSON line."""
    from convtrain.config.load import load_config
    from convtrain.training.reporter import Reporter
    from convtrain.training.runner import run

    base = [*sets, "log.plots=false", f"device={device}", f"seed={seed}", "train.test_every_epoch=true"]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run(load_config(config, [*base, f"train.max_steps_per_epoch={warmup_steps}", "train.epochs=1"]),
            run_dir=Path(tmp) / "warm", reporter=Reporter(enabled=False))
        warm = time.perf_counter() - t
        result = run(load_config(config, base), run_dir=Path(tmp) / "timed", reporter=Reporter(enabled=False))
    print(json.dumps({"warmup": warm, "train": result.train_seconds, "acc": 100 * result.test["accuracy"]}))


def warm_process(config: str, device: str, seed: int, sets: list[str], warmup_steps: int = 30) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "speed.py"), "--warm-worker", "--fast-config", config,
                          "--device", device, "--seeds", str(seed), "--warmup-steps", str(warmup_steps),
                          *sum((["--fast-set", x] for x in sets), [])],
                         check=True, cwd=REPO, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The goals, from one run (the default)

GOALS = {"article_ratio": 2.5, "recipe_mean": 99.0, "recipe_min": 98.9, "recipe_train": 0.10, "recipe_process": 0.25,
         "fixed": 2.5, "help": 0.3}


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def help_seconds(times: int = 5) -> list[float]:
    """``convtrain --help`` as a user types it: the console script next to this interpreter, else -m."""
    script = Path(sys.executable).with_name("convtrain")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "convtrain"]
    return [_timed([*cmd, "--help"]) for _ in range(times)]


def article_process(device: str) -> float:
    return _timed([sys.executable, str(HERE / "article_baseline.py"), "--epochs", "1", "--device", device])


def mnist_process(device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return _timed([sys.executable, "-m", "convtrain", "train", "--config", "configs/mnist.yaml", "--set",
                       "train.epochs=1", "--set", "log.plots=false", "--device", device, "--run-dir", f"{tmp}/run"])


def recipe_process(recipe: str, seed: int, device: str, sets: tuple[str, ...] = ()) -> dict:
    """One whole ``convtrain train`` of the recipe: wall seconds, test accuracy (best.pt, percent), training
    seconds, time to 99.0% (None if not reached), and the fixed cost (wall - training - the final test)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        wall = _timed([sys.executable, "-m", "convtrain", "train", "--config", recipe, "--seed", str(seed),
                       "--device", device, "--run-dir", str(run), *sum((["--set", x] for x in sets), [])])
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        final = json.loads((run / "results.json").read_text())
    elapsed, to_target = 0.0, None
    for r in rows:
        elapsed += float(r["seconds"])
        if to_target is None and r.get("test_acc") and float(r["test_acc"]) >= 0.99:
            to_target = elapsed
    # with train.test_every_epoch the best epoch's test pass is the final test (not run twice)
    test_s = float(rows[-1]["test_seconds"]) if rows and rows[-1].get("test_seconds") else 0.0
    return {"seed": seed, "wall": wall, "acc": 100 * final["test_accuracy"], "train": final["train_seconds"],
            "to_target": to_target, "fixed": wall - final["train_seconds"] - test_s}


def goals(args) -> None:
    """Everything the issue's "Done when" lists, from one run."""
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [0, 1, 2, 3, 4]
    print(f"# {_machine()}; {args.rounds} rounds; recipe {args.recipe} seeds {seeds}", flush=True)
    helps = help_seconds()
    print(f"convtrain --help: {', '.join(f'{t:.2f}' for t in helps)} s", flush=True)
    article, mnist, recipe = [], [], []
    per_round = -(-len(seeds) // args.rounds)
    for r in range(args.rounds):
        article.append(article_process(args.device))
        mnist.append(mnist_process(args.device))
        print(f"round {r + 1}: article script 1 epoch {article[-1]:.1f} s, mnist.yaml 1 epoch {mnist[-1]:.1f} s; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        for seed in seeds[r * per_round:(r + 1) * per_round]:
            recipe.append(recipe_process(args.recipe, seed, args.device, tuple(args.fast_set)))
            x = recipe[-1]
            print(f"  recipe seed {seed}: test {x['acc']:.2f}%, training {x['train']:.2f} s, whole process "
                  f"{x['wall']:.2f} s, fixed cost {x['fixed']:.2f} s", flush=True)
    extra = []
    for mode in args.compiled or []:
        w = warm_process(args.recipe, args.device, seeds[0], [*args.fast_set, f"speed.compile={mode}"])
        print(f"  recipe seed {seeds[0]} with speed.compile={mode}: compile warm-up {w['warmup']:.2f} s (left out), "
              f"training {w['train']:.2f} s, test {w['acc']:.2f}%", flush=True)
        extra.append((f"recipe with speed.compile={mode}, seed {seeds[0]}",
                      f"training {w['train']:.2f} s, test {w['acc']:.2f}%; warm-up {w['warmup']:.1f} s", "", ""))
    summary(helps, article, mnist, recipe, extra)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary(helps: list[float], article: list[float], mnist: list[float], recipe: list[dict],
            extra: list[tuple] = ()) -> None:
    a, m = statistics.mean(article), statistics.mean(mnist)
    accs = [x["acc"] for x in recipe]
    train = statistics.mean(x["train"] for x in recipe)
    wall = statistics.mean(x["wall"] for x in recipe)
    fixed = max(x["fixed"] for x in recipe)
    g = GOALS
    print("\n| measure | value | goal | |\n| --- | --- | --- | --- |")
    rows = [
        ("article script, 1 epoch, whole process", f"{a:.1f} s (" + ", ".join(f"{t:.1f}" for t in article) + ")", "", ""),
        ("convtrain mnist.yaml, 1 epoch, whole process", f"{m:.1f} s (" + ", ".join(f"{t:.1f}" for t in mnist) + ")",
         "", ""),
        ("ratio article / mnist.yaml", f"**{a / m:.2f}x**", f">= {g['article_ratio']}x", _verdict(a / m >= g["article_ratio"])),
        ("recipe test accuracy per seed", ", ".join(f"{v:.2f}" for v in accs) + "%", "", ""),
        ("recipe mean / min", f"**{statistics.mean(accs):.2f}% / {min(accs):.2f}%**",
         f">= {g['recipe_mean']} / >= {g['recipe_min']}",
         _verdict(statistics.mean(accs) >= g["recipe_mean"] and min(accs) >= g["recipe_min"])),
        ("recipe training (time to target) per seed", ", ".join(f"{x['train']:.2f}" for x in recipe) + " s", "", ""),
        ("recipe training / article process", f"**{train / a:.3f}x** ({train:.2f} s)", f"<= {g['recipe_train']}x",
         _verdict(train / a <= g["recipe_train"])),
        ("recipe whole process / article process", f"**{wall / a:.3f}x** ({wall:.2f} s)", f"<= {g['recipe_process']}x",
         _verdict(wall / a <= g["recipe_process"])),
        ("recipe fixed cost (worst seed)", f"**{fixed:.2f} s**", f"<= {g['fixed']} s", _verdict(fixed <= g["fixed"])),
        ("convtrain --help (median)", f"**{statistics.median(helps):.2f} s**", f"<= {g['help']} s",
         _verdict(statistics.median(helps) <= g["help"])),
    ]
    for row in [*rows, *extra]:
        print("| " + " | ".join(row) + " |")


def _machine() -> str:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{time.strftime('%Y-%m-%d %H:%M')} {platform.node()}: {model}, {os.cpu_count()} CPUs{gpu}, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")


def lockstep(args) -> None:
    """The first round's comparison: epoch by epoch against the article, then --fast-config's time to 99%."""
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of article / mnist.yaml / recipe processes")
    ap.add_argument("--recipe", default="configs/speedrun.yaml", help="the time-to-99%% recipe of the goals")
    ap.add_argument("--lockstep", action="store_true", help="instead: the epoch-by-epoch comparison")
    ap.add_argument("--epochs", type=int, default=10, help="--lockstep: epochs")
    ap.add_argument("--config", default="configs/mnist.yaml", help="--lockstep: convtrain's side")
    ap.add_argument("--fast-config", default="configs/fast.yaml", help="--lockstep / --only-fast: the recipe timed")
    ap.add_argument("--skip-fast", action="store_true", help="--lockstep: without the time to 99%%")
    ap.add_argument("--only-fast", action="store_true", help="only the time to 99%% of --fast-config")
    ap.add_argument("--fast-set", action="append", default=[], help="--set for the recipe's runs (repeatable)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0-4; --only-fast: the config's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for every side")
    ap.add_argument("--compiled", action="append", metavar="MODE",
                    help="also the recipe with speed.compile=MODE (one seed, after a warm-up run left out of the time)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warm-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warmup-steps", type=int, default=30, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return convtrain_worker(args.config, args.epochs, args.device)
    if args.warm_worker:
        return warm_worker(args.fast_config, args.device, int(args.seeds), args.fast_set, args.warmup_steps)
    if args.only_fast:
        for seed in [int(s) for s in args.seeds.split(",")] if args.seeds else [None]:
            time_to_99(args.fast_config, args.device, seed, tuple(args.fast_set))
        return
    if args.lockstep:
        return lockstep(args)
    goals(args)


if __name__ == "__main__":
    main()
