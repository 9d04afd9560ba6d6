"""The loss registry: ``mask``, ``ce`` and ``sld`` for discrete-token decoders (see ``token``)
and ``spectron`` for the continuous path's prefix LM (see ``spectrogram``).

The two kinds share the registry but not a signature: a token loss is built from a
``LossConfig`` by ``build_loss``, ``spectron`` from a ``SpectronLossConfig``. Given a
``LossConfig`` (``loss.name=spectron`` in a discrete-token run), the ``spectron`` factory
raises a ConfigError that points to the continuous path's trainer.
"""

from . import spectrogram, token  # noqa: F401  (fill LOSSES)
from .base import LOSSES, LossConfig, LossFn, LossOutput, build_loss

__all__ = ["LOSSES", "LossConfig", "LossFn", "LossOutput", "build_loss"]
