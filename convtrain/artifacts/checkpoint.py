"""One checkpoint schema, saved atomically and loaded only with ``weights_only=True``.

A checkpoint is a dict of plain data (tensors, dicts, lists, tuples, strings, numbers), so it opens
with ``torch.load(path, weights_only=True)`` and no allowlist, and it describes itself: the model's
registry name and kwargs, the classes, the normalization and the resolved config are all inside,
so ``convtrain eval`` needs nothing else. ``last.pt`` also holds the training state (optimizer,
scheduler, RNG states, position in the epoch) for ``--resume``. A calibrated checkpoint (``convtrain
calibrate``, ``train.calibrate``) also holds ``calibration``: the temperature its probabilities are
computed with (softmax(logits / T)) and what it was fitted on (:func:`with_calibration`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import pickle
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .. import atomic
from ..errors import CheckpointError, ConfigError, ConvtrainError, Interrupted
from ..version import __version__
from . import training_state as state_keys
from .pickle_scan import _refuse_code, code_running_globals

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


@functools.cache
def library_versions() -> dict:
    # str(): torch.__version__ is a TorchVersion object, which weights_only loading rejects
    return {"convtrain": __version__, "torch": str(torch.__version__), "torchvision": _torchvision_version()}


def _torchvision_version() -> str:
    """From the installed package's metadata: importing torchvision only to read it cost ~0.2 s of
    the first checkpoint save (training itself no longer imports it). Always the metadata, so the
    string does not depend on whether something else in the process imported torchvision first."""
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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
        "versions": dict(library_versions()),
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
    """Write atomically (:mod:`convtrain.atomic`): a crash or ``kill -9`` at any moment leaves either
    the old file or the new one. A failed write (disk full) keeps the old checkpoint; so does a
    second Ctrl-C arriving during the write (the interrupt is then re-raised)."""
    path = Path(path)
    try:
        with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
            torch.save(ckpt, f)
    except (OSError, RuntimeError) as exc:
        # torch.save's zip writer wraps whatever its write callback raised (a full disk, or a
        # Ctrl-C landing inside the write) into its own RuntimeError; the original is __context__
        cause = _original_error(exc)
        if isinstance(cause, Interrupted):
            raise cause from None  # the temporary file is already gone
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # the temporary file is already gone
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else (
            str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
        raise CheckpointError(f"could not save checkpoint {path}: {reason}; "
                              "the previous checkpoint, if any, is intact") from None


def _original_error(exc: BaseException) -> BaseException:
    """The first error in ``exc``'s chain that is not a RuntimeError from torch's writer."""
    seen = exc
    while isinstance(seen, RuntimeError) and (seen.__cause__ or seen.__context__) is not None:
        seen = seen.__cause__ or seen.__context__
    return seen


def _read(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into one CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {path} (give the .pt file, e.g. {path}/checkpoints/best.pt)")
    if not path.is_file():  # reading a FIFO waits for a writer forever; /dev/zero never ends
        raise CheckpointError(f"checkpoint {path} is not a regular file (a pipe or a device); give the .pt file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols; the error below says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"cannot read checkpoint {path}: permission denied") from None
    except Exception as exc:  # arbitrary bytes fail deep inside the unpickler with any exception type
        unsafe = code_running_globals(path)
        refused_global = "Unsupported global" in str(exc) or ("GLOBAL" in str(exc) and "blocked" in str(exc))
        if unsafe or refused_global:
            raise _refuse_code(path, unsafe or ["a non-tensor global"]) from None
        what = _what_it_is(path)
        if what is not None:
            # "PATH is not a convtrain checkpoint": the words export's overwrite check reads as "not one"
            raise CheckpointError(f"{path} is not a convtrain checkpoint: it is {what}; give a run directory, "
                                  "its checkpoints/best.pt, or an .onnx export") from None
        if isinstance(exc, pickle.UnpicklingError):
            raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint (unreadable pickle data)") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({first})") from None


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"\x93NUMPY", "a NumPy .npy file"), (b"\x1f\x8b", "a gzip file"))
_EXPORTS = {".onnx": "an ONNX file that onnxruntime cannot read as convtrain's export",
            ".pt2": "a torch.export archive (torch.export.load reads it; predict, eval and serve take the .onnx "
                    "export or the checkpoint)",
            ".ts": "a TorchScript archive (torch.jit.load reads it; predict, eval and serve take the .onnx export "
                   "or the checkpoint)"}


def _what_it_is(path: Path) -> str | None:
    """What a file that torch.load cannot read is, when its name or first bytes say it (None: unknown)."""
    if path.suffix.lower() in _EXPORTS:
        return _EXPORTS[path.suffix.lower()]
    if path.suffix.lower() in (".pt", ".pth"):
        return None  # named as a checkpoint: damaged (truncated, overwritten), as the message has always said
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (an .npz, .pt2 or .ts file?)" if path.suffix.lower() != ".npz" else "a NumPy .npz file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if head and "\x00" not in text:
        return f"a text file ({path.suffix.lstrip('.').upper() or 'plain'} text)"
    return None


# ---- schema validation: every key a reader uses, checked once, named by its key path --------

def _kind(value: Any) -> str:
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


MAX_SIDE = 4096  # an input side larger than this is not an MNIST-style model; refuse before allocating


def validate(raw: Any, path: str | Path = "checkpoint") -> dict:
    """Check the whole schema and its types; raise CheckpointError naming the file and the key path."""
    bad = functools.partial(_bad, path)
    _validate_header(raw, path, bad)
    _validate_model(raw["model"], path, bad)
    _validate_classes(raw, path, bad)
    _validate_input(raw, bad)
    if not isinstance(raw["dataset"], str):
        raise bad("dataset", "a string", raw["dataset"])
    _validate_config(raw["config"], bad)
    if not _is_int(raw["epoch"]) or raw["epoch"] < 0:
        raise bad("epoch", "a non-negative integer", raw["epoch"], show_type=False)
    for key in ("metrics", "versions", "training_state", "calibration"):
        if key in raw and not isinstance(raw[key], dict):
            raise bad(key, "a mapping", raw[key])
    if "calibration" in raw:
        _validate_calibration(raw["calibration"], bad)
    if "training_state" in raw:
        state_keys.validate(raw["training_state"], path, bad)
    _check_model_fits(raw, path)
    return raw


def _bad(path, key: str, want: str, got: Any = None, *, show_type: bool = True) -> CheckpointError:
    tail = f", got {_kind(got)}" if show_type else (f", got {got!r}" if got is not None else "")
    return CheckpointError(f"{path}: '{key}' must be {want}{tail}")


_REQUIRED = ("model", "classes", "num_classes", "in_channels", "input_size", "normalization", "dataset", "config",
             "epoch", "metrics")


def _validate_header(raw: Any, path, bad) -> None:
    """The format tag, a version this code reads, and every top-level key."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convtrain checkpoint (no '{FORMAT}' header)")
    version = raw.get("version")
    if not _is_int(version):
        raise bad("version", "an integer", version)
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer convtrain (checkpoint version {version}, "
                              f"this one reads up to {VERSION}); upgrade convtrain")
    if version < 1:
        raise bad("version", f"between 1 and {VERSION}", version, show_type=False)
    for key in _REQUIRED:
        if key not in raw:
            raise CheckpointError(f"{path}: '{key}' is missing")


def _validate_model(model: Any, path, bad) -> None:
    """Registry name, plain-valued kwargs and a state_dict of tensors."""
    if not isinstance(model, dict):
        raise bad("model", "a mapping", model)
    for key in ("name", "kwargs", "state_dict"):
        if key not in model:
            raise CheckpointError(f"{path}: 'model.{key}' is missing")
    if not isinstance(model["name"], str):
        raise bad("model.name", "a string", model["name"])
    kwargs = model["kwargs"]
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise bad("model.kwargs", "a mapping of names to values", kwargs)
    for k, v in kwargs.items():
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise bad(f"model.kwargs.{k}", "a string, number or boolean", v)
    state = model["state_dict"]
    tensors = isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if not tensors:
        raise bad("model.state_dict", "a mapping of tensors", state)


def _validate_classes(raw: dict, path, bad) -> None:
    """Class names, their count, and a head with one output per class."""
    classes = raw["classes"]
    if not isinstance(classes, (list, tuple)) or not classes:
        raise bad("classes", "a non-empty list of class names", classes)
    for i, c in enumerate(classes):
        if not isinstance(c, str):
            raise bad(f"classes[{i}]", "a string", c)
    n = raw["num_classes"]
    if not _is_int(n):
        raise bad("num_classes", "an integer", n)
    if n != len(classes):
        raise CheckpointError(f"{path}: 'num_classes' is {n} but 'classes' names {len(classes)}")
    head = raw["model"]["state_dict"].get("head.weight")
    if head is not None and (head.dim() != 2 or head.shape[0] != n):
        raise CheckpointError(f"{path}: 'model.state_dict.head.weight' has {head.shape[0] if head.dim() else 0} "
                              f"outputs but the checkpoint names {n} classes")


def _validate_input(raw: dict, bad) -> None:
    """Channels, image size and per-channel normalization of what the model takes."""
    c = raw["in_channels"]
    if not _is_int(c) or not 1 <= c <= 64:
        raise bad("in_channels", "an integer from 1 to 64", c, show_type=not _is_int(c))
    size = raw["input_size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(s) and 1 <= s <= MAX_SIDE
                                                                          for s in size):
        raise bad("input_size", f"[height, width], integers from 1 to {MAX_SIDE}", size, show_type=False)
    norm = raw["normalization"]
    if not isinstance(norm, dict):
        raise bad("normalization", "a mapping with mean and std", norm)
    for key in ("mean", "std"):
        values = norm.get(key)
        if not isinstance(values, (list, tuple)) or len(values) not in {1, c} or not all(_is_num(v) for v in values):
            raise bad(f"normalization.{key}", f"a list of {c} finite numbers (one per channel)", values,
                      show_type=False)
    if not all(s > 0 for s in norm["std"]):
        raise bad("normalization.std", "positive", norm["std"], show_type=False)


def _validate_calibration(cal: dict, bad) -> None:
    """``calibration.temperature`` a number > 0 (what every reader divides the logits by); the rest plain
    numbers or strings (what it was fitted on, for people)."""
    t = cal.get("temperature")
    if not _is_num(t) or t <= 0:
        raise bad("calibration.temperature", "a finite number > 0", t, show_type=False)
    for key, value in cal.items():
        if not (value is None or _is_num(value) or isinstance(value, str)):
            raise bad(f"calibration.{key}", "a number, a string or null", value)


def with_calibration(raw: dict, record: dict) -> dict:
    """A copy of the checkpoint dict ``raw`` that holds ``record`` (``temperature`` and what it was fitted
    on) as its ``calibration``; the weights and every other key are the same objects. Save it with
    :func:`save` (atomic): the file then holds exactly the weights it held before."""
    out = {**raw, "calibration": dict(record)}
    _validate_calibration(out["calibration"], functools.partial(_bad, "calibration"))
    return out


# Config keys read outside training (eval, export, visualize): checked here so they never KeyError.
_CONFIG_KEYS = {("data", "root"): (str,), ("data", "val_size"): (int, float, type(None)), ("data", "download"): (bool,),
                ("seed",): (int,), ("train", "eval_batch_size"): (int,)}


def _validate_config(config: Any, bad) -> None:
    if not isinstance(config, dict):
        raise bad("config", "a mapping", config)
    for keys, types in _CONFIG_KEYS.items():
        node: Any = config
        for i, k in enumerate(keys):
            if not isinstance(node, dict) or k not in node:
                where = "config." + ".".join(keys[:i]) if i else "config"
                raise bad(where, f"a mapping with '{k}'", node)
            node = node[k]
        if not isinstance(node, types) or (bool not in types and isinstance(node, bool)):
            raise bad("config." + ".".join(keys), " or ".join(t.__name__ for t in types), node)


def _build(raw: dict, path: str | Path) -> nn.Module:
    """The described model, freshly initialised; any constructor failure is a CheckpointError."""
    from ..models.registry import check_model_kwargs, get_spec

    m = raw["model"]
    try:
        _import_own_model(m["name"], raw.get("config") or {}, path)
        spec = get_spec(m["name"])
        check_model_kwargs(m["name"], m["kwargs"], where=str(path))
    except ConvtrainError as exc:
        text = str(exc)
        raise CheckpointError(text if text.startswith(str(path)) else f"{path}: 'model.name': {text}") from None
    try:
        return spec.factory(num_classes=raw["num_classes"], in_channels=raw["in_channels"],
                            input_size=tuple(raw["input_size"]), **m["kwargs"])
    except NotImplementedError:
        raise  # an operation the meta device lacks: _check_model_fits builds on the CPU instead
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # garbage kwargs reach the layers
        raise CheckpointError(f"{path}: 'model.kwargs' {m['kwargs']} cannot build model '{m['name']}': "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _import_own_model(name: str, config: dict, path: str | Path) -> None:
    """A model of the user's own (``package.module:function``, or ``model.file`` in the saved config) imported
    as training imported it, so eval, predict, export and serve build it."""
    file = config.get("model", {}).get("file") if isinstance(config.get("model"), dict) else None
    if ":" in name or file:
        from ..models.user import load_user_models

        load_user_models(name, file if isinstance(file, str) else None, f"{path}: config")


def _check_model_fits(raw: dict, path: str | Path) -> None:
    """Build the model on the meta device (no memory, no compute) and compare every tensor shape."""
    try:
        with torch.device("meta"):
            expected = _build(raw, path).state_dict()
    except NotImplementedError:  # a model whose construction needs real tensors
        expected = _build(raw, path).state_dict()
    state = raw["model"]["state_dict"]
    problems = [f"missing '{k}'" for k in expected if k not in state]
    problems += [f"'{k}' is {tuple(state[k].shape)}, the model needs {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems += [f"unexpected '{k}'" for k in state if k not in expected]
    if problems:
        raise CheckpointError(f"{path}: 'model.state_dict': weights do not fit model '{raw['model']['name']}' "
                              f"with kwargs {raw['model']['kwargs']}: {'; '.join(problems[:3])}"
                              + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))


def load(path: str | Path) -> dict:
    """Open a checkpoint with ``weights_only=True`` and validate it; every failure is a CheckpointError.

    Returns the checkpoint dict (what ``--resume`` and fine-tuning need); readers that only use
    the model should prefer :func:`open_checkpoint`.
    """
    path = Path(path)
    return validate(_read(path), path)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Loaded:
    """A validated checkpoint, read-only: what eval, predict, export, visualize and serve read.

    Build one with :func:`open_checkpoint` (or ``Loaded.from_path``); every field has been checked,
    so readers index nothing and catch nothing.
    """

    path: Path
    model_name: str
    model_kwargs: Mapping[str, Any]
    state_dict: Mapping[str, torch.Tensor]
    classes: tuple[str, ...]
    in_channels: int
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    config: Mapping[str, Any]
    epoch: int
    metrics: Mapping[str, Any]
    versions: Mapping[str, Any]
    training_state: Mapping[str, Any] | None
    calibration: Mapping[str, Any] | None = None  # convtrain calibrate: the temperature and its fit

    @property
    def temperature(self) -> float:
        """What the logits are divided by before the softmax: 1.0 for a checkpoint never calibrated."""
        return float(self.calibration["temperature"]) if self.calibration is not None else 1.0

    @classmethod
    def from_path(cls, path: str | Path) -> "Loaded":
        return cls.from_dict(load(path), path, validated=True)

    @classmethod
    def from_dict(cls, raw: dict, path: str | Path = "checkpoint", *, validated: bool = False) -> "Loaded":
        """A view of a checkpoint dict; ``validated=True`` when it came from :func:`load`."""
        path = Path(path)
        if not validated:
            validate(raw, path)
        m = raw["model"]
        return cls(path=path, model_name=m["name"], model_kwargs=_freeze(m["kwargs"]),
                   state_dict=MappingProxyType(dict(m["state_dict"])), classes=tuple(raw["classes"]),
                   in_channels=raw["in_channels"], input_size=(raw["input_size"][0], raw["input_size"][1]),
                   mean=tuple(float(v) for v in raw["normalization"]["mean"]),
                   std=tuple(float(v) for v in raw["normalization"]["std"]), dataset=raw["dataset"],
                   config=_freeze(raw["config"]), epoch=raw["epoch"], metrics=_freeze(raw["metrics"]),
                   versions=_freeze(raw.get("versions", {})),
                   training_state=raw.get("training_state"),
                   calibration=_freeze(raw["calibration"]) if "calibration" in raw else None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one input image."""
        return (self.in_channels, *self.input_size)

    def rebuild(self) -> nn.Module:
        """The model with its weights, on the CPU, in eval mode."""
        raw = {"model": {"name": self.model_name, "kwargs": _thaw(self.model_kwargs)},
               "num_classes": self.num_classes, "in_channels": self.in_channels, "input_size": list(self.input_size),
               "config": self.config_dict()}
        model = _build(raw, self.path)
        try:
            model.load_state_dict(dict(self.state_dict))
        except RuntimeError as exc:  # validate() compared shapes; dtypes can still differ
            raise CheckpointError(f"{self.path}: weights do not fit model '{self.model_name}': "
                                  f"{str(exc).splitlines()[0]}") from None
        return model.eval()

    def normalizer(self, device: torch.device | str = "cpu"):
        """uint8 images -> the normalized floats the model was trained on."""
        from ..data.batches import Normalizer

        return Normalizer(list(self.mean), list(self.std), torch.device(device))

    def config_dict(self) -> dict:
        """The saved run config as a plain, mutable copy."""
        return _thaw(self.config)

    def data_root(self, override: str | None = None) -> str | None:
        """``override``, else ``CONVTRAIN_DATA_ROOT``, else the root saved in the config."""
        from ..data.detect import data_root_from_env

        return override or data_root_from_env(self.config["data"]["root"])


def open_checkpoint(path: str | Path) -> Loaded:
    """Load and validate a checkpoint: the one entry point for readers of a trained model."""
    return Loaded.from_path(path)


def rebuild_model(ckpt: dict | Loaded, path: str | Path = "checkpoint") -> nn.Module:
    """The model a checkpoint describes, with its weights loaded, on the CPU."""
    view = ckpt if isinstance(ckpt, Loaded) else Loaded.from_dict(ckpt, path)
    return view.rebuild()


def load_pretrained(model: nn.Module, ckpt: dict, reinit_head: str, path: str | Path = "checkpoint",
                    classes: list[str] | None = None) -> dict[str, list[str]]:
    """Copy a checkpoint's weights into ``model`` for fine-tuning.

    The head is skipped (left freshly initialised) when the class count differs and
    ``reinit_head == "auto"``, or always with ``"always"``. With ``classes`` (the new data's class
    names), ``"auto"`` also re-initialises a head of the same size whose class names differ: output 3
    of an MNIST head means "3", not "dog". Every other tensor must fit by name and shape. Returns the
    names of the tensors ``loaded`` and ``reinitialized``.
    """
    source: dict[str, Any] = ckpt["model"]["state_dict"]
    target = model.state_dict()
    differs = ckpt["num_classes"] != model.num_classes
    if differs and reinit_head == "never":
        raise ConfigError(f"{path} has {ckpt['num_classes']} classes and the new data has {model.num_classes}; "
                          "the head must be re-initialised (set finetune.reinit_head to auto or always)")
    renamed = classes is not None and list(classes) != list(ckpt["classes"])
    skip_head = reinit_head == "always" or differs or (renamed and reinit_head == "auto")
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
