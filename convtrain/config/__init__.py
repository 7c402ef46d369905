"""Configs: the typed schema, YAML read within safety limits, precedence, recipes, the generated reference.

The public names are re-exported here (``from convtrain.config import load_config, RunConfig``);
inside the package each module imports from the module that defines a name. Nothing here
imports torch.
"""

from .load import apply_overrides, load_config, parse_override, resolve_config_path
from .reference import markdown_reference, schema_rows
from .schema import (
                     INIT_SCHEMES,
                     MAX_SEED,
                     CheckpointConfig,
                     DataConfig,
                     LogConfig,
                     ModelConfig,
                     OptimConfig,
                     RunConfig,
                     SchedConfig,
                     SpeedConfig,
                     TrainConfig,
                     from_dict,
                     to_dict,
                     to_yaml,
)
from .yamlsafe import parse_yaml, read_yaml

__all__ = ["INIT_SCHEMES", "MAX_SEED", "CheckpointConfig", "DataConfig", "LogConfig", "ModelConfig", "OptimConfig",
           "RunConfig", "SchedConfig", "SpeedConfig", "TrainConfig", "apply_overrides", "from_dict", "load_config",
           "markdown_reference", "parse_override", "parse_yaml", "read_yaml", "resolve_config_path", "schema_rows",
           "to_dict", "to_yaml"]
