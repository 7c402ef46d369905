"""The model registry: names are the API.

A model family registers small named presets over one constructor (``@register_model``); YAML
refers to them by ``model.name``. Every registered factory is called as
``factory(num_classes=..., in_channels=..., input_size=..., **kwargs)`` and returns a
:class:`~convtrain.models.base.Classifier`, so fine-tuning and evaluation are generic.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, did_you_mean, shown
from . import shapes

# Supplied by the dataset, never by model.kwargs.
DATA_ARGS = ("num_classes", "in_channels", "input_size")

# A model bigger than this (4 GB of float32 weights, before gradients and optimizer state) is
# almost certainly a typo in a width; refusing it beats swapping the machine to death.
MAX_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class Arg:
    """What one keyword argument of a model accepts: its type and range, or its choices.

    ``low``/``high`` are inclusive; ``high_open`` makes the upper end exclusive (dropout < 1).
    """

    type: type
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif self.type is object:
            ok = True
        else:
            ok = isinstance(value, self.type) and not (self.type is int and isinstance(value, bool))
        if not ok:
            return f"must be {'an' if self.type is int else 'a'} {self.type.__name__}, got {type(value).__name__} {shown(value)}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {shown(value)}{did_you_mean(value, self.choices)}"
        if self.type is float and value != value:
            return "must be a number, got nan"
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if (self.low is not None and value < self.low) or above:  # low is set whenever high is
            high = "inf" if self.high is None else f"{self.high:,}"
            return f"must be in [{self.low:,}, {high}{')' if self.high_open else ']'}, got {shown(value)}"
        return None


def width(high: int) -> Arg:
    """A layer width: a positive integer up to ``high``."""
    return Arg(int, 1, high)


DROPOUT = Arg(float, 0.0, 1.0, high_open=True)
CONV = Arg(str, choices=("torch", "scratch"))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    description: str
    args: dict[str, Arg] = field(default_factory=dict)  # what each keyword argument accepts

    def kwarg_defaults(self) -> dict:
        """The factory's own keyword arguments and their defaults (data arguments excluded)."""
        params = inspect.signature(self.factory).parameters
        return {k: p.default for k, p in params.items() if k not in DATA_ARGS and p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str, args: dict[str, Arg] | None = None) -> Callable:
    """Decorator: register ``factory`` under ``name``. A second registration of a name raises.

    ``args`` declares what each of the factory's own keyword arguments accepts, so ``model.kwargs``
    is checked when the config is loaded, before anything runs; an undeclared argument must at
    least have the type of its default.
    """

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name '{name}' is already registered (by {_REGISTRY[name].factory.__module__})")
        params = inspect.signature(factory).parameters
        missing = [a for a in DATA_ARGS if a not in params]
        if missing:
            raise TypeError(f"model factory '{name}' must accept {', '.join(missing)}")
        declared = dict(args or {})
        unknown = [k for k in declared if k not in params]
        if unknown:
            raise TypeError(f"model factory '{name}' has no keyword argument(s) {', '.join(unknown)}")
        for key, p in params.items():  # undeclared: at least the type of the default
            if key not in DATA_ARGS and key not in declared and p.default is not inspect.Parameter.empty:
                declared[key] = Arg(type(p.default) if isinstance(p.default, (bool, int, float, str)) else object)
        _REGISTRY[name] = ModelSpec(name, factory, description, declared)
        return factory

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell-style filter such as ``'article*'``."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'{did_you_mean(name, _REGISTRY)}; "
                          f"registered: {', '.join(list_models())}") from None


def check_model_kwargs(name: str, kwargs: dict, where: str = "config", *, num_classes: int | None = None,
                       input_shape: tuple[int, int, int] | None = None, init: str = "default") -> None:
    """Raise ConfigError naming ``model.kwargs.<key>`` if ``kwargs`` does not fit model ``name``.

    Each value is checked against the model's declared :class:`Arg` (type, range, choices). With
    ``input_shape`` (channels, height, width) the model is also built on PyTorch's meta device
    (shapes only, no memory) and run on one image, so arguments that make the feature map vanish,
    or a model too large to hold, are refused when the config is loaded, before any run starts.
    """
    spec = get_spec(name)
    for key, value in kwargs.items():
        if key not in spec.args:
            hint = did_you_mean(key, spec.args)
            options = ", ".join(spec.args) or "none"
            raise ConfigError(f"{where}: 'model.kwargs.{key}' is not an argument of model '{name}'{hint}; "
                              f"it takes: {options}")
        problem = spec.args[key].problem(value)
        if problem:
            raise ConfigError(f"{where}: 'model.kwargs.{key}' {problem} (model '{name}')")
    if input_shape is not None:
        _dry_build(spec, kwargs, where, num_classes or 10, input_shape, init)


def _dry_build(spec: ModelSpec, kwargs: dict, where: str, num_classes: int, input_shape: tuple[int, int, int],
               init: str) -> None:
    from .init import apply_init

    c, h, w = input_shape
    given = ", ".join(f"model.kwargs.{k}={v!r}" for k, v in kwargs.items()) or "default model.kwargs"
    try:
        with torch.device("meta"):
            model = spec.factory(num_classes=num_classes, in_channels=c, input_size=(h, w), **kwargs)
            apply_init(model, init)
            model.eval()  # BatchNorm: one image is fine outside training mode
            try:  # the head contract: backbone features -> head; worked out without running meta kernels
                shapes.output_shape(model.head, shapes.output_shape(model.backbone, (c, h, w)))
            except (shapes.Unknown, AttributeError):
                model(torch.zeros(1, c, h, w))
    except Exception as exc:  # anything the factory raises means: this model cannot exist
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: model '{spec.name}' cannot be built for {c}x{h}x{w} images with {given}: "
                          f"{detail}; change those model.kwargs") from None
    broken = head_problem(model, num_classes)
    if broken:
        raise ConfigError(f"{where}: model '{spec.name}' breaks the head contract: {broken}")
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise ConfigError(f"{where}: model '{spec.name}' with {given} has {n:,} parameters, more than the "
                          f"{MAX_PARAMETERS:,} limit; use smaller widths")


def head_problem(model: nn.Module, num_classes: int) -> str | None:
    """Why ``model`` breaks the head contract fine-tuning, freezing and the exports rely on, or None."""
    from .base import Classifier

    if not isinstance(model, Classifier):
        return (f"the factory returned {type(model).__name__}, not a convtrain.models.Classifier (a backbone "
                "to flat features, then one nn.Linear head): return Classifier(backbone, num_features, num_classes)")
    if not isinstance(model.head, nn.Linear) or model.head.out_features != num_classes:
        got = f"{model.head.out_features} outputs" if isinstance(model.head, nn.Linear) else type(model.head).__name__
        return f"its head must be one nn.Linear with num_classes={num_classes} outputs, got {got}"
    return None


def create_model(name: str, num_classes: int, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
                 **kwargs) -> nn.Module:
    """Build a registered model. Raises ConfigError for an unknown name or keyword argument."""
    check_model_kwargs(name, kwargs)
    try:
        return get_spec(name).factory(num_classes=num_classes, in_channels=in_channels,
                                      input_size=tuple(input_size), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model '{name}' cannot be built with {kwargs}: {exc}") from None
