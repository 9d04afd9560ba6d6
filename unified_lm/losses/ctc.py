"""An auxiliary CTC term that reads the transcript off the input-speech positions.

Joint CTC/attention training (Watanabe et al., "Hybrid CTC/Attention Architecture for
End-to-End Speech Recognition", 2017) adds a CTC loss on the speech representations so a
model trained from scratch on little data learns the speech-to-text alignment quickly,
instead of first settling into a language model of the transcripts that ignores the audio.
In a decoder-only model the "encoder" states are the hidden states at the input-speech
positions: the logit row at each position whose *input* is a speech token is read, over
the text sub-vocabulary plus ``<pad>`` as the CTC blank, against the transcript's text
tokens. No parameter is added (the output layer is shared), so checkpoints keep loading
with ``AutoModelForCausalLM`` and ``ctc_weight: 0`` gives back the plain losses exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..tasks import Role
from .base import LossFn, LossOutput


def speech_ctc(logits: torch.Tensor, labels: torch.Tensor, roles: torch.Tensor, text_size: int) -> torch.Tensor:
    """CTC of the transcripts (text TARGET tokens) given the logits at input-speech positions,
    over ids ``[0, text_size]`` with ``text_size`` (``<pad>``) as the blank; averaged over the
    sequences that have both (ASR), each divided by its transcript length. 0 when none."""
    frames = roles == Role.SPEECH_INPUT  # the input at this position is a speech token
    targets = (roles == Role.TARGET) & (labels < text_size)
    n_frames, n_targets = frames.sum(1), targets.sum(1)
    rows = (n_frames > 0) & (n_targets > 0)
    if not rows.any():
        return logits.new_zeros((), dtype=torch.float32)
    frames, targets, n_frames, n_targets = frames[rows], targets[rows], n_frames[rows], n_targets[rows]
    # Stable sort brings each row's selected positions to the front, in order.
    frame_pos = torch.argsort((~frames).int(), dim=1, stable=True)[:, : int(n_frames.max())]
    target_pos = torch.argsort((~targets).int(), dim=1, stable=True)[:, : int(n_targets.max())]
    text_logits = logits[..., : text_size + 1][rows].float()  # slice first: copy only the text columns
    index = frame_pos.unsqueeze(-1).expand(-1, -1, text_size + 1)
    log_probs = F.log_softmax(text_logits.gather(1, index), dim=-1)
    return F.ctc_loss(
        log_probs.transpose(0, 1), labels[rows].gather(1, target_pos), n_frames, n_targets,
        blank=text_size, reduction="mean", zero_infinity=True,
    )


def with_speech_ctc(loss_fn: LossFn, weight: float, text_size: int) -> LossFn:
    """``loss_fn`` plus ``weight * speech_ctc`` (logged as the part ``ctc_speech``)."""

    def loss(logits, labels, roles) -> LossOutput:
        out = loss_fn(logits, labels, roles)
        ctc = speech_ctc(logits, labels, roles, text_size)
        return LossOutput(out.total + weight * ctc, {**out.parts, "ctc_speech": ctc.detach()})

    return loss
