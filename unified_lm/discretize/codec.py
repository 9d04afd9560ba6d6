"""EnCodec codes as units (``encodec`` package, weights from a local checkpoint).

The 24 kHz model emits 75 frames per second; at bandwidth ``b`` kbps each frame has
``b * 1000 / (75 * 10)`` codebook indices (2 to 32), 1024 entries each. Frames are
flattened codebook by codebook (interleaved: frame 0 codebook 0, frame 0 codebook 1, ...)
with codebook ``c`` offset by ``c * 1024``, so every codebook owns a contiguous unit range
and ``num_units = codebooks * 1024``; ``keep_codebooks`` keeps only the first ones.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..audio import SAMPLE_RATE, resample
from ..errors import ConfigError, DataError
from .base import DISCRETIZERS
from .tokenizer_recipe import EncodecConfig, TokenizerRecipe

OFFLINE_HINT = (
    "the encodec package's EncodecModel.encodec_model_24khz() downloads its weights at run time, "
    "which cannot work offline: download https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th "
    "once on a connected machine and set encodec.checkpoint to that file"
)


def build_encodec_model(cfg: EncodecConfig):
    """An EnCodec model with the recipe's architecture and random weights."""
    from encodec.model import EncodecModel
    from encodec.modules import SEANetDecoder, SEANetEncoder
    from encodec.quantization import ResidualVectorQuantizer

    arch = dict(
        channels=cfg.channels,
        dimension=cfg.dimension,
        n_filters=cfg.n_filters,
        n_residual_layers=cfg.n_residual_layers,
        ratios=list(cfg.ratios),
        lstm=cfg.lstm,
        causal=cfg.causal,
        norm=cfg.norm,
    )
    with warnings.catch_warnings():
        # encodec builds its convolutions with torch's deprecated weight_norm; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        encoder, decoder = SEANetEncoder(**arch), SEANetDecoder(**arch)
    quantizer = ResidualVectorQuantizer(dimension=cfg.dimension, n_q=cfg.n_q, bins=cfg.bins)
    model = EncodecModel(
        encoder, decoder, quantizer, list(cfg.target_bandwidths), cfg.sample_rate, cfg.channels, normalize=cfg.normalize
    )
    model.set_target_bandwidth(cfg.bandwidth)
    return model.eval()


def load_encodec_model(cfg: EncodecConfig):
    """The recipe's model with the weights of ``cfg.checkpoint`` (a state dict)."""
    if not cfg.checkpoint:
        raise ConfigError(f"no EnCodec checkpoint configured (encodec.checkpoint); {OFFLINE_HINT}")
    path = Path(cfg.checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: EnCodec checkpoint not found; {OFFLINE_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise DataError(path, f"unreadable EnCodec checkpoint: {e}") from None
    model = build_encodec_model(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        reason = str(e)[:500]  # torch lists every mismatched key; the first few say enough
        raise ConfigError(f"{path}: checkpoint does not fit the recipe's EnCodec architecture: {reason}") from None
    return model


@DISCRETIZERS.register("encodec")
class EncodecQuantizer:
    def __init__(self, cfg: EncodecConfig, model):
        self.cfg = cfg
        self.model = model
        self.frame_rate = float(model.frame_rate)
        self.hop_length = int(np.prod(cfg.ratios))
        available = min(model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, cfg.bandwidth), cfg.n_q)
        if cfg.keep_codebooks is not None and cfg.keep_codebooks > available:
            raise ConfigError(
                f"encodec.keep_codebooks={cfg.keep_codebooks} but bandwidth {cfg.bandwidth} gives {available} codebooks"
            )
        self.codebooks = cfg.keep_codebooks or available
        self.codebook_size = cfg.bins
        self.num_units = self.codebooks * cfg.bins
        self.offsets = torch.arange(self.codebooks).unsqueeze(1) * cfg.bins

    @classmethod
    def fit(cls, recipe: TokenizerRecipe, waveforms: Iterable[torch.Tensor], workdir: Path) -> "EncodecQuantizer":
        # A pretrained codec has nothing to learn; fitting checks the checkpoint loads.
        return cls.load(recipe, workdir)

    @classmethod
    def load(cls, recipe: TokenizerRecipe, tokdir: Path) -> "EncodecQuantizer":
        return cls(recipe.encodec, load_encodec_model(recipe.encodec))

    def extract_features(self, wav: torch.Tensor) -> torch.Tensor:
        """The encoder's continuous frames ``[frames, dimension]`` (before quantisation)."""
        x = resample(wav, SAMPLE_RATE, self.cfg.sample_rate)
        if x.numel() < self.hop_length:
            return x.new_zeros((0, self.cfg.dimension))
        x = x.reshape(1, 1, -1).expand(1, self.cfg.channels, -1)
        if self.cfg.normalize:
            x = x / (x.pow(2).mean().sqrt() + 1e-8)
        with torch.inference_mode():
            return self.model.encoder(x)[0].T

    def assign(self, feats: torch.Tensor) -> np.ndarray:
        if feats.shape[0] == 0:
            return np.zeros(0, np.int64)
        with torch.inference_mode():
            codes = self.model.quantizer.encode(feats.T.unsqueeze(0), self.model.frame_rate, self.cfg.bandwidth)
        codes = codes[: self.codebooks, 0] + self.offsets  # [codebooks, frames]
        return codes.T.reshape(-1).numpy().astype(np.int64)

    def state_files(self, tokdir: Path) -> dict[str, Path]:
        return {"checkpoint": Path(self.cfg.checkpoint).expanduser()}
