"""Where a whole `convtrain train` process spends its time, phase by phase (the fixed cost of a run).

A worker process imports convtrain, wraps each phase of convtrain.training.runner (and the checkpoint and
plot writers) with a timer (wall and CPU seconds), runs `convtrain train` through the console script's own
main() (its fast exit included), and prints one JSON line from an atexit handler; the driver times the
whole process from outside (interpreter start to exit), so what no phase accounts for (interpreter
start, exit) shows up too. Several repetitions, alternating configs when more than one is given, so
drift in machine load hits each alike.

The fixed cost is the issue's: everything but the training steps and the final test pass (with
train.test_every_epoch the best epoch's test pass is the final test). CPU seconds are printed next to
wall seconds: every phase but training runs on one thread, so on a busy machine its CPU time is
what it would take on a quiet one.

With ``--importtime`` the worker also runs under ``python -X importtime``, and the imports are
summed by package with the reason each one is there (what still costs, and why it must).

    python bench/fixed_cost.py [--config configs/speedrun.yaml] [--set train.epochs=1 ...] [--reps 3] [--importtime]
    python bench/fixed_cost.py --vs-article 1 [--reps 3]     (whole processes vs the article's script)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # the worker's first line: interpreter start-up is measured by the driver
C0 = time.process_time()

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

    imported, imported_cpu = time.perf_counter(), time.process_time()
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    result: dict = {}

    def timed(owner, name: str, key: str | None = None) -> None:
        fn = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key or name] = times.get(key or name, 0.0) + time.perf_counter() - t
                cpu[key or name] = cpu.get(key or name, 0.0) + time.process_time() - c
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
        times["import convtrain + torch"], cpu["import convtrain + torch"] = imported - T0, imported_cpu - C0
        best = next((row for row in r.epochs if row.epoch == r.best_epoch), None)
        # the final test pass: the best epoch's own (train.test_every_epoch), else the final_test phase's
        reused = best is not None and best.test_seconds is not None
        test_pass = best.test_seconds if reused else r.test.get("seconds", 0.0)
        print(json.dumps({"phases": times, "cpu": cpu, "test_acc": r.test.get("accuracy"), "test_pass": test_pass,
                          "worker_s": time.perf_counter() - T0, "worker_cpu": time.process_time() - C0}),
              flush=True)
    atexit.register(report)
    sys.argv = ["convtrain", "train", "--config", config, "--run-dir", str(run_dir), "--device", "cpu",
                *sum((["--set", s] for s in sets), [])]
    cli.main()


def measure(config: str, sets: list[str], importtime: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, *(["-X", "importtime"] if importtime else []),
                              str(Path(__file__).resolve()), "--worker", "--config", config,
                              "--run-dir", str(Path(tmp) / "run"), *sum((["--set", s] for s in sets), [])],
                             capture_output=True, text=True, cwd=REPO, check=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = wall
    row["process_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if importtime:
        row["imports"] = import_costs(out.stderr)
    return row


# why each package a run imports is there; anything else shows up as "(other)"
WHY = {
    "torch": "the library itself: its C++ core, operators, autograd (torch.export, torch.fx, nested come with "
             "`import torch`)",
    "numpy": "imported by torch's C extension at start-up",
    "typer": "the command line",
    "rich": "the terminal output: progress, tables, one-line errors",
    "yaml": "the config files",
    "convtrain": "convtrain's own modules",
    "pydantic": "imported by typer (typer._adapters)",
    "pydantic_core": "imported by typer (typer._adapters)",
    "site": "the interpreter's start-up (site-packages, the editable install's finder)",
}


def import_costs(stderr: str) -> dict[str, float]:
    """``-X importtime`` lines -> seconds per top-level package, each module's own (self) time added to its
    package's, so nothing is counted twice (torch's modules to torch, though convtrain imported them)."""
    totals: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line.split("|", 2)
        top = name.strip().split(".")[0]
        key = top if top in WHY else "(other)"
        totals[key] = totals.get(key, 0.0) + int(own.split(":")[1]) / 1e6
    return totals


def report(name: str, rows: list[dict]) -> None:
    best = min(rows, key=lambda r: r["wall_s"])  # the least disturbed repetition
    ph, cpu = best["phases"], best.get("cpu", {})
    train = ph.get("  training steps", 0.0)
    walls = ", ".join(f"{r['wall_s']:.2f}" for r in rows)
    print(f"{name}: whole process {walls} s (best {best['wall_s']:.2f} s wall, {best['process_cpu']:.2f} s CPU), "
          f"test acc {best['test_acc']:.4f}")
    print(f"    {'phase':26s} {'wall s':>7s} {'CPU s':>7s}")
    for key in ("import convtrain + torch", *PHASES, "  training steps", "  checkpoint writes", "  results.json", "  plots"):
        if key in ph:
            c = f"{cpu[key]:7.3f}" if key in cpu else "       "
            print(f"    {key:26s} {ph[key]:7.3f} {c}")
    rest = best["wall_s"] - best["worker_s"]
    print(f"    {'interpreter start + exit':26s} {rest:7.3f}")
    named = ph.get("import convtrain + torch", 0.0) + sum(ph.get(p, 0.0) for p in PHASES)
    print(f"    {'in no phase above':26s} {best['worker_s'] - named:7.3f}          (load_config, signal set-up, "
          f"between phases, printing)")
    fixed = best["wall_s"] - train - best["test_pass"]
    print(f"  fixed cost (all but the training steps and the final test pass): {fixed:.2f} s wall "
          f"(training {train:.2f} s, final test pass {best['test_pass']:.2f} s)")
    # single-threaded phases: CPU time is what they take on a quiet machine (training runs on all cores)
    where = "validate" if ph.get("validate", 0.0) >= best["test_pass"] > 0 else "final_test"
    test_cpu = cpu.get(where, 0.0) * best["test_pass"] / ph[where] if ph.get(where) else 0.0
    fixed_cpu = best["worker_cpu"] - cpu.get("train_epoch", 0.0) - test_cpu + rest
    print(f"  the same in CPU seconds (what a quiet machine would show; interpreter start + exit as wall): "
          f"{fixed_cpu:.2f} s")
    if "imports" in best:
        print("  imports (-X importtime, cumulative, this repetition; the timer itself adds a little):")
        for key, sec in sorted(best["imports"].items(), key=lambda kv: -kv[1]):
            print(f"    {key:12s} {sec:6.3f} s  {WHY.get(key, 'standard library and small packages')}")


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
    ap.add_argument("--config", action="append", help="repeatable; default configs/speedrun.yaml")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="override for every config (repeatable)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--vs-article", type=int, metavar="EPOCHS",
                    help="instead: whole processes of the article's script and convtrain, alternating")
    ap.add_argument("--importtime", action="store_true", help="run the worker under python -X importtime and sum "
                    "the imports by package")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    configs = args.config or ["configs/speedrun.yaml"]
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
            rows[c].append(measure(c, args.sets, args.importtime))
    for c in configs:
        report(c, rows[c])
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
