"""Recipe ``prefix``: Spectron training of the prefix LM on teacher-forced sequences
``[encoder prefix] <asr> transcript <cont> continuation <spec> frames <spec_end>``.

    unified-lm train prefix --config experiments/prefix_spectron.yaml [key=value ...]

Besides what every run writes (``training.loop``), the run keeps ``vocab/`` unless the
decoder brings one; ``best/`` (the lowest dev loss) is a prefix-LM checkpoint
(``models.checkpoint``) that ``unified-lm continue`` and ``unified-lm decode`` read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from accelerate import Accelerator

from ..audio.mel import MelFrontend
from ..losses import LOSSES
from ..losses.spectrogram import SpectronLoss
from ..models import (
    build_model,
    load_encoder_checkpoint,
    load_prefix_weights,
    write_prefix_checkpoint,
)
from ..models.prefix import PrefixLM
from ..prefix_lm.inference import evaluate_teacher_forced
from ..prefix_lm.utterances import Packer, Utterance, batches, dev_or_head, frame_stats, load_utterances
from ..training import Task, TrainingRecipe
from ..vocab import CharVocab, UnifiedVocab
from .batching import epoch_rng, per_rank, shard
from .configs import PrefixLMConfig

logger = logging.getLogger("unified_lm.recipes.prefix")


def resolve_vocab(cfg: PrefixLMConfig, train: Sequence[Utterance], out: Path) -> UnifiedVocab:
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


def adopt_encoder_settings(cfg: PrefixLMConfig) -> None:
    """With ``model.encoder_init``, the encoder shape, mel front end and characters must be
    those the encoder was pre-trained with: take them from its directory."""
    encoder, _, mel = load_encoder_checkpoint(cfg.model.encoder_init)
    if encoder.cfg != cfg.model.encoder or mel != cfg.mel:
        logger.warning("using the encoder and mel settings of %s, not those of the config", cfg.model.encoder_init)
    cfg.model.encoder, cfg.mel = encoder.cfg, mel


def build_prefix_model(cfg: PrefixLMConfig, vocab: UnifiedVocab, train: Sequence[Utterance]) -> tuple[PrefixLM, CharVocab]:
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


def adopt(cfg: PrefixLMConfig) -> None:
    if cfg.model.encoder_init:
        adopt_encoder_settings(cfg)


def setup(cfg: PrefixLMConfig, accelerator: Accelerator, resuming: bool) -> Task:
    frontend = MelFrontend(cfg.mel)
    train = load_utterances(cfg.data.train, frontend) if cfg.data.continuation else []
    if cfg.data.full_utterance_asr:
        train += load_utterances(cfg.data.train, frontend, mode="asr")
    dev_mode = "continuation" if cfg.data.continuation else "asr"
    dev = dev_or_head(cfg.data.dev, frontend, train, cfg.eval.max_utts, mode=dev_mode)
    vocab = resolve_vocab(cfg, train, Path(cfg.out_dir))
    model, chars = build_prefix_model(cfg, vocab, train)
    packer = Packer(vocab, chars, cfg.model.spectrogram.reduction, model.frame_mean, model.frame_std)
    loss_fn = LOSSES.get("spectron")(cfg.loss)
    bs = cfg.data.batch_size
    return Task(
        model=model,
        epoch_batches=lambda epoch, skip: shard(batches(train, bs, epoch_rng(cfg.seed, epoch)), accelerator, skip, packer.collate),
        batches_per_epoch=per_rank(len(batches(train, bs)), accelerator),
        loss=lambda m, batch, where: spectron_step(m, loss_fn, batch, where.device),
        save=lambda directory, m: write_prefix_checkpoint(directory, m, vocab, chars, cfg),
        load=load_prefix_weights,
        evaluate=lambda m: evaluate_teacher_forced(m, packer, loss_fn, dev, cfg.eval.batch_size),
        size=lambda batch: int(batch[0].suffix_lengths.sum() + batch[0].feat_lengths.sum()),
        unit="positions",
        facts={"train_utts": len(train), "dev_utts": len(dev), "vocab_size": len(vocab), "chars": len(chars)},
    )


RECIPE = TrainingRecipe(
    "prefix", PrefixLMConfig, setup, help="the prefix LM (speech encoder -> decoder, text and spectrogram frames)",
    find_unused_parameters=True, resolve=adopt,
)
