"""The spectrogram side of the decoder (Spectron): pre-net in, frame MLP + stop logit out,
and a convolutional post-net over the whole predicted spectrogram.

Frames are grouped ``reduction`` at a time (Tacotron's *r*): one decoder position reads
and predicts ``r`` consecutive log-mel frames, so a second of speech costs 100 / r
positions instead of 100.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class SpectrogramHeadConfig:
    reduction: int = 2  # log-mel frames per decoder position
    prenet_ratio: float = 0.25  # pre-net bottleneck width, as a fraction of the decoder dimension
    prenet_dropout: float = 0.5
    # Tacotron 2 keeps pre-net dropout on at inference: the noise stops the autoregressive
    # loop from locking onto copies of its own previous frame.
    prenet_dropout_at_inference: bool = True
    postnet_channels: int = 256
    postnet_layers: int = 5
    postnet_kernel: int = 5
    postnet_dropout: float = 0.1


class PreNet(nn.Module):
    """``r`` frames -> a narrow bottleneck (with dropout) -> the decoder dimension."""

    def __init__(self, frame_dim: int, model_dim: int, cfg: SpectrogramHeadConfig):
        super().__init__()
        width = max(1, int(cfg.prenet_ratio * model_dim))
        self.layers = nn.ModuleList([nn.Linear(frame_dim, width), nn.Linear(width, width)])
        self.out = nn.Linear(width, model_dim)
        self.p = cfg.prenet_dropout
        self.always_dropout = cfg.prenet_dropout_at_inference

    def forward(self, frames: Tensor) -> Tensor:
        x = frames
        for layer in self.layers:
            x = F.dropout(F.relu(layer(x)), self.p, training=self.training or self.always_dropout)
        return self.out(x)


class FrameHead(nn.Module):
    """Decoder state -> the next ``r`` frames (flattened) and a stop logit."""

    def __init__(self, model_dim: int, frame_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(model_dim, model_dim), nn.GELU(), nn.Linear(model_dim, frame_dim))
        self.stop = nn.Linear(model_dim, 1)

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        return self.mlp(hidden), self.stop(hidden).squeeze(-1)


class PostNet(nn.Module):
    """Residual 1-D convolutions over time that refine the whole predicted spectrogram
    (Tacotron 2's post-net, with the batch norm left out: batches are small and padded)."""

    def __init__(self, n_mels: int, cfg: SpectrogramHeadConfig):
        super().__init__()
        if cfg.postnet_kernel % 2 == 0:
            raise ValueError(f"the post-net kernel must be odd to keep frames aligned, got {cfg.postnet_kernel}")
        dims = [n_mels] + [cfg.postnet_channels] * (cfg.postnet_layers - 1) + [n_mels]
        self.convs = nn.ModuleList(
            nn.Conv1d(i, o, cfg.postnet_kernel, padding=cfg.postnet_kernel // 2) for i, o in zip(dims, dims[1:])
        )
        self.dropout = nn.Dropout(cfg.postnet_dropout)

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        """``frames`` [B, N, n_mels], ``mask`` [B, N] (True on real frames) -> refined frames."""
        if frames.size(1) == 0:  # a batch of ASR-only utterances
            return frames
        keep = mask.unsqueeze(1).to(frames.dtype)
        x = frames.transpose(1, 2) * keep
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.dropout(x.tanh()) * keep
        return frames + x.transpose(1, 2)
