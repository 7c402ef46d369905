"""One checkpoint schema, saved atomically and loaded only with ``weights_only=True``.

A checkpoint is a dict of plain data (tensors, dicts, lists, tuples, strings, numbers), so it opens
with ``torch.load(path, weights_only=True)`` and no allowlist, and it describes itself: the model's
registry name and kwargs, the classes, the normalization and the resolved config are all inside,
so ``convtrain eval`` needs nothing else. ``last.pt`` also holds the training state (optimizer,
scheduler, RNG states, position in the epoch) for ``--resume``.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

FORMAT = "convtrain-checkpoint"
VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def library_versions() -> dict:
    import torchvision

    from . import __version__

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading rejects
    return {"convtrain": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def build(model: nn.Module, *, model_name: str, model_kwargs: dict, classes: list[str], in_channels: int,
          input_size: tuple[int, int], mean: list[float], std: list[float], dataset: str, config: dict,
          epoch: int, metrics: dict, training_state: dict | None = None) -> dict:
    """Assemble a checkpoint dict. Weights are copied to the CPU so the file loads anywhere."""
    state = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": model_name, "kwargs": dict(model_kwargs), "state_dict": state},
        "classes": list(classes),
        "num_classes": len(classes),
        "in_channels": int(in_channels),
        "input_size": [int(s) for s in input_size],
        "normalization": {"mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        "dataset": dataset,
        "config": config,
        "epoch": int(epoch),
        "metrics": metrics,
        "versions": library_versions(),
    }
    if training_state is not None:
        ckpt["training_state"] = training_state
    return ckpt


def rng_state() -> dict:
    """Every RNG that training touches, as plain tensors and tuples."""
    import numpy as np

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(ckpt: dict, path: str | Path) -> None:
    """Write atomically: temporary file in the same folder, flush, fsync, rename, fsync the folder.

    A crash or ``kill -9`` at any moment leaves either the old file or the new one, never a torn
    one. A failed write (disk full) removes the temporary file and keeps the old checkpoint.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not save checkpoint {path}: {exc.strerror or exc}; "
                              "the previous checkpoint, if any, is intact") from None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open folders; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | Path) -> dict:
    """Open a checkpoint with ``weights_only=True``; every failure is a CheckpointError in plain words."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {path} (give the .pt file, e.g. {path}/checkpoints/best.pt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols; the error below says it all
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refusing to load {path}: it holds objects other than tensors and plain containers, "
                "which could run code if loaded unsafely; convtrain only loads weights_only checkpoints") from None
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint (unreadable pickle data)") from None
    except Exception as exc:  # arbitrary bytes fail deep inside the unpickler with any exception type
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convtrain checkpoint (no '{FORMAT}' header)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer convtrain (checkpoint version {ckpt['version']})")
    return ckpt


def rebuild_model(ckpt: dict, path: str | Path = "checkpoint") -> nn.Module:
    """The model a checkpoint describes, with its weights loaded, on the CPU."""
    from .models import create_model

    m = ckpt["model"]
    try:
        model = create_model(m["name"], num_classes=ckpt["num_classes"], in_channels=ckpt["in_channels"],
                             input_size=tuple(ckpt["input_size"]), **m["kwargs"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(m["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model '{m['name']}': {str(exc).splitlines()[0]}") from None
    return model


def load_pretrained(model: nn.Module, ckpt: dict, reinit_head: str, path: str | Path = "checkpoint") -> dict[str, list[str]]:
    """Copy a checkpoint's weights into ``model`` for fine-tuning.

    The head is skipped (left freshly initialised) when the class count differs and
    ``reinit_head == "auto"``, or always with ``"always"``. Every other tensor must fit by name and
    shape. Returns the names of the tensors ``loaded`` and ``reinitialized``.
    """
    source: dict[str, Any] = ckpt["model"]["state_dict"]
    target = model.state_dict()
    differs = ckpt["num_classes"] != model.num_classes
    if differs and reinit_head == "never":
        raise ConfigError(f"{path} has {ckpt['num_classes']} classes and the new data has {model.num_classes}; "
                          "the head must be re-initialised (set finetune.reinit_head to auto or always)")
    skip_head = reinit_head == "always" or differs
    loaded, reinitialized, problems = [], [], []
    new_state = {}
    for name, tensor in target.items():
        if skip_head and name.startswith("head."):
            reinitialized.append(name)
        elif name not in source:
            problems.append(f"missing '{name}'")
        elif tuple(source[name].shape) != tuple(tensor.shape):
            problems.append(f"'{name}' is {tuple(source[name].shape)} in the checkpoint, {tuple(tensor.shape)} in the model")
        else:
            new_state[name] = source[name]
            loaded.append(name)
    extra = [k for k in source if k not in target]
    if extra:
        problems.append(f"unexpected {', '.join(extra[:5])}")
    if problems:
        raise CheckpointError(f"{path} does not fit model '{ckpt['model']['name']}': {'; '.join(problems[:5])}")
    model.load_state_dict(new_state, strict=False)
    return {"loaded": loaded, "reinitialized": reinitialized}
