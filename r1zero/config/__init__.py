"""The training configuration: ``TrainConfig`` (fields.py, every key with its help), the checks that
need more than a type (checks.py), and reading YAML recipes and ``key=value`` overrides (files.py)."""
from r1zero.config.checks import validate
from r1zero.config.fields import DEFAULT_RECIPE, TrainConfig
from r1zero.config.files import (config_reference, defaults, field_types, load_config, parse_override,
                                 parse_overrides, read_config_file, recipe_names, recipe_path, save_config)
from r1zero.errors import ConfigError

__all__ = ["ConfigError", "DEFAULT_RECIPE", "TrainConfig", "config_reference", "defaults", "field_types",
           "load_config", "parse_override", "parse_overrides", "read_config_file", "recipe_names", "recipe_path",
           "save_config", "validate"]
