"""``convtrain train --config X --seeds 0,1,2``: the same config once per seed, and what varies.

Each seed runs into ``RUN/seed-<seed>`` (an ordinary run directory); ``RUN/summary.json`` then
holds the mean, standard deviation and min/max over the seeds of the final test accuracy, of the
training seconds and of each epoch's validation accuracy. The numbers are read back from the seed
runs' own results.json and metrics.csv (runfiles' typed readers), so the summary always agrees
with them.

The standard deviation is the sample one (``statistics.stdev``, ddof = 1): the seeds are a small
sample of the run-to-run spread, and the population formula would understate it (by a factor
sqrt(2/3) with 3 seeds). With a single seed it is null.

The held-out val/test images are picked by ``data.split_seed`` (default fixed, not the run's
``seed``), so every seed is tested on the same images; ``summary.json``'s ``test_set`` records the
split seed and the test set's fingerprint, and says whether all seeds had the same test set.

Running the same command again with ``--run-dir RUN`` continues it: seed runs that exist are
resumed (a finished one only repeats its final test; a different config is refused as by
``--resume``), missing ones are started.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..artifacts import runfiles
from ..artifacts.rundir import write_text
from ..config.schema import MAX_SEED, RunConfig
from ..errors import ConfigError, RunDirError

_SEEDS = re.compile(r"\d+(,\d+)*")


def parse_seeds(text: str | Iterable[int]) -> list[int]:
    """``"0,1,2"`` (or the Python API's ``[0, 1, 2]``) -> ``[0, 1, 2]``; anything else is a usage error
    naming the expected form."""
    if not isinstance(text, str):
        listed = list(text)
        if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in listed):
            raise ConfigError("seeds are integers from 0 to 2**63-1, e.g. seeds=[0, 1, 2]")
        text = ",".join(map(str, listed))
    cleaned = text.replace(" ", "")
    if not _SEEDS.fullmatch(cleaned):
        raise ConfigError(f"--seeds {text!r}: expected seeds separated by commas, e.g. --seeds 0,1,2")
    if any(len(s.lstrip("0")) > len(str(MAX_SEED)) for s in cleaned.split(",")):  # before int(): 5,000 digits fail there
        raise ConfigError(f"--seeds {text[:40]!r}...: seeds go from 0 to 2**63-1")
    seeds = [int(s) for s in cleaned.split(",")]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is repeated; each seed runs once")
    if any(s > MAX_SEED for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds go from 0 to 2**63-1")
    return seeds


def seed_root(run_dir: Path | None, cfg: RunConfig) -> Path:
    """The folder that holds the seed runs: ``--run-dir``, else ``<out_dir>/<name>-<time>``."""
    from ..artifacts.rundir import default_path

    root = run_dir or default_path(cfg.out_dir, f"{cfg.name or 'run'}-seeds")
    if (root / "config.yaml").exists():
        raise RunDirError(f"{root} is a run directory; --seeds needs a folder for the seed runs "
                          f"(pass --run-dir NEW_DIR)")
    if root.exists() and not root.is_dir():
        raise RunDirError(f"{root} exists and is not a folder; pass --run-dir NEW_DIR")
    if root.is_dir():
        strays = _not_a_sweeps(root)
        if strays:
            raise RunDirError(f"{root} is not empty and not a --seeds folder (it holds {', '.join(strays[:3])}); "
                              f"pass --run-dir NEW_DIR, or the folder of an earlier --seeds run to continue it")
    return root


def _not_a_sweeps(root: Path) -> list[str]:
    """The entries of ``root`` that a --seeds run would not have written (empty: ``root`` may be used).
    A sweep's folder holds seed-N run directories and summary.json only, and at least one seed run."""
    names = sorted(p.name for p in root.iterdir())
    ours = [n for n in names if re.fullmatch(r"seed-\d+", n) and (root / n / "config.yaml").is_file()]
    strays = [n for n in names if n not in ours and n != "summary.json" and not n.startswith(".summary.json.tmp-")]
    return strays if strays or ours or not names else names


def run_seeds(base: RunConfig, seeds: list[int], root: Path, *, console: Console, signals=None) -> dict:
    """Run (or continue) ``base`` once per seed under ``root``, then write and return the summary.

    Each seed's config is ``base`` with its ``seed`` set (all else equal); a seed run that exists
    is resumed. ``console`` (a rich Console) gets each run's progress; ``signals`` stops them.
    """
    from .reporter import Reporter
    from .runner import run
    from .start import Start, prepare_resume

    result = None
    for seed in seeds:
        cfg = copy.deepcopy(base)
        cfg.seed = seed
        path = root / f"seed-{seed}"
        start = prepare_resume(path, cfg) if (path / "config.yaml").exists() else Start(cfg, path)
        console.print(f"[bold]seed {seed}[/]: {escape(str(path))}")
        result = run(start, reporter=Reporter(console), signals=signals)
        if result.is_main:
            console.print(f"seed {seed}: test accuracy {result.test['accuracy']:.4f}, "
                          f"best epoch {result.best_epoch}, training {result.train_seconds:.1f}s")
    summary = summarize(root, seeds)
    if result is None or result.is_main:  # only rank 0 writes
        write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def stats(values: list[float]) -> dict:
    """mean, sample standard deviation (None for one value), min, max and count."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def summarize(root: Path, seeds: list[int]) -> dict:
    """The summary of the seed runs under ``root``, from their results.json and metrics.csv."""
    runs, per_epoch = [], {}
    for seed in seeds:
        path = root / f"seed-{seed}"
        results = runfiles.read_results(path)
        if results is None or results.status != "finished":
            raise RunDirError(f"{path} has not finished; continue it with the same command and --run-dir {root}")
        rows = runfiles.read_metrics(path)
        runs.append({"seed": seed, "run_dir": str(path), "test_accuracy": results.test_accuracy,
                     "split_seed": results.split_seed, "test_fingerprint": results.test_fingerprint,
                     "best_epoch": results.best_epoch, "train_seconds": results.train_seconds,
                     "epochs": len(rows), "val_acc": [r.val_acc for r in rows]})
        for r in rows:
            per_epoch.setdefault(r.epoch, []).append(r.val_acc)
    fingerprints = {r["test_fingerprint"] for r in runs}
    return {
        "seeds": seeds,
        "std": "sample standard deviation (ddof=1)",
        # one test set for all seeds (data.split_seed): the spread is the models', not the split's
        "test_set": {"split_seeds": sorted({r["split_seed"] for r in runs if r["split_seed"] is not None}),
                     "fingerprint": next(iter(fingerprints)) if len(fingerprints) == 1 else None,
                     "same_for_all_seeds": len(fingerprints) == 1 and None not in fingerprints},
        "test_accuracy": stats([r["test_accuracy"] for r in runs]),
        "train_seconds": stats([r["train_seconds"] or 0.0 for r in runs]),
        "val_acc_per_epoch": [{"epoch": e, **stats(v)} for e, v in sorted(per_epoch.items())],
        "runs": runs,
    }
