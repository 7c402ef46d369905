"""convtrain: train, evaluate and fine-tune convolutional networks on MNIST-style data.

The command line (``convtrain ...``) is a thin layer over this package; everything it does is
importable: :func:`load_config` and :func:`run` for a training run, :func:`evaluate_checkpoint`
for evaluation, the model registry, and the from-scratch convolution in :mod:`convtrain.ops`.
"""

__version__ = "0.1.0"

from .config import RunConfig, load_config  # noqa: E402
from .errors import CheckpointError, ConfigError, ConvtrainError, DataError  # noqa: E402
from .models import create_model, list_models, register_model  # noqa: E402

__all__ = ["CheckpointError", "ConfigError", "ConvtrainError", "DataError", "RunConfig", "__version__",
           "create_model", "list_models", "load_config", "register_model"]
