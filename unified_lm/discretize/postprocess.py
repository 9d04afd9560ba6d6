"""Unit post-processing: run-length dedup and BPE over unit strings.

BPE follows the reference recipe (a 6000-piece SentencePiece over unit sequences), with the
Hugging Face ``tokenizers`` BPE: unit ``u`` becomes the private-use character
``U+E000 + u``, each utterance is one "word" (no pre-tokenizer splits it), and every unit
is in the initial alphabet, so units never seen in training still encode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConfigError, DataError
from ..io import atomic_write_text

UNIT_CHAR_BASE = 0xE000
MAX_BPE_UNITS = 0xF8FF - UNIT_CHAR_BASE + 1  # the Basic Multilingual Plane's private-use area


def dedup(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapses runs: ``[5, 5, 7, 5] -> ([5, 7, 5], [2, 1, 1])``."""
    units = np.asarray(units)
    if units.size == 0:
        return units, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], units[1:] != units[:-1]]))
    durations = np.diff(np.append(starts, units.size))
    return units[starts], durations


def units_to_text(units: Iterable[int]) -> str:
    return "".join(chr(UNIT_CHAR_BASE + int(u)) for u in units)


class UnitBPE:
    """BPE pieces over unit strings; piece ids are the units after BPE."""

    FILE = "bpe.json"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, unit_seqs: Iterable[np.ndarray], num_units: int, vocab_size: int) -> "UnitBPE":
        from tokenizers import Tokenizer, models, trainers

        if num_units > MAX_BPE_UNITS:
            raise ConfigError(
                f"BPE over {num_units} units is unsupported: at most {MAX_BPE_UNITS} fit the private-use area"
            )
        if vocab_size < num_units:
            raise ConfigError(f"post.bpe_vocab_size={vocab_size} is smaller than the {num_units} units it starts from")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=[chr(UNIT_CHAR_BASE + u) for u in range(num_units)],
            special_tokens=[],
            show_progress=False,
        )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.train_from_iterator((units_to_text(u) for u in unit_seqs), trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> "UnitBPE":
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception for unreadable files
            raise DataError(path, f"unreadable BPE model: {e}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.tokenizer.to_str(pretty=True))

    def encode(self, units: np.ndarray, durations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Piece ids, and per piece the summed durations of the units it covers."""
        if len(units) == 0:
            return np.zeros(0, np.int64), None if durations is None else np.zeros(0, np.int64)
        enc = self.tokenizer.encode(units_to_text(units))
        ids = np.asarray(enc.ids, np.int64)
        if durations is None:
            return ids, None
        starts = np.fromiter((start for start, _ in enc.offsets), np.int64, len(ids))
        return ids, np.add.reduceat(np.asarray(durations, np.int64), starts)
