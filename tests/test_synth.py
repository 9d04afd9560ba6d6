"""The synthetic corpus builder and its voices, on a 12-sentence corpus rendered for real."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unified_lm.corpus.manifest import read_audio_manifest
from unified_lm.corpus.synth import synthesize
from unified_lm.corpus.voices import (
    DEFAULT_HELDOUT_VOICE,
    VOICES,
    RenderJob,
    SynthesisError,
    Voice,
    available_voices,
    check_engines,
    render,
)
from unified_lm.errors import ConfigError, DataError

SPLITS = ("train", "dev", "test")
NUM_SENTENCES = 12


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    """Every manifest and WAV under a corpus root, by content."""
    files = [root / f"{s}.jsonl" for s in SPLITS] + sorted((root / "wavs").glob("*.wav"))
    return {str(p.relative_to(root)): _digest(p) for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    summary = synthesize(out, num_utts=NUM_SENTENCES, seed=3, jobs=2, continuation=True, progress=False)
    return out, summary


def _records(root: Path) -> dict[str, list]:
    return {s: read_audio_manifest(root / f"{s}.jsonl") for s in SPLITS}


def test_wavs_are_16k_mono_pcm16_and_not_silent(corpus):
    root, _ = corpus
    wavs = sorted((root / "wavs").glob("*.wav"))
    assert len(wavs) == 3 * (NUM_SENTENCES + 1)  # full + prompt + continuation; +1 held-out test utt
    for path in wavs:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        audio, _ = sf.read(str(path), dtype="float32")
        assert np.sqrt(np.mean(audio**2)) > 0.01, f"{path} is silent"
    assert not list((root / "wavs").glob(".*"))  # no temp files left behind


def test_manifests_have_the_contract_fields(corpus):
    root, summary = corpus
    records = _records(root)
    assert {s: len(r) for s, r in records.items()} == {"train": 10, "dev": 1, "test": 2}
    for split, recs in records.items():
        for r in recs:
            path = r.audio_path(root / f"{split}.jsonl")
            assert path.is_file() and r.audio == f"wavs/{r.id}.wav"
            assert r.sample_rate == 16000
            assert r.duration == pytest.approx(sf.info(str(path)).duration, abs=1e-3)
            assert r.speaker in {v.name for v in VOICES}
            assert r.text.strip()
    assert {r.subset for r in records["test"]} == {"seen_voice", "heldout_voice"}
    assert all(r.subset is None for r in records["train"] + records["dev"])
    assert summary["utterances"] == 13
    assert summary["splits"]["test"]["heldout_voice"] == 1
    assert summary["distinct_words"] > 0 and summary["hours"] > 0
    assert json.loads((root / "corpus.json").read_text()) == {k: v for k, v in summary.items() if k != "build"}


def test_dev_and_test_sentences_never_occur_in_train(corpus):
    records = _records(corpus[0])
    train = {r.text for r in records["train"]}
    assert not train & {r.text for r in records["dev"] + records["test"]}


def test_heldout_voice_is_only_in_test(corpus):
    records = _records(corpus[0])
    heldout = [r for r in records["test"] if r.subset == "heldout_voice"]
    assert {r.speaker for r in heldout} == {DEFAULT_HELDOUT_VOICE}
    assert DEFAULT_HELDOUT_VOICE not in {r.speaker for r in records["train"] + records["dev"]}
    assert all(r.speaker != DEFAULT_HELDOUT_VOICE for r in records["test"] if r.subset == "seen_voice")
    # The held-out voice re-speaks the seen-voice test sentences.
    assert {r.text for r in heldout} == {r.text for r in records["test"] if r.subset == "seen_voice"}


def test_continuation_pairs(corpus):
    root, summary = corpus
    for recs in _records(root).values():
        for r in recs:
            x = r.extra
            assert f"{x['prompt_text']} {x['cont_text']}" == r.text
            assert len(x["prompt_text"].split()) >= 2 and len(x["cont_text"].split()) >= 2
            prompt, cont = root / x["prompt_audio"], root / x["cont_audio"]
            assert prompt.name == f"{r.id}.prompt.wav" and cont.name == f"{r.id}.cont.wav"
            assert sf.info(str(prompt)).duration < r.duration and sf.info(str(cont)).duration < r.duration
    assert summary["continuation_pairs"] == summary["utterances"]


def test_same_seed_gives_identical_manifests_and_audio(corpus, tmp_path):
    root, _ = corpus
    again = tmp_path / "again"
    synthesize(again, num_utts=NUM_SENTENCES, seed=3, jobs=2, continuation=True, progress=False)
    assert _snapshot(again) == _snapshot(root)
    other = tmp_path / "other"
    synthesize(other, num_utts=NUM_SENTENCES, seed=4, jobs=1, progress=False)
    assert (other / "train.jsonl").read_bytes() != (root / "train.jsonl").read_bytes()


def test_resume_renders_only_the_missing_wavs(corpus, tmp_path):
    root, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    wavs = sorted((copy / "wavs").glob("*.wav"))
    for path in wavs[:2]:
        path.unlink()
    wavs[2].write_bytes(b"RIFF torn")  # an invalid file counts as missing
    (copy / "wavs" / ".train-00000.wav.123.tmp").write_bytes(b"partial")
    summary = synthesize(copy, num_utts=NUM_SENTENCES, seed=3, jobs=2, continuation=True, progress=False)
    assert summary["build"]["rendered"] == 3
    assert summary["build"]["reused"] == len(wavs) - 3
    assert _snapshot(copy) == _snapshot(root)
    assert not list((copy / "wavs").glob(".*"))


def test_refuses_to_resume_a_different_corpus(corpus):
    with pytest.raises(ConfigError, match="another plan"):
        synthesize(corpus[0], num_utts=NUM_SENTENCES, seed=99, jobs=1, progress=False)


def test_text_file_input(tmp_path):
    text = tmp_path / "sentences.txt"
    lines = [f"This is spoken sentence number {w}." for w in ("one", "two", "three", "four", "five")]
    text.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n", encoding="utf-8")
    out = tmp_path / "corpus"
    summary = synthesize(out, num_utts=4, seed=0, text_file=text, jobs=1, progress=False)
    texts = [r.text for recs in _records(out).values() for r in recs if r.subset != "heldout_voice"]
    assert sorted(texts) == sorted(lines[:4])
    assert summary["text_source"] == str(text)


def test_text_file_that_is_not_utf8_names_file_and_line(tmp_path):
    text = tmp_path / "bad.txt"
    text.write_bytes(b"A fine first line.\nA second line.\nna\xefve \xff bytes\n")
    with pytest.raises(DataError) as err:
        synthesize(tmp_path / "corpus", num_utts=10, text_file=text, jobs=1, progress=False)
    assert err.value.path == str(text) and err.value.line == 3


def test_unknown_heldout_voice_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="flite-slt"):
        synthesize(tmp_path / "corpus", num_utts=10, heldout_voice="nobody", progress=False)


def test_every_registered_voice_renders_distinct_audio(tmp_path):
    voices = available_voices()
    assert [v.name for v in voices] == [v.name for v in VOICES]
    assert {v.engine for v in voices} == {"espeak-ng", "flite", "festival"}
    digests = {}
    for voice in voices:
        path = tmp_path / f"{voice.name}.wav"
        render(voice, [RenderJob("Seven green apples.", 1.0, 1.0, path)])
        digests[_digest(path)] = voice.name
    assert len(digests) == len(voices), "two voices render identical audio"


def test_rate_and_pitch_controls_change_the_audio(tmp_path):
    by_name = {v.name: v for v in available_voices()}
    for name in ("espeak-en-us-m3", "flite-rms", "festival-slt-hts"):
        jobs = [RenderJob("The quick brown fox jumps over the lazy dog.", rate, pitch, tmp_path / f"{name}-{i}.wav")
                for i, (rate, pitch) in enumerate([(1.0, 1.0), (1.25, 1.0), (1.0, 1.12)])]
        render(by_name[name], jobs)
        base, fast, high = (sf.info(str(j.path)).duration for j in jobs)
        assert fast == pytest.approx(base / 1.25, rel=0.1), name
        # A pitch change keeps the duration (resampled voices get a compensating rate).
        assert high == pytest.approx(base, rel=0.05), name
        assert _digest(jobs[2].path) != _digest(jobs[0].path), name


def test_missing_engine_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthesisError, match=r"festival \(Debian/Ubuntu package festival\)"):
        check_engines()


def test_engine_failure_names_the_voice_and_the_engine_message(tmp_path):
    broken = Voice("festival-nobody", "festival", ("voice_nobody",), native_pitch=False)
    with pytest.raises(SynthesisError, match=r"festival-nobody.*voice_nobody"):
        render(broken, [RenderJob("Hello there.", 1.0, 1.0, tmp_path / "x.wav")])
    assert not (tmp_path / "x.wav").exists()
