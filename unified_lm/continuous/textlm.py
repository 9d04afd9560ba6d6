"""Pre-training the decoder as a text LM on the corpus transcripts (``<text_lm> text <text_end>``),
plus any text files given.

    python -m unified_lm.continuous.textlm --config experiments/prefix_textlm.yaml [key=value ...]

Writes ``out_dir/best``, a decoder checkpoint (``AutoModelForCausalLM`` + vocabulary) that
a prefix LM starts from with ``model.decoder.init_from`` (its vocabulary comes along), and
``metrics.jsonl``, ``tb/``, ``summary.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate.utils import set_seed
import torch.nn.functional as F
from transformers import PreTrainedModel

from ..config import load_config, save_config
from ..corpus.manifest import read_audio_manifest
from ..corpus.sentences import read_sentences
from ..errors import DataError, UnifiedLMError
from ..losses import LossOutput
from ..models.checkpoint import save_checkpoint
from ..models.decoder import build_model, eval_mode
from ..vocab import UnifiedVocab
from .config import TextLMConfig
from .loop import Task, epoch_rng, fit

logger = logging.getLogger("unified_lm.continuous")


def read_texts(manifest: str | Path) -> list[str]:
    texts = [r.text for r in read_audio_manifest(manifest)]
    if not texts:
        raise DataError(manifest, "the manifest is empty")
    return texts


def encode(texts: Sequence[str], vocab: UnifiedVocab) -> list[list[int]]:
    return [[vocab.task_id("text_lm"), *vocab.encode_text(t), vocab.text_end_id] for t in texts]


def collate_text(seqs: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
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


def pretrain_text_lm(cfg: TextLMConfig) -> dict[str, Any]:
    """Trains a vocabulary and a decoder on the transcripts of ``data.train`` and the
    sentences of ``data.text_files``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    texts = read_texts(cfg.data.train) + [t for path in cfg.data.text_files for t in read_sentences(path)]
    vocab = UnifiedVocab.train(texts, [], cfg.data.text_vocab_size)
    train = encode(texts, vocab)
    dev = encode(read_texts(cfg.data.dev), vocab) if cfg.data.dev else train[:200]
    set_seed(cfg.seed)  # the model's init and then the training streams, as in unified_lm.train
    model = build_model(cfg.decoder, vocab)
    bs = cfg.optim.batch_size

    def epoch_batches(epoch: int) -> list[dict[str, torch.Tensor]]:
        order = list(range(len(train)))
        epoch_rng(cfg.seed, epoch).shuffle(order)
        return [collate_text([train[i] for i in order[k : k + bs]], vocab.pad_id) for k in range(0, len(order), bs)]

    task = Task(
        loss=lm_loss,
        epoch_batches=epoch_batches,
        evaluate=lambda m: evaluate_lm(m, dev, vocab.pad_id, bs),
        save_best=lambda m: save_checkpoint(out / "best", m, vocab, cfg),
    )
    extra = {"train_texts": len(train), "vocab_size": len(vocab)}
    return fit(model, task, cfg.optim, out, cfg.seed, desc="text-lm", extra=extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unified_lm.continuous.textlm", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="e.g. experiments/prefix_textlm.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optim.max_steps=500")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pretrain_text_lm(load_config(TextLMConfig, args.config, args.overrides))
    except UnifiedLMError as e:
        print(f"unified_lm.continuous.textlm: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
