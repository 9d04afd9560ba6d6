"""Bridges: shorten the encoder output before it becomes the decoder's prefix (Hono et al.).

- ``none``: every encoder frame (25 per second after the encoder's 4x subsampling).
- ``conv``: ``layers`` 1-D convolutions, kernel 4, stride 2, each halving the length; the
  default two give a prefix 4x shorter than the encoder output.
- ``ctc``: CTC compression with the encoder's character CTC head: frames whose most likely
  label is blank are dropped and each run of one label is averaged into one vector, so the
  prefix has about one vector per spoken character.

A bridge maps ``(states [B, T, D], lengths [B], ctc_logits [B, T, C])`` to a shorter
``(states [B, T', D], lengths [B])``, zero on padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ...registry import Registry
from .encoder import length_mask

BRIDGES: Registry[Callable[["BridgeConfig", int], nn.Module]] = Registry("bridge")


@dataclass
class BridgeConfig:
    name: str = "conv"  # none | conv | ctc
    conv_layers: int = 2  # conv: each layer halves the length
    ctc_average_runs: bool = True  # ctc: average a run of one label (False: keep its first frame)


@BRIDGES.register("none")
class IdentityBridge(nn.Module):
    def __init__(self, cfg: BridgeConfig, dim: int):
        super().__init__()

    def forward(self, states: Tensor, lengths: Tensor, ctc_logits: Tensor) -> tuple[Tensor, Tensor]:
        return states, lengths


@BRIDGES.register("conv")
class ConvBridge(nn.Module):
    KERNEL, STRIDE, PADDING = 4, 2, 1  # with this padding a layer maps length L to L // 2

    def __init__(self, cfg: BridgeConfig, dim: int):
        super().__init__()
        if cfg.conv_layers < 1:
            raise ValueError(f"the conv bridge needs at least one layer, got {cfg.conv_layers}")
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, self.KERNEL, stride=self.STRIDE, padding=self.PADDING) for _ in range(cfg.conv_layers)
        )
        self.act = nn.GELU()

    def forward(self, states: Tensor, lengths: Tensor, ctc_logits: Tensor) -> tuple[Tensor, Tensor]:
        x = states.transpose(1, 2)
        for conv in self.convs:
            # Zero the padding so it does not leak into the last real frames of short rows.
            x = x * length_mask(lengths, x.size(2)).unsqueeze(1)
            if x.size(2) < 2:  # a one-frame input would give an empty output
                x = nn.functional.pad(x, (0, 2 - x.size(2)))
            x = self.act(conv(x))
            lengths = torch.clamp(lengths // 2, min=1)
        x = x.transpose(1, 2)
        return x * length_mask(lengths, x.size(1)).unsqueeze(-1), lengths


@BRIDGES.register("ctc")
class CTCBridge(nn.Module):
    def __init__(self, cfg: BridgeConfig, dim: int):
        super().__init__()
        self.average_runs = cfg.ctc_average_runs

    def forward(self, states: Tensor, lengths: Tensor, ctc_logits: Tensor) -> tuple[Tensor, Tensor]:
        labels = ctc_logits.argmax(-1).masked_fill(~length_mask(lengths, states.size(1)), 0)
        return ctc_compress(states, lengths, labels, average_runs=self.average_runs)


def ctc_compress(
    states: Tensor, lengths: Tensor, labels: Tensor, blank: int = 0, average_runs: bool = True
) -> tuple[Tensor, Tensor]:
    """Drops blank frames and merges each run of one label into one vector.

    A run is a maximal stretch of consecutive frames with one non-blank label; a blank in
    between starts a new run even for the same label, as in CTC decoding ("a _ a" is two
    a's). An utterance with no non-blank frame keeps the mean of all its frames, so the
    prefix is never empty. Gradients flow through the kept states; the selection itself,
    an argmax, has none.
    """
    b, t, _ = states.shape
    valid = length_mask(lengths, t)
    keep = (labels != blank) & valid
    prev = torch.nn.functional.pad(labels, (1, 0), value=blank)[:, :-1]
    starts = keep & (labels != prev)
    # Run index of every kept frame; frames that are dropped go to a scratch slot at the end.
    run = torch.cumsum(starts.long(), dim=1) - 1
    out_lengths = starts.sum(1)
    width = max(int(out_lengths.max()), 1)
    slot = torch.where(keep, run, torch.full_like(run, width))
    if average_runs:
        weights = keep.to(states.dtype)
    else:
        weights = starts.to(states.dtype)
    sums = states.new_zeros(b, width + 1, states.size(2)).scatter_add_(
        1, slot.unsqueeze(-1).expand_as(states), states * weights.unsqueeze(-1)
    )
    counts = states.new_zeros(b, width + 1).scatter_add_(1, slot, weights)
    out = (sums / counts.clamp(min=1).unsqueeze(-1))[:, :width]
    empty = out_lengths == 0
    if empty.any():
        mean = (states * valid.unsqueeze(-1)).sum(1) / lengths.clamp(min=1).unsqueeze(-1)
        first = torch.arange(width, device=states.device) == 0
        out = torch.where((empty.unsqueeze(1) & first).unsqueeze(-1), mean.unsqueeze(1), out)
        out_lengths = torch.where(empty, torch.ones_like(out_lengths), out_lengths)
    return out, out_lengths


def build_bridge(cfg: BridgeConfig, dim: int) -> nn.Module:
    return BRIDGES.get(cfg.name)(cfg, dim)
