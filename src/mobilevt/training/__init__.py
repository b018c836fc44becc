"""Training: typed YAML configs, the multi-scale training loop, checkpoints and resume."""

from .config import ConfigError, TrainConfig, builtin_recipes, load_config
from .task_registry import register_task
from .trainer import TrainingError, TrainResult, train, warmup_cosine

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "builtin_recipes",
    "load_config",
    "register_task",
    "train",
    "warmup_cosine",
]
