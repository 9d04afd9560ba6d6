"""WER / CER with jiwer, after one text normalisation applied to references and hypotheses.

Normalisation (``normalize_text``):
  1. Unicode NFKC, lowercase;
  2. typographic apostrophes (’ ‘ ʼ) become ``'``;
  3. every punctuation character (Unicode category P*) except ``'`` becomes a space, so
     "state-of-the-art" scores as four words and "don't" stays one;
  4. runs of whitespace collapse to one space; leading/trailing space is dropped.

CER counts characters of the normalised text, spaces included (jiwer's definition).
Per-utterance error counts and reference lengths are kept so later benchmarks can
bootstrap confidence intervals over utterances.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Any, Sequence

import jiwer

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, punctuation except apostrophes to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = "".join(" " if unicodedata.category(c).startswith("P") and c != "'" else c for c in text)
    return _SPACES.sub(" ", text).strip()


def _errors_per_utterance(output: Any) -> list[int]:
    """Substitutions + deletions + insertions of each sentence of a jiwer output."""
    counts = []
    for chunks in output.alignments:
        n = 0
        for c in chunks:
            if c.type in ("substitute", "delete"):
                n += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                n += c.hyp_end_idx - c.hyp_start_idx
        counts.append(n)
    return counts


def _rates(rows: list[dict[str, int]]) -> dict[str, Any]:
    word_errors = sum(r["word_errors"] for r in rows)
    ref_words = sum(r["ref_words"] for r in rows)
    char_errors = sum(r["char_errors"] for r in rows)
    ref_chars = sum(r["ref_chars"] for r in rows)
    return {
        "num_utts": len(rows),
        "wer": word_errors / max(ref_words, 1),
        "cer": char_errors / max(ref_chars, 1),
        "word_errors": word_errors,
        "ref_words": ref_words,
        "char_errors": char_errors,
        "ref_chars": ref_chars,
    }


def score_utterances(refs: Sequence[str], hyps: Sequence[str]) -> list[dict[str, int]]:
    """Per-utterance ``word_errors, ref_words, char_errors, ref_chars`` after normalisation."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return []
    refs = [normalize_text(r) for r in refs]
    hyps = [normalize_text(h) for h in hyps]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return [
        {"word_errors": we, "ref_words": len(r.split()), "char_errors": ce, "ref_chars": len(r)}
        for r, we, ce in zip(refs, _errors_per_utterance(words), _errors_per_utterance(chars))
    ]


def score_corpus(refs: Sequence[str], hyps: Sequence[str], subsets: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Corpus WER/CER, the same per subset, and per-utterance counts.

    Returns ``{num_utts, wer, cer, word_errors, ref_words, char_errors, ref_chars,
    subsets: {name: {same keys}}, utterances: [{word_errors, ref_words, char_errors, ref_chars}]}``.
    Rates are pooled (total errors / total reference length), not averaged over utterances.
    Utterances without a subset count only towards the totals.
    """
    rows = score_utterances(refs, hyps)
    by_subset: dict[str, list[dict[str, int]]] = defaultdict(list)
    for row, subset in zip(rows, subsets or [None] * len(rows)):
        if subset is not None:
            by_subset[subset].append(row)
    return {
        **_rates(rows),
        "subsets": {name: _rates(by_subset[name]) for name in sorted(by_subset)},
        "utterances": rows,
    }


def asr_rows(records: Sequence[Any], hyps: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scores transcripts of ``records`` (anything with ``id``, ``text``, ``subset``): one row a
    record ``{id, ref, hyp, subset, errors, ref_words, char_errors, ref_chars}`` (``errors`` =
    word errors) and the ``score_corpus`` dict without its per-utterance list."""
    scores = score_corpus([r.text for r in records], hyps, [r.subset for r in records])
    rows = [
        {
            "id": r.id,
            "ref": r.text,
            "hyp": hyp,
            "subset": r.subset,
            "errors": u["word_errors"],
            "ref_words": u["ref_words"],
            "char_errors": u["char_errors"],
            "ref_chars": u["ref_chars"],
        }
        for r, hyp, u in zip(records, hyps, scores.pop("utterances"))
    ]
    return rows, scores
