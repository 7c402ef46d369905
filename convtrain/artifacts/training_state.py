"""last.pt's ``training_state``: every key ``--resume`` reads, typed (:class:`TrainingState`), and
one validation of every key (:func:`validate`).

The core keys (:data:`CORE`: position, per-rank RNG states, optimizer, schedule, loss scaler, best
epoch, process count) are written and read by the runner; a hook of the run that keeps state across
``--resume`` (the EMA weights, SWA's average, the stopping rules' counters, the kept epochs) stores it
under its own key and registers that key's check in :data:`VALIDATORS`, here, below the training
code: the checkpoint format depends on no hook, and :func:`convtrain.artifacts.checkpoint.validate`
checks every key without importing ``convtrain.training``. A core key that is missing or of the
wrong type is refused in one line naming it; a hook key absent from an older last.pt is fine (that
hook starts fresh).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError

# the core keys, in the order last.pt has always stored them (the hooks' keys follow)
CORE = ("epoch", "epoch_complete", "epoch_state", "rng", "optimizer", "scheduler", "scaler", "best_val_acc",
        "best_epoch", "best_state", "world_size")
OPTIONAL = ("best_value",)  # the runner's keys a last.pt written by an older convtrain lacks


@dataclass
class TrainingState:
    """last.pt's training state by name. :meth:`to_dict` is what last.pt stores; :meth:`from_dict`
    reads a state that :func:`validate` accepted (``checkpoint.load`` validates every file it reads)."""

    epoch: int  # the epoch saved (complete) or being trained (not complete)
    epoch_complete: bool
    epoch_state: list[dict]  # per rank: the position inside the epoch and its running sums (EpochState)
    rng: list[dict]  # per rank: every RNG state (checkpoint.rng_state)
    optimizer: dict
    scheduler: dict | None
    scaler: dict | None  # the fp16 loss scaler
    best_val_acc: float  # -1: no epoch validated yet
    best_epoch: int  # 0: none yet
    best_state: dict | None  # the best epoch's evaluated weights (the final test uses them)
    world_size: int  # processes that trained: a resume needs as many
    hooks: dict = field(default_factory=dict)  # each hook's state under its state_key (ema, swa, stops, kept)
    # the best epoch's value of train.best_metric (val_macro_f1...); absent (None) where it is best_val_acc:
    # a run picking best.pt on val_acc (every last.pt written before that key) stores the same keys as ever
    best_value: float | None = None

    def to_dict(self) -> dict:
        extra = {} if self.best_value in (None, self.best_val_acc) else {"best_value": self.best_value}
        return {**{key: getattr(self, key) for key in CORE}, **extra, **self.hooks}

    @classmethod
    def from_dict(cls, raw: dict) -> TrainingState:
        return cls(**{key: raw[key] for key in CORE}, best_value=raw.get("best_value"),
                   hooks={k: v for k, v in raw.items() if k not in CORE and k not in OPTIONAL})


# ---- the core keys ------------------------------------------------------------------------------

def _int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _tensors(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


# key -> (what it must be, its check, show the value (True) or its type (False) when refused)
_SIMPLE = {
    "world_size": ("an integer >= 1", lambda v: _int(v, 1), True),
    "epoch": ("an integer >= 1", lambda v: _int(v, 1), True),
    "epoch_complete": ("true or false", lambda v: isinstance(v, bool), False),
    "scheduler": ("a mapping or null", lambda v: v is None or isinstance(v, dict), False),
    "scaler": ("a mapping or null", lambda v: v is None or isinstance(v, dict), False),
    "best_val_acc": ("-1 (no epoch yet) or a number from 0 to 1",
                     lambda v: _number(v) and (v == -1 or 0 <= v <= 1), True),
    "best_epoch": ("an integer >= 0", lambda v: _int(v, 0), True),
    "best_state": ("a mapping of tensors or null", lambda v: v is None or _tensors(v), False),
}
# one rank's epoch_state: key -> (what it must be, its check); "skipped" and "seconds" may be absent
_EPOCH_STATE = {"step": ("an integer >= 0", lambda v: _int(v, 0)), "loss_sum": ("a finite number", _number),
                "correct": ("an integer >= 0", lambda v: _int(v, 0)), "samples": ("an integer >= 0", lambda v: _int(v, 0)),
                "skipped": ("an integer >= 0", lambda v: _int(v, 0)), "seconds": ("a number >= 0",
                                                                                  lambda v: _number(v) and v >= 0)}
_EPOCH_STATE_OPTIONAL = ("skipped", "seconds")


def validate_core(ts: dict, path, bad) -> None:
    """Every core key present and of its type, the per-rank lists one entry per process."""
    for key in CORE:
        if key not in ts:
            raise CheckpointError(f"{path}: 'training_state.{key}' is missing")
    for key, (want, ok, show_value) in _SIMPLE.items():
        if not ok(ts[key]):
            raise bad(f"training_state.{key}", want, ts[key], show_type=not show_value)
    for key, check in (("epoch_state", _check_epoch_state), ("rng", _check_rng)):
        entries = ts[key]
        if not isinstance(entries, list) or len(entries) != ts["world_size"]:
            raise bad(f"training_state.{key}", f"a list with one entry per process ({ts['world_size']})", entries)
        for rank, entry in enumerate(entries):
            check(entry, f"training_state.{key}[{rank}]", path, bad)
    _check_optimizer(ts["optimizer"], bad)
    if "best_value" in ts and not (_number(ts["best_value"]) and (ts["best_value"] == -1 or 0 <= ts["best_value"] <= 1)):
        raise bad("training_state.best_value", "-1 (no epoch yet) or a number from 0 to 1", ts["best_value"],
                  show_type=False)


def _check_epoch_state(entry: Any, where: str, path, bad) -> None:
    if not isinstance(entry, dict):
        raise bad(where, "a mapping", entry)
    for key, (want, ok) in _EPOCH_STATE.items():
        if key not in entry:
            if key in _EPOCH_STATE_OPTIONAL:
                continue
            raise CheckpointError(f"{path}: '{where}.{key}' is missing")
        if not ok(entry[key]):
            raise bad(f"{where}.{key}", want, entry[key], show_type=False)
    unknown = sorted(str(k) for k in entry if k not in _EPOCH_STATE)
    if unknown:
        raise CheckpointError(f"{path}: '{where}' has an unknown key '{unknown[0]}'")


def _check_rng(entry: Any, where: str, path, bad) -> None:
    """Each RNG state is tried on a fresh generator: what is accepted here, set_rng_state accepts."""
    import numpy as np

    if not isinstance(entry, dict):
        raise bad(where, "a mapping", entry)
    for key in ("torch", "python", "numpy"):
        if key not in entry:
            raise CheckpointError(f"{path}: '{where}.{key}' is missing")
    n = entry["numpy"]
    tries = {
        "torch": ("torch's RNG state (a uint8 tensor)", lambda: torch.Generator().set_state(entry["torch"])),
        "python": ("Python's random state", lambda: random.Random().setstate(entry["python"])),
        "numpy": ("a mapping with NumPy's RNG state (name, keys, pos, has_gauss, cached_gaussian)",
                  lambda: np.random.RandomState().set_state((n["name"], n["keys"].numpy().astype("uint32"), n["pos"],
                                                              n["has_gauss"], n["cached_gaussian"]))),
    }
    for key, (want, attempt) in tries.items():
        try:
            attempt()
        except Exception:  # noqa: BLE001 - each library refuses a bad state with its own exception type
            raise bad(f"{where}.{key}", want, entry[key]) from None
    cuda = entry.get("cuda")
    if cuda is not None and not (isinstance(cuda, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in cuda)):
        raise bad(f"{where}.cuda", "a list of tensors", cuda)


def _check_optimizer(opt: Any, bad) -> None:
    if not isinstance(opt, dict):
        raise bad("training_state.optimizer", "a mapping", opt)
    if not isinstance(opt.get("state"), dict):
        raise bad("training_state.optimizer.state", "a mapping", opt.get("state"))
    groups = opt.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                               for g in groups):
        raise bad("training_state.optimizer.param_groups", "a list of mappings with params", groups)


# ---- the hooks' keys ----------------------------------------------------------------------------

def validate_kept(state, path, bad) -> None:
    """The check of ``training_state.kept``: a list of [val_acc, epoch] pairs (val_acc in [0, 1], epoch >= 1)."""
    if state is None:
        return
    ok = isinstance(state, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], (int, float)) and not isinstance(p[0], bool)
        and 0 <= p[0] <= 1  # a validation accuracy (False for NaN too)
        and isinstance(p[1], int) and not isinstance(p[1], bool) and p[1] >= 1 for p in state)
    if not ok:
        raise bad("training_state.kept", "a list of [val_acc, epoch] pairs", state, show_type=False)


def validate_ema(state, path, bad) -> None:
    """The check of ``training_state.ema``."""
    if state is None:
        return
    if not isinstance(state, dict) or "state_dict" not in state or "steps" not in state:
        raise bad("training_state.ema", "a mapping with state_dict and steps", state)
    sd = state["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise bad("training_state.ema.state_dict", "a mapping of tensors", sd)
    steps = state["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise bad("training_state.ema.steps", "a non-negative integer", steps, show_type=False)


def validate_stops(state, path, bad) -> None:
    """The check of ``training_state.stops`` (``bad(key, want, got)`` builds the error)."""
    if state is None:
        return
    if not isinstance(state, dict):
        raise bad("training_state.stops", "a mapping", state)
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    checks = {"seconds": lambda v: number(v) and v >= 0,
              "early_best": lambda v: v is None or number(v),
              "early_bad_epochs": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "target_epoch": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
              "target_seconds": lambda v: v is None or (number(v) and v >= 0)}
    for key, ok in checks.items():
        if key not in state:
            raise CheckpointError(f"{path}: 'training_state.stops.{key}' is missing")
        if not ok(state[key]):
            raise bad(f"training_state.stops.{key}", "a valid value", state[key])


def validate_swa(state, path, bad) -> None:
    """The check of ``training_state.swa`` (training/hooks/swa.py): the start epoch, how many epochs the
    average holds, the average (null until the first), SWALR's state (null before the start epoch)."""
    if state is None:
        return
    if not isinstance(state, dict):
        raise bad("training_state.swa", "a mapping", state)
    for key in ("start_epoch", "averaged", "state_dict", "schedule"):
        if key not in state:
            raise CheckpointError(f"{path}: 'training_state.swa.{key}' is missing")
    for key, low in (("start_epoch", 1), ("averaged", 0)):
        if not _int(state[key], low):
            raise bad(f"training_state.swa.{key}", f"an integer >= {low}", state[key], show_type=False)
    weights = state["state_dict"]
    if (weights is None) != (state["averaged"] == 0) or (weights is not None and not _tensors(weights)):
        raise bad("training_state.swa.state_dict", "a mapping of tensors once an epoch is averaged (null before)",
                  weights)
    schedule = state["schedule"]
    if schedule is None:
        return
    numbers = lambda v: isinstance(v, list) and v and all(_number(x) and x >= 0 for x in v)  # noqa: E731
    ok = (isinstance(schedule, dict) and _int(schedule.get("_step_count"), 1) and _int(schedule.get("anneal_epochs"), 0)
          and numbers(schedule.get("_last_lr")) and numbers(schedule.get("base_lrs"))
          and not {"optimizer", "anneal_func"} & set(schedule))  # SWALR.load_state_dict sets every key it gets
    if not ok:
        raise bad("training_state.swa.schedule", "SWALR's state (a mapping) or null", schedule)


# training_state key -> its check, called as check(value, path, bad); `bad(key, want, got)` builds the error
VALIDATORS = {"ema": validate_ema, "swa": validate_swa, "stops": validate_stops, "kept": validate_kept}


def validate(ts: dict, path, bad) -> None:
    """Check every key of last.pt's training state: the core ones, then each hook's that is present."""
    validate_core(ts, path, bad)
    for key, check in VALIDATORS.items():
        check(ts.get(key), path, bad)
