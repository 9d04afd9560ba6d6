"""The prefix LM (the continuous path): Conformer encoder, bridges, spectrogram head, prefix LM."""

from .bridge import BRIDGES, BridgeConfig, build_bridge, ctc_compress
from .encoder import EncoderConfig, PrefixEncoder, SpecAugmentConfig, length_mask
from .model import Kind, PackedBatch, PrefixLM, PrefixModelConfig, SpectronPrediction
from .spectrogram import SpectrogramHeadConfig

__all__ = [
    "BRIDGES",
    "BridgeConfig",
    "EncoderConfig",
    "Kind",
    "PackedBatch",
    "PrefixEncoder",
    "PrefixLM",
    "PrefixModelConfig",
    "SpecAugmentConfig",
    "SpectrogramHeadConfig",
    "SpectronPrediction",
    "build_bridge",
    "ctc_compress",
    "length_mask",
]
