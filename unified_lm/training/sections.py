"""Config sections every training recipe shares, and the base every recipe config extends.

A recipe config (``recipes/configs.py``) adds its own ``data``, ``model`` and loss sections
and may give these sections other defaults; their meaning and checks stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.1  # on matrices only, not on biases, norms or gains
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 200
    schedule: Literal["linear", "cosine", "constant"] = "cosine"  # all after a linear warm-up
    max_steps: int = 2000  # optimizer steps
    grad_accum: int = 1  # micro-batches per optimizer step
    clip_norm: float = 1.0  # 0 disables clipping

    def __post_init__(self):
        for name in ("max_steps", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError(
                f"optim.lr must be > 0, optim.weight_decay and optim.warmup_steps >= 0; "
                f"got {self.lr}, {self.weight_decay}, {self.warmup_steps}"
            )
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: expected two values, got {self.betas}")


@dataclass
class EvalConfig:
    every_steps: int = 500  # also writes out_dir/last
    max_utts: int = 200  # the first N utterances of data.dev
    batch_size: int = 32

    def __post_init__(self):
        for name in ("every_steps", "max_utts", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name}: must be >= 1, got {getattr(self, name)}")


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # out_dir/last; also written at every evaluation and at the end

    def __post_init__(self):
        if self.every_steps < 1:
            raise ConfigError(f"checkpoint.every_steps: must be >= 1, got {self.every_steps}")


@dataclass
class TrainingConfig:
    """The keys of every recipe: the loop reads these and nothing else."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    precision: Literal["no", "bf16", "fp16"] = "no"  # mixed precision is used on CUDA only
    log_every_steps: int = 10
    seed: int = 0
    out_dir: str = "runs/train"

    def __post_init__(self):
        if self.log_every_steps < 1:
            raise ConfigError(f"log_every_steps: must be >= 1, got {self.log_every_steps}")
