"""Recipe ``ctc``: CTC pre-training of the speech encoder on the transcripts' characters.

    unified-lm train ctc --config experiments/prefix_ctc.yaml [key=value ...]

``best/`` is the encoder with the lowest dev CTC loss: the prefix LM starts from it
(``model.encoder_init``) and the ``ctc_encoder`` tokenizers cluster its states. Dev scores
include the greedy CTC character error rate, a quick check that the encoder hears words.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn

from ..audio.mel import MelFrontend
from ..losses import LossOutput
from ..models import ENCODER_WEIGHTS, eval_mode, write_encoder_checkpoint
from ..models.prefix import PrefixEncoder
from ..models.prefix.model import utterance_norm
from ..prefix_lm.utterances import Utterance, batches, dev_or_head, load_utterances
from ..scoring import score_corpus
from ..training import Task, TrainingRecipe
from ..vocab import CharVocab
from .batching import epoch_rng, per_rank, shard
from .configs import CTCEncoderConfig


def collate_ctc(utts: Sequence[Utterance], chars: CharVocab) -> dict[str, torch.Tensor]:
    labels = [chars.encode(u.text) for u in utts]
    pad = torch.nn.utils.rnn.pad_sequence
    return {
        "feats": pad([u.feats for u in utts], batch_first=True),
        "feat_lengths": torch.tensor([u.feats.size(0) for u in utts]),
        "targets": pad([torch.tensor(x or [0], dtype=torch.long) for x in labels], batch_first=True),
        "target_lengths": torch.tensor([len(x) for x in labels]),
    }


class CTCModel(nn.Module):
    """The encoder and its CTC head in one ``forward``, the unit that training (and DDP) wraps."""

    def __init__(self, encoder: PrefixEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-frame log-probs [B, T', C], their lengths)."""
        states, out_lengths = self.encoder(utterance_norm(feats, lengths), lengths)
        return F.log_softmax(self.encoder.ctc_logits(states).float(), dim=-1), out_lengths


def _ctc(log_probs: torch.Tensor, lengths: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.ctc_loss(
        log_probs.transpose(0, 1), batch["targets"], lengths, batch["target_lengths"], blank=0, zero_infinity=True
    )


def ctc_loss(model: CTCModel, batch: dict[str, torch.Tensor], device: torch.device) -> LossOutput:
    batch = {k: v.to(device) for k, v in batch.items()}
    loss = _ctc(*model(batch["feats"], batch["feat_lengths"]), batch)
    return LossOutput(loss, {"ctc": loss.detach()})


@torch.no_grad()
def evaluate_ctc(model: CTCModel, chars: CharVocab, utts: Sequence[Utterance], batch_size: int) -> dict[str, float]:
    """Dev CTC loss (per utterance) and greedy-decoding CER / WER."""
    with eval_mode(model):
        device = next(model.parameters()).device
        total, refs, hyps = 0.0, [], []
        for group in batches(utts, batch_size):
            batch = {k: v.to(device) for k, v in collate_ctc(group, chars).items()}
            log_probs, lengths = model(batch["feats"], batch["feat_lengths"])
            total += float(_ctc(log_probs, lengths, batch)) * len(group)
            for row, n, u in zip(log_probs.argmax(-1).tolist(), lengths.tolist(), group):
                hyps.append(chars.decode_ctc(row[:n]))
                refs.append(u.text)
    scores = score_corpus(refs, hyps)
    return {"loss": total / len(utts), "cer": scores["cer"], "wer": scores["wer"]}


def setup(cfg: CTCEncoderConfig, accelerator: Accelerator, resuming: bool) -> Task:
    """The encoder learns CTC on ``data.train``'s whole utterances (``audio``/``text``)."""
    frontend = MelFrontend(cfg.mel)
    speeds = sorted(cfg.data.speed_perturb, key=lambda f: f != 1.0)  # unperturbed first: the dev fallback
    train = [u for f in speeds for u in load_utterances(cfg.data.train, frontend, mode="asr", speed=f)]
    dev = dev_or_head(cfg.data.dev, frontend, train, cfg.eval.max_utts)
    chars = CharVocab.build(u.text for u in train)
    model = CTCModel(PrefixEncoder(cfg.encoder, len(chars)))
    bs = cfg.data.batch_size
    return Task(
        model=model,
        epoch_batches=lambda epoch, skip: shard(
            batches(train, bs, epoch_rng(cfg.seed, epoch)), accelerator, skip, lambda g: collate_ctc(g, chars)
        ),
        batches_per_epoch=per_rank(len(batches(train, bs)), accelerator),
        loss=lambda m, batch, where: ctc_loss(m, batch, where.device),
        save=lambda directory, m: write_encoder_checkpoint(directory, m.encoder, chars, cfg),
        load=lambda directory, m: m.encoder.load_state_dict(load_file(str(directory / ENCODER_WEIGHTS))),
        evaluate=lambda m: evaluate_ctc(m, chars, dev, cfg.eval.batch_size),
        size=lambda batch: int(batch["feat_lengths"].sum()),
        unit="frames",
        facts={"train_utts": len(train), "dev_utts": len(dev), "chars": len(chars)},
    )


RECIPE = TrainingRecipe("ctc", CTCEncoderConfig, setup, help="CTC pre-training of the speech encoder on characters")
