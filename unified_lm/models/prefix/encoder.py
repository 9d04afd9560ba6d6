"""The speech encoder of the continuous path: log-mel -> SpecAugment -> 4x convolutional
subsampling -> Conformer blocks (fairseq2's), with a character CTC head.

The CTC head serves twice: encoder pre-training (the ``ctc`` recipe) and the
``ctc`` bridge, which keeps one vector per predicted character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchaudio
from fairseq2.models.conformer import ConformerBlock, ConformerConvolution
from fairseq2.models.transformer import (
    IdentityBias,
    RelativePositionalEncoding,
    RelativePositionSDPA,
    StandardFeedForwardNetwork,
    StandardMultiheadAttention,
    StandardTransformerEncoder,
)
from fairseq2.nn import BatchLayout, StandardLayerNorm
from torch import Tensor, nn


@dataclass
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019) masks, applied in training only."""

    freq_mask: int = 15  # widest frequency mask, in mel bins
    num_freq_masks: int = 2
    time_mask: int = 20  # widest time mask, in input frames (10 ms)
    num_time_masks: int = 2
    max_time_ratio: float = 0.2  # no time mask covers more than this share of an utterance
    # Frequency warping (VTLP-like, Jaitly & Hinton 2013): each utterance's mel axis is
    # stretched by a factor drawn from [1 - w, 1 + w], as a longer or shorter vocal tract
    # shifts the formants. 0 turns it off.
    freq_warp: float = 0.0


@dataclass
class EncoderConfig:
    n_mels: int = 80
    dim: int = 144
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 576
    conv_kernel: int = 15
    subsampling_channels: int = 64
    dropout: float = 0.1
    max_frames: int = 2048  # longest encoder output (after subsampling) the positional table covers
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)


class SpecAugment(nn.Module):
    def __init__(self, cfg: SpecAugmentConfig):
        super().__init__()
        self.freq_warp = cfg.freq_warp
        # iid_masks: every utterance of a batch gets its own masks.
        self.freq = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True) for _ in range(cfg.num_freq_masks)
        )
        self.time = nn.ModuleList(
            torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True, p=cfg.max_time_ratio)
            for _ in range(cfg.num_time_masks)
        )

    def forward(self, feats: Tensor) -> Tensor:
        """``feats`` [B, T, F] -> same shape; identity in eval mode."""
        if not self.training:
            return feats
        if self.freq_warp > 0:
            feats = warp_frequencies(feats, 1 + self.freq_warp * (2 * torch.rand(feats.size(0)) - 1))
        x = feats.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T], the layout torchaudio masks expect
        for mask in [*self.freq, *self.time]:
            x = mask(x)
        return x.squeeze(1).transpose(1, 2)


def warp_frequencies(feats: Tensor, factors: Tensor) -> Tensor:
    """``feats`` [B, T, F] with utterance b's frequency axis stretched by ``factors[b]``:
    bin f takes the (linearly interpolated) value at f / factor, the top bin where that
    falls beyond it."""
    bins = feats.size(-1)
    source = (torch.arange(bins, dtype=feats.dtype) / factors.to(feats.dtype).unsqueeze(1)).clamp(max=bins - 1)
    low = source.floor().long().clamp(max=bins - 2)
    frac = (source - low).to(feats.device).unsqueeze(1)  # [B, 1, F]
    low = low.to(feats.device).unsqueeze(1).expand(-1, feats.size(1), -1)  # [B, T, F]
    return torch.lerp(feats.gather(-1, low), feats.gather(-1, low + 1), frac)


class ConvSubsampling(nn.Module):
    """Two 3x3 stride-2 convolutions over (time, mel): 4x fewer frames (ESPnet's Conv2dSubsampling)."""

    def __init__(self, n_mels: int, channels: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2), nn.ReLU(), nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU()
        )
        self.proj = nn.Linear(channels * self.output_length(n_mels), dim)

    @staticmethod
    def output_length(length: Tensor | int) -> Tensor | int:
        """Length after the two unpadded kernel-3 stride-2 convolutions."""
        return ((length - 1) // 2 - 1) // 2

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(feats.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return x, self.output_length(lengths)


class PrefixEncoder(nn.Module):
    """Log-mel frames [B, T, n_mels] -> encoder states [B, T/4, dim] and per-frame CTC logits."""

    MIN_FRAMES = 7  # the subsampling needs at least this many input frames for one output frame

    def __init__(self, cfg: EncoderConfig, num_chars: int):
        super().__init__()
        self.cfg = cfg
        self.specaugment = SpecAugment(cfg.specaugment)
        self.subsampling = ConvSubsampling(cfg.n_mels, cfg.subsampling_channels, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        # One relative-position table shared by all blocks, as in fairseq2's w2v-BERT builder.
        rel_pos = RelativePositionalEncoding(cfg.dim, cfg.max_frames)
        self.conformer = StandardTransformerEncoder([self._block(rel_pos) for _ in range(cfg.num_layers)])
        self.ctc_head = nn.Linear(cfg.dim, num_chars + 1)  # index 0 is the CTC blank

    def _block(self, rel_pos: RelativePositionalEncoding) -> ConformerBlock:
        cfg = self.cfg

        def norm() -> StandardLayerNorm:
            return StandardLayerNorm(cfg.dim, bias=True)

        def ffn() -> StandardFeedForwardNetwork:
            return StandardFeedForwardNetwork(
                cfg.dim, cfg.ffn_dim, bias=True, inner_activation=nn.SiLU(), inner_dropout_p=cfg.dropout
            )

        attn = StandardMultiheadAttention(
            cfg.dim, cfg.num_heads, RelativePositionSDPA(cfg.dim, cfg.num_heads, rel_pos, IdentityBias())
        )
        # Layer norm rather than batch norm in the convolution module: batches here are small
        # and padded, and batch statistics over padding frames would differ between batches.
        conv = ConformerConvolution(cfg.dim, cfg.conv_kernel, norm_type="layer_norm")
        return ConformerBlock(norm(), ffn(), norm(), attn, norm(), conv, norm(), ffn(), norm(), dropout_p=cfg.dropout)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        return ConvSubsampling.output_length(lengths)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Returns encoder states [B, T', dim] (zero on padding) and their lengths [B]."""
        if int(lengths.min()) < self.MIN_FRAMES:
            raise ValueError(f"every utterance needs at least {self.MIN_FRAMES} feature frames, got {lengths.tolist()}")
        x, out_lengths = self.layer_states(feats, lengths, self.cfg.num_layers)
        return x * length_mask(out_lengths, x.size(1)).unsqueeze(-1), out_lengths

    def layer_states(self, feats: Tensor, lengths: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """The states after Conformer block ``layer`` (0: the subsampled input to the first
        block) and their lengths; blocks above ``layer`` are not run. What a tokenizer
        over this encoder clusters (``discretize.extractors.CtcEncoderFeatures``)."""
        if not 0 <= layer <= self.cfg.num_layers:
            raise ValueError(f"layer {layer} is out of range: the encoder has {self.cfg.num_layers} blocks")
        x, out_lengths = self.subsampling(self.specaugment(feats), lengths)
        if layer == 0:
            return x, out_lengths
        layout = BatchLayout(tuple(x.shape[:2]), out_lengths.tolist(), device=x.device)
        if layer == self.cfg.num_layers:
            return self.conformer(self.dropout(x), layout), out_lengths
        captured: list[Tensor] = []

        def stop_after(index: int, seqs: Tensor, layout: BatchLayout, num_layers: int) -> bool:
            if index + 1 == layer:
                captured.append(seqs)
                return False  # fairseq2 stops the stack when a hook returns False
            return True

        handle = self.conformer.register_layer_hook(stop_after)
        try:
            self.conformer(self.dropout(x), layout)
        finally:
            handle.remove()
        return captured[0], out_lengths

    def ctc_logits(self, states: Tensor) -> Tensor:
        return self.ctc_head(states)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B] lengths -> [B, max_len] bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
