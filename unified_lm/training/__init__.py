"""The training loop every recipe runs through, its shared config sections and its resumable state."""

from .loop import Micro, Task, TrainingRecipe, adamw, fit, optimizer_step, train_only
from .sections import CheckpointConfig, EvalConfig, OptimConfig, PhaseConfig, TrainingConfig

__all__ = ["CheckpointConfig", "EvalConfig", "Micro", "OptimConfig", "PhaseConfig", "Task", "TrainingConfig", "TrainingRecipe", "adamw", "fit", "optimizer_step", "train_only"]
