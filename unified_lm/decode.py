"""Batched decoding with the KV cache (greedy or beam search), and scoring.

Decoding is ``model.generate`` on left-padded prompts:

- ASR: prompt ``<asr> speech <speech_end>``, stops at ``<text_end>``;
- TTS: prompt ``<tts> text <text_end>``, stops at ``<speech_end>``; the output is units.

Generation is restricted to the task's output tokens (text tokens + ``<text_end>`` for
ASR; the utterance's speech tokenizer's ids + ``<speech_end>`` for TTS) with
``suppress_tokens``: every other id gets a logit of -inf, so an under-trained model cannot
emit speech units or task tokens into a transcript.

``decode`` writes one JSONL line per utterance (written atomically) and a scores JSON
beside it (``x.hyp.jsonl`` -> ``x.hyp.scores.json``), and returns the scores.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel

from .config import from_dict
from .corpus.manifest import UnitRecord
from .errors import ConfigError
from .fusion import TextLM
from .io import atomic_write_text, check_output_path, write_jsonl
from .models import eval_mode, load_checkpoint, max_positions
from .scoring import asr_rows, score_corpus
from .tasks import TaskConfig, asr_prompt, text_ids
from .unit_data import read_checked_manifest
from .vocab import UnifiedVocab


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    stop_id: int,
    pad_id: int,
    allowed: Sequence[int],
    vocab_size: int,
    beam: int = 1,
    max_new_tokens: int = 200,
    use_cache: bool = True,
    fusion: TextLM | None = None,
) -> list[list[int]]:
    """Continues each prompt (one batch, left-padded) until ``stop_id``; returns the new ids
    of each, without the stop token and padding. ``fusion``: a text LM's scores added to
    the model's (ASR only)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    limit = max_positions(model)
    if limit is not None:
        if width >= limit:
            raise ConfigError(
                f"a prompt of {width} tokens does not fit the model's {limit} positions; "
                "cut speech with tasks.max_speech_tokens"
            )
        max_new_tokens = min(max_new_tokens, limit - width)
    # Left padding: every prompt ends where generation starts.
    pad = functools.partial(pad_sequence, batch_first=True, padding_side="left")
    input_ids = pad([torch.tensor(p, dtype=torch.long) for p in prompts], padding_value=pad_id)
    attention_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompts])
    allowed_set = set(allowed)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_beams=beam,
        do_sample=False,
        eos_token_id=stop_id,
        pad_token_id=pad_id,
        use_cache=use_cache,
        suppress_tokens=[i for i in range(vocab_size) if i not in allowed_set],
    )
    processors = LogitsProcessorList([fusion.processor(width, stop_id)] if fusion else [])
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
        generation_config=config, logits_processor=processors,
    )
    results = []
    for row in out[:, width:].tolist():
        if stop_id in row:
            row = row[: row.index(stop_id)]
        results.append([t for t in row if t != pad_id])
    return results


def generate_batched(
    model: PreTrainedModel,
    prompts: list[list[int]],
    batch_size: int,
    progress: bool = False,
    **kwargs: Any,
) -> list[list[int]]:
    """``generate`` over any number of prompts, ``batch_size`` at a time; outputs in prompt order."""
    # Longest first: similar lengths share a batch (little padding) and memory peaks at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in prompts]
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="decode", unit="batch", disable=not progress):
        idx = order[start : start + batch_size]
        for i, ids in zip(idx, generate(model, [prompts[i] for i in idx], **kwargs)):
            outputs[i] = ids
    return outputs


def transcribe(
    model: PreTrainedModel,
    vocab: UnifiedVocab,
    records: Sequence[UnitRecord],
    tasks: TaskConfig,
    batch_size: int = 16,
    beam: int = 1,
    max_new_tokens: int = 200,
    use_cache: bool = True,
    progress: bool = False,
    fusion: TextLM | None = None,
) -> list[str]:
    """ASR hypotheses of ``records``, in their order; ``fusion``: shallow fusion with a text LM."""
    if not records:
        return []
    with eval_mode(model):
        ids = generate_batched(
            model,
            [asr_prompt(r, vocab, tasks) for r in records],
            batch_size,
            progress,
            stop_id=vocab.text_end_id,
            pad_id=vocab.pad_id,
            allowed=[*range(vocab.text_size), vocab.text_end_id],
            vocab_size=len(vocab),
            beam=beam,
            max_new_tokens=max_new_tokens,
            use_cache=use_cache,
            fusion=fusion,
        )
    return [vocab.decode_text(x) for x in ids]


def synthesize_units(
    model: PreTrainedModel,
    vocab: UnifiedVocab,
    records: Sequence[UnitRecord],
    tasks: TaskConfig,
    batch_size: int = 16,
    beam: int = 1,
    max_new_tokens: int = 1000,
    use_cache: bool = True,
    progress: bool = False,
) -> list[list[int]]:
    """TTS: speech units for the transcripts of ``records`` (each in its record's tokenizer)."""
    with eval_mode(model):
        outputs: list[list[int]] = [[] for _ in records]
        # One tokenizer per generate call: the allowed ids are that tokenizer's range.
        by_tokenizer: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(records):
            by_tokenizer.setdefault((r.tokenizer["name"], r.tokenizer["hash"]), []).append(i)
        for (name, hash_), idx in by_tokenizer.items():
            identity = {"name": name, "hash": hash_}
            span = vocab.speech_range(identity)
            prompts = [[vocab.task_id("tts"), *text_ids(records[i], vocab, tasks), vocab.text_end_id] for i in idx]
            ids = generate_batched(
                model,
                prompts,
                batch_size,
                progress,
                stop_id=vocab.speech_end_id,
                pad_id=vocab.pad_id,
                allowed=[*range(span.start, span.stop), vocab.speech_end_id],
                vocab_size=len(vocab),
                beam=beam,
                max_new_tokens=max_new_tokens,
                use_cache=use_cache,
            )
            for i, x in zip(idx, ids):
                outputs[i] = vocab.decode_units(x, identity)
    return outputs


def _asr_rows(model, vocab, records, tasks, **kwargs) -> tuple[list[dict], dict]:
    return asr_rows(records, transcribe(model, vocab, records, tasks, progress=True, **kwargs))


def _tts_rows(model, vocab, records, tasks, **kwargs) -> tuple[list[dict], dict]:
    hyps = synthesize_units(model, vocab, records, tasks, progress=True, **kwargs)
    # Unit error rate: WER over units written as words (normalisation leaves digits alone).
    corpus = score_corpus(
        [" ".join(map(str, r.units)) for r in records], [" ".join(map(str, h)) for h in hyps], [r.subset for r in records]
    )
    rows = [
        {
            "id": r.id,
            "text": r.text,
            "ref_units": r.units,
            "hyp_units": h,
            "subset": r.subset,
            "errors": u["word_errors"],
            "ref_units_len": u["ref_words"],
        }
        for r, h, u in zip(records, hyps, corpus["utterances"])
    ]

    def uer(s: dict) -> dict:
        return {"num_utts": s["num_utts"], "uer": s["wer"], "unit_errors": s["word_errors"], "ref_units": s["ref_words"]}

    return rows, {**uer(corpus), "subsets": {k: uer(v) for k, v in corpus["subsets"].items()}}


DECODE_TASKS = {"asr": _asr_rows, "tts": _tts_rows}


def scores_path(out: str | Path) -> Path:
    """Where ``decode`` puts the scores of hypotheses file ``out``: ``x.hyp.jsonl`` -> ``x.hyp.scores.json``."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".scores.json")


def decode(
    checkpoint: str | Path,
    units_manifest: str | Path,
    out: str | Path,
    batch_size: int = 16,
    beam: int = 1,
    max_new_tokens: int = 200,
    task: str = "asr",
    use_cache: bool = True,
    lm: str | Path | None = None,
    lm_weight: float = 0.3,
) -> dict[str, Any]:
    """Decodes every utterance of ``units_manifest`` with ``checkpoint`` and scores it.

    ASR writes ``{id, ref, hyp, subset, errors, ref_words, char_errors, ref_chars}`` per line
    (``errors`` = word errors) and returns ``{num_utts, wer, cer, ..., subsets: {...}}``.
    TTS writes ``{id, text, ref_units, hyp_units, subset, errors, ref_units_len}`` and
    returns the unit error rate ``uer``. ``lm``: a text LM checkpoint fused into ASR
    decoding with ``lm_weight`` (``unified_lm.fusion``).
    """
    if task not in DECODE_TASKS:
        raise ConfigError(f"decode: unknown task {task!r}; known: {sorted(DECODE_TASKS)}")
    if lm is not None and task != "asr":
        raise ConfigError(f"decode: a text LM (--lm) fuses into ASR only, not {task}")
    check_decode_args(out, units_manifest, batch_size, beam, max_new_tokens)
    model, vocab, cfg = load_checkpoint(checkpoint)
    tasks = from_dict(TaskConfig, cfg.get("tasks") or {}, f"{checkpoint}: tasks")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    records = read_checked_manifest(units_manifest, vocab)
    fusion = TextLM.load(lm, vocab, lm_weight, model.device) if lm is not None else None
    start = time.perf_counter()
    rows, scores = DECODE_TASKS[task](
        model, vocab, records, tasks, batch_size=batch_size, beam=beam, max_new_tokens=max_new_tokens,
        use_cache=use_cache, **({"fusion": fusion} if fusion else {}),
    )
    if fusion:
        scores.update(fusion.describe())
    return write_decoded(out, rows, scores, task, checkpoint, units_manifest, beam, time.perf_counter() - start)


def check_decode_args(out: str | Path, manifest: str | Path, batch_size: int, beam: int, max_new_tokens: int) -> None:
    if beam < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ConfigError(
            f"decode: beam ({beam}), batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must be >= 1"
        )
    check_output_path(out, manifest)


def write_decoded(out, rows, scores, task: str, checkpoint, manifest, beam: int, seconds: float) -> dict[str, Any]:
    """Writes the hypotheses ``out`` and the scores beside it (``scores_path``); returns the scores."""
    scores = {
        "task": task,
        "checkpoint": str(checkpoint),
        "manifest": str(manifest),
        "beam": beam,
        **scores,
        "seconds": round(seconds, 3),
    }
    write_jsonl(out, rows)
    atomic_write_text(scores_path(out), json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    return scores
