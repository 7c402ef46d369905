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
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, did_you_mean

# Supplied by the dataset, never by model.kwargs.
DATA_ARGS = ("num_classes", "in_channels", "input_size")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    description: str

    def kwarg_defaults(self) -> dict:
        """The factory's own keyword arguments and their defaults (data arguments excluded)."""
        params = inspect.signature(self.factory).parameters
        return {k: p.default for k, p in params.items() if k not in DATA_ARGS and p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str) -> Callable:
    """Decorator: register ``factory`` under ``name``. A second registration of a name raises."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name '{name}' is already registered (by {_REGISTRY[name].factory.__module__})")
        params = inspect.signature(factory).parameters
        missing = [a for a in DATA_ARGS if a not in params]
        if missing:
            raise TypeError(f"model factory '{name}' must accept {', '.join(missing)}")
        _REGISTRY[name] = ModelSpec(name, factory, description)
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


def check_model_kwargs(name: str, kwargs: dict, where: str = "config") -> None:
    """Raise ConfigError if ``kwargs`` holds a name the model's factory does not take."""
    spec = get_spec(name)
    allowed = spec.kwarg_defaults()
    for key in kwargs:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            options = ", ".join(allowed) or "none"
            raise ConfigError(f"{where}: 'model.kwargs.{key}' is not an argument of model '{name}'{hint}; "
                              f"it takes: {options}")


def create_model(name: str, num_classes: int, in_channels: int = 1, input_size: tuple[int, int] = (28, 28),
                 **kwargs) -> nn.Module:
    """Build a registered model. Raises ConfigError for an unknown name or keyword argument."""
    check_model_kwargs(name, kwargs)
    try:
        return get_spec(name).factory(num_classes=num_classes, in_channels=in_channels,
                                      input_size=tuple(input_size), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model '{name}' cannot be built with {kwargs}: {exc}") from None
