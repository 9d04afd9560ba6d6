"""Tiny vocabularies and unit records shared by the vocab, task and loss tests."""

from __future__ import annotations

from unified_lm.corpus.manifest import UnitRecord
from unified_lm.tokenizer_meta import TokenizerMeta
from unified_lm.vocab import UnifiedVocab

TRANSCRIPTS = ["the cat sat on the mat", "a dog ran in the park", "hello world", "speech and text together"] * 5

KMEANS = TokenizerMeta(name="fbank-km10", hash="a1b2", kind="kmeans", num_units=10, frame_rate=100.0)
ENCODEC = TokenizerMeta(
    name="encodec-2cb", hash="c3d4", kind="encodec", num_units=8, frame_rate=75.0, codebooks=2, codebook_size=4
)


def tiny_vocab(speech=(KMEANS,), **kwargs) -> UnifiedVocab:
    return UnifiedVocab.train(TRANSCRIPTS, list(speech), text_vocab_size=300, **kwargs)


def record(text="hello world", units=(1, 2, 3), meta=KMEANS, id="utt1") -> UnitRecord:
    return UnitRecord(id=id, text=text, speaker="spk", units=list(units), tokenizer=meta.identity)
