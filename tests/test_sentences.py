"""The built-in sentence generator and the text-file reader (no audio here)."""

from __future__ import annotations

import json
import re

import pytest

from unified_lm.corpus.sentences import (
    generate_sentences,
    read_sentences,
    spell_clock,
    spell_number,
    spell_ordinal,
    spell_year,
    split_for_continuation,
    text_corpus,
    words,
)
from unified_lm.errors import DataError


@pytest.fixture(scope="module")
def corpus_sentences() -> list[str]:
    return generate_sentences(3000, seed=0)


def test_sentences_are_distinct_and_4_to_20_words(corpus_sentences):
    assert len(corpus_sentences) == 3000
    assert len(set(corpus_sentences)) == 3000
    lengths = [len(words(s)) for s in corpus_sentences]
    assert min(lengths) >= 4 and max(lengths) <= 20


def test_default_corpus_has_a_real_vocabulary(corpus_sentences):
    vocab = {w for s in corpus_sentences for w in words(s)}
    assert len(vocab) >= 1500


def test_sentences_are_well_formed(corpus_sentences):
    for s in corpus_sentences:
        assert not re.search(r"\d", s), s
        assert s[0].isupper() and s[-1] in ".?", s
        assert "  " not in s and " ," not in s and " ." not in s, s
        assert "_" not in s, s


def test_articles_and_agreement(corpus_sentences):
    text = "\n".join(corpus_sentences)
    a_before_vowel = {m for m in re.findall(r"\ba ([aeiou]\w*)", text, flags=re.I)}
    assert all(w.lower().startswith(("use", "uni", "usu", "eu", "one")) for w in a_before_vowel), a_before_vowel
    an_before_consonant = {m for m in re.findall(r"\ban ([^aeiou\W]\w*)", text, flags=re.I)}
    assert all(w.lower().startswith(("hour", "honest", "honor", "heir")) for w in an_before_consonant), (
        an_before_consonant
    )
    mismatches = r"I (is|are|has|were)|[Hh]e are|[Ss]he are|([Tt]hey|[Ww]e) (is|was|has)"
    assert not re.findall(rf"\b({mismatches})\b", text)


def test_generation_is_deterministic_for_a_seed():
    assert generate_sentences(200, seed=7) == generate_sentences(200, seed=7)
    assert generate_sentences(200, seed=7) != generate_sentences(200, seed=8)
    # A shorter run is a prefix of a longer one with the same seed.
    assert generate_sentences(50, seed=7) == generate_sentences(200, seed=7)[:50]


@pytest.mark.parametrize(
    ("n", "spoken"),
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (40, "forty"), (42, "forty two"),
     (100, "one hundred"), (342, "three hundred and forty two"), (1000, "one thousand"),
     (2007, "two thousand and seven"), (12345, "twelve thousand three hundred and forty five")],
)
def test_spell_number(n, spoken):
    assert spell_number(n) == spoken


def test_spell_number_rejects_out_of_range():
    with pytest.raises(ValueError):
        spell_number(1_000_000)


def test_spell_years_times_and_dates():
    assert spell_year(1984) == "nineteen eighty four"
    assert spell_year(1905) == "nineteen oh five"
    assert spell_year(1900) == "nineteen hundred"
    assert spell_year(2003) == "two thousand and three"
    assert spell_year(2021) == "twenty twenty one"
    assert spell_clock(18, 30) == "half past six"
    assert spell_clock(20, 45) == "a quarter to nine"
    assert spell_clock(12, 45) == "a quarter to one"
    assert spell_clock(7, 5) == "seven oh five"
    assert spell_clock(0, 0) == "midnight"
    assert spell_ordinal(3) == "third"
    assert spell_ordinal(21) == "twenty first"
    assert spell_ordinal(30) == "thirtieth"


def test_split_for_continuation():
    prompt, cont = split_for_continuation("The old farmer carried a basket to the market.")
    assert f"{prompt} {cont}" == "The old farmer carried a basket to the market."
    assert len(prompt.split()) >= 2 and len(cont.split()) >= 2
    assert abs(len(prompt.split()) - len(cont.split())) <= 1
    assert split_for_continuation("Emma laughed loudly.") is None


def test_read_sentences_skips_blank_and_repeated_lines(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("First sentence here.\n\n   \nSecond  one,   spaced.\nFirst sentence here.\n", encoding="utf-8")
    assert read_sentences(path) == ["First sentence here.", "Second one, spaced."]


def test_read_sentences_names_the_bad_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Good line.\nCaf\u00e9 au lait.\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_sentences(path)
    assert err.value.line == 2
    assert err.value.path == str(path)
    assert "UTF-8" in str(err.value)


def test_read_sentences_missing_or_empty_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_sentences(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no sentences"):
        read_sentences(tmp_path / "blank.txt")


def test_text_corpus_never_holds_an_excluded_sentence():
    first = generate_sentences(200, seed=1)
    banned = first[::2]  # half of what the same seed would give, in other case and spacing
    texts = text_corpus(200, seed=1, exclude=[f"  {t.upper()} " for t in banned])
    assert len(texts) == len(set(texts)) == 200
    assert not set(texts) & set(banned)
    assert set(first[1::2]) <= set(texts)  # the rest of the stream is kept, in order
    assert text_corpus(200, seed=1) == first


def test_cli_corpus_text_excludes_dev_and_test_transcripts(tmp_path):
    from unified_lm.cli import main

    dev = generate_sentences(40, seed=7)
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("".join(
        json.dumps({"id": f"u{i}", "audio": "x.wav", "text": t, "speaker": "s", "duration": 1.0}) + "\n"
        for i, t in enumerate(dev)
    ))
    out = tmp_path / "text.txt"
    assert main(["corpus", "text", "--out", str(out), "--num-sentences", "300", "--seed", "7",
                 "--exclude", str(manifest)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 300 and not set(lines) & set(dev)
