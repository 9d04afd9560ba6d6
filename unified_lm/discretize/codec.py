"""EnCodec codes as units, from a local checkpoint: a state dict of the ``encodec`` package
(e.g. ``encodec_24khz-d7cc33bc.th``) or a Hugging Face ``EncodecModel`` directory (e.g. a
copy of facebook/encodec_24khz; its own config then gives the architecture).

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
from .extractors import model_files
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
        what = "a directory without config.json (not a Hugging Face EnCodec)" if path.is_dir() else "not found"
        raise ConfigError(f"{path}: EnCodec checkpoint {what}; {OFFLINE_HINT}")
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


class _PackageCodec:
    """The ``encodec`` package's model, as the quantizer reads it."""

    def __init__(self, cfg: EncodecConfig, model):
        self.model, self.cfg = model, cfg
        self.frame_rate, self.sample_rate, self.channels = float(model.frame_rate), cfg.sample_rate, cfg.channels
        self.normalize, self.dimension, self.bins = cfg.normalize, cfg.dimension, cfg.bins
        self.hop_length, self.n_q, self.target_bandwidths = int(np.prod(cfg.ratios)), cfg.n_q, list(cfg.target_bandwidths)

    def frames(self, x: torch.Tensor) -> torch.Tensor:  # [1, channels, samples] -> [dimension, frames]
        return self.model.encoder(x)[0]

    def codes(self, feats: torch.Tensor, bandwidth: float) -> torch.Tensor:  # [1, dim, frames] -> [n_q, frames]
        return self.model.quantizer.encode(feats, self.model.frame_rate, bandwidth)[:, 0]

    def num_codebooks(self, bandwidth: float) -> int:
        return min(self.model.quantizer.get_num_quantizers_for_bandwidth(self.model.frame_rate, bandwidth), self.n_q)


class _HFCodec(_PackageCodec):
    """A ``transformers`` EncodecModel directory; its config is the architecture."""

    def __init__(self, path: Path):
        from transformers import EncodecModel

        try:
            self.model = EncodecModel.from_pretrained(path, local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot load a Hugging Face EnCodec model: {e}") from None
        c = self.model.config
        self.frame_rate, self.sample_rate, self.channels = float(c.frame_rate), c.sampling_rate, c.audio_channels
        self.normalize, self.dimension, self.bins = c.normalize, c.hidden_size, c.codebook_size
        self.hop_length, self.n_q = int(np.prod(c.upsampling_ratios)), c.num_quantizers
        self.target_bandwidths = list(c.target_bandwidths)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x)[0]

    def codes(self, feats: torch.Tensor, bandwidth: float) -> torch.Tensor:
        return self.model.quantizer.encode(feats, bandwidth)[:, 0]

    def num_codebooks(self, bandwidth: float) -> int:
        return self.model.quantizer.get_num_quantizers_for_bandwidth(bandwidth)


def load_codec(cfg: EncodecConfig) -> _PackageCodec:
    """The checkpoint of ``cfg``: a Hugging Face directory or a state dict of the package's model."""
    path = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else None
    codec = _HFCodec(path) if path is not None and (path / "config.json").is_file() else _PackageCodec(cfg, load_encodec_model(cfg))
    if cfg.bandwidth not in codec.target_bandwidths:
        raise ConfigError(f"encodec.bandwidth {cfg.bandwidth} is not one of the model's {codec.target_bandwidths}")
    codec.model.to(cfg.device)
    return codec


@DISCRETIZERS.register("encodec")
class EncodecQuantizer:
    def __init__(self, cfg: EncodecConfig, codec: _PackageCodec):
        self.cfg = cfg
        self.codec = codec
        self.frame_rate = codec.frame_rate
        available = codec.num_codebooks(cfg.bandwidth)
        if cfg.keep_codebooks is not None and cfg.keep_codebooks > available:
            raise ConfigError(
                f"encodec.keep_codebooks={cfg.keep_codebooks} but bandwidth {cfg.bandwidth} gives {available} codebooks"
            )
        self.codebooks = cfg.keep_codebooks or available
        self.codebook_size = codec.bins
        self.num_units = self.codebooks * codec.bins
        self.offsets = torch.arange(self.codebooks).unsqueeze(1) * codec.bins

    @classmethod
    def fit(cls, recipe: TokenizerRecipe, waveforms: Iterable[torch.Tensor], workdir: Path) -> "EncodecQuantizer":
        # A pretrained codec has nothing to learn; fitting checks the checkpoint loads.
        return cls.load(recipe, workdir)

    @classmethod
    def load(cls, recipe: TokenizerRecipe, tokdir: Path) -> "EncodecQuantizer":
        return cls(recipe.encodec, load_codec(recipe.encodec))

    def extract_features(self, wav: torch.Tensor) -> torch.Tensor:
        """The encoder's continuous frames ``[frames, dimension]`` (before quantisation)."""
        c = self.codec
        x = resample(wav, SAMPLE_RATE, c.sample_rate)
        if x.numel() < c.hop_length:
            return x.new_zeros((0, c.dimension))
        x = x.reshape(1, 1, -1).expand(1, c.channels, -1)
        if c.normalize:
            x = x / (x.pow(2).mean().sqrt() + 1e-8)
        with torch.inference_mode():
            return c.frames(x.to(self.cfg.device)).T.cpu()

    def assign(self, feats: torch.Tensor) -> np.ndarray:
        if feats.shape[0] == 0:
            return np.zeros(0, np.int64)
        with torch.inference_mode():
            codes = self.codec.codes(feats.T.unsqueeze(0).to(self.cfg.device), self.cfg.bandwidth).cpu()
        codes = codes[: self.codebooks] + self.offsets  # [codebooks, frames]
        return codes.T.reshape(-1).numpy().astype(np.int64)

    def state_files(self, tokdir: Path) -> dict[str, Path]:
        path = Path(self.cfg.checkpoint).expanduser()
        if path.is_dir():  # every file of the directory defines the units
            return model_files(path, prefix="checkpoint")
        return {"checkpoint": path}
