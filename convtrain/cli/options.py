"""The options several commands share, and the one way their flags become config overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data.sources import data_help, data_names_help

SetOpt = typer.Option(None, "--set", help="Override a config key, e.g. --set optim.lr=3e-3 (repeatable).",
                      show_default=False)
DataRootOpt = typer.Option(None, "--data-root", help="Dataset folder (default: CONVTRAIN_DATA_ROOT, then the config).",
                           show_default=False)
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default runs/<name>-<time>); must be new or empty.",
                         show_default=False)
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps.", show_default=False)
SeedOpt = typer.Option(None, "--seed", help="Random seed (recorded in config.yaml).", show_default=False)
DataOpt = typer.Option(None, "--data", show_default=False,  # the kinds of files come from the data source records
                       help=f"Your own labelled images: {data_help()}; sets data.name ({data_names_help()}) and "
                            "data.root.")


NprocOpt = typer.Option(None, "--nproc-per-node", min=1, show_default=False,
                        help="Start N processes on this machine (DDP through torch.distributed.run; "
                             "gloo on CPU, nccl on GPUs).")


LauncherOpt = typer.Option(None, "--launcher", show_default=False,
                           help="What started the processes: auto (torchrun, then an srun job step, then mpirun; "
                                "the default), none (one process, whatever the environment says), torchrun, slurm "
                                "or mpi. Default: CONVTRAIN_LAUNCHER, else auto.")


EpochsOpt = typer.Option(None, "--epochs", min=1, show_default=False, help="Shortcut for --set train.epochs=N.")
LrOpt = typer.Option(None, "--lr", show_default=False, help="Shortcut for --set optim.lr=X.")
BatchSizeOpt = typer.Option(None, "--batch-size", min=1, show_default=False,
                            help="Shortcut for --set train.batch_size=N.")


ImportOpt = typer.Option(None, "--import", show_default=False,
                         help="A Python file of your own @register_model models, for model.name to name; sets "
                              "model.file (recorded, so eval, predict, export and resume find it; convtrain "
                              "docs extending).")


def with_import(sets: list[str], file: Optional[str]) -> list[str]:
    """``--import FILE`` as the override it stands for: ``model.file`` as an absolute path, quoted for YAML."""
    if file is None:
        return sets
    path = str(Path(file).expanduser().resolve()).replace("'", "''")
    return [*sets, f"model.file='{path}'"]


VerboseOpt = typer.Option(False, "--verbose", help="Also show internals on the terminal (background pids, cache "
                          "files); train.log always has them.")


def with_shortcuts(sets: Optional[list[str]], epochs: Optional[int], lr: Optional[float],
                   batch_size: Optional[int]) -> list[str]:
    """``--set`` values, then ``--epochs``, ``--lr`` and ``--batch-size`` as the overrides they stand for."""
    extra = list(sets or [])
    for key, value in (("train.epochs", epochs), ("optim.lr", lr), ("train.batch_size", batch_size)):
        if value is not None:
            extra.append(f"{key}={value}")
    return extra


def overrides(sets: Optional[list[str]], device: Optional[str], seed: Optional[int]) -> list[str]:
    """``--set`` values, then ``--device`` and ``--seed`` as the overrides they stand for."""
    extra = list(sets or [])
    if device is not None:
        extra.append(f"device={device}")
    if seed is not None:
        extra.append(f"seed={seed}")
    return extra


def load_run_config(config: Optional[Path], sets, device, seed, data_root):
    """The resolved config: schema defaults < the file or recipe < these flags."""
    from ..config.load import load_config

    return load_config(config, overrides(sets, device, seed), data_root=data_root)
