"""The loss registry: ``mask``, ``ce`` and ``sld`` for discrete-token decoders (see ``token``)
and ``spectron`` for the prefix LM (see ``spectrogram``).

The two kinds share the registry but not a signature: a token loss is built from a
``LossConfig`` by ``build_loss``, ``spectron`` from a ``SpectronLossConfig``. Given a
``LossConfig`` (``loss.name=spectron`` in a discrete-token run), the ``spectron`` factory
raises a ConfigError that points to the prefix-LM recipe.
"""

from ..errors import ConfigError
from ..vocab import UnifiedVocab
from . import spectrogram, token  # noqa: F401  (fill LOSSES)
from .base import LOSSES, LossConfig, LossFn, LossOutput
from .ctc import with_speech_ctc

__all__ = ["LOSSES", "LossConfig", "LossFn", "LossOutput", "build_loss"]


def build_loss(cfg: LossConfig, vocab: UnifiedVocab) -> LossFn:
    """The configured loss, bound to the vocabulary's speech-token ranges (plus the auxiliary
    speech CTC when ``cfg.ctc_weight > 0``)."""
    loss_fn = LOSSES.get(cfg.name)(cfg, vocab.speech_ranges())
    if cfg.ctc_weight > 0:
        if vocab.pad_id != vocab.text_size:
            raise ConfigError(f"the speech CTC uses <pad> (id {vocab.pad_id}) as blank and expects it right after the text ids")
        loss_fn = with_speech_ctc(loss_fn, cfg.ctc_weight, vocab.text_size)
    return loss_fn
