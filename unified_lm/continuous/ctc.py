"""CTC pre-training of the prefix encoder on the characters of the transcripts.

    python -m unified_lm.continuous.ctc --config experiments/prefix_ctc.yaml [key=value ...]

Writes ``out_dir/best`` (the encoder with the lowest dev CTC loss; load it with
``model.encoder_init``), ``metrics.jsonl``, ``tb/`` and ``summary.json``. Dev metrics
include the greedy CTC character error rate, a quick check that the encoder hears words.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate.utils import set_seed
import torch.nn.functional as F
from torch import nn

from ..config import load_config, save_config
from ..errors import ConfigError, UnifiedLMError
from ..losses import LossOutput
from ..models.decoder import eval_mode
from ..models.prefix import PrefixEncoder
from ..models.prefix.model import utterance_norm
from ..scoring import score_corpus
from .checkpoint import save_encoder_checkpoint
from .config import CTCPretrainConfig
from .data import CharVocab, Utterance, batches, load_utterances
from .features import MelFrontend
from .loop import Task, epoch_rng, fit

logger = logging.getLogger("unified_lm.continuous")


def collate_ctc(utts: Sequence[Utterance], chars: CharVocab) -> dict[str, torch.Tensor]:
    labels = [chars.encode(u.text) for u in utts]
    feats = torch.nn.utils.rnn.pad_sequence([u.feats for u in utts], batch_first=True)
    targets = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(x or [0], dtype=torch.long) for x in labels], batch_first=True
    )
    return {
        "feats": feats,
        "feat_lengths": torch.tensor([u.feats.size(0) for u in utts]),
        "targets": targets,
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


def ctc_loss(model: CTCModel, batch: dict[str, torch.Tensor], device: torch.device) -> LossOutput:
    batch = {k: v.to(device) for k, v in batch.items()}
    log_probs, lengths = model(batch["feats"], batch["feat_lengths"])
    loss = F.ctc_loss(
        log_probs.transpose(0, 1), batch["targets"], lengths, batch["target_lengths"], blank=0, zero_infinity=True
    )
    return LossOutput(loss, {"ctc": loss.detach()})


@torch.no_grad()
def evaluate_ctc(model: CTCModel, chars: CharVocab, utts: Sequence[Utterance], batch_size: int) -> dict[str, float]:
    """Dev CTC loss (per utterance) and greedy-decoding CER / WER."""
    with eval_mode(model):
        device = next(model.parameters()).device
        total, refs, hyps = 0.0, [], []
        for group in batches(utts, batch_size):
            batch = {k: v.to(device) for k, v in collate_ctc(group, chars).items()}
            total += float(ctc_loss(model, batch, device).total) * len(group)
            log_probs, lengths = model(batch["feats"], batch["feat_lengths"])
            for row, n, u in zip(log_probs.argmax(-1).tolist(), lengths.tolist(), group):
                hyps.append(chars.decode_ctc(row[:n]))
                refs.append(u.text)
    scores = score_corpus(refs, hyps)
    return {"loss": total / len(utts), "cer": scores["cer"], "wer": scores["wer"]}


def pretrain_ctc(cfg: CTCPretrainConfig) -> dict[str, Any]:
    """Pre-trains the encoder with CTC on ``data.train``'s whole utterances (``audio``/``text``)."""
    if cfg.mel.n_mels != cfg.encoder.n_mels:
        raise ConfigError(f"mel.n_mels ({cfg.mel.n_mels}) and encoder.n_mels ({cfg.encoder.n_mels}) differ")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    frontend = MelFrontend(cfg.mel)
    speeds = sorted(cfg.data.speed_perturb, key=lambda f: f != 1.0)  # unperturbed first: the dev fallback
    train = [u for f in speeds for u in load_utterances(cfg.data.train, frontend, mode="asr", speed=f)]
    dev = (
        load_utterances(cfg.data.dev, frontend, mode="asr", limit=cfg.data.max_dev_utts)
        if cfg.data.dev
        else train[: cfg.data.max_dev_utts]
    )
    chars = CharVocab.build(u.text for u in train)
    set_seed(cfg.seed)  # the model's init and then the training streams, as in unified_lm.train
    model = CTCModel(PrefixEncoder(cfg.encoder, len(chars)))
    task = Task(
        loss=ctc_loss,
        epoch_batches=lambda epoch: [
            collate_ctc(g, chars) for g in batches(train, cfg.optim.batch_size, epoch_rng(cfg.seed, epoch))
        ],
        evaluate=lambda m: evaluate_ctc(m, chars, dev, cfg.optim.batch_size),
        save_best=lambda m: save_encoder_checkpoint(out / "best", m.encoder, chars, cfg),
    )
    extra = {"train_utts": len(train), "dev_utts": len(dev), "chars": len(chars)}
    return fit(model, task, cfg.optim, out, cfg.seed, desc="ctc", extra=extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unified_lm.continuous.ctc", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="e.g. experiments/prefix_ctc.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.max_steps=500")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pretrain_ctc(load_config(CTCPretrainConfig, args.config, args.overrides))
    except UnifiedLMError as e:
        print(f"unified_lm.continuous.ctc: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
