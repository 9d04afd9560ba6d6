"""The continuous path (Spectron; HuBERT+LLM ASR): a speech-encoder prefix into the decoder,
text and log-mel spectrogram frames in one teacher-forced sequence.

- ``train_prefix_lm``: Spectron training of the prefix LM (``continuous.train``);
- ``pretrain_ctc``: CTC pre-training of its encoder (``continuous.ctc``);
- ``pretrain_text_lm``: text-LM pre-training of its decoder (``continuous.textlm``);
- ``continue_speech`` and ``decode_prefix_asr``: inference (``continuous.infer``).

The names are imported on first use (PEP 562): ``python -m unified_lm.continuous.train``
(and ``.ctc``, ``.textlm``) then runs its module once, as ``__main__``, instead of after
the package has already imported it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CTCPretrainConfig": "config",
    "OptimConfig": "config",
    "PrefixDataConfig": "config",
    "PrefixTrainConfig": "config",
    "TextLMConfig": "config",
    "MelConfig": "features",
    "MelFrontend": "features",
    "pretrain_ctc": "ctc",
    "continue_speech": "infer",
    "decode_prefix_asr": "infer",
    "pretrain_text_lm": "textlm",
    "train_prefix_lm": "train",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .config import CTCPretrainConfig, OptimConfig, PrefixDataConfig, PrefixTrainConfig, TextLMConfig
    from .ctc import pretrain_ctc
    from .features import MelConfig, MelFrontend
    from .infer import continue_speech, decode_prefix_asr
    from .textlm import pretrain_text_lm
    from .train import train_prefix_lm


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
