"""The unified vocabulary: text BPE + special tokens + one id range per speech tokenizer.

Layout of the ids (the rows of the model's embedding matrix)::

    [0, text_size)                 text tokens (a Hugging Face ``tokenizers`` BPE)
    [text_size, speech_start)      special tokens: <pad> <text_end> <speech_end>,
                                   one task token per task (<asr> <tts> ...), and
                                   <cont> <spec> <spec_end> for the continuous path
    [speech_start, len(vocab))     speech tokens: one contiguous range per speech
                                   tokenizer, split into one sub-range per codebook

Text comes first so a pretrained text LM (e.g. GPT-2) keeps its embedding rows when the
vocabulary is extended. Speech units are ints in ``[0, num_units)`` with the codebook
offsets already applied by the discretizer (see ``TokenizerMeta``), so a tokenizer's ids
are simply ``start + unit``.

A vocabulary is saved beside the checkpoint as two plain JSON files: ``unified_vocab.json``
(the layout, readable by eye) and ``text_tokenizer.json`` (the HF tokenizer); and, for
``AutoTokenizer.from_pretrained``, the whole vocabulary as one Hugging Face tokenizer
(``tokenizer.json``, ``tokenizer_config.json``): the text tokens, then the special tokens and
one token per speech unit (``<NAME:UNIT>``), each at its id here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .errors import ConfigError, DataError
from .io import atomic_write_text
from .scoring import normalize_text
from .tokenizer_meta import TokenizerMeta

DEFAULT_TASKS = ("asr", "tts", "speech_lm", "text_lm")
BASE_SPECIALS = ("<pad>", "<text_end>", "<speech_end>")
# Reserved for the continuous (spectrogram prefix) path so its checkpoints share the layout.
CONTINUOUS_SPECIALS = ("<cont>", "<spec>", "<spec_end>")

VOCAB_FILE = "unified_vocab.json"
TEXT_TOKENIZER_FILE = "text_tokenizer.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SpeechRange:
    """Where one speech tokenizer's units live in the unified vocabulary."""

    meta: TokenizerMeta
    start: int

    @property
    def stop(self) -> int:
        return self.start + self.meta.num_units

    @property
    def codebook_size(self) -> int:
        return self.meta.codebook_size or self.meta.num_units // self.meta.codebooks

    def codebook_ranges(self) -> list[tuple[int, int]]:
        size = self.codebook_size
        return [(self.start + c * size, self.start + (c + 1) * size) for c in range(self.meta.codebooks)]


class UnifiedVocab:
    """Maps text, special tokens and speech units of known tokenizers to model ids."""

    def __init__(
        self, text_tokenizer: Tokenizer, speech: Sequence[TokenizerMeta], tasks: Sequence[str] = DEFAULT_TASKS
    ):
        self.text_tokenizer = text_tokenizer
        self.text_size = text_tokenizer.get_vocab_size(with_added_tokens=True)
        self.tasks = tuple(tasks)
        specials = [*BASE_SPECIALS, *(f"<{_task_name(t)}>" for t in self.tasks), *CONTINUOUS_SPECIALS]
        if len(set(specials)) != len(specials):
            raise ConfigError(f"duplicate special tokens in {specials} (tasks: {list(self.tasks)})")
        self.special_ids = {tok: self.text_size + i for i, tok in enumerate(specials)}
        self.pad_id = self.special_ids["<pad>"]
        self.text_end_id = self.special_ids["<text_end>"]
        self.speech_end_id = self.special_ids["<speech_end>"]
        self.speech_start = self.text_size + len(specials)
        self._speech = self._layout_speech(list(speech), self.speech_start)
        self._size = self.speech_start + sum(m.num_units for m in self.tokenizers)

    @staticmethod
    def _layout_speech(metas: list[TokenizerMeta], start: int) -> dict[str, SpeechRange]:
        ranges: dict[str, SpeechRange] = {}
        for meta in metas:
            if meta.name in ranges:
                raise ConfigError(f"speech tokenizer {meta.name!r} is given twice; tokenizer names must be unique")
            if meta.num_units <= 0 or meta.codebooks <= 0:
                raise ConfigError(f"speech tokenizer {meta.name!r}: num_units and codebooks must be positive")
            r = SpeechRange(meta, start)
            if r.codebook_size * meta.codebooks != meta.num_units:
                raise ConfigError(
                    f"speech tokenizer {meta.name!r}: {meta.codebooks} codebooks of {r.codebook_size} "
                    f"do not make num_units={meta.num_units}"
                )
            ranges[meta.name] = r
            start = r.stop
        return ranges

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        speech: Sequence[TokenizerMeta],
        text_vocab_size: int = 1000,
        tasks: Sequence[str] = DEFAULT_TASKS,
    ) -> "UnifiedVocab":
        """Trains a byte-level BPE on ``texts`` (the training transcripts).

        Byte-level means all 256 bytes are in the base alphabet, so any UTF-8 text
        round-trips, including characters never seen in training. The result may have fewer
        than ``text_vocab_size`` tokens when the corpus has too few merges to learn.
        """
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if text_vocab_size < len(alphabet):
            raise ConfigError(f"text_vocab_size={text_vocab_size} is below the {len(alphabet)} byte-level base tokens")
        tokenizer = Tokenizer(models.BPE())
        # No prefix space: decode(encode(s)) must give back s exactly.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=text_vocab_size, initial_alphabet=alphabet, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer, speech, tasks)

    @classmethod
    def from_text_tokenizer(
        cls, tokenizer_dir: str | Path, speech: Sequence[TokenizerMeta], tasks: Sequence[str] = DEFAULT_TASKS
    ) -> "UnifiedVocab":
        """Uses a local Hugging Face tokenizer (a directory with ``tokenizer.json``, e.g. GPT-2's,
        a checkpoint of this toolkit, e.g. a text LM's, or the file itself), keeping its ids so
        the pretrained embeddings stay aligned."""
        path = Path(tokenizer_dir)
        if path.is_dir():
            path = path / (TEXT_TOKENIZER_FILE if (path / VOCAB_FILE).is_file() else "tokenizer.json")
        return cls(_read_tokenizer(path), speech, tasks)

    def save(self, directory: str | Path) -> None:
        """Writes ``unified_vocab.json`` and ``text_tokenizer.json`` into ``directory``."""
        directory = Path(directory)
        atomic_write_text(directory / TEXT_TOKENIZER_FILE, self.text_tokenizer.to_str(pretty=True))
        layout = {
            "format": FORMAT_VERSION,
            "size": len(self),
            "text_tokenizer": TEXT_TOKENIZER_FILE,
            "text_size": self.text_size,
            "tasks": list(self.tasks),
            "special_tokens": self.special_ids,
            "speech": [
                {**asdict(r.meta), "start": r.start, "stop": r.stop, "codebook_ranges": r.codebook_ranges()}
                for r in self._speech.values()
            ],
        }
        atomic_write_text(directory / VOCAB_FILE, json.dumps(layout, indent=2, ensure_ascii=False) + "\n")
        self._save_hf_tokenizer(directory)

    def speech_token(self, meta: TokenizerMeta, unit: int) -> str:
        """The name of a speech unit's token in the Hugging Face tokenizer."""
        return f"<{meta.name}:{unit}>"

    def _save_hf_tokenizer(self, directory: Path) -> None:
        from tokenizers import AddedToken
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer.from_str(self.text_tokenizer.to_str())
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in self.special_ids])
        tok.add_tokens(
            [AddedToken(self.speech_token(m, u), normalized=False) for m in self.tokenizers for u in range(m.num_units)]
        )
        if tok.get_vocab_size(with_added_tokens=True) != len(self):  # a text token named like one of ours
            raise ConfigError(f"the Hugging Face tokenizer would have {tok.get_vocab_size()} ids, the vocabulary {len(self)}")
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<text_end>")
        hf.save_pretrained(str(directory))

    @classmethod
    def load(cls, directory: str | Path) -> "UnifiedVocab":
        """Reads a vocabulary written by ``save`` and checks that the recorded layout still holds."""
        path = Path(directory) / VOCAB_FILE
        if not path.is_file():
            raise DataError(path, "no unified vocabulary here (was the checkpoint saved by unified-lm?)")
        try:
            layout = json.loads(path.read_text(encoding="utf-8"))
            if layout.get("format") != FORMAT_VERSION:
                raise DataError(path, f"unsupported vocabulary format {layout.get('format')!r}")
            metas = [
                TokenizerMeta(**{k: v for k, v in s.items() if k not in ("start", "stop", "codebook_ranges")})
                for s in layout["speech"]
            ]
            vocab = cls(_read_tokenizer(path.parent / layout["text_tokenizer"]), metas, layout["tasks"])
            recorded = (layout["size"], layout["special_tokens"], [(s["start"], s["stop"]) for s in layout["speech"]])
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ConfigError) as e:
            raise DataError(path, f"unreadable unified vocabulary: {e!r}") from None
        rebuilt = (len(vocab), vocab.special_ids, [(r.start, r.stop) for r in vocab._speech.values()])
        if recorded != rebuilt:
            raise DataError(path, f"recorded layout {recorded} does not match the one rebuilt from it {rebuilt}")
        return vocab

    # ---- ids ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    @property
    def tokenizers(self) -> list[TokenizerMeta]:
        return [r.meta for r in self._speech.values()]

    def task_id(self, task: str) -> int:
        """Id of a task (or reserved) token; accepts ``"asr"`` or ``"<asr>"``."""
        token = task if task.startswith("<") else f"<{task}>"
        try:
            return self.special_ids[token]
        except KeyError:
            known = list(self.special_ids)
            raise ConfigError(f"no special token {token!r} in the vocabulary; known: {known}") from None

    def encode_text(self, text: str) -> list[int]:
        return self.text_tokenizer.encode(text, add_special_tokens=False).ids

    def decode_text(self, ids: Sequence[int]) -> str:
        """Decodes the text ids in ``ids``, skipping special and speech ids (and the text
        tokenizer's own specials such as GPT-2's ``<|endoftext|>``)."""
        return self.text_tokenizer.decode([i for i in ids if 0 <= i < self.text_size], skip_special_tokens=True)

    def encode_units(self, units: Sequence[int], tokenizer: dict) -> list[int]:
        """Maps units of the tokenizer identified by ``tokenizer`` ({"name", "hash"}) to ids.

        Raises ConfigError for a tokenizer this vocabulary was not built with (a model must
        never silently read another tokenizer's units) and ValueError for a unit out of range.
        """
        r = self._range(tokenizer)
        bad = next((u for u in units if not 0 <= u < r.meta.num_units), None)
        if bad is not None:
            raise ValueError(f"unit {bad} is outside [0, {r.meta.num_units}) of speech tokenizer {r.meta.name!r}")
        return [r.start + u for u in units]

    def decode_units(self, ids: Sequence[int], tokenizer: dict | None = None) -> list[int]:
        """Maps the ids of one tokenizer back to its units, skipping every other id.

        ``tokenizer`` may be left out when the vocabulary has a single speech tokenizer.
        """
        if tokenizer is None:
            if len(self._speech) != 1:
                raise ConfigError(f"the vocabulary has {len(self._speech)} speech tokenizers; name the one to decode")
            r = next(iter(self._speech.values()))
        else:
            r = self._range(tokenizer)
        return [i - r.start for i in ids if r.start <= i < r.stop]

    def speech_range(self, tokenizer: dict) -> SpeechRange:
        """The ids of one speech tokenizer ({"name", "hash"}): ``start``, ``stop``, its
        ``meta`` and ``codebook_ranges()``; raises ConfigError for an unknown one."""
        return self._range(tokenizer)

    def speech_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) of every codebook range of every speech tokenizer, in id order."""
        return [cb for r in self._speech.values() for cb in r.codebook_ranges()]

    def is_speech(self, token_id: int) -> bool:
        # Speech ranges are contiguous and fill the end of the vocabulary.
        return self.speech_start <= token_id < self._size

    def _range(self, tokenizer: dict) -> SpeechRange:
        if not isinstance(tokenizer, dict):
            raise ConfigError(f"a speech tokenizer is identified by {{'name': ..., 'hash': ...}}, got {tokenizer!r}")
        name, given = tokenizer.get("name"), tokenizer.get("hash")
        r = self._speech.get(name)
        if r is None:
            raise ConfigError(f"speech tokenizer {name!r} is not in this vocabulary; known: {list(self._speech)}")
        if given != r.meta.hash:
            raise ConfigError(
                f"speech tokenizer {name!r}: the vocabulary expects hash {r.meta.hash}, the units carry {given}; "
                "they come from a different fit of the tokenizer"
            )
        return r

    def __repr__(self) -> str:
        speech = ", ".join(f"{r.meta.name}[{r.start},{r.stop})" for r in self._speech.values())
        return (
            f"UnifiedVocab(size={len(self)}, text={self.text_size}, "
            f"specials={len(self.special_ids)}, speech=[{speech}])"
        )


def _task_name(task: str) -> str:
    if not task.replace("_", "").isalnum():
        raise ConfigError(f"task name {task!r} must be letters, digits and underscores")
    return task


def _read_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise DataError(path, "text tokenizer file not found (expected a Hugging Face tokenizer.json)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception subclasses
        raise DataError(path, f"not a Hugging Face tokenizer file: {e}") from None


CHARS_FILE = "chars.json"


class CharVocab:
    """Characters of normalised transcripts (``scoring.normalize_text``) for the encoder's
    CTC head. Id 0 is the CTC blank; characters never seen in training are skipped."""

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterator[str] | Sequence[str]) -> "CharVocab":
        return cls(sorted({c for t in texts for c in normalize_text(t)}))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self._ids[c] for c in normalize_text(text) if c in self._ids]

    def decode_ctc(self, frame_ids: Sequence[int]) -> str:
        """Greedy CTC read-out: collapse repeats, then drop blanks."""
        out, prev = [], 0
        for i in frame_ids:
            if i != prev and i != 0:
                out.append(self.chars[i - 1])
            prev = i
        return "".join(out)

    def save(self, directory: str | Path) -> None:
        atomic_write_text(Path(directory) / CHARS_FILE, json.dumps(self.chars, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "CharVocab":
        path = Path(directory) / CHARS_FILE
        if not path.is_file():
            raise DataError(path, "no CTC character list here (not a prefix-model or encoder checkpoint?)")
        return cls(json.loads(path.read_text(encoding="utf-8")))
