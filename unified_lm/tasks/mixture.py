"""Sampling a task for each utterance from a weighted mixture (e.g. ``{asr: 0.7, tts: 0.3}``)."""

from __future__ import annotations

import math
import random

from ..corpus.manifest import UnitRecord
from ..errors import ConfigError
from ..vocab import UnifiedVocab
from .templates import TASKS, TaskConfig, TokenSequence


class TaskMixture:
    """Turns each utterance into the sequence of a task drawn with the configured weights."""

    def __init__(self, cfg: TaskConfig, vocab: UnifiedVocab):
        _check(cfg)
        for name in cfg.mixture:
            TASKS.get(name)  # ConfigError listing the known tasks
            vocab.task_id(name)  # ConfigError when the vocabulary lacks the task token
        chosen = {name: w for name, w in cfg.mixture.items() if w > 0}
        self.cfg = cfg
        self.vocab = vocab
        self.names = list(chosen)
        self.weights = list(chosen.values())

    def sample(self, record: UnitRecord, rng: random.Random) -> TokenSequence:
        name = rng.choices(self.names, weights=self.weights)[0]
        return TASKS.get(name)(record, self.vocab, self.cfg)

    def probabilities(self) -> dict[str, float]:
        total = sum(self.weights)
        return {name: w / total for name, w in zip(self.names, self.weights)}


def _check(cfg: TaskConfig) -> None:
    if not cfg.mixture:
        raise ConfigError("tasks.mixture is empty; give at least one task with a positive weight")
    bad = {k: w for k, w in cfg.mixture.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ConfigError(f"tasks.mixture weights must be finite and >= 0, got {bad}")
    if sum(cfg.mixture.values()) <= 0:
        raise ConfigError(f"tasks.mixture has no task with a positive weight: {cfg.mixture}")
    if cfg.max_text_tokens < 0:
        raise ConfigError(f"tasks.max_text_tokens must be >= 0, got {cfg.max_text_tokens}")
    if cfg.max_speech_tokens is not None and cfg.max_speech_tokens < 1:
        raise ConfigError(f"tasks.max_speech_tokens must be >= 1 or null, got {cfg.max_speech_tokens}")
