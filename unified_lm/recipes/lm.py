"""Recipe ``lm``: the unified speech-text decoder on a task mixture, with a chosen
input-speech loss (mask, ce, sld), scored by dev WER.

    unified-lm train lm --config experiments/asr_sld.yaml [key=value ...]

Besides what every run writes (``training.loop``), the run keeps ``vocab/``; ``best/`` and
``last/`` load with ``AutoModelForCausalLM.from_pretrained`` and ``UnifiedVocab.load``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from ..corpus.manifest import read_unit_manifest
from ..corpus.sentences import read_sentences
from ..decode import transcribe
from ..errors import ConfigError, DataError
from ..losses import LossOutput, build_loss
from ..models import build_model, load_decoder_weights, max_positions, write_checkpoint
from ..scoring import score_corpus
from ..tasks import time_mask
from ..tokenizer_meta import TokenizerMeta
from ..training import Micro, Task, TrainingRecipe
from ..unit_data import BucketBatchSampler, UnitDataset, make_loader, read_checked_manifest
from ..vocab import DEFAULT_TASKS, UnifiedVocab
from .batching import step_seed
from .configs import LMConfig


def build_vocab(cfg: LMConfig) -> UnifiedVocab:
    """The vocabulary a fresh run trains with: text BPE (or a local text tokenizer) + speech ranges."""
    speech = [TokenizerMeta.load(cfg.data.tokenizer)]
    tasks = (*DEFAULT_TASKS, *(t for t in cfg.tasks.mixture if t not in DEFAULT_TASKS))
    text_tokenizer = cfg.data.text_tokenizer or cfg.model.init_from
    if text_tokenizer:
        return UnifiedVocab.from_text_tokenizer(text_tokenizer, speech, tasks)
    texts = (r.text for r in read_unit_manifest(cfg.data.train))
    return UnifiedVocab.train(texts, speech, cfg.data.text_vocab_size, tasks)


def check_inputs(cfg: LMConfig) -> None:
    """Fails fast, before any heavy work, on files no run can use. Every rank checks what
    rank 0 alone will read: a failure there would leave the others waiting."""
    for what, path in (("data.train", cfg.data.train), ("data.dev", cfg.data.dev)):
        if path is not None and not Path(path).is_file():
            raise DataError(path, f"{what}: unit manifest not found")
    for path in cfg.data.text_files:
        if not Path(path).is_file():
            raise DataError(path, "data.text_files: text file not found")
    TokenizerMeta.load(cfg.data.tokenizer)
    text_tokenizer = cfg.data.text_tokenizer or cfg.model.init_from
    if text_tokenizer and not Path(text_tokenizer).exists():
        raise DataError(text_tokenizer, "data.text_tokenizer / model.init_from: not found")


def prepare_vocab(cfg: LMConfig, accelerator: Accelerator, resuming: bool) -> UnifiedVocab:
    # Built once by the main process and read by all, so every rank has the same ids. A fresh
    # run builds it anew: one left by a killed start may come from another config.
    vocab_dir = Path(cfg.out_dir) / "vocab"
    if accelerator.is_main_process and (not resuming or not (vocab_dir / "unified_vocab.json").is_file()):
        shutil.rmtree(vocab_dir, ignore_errors=True)
        build_vocab(cfg).save(vocab_dir)
    accelerator.wait_for_everyone()
    return UnifiedVocab.load(vocab_dir)


def evaluate(model, vocab: UnifiedVocab, records: list, cfg: LMConfig, accelerator: Accelerator) -> dict[str, float]:
    """Greedy (or beam) dev WER/CER; each rank decodes a shard, every rank gets the same scores."""
    shard = records[accelerator.process_index :: accelerator.num_processes]
    hyps = transcribe(
        model, vocab, shard, cfg.tasks, batch_size=cfg.eval.batch_size, beam=cfg.eval.beam,
        max_new_tokens=cfg.eval.max_new_tokens or cfg.tasks.max_text_tokens + 1,
    )
    refs, hyps, subsets = zip(*gather_object([(r.text, h, r.subset) for r, h in zip(shard, hyps)]))
    scores = score_corpus(refs, hyps, subsets)
    return {
        "wer": scores["wer"], "cer": scores["cer"], "utts": scores["num_utts"],
        **{f"wer_{name}": s["wer"] for name, s in scores["subsets"].items()},
    }


def setup(cfg: LMConfig, accelerator: Accelerator, resuming: bool) -> Task:
    check_inputs(cfg)
    vocab = prepare_vocab(cfg, accelerator, resuming)
    loss_fn = build_loss(cfg.loss, vocab)
    texts = [t for path in cfg.data.text_files for t in read_sentences(path)]
    dataset = UnitDataset(cfg.data.train, vocab, cfg.tasks, seed=cfg.seed, texts=texts)
    dev = read_checked_manifest(cfg.data.dev, vocab)[: cfg.eval.max_utts] if cfg.data.dev else []
    sampler = BucketBatchSampler(
        dataset.lengths, cfg.data.max_tokens, seed=cfg.seed,
        num_replicas=accelerator.num_processes, rank=accelerator.process_index,
    )
    model = build_model(cfg.model, vocab)
    limit = max_positions(model)
    if limit is not None and max(dataset.lengths) > limit:
        raise ConfigError(
            f"{cfg.data.train}: the longest sequence has {max(dataset.lengths)} tokens but the model has "
            f"{limit} positions; cut speech with tasks.max_speech_tokens"
        )

    def epoch_batches(epoch: int, skip: int):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip=skip)
        return make_loader(dataset, sampler, cfg.data.num_workers)

    def loss(model, batch, where: Micro) -> LossOutput:
        batch = {k: v.to(where.device) for k, v in batch.items()}
        inputs = batch["input_ids"]
        if cfg.time_mask > 0:
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, where.rank, where.step, where.index))
            inputs = time_mask(inputs, batch["roles"], cfg.time_mask, vocab.pad_id, gen)
        # No attention mask: padding is on the right, so causal attention never lets a
        # real token see it, and SDPA keeps its fast causal path.
        return loss_fn(model(input_ids=inputs).logits, batch["input_ids"], batch["roles"])

    return Task(
        model=model,
        epoch_batches=epoch_batches,
        batches_per_epoch=len(sampler),
        loss=loss,
        save=lambda directory, m: write_checkpoint(directory, m, vocab, cfg),
        load=load_decoder_weights,
        evaluate=(lambda m: evaluate(m, vocab, dev, cfg, accelerator)) if dev else None,
        metric="wer",
        size=lambda batch: int(batch["attention_mask"].sum()),
        facts={"vocab_size": len(vocab), "text_sentences": len(texts)},
    )


RECIPE = TrainingRecipe("lm", LMConfig, setup, help="the unified decoder on a task mixture (ASR, TTS, ...), dev WER")
