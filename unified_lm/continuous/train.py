"""Training the prefix LM on Spectron's teacher-forced sequences.

    python -m unified_lm.continuous.train --config experiments/prefix_spectron.yaml [key=value ...]

A run writes into ``out_dir``: ``config.yaml``, ``vocab/`` (unless one is given),
``metrics.jsonl``, ``tb/``, ``best/`` (the lowest dev loss; see ``checkpoint``) and
``summary.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate.utils import set_seed

from ..config import load_config, save_config
from ..errors import UnifiedLMError
from ..losses import LOSSES
from ..losses.spectrogram import IGNORE, SpectronLoss
from ..models.checkpoint import TRAIN_CONFIG_FILE
from ..models.decoder import build_model, eval_mode
from ..models.prefix import PrefixLM
from ..vocab import UnifiedVocab
from .checkpoint import load_encoder_checkpoint, save_prefix_checkpoint
from .config import CTCPretrainConfig, PrefixTrainConfig
from .data import CharVocab, Packer, Utterance, batches, frame_stats, load_utterances
from .features import MelFrontend
from .loop import Task, epoch_rng, fit

logger = logging.getLogger("unified_lm.continuous")


def resolve_vocab(cfg: PrefixTrainConfig, train: Sequence[Utterance], out: Path) -> UnifiedVocab:
    """The initial decoder's vocabulary (its embeddings are indexed by it), else
    ``data.vocab``, else a BPE trained on the training texts."""
    source = cfg.model.decoder.init_from or cfg.data.vocab
    if source:
        return UnifiedVocab.load(source)
    vocab_dir = out / "vocab"
    if not (vocab_dir / "unified_vocab.json").is_file():
        texts = [t for u in train for t in (u.text, u.cont_text) if t]
        UnifiedVocab.train(texts, [], cfg.data.text_vocab_size).save(vocab_dir)
    return UnifiedVocab.load(vocab_dir)


def adopt_encoder_settings(cfg: PrefixTrainConfig) -> None:
    """With ``model.encoder_init``, the encoder shape, mel front end and characters must be
    those the encoder was pre-trained with: take them from its directory."""
    enc_cfg = load_config(CTCPretrainConfig, Path(cfg.model.encoder_init) / TRAIN_CONFIG_FILE)
    if enc_cfg.encoder != cfg.model.encoder or enc_cfg.mel != cfg.mel:
        logger.warning("using the encoder and mel settings of %s, not those of the config", cfg.model.encoder_init)
    cfg.model.encoder, cfg.mel = enc_cfg.encoder, enc_cfg.mel


def build_prefix_model(cfg: PrefixTrainConfig, vocab: UnifiedVocab, train: Sequence[Utterance]) -> tuple[PrefixLM, CharVocab]:
    """A fresh prefix LM: decoder from ``model.decoder`` (preset or ``init_from``), encoder
    random or from ``model.encoder_init``, frame statistics from ``train``."""
    if cfg.model.encoder_init:
        encoder, chars, _ = load_encoder_checkpoint(cfg.model.encoder_init)
    else:
        encoder, chars = None, CharVocab.build(u.text for u in train)
    model = PrefixLM(cfg.model, build_model(cfg.model.decoder, vocab), len(chars))
    if encoder is not None:
        model.encoder.load_state_dict(encoder.state_dict())
    model.frame_mean, model.frame_std = frame_stats(train)
    return model, chars


def spectron_step(model: PrefixLM, loss_fn: SpectronLoss, batch, device: torch.device):
    packed, target = batch
    return loss_fn(model(packed.to(device)), target.to(device))


@torch.no_grad()
def evaluate_teacher_forced(
    model: PrefixLM, packer: Packer, loss_fn: SpectronLoss, utts: Sequence[Utterance], batch_size: int
) -> dict[str, float]:
    """Teacher-forced dev/test metrics, pooled over tokens and frames (not averaged over batches).

    ``loss``: the training objective (per utterance); ``text_ce``: nats per text target;
    ``cont_logppl``: nats per continuation-text token (``<spec>`` included), Spectron's
    ablation metric; ``spec_l1``: mean absolute error of the post-net frames in log-mel
    units (natural log of mel power).
    """
    with eval_mode(model):
        device = next(model.parameters()).device
        sums = dict.fromkeys(("loss", "text_nll", "text_n", "cont_nll", "cont_n", "l1", "l1_n", "utts"), 0.0)
        for group in batches(utts, batch_size):
            packed, target = packer.collate(group)
            packed, target = packed.to(device), target.to(device)
            pred = model(packed)
            sums["loss"] += float(loss_fn(pred, target).total) * len(group)
            sums["utts"] += len(group)
            nll = torch.nn.functional.cross_entropy(
                pred.text_logits.float().transpose(1, 2), target.text_labels, ignore_index=IGNORE, reduction="none"
            )
            has_text = target.text_labels != IGNORE
            sums["text_nll"] += float(nll[has_text].sum())
            sums["text_n"] += int(has_text.sum())
            cont = has_text & target.continuation
            sums["cont_nll"] += float(nll[cont].sum())
            sums["cont_n"] += int(cont.sum())
            err = (pred.frames_post - target.frames) * model.frame_std  # normalised -> log-mel units
            sums["l1"] += float(err.abs()[target.frame_mask].sum())
            sums["l1_n"] += int(target.frame_mask.sum()) * err.size(-1)
    return {
        "loss": sums["loss"] / max(sums["utts"], 1),
        "text_ce": sums["text_nll"] / max(sums["text_n"], 1),
        "cont_logppl": sums["cont_nll"] / max(sums["cont_n"], 1),
        "spec_l1": sums["l1"] / max(sums["l1_n"], 1),
    }


def load_training_data(cfg: PrefixTrainConfig, frontend: MelFrontend) -> tuple[list[Utterance], list[Utterance]]:
    """(train, dev) utterances; without a dev manifest the first training utterances stand in."""
    train = load_utterances(cfg.data.train, frontend)
    if cfg.data.full_utterance_asr:
        train += load_utterances(cfg.data.train, frontend, mode="asr")
    if cfg.data.dev:
        dev = load_utterances(cfg.data.dev, frontend, limit=cfg.data.max_dev_utts)
    else:
        logger.warning("no data.dev: model selection uses the first %d training utterances", cfg.data.max_dev_utts)
        dev = train[: cfg.data.max_dev_utts]
    return train, dev


def train_prefix_lm(cfg: PrefixTrainConfig) -> dict[str, Any]:
    """Trains a prefix LM; returns the summary also written to ``out_dir/summary.json``."""
    cfg.check()
    if cfg.model.encoder_init:
        adopt_encoder_settings(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    train, dev = load_training_data(cfg, MelFrontend(cfg.mel))
    vocab = resolve_vocab(cfg, train, out)
    set_seed(cfg.seed)  # the model's init and then the training streams, as in unified_lm.train
    model, chars = build_prefix_model(cfg, vocab, train)
    packer = Packer(vocab, chars, cfg.model.spectrogram.reduction, model.frame_mean, model.frame_std)
    loss_fn = LOSSES.get("spectron")(cfg.loss)
    task = Task(
        loss=lambda m, batch, device: spectron_step(m, loss_fn, batch, device),
        epoch_batches=lambda epoch: [packer.collate(g) for g in batches(train, cfg.optim.batch_size, epoch_rng(cfg.seed, epoch))],
        evaluate=lambda m: evaluate_teacher_forced(m, packer, loss_fn, dev, cfg.optim.batch_size),
        save_best=lambda m: save_prefix_checkpoint(out / "best", m, vocab, chars, cfg),
    )
    extra = {"train_utts": len(train), "dev_utts": len(dev), "vocab_size": len(vocab), "chars": len(chars)}
    return fit(model, task, cfg.optim, out, cfg.seed, desc="prefix-lm", extra=extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unified_lm.continuous.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="e.g. experiments/prefix_spectron.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. loss.w_deriv=0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train_prefix_lm(load_config(PrefixTrainConfig, args.config, args.overrides))
    except UnifiedLMError as e:
        print(f"unified_lm.continuous.train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
