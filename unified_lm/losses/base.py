"""The loss registry, its config and output types, and the pieces the losses share.

A loss is a factory registered by name: ``factory(cfg, speech_ranges) -> LossFn`` with
``LossFn(logits [B,T,V], labels [B,T], roles [B,T]) -> LossOutput``. ``labels`` are the
*unmasked* input ids (time masking changes the inputs, never the labels) and ``roles`` the
per-token roles of ``unified_lm.tasks``; the loss does the next-token shift itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import Registry
from ..tasks import Role


@dataclass
class LossConfig:
    name: str = "sld"  # registry name: mask | ce | sld
    w_text: float = 1.0  # weight of CE on TARGET positions (the task's output: the transcript in ASR)
    w_speech: float = 1.0  # weight of CE on SPEECH_INPUT positions (ce, sld)
    # Weight of the KL on SPEECH_INPUT positions (sld). Under token_mean it weighs the
    # per-token KL, like w_speech weighs the per-token CE. Under batchmean the KL is summed
    # over each utterance's speech tokens, so the same alpha weighs each token about
    # (speech tokens per utterance) times more: the paper's 0.008 with a few hundred
    # speech tokens per utterance is a per-token weight of order 1 there.
    alpha: float = 0.008
    eps: float = 0.1  # label smoothing of q' (q'(k) = (1-eps)*1[k==target] + eps/K)
    temperature: float = 1.0  # T: logits divided by T, KL multiplied by T^2
    kl_target: Literal["smoothed", "softmax_of_smoothed"] = "smoothed"  # the paper's q', or "softmax_of_smoothed" (the released code's quirk)
    kl_reduction: Literal["token_mean", "batchmean"] = "token_mean"  # mean over speech tokens, or "batchmean" (the released code's quirk)
    # Weight of an auxiliary CTC of the transcript read off the input-speech positions
    # (``losses.ctc``), added to whichever loss is named; 0 = the paper's losses unchanged.
    ctc_weight: float = 0.0

    def __post_init__(self):
        LOSSES.get(self.name)  # a token loss: losses/__init__ has imported them all
        if not 0.0 <= self.eps <= 1.0:
            raise ConfigError(f"loss.eps must be in [0, 1], got {self.eps}")
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature must be > 0, got {self.temperature}")
        if self.ctc_weight < 0:
            raise ConfigError(f"loss.ctc_weight must be >= 0, got {self.ctc_weight}")


@dataclass
class LossOutput:
    total: torch.Tensor  # the scalar to back-propagate
    parts: dict[str, torch.Tensor]  # unweighted terms, detached, for logging (ce_text, ce_speech, kl_speech)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LossOutput]
LossFactory = Callable[[LossConfig, list[tuple[int, int]]], LossFn]
LOSSES: Registry[LossFactory] = Registry("loss")


@dataclass
class NextTokens:
    """The positions that carry a loss, each logit row beside the token it predicts."""

    logits: torch.Tensor  # [N, V] float32
    targets: torch.Tensor  # [N]
    roles: torch.Tensor  # [N]
    batch_size: int

    @classmethod
    def select(
        cls, logits: torch.Tensor, labels: torch.Tensor, roles: torch.Tensor, keep: tuple[Role, ...]
    ) -> "NextTokens":
        # The logit at position t predicts token t+1, whose role says which loss it gets.
        logits, labels, roles = logits[:, :-1], labels[:, 1:], roles[:, 1:]
        sel = torch.isin(roles, torch.tensor([int(r) for r in keep], device=roles.device))
        # float32 before the softmax: fp16/bf16 log-probs over a large vocabulary are too coarse.
        return cls(logits[sel].float(), labels[sel], roles[sel], logits.shape[0])

    def mean_ce(self, ce: torch.Tensor, role: Role) -> torch.Tensor:
        """Mean of per-token ``ce`` over the positions of ``role``; 0 when there are none."""
        return masked_mean(ce, self.roles == role)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; exactly 0 (still in the graph) when ``mask`` is empty."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def smoothed_labels(targets: torch.Tensor, num_classes: int, cfg: LossConfig) -> torch.Tensor:
    """q' over ``num_classes`` for class indices ``targets`` [n] -> [n, num_classes]."""
    q = F.one_hot(targets, num_classes).float() * (1.0 - cfg.eps) + cfg.eps / num_classes
    if cfg.kl_target == "softmax_of_smoothed":
        # The released code's target: a softmax over an already normalised distribution,
        # which leaves it nearly uniform (the true class gets at most e^(1-eps) times the rest).
        q = F.softmax(q / cfg.temperature, dim=-1)
    return q


def speech_kl(t: NextTokens, cfg: LossConfig, speech_ranges: list[tuple[int, int]]) -> torch.Tensor:
    """T^2 * KL(q' || p) at SPEECH_INPUT positions, p the tempered softmax over the logits of
    the speech range that holds the target, reduced per ``cfg.kl_reduction``."""
    total = t.logits.new_zeros(())
    count = torch.zeros((), dtype=torch.long, device=t.logits.device)
    for start, stop in speech_ranges:
        sel = (t.roles == Role.SPEECH_INPUT) & (t.targets >= start) & (t.targets < stop)
        log_p = F.log_softmax(t.logits[sel, start:stop] / cfg.temperature, dim=-1)
        q = smoothed_labels(t.targets[sel] - start, stop - start, cfg)
        total = total + F.kl_div(log_p, q, reduction="sum")
        count = count + sel.sum()
    total = total * cfg.temperature**2
    if cfg.kl_reduction == "batchmean":
        return total / t.batch_size
    return total / count.clamp(min=1)


def weighted_sum(**terms: tuple[float, torch.Tensor]) -> LossOutput:
    """``total = sum(weight * term)``; ``parts`` keeps each unweighted term for logging."""
    total = sum(w * value for w, value in terms.values())
    return LossOutput(total, {name: value.detach() for name, (_, value) in terms.items()})
