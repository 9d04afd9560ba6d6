"""Input-speech losses for discrete-token decoders: Loss Masking, multimodal CE, and SLD.

After Chen et al., "Loss Masking Is Not Needed in Decoder-only Transformer for
Discrete-token-based ASR" (ICASSP 2024)::

    mask  L = w_text * CE_text
    ce    L = w_text * CE_text + w_speech * CE_speech
    sld   L = w_text * CE_text + w_speech * CE_speech + alpha * KL_speech

CE_text is the next-token cross-entropy over the full vocabulary averaged over TARGET
positions (the task's output: the transcript and <text_end> in ASR); CE_speech the same
over SPEECH_INPUT positions (the input speech). A kind absent from the batch contributes 0.

KL_speech = T^2 * KL(q' || p) at each SPEECH_INPUT position, where p is the softmax of the
logits / T restricted to the speech range that holds the target (one range per tokenizer
codebook, of size K) and q'(k) = (1 - eps) * 1[k == target] + eps / K. With this target the
KL is label-smoothed CE over the speech sub-vocabulary minus the (constant) entropy of q':
it teaches the speech distribution without letting mass leak to text tokens.

Defaults follow the paper's formula: ``kl_target="smoothed"``, ``kl_reduction="token_mean"``
(the KL averaged over speech tokens, like the CE terms). The released code differs in two
ways, each switchable for an exact reproduction:

- ``kl_target="softmax_of_smoothed"``: its target is softmax(q' / T), nearly uniform over
  the speech vocabulary, which turns the term into a confidence penalty on speech tokens.
- ``kl_reduction="batchmean"``: its KL is summed over positions and classes and divided by
  the batch size, so alpha acts per token about (speech tokens per utterance) times more
  strongly than under token_mean; with token_mean, alpha = 0.008 is a much weaker weight.
  To match the released strength under token_mean, scale alpha by the mean number of
  speech tokens per utterance.

Not reproduced: the released code also applies its KL at text positions (their targets
clamped to speech class 0) and pads every batch to the block size.
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
