"""Recipe ``textlm``: a decoder pre-trained as a text LM (``<text_lm> sentence <text_end>``)
on a corpus's transcripts plus any text files: the GPT-2 analogue of the paper's recipe.

    unified-lm train textlm --config experiments/textlm.yaml [key=value ...]

``best/`` is a decoder checkpoint with its vocabulary: the ``lm`` recipe starts from it with
``model.init_from`` (its BPE becomes the text part of the unified vocabulary), and the
prefix LM with ``model.decoder.init_from``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import PreTrainedModel

from ..corpus.manifest import read_audio_manifest
from ..corpus.sentences import read_sentences
from ..errors import DataError
from ..losses import LossOutput
from ..models import build_model, eval_mode, load_decoder_weights, write_checkpoint
from ..training import Task, TrainingRecipe
from ..vocab import UnifiedVocab
from .batching import epoch_rng, per_rank, shard
from .configs import TextLMConfig


def read_texts(manifest: str | Path) -> list[str]:
    texts = [r.text for r in read_audio_manifest(manifest)]
    if not texts:
        raise DataError(manifest, "the manifest is empty")
    return texts


def encode(texts: Sequence[str], vocab: UnifiedVocab) -> list[list[int]]:
    return [[vocab.task_id("text_lm"), *vocab.encode_text(t), vocab.text_end_id] for t in texts]


def collate_text(seqs: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=pad_id)
    return {"input_ids": ids, "lengths": torch.tensor([len(s) for s in seqs])}


def lm_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor], device: torch.device) -> LossOutput:
    ids, lengths = batch["input_ids"].to(device), batch["lengths"].to(device)
    # Right padding: causal attention never lets a real token see it, so no mask is needed.
    logits = model(input_ids=ids).logits[:, :-1].float()
    labels = ids[:, 1:].masked_fill(torch.arange(1, ids.size(1), device=device) >= lengths.unsqueeze(1), -100)
    loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
    return LossOutput(loss, {"ce": loss.detach()})


@torch.no_grad()
def evaluate_lm(model: PreTrainedModel, seqs: Sequence[list[int]], pad_id: int, batch_size: int) -> dict[str, float]:
    with eval_mode(model):
        device = next(model.parameters()).device
        nll, count = 0.0, 0
        for k in range(0, len(seqs), batch_size):
            group = seqs[k : k + batch_size]
            n = sum(len(s) - 1 for s in group)
            nll += float(lm_loss(model, collate_text(group, pad_id), device).total) * n
            count += n
    return {"loss": nll / count, "ppl": math.exp(nll / count)}


def _batches(seqs: Sequence[list[int]], batch_size: int, rng=None) -> list[list[list[int]]]:
    order = list(range(len(seqs)))
    if rng is not None:
        rng.shuffle(order)
    return [[seqs[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]


def setup(cfg: TextLMConfig, accelerator: Accelerator, resuming: bool) -> Task:
    """A vocabulary and a decoder for the transcripts of ``data.train`` and the sentences of
    ``data.text_files``."""
    texts = read_texts(cfg.data.train) + [t for path in cfg.data.text_files for t in read_sentences(path)]
    if cfg.data.text_tokenizer:
        vocab = UnifiedVocab.from_text_tokenizer(cfg.data.text_tokenizer, [])
    else:
        vocab = UnifiedVocab.train(texts, [], cfg.data.text_vocab_size)
    train = encode(texts, vocab)
    dev = (encode(read_texts(cfg.data.dev), vocab) if cfg.data.dev else train)[: cfg.eval.max_utts]
    bs = cfg.data.batch_size
    return Task(
        model=build_model(cfg.model, vocab),
        epoch_batches=lambda epoch, skip: shard(
            _batches(train, bs, epoch_rng(cfg.seed, epoch)), accelerator, skip, lambda g: collate_text(g, vocab.pad_id)
        ),
        batches_per_epoch=per_rank(len(_batches(train, bs)), accelerator),
        loss=lambda m, batch, where: lm_loss(m, batch, where.device),
        save=lambda directory, m: write_checkpoint(directory, m, vocab, cfg),
        load=load_decoder_weights,
        evaluate=lambda m: evaluate_lm(m, dev, vocab.pad_id, cfg.eval.batch_size),
        size=lambda batch: int(batch["lengths"].sum()),
        facts={"train_texts": len(train), "vocab_size": len(vocab)},
    )


RECIPE = TrainingRecipe("textlm", TextLMConfig, setup, help="a decoder pre-trained on text alone (the GPT-2 analogue)")
