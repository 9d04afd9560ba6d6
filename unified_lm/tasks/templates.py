"""Task templates: how one utterance becomes one token sequence for the decoder.

Every template starts with its task token, so one model learns all tasks (as in VoxtLM):

    asr        <asr> speech <speech_end> text <text_end>
    tts        <tts> text <text_end> speech <speech_end>
    speech_lm  <speech_lm> speech <speech_end>
    text_lm    <text_lm> text <text_end>

Each token carries the role it plays *as a prediction target*, i.e. for the loss at the
position that predicts it: the task's output is TARGET (always cross-entropy); the input
speech of ASR is SPEECH_INPUT, whose loss the chosen loss decides (none, CE, or CE + KL);
the rest is PROMPT (no loss). A new task is one function and one decorator line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Sequence

from ..corpus.manifest import UnitRecord
from ..errors import ConfigError
from ..registry import Registry
from ..vocab import UnifiedVocab


class Role(IntEnum):
    PROMPT = 0
    TARGET = 1
    SPEECH_INPUT = 2
    PAD = 3


@dataclass
class TokenSequence:
    tokens: list[int]
    roles: list[int]  # a Role per token
    task: str | None = None  # the template that made it, for per-task logging

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class TaskConfig:
    mixture: dict[str, float] = field(default_factory=lambda: {"asr": 1.0})  # task -> sampling weight
    max_text_tokens: int = 150  # transcripts are cut to this many BPE tokens (the reference recipe's 150)
    max_speech_tokens: int | None = None  # speech cut at a frame boundary; None keeps it whole


Template = Callable[[UnitRecord, UnifiedVocab, TaskConfig], TokenSequence]
TASKS: Registry[Template] = Registry("task")


def text_ids(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> list[int]:
    """The transcript's BPE ids, cut to ``cfg.max_text_tokens``."""
    return vocab.encode_text(record.text)[: cfg.max_text_tokens]


def speech_ids(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> list[int]:
    """The utterance's units as vocabulary ids, cut to ``cfg.max_speech_tokens``."""
    try:
        ids = vocab.encode_units(record.units, record.tokenizer)
        codebooks = vocab.speech_range(record.tokenizer).meta.codebooks
    except (ConfigError, ValueError) as e:
        raise type(e)(f"utterance {record.id!r}: {e}") from None
    if cfg.max_speech_tokens is not None and len(ids) > cfg.max_speech_tokens:
        # Codebooks are interleaved per frame: cut whole frames only.
        ids = ids[: cfg.max_speech_tokens - cfg.max_speech_tokens % codebooks]
    return ids


def asr_prompt(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> list[int]:
    """What ASR decoding starts from: ``<asr> speech <speech_end>``."""
    return [vocab.task_id("asr"), *speech_ids(record, vocab, cfg), vocab.speech_end_id]


def _concat(task: str, *spans: tuple[Sequence[int], Role]) -> TokenSequence:
    tokens: list[int] = []
    roles: list[int] = []
    for ids, role in spans:
        tokens.extend(ids)
        roles.extend([int(role)] * len(ids))
    return TokenSequence(tokens, roles, task)


@TASKS.register("asr")
def asr(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> TokenSequence:
    return _concat(
        "asr",
        ([vocab.task_id("asr")], Role.PROMPT),
        (speech_ids(record, vocab, cfg), Role.SPEECH_INPUT),
        ([vocab.speech_end_id], Role.PROMPT),
        ([*text_ids(record, vocab, cfg), vocab.text_end_id], Role.TARGET),
    )


@TASKS.register("tts")
def tts(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> TokenSequence:
    return _concat(
        "tts",
        ([vocab.task_id("tts"), *text_ids(record, vocab, cfg), vocab.text_end_id], Role.PROMPT),
        ([*speech_ids(record, vocab, cfg), vocab.speech_end_id], Role.TARGET),
    )


@TASKS.register("speech_lm")
def speech_lm(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> TokenSequence:
    return _concat(
        "speech_lm",
        ([vocab.task_id("speech_lm")], Role.PROMPT),
        ([*speech_ids(record, vocab, cfg), vocab.speech_end_id], Role.TARGET),
    )


@TASKS.register("text_lm")
def text_lm(record: UnitRecord, vocab: UnifiedVocab, cfg: TaskConfig) -> TokenSequence:
    return _concat(
        "text_lm",
        ([vocab.task_id("text_lm")], Role.PROMPT),
        ([*text_ids(record, vocab, cfg), vocab.text_end_id], Role.TARGET),
    )
