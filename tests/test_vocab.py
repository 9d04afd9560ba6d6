"""Unified vocabulary: layout, text and unit round trips, tokenizer identity, save/load."""

import json

import pytest
from _vocab_util import ENCODEC, KMEANS, TRANSCRIPTS, tiny_vocab
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from unified_lm.tokenizer_meta import TokenizerMeta
from unified_lm.errors import ConfigError, DataError
from unified_lm.vocab import DEFAULT_TASKS, UnifiedVocab

VOCAB = tiny_vocab()
MULTI = tiny_vocab(speech=(KMEANS, ENCODEC))


def test_layout_text_then_specials_then_contiguous_speech_ranges():
    v = MULTI
    specials = sorted(v.special_ids.values())
    assert specials == list(range(v.text_size, v.text_size + len(specials)))
    assert {v.pad_id, v.text_end_id, v.speech_end_id} <= set(specials)
    assert {v.task_id(t) for t in DEFAULT_TASKS} <= set(specials)
    assert v.speech_ranges() == [(v.speech_start, v.speech_start + 10), (v.speech_start + 10, v.speech_start + 14),
                                 (v.speech_start + 14, v.speech_start + 18)]
    assert len(v) == v.speech_start + 18
    assert [m.name for m in v.tokenizers] == [KMEANS.name, ENCODEC.name]
    assert not v.is_speech(v.speech_start - 1) and v.is_speech(v.speech_start) and v.is_speech(len(v) - 1)
    assert not v.is_speech(len(v))


def test_task_ids_accept_bare_and_bracketed_names():
    assert VOCAB.task_id("asr") == VOCAB.task_id("<asr>") == VOCAB.special_ids["<asr>"]
    assert VOCAB.task_id("<spec_end>") == VOCAB.special_ids["<spec_end>"]
    with pytest.raises(ConfigError, match="<translate>"):
        VOCAB.task_id("translate")


def test_custom_tasks_get_their_own_tokens():
    v = tiny_vocab(tasks=("asr", "s2st"))
    assert "<s2st>" in v.special_ids and "<tts>" not in v.special_ids
    with pytest.raises(ConfigError, match="task name"):
        tiny_vocab(tasks=("a b",))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_text_round_trips_for_any_unicode(text):
    ids = VOCAB.encode_text(text)
    assert all(0 <= i < VOCAB.text_size for i in ids)
    assert VOCAB.decode_text(ids) == text


def test_bpe_learns_merges_from_the_transcripts():
    # Frequent training words shrink to few tokens; bytes alone would need 3 and 5.
    assert len(VOCAB.encode_text("the")) == 1
    assert len(VOCAB.encode_text("hello")) < 5
    assert VOCAB.text_size > 256


def test_decode_text_skips_special_and_speech_ids():
    ids = VOCAB.encode_text("the cat")
    mixed = [VOCAB.task_id("asr"), *VOCAB.encode_units([1, 2], KMEANS.identity), VOCAB.speech_end_id, *ids,
             VOCAB.text_end_id]
    assert VOCAB.decode_text(mixed) == "the cat"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, KMEANS.num_units - 1), max_size=50))
def test_units_round_trip_single_tokenizer(units):
    ids = VOCAB.encode_units(units, KMEANS.identity)
    start, stop = VOCAB.speech_ranges()[0]
    assert all(start <= i < stop for i in ids)
    assert VOCAB.decode_units(ids) == units
    assert VOCAB.decode_units(ids, KMEANS.identity) == units


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, KMEANS.num_units - 1), max_size=30),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=30),
)
def test_units_round_trip_several_tokenizers_and_codebooks(km_units, frames):
    # EnCodec units come interleaved per frame, codebook c already offset by c * codebook_size.
    enc_units = [u for c0, c1 in frames for u in (c0, 4 + c1)]
    km_ids = MULTI.encode_units(km_units, KMEANS.identity)
    enc_ids = MULTI.encode_units(enc_units, ENCODEC.identity)
    km_range, cb0, cb1 = MULTI.speech_ranges()
    assert all(km_range[0] <= i < km_range[1] for i in km_ids)
    assert all(cb0[0] <= i < cb0[1] for i in enc_ids[0::2])
    assert all(cb1[0] <= i < cb1[1] for i in enc_ids[1::2])
    # Each tokenizer decodes its own ids and skips the other's.
    mixed = km_ids + enc_ids
    assert MULTI.decode_units(mixed, KMEANS.identity) == km_units
    assert MULTI.decode_units(mixed, ENCODEC.identity) == enc_units


def test_decode_units_needs_a_tokenizer_when_there_are_several():
    with pytest.raises(ConfigError, match="2 speech tokenizers"):
        MULTI.decode_units([MULTI.speech_start])


def test_units_of_another_fit_are_refused_naming_both_hashes():
    with pytest.raises(ConfigError, match=r"expects hash a1b2.*carry ffff"):
        VOCAB.encode_units([1], {"name": KMEANS.name, "hash": "ffff"})
    with pytest.raises(ConfigError, match="not in this vocabulary"):
        VOCAB.encode_units([1], ENCODEC.identity)


@pytest.mark.parametrize("bad", [-1, KMEANS.num_units])
def test_out_of_range_units_are_refused(bad):
    with pytest.raises(ValueError, match=f"unit {bad} is outside"):
        VOCAB.encode_units([0, bad], KMEANS.identity)


def test_inconsistent_or_duplicate_tokenizers_are_refused():
    with pytest.raises(ConfigError, match="given twice"):
        tiny_vocab(speech=(KMEANS, KMEANS))
    odd = TokenizerMeta(
        name="odd", hash="x", kind="encodec", num_units=9, frame_rate=75.0, codebooks=2, codebook_size=4
    )
    with pytest.raises(ConfigError, match="do not make num_units=9"):
        tiny_vocab(speech=(odd,))


def test_text_vocab_below_byte_alphabet_is_refused():
    with pytest.raises(ConfigError, match="256"):
        UnifiedVocab.train(TRANSCRIPTS, [KMEANS], text_vocab_size=100)


def test_save_load_round_trip_as_plain_json(tmp_path):
    MULTI.save(tmp_path)
    layout = json.loads((tmp_path / "unified_vocab.json").read_text())
    assert layout["size"] == len(MULTI)
    assert layout["special_tokens"]["<speech_end>"] == MULTI.speech_end_id
    assert [s["name"] for s in layout["speech"]] == [KMEANS.name, ENCODEC.name]
    json.loads((tmp_path / "text_tokenizer.json").read_text())

    loaded = UnifiedVocab.load(tmp_path)
    assert len(loaded) == len(MULTI) and loaded.special_ids == MULTI.special_ids
    assert loaded.speech_ranges() == MULTI.speech_ranges()
    assert loaded.tokenizers == MULTI.tokenizers
    text = "speech and text, ünïcode!"
    assert loaded.encode_text(text) == MULTI.encode_text(text)
    assert loaded.encode_units([3, 7], ENCODEC.identity) == MULTI.encode_units([3, 7], ENCODEC.identity)


def test_load_refuses_missing_or_tampered_layout(tmp_path):
    with pytest.raises(DataError, match="no unified vocabulary"):
        UnifiedVocab.load(tmp_path)
    VOCAB.save(tmp_path)
    path = tmp_path / "unified_vocab.json"
    layout = json.loads(path.read_text())
    layout["special_tokens"]["<pad>"] += 1
    path.write_text(json.dumps(layout))
    with pytest.raises(DataError, match="does not match"):
        UnifiedVocab.load(tmp_path)


def _gpt2_like_tokenizer(directory):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(TRANSCRIPTS, trainer)
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    return tok


def test_from_text_tokenizer_keeps_the_pretrained_ids(tmp_path):
    hf = _gpt2_like_tokenizer(tmp_path / "gpt2")
    v = UnifiedVocab.from_text_tokenizer(tmp_path / "gpt2", [KMEANS])
    assert v.text_size == hf.get_vocab_size()
    assert v.encode_text("the dog sat") == hf.encode("the dog sat").ids
    eot = hf.token_to_id("<|endoftext|>")
    assert v.decode_text([*v.encode_text("hello"), eot]) == "hello"
    assert v.pad_id == v.text_size  # the pretrained rows come first, untouched

    with pytest.raises(DataError, match="tokenizer file not found"):
        UnifiedVocab.from_text_tokenizer(tmp_path, [KMEANS])


@pytest.mark.parametrize("start", ["trained", "gpt2"])
def test_a_saved_vocabulary_loads_with_auto_tokenizer_at_the_same_ids(tmp_path, start):
    from transformers import AutoTokenizer

    if start == "gpt2":
        _gpt2_like_tokenizer(tmp_path / "gpt2")
        v = UnifiedVocab.from_text_tokenizer(tmp_path / "gpt2", [KMEANS, ENCODEC])
    else:
        v = tiny_vocab(speech=(KMEANS, ENCODEC))
    v.save(tmp_path / "ckpt")
    hf = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert len(hf) == len(v)
    assert hf.encode("the dog sat in the park", add_special_tokens=False) == v.encode_text("the dog sat in the park")
    assert {t: hf.convert_tokens_to_ids(t) for t in v.special_ids} == v.special_ids
    assert (hf.pad_token_id, hf.eos_token_id) == (v.pad_id, v.text_end_id)
    for meta, units in ((KMEANS, [0, 9]), (ENCODEC, [0, 7])):
        tokens = [v.speech_token(meta, u) for u in units]
        assert hf.convert_tokens_to_ids(tokens) == v.encode_units(units, meta.identity)
    # A whole ASR example: speech tokens, then text, decoded back to the transcript.
    ids = hf.encode(f"<asr>{v.speech_token(KMEANS, 3)}<speech_end>hello world<text_end>", add_special_tokens=False)
    assert ids == [v.task_id("asr"), *v.encode_units([3], KMEANS.identity), v.speech_end_id, *v.encode_text("hello world"), v.text_end_id]
    assert hf.decode(ids, skip_special_tokens=True).endswith("hello world")
