"""Device resolution and torch.distributed set-up.

A single process and a ``torchrun`` rank go through the same code: ``setup`` reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group when there is more
than one process (nccl on CUDA, gloo on CPU) and returns a :class:`DistInfo`. DDP in convtrain is a
wrapper, a sharded batch order and a rank check; there is no second training loop.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ConfigError, DistributedError, LaunchInterrupted, WorkerFailed
from . import launchers


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    launcher: str = ""  # the header's "launcher: slurm, rank 0 of 2 (...)" line; "" for one unlaunched process
    launch_name: str = "none"  # none, torchrun, slurm or mpi
    notes: tuple[str, ...] = ()  # the launcher's start-up notes (a batch script's shell with several tasks...)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a device, or raise a ConfigError saying why not."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' was requested but MPS is not available on this machine")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ConfigError(f"unknown device '{spec}': use auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{spec}' was requested but CUDA is not available (torch {torch.__version__}, "
                          f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu")
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match.group(1) is not None else local_rank
    if index >= count:
        raise ConfigError(f"device '{spec}' (GPU {index}) was requested but only {count} GPU(s) are visible "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return torch.device("cuda", index)


def check_gpu_count(device_spec: str, processes: int, devices: list[int] | None = None) -> None:
    """Refuse, before anything starts, to run more GPU processes on this machine than GPUs it can see."""
    if not device_spec.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    usable = len(devices) if devices else count
    if processes > usable or count == 0:
        seen = f"{count} GPU(s) are visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        listed = f", config 'devices' lists {len(devices)}" if devices else ""
        raise ConfigError(f"{processes} process(es) with --device {device_spec} need {processes} GPU(s), but {seen}{listed}; "
                          "start fewer processes or use --device cpu")
    if devices and max(devices) >= count:
        raise ConfigError(f"config 'devices' names GPU {max(devices)}, but only {count} GPU(s) are visible")


def _prefer_cuda(device_spec: str) -> str:
    """``auto`` means ``cuda`` when CUDA is available (so GPU counts and device lists apply)."""
    return "cuda" if device_spec == "auto" and torch.cuda.is_available() else device_spec


# --------------------------------------------------------------------------------------------
# The torch.distributed environment: read once, checked, explained when wrong

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SINGLE_FIX = "to run one process, unset WORLD_SIZE (and RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)"
MULTI_FIX = "to run several, start them all with torchrun (or convtrain ... --nproc-per-node N)"




@dataclass(frozen=True)
class DistEnv:
    """What torchrun (or a job script) put in this process's environment."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    master_port: int | None
    under_torchrun: bool
    described: str  # "RANK=0 WORLD_SIZE=2 ..." for messages


def describe_env(environ) -> str:
    return " ".join(f"{k}={environ.get(k, 'unset')}" for k in ENV_VARS)


def _env_int(environ, name: str, default: int, minimum: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be a whole number >= {minimum} "
                          f"(environment: {describe_env(environ)}); {SINGLE_FIX}, or {MULTI_FIX}")
    return value


def read_env(environ=None) -> DistEnv:
    """RANK, WORLD_SIZE, LOCAL_RANK, ... checked before any process waits on another.

    A stray ``WORLD_SIZE`` (inherited from a job script, say) would otherwise make a lone process
    wait for partners that never come; garbage values would end in a traceback from deep in torch.
    """
    environ = os.environ if environ is None else environ
    world_size = _env_int(environ, "WORLD_SIZE", 1, 1)
    rank = _env_int(environ, "RANK", 0, 0)
    local_rank = _env_int(environ, "LOCAL_RANK", 0, 0)
    local_world = _env_int(environ, "LOCAL_WORLD_SIZE", 1, 1)
    where = f"(environment: {describe_env(environ)})"
    if rank >= world_size:
        raise ConfigError(f"environment variable RANK={rank} must be below WORLD_SIZE={world_size} (ranks run from 0 "
                          f"to WORLD_SIZE-1) {where}; {SINGLE_FIX}, or {MULTI_FIX}")
    if "LOCAL_WORLD_SIZE" in environ and local_rank >= local_world:
        raise ConfigError(f"environment variable LOCAL_RANK={local_rank} must be below LOCAL_WORLD_SIZE={local_world} "
                          f"{where}; {SINGLE_FIX}, or {MULTI_FIX}")
    under_torchrun = "TORCHELASTIC_RUN_ID" in environ
    addr, port = environ.get("MASTER_ADDR") or None, None
    if world_size > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(k)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world_size} asks for {world_size} processes, but {' and '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} not set, so they cannot find one another "
                              f"{where}; {SINGLE_FIX}, or {MULTI_FIX}")
        raw = environ["MASTER_PORT"]
        port = int(raw) if raw.strip().isdigit() else -1
        if not 1 <= port <= 65535:
            raise ConfigError(f"environment variable MASTER_PORT={raw!r} must be a TCP port from 1 to 65535 {where}")
    return DistEnv(rank, world_size, local_rank, local_world, addr, port, under_torchrun, describe_env(environ))


def _wait_for_rank0(env: DistEnv, timeout_s: float) -> None:
    """Rank r > 0 outside torchrun: wait for rank 0's rendezvous port ourselves, so that a rank 0
    that never comes gives one clear line instead of torch's retry log with C++ stack traces."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((env.master_addr, env.master_port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"rank {env.rank} of WORLD_SIZE={env.world_size} could not reach rank 0 at "
                    f"{env.master_addr}:{env.master_port} within {timeout_s:g} s (dist_timeout) "
                    f"(environment: {env.described}); {SINGLE_FIX}, or {MULTI_FIX}") from None
            time.sleep(0.2)


def _rendezvous_error(exc: Exception, env: DistEnv, timeout_s: float) -> DistributedError:
    """One line saying who is missing, from torch's rendezvous failure."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    joined = re.search(r"(\d+)/(\d+) clients joined", text)
    if env.rank == 0 and joined:
        k, n = int(joined.group(1)), int(joined.group(2))
        missing = f"rank {n - 1}" if n == 2 else (f"ranks 1 to {n - 1}" if k <= 1 else f"{n - k} of ranks 1 to {n - 1}")
        what = f"rank 0 waited {timeout_s:g} s (dist_timeout) but only {k} of {n} processes joined (missing: {missing})"
    else:
        what = (f"rank {env.rank} of WORLD_SIZE={env.world_size} could not join the others within {timeout_s:g} s "
                f"(dist_timeout): {_first_sentence(text)}")
    return DistributedError(f"{what} (environment: {env.described}); {SINGLE_FIX}, or {MULTI_FIX}")


def _first_sentence(text: str) -> str:
    """torch's first sentence, without the C++ source location in front."""
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text.strip().splitlines()[0] if text.strip() else "")
    return text.split(". ")[0].rstrip(".")


def setup(device_spec: str, devices: list[int] | None = None, timeout_s: float = 300) -> DistInfo:
    """Resolve the device and, under torchrun with several processes, join the process group.

    nccl on CUDA, gloo on the CPU. Local rank ``i`` uses GPU ``devices[i]`` when a device list is
    given, else GPU ``i``. ``timeout_s`` bounds the rendezvous and every later collective, so a
    process whose partners never come (or vanish) fails with a message instead of hanging. The
    launcher (torchrun, an srun job step, mpirun; ``CONVTRAIN_LAUNCHER``) is read first
    (:mod:`convtrain.training.launchers`), and its variables become torch's.
    """
    started_by = launchers.apply()
    env = read_env()
    device_spec = _prefer_cuda(device_spec)
    if device_spec == "cuda":
        check_gpu_count(device_spec, env.local_world_size, devices)
        device = resolve_device(f"cuda:{devices[env.local_rank] if devices else env.local_rank}")
    else:
        device = resolve_device(device_spec, env.local_rank)
    if env.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not env.under_torchrun:
            # a job script's WORLD_SIZE can start a lone process: say what it waits for
            print(f"note: rank {env.rank} waits up to {timeout_s:g} s (dist_timeout) for the other "
                  f"{env.world_size - 1} process(es) of WORLD_SIZE={env.world_size} at "
                  f"{env.master_addr}:{env.master_port}", file=sys.stderr, flush=True)
            if env.rank > 0:
                _wait_for_rank0(env, timeout_s)
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                    timeout=timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as exc:  # DistError is a RuntimeError
            raise _rendezvous_error(exc, env, timeout_s) from None
    described = launchers.describe(started_by, env.rank, env.world_size, env.master_addr, env.master_port)
    return DistInfo(env.rank, env.local_rank, env.world_size, device, described, started_by.name, started_by.notes)


def peer_failure(exc: BaseException) -> DistributedError | None:
    """A collective that failed because another process died, hung or was stopped, as one line
    (None for any other error). Used at the CLI edge, so that the survivors of a killed rank print
    a sentence instead of a traceback from inside DDP or gloo."""
    if not isinstance(exc, RuntimeError):
        return None
    try:  # the process group is already torn down when the error reaches the CLI: use the environment
        env = read_env()
    except ConfigError:
        return None
    text = str(exc)
    if env.world_size < 2 or not (isinstance(exc, dist.DistError) or re.search(r"gloo|nccl|NCCL|c10d|ProcessGroup", text)):
        return None
    rank, world = env.rank, env.world_size
    return DistributedError(f"rank {rank} of {world} lost contact with the other processes ({_first_sentence(text)}): another "
                            "process failed or was stopped (its own message says why), or did not answer within "
                            "dist_timeout")


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (a stop request, a NaN loss)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
    return flag


def earliest_bad_step(step: torch.Tensor, value: torch.Tensor) -> tuple[int, float]:
    """The first non-finite loss over all ranks: ``(step, value)``, or ``(0, 0.0)`` when no rank saw one.

    ``step`` is this rank's first bad step (0: none), ``value`` its loss. Every rank gets the same
    answer, so each names the step where training went wrong, not 0 for the ranks whose own losses
    were finite. One all-reduce when nothing went wrong; two more collectives only when something did.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        first = int(step)  # the one host read when nothing went wrong; the loss is read only when it did
        return (first, float(value)) if first else (0, 0.0)
    none = torch.iinfo(torch.int64).max
    first = torch.where(step > 0, step, torch.full_like(step, none)).reshape(1).to(torch.int64)
    dist.all_reduce(first, op=dist.ReduceOp.MIN)
    earliest = int(first.item())
    if earliest == none:
        return 0, 0.0
    # the lowest rank that saw the earliest bad step tells the others its loss
    world = dist.get_world_size()
    owner = torch.tensor([dist.get_rank() if int(step) == earliest else world], device=step.device)
    dist.all_reduce(owner, op=dist.ReduceOp.MIN)
    v = value.detach().reshape(1).to(torch.float32).clone()
    dist.broadcast(v, src=int(owner.item()))
    return earliest, float(v.item())






def relaunch_argv(argv: list[str]) -> list[str]:
    """This command's arguments for the processes :func:`launch` starts: all but --nproc-per-node (and
    --launcher: those processes are torchrun's, whatever started this one)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--nproc-per-node", "--launcher"):
            skip = True
        elif not arg.startswith(("--nproc-per-node=", "--launcher=")):
            out.append(arg)
    return out


def launch(nproc: int, argv: list[str], device_spec: str, devices: list[int] | None = None,
           run_hint: str = "RUN_DIR") -> None:
    """Run ``python -m convtrain ARGV`` in ``nproc`` processes on this machine with PyTorch's
    elastic launcher (what ``torchrun --standalone --nproc-per-node N`` does); no process
    management of our own. GPU counts are checked before anything starts. ``run_hint`` names the
    run directory in the resume advice when the command line gave it."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as elastic_run

    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc}")
    check_gpu_count(_prefer_cuda(device_spec), nproc, devices)
    # torchrun sets OMP_NUM_THREADS=1 per process anyway; setting it here skips its warning banner
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ[launchers.ENV_CHOICE] = "torchrun"  # the processes are torchrun's, whatever started this one
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "convtrain", *argv])
    _quiet_elastic_logs()
    _pass_notices_on(SignalException)
    try:
        elastic_run(args)
    except SignalException as exc:
        # the agent has already passed the signal on to the processes and waited for them to exit
        if exc.sigval == signal.SIGUSR1:
            raise WorkerFailed(f"preempted (SIGUSR1); each process was asked to save last.pt and stop; resume with: "
                               f"convtrain train --resume {run_hint} --nproc-per-node {nproc}", 75) from None
        raise LaunchInterrupted(f"interrupted ({exc.sigval.name}); each process was asked to save last.pt and stop; "
                                f"resume with: convtrain train --resume {run_hint} --nproc-per-node {nproc}") from None
    except ChildFailedError as exc:
        raise _worker_failure(exc.failures, nproc) from None


def _worker_failure(failures: dict, nproc: int) -> WorkerFailed:
    """One line for the launcher: which rank failed first and how (a signal, or an exit code).

    When one process dies the agent stops the others with SIGTERM, so a SIGTERM death is a
    consequence; a process killed by another signal, or one that exited with an error (after
    printing its own message), is the cause."""
    def cause_first(item):
        rank, f = item
        return (0 if f.exitcode < 0 and f.exitcode != -signal.SIGTERM else 1 if f.exitcode > 0 else 2, rank)

    rank, first = min(failures.items(), key=cause_first)
    tail = f"; {len(failures)} of {nproc} processes ended early" if len(failures) > 1 else ""
    if first.exitcode < 0:
        name = first.signal_name()
        return WorkerFailed(f"rank {rank} (pid {first.pid}) was killed by {name} (exit code {first.exitcode}){tail}", 1)
    code = first.exitcode if first.exitcode in (1, 2, 75, 130) else 1
    return WorkerFailed(f"rank {rank} exited with code {first.exitcode} (its message is above){tail}", code)


def _pass_notices_on(signal_exception: type) -> None:
    """SIGUSR1 (a preemption notice) to the launcher: stop the agent as SIGTERM does, which passes the
    same signal on to every process and waits for them (each saves last.pt and exits 75). Without this
    the notice's default action ended the launcher at once and left its processes orphaned."""
    def notice(signum, frame):
        raise signal_exception(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, notice)


def _quiet_elastic_logs() -> None:
    """The elastic agent logs every signal it forwards and every child it reaps as warnings;
    convtrain says the same in one line. ``LOGLEVEL=INFO`` (torch's own switch) brings them back."""
    if "LOGLEVEL" in os.environ:
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
