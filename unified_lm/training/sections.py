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
class PhaseConfig:
    """A stretch of training that updates only some parts of the model, with its own
    AdamW and its own warm-up and decay (SLAM-LLM and Hono et al. first train only the
    bridge between two pre-trained halves, then everything at a lower learning rate)."""

    steps: int | None = None  # optimizer steps; None (the last phase only): until optim.max_steps
    # Top-level parts (the model's child modules: "encoder", "bridge", "decoder", ...) or
    # dotted parameter-name prefixes; ["all"]: every parameter.
    train: list[str] = field(default_factory=lambda: ["all"])
    freeze: list[str] = field(default_factory=list)  # parts kept as they are, even inside `train`
    lr: float | None = None  # peak learning rate of the phase; None: optim.lr

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"phases: steps must be >= 1 (or null for the last phase), got {self.steps}")
        if not self.train:
            raise ConfigError("phases: train names no part; use [all] to train everything")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"phases: lr must be > 0, got {self.lr}")


@dataclass
class SpeedConfig:
    """How fast a step runs, not what it learns (left out of the loss grid's cache hashes)."""

    # A torch.compile backend ("inductor"); null: accelerate launch's --dynamo_backend (none
    # without one). The first steps pay for compiling; it pays back on long runs on a GPU.
    compile: str | None = None
    # Recompute each layer's activations in the backward pass: about a third more compute
    # for much less memory (longer sequences, bigger batches). Hugging Face models only.
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class Phase:
    """A resolved phase: which steps ``[start, end)`` it covers and what it trains."""

    index: int
    start: int
    end: int
    train: tuple[str, ...]
    freeze: tuple[str, ...]
    lr: float


@dataclass
class TrainingConfig:
    """The keys of every recipe: the loop reads these and nothing else."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Empty: one phase that trains everything. Else consecutive phases, e.g.
    # [{steps: 300, train: [bridge, projector]}, {lr: 5.0e-4}], or [{freeze: [encoder]}]
    phases: list[PhaseConfig] = field(default_factory=list)
    # null: accelerate launch's --mixed_precision (fp32 without one); set, it wins. CUDA only.
    precision: Literal["no", "bf16", "fp16"] | None = None
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    log_every_steps: int = 10
    seed: int = 0
    out_dir: str = "runs/train"

    def __post_init__(self):
        if self.log_every_steps < 1:
            raise ConfigError(f"log_every_steps: must be >= 1, got {self.log_every_steps}")
        if any(p.steps is None for p in self.phases[:-1]):
            raise ConfigError("phases: every phase but the last needs steps")
        self.resolved_phases()  # checks that they fit in optim.max_steps

    def resolved_phases(self) -> list[Phase]:
        max_steps = self.optim.max_steps
        phases = self.phases or [PhaseConfig()]
        out, start = [], 0
        for i, p in enumerate(phases):
            end = max_steps if p.steps is None else start + p.steps
            out.append(Phase(i, start, end, tuple(p.train), tuple(p.freeze), self.optim.lr if p.lr is None else p.lr))
            start = end
        if start != max_steps or any(p.end <= p.start for p in out):
            raise ConfigError(
                f"phases: their steps ({[p.steps for p in phases]}) must add up to optim.max_steps ({max_steps}), "
                "the last one may be null to take what is left"
            )
        return out

    def phase_at(self, step: int) -> Phase:
        """The phase that takes optimizer step ``step`` (0-based)."""
        phases = self.resolved_phases()
        return next((p for p in phases if p.start <= step < p.end), phases[-1])
