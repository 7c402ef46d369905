"""``convtrain launch slurm|k8s|torchrun [OPTIONS] -- COMMAND``: print a cluster job, never submit it."""

from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

from .. import api
from .edge import handle_errors


@handle_errors
def launch(
    ctx: typer.Context,
    kind: str = typer.Argument(..., show_default=False,
                               help="slurm (an sbatch script), k8s (a Kubeflow PyTorchJob manifest) or torchrun "
                                    "(the command for each machine)."),
    command: Optional[list[str]] = typer.Argument(None, show_default=False,
                                                  help="After --: the convtrain command the job runs (train, "
                                                       "finetune; tune under slurm) with its arguments."),
    nodes: int = typer.Option(1, "--nodes", help="Machines."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs per machine (0: CPU processes)."),
    tasks_per_node: Optional[int] = typer.Option(None, "--tasks-per-node", show_default=False,
                                                 help="Processes per machine (default: one per GPU; 1 without GPUs)."),
    cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", show_default=False,
                                                help="slurm: CPU cores per process."),
    time: Optional[str] = typer.Option(None, "--time", show_default=False,
                                       help="slurm: the time limit (MINUTES, HH:MM:SS or D-HH:MM:SS)."),
    partition: Optional[str] = typer.Option(None, "--partition", show_default=False, help="slurm: the partition."),
    account: Optional[str] = typer.Option(None, "--account", show_default=False, help="slurm: the account."),
    name: str = typer.Option("convtrain", "--name", help="The job's name (and the run directory's, by default)."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", show_default=False,
                                          help="The run directory, on storage every machine sees (default: "
                                               "runs/NAME; slurm: $SLURM_SUBMIT_DIR/runs/NAME; k8s: /shared/runs/NAME)."),
    array: Optional[int] = typer.Option(None, "--array", show_default=False,
                                        help="slurm: K array tasks, each a worker of one `convtrain tune` study "
                                             "(its --storage)."),
    torchrun: bool = typer.Option(False, "--torchrun", help="slurm: srun starts one torchrun per machine instead "
                                                            "of one task per GPU."),
    signal_seconds: int = typer.Option(90, "--signal-seconds", help="slurm: seconds before the time limit at which "
                                                                    "SLURM sends the preemption notice (USR1)."),
    image: str = typer.Option("convtrain:latest", "--image", help="k8s: the container image (convtrain installed)."),
    claim: str = typer.Option("convtrain-shared", "--claim", help="k8s: the PersistentVolumeClaim mounted at /shared "
                                                                   "(runs and data)."),
    master_addr: str = typer.Option("HOST0", "--master-addr", help="torchrun: the first machine's host name."),
    port: int = typer.Option(29500, "--port", help="torchrun and slurm --torchrun: the rendezvous port."),
) -> None:
    """Print a cluster job that runs a convtrain command; convtrain never submits it.

    The job runs COMMAND with --run-dir RUN --resume auto: first start and every restart alike (convtrain docs cluster).

    Example: convtrain launch slurm --nodes 2 --gpus-per-node 4 --time 04:00:00 -- train --config mnist > job.sbatch
    Example: convtrain launch k8s --nodes 2 --image registry.example/convtrain:1 -- train --config mnist > job.yaml
    Example: convtrain launch slurm --array 8 -- tune --config speedrun --space space.yaml --storage postgresql://...
    """
    text = api.job_script(kind, command or [], invocation=_invocation(ctx, kind, command or []), nodes=nodes,
                          gpus_per_node=gpus_per_node, tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task,
                          time=time, partition=partition, account=account, name=name, run_dir=run_dir, array=array,
                          torchrun=torchrun, signal_seconds=signal_seconds, image=image, claim=claim,
                          master_addr=master_addr, port=port)
    sys.stdout.write(text)


def _invocation(ctx: typer.Context, kind: str, command: list[str]) -> str:
    """The ``convtrain launch`` command line as parsed (the options given, then ``-- COMMAND``), for the
    template's first line: rebuilt from the parameters, not ``sys.argv``, which holds the caller's own words
    when the app runs inside another program (a test runner, a notebook)."""
    words = ["convtrain", "launch", kind]
    for param in ctx.command.params:
        if param.name in ("kind", "command") or not given(ctx, param.name):
            continue
        value = ctx.params[param.name]
        flag = max(param.opts, key=len)
        words += [flag] if value is True else [] if value is False else [flag, str(value)]
    return shlex.join([*words, "--", *command] if command else words)


def given(ctx: typer.Context, name: str) -> bool:
    """The option was typed on the command line (by name: Typer may bring its own copy of Click's enum)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
