"""``convtrain train`` and ``convtrain finetune`` (one run, ``--seeds``, or several processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..data.detect import data_overrides
from .edge import handle_errors, out
from .options import (
    BatchSizeOpt,
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    EpochsOpt,
    LrOpt,
    NprocOpt,
    RunDirOpt,
    SeedOpt,
    SetOpt,
    VerboseOpt,
    load_run_config,
    overrides,
    with_shortcuts,
)


def _launch(nproc: int, config, sets, device, seed, data_root, run_hint: Optional[Path] = None,
            resuming: bool = False) -> None:
    """Re-run this very command in ``nproc`` processes. The config is checked here first, so a
    mistake in it is one line, not one per process; a resumed run without --config takes its config
    from the run, which the workers load."""
    from ..training.distributed import launch, relaunch_argv

    cfg = load_run_config(config, sets, device, seed, data_root) if config is not None or not resuming else None
    launch(nproc, relaunch_argv(sys.argv[1:]), cfg.device if cfg else (device or "auto"), cfg.devices if cfg else None,
           run_hint=str(run_hint) if run_hint is not None else "RUN_DIR")


@handle_errors
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="YAML config file, or a packaged recipe's name (convtrain config "
                                               "list); default: the article's setup (the schema defaults)."),
    set_: Optional[list[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt,
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    data_root: Optional[str] = DataRootOpt,
    resume: Optional[Path] = typer.Option(None, "--resume", show_default=False,
                                          help="Continue a run: its directory, its last.pt, or 'latest' (the "
                                               "newest run under runs/ that is not running)."),
    nproc_per_node: Optional[int] = NprocOpt,
    data: Optional[str] = DataOpt,
    seeds: Optional[str] = typer.Option(None, "--seeds", show_default=False,
                                        help="Run the config once per seed (e.g. 0,1,2) into RUN/seed-N and write "
                                             "RUN/summary.json (mean, std, min/max); the same command with "
                                             "--run-dir RUN continues an interrupted one."),
    epochs: Optional[int] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = BatchSizeOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Train a model from a YAML config (or the defaults).

    Config keys: --set key.path=value, or key.path=value alone (convtrain config keys lists them).

    Example: convtrain train --config mnist --epochs 2
    Example: convtrain train --data ./my_digits train.epochs=3 optim.lr=3e-3
    Example: convtrain train --resume latest
    """
    from ..errors import ConfigError

    set_ = with_shortcuts(set_, epochs, lr, batch_size)
    if resume is not None:
        resume = _resolve(resume, last=True)
    if resume is None:
        set_ = data_overrides(data, set_, config is not None)
    elif data is not None:
        raise ConfigError("--resume continues a run on its own data; drop --data")
    if seeds is not None:
        return _train_seeds(seeds, config, set_, run_dir, device, seed, data_root, resume, nproc_per_node)
    if nproc_per_node is not None:
        return _launch(nproc_per_node, config, set_, device, seed, data_root, resume or run_dir,
                       resuming=resume is not None)
    if resume is not None and run_dir is not None:
        raise ConfigError("--resume continues a run in its own directory; drop --run-dir")
    _train_one(config, set_, run_dir, device, seed, data_root, resume, verbose)


def _train_one(config, set_, run_dir, device, seed, data_root, resume, verbose: bool) -> None:
    """One run (fresh, or ``--resume``), in this process."""
    from ..training.signals import StopSignals

    # installed before torch is even imported: Ctrl-C / SIGTERM anywhere in the run is one line and exit 130
    with StopSignals() as signals:
        with signals.protected():  # see _import_quietly
            from ..training.runner import run
            from ..training.start import Start, prepare_resume

        if resume is not None:
            cfg = load_run_config(config, set_, device, seed, data_root) if config is not None else None
            start = prepare_resume(resume, cfg, overrides(set_, device, seed), data_root)
        else:  # no --config: the schema defaults are the article's setup
            start = Start(load_run_config(config, set_, device, seed, data_root), run_dir)
        _show_result(run(start, reporter=_reporter(verbose), signals=signals))


@handle_errors
def finetune(
    checkpoint: Path = typer.Option(..., "--checkpoint", show_default=False,
                                    help="Pretrained checkpoint: a .pt file, a run directory (its best.pt) or "
                                         "'latest' (the newest finished run under runs/)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="YAML config file or recipe name; default: the schema defaults."),
    set_: Optional[list[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt,
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    data_root: Optional[str] = DataRootOpt,
    nproc_per_node: Optional[int] = NprocOpt,
    data: Optional[str] = DataOpt,
    epochs: Optional[int] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = BatchSizeOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Start a new run from pretrained weights (head re-initialised when the class count differs).

    Example: convtrain finetune --checkpoint latest --config fashion_finetune
    Example: convtrain finetune --checkpoint runs/mnist-<time> --data ./my_letters --epochs 3
    """
    from ..training.signals import StopSignals

    set_ = data_overrides(data, with_shortcuts(set_, epochs, lr, batch_size), config is not None)
    checkpoint = _resolve(checkpoint)

    if nproc_per_node is not None:
        return _launch(nproc_per_node, config, set_, device, seed, data_root, run_dir)
    with StopSignals() as signals:
        with signals.protected():  # see _import_quietly
            from ..training.runner import run
            from ..training.start import prepare_finetune

        cfg = load_run_config(config, set_, device, seed, data_root)
        _show_result(run(prepare_finetune(checkpoint, cfg, run_dir), reporter=_reporter(verbose), signals=signals))


def _resolve(spec: Path, last: bool = False) -> Path:
    from ..artifacts.checkpoint_args import resolve_checkpoint

    return resolve_checkpoint(spec, last=last)


def _train_seeds(seeds_text, config, sets, run_dir, device, seed, data_root, resume, nproc) -> None:
    """--seeds: one run per seed under one folder, then the summary table."""
    from ..errors import ConfigError
    from ..training.seeds import parse_seeds, run_seeds, seed_root
    from ..training.signals import StopSignals

    if resume is not None:
        raise ConfigError("--seeds does not take --resume; continue a --seeds run with the same command "
                          "and --run-dir RUN (its seed runs are resumed)")
    if seed is not None:
        raise ConfigError("give either --seed or --seeds, not both")
    if nproc is not None:
        raise ConfigError("--seeds runs one process per seed run; --nproc-per-node is not supported with it")
    chosen = parse_seeds(seeds_text)
    with StopSignals() as signals:
        with signals.protected():  # see _import_quietly
            from ..training import runner  # noqa: F401
        base = load_run_config(config, sets, device, chosen[0], data_root)
        root = seed_root(run_dir, base)
        summary = run_seeds(base, chosen, root, console=out, signals=signals)
    _show_seeds(summary, root)


def _show_seeds(summary: dict, root: Path) -> None:
    seeds = summary["seeds"]
    table = Table(title=f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean, sample std, min, max")
    for col in ("metric", "mean", "std", "min", "max", *[f"seed {s}" for s in seeds]):
        table.add_column(col, justify="left" if col == "metric" else "right")
    per_seed = {r["seed"]: r for r in summary["runs"]}

    def row(name, st, values, fmt):
        std = "-" if st["std"] is None else fmt(st["std"])
        table.add_row(name, fmt(st["mean"]), std, fmt(st["min"]), fmt(st["max"]),
                      *["-" if v is None else fmt(v) for v in values])

    pct = lambda v: f"{v:.2%}"  # noqa: E731
    row("test accuracy", summary["test_accuracy"], [per_seed[s]["test_accuracy"] for s in seeds], pct)
    for e in summary["val_acc_per_epoch"]:
        i = e["epoch"] - 1
        row(f"val acc epoch {e['epoch']}", e,
            [per_seed[s]["val_acc"][i] if i < len(per_seed[s]["val_acc"]) else None for s in seeds], pct)
    row("training seconds", summary["train_seconds"], [per_seed[s]["train_seconds"] for s in seeds],
        lambda v: f"{v:.1f}")
    out.print(table)
    t = summary["test_set"]
    out.print(f"test set: the same images for every seed (data.split_seed {t['split_seeds'][0]}, fingerprint "
              f"{t['fingerprint']})" if t["same_for_all_seeds"] else
              "[yellow]test set: differs between seeds[/] (data.split_seed null follows each seed): the spread mixes "
              "model and split noise")
    out.print(f"summary: {escape(str(root / 'summary.json'))}")


# _import_quietly: torch, numpy and torchvision are imported with Ctrl-C / SIGTERM held until the
# import is done (then they stop the command: one line, exit 130). A signal handler's exception
# raised inside an import is caught by C code that imports modules of its own (torch._C imports
# numpy and ignores a failure) or leaves a half-initialised extension behind (numpy then fails with
# "cannot load module more than once per process" at the next import): lost, or an internal error.


def _reporter(verbose: bool = False):
    from ..training.reporter import Reporter

    return Reporter(out, verbose=verbose)


def _show_result(result) -> None:
    if not result.is_main:
        return
    table = Table(title="run summary", show_header=True, header_style="bold")
    tested = any(r.test_acc is not None for r in result.epochs)  # a column of dashes says nothing: left out
    for col in ("epoch", "train loss", "train acc", "val loss", "val acc", *(["test acc"] if tested else []),
                "seconds"):
        table.add_column(col, justify="right")
    for r in result.epochs:
        test = ["-" if r.test_acc is None else f"{r.test_acc:.4f}"] if tested else []
        table.add_row(str(r.epoch), f"{r.train_loss:.4f}", f"{r.train_acc:.4f}", f"{r.val_loss:.4f}",
                      f"{r.val_acc:.4f}", *test, f"{r.seconds:.1f}")
    out.print(table)
    t = result.test
    out.print(f"best epoch {result.best_epoch} (val acc {result.best_val_acc:.4f}); training {result.train_seconds:.1f}s")
    out.print(f"test accuracy of best.pt: [bold]{t['accuracy']:.4f}[/] (loss {t['loss']:.4f}, {t['num_samples']} images)")
    if result.run_dir is not None:
        out.print(f"run directory: {escape(str(result.run_dir))}")
