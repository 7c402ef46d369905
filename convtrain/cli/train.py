"""``convtrain train`` and ``convtrain finetune`` (one run, ``--seeds``, or several processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .. import api
from ..data.detect import data_overrides
from .edge import handle_errors, out
from .options import (
    BatchSizeOpt,
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    ImportOpt,
    EpochsOpt,
    LauncherOpt,
    LrOpt,
    NprocOpt,
    RunDirOpt,
    SeedOpt,
    SetOpt,
    VerboseOpt,
    load_run_config,
    overrides,
    with_import,
    with_shortcuts,
)

AUTO = "auto"  # --resume auto (convtrain.training.start.AUTO; not imported here: it would import torch)


def _launch(nproc: int, config, sets, device, seed, data_root, run_hint: Optional[Path] = None,
            resuming: bool = False) -> None:
    """Re-run this very command in ``nproc`` processes. The config is checked here first, so a
    mistake in it is one line, not one per process; a resumed run without --config takes its config
    from the run, which the workers load."""
    cfg = load_run_config(config, sets, device, seed, data_root) if config is not None or not resuming else None
    from ..training.distributed import launch, relaunch_argv  # (torch: after the config's mistakes are refused)

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
                                               "newest run under runs/ that is not running). 'auto' with --run-dir "
                                               "RUN: start RUN, continue it, or exit 0 if it has finished (one command "
                                               "for a cluster job's first start and every restart)."),
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
    launcher: Optional[str] = LauncherOpt,
    import_: Optional[str] = ImportOpt,
) -> None:
    """Train a model from a YAML config (or the defaults).

    Config keys: --set key.path=value, or key.path=value alone (convtrain config keys lists them).

    Example: convtrain train --config mnist --epochs 2
    Example: convtrain train --data ./my_digits train.epochs=3 optim.lr=3e-3
    Example: convtrain train --resume latest
    """
    from ..errors import ConfigError

    set_ = with_import(with_shortcuts(set_, epochs, lr, batch_size), import_)
    _read_launcher(launcher, nproc_per_node)
    auto = resume is not None and str(resume) == AUTO
    if resume is not None and not auto:
        resume = _resolve(resume, last=True)
    if resume is None or auto:
        set_ = data_overrides(data, set_, config is not None)
    elif data is not None:
        raise ConfigError("--resume continues a run on its own data; drop --data")
    if seeds is not None:
        return _train_seeds(seeds, config, set_, run_dir, device, seed, data_root, resume, nproc_per_node)
    if auto:
        return _auto(config, set_, run_dir, device, seed, data_root, nproc_per_node, verbose)
    if nproc_per_node is not None:
        return _launch(nproc_per_node, config, set_, device, seed, data_root, resume or run_dir,
                       resuming=resume is not None)
    if resume is not None and run_dir is not None:
        raise ConfigError("--resume continues a run in its own directory; drop --run-dir")
    _train_one(config, overrides(set_, device, seed), run_dir, data_root, resume, verbose)


def _train_one(config, sets, run_dir, data_root, resume, verbose) -> None:
    """One run in this process: a new one, or --resume."""
    from ..training.signals import StopSignals

    # installed before torch is even imported: Ctrl-C / SIGTERM anywhere in the run is one line and exit 130
    with StopSignals() as signals:
        if resume is not None:
            api.resume(resume, config, overrides=sets, data_root=data_root, verbose=verbose, console=out,
                       signals=signals)
        else:  # no --config: the schema defaults are the article's setup
            api.train(config, overrides=sets, run_dir=run_dir, data_root=data_root, verbose=verbose, console=out,
                      signals=signals)


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
    launcher: Optional[str] = LauncherOpt,
    resume: Optional[str] = typer.Option(None, "--resume", show_default=False,
                                         help="'auto' with --run-dir RUN: start RUN, continue it, or exit 0 if it "
                                              "has finished (one command for a cluster job's first start and every "
                                              "restart)."),
    import_: Optional[str] = ImportOpt,
) -> None:
    """Start a new run from pretrained weights (head re-initialised when the class count differs).

    Example: convtrain finetune --checkpoint latest --config fashion_finetune
    Example: convtrain finetune --checkpoint runs/mnist-<time> --data ./my_letters --epochs 3
    """
    from ..training.signals import StopSignals

    set_ = data_overrides(data, with_import(with_shortcuts(set_, epochs, lr, batch_size), import_), config is not None)
    checkpoint = _resolve(checkpoint)
    _read_launcher(launcher, nproc_per_node)
    if resume is not None:
        if resume != AUTO:
            from ..errors import ConfigError

            raise ConfigError(f"finetune --resume takes 'auto' (with --run-dir RUN), not {resume!r}; continue a "
                              "fine-tuning run with: convtrain train --resume RUN")
        return _auto(config, set_, run_dir, device, seed, data_root, nproc_per_node, verbose, pretrained=checkpoint)
    if nproc_per_node is not None:
        return _launch(nproc_per_node, config, set_, device, seed, data_root, run_dir)
    with StopSignals() as signals:  # before torch is imported, as for train
        api.finetune(checkpoint, config, overrides=overrides(set_, device, seed), run_dir=run_dir, data_root=data_root,
                     verbose=verbose, console=out, signals=signals)


def _read_launcher(choice: Optional[str], nproc: Optional[int]) -> None:
    """--launcher (else CONVTRAIN_LAUNCHER): read the launcher's variables now, before torch is imported, so
    that a bad or contradictory one is one line; the run reads the same choice from the environment."""
    import os

    from ..errors import ConfigError
    from ..training import launchers

    launch = launchers.apply(choice)
    if choice is not None:
        os.environ[launchers.ENV_CHOICE] = choice.strip().lower()
    if nproc is not None and launch.name in ("slurm", "mpi") and launch.env.get("WORLD_SIZE", "1") != "1":
        raise ConfigError(f"--nproc-per-node starts processes of its own, but {launch.name} started this one as rank "
                          f"{launch.env['RANK']} of {launch.env['WORLD_SIZE']}; drop --nproc-per-node (one task per "
                          "GPU is one run), or start one task per node")


def _auto(config, sets, run_dir, device, seed, data_root, nproc, verbose, pretrained: Optional[Path] = None) -> None:
    """--resume auto --run-dir RUN: start RUN, continue it, or say it has finished (api.resume's "auto")."""
    from ..training.signals import StopSignals

    if run_dir is not None and nproc is not None:  # decided here first, so that "finished" is one note, not one per process
        from ..training.start import auto_plan

        plan = auto_plan(run_dir)
        if plan != "finished":
            return _launch(nproc, config, sets, device, seed, data_root, run_dir, resuming=plan == "resume")
    with StopSignals() as signals:
        api.resume(AUTO, config, overrides=overrides(sets, device, seed), run_dir=run_dir, data_root=data_root,
                   verbose=verbose, console=out, signals=signals, pretrained=pretrained)


def _resolve(spec: Path, last: bool = False) -> Path:
    from ..artifacts.checkpoint_args import resolve_checkpoint

    return resolve_checkpoint(spec, last=last)


def _train_seeds(seeds_text, config, sets, run_dir, device, seed, data_root, resume, nproc) -> None:
    """--seeds: one run per seed under one folder, then the summary table."""
    from ..errors import ConfigError
    from ..training.signals import StopSignals

    if resume is not None:
        raise ConfigError("--seeds does not take --resume; continue a --seeds run with the same command "
                          "and --run-dir RUN (its seed runs are resumed)")
    if seed is not None:
        raise ConfigError("give either --seed or --seeds, not both")
    if nproc is not None:
        raise ConfigError("--seeds runs one process per seed run; --nproc-per-node is not supported with it")
    with StopSignals() as signals:
        api.seeds(config, seeds_text, overrides=overrides(sets, device, None), run_dir=run_dir, data_root=data_root,
                  console=out, signals=signals)
