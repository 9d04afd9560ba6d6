"""Decoder LMs (Hugging Face causal LMs) and their checkpoint directories."""

from .checkpoint import existing_checkpoint, load_checkpoint, publish_dir, save_checkpoint, write_checkpoint
from .decoder import (
    ARCHITECTURES,
    PRESETS,
    ModelConfig,
    Preset,
    build_model,
    count_parameters,
    eval_mode,
    max_positions,
    resize_embeddings,
    resolve_preset,
)

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "ModelConfig",
    "Preset",
    "build_model",
    "count_parameters",
    "eval_mode",
    "existing_checkpoint",
    "load_checkpoint",
    "max_positions",
    "publish_dir",
    "resize_embeddings",
    "resolve_preset",
    "save_checkpoint",
    "write_checkpoint",
]
