"""Spectron's training loss for the prefix LM, registered as ``spectron``.

One teacher-forced sequence ``[prefix] <asr> transcript <cont> continuation <spec> frames
<spec_end>`` gets:

- cross-entropy on its text targets (transcript, ``<cont>``, continuation text, ``<spec>``),
  weighted by ``w_text`` (0 is Spectron's "no ASR/LM cross-entropy" ablation);
- on the spectrogram frames, before and after the post-net: L1 + L2 between predicted and
  true frames, plus the *derivative loss*, L1 + L2 between their first differences along
  time and along frequency (weighted by ``w_deriv``; 0 is the "no derivative loss" ablation);
- binary cross-entropy of the stop logit (is the next element ``<spec_end>``?);
- optionally CTC on the encoder's character head (``w_ctc``), which the ``ctc`` bridge needs.

Unlike the token losses (``factory(LossConfig, speech_ranges)`` returning
``fn(logits, labels, roles)``), this factory takes a ``SpectronLossConfig`` and returns a
``SpectronLoss`` called with a ``SpectronPrediction`` and a ``SpectronTarget``: the frames
do not fit the token-loss signature. The speech ranges are unused (the prefix LM has no
speech tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..models.prefix import SpectronPrediction
from .base import LOSSES, LossOutput, masked_mean, weighted_sum

IGNORE = -100  # text_labels value of positions without a text target


@dataclass
class SpectronLossConfig:
    w_text: float = 1.0  # CE on the text targets (transcript and continuation)
    w_l1: float = 1.0  # L1 terms (frames and their derivatives)
    w_l2: float = 1.0  # L2 (squared error) terms
    w_deriv: float = 1.0  # derivative losses along time and frequency
    w_postnet: float = 1.0  # the same regression losses on the post-net output
    w_stop: float = 1.0
    stop_pos_weight: float = 5.0  # one stop per utterance against dozens of "go on": up-weight it
    w_ctc: float = 0.0  # CTC on the encoder's character head

    def __post_init__(self):
        negative = [k for k, v in vars(self).items() if v < 0]
        if negative:
            raise ConfigError(f"loss: weights must be >= 0, got negative {negative}")


@dataclass
class SpectronTarget:
    text_labels: Tensor  # [B, S] the id position s must predict, IGNORE where none
    continuation: Tensor  # [B, S] bool, the targets that belong to the continuation text
    frames: Tensor  # [B, N, n_mels] true frames (normalised)
    frame_mask: Tensor  # [B, N] bool, True on real frames
    stop: Tensor  # [B, M+1] 1.0 where the next element is <spec_end>
    stop_mask: Tensor  # [B, M+1] bool
    chars: Tensor  # [B, L] CTC targets (character ids, 1-based; 0 is blank)
    char_lengths: Tensor  # [B]

    def to(self, device: torch.device | str) -> "SpectronTarget":
        return SpectronTarget(**{k: v.to(device) for k, v in vars(self).items()})


def regression_terms(pred: Tensor, target: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Mean absolute and squared error of frames ``[B, N, F]`` over the real frames, and the
    same for first differences along time (pairs of real frames) and frequency."""
    err = pred.float() - target.float()
    frames = mask.unsqueeze(-1).expand_as(err)
    d_time = err[:, 1:] - err[:, :-1]  # = diff(pred) - diff(target) along time
    pairs = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1).expand_as(d_time)
    d_freq = err[..., 1:] - err[..., :-1]
    return {
        "l1": masked_mean(err.abs(), frames),
        "l2": masked_mean(err.square(), frames),
        "dt_l1": masked_mean(d_time.abs(), pairs),
        "dt_l2": masked_mean(d_time.square(), pairs),
        "df_l1": masked_mean(d_freq.abs(), frames[..., 1:]),
        "df_l2": masked_mean(d_freq.square(), frames[..., 1:]),
    }


class SpectronLoss:
    def __init__(self, cfg: SpectronLossConfig):
        self.cfg = cfg

    def spectrogram(self, pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction, derivative) losses, each L1 and L2 weighted by the config."""
        t = regression_terms(pred, target, mask)
        recon = self.cfg.w_l1 * t["l1"] + self.cfg.w_l2 * t["l2"]
        deriv = self.cfg.w_l1 * (t["dt_l1"] + t["df_l1"]) + self.cfg.w_l2 * (t["dt_l2"] + t["df_l2"])
        return recon, deriv

    def __call__(self, pred: SpectronPrediction, target: SpectronTarget) -> LossOutput:
        cfg = self.cfg
        ce = F.cross_entropy(
            pred.text_logits.float().transpose(1, 2), target.text_labels, ignore_index=IGNORE, reduction="none"
        )
        has_text = target.text_labels != IGNORE
        recon, deriv = self.spectrogram(pred.frames, target.frames, target.frame_mask)
        post_recon, post_deriv = self.spectrogram(pred.frames_post, target.frames, target.frame_mask)
        stop = F.binary_cross_entropy_with_logits(
            pred.stop_logits.float(),
            target.stop,
            pos_weight=torch.tensor(cfg.stop_pos_weight, device=target.stop.device),
            reduction="none",
        )
        out = weighted_sum(
            ce_text=(cfg.w_text, masked_mean(ce, has_text)),
            recon=(1.0, recon),
            deriv=(cfg.w_deriv, deriv),
            post_recon=(cfg.w_postnet, post_recon),
            post_deriv=(cfg.w_postnet * cfg.w_deriv, post_deriv),
            stop=(cfg.w_stop, masked_mean(stop, target.stop_mask)),
            ctc=(cfg.w_ctc, self.ctc(pred, target) if cfg.w_ctc > 0 else ce.new_zeros(())),
        )
        # Logged, not optimised on its own: nats per continuation token, the ablation metric.
        out.parts["ce_continuation"] = masked_mean(ce, target.continuation & has_text).detach()
        return out

    @staticmethod
    def ctc(pred: SpectronPrediction, target: SpectronTarget) -> Tensor:
        log_probs = F.log_softmax(pred.ctc_logits.float(), dim=-1).transpose(0, 1)  # [T, B, C]
        return F.ctc_loss(
            log_probs, target.chars, pred.ctc_lengths, target.char_lengths, blank=0, zero_infinity=True
        )


@LOSSES.register("spectron")
def spectron_loss(cfg: SpectronLossConfig, speech_ranges: list[tuple[int, int]] | None = None) -> SpectronLoss:
    if not isinstance(cfg, SpectronLossConfig):
        # The discrete-token trainer builds every loss from a LossConfig: fail there with a
        # pointer, not later with a signature mismatch on the first batch.
        raise ConfigError(
            "loss 'spectron' trains the prefix LM (unified-lm train prefix); "
            "it takes no discrete-token batches: use mask, ce or sld here"
        )
    return SpectronLoss(cfg)
