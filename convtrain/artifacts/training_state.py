"""last.pt's ``training_state``: the keys the loop features save there, and their validation.

A loop feature that keeps state across ``--resume`` (EMA weights, the stopping rules' counters,
the kept epochs) stores it under one key of ``training_state`` and registers that key's check in
:data:`VALIDATORS`, here, below the training code: the checkpoint format depends on no loop
feature, and :func:`convtrain.artifacts.checkpoint.validate` checks every key without importing
``convtrain.training``. A key absent from an older last.pt is fine (the feature starts fresh).
"""

from __future__ import annotations

import math

import torch

from ..errors import CheckpointError


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


# training_state key -> its check, called as check(value, path, bad); `bad(key, want, got)` builds the error
VALIDATORS = {"ema": validate_ema, "stops": validate_stops, "kept": validate_kept}


def validate(ts: dict, path, bad) -> None:
    """Check the parts of last.pt's training state added by the loop features."""
    for key, check in VALIDATORS.items():
        check(ts.get(key), path, bad)
