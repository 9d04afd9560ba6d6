"""The training loop every recipe runs through, its shared config sections and its resumable state."""

from .loop import Micro, Task, TrainingRecipe, adamw, fit, optimizer_step
from .sections import CheckpointConfig, EvalConfig, OptimConfig, TrainingConfig

__all__ = ["CheckpointConfig", "EvalConfig", "Micro", "OptimConfig", "Task", "TrainingConfig", "TrainingRecipe", "adamw", "fit", "optimizer_step"]
