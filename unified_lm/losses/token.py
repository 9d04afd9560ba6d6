"""Input-speech losses for discrete-token decoders: Loss Masking, multimodal CE, and SLD.

After Chen et al., "Loss Masking Is Not Needed in Decoder-only Transformer for
Discrete-token-based ASR" (ICASSP 2024)::

    mask  L = w_text * CE_text
    ce    L = w_text * CE_text + w_speech * CE_speech
    sld   L = w_text * CE_text + w_speech * CE_speech + alpha * KL_speech

CE over TARGET positions (the task's output) and over SPEECH_INPUT positions (the input
speech); KL_speech = T^2 * KL(q' || p) over the speech range of each target, q' its
label-smoothed one-hot. The released code's two departures (``kl_target``,
``kl_reduction``) are switches; the formulas and what is not reproduced: docs/losses.md.
"""

from __future__ import annotations

import torch.nn.functional as F

from ..tasks import Role
from .base import LOSSES, LossConfig, LossFn, NextTokens, speech_kl, weighted_sum


@LOSSES.register("mask")
def mask(cfg: LossConfig, speech_ranges: list[tuple[int, int]]) -> LossFn:
    """Loss Masking: only the task's output is learned; input speech gets no loss."""

    def loss(logits, labels, roles):
        t = NextTokens.select(logits, labels, roles, keep=(Role.TARGET,))
        ce = F.cross_entropy(t.logits, t.targets, reduction="none")
        return weighted_sum(ce_text=(cfg.w_text, t.mean_ce(ce, Role.TARGET)))

    return loss


@LOSSES.register("ce")
def ce(cfg: LossConfig, speech_ranges: list[tuple[int, int]]) -> LossFn:
    """Multimodal CE: input speech is also predicted, over the full vocabulary."""

    def loss(logits, labels, roles):
        t = NextTokens.select(logits, labels, roles, keep=(Role.TARGET, Role.SPEECH_INPUT))
        ce = F.cross_entropy(t.logits, t.targets, reduction="none")
        return weighted_sum(
            ce_text=(cfg.w_text, t.mean_ce(ce, Role.TARGET)),
            ce_speech=(cfg.w_speech, t.mean_ce(ce, Role.SPEECH_INPUT)),
        )

    return loss


@LOSSES.register("sld")
def sld(cfg: LossConfig, speech_ranges: list[tuple[int, int]]) -> LossFn:
    """Smoothed Label Distillation: multimodal CE plus a smoothed-label KL on input speech."""

    def loss(logits, labels, roles):
        t = NextTokens.select(logits, labels, roles, keep=(Role.TARGET, Role.SPEECH_INPUT))
        ce = F.cross_entropy(t.logits, t.targets, reduction="none")
        return weighted_sum(
            ce_text=(cfg.w_text, t.mean_ce(ce, Role.TARGET)),
            ce_speech=(cfg.w_speech, t.mean_ce(ce, Role.SPEECH_INPUT)),
            kl_speech=(cfg.alpha, speech_kl(t, cfg, speech_ranges)),
        )

    return loss
