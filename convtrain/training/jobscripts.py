"""``convtrain launch``'s templates: a SLURM batch script, a Kubeflow PyTorchJob manifest, per-node torchrun commands.

They are printed, never submitted: convtrain builds no scheduler and calls none (no ``sbatch``,
``kubectl`` or ``scontrol`` from Python). Every template runs the same command for the first start
and every restart, ``train ... --run-dir RUN --resume auto`` (a requeued job continues RUN from its
last.pt, a finished one exits 0), and says that RUN must be on storage every node sees.

* SLURM: ``#SBATCH --signal=USR1@90`` (a preemption notice 90 s before the time limit: every process
  saves last.pt and exits 75), ``--requeue``, and ``scontrol requeue`` *in the script* on exit 75.
  ``srun`` starts one task per GPU (convtrain reads SLURM's variables) or, with ``torchrun``, one
  torchrun per node. ``--array K -- tune ...``: K workers of one study in a shared ``--storage``.
* Kubernetes: a PyTorchJob (Kubeflow's training operator) with a Master and N-1 Workers running
  ``torchrun -m convtrain train ...``; torchrun takes its node count, rank and rendezvous from the
  ``PET_*`` variables the operator injects. A volume holds the runs and the data.
* torchrun: one command per machine (c10d rendezvous on the first).

Bad counts, an unknown kind and a command the template cannot run are one ConfigError line each.
Torch-free.
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass

from ..errors import ConfigError, did_you_mean

KINDS = ("slurm", "k8s", "torchrun")
PREEMPTED_EXIT = 75  # convtrain.errors.Preempted.exit_code: what the SLURM script requeues on
SHARED = "/shared"  # the Kubernetes volume's mount point: runs and data
# SLURM's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = re.compile(r"\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(:\d{1,2}){0,2}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class JobSpec:
    """What ``convtrain launch`` was asked for (its options)."""

    nodes: int = 1
    gpus_per_node: int = 1  # 0: CPU tasks
    tasks_per_node: int | None = None  # default: one per GPU (1 without GPUs)
    cpus_per_task: int | None = None
    time: str | None = None  # SLURM --time
    partition: str | None = None
    account: str | None = None
    name: str = "convtrain"
    run_dir: str | None = None  # default: a folder under the shared storage
    array: int | None = None  # SLURM job array of K tune workers
    torchrun: bool = False  # SLURM: srun starts one torchrun per node instead of one task per GPU
    signal_seconds: int = 90
    image: str = "convtrain:latest"  # k8s
    claim: str = "convtrain-shared"  # k8s: the PersistentVolumeClaim mounted at /shared
    master_addr: str = "HOST0"  # torchrun: the first machine
    port: int = 29500

    @property
    def per_node(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)


def _check(kind: str, spec: JobSpec, command: list[str]) -> None:
    """One line for anything the templates cannot honour."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}: convtrain launch writes slurm, k8s or torchrun{did_you_mean(kind, KINDS)}")
    for label, value, low in (("--nodes", spec.nodes, 1), ("--gpus-per-node", spec.gpus_per_node, 0),
                              ("--tasks-per-node", spec.tasks_per_node, 1), ("--cpus-per-task", spec.cpus_per_task, 1),
                              ("--array", spec.array, 1), ("--signal-seconds", spec.signal_seconds, 1),
                              ("--port", spec.port, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{label} must be a whole number >= {low}, got {value}")
    if spec.port > 65535:
        raise ConfigError(f"--port must be a TCP port from 1 to 65535, got {spec.port}")
    if spec.time is not None and not _TIME.fullmatch(spec.time):
        raise ConfigError(f"--time {spec.time!r} is not a SLURM time limit: MINUTES, HH:MM:SS or D-HH:MM:SS")
    if not _NAME.fullmatch(spec.name):
        raise ConfigError(f"--name {spec.name!r} must be letters, digits, '.', '_' or '-' (at most 63)")
    if kind != "slurm" and (spec.array is not None or spec.torchrun):
        raise ConfigError(f"--array and --torchrun are options of launch slurm, not of launch {kind}")
    _check_command(kind, spec, command)


def _check_command(kind: str, spec: JobSpec, command: list[str]) -> None:
    allowed = ("train", "finetune", "tune") if kind == "slurm" else ("train", "finetune")
    if not command or command[0] not in allowed:
        got = f"got {shlex.join(command[:3])!r}" if command else "got nothing"
        raise ConfigError(f"after '--' give the convtrain command to run: {' or '.join(allowed)} and its "
                          f"arguments ({got}), e.g. convtrain launch {kind} -- train --config mnist")
    flags = {a.split("=", 1)[0] for a in command[1:] if a.startswith("--")}
    if "--nproc-per-node" in flags:
        raise ConfigError("drop --nproc-per-node from the command: the template starts one process per GPU itself "
                          "(--gpus-per-node, --tasks-per-node)")
    if command[0] == "tune":
        if spec.array and spec.array > 1 and "--storage" not in flags:
            raise ConfigError(f"--array {spec.array} starts {spec.array} tune workers: give the command --storage "
                              "postgresql://USER:PASSWORD@HOST/DB, the study they share (sqlite on shared storage "
                              "is not safe for several writers)")
        return
    if spec.array is not None:
        raise ConfigError(f"--array runs several workers of one `convtrain tune` study; it does not apply to "
                          f"{command[0]}")
    resume = _value(command, "--resume")
    if resume is not None and resume != "auto":
        raise ConfigError(f"drop --resume {resume} from the command: the template adds --resume auto (start the run, "
                          "or continue it after a preemption)")
    if "--seeds" in flags:
        raise ConfigError("--seeds does not take --resume auto, which every template relies on; launch one job per seed")


def _value(command: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``command`` (``--flag V`` or ``--flag=V``), or None."""
    for i, arg in enumerate(command):
        if arg == flag and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _with_resume(command: list[str], run_dir: str) -> list[str]:
    """train/finetune ARGS with ``--run-dir RUN --resume auto`` (RUN: the command's own, else ``run_dir``)."""
    out = list(command)
    if _value(out, "--run-dir") is None:
        out += ["--run-dir", run_dir]
    if _value(out, "--resume") is None:
        out += ["--resume", "auto"]
    return out


def render(kind: str, spec: JobSpec, command: list[str], invocation: str) -> str:
    """The text of the template ``kind`` for ``command`` (``["train", "--config", "mnist", ...]``).
    ``invocation``: the ``convtrain launch ...`` command line, quoted on the template's first line."""
    _check(kind, spec, command)
    return {"slurm": _slurm, "k8s": _k8s, "torchrun": _torchrun}[kind](spec, command, invocation)


def _without(command: list[str], flag: str) -> list[str]:
    """``command`` without ``flag`` and its value."""
    out, skip = [], False
    for arg in command:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def _run_line(spec: JobSpec, command: list[str], default: str) -> tuple[str, str]:
    """(``RUN_DIR=...`` line, the convtrain arguments with ``--run-dir "$RUN_DIR" --resume auto``)."""
    run = _value(command, "--run-dir") or spec.run_dir
    rest = _without(_without(command, "--run-dir"), "--resume")
    setting = f'RUN_DIR="${{RUN_DIR:-{default}}}"' if run is None else f"RUN_DIR={shlex.quote(run)}"
    return setting, f'{shlex.join(rest)} --run-dir "$RUN_DIR" --resume auto'


_SLURM_NOTES = """\
# --signal=USR1@{sec}: SLURM sends SIGUSR1 to every task {sec} s before --time runs out; convtrain saves
#   last.pt at the next step and exits {code} ("preempted, resumable"; Ctrl-C and SIGTERM exit 130).
# --requeue: the job may go back into the queue: on preemption or a node failure (SLURM's doing), and on
#   exit {code} (the scontrol requeue below; convtrain itself never calls scontrol). Every start runs the
#   same command: --resume auto starts the run, continues it from last.pt, or exits 0 once it has finished.
"""


def _slurm(spec: JobSpec, command: list[str], invocation: str) -> str:
    tune = command[0] == "tune"
    if spec.array and spec.nodes > 1:
        raise ConfigError("each --array worker runs on one node: drop --nodes (or set it to 1)")
    per_node = 1 if (spec.torchrun or tune) else spec.per_node
    lines = ["#!/bin/bash", f"# Written by: {invocation}",
             "# Submit with: sbatch FILE (convtrain only prints this script; it never submits anything)",
             f"#SBATCH --job-name={spec.name}", f"#SBATCH --nodes={spec.nodes}", f"#SBATCH --ntasks-per-node={per_node}"]
    lines += [f"#SBATCH --gpus-per-node={spec.gpus_per_node}"] if spec.gpus_per_node else []
    lines += [f"#SBATCH --cpus-per-task={spec.cpus_per_task}"] if spec.cpus_per_task else []
    lines += [f"#SBATCH --{k}={v}" for k, v in (("time", spec.time), ("partition", spec.partition),
                                                ("account", spec.account)) if v]
    lines += [f"#SBATCH --array=0-{spec.array - 1}"] if spec.array else []
    out = "%x-%A_%a.out" if spec.array else "%x-%j.out"
    lines += [f"#SBATCH --signal=USR1@{spec.signal_seconds}", "#SBATCH --requeue", "#SBATCH --open-mode=append",
              f"#SBATCH --output={out}", "",
              _SLURM_NOTES.format(sec=spec.signal_seconds, code=PREEMPTED_EXIT).rstrip("\n"),
              "# source /path/to/venv/bin/activate        # the environment that has convtrain",
              "# export CONVTRAIN_DATA_ROOT=/shared/data  # the datasets, on storage every node sees"]
    lines += ["export SRUN_CPUS_PER_TASK=\"$SLURM_CPUS_PER_TASK\"  # srun does not inherit --cpus-per-task"] \
        if spec.cpus_per_task else []
    lines += _slurm_body(spec, command, tune)
    return "\n".join(lines) + "\n"


def _slurm_body(spec: JobSpec, command: list[str], tune: bool) -> list[str]:
    """The srun line and the requeue on exit 75."""
    check = f'[ "$code" -eq {PREEMPTED_EXIT} ]'
    if tune:
        body = [f"# {spec.array or 1} worker(s) of one study: each runs trials until the study has its --trials; a "
                "requeued worker carries on", f"srun convtrain {_tune_args(spec, command)}"]
    else:
        setting, args = _run_line(spec, command, f"$SLURM_SUBMIT_DIR/runs/{spec.name}")
        body = ["# the run directory must be on storage every node sees (not /tmp or a node-local disk): each restart,",
                "# on whatever nodes it gets, continues the same run", setting, ""]
        if spec.torchrun:
            body += ["# one torchrun per node, rendezvous on this script's node (the job's first); torchrun ignores the",
                     "# notice ('trap' below: its default action would end it), its processes get it from SLURM",
                     f'RDZV="$(hostname):{spec.port}"',
                     "srun bash -c 'trap \"\" USR1; exec \"$@\"' torchrun torchrun --nnodes \"$SLURM_JOB_NUM_NODES\" "
                     f"--nproc-per-node {spec.per_node} --rdzv-backend c10d --rdzv-endpoint \"$RDZV\" "
                     f"--rdzv-id \"$SLURM_JOB_ID\" -m convtrain {args}", "code=$?",
                     "# torchrun reports its processes' exit 75 as 1: the run's results.json says whether it was stopped"]
            check += ' || grep -qs \'"status": "interrupted"\' "$RUN_DIR/results.json"'
        else:
            body += [f"# one task per GPU: convtrain reads its rank from SLURM's variables "
                     f"({spec.nodes * spec.per_node} processes, one run)", f"srun convtrain {args}"]
    if not any(line == "code=$?" for line in body):
        body.append("code=$?")
    return body + [f"if {check}; then", '  scontrol requeue "$SLURM_JOB_ID"  # back into the queue; the same command '
                   "then continues", "fi", 'exit "$code"']


def _tune_args(spec: JobSpec, command: list[str]) -> str:
    """tune's arguments; in an array, each task's sampler seeded with --seed + its index, as --jobs
    workers are (measured 2026-12-06: with one seed, 2 array tasks proposed the same points in pairs)."""
    if not spec.array:
        return shlex.join(command)
    seed = _value(command, "--seed") or "0"
    if not seed.isdigit():
        raise ConfigError(f"tune --seed {seed!r} must be a whole number (each array task adds its index to it)")
    return f'{shlex.join(_without(command, "--seed"))} --seed "$(({seed} + SLURM_ARRAY_TASK_ID))"'


def _k8s(spec: JobSpec, command: list[str], invocation: str) -> str:
    import yaml

    run = _value(command, "--run-dir") or spec.run_dir or f"{SHARED}/runs/{spec.name}"
    args = _with_resume(_without(_without(command, "--run-dir"), "--resume"), run)
    container = {
        "name": "pytorch", "image": spec.image,
        # torchrun takes --nnodes, --node-rank, --master-addr and --master-port from the PET_* variables the
        # operator injects (and --nproc-per-node from nprocPerNode)
        "command": ["torchrun", "-m", "convtrain", *args],
        "env": [{"name": "CONVTRAIN_DATA_ROOT", "value": f"{SHARED}/data"},
                {"name": "CONVTRAIN_LAUNCHER", "value": "torchrun"}],
        "volumeMounts": [{"name": "shared", "mountPath": SHARED}],
    }
    if spec.gpus_per_node:
        container["resources"] = {"limits": {"nvidia.com/gpu": spec.gpus_per_node}}
    pod = {"spec": {"containers": [container],
                    "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": spec.claim}}]}}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod}}
    if spec.nodes > 1:
        replicas["Worker"] = {"replicas": spec.nodes - 1, "restartPolicy": "OnFailure", "template": copy.deepcopy(pod)}
    manifest = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": spec.name},
                "spec": {"nprocPerNode": str(spec.per_node), "runPolicy": {"backoffLimit": 20},
                         "pytorchReplicaSpecs": replicas}}
    head = [f"# Written by: {invocation}",
            "# Apply with: kubectl apply -f FILE (convtrain only prints this manifest; it never submits anything)",
            "# Kubeflow's training operator runs the Master and the Workers (one pod per node); each runs torchrun,",
            "# which starts nprocPerNode processes. Kubernetes stops a pod with SIGTERM: every process saves",
            "# last.pt at its next step and exits 130; restartPolicy OnFailure restarts the pod and --resume auto",
            f"# continues the run. The claim {spec.claim!r} (ReadWriteMany: every pod sees it) is mounted at {SHARED}:",
            f"# the runs ({run}) and the datasets ({SHARED}/data) live there."]
    return "\n".join(head) + "\n" + yaml.safe_dump(manifest, sort_keys=False, width=1000)


def _torchrun(spec: JobSpec, command: list[str], invocation: str) -> str:
    run = _value(command, "--run-dir") or spec.run_dir or f"runs/{spec.name}"
    args = shlex.join(_with_resume(_without(_without(command, "--run-dir"), "--resume"), run))
    endpoint = f"{spec.master_addr}:{spec.port}"
    lines = [f"# Written by: {invocation}",
             f"# Run one line on each of the {spec.nodes} machine(s); they meet at {endpoint} (the first machine).",
             f"# {run} must be on storage every machine sees: rank 0, the process that writes, may land on any",
             "# of them (the c10d rendezvous hands out ranks in arrival order). The same lines restart the run",
             "# after a stop (--resume auto)."]
    for node in range(spec.nodes):
        lines += [f"# machine {node}" + (f" ({spec.master_addr})" if node == 0 else ""),
                  f"torchrun --nnodes {spec.nodes} --nproc-per-node {spec.per_node} --node-rank {node} "
                  f"--rdzv-backend c10d --rdzv-endpoint {shlex.quote(endpoint)} --rdzv-id {spec.name} "
                  f"-m convtrain {args}"]
    return "\n".join(lines) + "\n"
