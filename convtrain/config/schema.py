"""The closed, typed run configuration.

A run is described by one :class:`RunConfig`. It is built in one place, :func:`load_config`, with
the precedence *schema defaults < YAML file < ``--set`` overrides*. Every key is declared below
with its type, default and meaning; an unknown key, a wrong type or an invalid value is a
:class:`~convtrain.errors.ConfigError` that names the key path and where it came from, and
suggests the closest valid key or name. Nothing reads settings with ``.get(key, default)``, so a
typo can never fall back silently.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import yaml

from ..data.sources import own_files, root_help  # the table of data sources: plain data, no torch
from ..errors import ConfigError, did_you_mean, shown
from .fields import CountOrFraction, EpochOrFraction
from .fields import between as _between
from .fields import fraction as _fraction
from .fields import non_negative as _non_negative
from .fields import opt as _opt
from .fields import positive as _positive
from .fields import unit_open as _unit_open

MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds; each process adds its rank
SPLIT_SEED = 0  # data.split_seed's default: 0, so a default run (seed 0) holds out what it always did
MAX_EPOCHS = 1_000_000
MAX_BATCH = 1_048_576  # 2**20 images in one batch: already far beyond any accelerator's memory
MAX_WORKERS = 256  # DataLoader processes
MAX_THREADS = 4096


LOSSES = ("cross_entropy", "focal")
BEST_METRICS = ("val_acc", "val_macro_f1", "val_balanced_acc")  # metrics.csv columns, higher is better


class ClassWeights:
    """Annotation for ``train.class_weights``: ``auto`` or a mapping {class name: weight}. A YAML key that
    reads as a number (``5: 10.0`` for MNIST's class "5") is a class name too."""

    name = "auto or mapping"


def _class_weights_value(value: Any, path: str, where: str) -> str | dict:
    if isinstance(value, str) or (isinstance(value, dict) and all(isinstance(k, (str, int)) and not isinstance(k, bool)
                                                                   for k in value)):
        return value if isinstance(value, str) else {str(k): v for k, v in value.items()}
    raise ConfigError(f"{where}: '{path}' must be null, auto or a mapping {{class name: weight}}, "
                      f"got {type(value).__name__} {shown(value)}")


def _class_weights(v: Any) -> str | None:
    """``auto``, or a mapping of class names to weights > 0 (the names are checked against the data
    once it is read: convtrain.training.losses)."""
    if isinstance(v, str):
        return None if v == "auto" else "must be null, auto or a mapping {class name: weight}"
    if not v:
        return "must name at least one class (or be null)"
    for name, w in v.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            return f"must give each class a weight > 0 (class '{name}' has {shown(w)})"
    return None


def _devices(v: list[int] | None) -> str | None:
    return None if v is None or all(0 <= d < 1024 for d in v) else "must be GPU indices from 0 to 1023"


def _model_names() -> list[str]:
    if "convtrain.models" not in sys.modules:  # nothing can have registered a model yet: the built-ins, no torch
        from ..catalog import MODELS

        return [m["name"] for m in MODELS]
    from ..models import list_models

    return list_models()


def _dataset_names() -> list[str]:
    from ..data.sources import names  # the table of data sources is plain data: no torch

    return names()


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes
INIT_SCHEMES = ("default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "normal")


@dataclass
class ModelConfig:
    name: str = _opt("article_cnn", "registered model name (`convtrain models` lists them), or your own factory "
                     "as package.module:function", choices=_model_names)
    kwargs: dict = _opt(None, "keyword arguments for the model's constructor", factory=dict)
    init: str = _opt("default", "weight init of conv and linear layers; default = PyTorch's own",
                     choices=INIT_SCHEMES)
    file: Optional[str] = _opt(None, "a Python file of your own @register_model models, imported before model.name "
                               "is looked up (`--import` sets it; recorded as an absolute path)")


@dataclass
class AugmentConfig:
    enabled: bool = _opt(False, "random affine augmentation of training images, batched on the device")
    degrees: float = _opt(10.0, "max rotation in degrees", check=_non_negative)
    translate: float = _opt(0.1, "max shift as a fraction of the image size", check=lambda v: None if 0 <= v < 0.5 else "must be in [0, 0.5)")
    scale_min: float = _opt(0.9, "smallest random zoom factor", check=_positive)
    scale_max: float = _opt(1.1, "largest random zoom factor", check=_positive)


@dataclass
class DataConfig:
    name: str = _opt("mnist", "dataset name", choices=_dataset_names)
    root: str = _opt("data", "dataset folder (torchvision layout; --data-root and CONVTRAIN_DATA_ROOT override it); "
                     + root_help())
    download: bool = _opt(True, "download the dataset when its files are missing")
    val_size: Optional[CountOrFraction] = _opt(
        None, "training images held out (seeded) to pick best.pt when the data has no val split: a count (5000) "
        f"or a fraction (0.1); null = 5000 for mnist/fashion_mnist, 0.1 for {own_files()}")
    test_size: Optional[CountOrFraction] = _opt(
        None, f"{own_files()} without a test split: training images held out (seeded, disjoint from val) as the test "
        "set, a count or a fraction; null = 0.1. Not used when the data has its own test split")
    split_seed: Optional[int] = _opt(
        SPLIT_SEED, "seed of the held-out val/test images (and of data.test_subset's sample), separate from `seed`: "
        "runs with different seeds (--seeds) are compared on the same test images; null = `seed` (what runs saved "
        "before this key did)", check=lambda v: None if v is None or 0 <= v <= MAX_SEED else "must be 0 to 2**63-1")
    channels: int = _opt(1, f"{own_files()}: images are converted to 1 (grayscale) or 3 (RGB) channels; 1 fits MNIST "
                         "checkpoints", check=lambda v: None if v in (1, 3) else "must be 1 or 3")
    image_size: int = _opt(28, f"{own_files()}: images are padded to a square and resized to image_size x image_size",
                           check=_between(8, 512))
    skip_unreadable: bool = _opt(False, "folder/csv: skip unreadable images and malformed CSV rows (counted in the "
                                 "log and results.json) instead of refusing the run")
    cache: bool = _opt(True, "folder/csv: keep the decoded images in a cache file (CONVTRAIN_CACHE_DIR, else "
                       "~/.cache/convtrain) so the next run does not decode again")
    memory_budget_mb: int = _opt(2048, "folder: decoded images larger than this (MB) are not held in memory; the "
                                 "DataLoader path decodes them from disk per sample", check=_between(0, 1_000_000))
    train_subset: Optional[int] = _opt(None, "use only the first N shuffled training images", check=_positive)
    test_subset: Optional[int] = _opt(None, "evaluate on only the first N test images (quick checks)", check=_positive)
    mean: Optional[list[float]] = _opt(None, "normalization mean per channel; null = the dataset's own statistics")
    std: Optional[list[float]] = _opt(None, "normalization std per channel; null = the dataset's own statistics",
                                      check=lambda v: None if v is None or all(s > 0 for s in v) else "every std must be > 0")
    loader: str = _opt("auto", "tensor: decode once into one tensor on the device (fast); dataloader: torch "
                       "DataLoader with per-sample transforms and workers; auto: tensor for MNIST-style data",
                       choices=("auto", "tensor", "dataloader"))
    workers: int = _opt(2, "DataLoader worker processes (dataloader path only), at most 256", check=_between(0, MAX_WORKERS))
    sampler: str = _opt("random", "training order: random (each image once per epoch), or balanced (each draw "
                        "picks a class with equal chance, then one of its images, cycling through them: rare "
                        "classes repeat, common ones are sampled; as many draws per epoch as images)",
                        choices=("random", "balanced"))
    augment: AugmentConfig = _opt(None, "training-time augmentation", factory=AugmentConfig)


@dataclass
class EarlyStoppingConfig:
    metric: str = _opt("val_acc", "early stopping: the validation metric watched (val_loss: lower is better; "
                       "val_acc, val_macro_f1, val_balanced_acc: higher is better)",
                       choices=("val_acc", "val_loss", "val_macro_f1", "val_balanced_acc"))
    patience: Optional[int] = _opt(None, "early stopping: stop after this many epochs without improvement; "
                                   "null = off", check=_between(1, MAX_EPOCHS))
    min_delta: float = _opt(0.0, "early stopping: an improvement must beat the best by more than this",
                            check=_non_negative)


@dataclass
class EMAConfig:
    decay: Optional[float] = _opt(None, "weight EMA: ema = decay x ema + (1 - decay) x weights after every "
                                  "`every` optimizer steps; validation, best.pt and the final test use it; "
                                  "null = off", check=_fraction)
    every: int = _opt(1, "weight EMA: optimizer steps between EMA updates", check=_between(1, MAX_EPOCHS))


@dataclass
class SWAConfig:
    start: Optional[EpochOrFraction] = _opt(
        None, "stochastic weight averaging from this epoch on: an epoch (8) or a fraction of train.epochs (0.75: "
        "the last quarter); each epoch's weights enter the average, which validation, best.pt and the final "
        "test use from then on; null = off")
    lr: Optional[float] = _opt(None, "SWA learning rate, reached from the start epoch (SWALR); null = optim.lr",
                               check=_positive)
    anneal_epochs: int = _opt(1, "SWA: epochs over which the rate is annealed (cosine) to train.swa.lr; 0 = at once",
                              check=_between(0, MAX_EPOCHS))


@dataclass
class StopAtConfig:
    val_acc: Optional[float] = _opt(None, "stop after the first epoch whose validation accuracy is >= this; "
                                    "results.json records time_to_target", check=lambda v: None if 0 < v <= 1
                                    else "must be in (0, 1]")
    val_loss: Optional[float] = _opt(None, "stop after the first epoch whose validation loss is <= this",
                                     check=_positive)


@dataclass
class TrainConfig:
    epochs: int = _opt(10, "number of epochs (at most 1,000,000)", check=_between(1, MAX_EPOCHS))
    batch_size: int = _opt(64, "training batch size per process (at most 2**20); the global batch is batch_size x number "
                           "of processes", check=_between(1, MAX_BATCH))
    eval_batch_size: int = _opt(1000, "batch size for validation and test passes (at most 2**20)",
                                check=_between(1, MAX_BATCH))
    max_steps_per_epoch: Optional[int] = _opt(None, "cap on optimizer steps per epoch (quick runs); with "
                                              "train.accumulate N an epoch is then at most N x this many batches",
                                              check=_positive)
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing", check=_fraction)
    grad_clip: Optional[float] = _opt(None, "clip the global gradient norm to this value", check=_positive)
    test_every_epoch: bool = _opt(False, "also report test metrics after every epoch (never used to pick best.pt)")
    log_every: int = _opt(100, "steps between progress lines when output is not a terminal", check=_positive)
    sync_batchnorm: bool = _opt(False, "with several processes, BatchNorm statistics over the global batch (SyncBatchNorm)")
    nonfinite: str = _opt("stop", "on a NaN/inf loss: stop the run, or skip the batch", choices=("stop", "skip"))
    early_stopping: EarlyStoppingConfig = _opt(None, "early stopping", factory=EarlyStoppingConfig)
    ema: EMAConfig = _opt(None, "exponential moving average of the weights", factory=EMAConfig)
    swa: SWAConfig = _opt(None, "stochastic weight averaging (not together with train.ema)", factory=SWAConfig)
    accumulate: int = _opt(1, "gradient accumulation: one optimizer step every N batches, each batch's loss "
                           "divided by N (batch B x N trains like batch N*B)", check=_between(1, MAX_BATCH))
    max_time: Optional[float] = _opt(None, "stop at the first optimizer step after this many seconds of training "
                                     "(validation and saves not counted), then validate, save and test; "
                                     "null = no limit", check=_positive)
    stop_at: StopAtConfig = _opt(None, "stop when a validation metric reaches a target", factory=StopAtConfig)
    deterministic: bool = _opt(False, "torch.use_deterministic_algorithms (and the cuBLAS workspace setting on "
                               "CUDA): same numbers on every rerun, slower on GPUs")
    loss: str = _opt("cross_entropy", "the training loss: cross_entropy, or focal (cross-entropy scaled by "
                     "(1 - p_true)^focal_gamma: confident images count less)", choices=LOSSES)
    focal_gamma: float = _opt(2.0, "focal loss: the exponent gamma (0 = cross-entropy)", check=_non_negative)
    class_weights: Optional[ClassWeights] = _opt(
        None, "weight of each class's images in the loss: null (all 1), auto (inverse class frequency of the "
        "training split, normalized to mean 1) or {class name: weight > 0} (classes left out weigh 1)",
        check=_class_weights)
    best_metric: str = _opt("val_acc", "the validation metric that picks best.pt (higher is better): val_acc, "
                            "val_macro_f1 or val_balanced_acc (for imbalanced data)", choices=BEST_METRICS)
    calibrate: bool = _opt(False, "at the end of the run, fit a temperature on the validation split and save it in "
                           "best.pt (what `convtrain calibrate` does): probabilities that mean what they say")


@dataclass
class OptimConfig:
    name: str = _opt("adam", "optimizer", choices=("adam", "adamw", "sgd"))
    lr: float = _opt(1e-3, "learning rate", check=_positive)
    weight_decay: float = _opt(0.0, "weight decay", check=_non_negative)
    momentum: float = _opt(0.9, "SGD momentum", check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    nesterov: bool = _opt(False, "SGD Nesterov momentum")
    betas: list[float] = _opt(None, "Adam/AdamW betas", factory=lambda: [0.9, 0.999],
                              check=lambda v: None if len(v) == 2 and all(0 <= b < 1 for b in v) else "must be two numbers in [0, 1)")


@dataclass
class SchedConfig:
    name: str = _opt("none", "learning-rate schedule, stepped every optimizer step",
                     choices=("none", "step", "cosine", "onecycle"))
    step_epochs: int = _opt(3, "step: multiply the lr by gamma every this many epochs", check=_positive)
    gamma: float = _opt(0.1, "step: decay factor", check=_positive)
    min_lr: float = _opt(0.0, "cosine: final learning rate", check=_non_negative)
    warmup_epochs: float = _opt(0.0, "cosine: linear warm-up length in epochs (may be fractional)", check=_non_negative)
    pct_start: float = _opt(0.25, "onecycle: fraction of steps spent increasing the lr", check=_unit_open)


@dataclass
class SpeedConfig:
    channels_last: bool = _opt(True, "NHWC memory layout for conv models (faster on modern CPUs and GPUs)")
    amp: str = _opt("off", "mixed precision on CUDA; ignored on CPU", choices=("off", "bf16", "fp16"))
    compile: Union[bool, str] = _opt(False, "wrap the model in torch.compile: true (= default), false, or a mode: "
                                     "reduce-overhead (CUDA graphs: the tensor-resident loop on a GPU), max-autotune",
                                     check=lambda v: None if isinstance(v, bool) or v in COMPILE_MODES else
                                     f"must be true, false or one of: {', '.join(COMPILE_MODES)}{did_you_mean(v, COMPILE_MODES)}")
    threads: Optional[int] = _opt(None, "CPU threads for torch (at most 4096); null = PyTorch's choice",
                                  check=_between(1, MAX_THREADS))
    eval_chunk: Optional[int] = _opt(None, "evaluate each batch in pieces of at most N images (same numbers, faster "
                                     "on CPUs); null = 64 on a CPU, whole batches on a GPU", check=_between(1, MAX_BATCH))


@dataclass
class LogConfig:
    tensorboard: bool = _opt(False, "TensorBoard event files in RUN/tensorboard (needs: pip install 'convtrain[tensorboard]')")
    tensorboard_every: int = _opt(1, "steps between TensorBoard points of the training loss and lr", check=_positive)
    plots: bool = _opt(True, "write curves.png and confusion.png at the end of a run (needs matplotlib)")
    mlflow: bool = _opt(False, "log params, per-epoch metrics, results.json and best.pt to MLflow (rank 0 only; "
                        "needs: pip install 'convtrain[mlflow]')")
    mlflow_uri: Optional[str] = _opt(None, "MLflow tracking URI; null = MLFLOW_TRACKING_URI, else a local mlruns/ "
                                     "file store")
    wandb: bool = _opt(False, "log the config, per-epoch metrics and the final test numbers to Weights & Biases, "
                       "files in RUN/wandb (rank 0 only; needs: pip install 'convtrain[wandb]')")
    wandb_project: str = _opt("convtrain", "W&B project name")
    wandb_mode: Optional[str] = _opt(None, "W&B mode: online, offline (nothing leaves the machine; `wandb sync` "
                                     "later) or disabled; null = WANDB_MODE, else W&B's default",
                                     check=lambda v: None if v in (None, "online", "offline", "disabled")
                                     else "must be online, offline, disabled or null")
    wandb_log_model: bool = _opt(False, "also upload checkpoints/best.pt to W&B as a model artifact at the end")


@dataclass
class CheckpointConfig:
    keep_top_k: int = _opt(0, "also keep the K best epochs by validation accuracy as checkpoints/epoch-NNN.pt "
                           "(0 = none)", check=_between(0, MAX_EPOCHS))
    every_n_epochs: Optional[int] = _opt(None, "also keep every N-th epoch as checkpoints/epoch-NNN.pt; null = none",
                                         check=_between(1, MAX_EPOCHS))


@dataclass
class FinetuneConfig:
    checkpoint: Optional[str] = _opt(None, "pretrained checkpoint; `convtrain finetune --checkpoint` sets it")
    freeze: list[str] = _opt(None, "parameter-name prefixes to freeze, e.g. [backbone] (all but the head)", factory=list)
    head_lr: Optional[float] = _opt(None, "learning rate of the head; null = optim.lr", check=_positive)
    backbone_lr: Optional[float] = _opt(None, "learning rate of everything else; null = optim.lr", check=_positive)
    reinit_head: str = _opt("auto", "auto: re-initialise the head when the classes differ (their count or their names)",
                            choices=("auto", "always", "never"))


@dataclass
class RunConfig:
    name: Optional[str] = _opt(None, "run name used for runs/<name>-<timestamp>; null = the config file's name")
    seed: int = _opt(0, "random seed, 0 to 2**63-1; each process uses seed + rank", check=_between(0, MAX_SEED))
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N or mps",
                       check=lambda v: None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) else "must be auto, cpu, cuda, cuda:N or mps")
    devices: Optional[list[int]] = _opt(None, "GPU indices for the processes of this machine (local rank i uses devices[i]); null = local rank i uses GPU i",
                                        check=_devices)
    dist_timeout: int = _opt(300, "seconds a process waits for the others (rendezvous and every collective) before failing with a message naming the missing ranks (at most a week)",
                             check=_between(1, 7 * 24 * 3600))
    out_dir: str = _opt("runs", "parent folder of default run directories")
    model: ModelConfig = _opt(None, "model", factory=ModelConfig)
    data: DataConfig = _opt(None, "data", factory=DataConfig)
    train: TrainConfig = _opt(None, "training loop", factory=TrainConfig)
    optim: OptimConfig = _opt(None, "optimizer", factory=OptimConfig)
    sched: SchedConfig = _opt(None, "learning-rate schedule", factory=SchedConfig)
    speed: SpeedConfig = _opt(None, "speed options", factory=SpeedConfig)
    log: LogConfig = _opt(None, "optional outputs: TensorBoard, plots, MLflow", factory=LogConfig)
    checkpoint: CheckpointConfig = _opt(None, "checkpoints kept besides best.pt and last.pt", factory=CheckpointConfig)
    finetune: FinetuneConfig = _opt(None, "fine-tuning (used by `convtrain finetune`)", factory=FinetuneConfig)


# ---------------------------------------------------------------------------------------------
# Building a typed config from plain data


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in args)
        return f"{names} or null" if type(None) in typing.get_args(tp) else names
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, (CountOrFraction, ClassWeights)):
        return tp.name
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "mapping"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, path: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (ints to floats...)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, path, where)
    name = _type_name(tp)
    article = "an" if name[0] in "aeiou" else "a"

    def bad() -> ConfigError:  # built only on failure: the repr of a huge value is shortened
        return ConfigError(f"{where}: '{path}' must be {article} {name}, got {type(value).__name__} {shown(value)}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return _build(tp, value, path, where)
    if isinstance(tp, type) and issubclass(tp, CountOrFraction):
        return _count_or_fraction(value, path, where, tp)
    if tp is ClassWeights:
        return _class_weights_value(value, path, where)
    if origin is list:
        if not isinstance(value, list):
            raise bad()
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{path}[{i}]", where) for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad()
        return dict(value)
    if tp in _SCALARS:
        return _SCALARS[tp](value, path, where, bad)
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in the schema, not user input


def _coerce_union(value: Any, tp: Any, path: str, where: str) -> Any:
    """``Optional[X]`` takes None or an X; ``Union[bool, str]`` the first type that takes the value as it is."""
    if value is None and type(None) in typing.get_args(tp):
        return None
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(inner) > 1:
        for option in inner:
            if option is bool and isinstance(value, bool) or option is str and isinstance(value, str):
                return _coerce(value, option, path, where)
        raise ConfigError(f"{where}: '{path}' must be a {_type_name(tp)}, got {type(value).__name__} {shown(value)}")
    return _coerce(value, inner[0], path, where)


def _coerce_bool(value: Any, path: str, where: str, bad: Callable[[], ConfigError]) -> bool:
    if not isinstance(value, bool):
        raise bad()
    return value


def _coerce_int(value: Any, path: str, where: str, bad: Callable[[], ConfigError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad()
    if not -2**63 <= value < 2**63:
        raise ConfigError(f"{where}: '{path}' is {shown(value)}, outside the 64-bit integer range")
    return value


def _coerce_float(value: Any, path: str, where: str, bad: Callable[[], ConfigError]) -> float:
    # PyYAML reads `1e-3` (no dot) as a string; accept plain numerals written that way.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad()
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{where}: '{path}' must be a finite number, got {value}")
    return value


def _coerce_str(value: Any, path: str, where: str, bad: Callable[[], ConfigError]) -> str:
    if not isinstance(value, str):
        raise bad()
    if "\0" in value:  # file names and device strings cannot hold one; the OS would raise later
        raise ConfigError(f"{where}: '{path}' contains a NUL character (\\0): {shown(value)}")
    return value


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _count_or_fraction(value: Any, path: str, where: str, kind: type[CountOrFraction] = CountOrFraction) -> int | float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: '{path}' must be {kind.what}, got {type(value).__name__} {shown(value)}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{where}: '{path}' must be {kind.whole} >= 1 or a fraction in (0, 1), got {value}")
        if value >= 2**63:  # refused here, as every integer key is, not only once the files are read
            raise ConfigError(f"{where}: '{path}' is {shown(value)}, outside the 64-bit integer range")
        return value
    if not (math.isfinite(value) and 0 < value < 1):
        raise ConfigError(f"{where}: '{path}' is {value!r}: a fraction must be in (0, 1), and {kind.whole} is a "
                          f"whole number written without a dot (e.g. {kind.example})")
    return value


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def key_paths(cls: type = None, prefix: str = "") -> list[str]:
    """Every key path of the schema, sections and leaves (``optim``, ``optim.lr``...), in schema order."""
    cls = RunConfig if cls is None else cls
    paths = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        paths.append(path)
        tp = _field_types(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            paths += key_paths(tp, path)
    return paths


def suggest_key(path: str) -> str:
    """``" (did you mean 'optim.lr'?)"`` for an unknown key path, across sections: the same leaf name
    under another section first (``train.lr`` -> ``optim.lr``), else the closest leaf name of any
    section (a tie goes to the key's own section)."""
    import difflib

    known = key_paths()
    parent, _, leaf = path.rpartition(".")
    same_leaf = [k for k in known if k.rpartition(".")[2] == leaf and k != path]
    # a feature's own setting (train.swa.lr) yields to a section's (optim.lr): train.lr means optim.lr
    if any(k.count(".") <= 1 for k in same_leaf):
        same_leaf = [k for k in same_leaf if k.count(".") <= 1]
    if len(same_leaf) == 1:
        return f" (did you mean '{same_leaf[0]}'?)"
    if same_leaf:
        return f" (did you mean one of: {', '.join(same_leaf)}?)"
    def closeness(k: str) -> float:
        other = k.rpartition(".")[2]
        prefix = len(leaf) >= 3 and (other.startswith(leaf) or leaf.startswith(other))  # warmup: warmup_epochs
        return (difflib.SequenceMatcher(None, leaf, other).ratio() + (0.3 if prefix else 0)
                + (0.01 if k.rpartition(".")[0] == parent else 0))

    score = {k: closeness(k) for k in known}
    best = max(score, key=score.get)
    return f" (did you mean '{best}'?)" if score[best] >= 0.6 else ""


def _build(cls: type, raw: dict, prefix: str, where: str) -> Any:
    hints = _field_types(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{path}'{suggest_key(path)}")
        values[key] = _coerce(value, hints[key], path, where)
    return cls(**values)


def _check_values(obj: Any, prefix: str, where: str) -> None:
    """Run each field's range check and choice list, recursively."""
    for f in dataclasses.fields(obj):
        path = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_values(value, path, where)
            continue
        choices = f.metadata.get("choices")
        if choices is not None and value is not None:
            options = list(choices() if callable(choices) else choices)
            if value not in options:
                raise ConfigError(f"{where}: '{path}' is '{value}', not one of: {', '.join(options)}"
                                  f"{did_you_mean(value, options)}")
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{where}: '{path}' {problem}, got {value!r}")


def _check_cross(cfg: RunConfig, where: str) -> None:
    """Rules that involve more than one key."""
    if (cfg.data.mean is None) != (cfg.data.std is None):
        raise ConfigError(f"{where}: set both 'data.mean' and 'data.std', or neither")
    if cfg.data.mean is not None and len(cfg.data.mean) != len(cfg.data.std):
        raise ConfigError(f"{where}: 'data.mean' and 'data.std' must have the same length")
    if cfg.data.augment.scale_min > cfg.data.augment.scale_max:
        raise ConfigError(f"{where}: 'data.augment.scale_min' must be <= 'data.augment.scale_max'")
    from ..data.sources import get as get_source
    from ..models import check_model_kwargs

    # a registered dataset's own shape (data.channels/image_size must leave it alone); the user's files:
    # data.channels x data.image_size^2, classes known once the files are read (2 is the fewest allowed)
    image_shape, num_classes = get_source(cfg.data.name).input_spec(cfg.data, where)
    channels = image_shape[0]
    if cfg.data.mean is not None and len(cfg.data.mean) not in (1, channels):
        raise ConfigError(f"{where}: 'data.mean' and 'data.std' have {len(cfg.data.mean)} values but dataset "
                          f"'{cfg.data.name}' has {channels} channel(s); give 1 or {channels} values")
    # model.kwargs: types and ranges, then a dry build on the meta device for this dataset's images
    check_model_kwargs(cfg.model.name, cfg.model.kwargs, where, num_classes=num_classes,
                       input_shape=image_shape, init=cfg.model.init)


def from_dict(raw: dict, where: str = "config", *, cross: bool = True) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data (a parsed YAML mapping). ``cross=False``
    leaves out the checks that involve several keys and the model (a dry build, which imports torch):
    the keys, types and values alone, for refusing a mistake before torch loads."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, got {type(raw).__name__}")
    cfg = _build(RunConfig, raw, "", where)
    if cfg.model.file or ":" in cfg.model.name:  # the user's own model: imported before its name is checked
        from ..models.user import load_user_models

        cfg.model.file = load_user_models(cfg.model.name, cfg.model.file, where)
    _check_values(cfg, "", where)
    _check_swa(cfg.train, where)
    if cross:
        _check_cross(cfg, where)
    return cfg


def _check_swa(t: TrainConfig, where: str) -> None:
    """SWA and EMA both replace the evaluated model: one at a time. An SWA start after the last epoch
    would average nothing."""
    if t.swa.start is None:
        return
    if t.ema.decay is not None:
        raise ConfigError(f"{where}: 'train.swa' and 'train.ema' both average the weights; set one of them "
                          f"(train.ema.decay=null or train.swa.start=null)")
    if isinstance(t.swa.start, int) and t.swa.start > t.epochs:
        raise ConfigError(f"{where}: 'train.swa.start' is epoch {t.swa.start}, after the last epoch "
                          f"(train.epochs {t.epochs}); SWA would average nothing")


def held_out_seed(cfg: RunConfig) -> int:
    """The seed that picks the held-out val/test images: ``data.split_seed``, else (null) ``seed``."""
    return cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed


def saved_raw(raw: dict) -> dict:
    """A config saved by a run (config.yaml, a checkpoint) as it meant it: one saved before
    ``data.split_seed`` existed held out its images with ``seed``, so its split_seed is null."""
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict) and "split_seed" not in raw["data"]:
        return {**raw, "data": {**raw["data"], "split_seed": None}}
    return raw


def to_dict(cfg: RunConfig) -> dict:
    """The config as plain data (what config.yaml and checkpoints store)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
