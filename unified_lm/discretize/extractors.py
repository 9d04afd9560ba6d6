"""Frame feature extractors that k-means discretizers cluster.

Each is registered under the name a recipe uses in ``kmeans.features.type`` and owns a
typed ``Config`` for the rest of that mapping. An extractor maps a 16 kHz mono waveform to
``[frames, dim]`` float32 and reports ``dim`` and ``frame_rate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from ..audio import FRAME_RATE, SAMPLE_RATE, fbank, mean_normalize, mfcc
from ..config import from_dict, to_dict
from ..errors import ConfigError
from ..registry import Registry


class FeatureExtractor(Protocol):
    dim: int
    frame_rate: float

    def __call__(self, wav: torch.Tensor) -> torch.Tensor: ...

    def external_files(self) -> dict[str, Path]:
        """Files outside the tokenizer directory that define the features (model weights)."""
        ...


FEATURES: Registry[type] = Registry("feature extractor")


def build_features(spec: dict[str, Any]) -> FeatureExtractor:
    """``{"type": "fbank", **options}`` -> the extractor, options checked against its Config."""
    spec = dict(spec)
    cls = FEATURES.get(spec.pop("type"))
    return cls(from_dict(cls.Config, spec, where="kmeans.features"))


def normalized_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every option spelled out, so a saved recipe does not depend on defaults."""
    cls = FEATURES.get(spec["type"])
    options = {k: v for k, v in spec.items() if k != "type"}
    return {"type": spec["type"], **to_dict(from_dict(cls.Config, options, where="kmeans.features"))}


def _splice(feats: torch.Tensor, context: int) -> torch.Tensor:
    """Each frame with its ``context`` neighbours on each side, edges repeated:
    ``[T, D] -> [T, (2 * context + 1) * D]`` (Kaldi's splicing)."""
    if context == 0 or feats.shape[0] == 0:
        return feats
    padded = torch.cat([feats[:1].expand(context, -1), feats, feats[-1:].expand(context, -1)])
    return torch.cat([padded[i : i + feats.shape[0]] for i in range(2 * context + 1)], dim=1)


@FEATURES.register("fbank")
class FbankFeatures:
    @dataclass
    class Config:
        num_mel_bins: int = 80
        cmn: bool = True  # per-utterance mean normalisation
        # Frames spliced on each side before clustering: a unit then describes ~(2c+1)*10 ms
        # of spectral movement, closer to a phone than one 25 ms frame is.
        context: int = 0

    frame_rate = FRAME_RATE

    def __init__(self, cfg: Config):
        if cfg.context < 0:
            raise ConfigError(f"kmeans.features.context must be >= 0, got {cfg.context}")
        self.cfg = cfg
        self.dim = cfg.num_mel_bins * (2 * cfg.context + 1)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        feats = fbank(wav, SAMPLE_RATE, self.cfg.num_mel_bins)
        return _splice(mean_normalize(feats) if self.cfg.cmn else feats, self.cfg.context)

    def external_files(self) -> dict[str, Path]:
        return {}


@FEATURES.register("mfcc")
class MfccFeatures:
    @dataclass
    class Config:
        num_ceps: int = 13
        deltas: bool = True  # append deltas and delta-deltas (39 dims), as HuBERT iteration 1
        cmn: bool = False

    frame_rate = FRAME_RATE

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dim = cfg.num_ceps * (3 if cfg.deltas else 1)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        feats = mfcc(wav, SAMPLE_RATE, self.cfg.num_ceps, self.cfg.deltas)
        return mean_normalize(feats) if self.cfg.cmn else feats

    def external_files(self) -> dict[str, Path]:
        return {}


@FEATURES.register("ssl")
class SslFeatures:
    """A hidden layer of a HuBERT / WavLM model loaded with ``transformers`` from a local dir.

    ``layer`` counts like fairseq's ``output_layer``: ``hidden_states[layer]`` is the
    output of transformer layer ``layer`` (0 is the input to the first layer).
    """

    PAD_ON_CPU = False  # tests and the benchmark exercise the padded path on a CPU

    @dataclass
    class Config:
        model_path: str | None = None  # a directory holding config.json + weights
        layer: int = 6
        # HuBERT-Large and WavLM-Large were trained on utterance-normalised waveforms
        # (their feature extractors' do_normalize); base models were not.
        normalize_waveform: bool = False
        # Longer audio is cut into chunks of about this many seconds, each run alone (as
        # fairseq's feature dump does, 100 s): attention's memory grows with the square of
        # the length. Chunks overlap by what the conv front end needs, so the frames are
        # those of the whole; null: never cut.
        max_chunk_seconds: float | None = 100.0
        # The model's weights and activations: "float16" / "bfloat16" halve a GPU's memory and
        # time; the units then differ slightly from float32's (part of the tokenizer's identity).
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"
        device: str = "cpu"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.path = _check_model_dir(cfg.model_path)
        from ..models.hubert import load_hf_hubert  # here: the models package pulls in transformers

        try:
            model = load_hf_hubert(self.path, local_files_only=True, dtype=getattr(torch, cfg.dtype))
            self.model = model.eval().to(cfg.device)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.path}: cannot load the model: {e}") from None
        config = self.model.config
        if not hasattr(config, "conv_stride"):
            raise ConfigError(f"{self.path}: {config.model_type!r} is not a HuBERT/WavLM-style speech model")
        if not 0 <= cfg.layer <= config.num_hidden_layers:
            raise ConfigError(
                f"kmeans.features.layer={cfg.layer} is out of range: {self.path} has {config.num_hidden_layers} layers"
            )
        self.dim = config.hidden_size
        self._convs = list(zip(config.conv_kernel, config.conv_stride))
        self.frame_rate = SAMPLE_RATE / float(torch.tensor(config.conv_stride).prod())
        if cfg.max_chunk_seconds is not None and not cfg.max_chunk_seconds > 0:
            raise ConfigError(f"kmeans.features.max_chunk_seconds must be > 0 (or null), got {cfg.max_chunk_seconds}")
        _keep_layers(self.model, cfg.layer)
        # A group-norm feature extractor (HuBERT/WavLM Base) normalises its first conv layer's
        # channels over the whole input: in a padded batch, over each utterance's own frames.
        # Padded batches pay on a GPU; on a CPU one utterance at a time is faster (measured
        # 2.2x: the conv front end of a padded batch leaves the cache; bench ssl-features).
        # The toolkit's fbank front end normalises each row over all its frames, padding too.
        fbank_front = getattr(config, "frontend", "conv") == "fbank"
        self.pad_batches = (self.PAD_ON_CPU or not cfg.device.startswith("cpu")) and not fbank_front
        self._group_norm = None
        if getattr(config, "feat_extract_norm", "group") == "group":
            first = self.model.feature_extractor.conv_layers[0]
            self._group_norm = first.layer_norm = _MaskedGroupNorm(first.layer_norm)

    def num_frames(self, num_samples: int) -> int:
        from ..models.hubert import conv_frames  # here: the models package pulls in transformers

        return conv_frames(num_samples, self._convs)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        return self.batch([wav])[0]

    def chunks(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """``wav`` cut at multiples of ``max_chunk_seconds`` (rounded to whole frames), each
        chunk running on into the next by what its last frame sees; a tail too short for a
        frame stays with the chunk before. The chunks' frames add up to the whole's."""
        from ..models.hubert import receptive_field

        hop = math.prod(stride for _, stride in self._convs)
        size = None if self.cfg.max_chunk_seconds is None else max(1, round(self.cfg.max_chunk_seconds * self.frame_rate)) * hop
        wav, n = wav.reshape(-1), wav.numel()
        overlap = receptive_field(self._convs) - hop
        if size is None or n <= size + overlap:
            return [wav]
        starts = list(range(0, n, size))
        if n - starts[-1] < overlap + hop:
            starts.pop()
        ends = [s + overlap for s in starts[1:]] + [n]
        return [wav[s:e] for s, e in zip(starts, ends)]

    def batch(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features of several utterances, in one padded forward pass on a GPU (``pad_batches``);
        each equals what the utterance alone gives, up to float rounding (chunk by chunk for
        audio longer than ``max_chunk_seconds``)."""
        pieces = [self.chunks(w) for w in wavs]
        if any(len(p) > 1 for p in pieces):
            feats = iter(self.batch([c for p in pieces for c in p]))
            return [torch.cat([next(feats) for _ in p]) for p in pieces]
        if not self.pad_batches and len(wavs) > 1:
            return [self.batch([w])[0] for w in wavs]
        frames = [self.num_frames(w.numel()) for w in wavs]
        out = [w.new_zeros((0, self.dim)) for w in wavs]
        todo = [i for i, n in enumerate(frames) if n > 0]
        if not todo:
            return out
        x = torch.nn.utils.rnn.pad_sequence([self._prepare(wavs[i]) for i in todo], batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence([torch.ones(wavs[i].numel(), dtype=torch.long) for i in todo], batch_first=True)
        if self._group_norm is not None:
            first = self._convs[0]
            self._group_norm.lengths = [(wavs[i].numel() - first[0]) // first[1] + 1 for i in todo]
        with torch.inference_mode():
            states = self.model(x.to(self.cfg.device), attention_mask=mask.to(self.cfg.device) if len(todo) > 1 else None)
        for row, i in enumerate(todo):
            out[i] = states.last_hidden_state[row, : frames[i]].float().cpu()
        return out

    def _prepare(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.reshape(-1).float()
        x = F.layer_norm(x, x.shape) if self.cfg.normalize_waveform else x
        return x.to(self.model.dtype)

    def external_files(self) -> dict[str, Path]:
        return model_files(self.path)


@FEATURES.register("ctc_encoder")
class CtcEncoderFeatures:
    """A layer of the prefix encoder after CTC pre-training on characters
    (``unified-lm train ctc``; its ``out_dir/best``), at 25 frames/s.

    Supervised units, like CosyVoice's S3 tokenizer: the encoder was taught to hear
    characters, so its clusters are far more phonetic and less voice-dependent than those
    of filterbank frames. The stand-in for an SSL layer when no HuBERT/WavLM checkpoint is
    at hand; the transcripts it was trained on must not include the dev or test set.
    """

    @dataclass
    class Config:
        model_path: str | None = None  # the CTC pre-training's out_dir/best
        layer: int | None = None  # Conformer block whose output is clustered; None: the last
        # Keep only the frames whose CTC prediction is a character, not the blank (CTC
        # compression, Tsunoo et al. 2023): about one frame per character, so sequences are
        # shorter and every kept frame sits where the encoder heard a character.
        drop_blank: bool = False
        # Cluster the CTC head's character posteriors instead of a block's states, as their
        # square roots (Euclidean distance between them is then the Hellinger distance): units
        # are characters in context, with the encoder's doubt kept. ``layer`` must be the last.
        posteriors: bool = False
        device: str = "cpu"

    def __init__(self, cfg: Config):
        # Imported here: they pull in fairseq2, which fbank/MFCC tokenizers never need.
        from ..audio.mel import MelFrontend
        from ..models import load_encoder_checkpoint
        from ..models.prefix.model import utterance_norm

        if not cfg.model_path:
            raise ConfigError(
                "ctc_encoder features need kmeans.features.model_path: the best/ directory of "
                "`unified-lm train ctc`"
            )
        self.path = Path(cfg.model_path).expanduser()
        encoder, _, mel = load_encoder_checkpoint(self.path)
        self.layer = encoder.cfg.num_layers if cfg.layer is None else cfg.layer
        if not 0 <= self.layer <= encoder.cfg.num_layers:
            raise ConfigError(
                f"kmeans.features.layer={cfg.layer} is out of range: {self.path} has {encoder.cfg.num_layers} layers"
            )
        self.cfg = cfg
        self.encoder = encoder.to(cfg.device)
        self.frontend = MelFrontend(mel)
        self.normalize = utterance_norm
        if cfg.posteriors and self.layer != encoder.cfg.num_layers:
            raise ConfigError(f"kmeans.features.posteriors needs the last layer ({encoder.cfg.num_layers}), not {cfg.layer}")
        self.dim = encoder.ctc_head.out_features if cfg.posteriors else encoder.cfg.dim
        self.frame_rate = mel.frame_rate / 4  # the encoder's 4x subsampling

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(wav)
        if mel.shape[0] < self.encoder.MIN_FRAMES:
            return mel.new_zeros((0, self.dim))
        lengths = torch.tensor([mel.shape[0]], device=self.cfg.device)
        with torch.inference_mode():
            feats = self.normalize(mel.unsqueeze(0).to(self.cfg.device), lengths)
            states, _ = self.encoder.layer_states(feats, lengths, self.layer)
            if self.cfg.drop_blank or self.cfg.posteriors:
                top = self.encoder.cfg.num_layers
                top_states = states if self.layer == top else self.encoder.layer_states(feats, lengths, top)[0]
                probs = self.encoder.ctc_logits(top_states).float().softmax(-1)
                if self.cfg.posteriors:
                    states = probs.sqrt()
                if self.cfg.drop_blank:
                    states = states[:, probs[0].argmax(-1) != 0]
        return states[0].float().cpu()

    def external_files(self) -> dict[str, Path]:
        return model_files(self.path)


class _MaskedGroupNorm(torch.nn.Module):
    """The first conv layer's GroupNorm (one group per channel) with its statistics taken over
    each utterance's own frames of a padded batch (``lengths``), as the utterance alone gets."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.norm = norm
        self.lengths: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, channels, frames]
        if self.lengths is None or x.shape[0] == 1:
            return self.norm(x)
        valid = torch.arange(x.shape[-1], device=x.device)[None, None, :] < torch.tensor(self.lengths, device=x.device)[:, None, None]
        n = valid.sum(-1, keepdim=True)
        mean = (x * valid).sum(-1, keepdim=True) / n
        var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + self.norm.eps)
        return y * self.norm.weight[None, :, None] + self.norm.bias[None, :, None]


def _keep_layers(model: torch.nn.Module, layer: int) -> None:
    """Drops the transformer layers above ``layer``, so ``last_hidden_state`` is what the whole
    model gives as ``hidden_states[layer]`` (at a fraction of the cost for a middle layer)."""
    encoder, total = model.encoder, model.config.num_hidden_layers
    if layer == total:
        return
    encoder.layers = encoder.layers[:layer]
    # Pre-LN ("stable layer norm") encoders normalise only after their last layer, and
    # hidden_states[layer] of a middle layer is taken before that norm.
    if getattr(model.config, "do_stable_layer_norm", False):
        encoder.layer_norm = torch.nn.Identity()


def model_files(directory: Path, prefix: str = "model") -> dict[str, Path]:
    """The files of a model directory, named as the tokenizer's content hash sees them."""
    return {f"{prefix}/{p.name}": p for p in sorted(directory.iterdir()) if p.is_file()}


def _check_model_dir(model_path: str | None) -> Path:
    if not model_path:
        raise ConfigError(
            "ssl features need kmeans.features.model_path: a local directory with a HuBERT or WavLM "
            "model (config.json + weights, as saved by save_pretrained); nothing is downloaded"
        )
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: no HuBERT/WavLM model here (config.json missing); set kmeans.features.model_path")
    return path
