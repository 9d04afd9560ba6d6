import json

import pytest
from _lm_util import trained_run  # noqa: F401

from unified_lm.config import from_dict
from unified_lm.decode import decode, generate, scores_path, transcribe
from unified_lm.errors import ConfigError, DataError
from unified_lm.io import read_jsonl, write_jsonl
from unified_lm.models import load_checkpoint
from unified_lm.tasks import TaskConfig, asr_prompt
from unified_lm.unit_data import read_checked_manifest


@pytest.fixture(scope="module")
def loaded(trained_run):  # noqa: F811
    corpus, run, _ = trained_run
    model, vocab, cfg = load_checkpoint(run / "best")
    records = read_checked_manifest(corpus["dev"], vocab)
    return model, vocab, cfg, records


def _generate(loaded, **kwargs):
    model, vocab, cfg, records = loaded
    prompts = [asr_prompt(r, vocab, from_dict(TaskConfig, cfg["tasks"])) for r in records]
    return generate(
        model, prompts, stop_id=vocab.text_end_id, pad_id=vocab.pad_id,
        allowed=[*range(vocab.text_size), vocab.text_end_id], vocab_size=len(vocab), max_new_tokens=20, **kwargs,
    )


def test_greedy_with_and_without_kv_cache_agree(loaded):
    cached = _generate(loaded, use_cache=True)
    assert cached == _generate(loaded, use_cache=False)
    assert all(cached)


def test_generation_stays_in_text_tokens(loaded):
    _, vocab, _, _ = loaded
    for beam in (1, 3):
        for ids in _generate(loaded, beam=beam):
            assert all(0 <= i < vocab.text_size for i in ids)


def test_overfitted_model_transcribes_its_utterances(loaded):
    model, vocab, cfg, records = loaded
    tasks = from_dict(TaskConfig, cfg["tasks"])
    greedy = transcribe(model, vocab, records, tasks, batch_size=4)
    assert greedy == [r.text for r in records]
    # Left padding must not change results: one at a time gives the same.
    assert transcribe(model, vocab, records, tasks, batch_size=1) == greedy
    beam = transcribe(model, vocab, records, tasks, batch_size=4, beam=3)
    assert len(beam) == len(records) and all(isinstance(h, str) and h for h in beam)


def test_decode_writes_hypotheses_and_scores(trained_run, tmp_path):  # noqa: F811
    corpus, run, _ = trained_run
    out = tmp_path / "dev.hyp.jsonl"
    scores = decode(run / "best", corpus["dev"], out, batch_size=4)
    assert scores["wer"] < 0.2 and scores["num_utts"] == 6
    assert set(scores["subsets"]) == {"seen_voice", "heldout_voice"}
    assert json.loads(scores_path(out).read_text()) == scores
    assert scores_path(out).name == "dev.hyp.scores.json"
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(corpus["dev"])]
    assert {"id", "ref", "hyp", "subset", "errors", "ref_words", "char_errors", "ref_chars"} <= set(rows[0])
    assert sum(r["errors"] for r in rows) == scores["word_errors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.hyp.jsonl", "dev.hyp.scores.json"]


def test_decode_tts_returns_units_of_the_tokenizer(trained_run, tmp_path):  # noqa: F811
    corpus, run, _ = trained_run
    scores = decode(run / "best", corpus["dev"], tmp_path / "tts.jsonl", task="tts", max_new_tokens=8)
    assert scores["task"] == "tts" and "uer" in scores
    for row in read_jsonl(tmp_path / "tts.jsonl"):
        assert len(row["hyp_units"]) <= 8
        assert all(0 <= u < 48 for u in row["hyp_units"])


def test_decode_rejects_unknown_task(trained_run, tmp_path):  # noqa: F811
    corpus, run, _ = trained_run
    with pytest.raises(ConfigError, match="unknown task 'mt'"):
        decode(run / "best", corpus["dev"], tmp_path / "x.jsonl", task="mt")


@pytest.mark.fault
def test_decode_refuses_outputs_it_could_not_or_should_not_write(trained_run, tmp_path):  # noqa: F811
    corpus, run, _ = trained_run
    before = corpus["dev"].read_bytes()
    with pytest.raises(ConfigError, match="the output path is also an input"):
        decode(run / "best", corpus["dev"], corpus["dev"])
    assert corpus["dev"].read_bytes() == before
    with pytest.raises(ConfigError, match="is a directory"):
        decode(run / "best", corpus["dev"], tmp_path)
    with pytest.raises(ConfigError, match=r"max_new_tokens \(-1\) must be >= 1"):
        decode(run / "best", corpus["dev"], tmp_path / "x.jsonl", max_new_tokens=-1)
    assert not list(tmp_path.iterdir())


@pytest.mark.fault
def test_decode_names_a_unit_outside_the_tokenizer_range(trained_run, tmp_path):  # noqa: F811
    corpus, run, _ = trained_run
    rows = read_jsonl(corpus["dev"])
    rows[1]["units"][0] = 999
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, rows)
    with pytest.raises(DataError, match=rf"bad.jsonl: utterance '{rows[1]['id']}': unit 999 is outside \[0, 48\)"):
        decode(run / "best", bad, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
