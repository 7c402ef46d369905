"""Model registry and the registered families (importing this package registers them)."""

from . import bn_cnn, cnn, fast_cnn, lenet  # noqa: F401  (imported to register their models)
from .base import Classifier
from .init import apply_init
from .registry import Arg, ModelSpec, check_model_kwargs, create_model, get_spec, list_models, register_model

__all__ = ["Arg", "Classifier", "ModelSpec", "apply_init", "check_model_kwargs", "create_model", "get_spec",
           "list_models", "register_model"]
