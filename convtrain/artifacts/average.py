"""``convtrain average``: the element-wise mean of the weights of compatible checkpoints (timm's
``avg_checkpoints.py``), saved as an ordinary checkpoint that eval, predict, export and serve read.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, ConfigError
from . import checkpoint

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
