"""Where a whole `convtrain train` process spends its time, phase by phase (the fixed cost of a run).

A worker process imports convtrain, wraps each phase of convtrain.training.runner (and the checkpoint and
plot writers) with a timer, runs `convtrain train` through the console script's own main() (its
fast exit included), and prints one JSON line from an atexit handler;
the driver times the whole process from outside (interpreter start to exit), so what no phase
accounts for (interpreter start, exit) shows up too. Several repetitions, alternating configs
when more than one is given, so drift in machine load hits each alike.

    python bench/fixed_cost.py [--config configs/mnist.yaml] [--set train.epochs=1 ...] [--reps 3]
    python bench/fixed_cost.py --vs-article 1 [--reps 3]     (whole processes vs the article's script)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # the worker's first line: interpreter start-up is measured by the driver

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHASES = ("setup_process", "setup_data", "build_model", "build_optim", "restore", "open_run_dir", "prepare_training",
          "train_epoch", "validate", "record", "save_checkpoints", "final_test")


def worker(config: str, sets: list[str], run_dir: Path) -> None:
    """`convtrain train` itself (the console script's main(), its fast exit included), with timers."""
    import atexit

    from convtrain import cli
    from convtrain.artifacts import rundir as rundir_mod
    from convtrain.training import runner

    imported = time.perf_counter()
    times: dict[str, float] = {}
    result: dict = {}

    def timed(owner, name: str, key: str | None = None) -> None:
        fn = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key or name] = times.get(key or name, 0.0) + time.perf_counter() - t
        setattr(owner, name, wrapper)

    for phase in PHASES:
        timed(runner, phase)
    timed(rundir_mod.RunDir, "save_checkpoint", "  checkpoint writes")
    timed(rundir_mod.RunDir, "write_plots", "  plots")
    timed(rundir_mod.RunDir, "write_results", "  results.json")
    run = runner.run

    def run_and_keep(*args, **kwargs):
        result["r"] = run(*args, **kwargs)
        return result["r"]
    runner.run = run_and_keep

    def report() -> None:  # atexit: after the command, before the process ends (the CLI runs atexit handlers)
        r = result["r"]
        times["  training steps"] = r.train_seconds
        times["import convtrain + torch"] = imported - T0
        print(json.dumps({"phases": times, "test_acc": r.test.get("accuracy"), "worker_s": time.perf_counter() - T0}),
              flush=True)
    atexit.register(report)
    sys.argv = ["convtrain", "train", "--config", config, "--run-dir", str(run_dir), "--device", "cpu",
                *sum((["--set", s] for s in sets), [])]
    cli.main()


def measure(config: str, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--config", config,
                              "--run-dir", str(Path(tmp) / "run"), *sum((["--set", s] for s in sets), [])],
                             capture_output=True, text=True, cwd=REPO, check=True)
        wall = time.perf_counter() - t
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = wall
    return row


def report(name: str, rows: list[dict]) -> None:
    best = min(rows, key=lambda r: r["wall_s"])  # the least disturbed repetition
    ph = best["phases"]
    train = ph.get("  training steps", 0.0)
    evals = ph.get("validate", 0.0) + ph.get("final_test", 0.0) - ph.get("  plots", 0.0) - ph.get("  results.json", 0.0)
    walls = ", ".join(f"{r['wall_s']:.2f}" for r in rows)
    print(f"{name}: whole process {walls} s (best {best['wall_s']:.2f} s), "
          f"test acc {best['test_acc']:.4f}")
    for key in ("import convtrain + torch", *PHASES, "  training steps", "  checkpoint writes", "  results.json", "  plots"):
        if key in ph:
            print(f"    {key:26s} {ph[key]:7.3f} s")
    rest = best["wall_s"] - best["worker_s"]
    print(f"    {'interpreter start + exit':26s} {rest:7.3f} s")
    named = ph.get("import convtrain + torch", 0.0) + sum(ph.get(p, 0.0) for p in PHASES)
    print(f"    {'in no phase above':26s} {best['worker_s'] - named:7.3f} s  (load_config, signal set-up, between phases, "
          f"printing)")
    fixed = best["wall_s"] - train - evals
    print(f"  fixed cost beyond training steps and evaluation: {fixed:.2f} s "
          f"(training {train:.2f} s, validation + test passes {evals:.2f} s); at a terminal, where the plots are "
          f"drawn by a background process after the command returns: {fixed - ph.get('  plots', 0.0):.2f} s")


def versus_article(epochs: int, reps: int) -> None:
    """Whole processes, alternately: the article's script, then `convtrain train` on configs/mnist.yaml."""
    base_cmd = [sys.executable, str(HERE / "article_baseline.py"), "--epochs", str(epochs)]
    times: dict[str, list[float]] = {"article": [], "convtrain": []}
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            ours_cmd = [sys.executable, "-m", "convtrain", "train", "--config", "configs/mnist.yaml", "--set",
                        f"train.epochs={epochs}", "--set", "log.plots=false", "--device", "cpu",
                        "--run-dir", str(Path(tmp) / "run")]
            for name, cmd in (("article", base_cmd), ("convtrain", ours_cmd)):
                t = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t)
    a, o = (", ".join(f"{v:.1f}" for v in times[k]) for k in ("article", "convtrain"))
    ratio = sum(times["article"]) / sum(times["convtrain"])
    print(f"whole process, {epochs} epoch(s): article script {a} s; convtrain {o} s (plots off); "
          f"ratio of the sums {ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", help="repeatable; default configs/mnist.yaml")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="override for every config (repeatable)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--vs-article", type=int, metavar="EPOCHS",
                    help="instead: whole processes of the article's script and convtrain, alternating")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    configs = args.config or ["configs/mnist.yaml"]
    if args.worker:
        return worker(configs[0], args.sets, Path(args.run_dir))
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; --set {' '.join(args.sets) or '-'}")
    if args.vs_article:
        versus_article(args.vs_article, args.reps)
        print(f"# load average at the end {os.getloadavg()[0]:.2f}")
        return
    rows: dict[str, list[dict]] = {c: [] for c in configs}
    for _ in range(args.reps):
        for c in configs:
            rows[c].append(measure(c, args.sets))
    for c in configs:
        report(c, rows[c])
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
