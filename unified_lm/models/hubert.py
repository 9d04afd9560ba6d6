"""A small HuBERT (Hsu et al. 2021) for masked-prediction pre-training on the corpus's own audio.

The encoder is ``transformers.HubertModel`` itself (conv front end over the 16 kHz
waveform, 50 frames/s, pre-LN Transformer), so its checkpoint is a Hugging Face
directory the ``ssl`` features read exactly as a downloaded HuBERT. With ``frontend:
fbank`` fixed log-mel filterbanks (FbankFrontEnd) take the conv layers' place: a CPU step
then costs about a quarter, and ``load_hf_hubert`` restores them on loading. Beside it
sit the pre-training head of the paper: a projection and one embedding per target unit, scored
by cosine similarity over a temperature. Spans of frames are masked (their inputs
replaced by a learned embedding) and the loss is the cross-entropy of the targets at
masked frames only (the paper's ``pred_nomask_weight = 0``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import ConfigError

FBANK_BINS, FBANK_WINDOW, FBANK_SHIFT = 80, 400, 160  # Kaldi's 25 ms / 10 ms at 16 kHz
HEAD_WEIGHTS = "hubert_head.safetensors"  # the pre-training head, beside the HF model files
TARGETS_FILE = "hubert_targets.json"  # what the head predicts: the target tokenizer


@dataclass
class HubertSize:
    """HuBERT-Base is 768 wide, 12 layers, 512 conv channels (95M parameters); this default has 5.5M."""

    hidden_size: int = 256
    num_layers: int = 6
    num_heads: int = 4
    ffn_dim: int = 1024
    # The conv front end over the waveform: HuBERT's seven layers, 320 samples (20 ms) a
    # frame. The first ones run at 3,200 and 1,600 frames/s and cost most of a CPU step
    # (measured: 128 channels everywhere takes 1.8x the step time of these).
    conv_dim: list[int] = field(default_factory=lambda: [64, 64, 128, 128, 128, 256, 256])
    conv_kernel: list[int] = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list[int] = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    # "fbank": no learned front end: 80-dim Kaldi log-mel filterbanks (per-utterance mean
    # normalised, 100 frames/s), ``fbank_stack`` frames stacked into one (4: 25 frames/s),
    # as the "Transformer encoder over fbank". The conv_* keys are then unused.
    frontend: Literal["conv", "fbank"] = "conv"
    fbank_stack: int = 2
    conv_pos: int = 64  # kernel of the convolutional position embedding (Base: 128)
    conv_pos_groups: int = 16
    dropout: float = 0.1
    proj_dim: int = 256  # the head's projection (the paper's final_proj)
    temperature: float = 0.1  # of the cosine-similarity logits

    def __post_init__(self):
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride) or not self.conv_dim:
            raise ConfigError(f"model.conv_dim, conv_kernel and conv_stride: one entry per conv layer, got "
                              f"{self.conv_dim}, {self.conv_kernel}, {self.conv_stride}")
        if self.fbank_stack < 1:
            raise ConfigError(f"model.fbank_stack: must be >= 1, got {self.fbank_stack}")
        if self.hidden_size % self.num_heads or self.hidden_size % self.conv_pos_groups:
            raise ConfigError("model.hidden_size: must be a multiple of num_heads and conv_pos_groups")
        if not self.temperature > 0:
            raise ConfigError(f"model.temperature: must be > 0, got {self.temperature}")

    @property
    def convs(self) -> list[tuple[int, int]]:
        """The front end's ``(kernel, stride)`` in samples: the conv layers', or for fbank
        its 25 ms window every 10 ms followed by the stacking (the same frame arithmetic)."""
        if self.frontend == "fbank":
            return [(FBANK_WINDOW, FBANK_SHIFT), (self.fbank_stack, self.fbank_stack)]
        return list(zip(self.conv_kernel, self.conv_stride))

    @property
    def hop(self) -> int:
        """Samples per frame (320 at 16 kHz: 50 frames/s)."""
        return math.prod(stride for _, stride in self.convs)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees: the shortest input that makes a frame (400 for HuBERT's)."""
        return receptive_field(self.convs)

    def num_frames(self, num_samples: int) -> int:
        """Frames the front end makes of ``num_samples`` (0 when too short for one)."""
        return conv_frames(num_samples, self.convs)

    def hf_config(self):
        from transformers import HubertConfig

        if self.frontend == "fbank":  # the geometry of FbankFrontEnd, so HF's frame arithmetic holds
            front = {"conv_dim": (FBANK_BINS, FBANK_BINS * self.fbank_stack), "frontend": "fbank",
                     "conv_kernel": tuple(k for k, _ in self.convs), "conv_stride": tuple(s for _, s in self.convs)}
        else:
            front = {"conv_dim": tuple(self.conv_dim), "conv_kernel": tuple(self.conv_kernel),
                     "conv_stride": tuple(self.conv_stride)}
        return HubertConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            intermediate_size=self.ffn_dim, **front, conv_bias=True, num_conv_pos_embeddings=self.conv_pos,
            num_conv_pos_embedding_groups=self.conv_pos_groups,
            # HuBERT-Large's layout (layer-norm front end, pre-LN blocks): stable from scratch
            # without Base's feature-gradient scaling, and no group norm over padding.
            feat_extract_norm="layer", do_stable_layer_norm=True,
            hidden_dropout=self.dropout, attention_dropout=self.dropout, feat_proj_dropout=self.dropout,
            activation_dropout=0.0, layerdrop=0.0,
            # Pre-training passes its own masks (seeded per step, so a resumed run draws the
            # same). transformers creates the learned mask embedding only when mask_time_prob
            # > 0: its default, the SpecAugment of a later fine-tuning, keeps it.
            apply_spec_augment=True, mask_time_prob=0.05, mask_time_length=10, mask_feature_prob=0.0,
        )


class HubertPretrainModel(nn.Module):
    """``HubertModel`` + the masked-prediction head over ``num_targets`` units."""

    def __init__(self, cfg: HubertSize, num_targets: int):
        super().__init__()
        from transformers import HubertModel

        self.cfg = cfg
        self.hubert = with_frontend(HubertModel(cfg.hf_config()))
        self.final_proj = nn.Linear(cfg.hidden_size, cfg.proj_dim)
        self.label_embs = nn.Parameter(torch.randn(num_targets, cfg.proj_dim) * cfg.proj_dim**-0.5)

    def forward(self, wavs: Tensor, mask: Tensor) -> Tensor:
        """``wavs`` [B, S], ``mask`` [B, T] (True: masked) -> logits [masked frames, targets]."""
        states = self.hubert(wavs, mask_time_indices=mask).last_hidden_state
        proj = F.normalize(self.final_proj(states[mask]), dim=-1)
        return proj @ F.normalize(self.label_embs, dim=-1).T / self.cfg.temperature


class FbankFrontEnd(nn.Module):
    """HubertModel's feature extractor slot filled by fixed filterbanks: ``[B, S]`` waveforms ->
    ``[B, 80 * stack, frames]``, each row mean-normalised over its own frames (so a row of a
    padded batch is not what the utterance alone gives: feed utterances one at a time)."""

    def __init__(self, stack: int):
        super().__init__()
        self.stack = stack

    def forward(self, wavs: Tensor) -> Tensor:
        from ..audio import fbank, mean_normalize

        rows = []
        for wav in wavs.float().cpu():
            f = mean_normalize(fbank(wav))
            n = f.shape[0] // self.stack
            rows.append(f[: n * self.stack].reshape(n, -1).T)
        return torch.stack(rows).to(wavs.device, wavs.dtype)


def with_frontend(model):
    """``model`` (a HubertModel) with FbankFrontEnd in place of its conv layers when its config
    says ``frontend: fbank``; a stock ``HubertModel.from_pretrained`` of such a directory
    leaves random conv layers there, so load it with ``load_hf_hubert``."""
    if getattr(model.config, "frontend", "conv") == "fbank":
        model.feature_extractor = FbankFrontEnd(model.config.conv_stride[-1])
    return model


def load_hf_hubert(path: Path, **kwargs):
    """``AutoModel.from_pretrained(path)`` with the fbank front end restored where the config names it."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if config.get("frontend", "conv") != "fbank":
        return AutoModel.from_pretrained(path, **kwargs)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the conv layers it reports missing are replaced just below
    try:
        return with_frontend(AutoModel.from_pretrained(path, **kwargs))
    finally:
        hf_logging.set_verbosity(verbosity)


def conv_frames(num_samples: int, convs: Iterable[tuple[int, int]]) -> int:
    """Frames a stack of unpadded 1-D convolutions, ``(kernel, stride)`` each, makes of
    ``num_samples`` (0 when too short for one)."""
    for kernel, stride in convs:
        num_samples = (num_samples - kernel) // stride + 1 if num_samples >= kernel else 0
    return num_samples


def receptive_field(convs: Iterable[tuple[int, int]]) -> int:
    """Samples one output frame of a stack of 1-D convolutions, ``(kernel, stride)`` each, sees."""
    samples = 1
    for kernel, stride in reversed(list(convs)):
        samples = (samples - 1) * stride + kernel
    return samples


def span_mask(batch: int, frames: int, prob: float, length: int, generator: torch.Generator) -> Tensor:
    """HuBERT's (wav2vec 2.0's) time masks [batch, frames]: in each row, ``prob * frames /
    length`` span starts (rounded at random, at least one) drawn without replacement, each
    masking ``length`` frames; overlapping spans merge, so about ``1 - exp(-prob)`` of the
    frames end up masked."""
    length = min(length, frames)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    starts_max = frames - length + 1
    for row in range(batch):
        num = max(1, min(starts_max, int(prob * frames / length + torch.rand((), generator=generator))))
        starts = torch.randperm(starts_max, generator=generator)[:num]
        mask[row, (starts.unsqueeze(1) + torch.arange(length)).flatten()] = True
    return mask


def save_hubert(directory: Path, model: HubertPretrainModel, targets: dict) -> None:
    """A ``HubertModel`` directory (``from_pretrained`` loads it) plus the head and what it predicts."""
    model.hubert.save_pretrained(directory)
    head = {f"final_proj.{k}": v for k, v in model.final_proj.state_dict().items()}
    save_file({**head, "label_embs": model.label_embs.detach()}, str(directory / HEAD_WEIGHTS))
    (directory / TARGETS_FILE).write_text(json.dumps(targets, indent=2) + "\n", encoding="utf-8")


def load_hubert(directory: Path, model: HubertPretrainModel) -> None:
    """Reads ``save_hubert``'s weights back into ``model``."""
    model.hubert.load_state_dict(load_file(str(directory / "model.safetensors")))
    head = load_file(str(directory / HEAD_WEIGHTS))
    model.label_embs.data.copy_(head.pop("label_embs"))
    model.final_proj.load_state_dict({k.removeprefix("final_proj."): v for k, v in head.items()})
