"""Device resolution and torch.distributed set-up.

A single process and a ``torchrun`` rank go through the same code: ``setup`` reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group when there is more
than one process (nccl on CUDA, gloo on CPU) and returns a :class:`DistInfo`. DDP in convtrain is a
wrapper, a sharded batch order and a rank check; there is no second training loop.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError, ConvtrainError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

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


def setup(device_spec: str, devices: list[int] | None = None) -> DistInfo:
    """Resolve the device and, under torchrun with several processes, join the process group.

    nccl on CUDA, gloo on the CPU. Local rank ``i`` uses GPU ``devices[i]`` when a device list is
    given, else GPU ``i``.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device_spec = _prefer_cuda(device_spec)
    if device_spec == "cuda":
        check_gpu_count(device_spec, local_world, devices)
        device = resolve_device(f"cuda:{devices[local_rank] if devices else local_rank}")
    else:
        device = resolve_device(device_spec, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, local_rank, world_size, device)


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


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


class WorkerFailed(ConvtrainError):
    """A process started by :func:`launch` failed; it printed its own message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def launch(nproc: int, argv: list[str], device_spec: str, devices: list[int] | None = None) -> None:
    """Run ``python -m convtrain ARGV`` in ``nproc`` processes on this machine with PyTorch's
    elastic launcher (what ``torchrun --standalone --nproc-per-node N`` does); no process
    management of our own. GPU counts are checked before anything starts."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run as elastic_run

    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc}")
    check_gpu_count(_prefer_cuda(device_spec), nproc, devices)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "convtrain", *argv])
    try:
        elastic_run(args)
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        code = next((c for c in codes if c in (1, 2, 130)), 1)
        raise WorkerFailed(f"{len(exc.failures)} of {nproc} processes failed (exit codes {codes}); "
                           "their messages are above", code) from None
