"""Waveform augmentation.

Speed perturbation (Ko et al. 2015) as used by the SLD reference recipe: every training
utterance is also discretized at 0.9x and 1.1x speed, which changes duration and pitch
together, so the tokenizer and the decoder see three versions of each voice.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF

from ..errors import ConfigError
from .load import SAMPLE_RATE

SPEED_FACTORS = (0.9, 1.0, 1.1)


def speed_perturb(wav: torch.Tensor, factor: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Plays ``wav`` ``factor`` times faster; the result has about ``len / factor`` samples."""
    if factor <= 0:
        raise ConfigError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return wav
    out, _ = AF.speed(wav.reshape(1, -1), sample_rate, factor)
    return out.reshape(-1)
