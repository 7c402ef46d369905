"""Checkpoints kept besides best.pt and last.pt, and ``convtrain average``.

``checkpoint.keep_top_k: K`` keeps the K best epochs by validation accuracy (ties keep the earlier
epoch, like best.pt) and ``checkpoint.every_n_epochs: N`` every N-th epoch, each as
``RUN/checkpoints/epoch-NNN.pt`` with the weights best.pt would hold (the EMA weights when
``train.ema`` is on). The list of kept epochs is in last.pt, so a resumed run keeps the same files.

:func:`average_checkpoints` is timm's ``avg_checkpoints.py``: the element-wise mean of the weights
of compatible checkpoints (same model, kwargs, classes, input and normalization), saved as an
ordinary checkpoint that ``convtrain eval`` / ``predict`` / ``export`` read like any other.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import checkpoint
from .config import CheckpointConfig
from .errors import CheckpointError, ConfigError

EPOCH_FILE = re.compile(r"epoch-(\d+)\.pt")


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:03d}.pt"


class Kept:
    """Which epochs have an ``epoch-NNN.pt``; :meth:`after_epoch` says whether this one gets a file."""

    def __init__(self, cfg: CheckpointConfig) -> None:
        self.top_k, self.every = cfg.keep_top_k, cfg.every_n_epochs
        self.top: list[tuple[float, int]] = []  # (val_acc, epoch), best first

    @property
    def enabled(self) -> bool:
        return self.top_k > 0 or self.every is not None

    def after_epoch(self, epoch: int, val_acc: float) -> bool:
        """Update the top-k list with this epoch; True when its file is to be written."""
        if self.top_k:  # a max_time stop's partial epoch, finished after a resume, is entered again
            entries = [*[t for t in self.top if t[1] != epoch], (val_acc, epoch)]
            self.top = sorted(entries, key=lambda t: (-t[0], t[1]))[: self.top_k]
        return self.wanted(epoch)

    def wanted(self, epoch: int) -> bool:
        return any(e == epoch for _, e in self.top) or (self.every is not None and epoch % self.every == 0)

    def stale(self, names: list[str]) -> list[str]:
        """The epoch-NNN.pt files among ``names`` that are no longer kept (they dropped out of the top k,
        or were written after the last.pt a run resumed from)."""
        if not self.enabled:
            return []  # never delete what an earlier setting kept because the feature is off now
        found = [(n, EPOCH_FILE.fullmatch(n)) for n in names]
        return [n for n, m in found if m and not self.wanted(int(m.group(1)))]

    def state_dict(self) -> list:
        return [[acc, epoch] for acc, epoch in self.top]

    def load_state_dict(self, state: list | None) -> None:
        if state is not None:
            self.top = [(float(acc), int(epoch)) for acc, epoch in state]


def validate_state(state, path, bad) -> None:
    """checkpoint.validate's check of ``training_state.kept``: a list of [val_acc, epoch] pairs."""
    if state is None:
        return
    ok = isinstance(state, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], (int, float)) and not isinstance(p[0], bool)
        and isinstance(p[1], int) and not isinstance(p[1], bool) and p[1] >= 1 for p in state)
    if not ok:
        raise bad("training_state.kept", "a list of [val_acc, epoch] pairs", state, show_type=False)


# --------------------------------------------------------------------------------------------
# convtrain average

_SAME = (("model name", lambda c: c["model"]["name"]), ("model kwargs", lambda c: c["model"]["kwargs"]),
         ("classes", lambda c: list(c["classes"])), ("in_channels", lambda c: c["in_channels"]),
         ("input_size", lambda c: list(c["input_size"])), ("normalization", lambda c: c["normalization"]))


def average_checkpoints(paths: list[Path], output: Path) -> dict:
    """Average the weights of ``paths`` into ``output`` (written atomically); refuse incompatible inputs.

    Floating-point tensors are averaged (in float64, then cast back); integer buffers (BatchNorm's
    batch counter) are taken from the first checkpoint. Everything else (config, classes,
    normalization) comes from the first checkpoint; ``averaged_from`` lists the inputs.
    """
    paths, output = [Path(p) for p in paths], Path(output)
    if len(paths) < 2:
        raise ConfigError("give at least two checkpoints to average (--checkpoints A B ...)")
    _check_output(paths, output)
    loaded = [checkpoint.load(p) for p in paths]
    first = loaded[0]
    for path, ckpt in zip(paths[1:], loaded[1:]):
        for what, get in _SAME:
            if get(ckpt) != get(first):
                raise CheckpointError(f"{path} cannot be averaged with {paths[0]}: its {what} differs "
                                      f"({get(ckpt)!r} vs {get(first)!r})")
        _check_tensors(first["model"]["state_dict"], ckpt["model"]["state_dict"], paths[0], path)
    state = {}
    for key, ref in first["model"]["state_dict"].items():
        if ref.dtype.is_floating_point:
            total = sum(c["model"]["state_dict"][key].double() for c in loaded)
            state[key] = (total / len(loaded)).to(ref.dtype)
        else:
            state[key] = ref.clone()
    out = {k: v for k, v in first.items() if k != "training_state"}
    out["model"] = {**first["model"], "state_dict": state}
    out["metrics"] = {}
    out["epoch"] = max(c["epoch"] for c in loaded)
    out["averaged_from"] = [str(p) for p in paths]
    checkpoint.validate(out, output)
    checkpoint.save(out, output)
    return {"output": str(output), "averaged": [str(p) for p in paths], "tensors": len(state)}


def _check_output(paths: list[Path], output: Path) -> None:
    resolved = {p.resolve() for p in paths}
    if output.resolve() in resolved:
        raise ConfigError(f"--output {output} is one of the input checkpoints; write the average to a new file")
    if len(resolved) != len(paths):
        raise ConfigError("the same checkpoint is given twice; each input counts once in the average")
    if output.exists():
        raise ConfigError(f"--output {output} exists; choose a new file (nothing is overwritten)")
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {output.parent} does not exist")


def _check_tensors(ref: dict, other: dict, ref_path: Path, path: Path) -> None:
    if set(ref) != set(other):
        missing = sorted(set(ref) ^ set(other))[:3]
        raise CheckpointError(f"{path} cannot be averaged with {ref_path}: different tensors ({', '.join(missing)})")
    for key, t in ref.items():
        o = other[key]
        if o.shape != t.shape or o.dtype != t.dtype:
            raise CheckpointError(f"{path} cannot be averaged with {ref_path}: '{key}' is {tuple(o.shape)} {o.dtype}, "
                                  f"not {tuple(t.shape)} {t.dtype}")
