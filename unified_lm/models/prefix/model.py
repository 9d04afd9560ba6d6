"""The prefix LM: speech encoder -> bridge -> projection, as the prefix of a Hugging Face
decoder that reads text tokens and spectrogram frames through ``inputs_embeds``.

Encoder and decoder meet only in the prefix (no cross-attention). A packed batch holds,
per utterance, the encoder's input frames and a *suffix*

    <asr> transcript <cont> continuation <spec> f_1 .. f_M <spec_end>

whose frame positions ``f_j`` carry ``r`` log-mel frames each through the pre-net. The
model places the prefix before the suffix, runs the decoder once, and reads every output
in suffix coordinates: suffix position ``s`` predicts suffix element ``s + 1``, so
``<spec>`` and ``f_1 .. f_M`` predict frames (and whether ``<spec_end>`` comes next).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ...errors import ConfigError
from ..decoder import ModelConfig
from .bridge import BridgeConfig, build_bridge
from .encoder import EncoderConfig, PrefixEncoder, length_mask
from .spectrogram import FrameHead, PostNet, PreNet, SpectrogramHeadConfig


class Kind(IntEnum):
    """What a suffix position holds."""

    TOKEN = 0
    FRAME = 1
    PAD = 2


@dataclass
class PrefixModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    decoder: ModelConfig = field(default_factory=lambda: ModelConfig(preset="tiny"))
    spectrogram: SpectrogramHeadConfig = field(default_factory=SpectrogramHeadConfig)
    encoder_init: str | None = None  # a CTC pre-trained encoder directory (`unified-lm train ctc`)
    # Encoder states -> decoder inputs: 0, one linear layer; N > 0, Linear(N) + GELU + Linear,
    # SLAM-LLM's projector (a join with room to learn when both halves stay frozen).
    projector_hidden: int = 0

    def __post_init__(self):
        if self.projector_hidden < 0:
            raise ConfigError(f"model.projector_hidden: must be >= 0, got {self.projector_hidden}")


@dataclass
class SpectronPrediction:
    """What the prefix LM predicts for a packed batch (the input of the ``spectron`` loss)."""

    text_logits: Tensor  # [B, S, V] at every suffix position (position s predicts element s+1)
    frames: Tensor  # [B, N, n_mels] before the post-net
    frames_post: Tensor  # [B, N, n_mels] after the post-net
    stop_logits: Tensor  # [B, M+1] one per frame-predicting position
    ctc_logits: Tensor  # [B, T_enc, chars+1]
    ctc_lengths: Tensor  # [B]


@dataclass
class PackedBatch:
    feats: Tensor  # [B, T, n_mels] encoder input (log-mel)
    feat_lengths: Tensor  # [B]
    tokens: Tensor  # [B, S] suffix token ids (pad id on frame and padding positions)
    kinds: Tensor  # [B, S] Kind of every suffix position
    suffix_lengths: Tensor  # [B]
    frame_inputs: Tensor  # [B, M, r * n_mels] the frames each f_j position reads
    spec_start: Tensor  # [B] suffix index of <spec> (0 for utterances without frames)
    frame_steps: Tensor  # [B] M of each utterance (0: no continuation frames)

    def to(self, device: torch.device | str) -> "PackedBatch":
        return PackedBatch(**{k: v.to(device) for k, v in vars(self).items()})


class PrefixLM(nn.Module):
    def __init__(self, cfg: PrefixModelConfig, decoder: PreTrainedModel, num_chars: int):
        super().__init__()
        self.cfg = cfg
        self.decoder = decoder
        dim = decoder.config.hidden_size
        n_mels = cfg.encoder.n_mels
        self.reduction = cfg.spectrogram.reduction
        self.encoder = PrefixEncoder(cfg.encoder, num_chars)
        self.bridge = build_bridge(cfg.bridge, cfg.encoder.dim)
        hidden = cfg.projector_hidden
        self.projector = (
            nn.Sequential(nn.Linear(cfg.encoder.dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if hidden else nn.Linear(cfg.encoder.dim, dim)
        )
        self.prenet = PreNet(self.reduction * n_mels, dim, cfg.spectrogram)
        self.frame_head = FrameHead(dim, self.reduction * n_mels)
        self.postnet = PostNet(n_mels, cfg.spectrogram)
        # Per-mel-bin statistics of the training continuation frames: targets are predicted
        # normalised, so every bin weighs the same in L1/L2 whatever its level.
        self.register_buffer("frame_mean", torch.zeros(n_mels))
        self.register_buffer("frame_std", torch.ones(n_mels))

    # ---- pieces used by training and by incremental decoding ----------------------------

    def normalize_frames(self, log_mel: Tensor) -> Tensor:
        return (log_mel - self.frame_mean) / self.frame_std

    def denormalize_frames(self, frames: Tensor) -> Tensor:
        return frames * self.frame_std + self.frame_mean

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Log-mel -> ``(prefix [B, P, dim], prefix lengths, ctc_logits, encoder lengths)``."""
        states, enc_lengths = self.encoder(utterance_norm(feats, lengths), lengths)
        ctc_logits = self.encoder.ctc_logits(states)
        states, prefix_lengths = self.bridge(states, enc_lengths, ctc_logits)
        prefix = self.projector(states) * length_mask(prefix_lengths, states.size(1)).unsqueeze(-1)
        return prefix, prefix_lengths, ctc_logits, enc_lengths

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self.decoder.get_input_embeddings()(ids)

    def embed_frames(self, frames: Tensor) -> Tensor:
        """[..., r * n_mels] normalised frames -> decoder inputs [..., dim]."""
        return self.prenet(frames)

    def text_logits(self, hidden: Tensor) -> Tensor:
        return self.decoder.get_output_embeddings()(hidden)

    def predict_frames(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder states [..., dim] -> (next r frames [..., r, n_mels], stop logit [...])."""
        frames, stop = self.frame_head(hidden)
        return frames.unflatten(-1, (self.reduction, -1)), stop

    def backbone(self, embeds: Tensor, attention_mask: Tensor | None = None, **kwargs):
        """The decoder without its LM head (a transformers ``BaseModelOutputWithPast``)."""
        return self.decoder.base_model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)

    # ---- teacher-forced forward ---------------------------------------------------------

    def forward(self, batch: PackedBatch) -> SpectronPrediction:
        prefix, prefix_lengths, ctc_logits, enc_lengths = self.encode(batch.feats, batch.feat_lengths)
        suffix = self._embed_suffix(batch)
        embeds, attention_mask = join_prefix(prefix, prefix_lengths, suffix, batch.suffix_lengths)
        hidden = self.backbone(embeds, attention_mask).last_hidden_state
        # Back to suffix coordinates: suffix position s sits at prefix_length + s.
        hidden = gather_rows(hidden, prefix_lengths.unsqueeze(1) + torch.arange(suffix.size(1), device=hidden.device))

        steps = int(batch.frame_steps.max())
        # <spec>, f_1 .. f_M: M+1 positions, the first M predict frames, all predict stop.
        at = batch.spec_start.unsqueeze(1) + torch.arange(steps + 1, device=hidden.device)
        frames, stop_logits = self.predict_frames(gather_rows(hidden, at))
        frames = frames[:, :steps].flatten(1, 2)  # [B, M * r, n_mels]
        frame_mask = length_mask(batch.frame_steps * self.reduction, frames.size(1))
        return SpectronPrediction(
            text_logits=self.text_logits(hidden),
            frames=frames,
            frames_post=self.postnet(frames, frame_mask),
            stop_logits=stop_logits,
            ctc_logits=ctc_logits,
            ctc_lengths=enc_lengths,
        )

    def _embed_suffix(self, batch: PackedBatch) -> Tensor:
        embeds = self.embed_tokens(batch.tokens)
        if batch.frame_inputs.size(1) == 0:
            return embeds
        frames = self.embed_frames(batch.frame_inputs)  # [B, M, dim]
        # f_j sits at suffix index spec_start + j (j = 1..M) and reads frame_inputs[:, j - 1].
        positions = torch.arange(batch.tokens.size(1), device=embeds.device)
        which = (positions.unsqueeze(0) - batch.spec_start.unsqueeze(1) - 1).clamp(0, frames.size(1) - 1)
        is_frame = (batch.kinds == Kind.FRAME).unsqueeze(-1)
        return torch.where(is_frame, gather_rows(frames, which), embeds)


def utterance_norm(feats: Tensor, lengths: Tensor) -> Tensor:
    """Per-utterance mean and variance normalisation over the real frames (ESPnet's
    utterance_mvn): the encoder does not depend on recording level or global statistics."""
    mask = length_mask(lengths, feats.size(1)).unsqueeze(-1).to(feats.dtype)
    count = lengths.clamp(min=1).to(feats.dtype).view(-1, 1, 1)
    mean = (feats * mask).sum(1, keepdim=True) / count
    var = ((feats - mean).square() * mask).sum(1, keepdim=True) / count
    return (feats - mean) / (var + 1e-5).sqrt() * mask


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, i]]`` for x [B, T, D] and index [B, N] (clamped into [0, T))."""
    index = index.clamp(0, x.size(1) - 1)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(-1)))


def join_prefix(prefix: Tensor, prefix_lengths: Tensor, suffix: Tensor, suffix_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Right-padded ``[prefix_b ; suffix_b]`` rows [B, T, dim] and their attention mask."""
    lengths = prefix_lengths + suffix_lengths
    t = torch.arange(int(lengths.max()), device=prefix.device).unsqueeze(0)
    in_prefix = (t < prefix_lengths.unsqueeze(1)).unsqueeze(-1)
    embeds = torch.where(in_prefix, gather_rows(prefix, t.expand(prefix.size(0), -1)), gather_rows(suffix, t - prefix_lengths.unsqueeze(1)))
    mask = length_mask(lengths, t.size(1))
    return embeds * mask.unsqueeze(-1), mask.long()
