"""Feature dumps: computed once (sharded, resumable), read by fit and apply with the same
results as the audio gives, and refused when they do not match."""

import json

import numpy as np
import pytest
import torch

from _discretize_util import RECIPES, make_corpus, record, tiny_hubert, write_manifest
from unified_lm.discretize import FeatureDump, apply_tokenizer, dump_features, fit_tokenizer
from unified_lm.discretize import dump as dump_module
from unified_lm.discretize.extractors import SslFeatures
from unified_lm.errors import ConfigError, DataError

SSL = RECIPES / "ssl-km.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dump")
    corpus = make_corpus(root / "corpus", num_utts=6, seconds=1.0)
    model = tiny_hubert(root / "hubert")
    # Unit subwords: the fit's second pass over the features reads the dump too.
    recipe = [f"kmeans.features.model_path={model}", "kmeans.features.layer=1", "kmeans.k=8",
              "kmeans.sample_fraction=1.0", "post.subwords=bpe", "post.subword_vocab_size=12"]  # fmt: skip
    return corpus, recipe, root


def _dump(setup, out, **kw):
    corpus, recipe, _ = setup
    return dump_features(SSL, corpus, out, overrides=recipe, progress=False, **kw)


def test_fit_and_apply_from_a_sharded_dump_equal_those_from_the_audio_and_compute_no_features(setup, tmp_path, monkeypatch):
    corpus, recipe, root = setup
    fit_tokenizer(SSL, corpus, tmp_path / "tok-audio", overrides=recipe, progress=False)
    apply_tokenizer(tmp_path / "tok-audio", corpus, tmp_path / "audio.jsonl", progress=False)
    for shard in (1, 0):
        assert _dump(setup, tmp_path / "feats", shard=shard, nshards=2)["utterances"] == 3
    info = json.loads((tmp_path / "feats" / "features.json").read_text())
    assert (info["dim"], info["frame_rate"], info["nshards"]) == (16, 50.0, 2)

    def no_model(*args):
        raise AssertionError("features were computed although a dump was given")

    monkeypatch.setattr(SslFeatures, "batch", no_model)
    meta = fit_tokenizer(SSL, corpus, tmp_path / "tok-dump", overrides=recipe, progress=False, features=tmp_path / "feats")
    assert meta.hash == json.loads((tmp_path / "tok-audio" / "meta.json").read_text())["hash"]
    np.testing.assert_array_equal(np.load(tmp_path / "tok-dump" / "centroids.npy"), np.load(tmp_path / "tok-audio" / "centroids.npy"))
    apply_tokenizer(tmp_path / "tok-audio", corpus, tmp_path / "dump.jsonl", progress=False, features=tmp_path / "feats")
    assert (tmp_path / "dump.jsonl").read_bytes() == (tmp_path / "audio.jsonl").read_bytes()
    # A rerun of a finished shard computes nothing.
    assert _dump(setup, tmp_path / "feats", shard=0, nshards=2)["new"] == 0


@pytest.mark.fault
def test_an_interrupted_dump_resumes_to_the_same_bytes(setup, tmp_path, monkeypatch):
    _dump(setup, tmp_path / "whole")
    real = dump_module.extract_batch
    calls = []

    def dies_on_the_third_batch(extract, wavs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(extract, wavs)

    monkeypatch.setattr(dump_module, "BATCH_SECONDS", 0.0)  # one utterance a batch
    monkeypatch.setattr(dump_module, "FLUSH_EVERY", 1)
    monkeypatch.setattr(dump_module, "extract_batch", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        _dump(setup, tmp_path / "resumed")
    data, index = tmp_path / "resumed" / "shard-0-of-1.f32.partial", tmp_path / "resumed" / "shard-0-of-1.index.jsonl.partial"
    assert len(index.read_text().splitlines()) == 2
    with open(data, "ab") as f:  # a torn frame and a torn index row, as a crash mid-write leaves them
        f.write(b"\x00" * 10)
    with open(index, "a") as f:
        f.write('{"line": 3, "id"')
    monkeypatch.setattr(dump_module, "extract_batch", real)
    summary = _dump(setup, tmp_path / "resumed")
    assert (summary["utterances"], summary["new"]) == (6, 4)
    for name in ("shard-0-of-1.f32", "shard-0-of-1.index.jsonl", "features.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["features.json", "shard-0-of-1.f32", "shard-0-of-1.index.jsonl"]


@pytest.mark.fault
def test_a_dump_that_does_not_match_is_refused_with_the_reason(setup, tmp_path):
    corpus, recipe, root = setup
    _dump(setup, tmp_path / "feats")
    with pytest.raises(ConfigError, match="other features"):
        fit_tokenizer(SSL, corpus, tmp_path / "tok", overrides=recipe + ["kmeans.features.layer=2"], progress=False,
                      features=tmp_path / "feats")  # fmt: skip
    other = write_manifest(root / "corpus" / "other.jsonl", [record("u0", "u0.wav", 1.0)])
    with pytest.raises(ConfigError, match="whose content differs"):
        fit_tokenizer(SSL, other, tmp_path / "tok", overrides=recipe, progress=False, features=tmp_path / "feats")
    assert not (tmp_path / "tok").exists()
    with pytest.raises(ConfigError, match="another number of shards"):
        _dump(setup, tmp_path / "feats", shard=0, nshards=2)
    with pytest.raises(ConfigError, match="only kmeans features"):
        dump_features(RECIPES / "encodec-24k.yaml", corpus, tmp_path / "codec", progress=False)
    _dump(setup, tmp_path / "half", shard=0, nshards=2)
    with pytest.raises(DataError, match="shard 1 of 2 is not dumped yet.*--shard 1 --nshards 2"):
        FeatureDump(tmp_path / "half")
    with pytest.raises(DataError, match="not a feature dump"):
        FeatureDump(tmp_path)


@pytest.mark.fault
def test_lines_left_out_of_a_dump_are_rejected_by_apply_with_the_reason(setup, tmp_path):
    corpus, recipe, root = setup
    rows = [record(f"u{i}", f"u{i}.wav", 1.0) for i in range(3)] + [record("gone", "missing.wav", 1.0)]
    manifest = write_manifest(root / "corpus" / "with-bad.jsonl", rows)
    with pytest.raises(DataError, match="missing.wav"):
        dump_features(SSL, manifest, tmp_path / "strict", overrides=recipe, progress=False)
    dump_features(SSL, manifest, tmp_path / "feats", overrides=recipe, progress=False, skip_bad=True)
    dump = FeatureDump(tmp_path / "feats")
    assert len(dump) == 3 and 4 not in dump and dump.features(1).shape == (49, 16)
    fit_tokenizer(SSL, manifest, tmp_path / "tok", overrides=recipe, progress=False, features=tmp_path / "feats")
    summary = apply_tokenizer(tmp_path / "tok", manifest, tmp_path / "units.jsonl", progress=False,
                              skip_bad=True, features=tmp_path / "feats")  # fmt: skip
    assert (summary["utterances"], summary["rejected"]) == (3, 1)
    (reject,) = [json.loads(x) for x in open(summary["rejects"])]
    assert reject["line"] == 4 and "not in the feature dump" in reject["reason"]
    assert torch.is_tensor(dump.features(2))


@pytest.mark.fault
def test_a_second_dump_of_a_shard_being_written_is_refused_and_cuts_nothing(setup, tmp_path):
    import fcntl

    _dump(setup, tmp_path / "feats", shard=0, nshards=2)  # features.json is there
    index = tmp_path / "feats" / "shard-1-of-2.index.jsonl.partial"
    index.write_text('{"line": 2, "id": "u1", "samples": 16000, "frames": 49}\n')
    with open(index, "a") as held:  # a running dump of shard 1 holds this lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another dump is writing shard 1 of 2"):
            _dump(setup, tmp_path / "feats", shard=1, nshards=2)
    assert index.read_text().count("\n") == 1  # its rows were not cut back
