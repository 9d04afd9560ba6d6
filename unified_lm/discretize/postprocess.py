"""Unit post-processing: run-length dedup and subwords over unit strings.

Unit ``u`` becomes the private-use character ``U+E000 + u`` and an utterance one string;
a subword model over those strings turns runs of units into pieces, and the piece ids are
the units after it. Two models, chosen by the recipe's ``post.subwords``:

- ``unigram``: SentencePiece's unigram LM, as the reference recipe (SpokenNLP ``sld/``)
  trains it: pieces of at most 16 units (``max_piece_units``), repeats not collapsed.
- ``bpe``: the Hugging Face ``tokenizers`` BPE, each utterance one "word".

In both every unit is a piece of its own (SentencePiece's ``required_chars``, the BPE's
initial alphabet), so units never seen in training still encode; and the asked number of
pieces is met, or the fit fails saying why.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Iterable, Protocol

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


class UnitSubwords(Protocol):
    """A subword model over unit strings (``bpe.json`` or ``unigram.model`` in a tokenizer dir)."""

    FILE: str
    vocab_size: int

    @classmethod
    def train(cls, unit_seqs: Iterable[np.ndarray], num_units: int, vocab_size: int, max_piece_units: int | None): ...
    @classmethod
    def load(cls, path: str | Path): ...
    def save(self, path: str | Path) -> None: ...
    def encode(self, units: np.ndarray, durations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]: ...


def _check_sizes(num_units: int, vocab_size: int) -> None:
    if num_units > MAX_BPE_UNITS:
        raise ConfigError(f"subwords over {num_units} units are unsupported: at most {MAX_BPE_UNITS} fit the private-use area")
    if vocab_size < num_units:
        raise ConfigError(f"post.subword_vocab_size={vocab_size} is smaller than the {num_units} units it starts from")


def _too_few(got: int, asked: int, max_piece_units: int | None) -> ConfigError:
    cap = f" of at most {max_piece_units} units" if max_piece_units else ""
    return ConfigError(
        f"post.subword_vocab_size={asked}: the training units yield only {got} distinct pieces{cap}; "
        "ask for fewer pieces, or fit on more audio"
    )


class UnitBPE:
    """BPE pieces over unit strings; piece ids are the units after BPE."""

    FILE = "bpe.json"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(
        cls, unit_seqs: Iterable[np.ndarray], num_units: int, vocab_size: int, max_piece_units: int | None = None
    ) -> "UnitBPE":
        from tokenizers import Tokenizer, models, trainers

        _check_sizes(num_units, vocab_size)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=[chr(UNIT_CHAR_BASE + u) for u in range(num_units)],
            special_tokens=[],
            show_progress=False,
            max_token_length=max_piece_units,
        )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.train_from_iterator((units_to_text(u) for u in unit_seqs), trainer)
        if tokenizer.get_vocab_size() < vocab_size:  # the trainer stops quietly when merges run out
            raise _too_few(tokenizer.get_vocab_size(), vocab_size, max_piece_units)
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


class UnitUnigram:
    """SentencePiece unigram pieces over unit strings, with the reference recipe's options;
    piece ids are the units after it (id 0 is SentencePiece's ``<unk>``, never produced: every
    unit is a piece)."""

    FILE = "unigram.model"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.sp.get_piece_size()
        # Units each piece spans (``<unk>`` spans none), for the durations.
        self.piece_units = np.array([0 if self.sp.is_unknown(i) else len(self.sp.id_to_piece(i)) for i in range(self.vocab_size)])

    @classmethod
    def train(
        cls, unit_seqs: Iterable[np.ndarray], num_units: int, vocab_size: int, max_piece_units: int | None = 16
    ) -> "UnitUnigram":
        import sentencepiece as spm
        import torch

        _check_sizes(num_units, vocab_size - 1)  # <unk> takes one id
        model = io.BytesIO()
        # One extra line spells every unit once: SentencePiece's alphabet holds only characters
        # it has seen (``required_chars`` included), and an unseen unit would become <unk>.
        lines = itertools.chain((units_to_text(u) for u in unit_seqs), [units_to_text(range(num_units))])
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines,
                model_writer=model,
                model_type="unigram",
                vocab_size=vocab_size,
                max_sentencepiece_length=max_piece_units or 16,
                character_coverage=1.0,
                normalization_rule_name="identity",  # units are not text: no NFKC, no whitespace
                add_dummy_prefix=False,
                split_by_unicode_script=False,
                max_sentence_length=1 << 24,  # bytes; the default (4,192) would drop utterances over ~28 s
                bos_id=-1,
                eos_id=-1,
                unk_id=0,
                num_threads=torch.get_num_threads(),
                minloglevel=2,
            )
        except RuntimeError as e:  # e.g. "Vocabulary size is too high (6000). Please set it to a value <= 3633."
            msg = str(e).splitlines()[-1] if str(e).strip() else repr(e)
            raise ConfigError(f"post.subword_vocab_size={vocab_size}: SentencePiece cannot train it ({msg})") from None
        return cls(model.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "UnitUnigram":
        try:
            return cls(Path(path).read_bytes())
        except (OSError, RuntimeError) as e:
            raise DataError(path, f"unreadable SentencePiece model: {e}") from None

    def save(self, path: str | Path) -> None:
        from ..io import atomic_open

        with atomic_open(path, "wb", encoding=None) as f:
            f.write(self.proto)

    def encode(self, units: np.ndarray, durations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Piece ids, and per piece the summed durations of the units it covers."""
        if len(units) == 0:
            return np.zeros(0, np.int64), None if durations is None else np.zeros(0, np.int64)
        ids = np.asarray(self.sp.encode(units_to_text(units)), np.int64)
        if durations is None:
            return ids, None
        starts = np.concatenate([[0], np.cumsum(self.piece_units[ids])[:-1]])
        return ids, np.add.reduceat(np.asarray(durations, np.int64), starts)


SUBWORDS: dict[str, type[UnitBPE] | type[UnitUnigram]] = {"bpe": UnitBPE, "unigram": UnitUnigram}
