"""Recipes, k-means backends, fitting, post-processing, EnCodec and SSL discretizers."""

import json
import logging
import os

import numpy as np
import pytest
import torch
import yaml
from _discretize_util import (
    RECIPES,
    espeak_corpus,
    make_corpus,
    overrides,
    speechlike,
    tiny_encodec_checkpoint,
    tiny_hubert,
)

from unified_lm.audio import resample
from unified_lm.discretize import (
    TokenizerMeta,
    apply_tokenizer,
    fit_tokenizer,
    load_recipe,
    load_tokenizer,
)
from unified_lm.discretize.kmeans import FaissKMeans, FrameSampler, SklearnKMeans
from unified_lm.discretize.postprocess import UnitBPE, UnitUnigram, dedup
from unified_lm.errors import ConfigError, DataError
from unified_lm.io import read_jsonl

FBANK = RECIPES / "fbank-km500.yaml"
SMALL_FBANK = ["kmeans.k=16", "kmeans.sample_fraction=1.0"]


def fit(recipe, manifest, out, overrides=()):
    return fit_tokenizer(recipe, manifest, out, overrides=list(overrides), progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_utts=8, seconds=1.0)


@pytest.fixture(scope="module")
def fbank_tok(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "fbank"
    fit(FBANK, corpus, out, SMALL_FBANK + ["post.dedup=true"])
    return out


# ---- recipes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fbank-km500", "mfcc-km100", "ssl-km", "encodec-24k", "ctc-km500"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name and recipe.section is not None


def test_recipe_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'kk'"):
        load_recipe(FBANK, ["kmeans.kk=3"])
    with pytest.raises(ConfigError, match="fbank-km500.yaml: unknown discretizer kind 'vq'"):
        load_recipe(FBANK, ["kind=vq"])
    with pytest.raises(ConfigError, match="needs a 'encodec:' section"):
        load_recipe(FBANK, ["kind=encodec"])
    with pytest.raises(ConfigError, match="unknown feature extractor 'wav2vec'; known: ctc_encoder, fbank, mfcc, ssl"):
        load_recipe(FBANK, ["kmeans.features.type=wav2vec"])
    with pytest.raises(ConfigError, match="kmeans.features: unknown key.*'num_ceps'"):
        load_recipe(FBANK, ["kmeans.features.num_ceps=13"])
    with pytest.raises(ConfigError, match="sample_fraction"):
        load_recipe(FBANK, ["kmeans.sample_fraction=0"])
    with pytest.raises(ConfigError, match="bandwidth 5.0 is not one of"):
        load_recipe(RECIPES / "encodec-24k.yaml", ["encodec.bandwidth=5.0"])


# ---- k-means ----------------------------------------------------------------------------


def test_frame_sampler_is_deterministic_bounded_and_uniform():
    def run(seed):
        sampler = FrameSampler(fraction=0.5, max_frames=300, seed=seed)
        for i in range(20):  # frame value = its global index, to see which were kept
            sampler.add(np.arange(i * 100, (i + 1) * 100, dtype=np.float32)[:, None])
        return sampler.frames()[:, 0]

    a = run(0)
    assert len(a) == 300 and np.array_equal(a, run(0)) and not np.array_equal(a, run(1))
    assert len(np.unique(a)) == 300
    # Uniform over the stream, not biased to its start or end: every quarter gets ~25%.
    quarters = np.bincount((a // 500).astype(int), minlength=4)
    assert quarters.min() > 40


def test_the_fit_reports_the_frames_it_used_and_warns_when_max_frames_cuts_a_fraction_short(corpus, tmp_path, caplog):
    fit(FBANK, corpus, tmp_path / "all", SMALL_FBANK)
    report = json.loads((tmp_path / "all" / "kmeans_sample.json").read_text())
    assert report["frames_used"] == report["frames_seen"] > 100 and not report["capped"]
    # sample_fraction 1 with a cap: "all frames, at most N", as asked: information, no warning.
    with caplog.at_level(logging.INFO, logger="unified_lm.discretize"):
        fit(FBANK, corpus, tmp_path / "count", [*SMALL_FBANK, "kmeans.max_frames=64"])
    report = json.loads((tmp_path / "count" / "kmeans_sample.json").read_text())
    assert report["frames_used"] == 64 and report["capped"] and report["share_used"] < 0.5
    assert "(at most kmeans.max_frames=64)" in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # A fraction the cap cuts short is a warning.
    fit(FBANK, corpus, tmp_path / "capped", [*SMALL_FBANK, "kmeans.sample_fraction=0.9", "kmeans.max_frames=64"])
    assert "kmeans.max_frames=64 capped the 0.9 sample" in caplog.text


def test_kmeans_backends_agree_given_the_same_centroids():
    rng = np.random.default_rng(0)
    centroids = rng.normal(0, 10, (32, 8)).astype(np.float32)
    labels = rng.integers(0, 32, 2000)
    x = centroids[labels] + rng.normal(0, 0.5, (2000, 8)).astype(np.float32)
    faiss_km, sklearn_km = FaissKMeans.from_centroids(centroids), SklearnKMeans.from_centroids(centroids)
    assert np.array_equal(sklearn_km.model.cluster_centers_, centroids)
    assert np.array_equal(faiss_km.assign(x), labels)
    assert np.array_equal(sklearn_km.assign(x), labels)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_fit_is_deterministic(backend):
    from unified_lm.discretize.kmeans import fit_kmeans
    from unified_lm.discretize.tokenizer_recipe import KMeansConfig, SklearnKMeansConfig

    x = np.random.default_rng(0).normal(size=(600, 4)).astype(np.float32)
    cfg = KMeansConfig(k=5, backend=backend, niter=5, sklearn=SklearnKMeansConfig(batch_size=100, n_init=2))
    a, b = fit_kmeans(x, cfg).centroids, fit_kmeans(x, cfg).centroids
    assert a.shape == (5, 4) and np.array_equal(a, b)
    with pytest.raises(ConfigError, match="only 3 frames"):
        fit_kmeans(x[:3], cfg)


# ---- fit and encode -----------------------------------------------------------------------


def test_fit_writes_a_self_describing_directory(fbank_tok):
    assert sorted(p.name for p in fbank_tok.iterdir()) == ["centroids.npy", "kmeans_sample.json", "meta.json", "recipe.yaml"]
    meta = TokenizerMeta.load(fbank_tok)
    assert (meta.name, meta.kind, meta.num_units, meta.codebooks) == ("fbank-km500", "kmeans", 16, 1)
    assert meta.frame_rate == 100
    assert len(meta.hash) == 64
    saved = yaml.safe_load((fbank_tok / "recipe.yaml").read_text())
    assert saved["kmeans"]["k"] == 16
    assert saved["kmeans"]["features"] == {"type": "fbank", "num_mel_bins": 80, "cmn": True, "context": 0}  # defaults spelled out
    assert np.load(fbank_tok / "centroids.npy").shape == (16, 80)
    assert not list(fbank_tok.parent.glob(".*tmp"))  # no staging dir left behind


@pytest.mark.fault
def test_fit_removes_what_a_killed_fit_left_and_nothing_of_a_running_one(corpus, tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # its id now names no process, as after a kill -9
    killed = tmp_path / f".tok.{gone.pid}.tmp"
    running = tmp_path / f".tok.{os.getppid()}.tmp"  # a live process's staging dir
    for d in (killed, running):
        (d / "part").mkdir(parents=True)
    fit(FBANK, corpus, tmp_path / "tok", SMALL_FBANK)
    assert not killed.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, "tok"])


@pytest.mark.fault
def test_fit_on_an_empty_manifest_names_it(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: the manifest is empty"):
        fit(FBANK, empty, tmp_path / "tok", SMALL_FBANK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


def test_fit_is_deterministic(corpus, fbank_tok, tmp_path):
    again = tmp_path / "again"
    meta = fit(FBANK, corpus, again, SMALL_FBANK + ["post.dedup=true"])
    assert meta == TokenizerMeta.load(fbank_tok)
    assert np.array_equal(np.load(again / "centroids.npy"), np.load(fbank_tok / "centroids.npy"))
    other = fit(FBANK, corpus, tmp_path / "seed1", SMALL_FBANK + ["kmeans.seed=1"])
    assert other.hash != meta.hash


def test_fit_refuses_an_existing_dir_and_leaves_nothing_on_failure(corpus, fbank_tok, tmp_path):
    with pytest.raises(ConfigError, match="already exists"):
        fit(FBANK, corpus, fbank_tok, SMALL_FBANK)
    with pytest.raises(ConfigError, match="frames were sampled for k=5000"):
        fit(FBANK, corpus, tmp_path / "tok", ["kmeans.k=5000", "kmeans.max_frames=5000"])
    assert list(tmp_path.iterdir()) == []


def test_encode_units_in_range_and_durations_cover_every_frame(fbank_tok):
    tok = load_tokenizer(fbank_tok)
    wav = torch.from_numpy(speechlike(1.5, 16000, seed=42))
    feats = tok.extract_features(wav)
    frames = tok.assign(feats)
    units, durations = tok.encode(wav)
    assert feats.shape == (148, 80) and len(frames) == 148
    assert all(0 <= u < tok.meta.num_units for u in units)
    assert sum(durations) == len(frames) and len(durations) == len(units)
    assert all(a != b for a, b in zip(units, units[1:]))  # deduped: no repeats
    assert np.array_equal(np.repeat(units, durations), frames)  # run lengths restore the frames


def test_dedup():
    units, durations = dedup(np.array([5, 5, 7, 5, 5, 5]))
    assert units.tolist() == [5, 7, 5] and durations.tolist() == [2, 1, 3]
    assert dedup(np.array([], np.int64))[0].size == 0


def test_bpe_round_trip_and_durations():
    rng = np.random.default_rng(0)
    motifs = [rng.integers(0, 20, 4) for _ in range(5)]
    seqs = [np.concatenate([motifs[i] for i in rng.integers(0, 5, 10)]) for _ in range(50)]
    bpe = UnitBPE.train(seqs, num_units=20, vocab_size=40)
    assert bpe.vocab_size == 40
    vocab = {i: piece for piece, i in bpe.tokenizer.get_vocab().items()}
    seq = seqs[0]
    durations = rng.integers(1, 4, len(seq))
    ids, piece_durations = bpe.encode(seq, durations)
    assert len(ids) < len(seq)  # merges happened
    chars = "".join(vocab[i] for i in ids)
    assert [ord(c) - 0xE000 for c in chars] == seq.tolist()  # pieces spell the units back
    assert piece_durations.sum() == durations.sum() and len(piece_durations) == len(ids)
    unseen, _ = bpe.encode(np.array([19, 19, 0]))  # every unit is in the alphabet
    assert len(unseen) >= 1
    with pytest.raises(ConfigError, match="smaller than the 20 units"):
        UnitBPE.train(seqs, num_units=20, vocab_size=10)
    capped = UnitBPE.train(seqs, num_units=20, vocab_size=30, max_piece_units=2)
    assert max(len(p) for p in capped.tokenizer.get_vocab()) == 2
    with pytest.raises(ConfigError, match="yield only .* distinct pieces of at most 2 units"):
        UnitBPE.train(seqs, num_units=20, vocab_size=5000, max_piece_units=2)  # used to return fewer, silently


def test_unigram_round_trip_durations_and_the_reference_options():
    rng = np.random.default_rng(0)
    # Units 0..17 only (18 and 19 never seen), each held over 1-3 frames as without dedup.
    words = [np.repeat(rng.integers(0, 18, 4), rng.integers(1, 4, 4)) for _ in range(40)]
    seqs = [np.concatenate([words[i] for i in rng.integers(0, 40, 12)]) for _ in range(300)]
    uni = UnitUnigram.train(seqs, num_units=20, vocab_size=60)
    assert uni.vocab_size == 60  # the asked size, met
    pieces = [uni.sp.id_to_piece(i) for i in range(1, uni.vocab_size)]
    assert max(len(p) for p in pieces) <= 16  # the reference's max piece length
    assert any(len(set(p)) < len(p) for p in pieces)  # repeats are kept, not collapsed
    seq = seqs[0]
    durations = rng.integers(1, 4, len(seq))
    ids, piece_durations = uni.encode(seq, durations)
    assert len(ids) < len(seq)
    assert [ord(c) - 0xE000 for c in "".join(uni.sp.id_to_piece(int(i)) for i in ids)] == seq.tolist()
    assert piece_durations.sum() == durations.sum() and len(piece_durations) == len(ids)
    unseen, _ = uni.encode(np.array([19, 0]))  # every unit is a piece, seen or not: never <unk>
    assert 0 not in unseen.tolist() and [uni.sp.id_to_piece(int(i)) for i in unseen] == ["\ue013", "\ue000"]
    with pytest.raises(ConfigError, match=r"subword_vocab_size=5000: SentencePiece cannot train it \(.*<= \d+"):
        UnitUnigram.train(seqs, num_units=20, vocab_size=5000)
    with pytest.raises(ConfigError, match="smaller than the 20 units"):
        UnitUnigram.train(seqs, num_units=20, vocab_size=20)  # <unk> takes an id


def test_a_tokenizer_saved_with_bpe_vocab_size_loads_as_the_bpe_it_was(tmp_path):
    from unified_lm.discretize.tokenizer_recipe import load_recipe

    old = yaml.safe_load(FBANK.read_text())
    old["post"] = {"dedup": True, "bpe_vocab_size": 60}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(old))
    post = load_recipe(tmp_path / "recipe.yaml").post
    assert (post.subwords, post.subword_vocab_size, post.max_piece_units) == ("bpe", 60, None)
    with pytest.raises(ConfigError, match="go together"):
        load_recipe(FBANK, ["post.subwords=unigram"])


# Unigram EM keeps only the pieces that pay on 3 sentences: it is asked for fewer.
@pytest.mark.parametrize("subwords,size,file", [("unigram", 18, "unigram.model"), ("bpe", 60, "bpe.json")])
def test_fit_with_subwords_on_espeak_speech(tmp_path, subwords, size, file):
    sentences = ["the quick brown fox jumps over the lazy dog", "speech turns into units", "one two three four five"]
    manifest = espeak_corpus(tmp_path / "speech", sentences)
    post = ["post.dedup=true", f"post.subwords={subwords}", f"post.subword_vocab_size={size}"]
    meta = fit(FBANK, manifest, tmp_path / "tok", SMALL_FBANK + post)
    assert meta.num_units == size and meta.codebook_size == size
    assert (tmp_path / "tok" / file).is_file()
    summary = apply_tokenizer(tmp_path / "tok", manifest, tmp_path / "units.jsonl", progress=False)
    assert summary["utterances"] == 3
    for rec in read_jsonl(tmp_path / "units.jsonl"):
        assert all(0 <= u < size for u in rec["units"])
        assert len(rec["durations"]) == len(rec["units"])
        assert rec["tokenizer"] == meta.identity


def test_mfcc_recipe_fits(corpus, tmp_path):
    meta = fit(RECIPES / "mfcc-km100.yaml", corpus, tmp_path / "tok", SMALL_FBANK)
    assert (meta.num_units, meta.frame_rate) == (16, 100.0)
    assert np.load(tmp_path / "tok" / "centroids.npy").shape == (16, 39)


# ---- EnCodec ------------------------------------------------------------------------------


ENCODEC = RECIPES / "encodec-24k.yaml"


def test_encodec_without_checkpoint_says_why(corpus, tmp_path):
    with pytest.raises(ConfigError, match="no EnCodec checkpoint configured.*downloads its weights.*offline"):
        fit(ENCODEC, corpus, tmp_path / "tok")
    with pytest.raises(ConfigError, match="missing.th: EnCodec checkpoint not found.*offline"):
        fit(ENCODEC, corpus, tmp_path / "tok", [f"encodec.checkpoint={tmp_path}/missing.th"])
    assert not (tmp_path / "tok").exists()


def test_encodec_tiny_model_through_the_recipe(corpus, tmp_path):
    arch = tiny_encodec_checkpoint(tmp_path / "tiny.th", bins=64)
    meta = fit(ENCODEC, corpus, tmp_path / "tok", overrides(arch))
    # 1.5 kbps at 75 frames/s with 6-bit codebooks -> 3 codebooks of 64 entries.
    assert (meta.kind, meta.frame_rate) == ("encodec", 75)
    assert (meta.codebooks, meta.codebook_size, meta.num_units) == (3, 64, 192)
    tok = load_tokenizer(tmp_path / "tok")
    wav = torch.from_numpy(speechlike(1.0, 16000, seed=7))
    units, durations = tok.encode(wav)
    assert durations is None and len(units) == 75 * 3
    per_codebook = np.array(units).reshape(75, 3)  # interleaved: frame-major, codebook c offset by c*64
    for c in range(3):
        assert per_codebook[:, c].min() >= c * 64 and per_codebook[:, c].max() < (c + 1) * 64
    assert units == tok.encode(wav)[0]  # deterministic

    first = fit(ENCODEC, corpus, tmp_path / "tok1", overrides(arch) + ["encodec.keep_codebooks=1", "post.dedup=true"])
    assert (first.codebooks, first.num_units) == (1, 64)
    units1, durations1 = load_tokenizer(tmp_path / "tok1").encode(wav)
    assert np.array_equal(np.repeat(units1, durations1), per_codebook[:, 0])


def test_a_hugging_face_encodec_directory_gives_the_same_codes_as_the_model(corpus, tmp_path):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(target_bandwidths=[1.5, 3.0], hidden_size=16, num_filters=4, num_residual_layers=1,
                           codebook_size=64, codebook_dim=16, num_lstm_layers=1)  # fmt: skip
    EncodecModel(config).eval().save_pretrained(tmp_path / "hf-encodec")
    meta = fit(ENCODEC, corpus, tmp_path / "tok", [f"encodec.checkpoint={tmp_path / 'hf-encodec'}", "encodec.bandwidth=3.0"])
    assert (meta.frame_rate, meta.codebooks, meta.codebook_size) == (75, 6, 64)  # the directory's config, not the recipe's
    tok = load_tokenizer(tmp_path / "tok")
    assert "checkpoint/model.safetensors" in tok.quantizer.state_files(tmp_path / "tok")
    wav = torch.from_numpy(speechlike(1.0, 16000, seed=7))
    units, _ = tok.encode(wav)
    model = EncodecModel.from_pretrained(tmp_path / "hf-encodec").eval()
    with torch.inference_mode():
        codes = model.encode(resample(wav, 16000, 24000)[None, None], bandwidth=3.0).audio_codes[0, 0]  # [6, frames]
    assert units == (codes + torch.arange(6)[:, None] * 64).T.reshape(-1).tolist()
    with pytest.raises(ConfigError, match="hf-encodec: EnCodec checkpoint a directory without config.json"):
        (tmp_path / "hf-encodec" / "config.json").unlink()
        fit(ENCODEC, corpus, tmp_path / "tok2", [f"encodec.checkpoint={tmp_path / 'hf-encodec'}"])


def test_encodec_rejects_a_checkpoint_of_another_architecture(corpus, tmp_path):
    arch = tiny_encodec_checkpoint(tmp_path / "tiny.th")
    arch["encodec.dimension"] = 32
    with pytest.raises(ConfigError, match="does not fit the recipe's EnCodec architecture"):
        fit(ENCODEC, corpus, tmp_path / "tok", overrides(arch))


def test_encodec_dedup_needs_one_codebook(corpus, tmp_path):
    arch = tiny_encodec_checkpoint(tmp_path / "tiny.th")
    with pytest.raises(ConfigError, match="dedup needs one unit per frame"):
        fit(ENCODEC, corpus, tmp_path / "tok", overrides(arch) + ["post.dedup=true"])


# ---- SSL (HuBERT) -------------------------------------------------------------------------


SSL = RECIPES / "ssl-km.yaml"
SMALL_SSL = ["kmeans.k=8", "kmeans.sample_fraction=1.0", "kmeans.backend=faiss", "post.subwords=null", "post.subword_vocab_size=null"]


def test_ssl_tiny_hubert_through_the_recipe(corpus, tmp_path):
    model = tiny_hubert(tmp_path / "hubert")
    model_overrides = [f"kmeans.features.model_path={model}", "kmeans.features.layer=1"]
    meta = fit(SSL, corpus, tmp_path / "tok", SMALL_SSL + model_overrides)
    assert (meta.num_units, meta.frame_rate) == (8, 50.0)
    assert np.load(tmp_path / "tok" / "centroids.npy").shape == (8, 16)
    tok = load_tokenizer(tmp_path / "tok")
    units, _ = tok.encode(torch.from_numpy(speechlike(1.0, 16000, seed=8)))
    assert len(units) == 49 and all(0 <= u < 8 for u in units)
    # The content hash covers the model's weights, not only its path.
    assert "model/model.safetensors" in tok.quantizer.state_files(tmp_path / "tok")


@pytest.mark.parametrize("large_style", [False, True])
def test_ssl_features_are_the_models_hidden_states_of_the_layer_alone_and_in_batches(tmp_path, large_style):
    from transformers import HubertModel

    from unified_lm.discretize.extractors import SslFeatures

    path = tiny_hubert(tmp_path / "hubert", large_style=large_style, layers=3)
    full = HubertModel.from_pretrained(path).eval()
    wavs = [torch.from_numpy(speechlike(s, 16000, seed=i)) for i, s in enumerate((0.6, 1.0, 0.8))]
    for layer in range(4):  # only the layers up to `layer` are kept, the output is the same
        ssl = SslFeatures(SslFeatures.Config(model_path=str(path), layer=layer))
        assert len(ssl.model.encoder.layers) == layer and not ssl.pad_batches  # on a CPU: one at a time
        ssl.pad_batches = True  # the GPU's path, exercised here
        with torch.inference_mode():
            want = [full(w[None], output_hidden_states=True).hidden_states[layer][0] for w in wavs]
        torch.testing.assert_close(ssl(wavs[1]), want[1], rtol=0, atol=1e-5)
        got = ssl.batch(wavs)  # padded together; a group norm's statistics stay each utterance's own
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-4)
    assert ssl.batch([torch.zeros(100), wavs[0]])[0].shape == (0, 16)  # too short for one frame


# The tail after the last cut: 0.5 s; 160 samples, too short for a frame (the chunk before
# takes it); 480 samples, one frame.
@pytest.mark.parametrize("seconds,num_chunks", [(1.5, 2), (2.01, 2), (2.03, 3)])
def test_long_audio_is_cut_into_chunks_whose_frames_are_the_models_on_each_and_add_up_to_the_whole(
    tmp_path, seconds, num_chunks
):
    from transformers import HubertModel

    from unified_lm.discretize.extractors import SslFeatures

    path = tiny_hubert(tmp_path / "hubert", large_style=True)
    full = HubertModel.from_pretrained(path).eval()
    wav = torch.from_numpy(speechlike(seconds, 16000, seed=3))
    ssl = SslFeatures(SslFeatures.Config(model_path=str(path), layer=2, max_chunk_seconds=1.0))
    chunks = ssl.chunks(wav)
    assert len(chunks) == num_chunks and chunks[0].numel() == 16000 + 80  # 50 frames, plus what the 50th frame sees
    assert sum(ssl.num_frames(c.numel()) for c in chunks) == ssl.num_frames(wav.numel())
    with torch.inference_mode():
        want = torch.cat([full(c[None], output_hidden_states=True).hidden_states[2][0] for c in chunks])
        whole = full(wav[None]).last_hidden_state[0]
    got = ssl(wav)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert got.shape == whole.shape and not torch.allclose(got, whole, atol=1e-3)  # attention did not cross the cut
    ssl.pad_batches = True  # on a GPU, the chunks of several utterances go in one padded pass
    short = torch.from_numpy(speechlike(0.5, 16000, seed=4))
    batched = ssl.batch([short, wav])
    torch.testing.assert_close(batched[1], want, rtol=0, atol=1e-4)
    assert batched[0].shape == (ssl.num_frames(short.numel()), 16)
    unchunked = SslFeatures(SslFeatures.Config(model_path=str(path), layer=2, max_chunk_seconds=None))
    assert len(unchunked.chunks(wav)) == 1


def test_half_precision_ssl_features_are_close_to_float32_and_part_of_the_identity(corpus, tmp_path):
    from unified_lm.discretize.extractors import SslFeatures

    path = tiny_hubert(tmp_path / "hubert", large_style=True)
    wav = torch.from_numpy(speechlike(1.0, 16000, seed=5))
    full = SslFeatures(SslFeatures.Config(model_path=str(path), layer=2))(wav)
    half = SslFeatures(SslFeatures.Config(model_path=str(path), layer=2, dtype="bfloat16"))  # a CPU runs bfloat16
    assert half.model.dtype == torch.bfloat16
    got = half(wav)
    assert got.dtype == torch.float32 and got.shape == full.shape
    assert 0 < (got - full).abs().max() < 0.1 * full.abs().max()
    model = [f"kmeans.features.model_path={path}", "kmeans.features.layer=2"]
    a = fit(SSL, corpus, tmp_path / "fp32", SMALL_SSL + model)
    b = fit(SSL, corpus, tmp_path / "bf16", SMALL_SSL + model + ["kmeans.features.dtype=bfloat16"])
    assert a.hash != b.hash


def test_batched_apply_writes_the_units_of_one_utterance_at_a_time(corpus, tmp_path, monkeypatch):
    import unified_lm.discretize.apply as apply_module
    from unified_lm.discretize.extractors import SslFeatures

    model = tiny_hubert(tmp_path / "hubert", large_style=True)
    fit(SSL, corpus, tmp_path / "tok", SMALL_SSL + [f"kmeans.features.model_path={model}", "kmeans.features.layer=1"])
    monkeypatch.setattr(SslFeatures, "PAD_ON_CPU", True)  # padded batches, as on a GPU
    apply_tokenizer(tmp_path / "tok", corpus, tmp_path / "batched.jsonl", progress=False)
    monkeypatch.setattr(apply_module, "BATCH_SECONDS", 0.0)  # every utterance alone
    apply_tokenizer(tmp_path / "tok", corpus, tmp_path / "alone.jsonl", progress=False)
    batched, alone = read_jsonl(tmp_path / "batched.jsonl"), read_jsonl(tmp_path / "alone.jsonl")
    assert len(batched) > 3 and batched == alone


def test_the_device_is_chosen_at_run_time_and_is_not_part_of_the_identity(corpus, tmp_path, monkeypatch, caplog):
    from unified_lm.discretize.base import resolve_device
    from unified_lm.discretize.tokenizer import _content_hash
    from unified_lm.discretize.tokenizer_recipe import load_recipe

    model = tiny_hubert(tmp_path / "hubert")
    over = SMALL_SSL + [f"kmeans.features.model_path={model}", "kmeans.features.layer=1"]
    meta = fit(SSL, corpus, tmp_path / "tok", over)
    on_gpu = load_recipe(SSL, [*over, "kmeans.features.device=cuda:0"])
    assert _content_hash(on_gpu, {}) == _content_hash(load_recipe(SSL, over), {})
    # A tokenizer fitted on a GPU (its saved recipe says so) still loads and applies here.
    saved = tmp_path / "tok" / "recipe.yaml"
    saved.write_text(saved.read_text().replace("device: cpu", "device: cuda:0"))
    units = apply_tokenizer(tmp_path / "tok", corpus, tmp_path / "units.jsonl", progress=False)
    assert units["tokenizer"] == meta.identity and "no CUDA device: using the CPU" in caplog.text
    with pytest.raises(ConfigError, match="'cuda' asked for, but this machine has no CUDA device"):
        apply_tokenizer(tmp_path / "tok", corpus, tmp_path / "gpu.jsonl", progress=False, device="cuda")
    # Under a launcher, "cuda" is this process's own GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert (resolve_device("cuda"), resolve_device("cuda:0"), resolve_device("cpu")) == ("cuda:1", "cuda:0", "cpu")


def test_ssl_errors_are_clear(corpus, tmp_path):
    with pytest.raises(ConfigError, match="need kmeans.features.model_path"):
        fit(SSL, corpus, tmp_path / "tok", SMALL_SSL)
    with pytest.raises(ConfigError, match="nowhere: no HuBERT/WavLM model here"):
        fit(SSL, corpus, tmp_path / "tok", SMALL_SSL + [f"kmeans.features.model_path={tmp_path}/nowhere"])
    model = tiny_hubert(tmp_path / "hubert")
    with pytest.raises(ConfigError, match="layer=23 is out of range.*2 layers"):
        fit(SSL, corpus, tmp_path / "tok", SMALL_SSL + [f"kmeans.features.model_path={model}"])


# ---- CTC-encoder units ---------------------------------------------------------------------


CTC_KM = RECIPES / "ctc-km500.yaml"


def tiny_ctc_encoder(out):
    from unified_lm.models import write_encoder_checkpoint
    from unified_lm.models.prefix import PrefixEncoder
    from unified_lm.models.prefix.encoder import EncoderConfig
    from unified_lm.recipes.configs import CTCEncoderConfig
    from unified_lm.vocab import CharVocab

    cfg = CTCEncoderConfig(encoder=EncoderConfig(dim=16, num_layers=2, num_heads=2, ffn_dim=32, subsampling_channels=4))
    chars = CharVocab.build(["abc de"])
    torch.manual_seed(0)
    write_encoder_checkpoint(out, PrefixEncoder(cfg.encoder, len(chars)), chars, cfg)
    return out


def test_ctc_encoder_units_cluster_the_chosen_block(corpus, tmp_path):
    from unified_lm.discretize.extractors import build_features
    from unified_lm.models import load_encoder_checkpoint
    from unified_lm.models.prefix.model import utterance_norm

    model = tiny_ctc_encoder(tmp_path / "enc")
    small = ["kmeans.k=8", f"kmeans.features.model_path={model}"]
    meta = fit(CTC_KM, corpus, tmp_path / "tok", small)
    assert (meta.num_units, meta.frame_rate) == (8, 25.0)
    tok = load_tokenizer(tmp_path / "tok")
    units, _ = tok.encode(torch.from_numpy(speechlike(1.0, 16000, seed=8)))
    assert 0 < len(units) <= 24 and all(0 <= u < 8 for u in units)  # 24 frames, repeats collapsed
    assert "model/encoder.safetensors" in tok.quantizer.state_files(tmp_path / "tok")

    # Block 1's output is what the full encoder feeds block 2: the hook stops at the right place.
    wav = torch.from_numpy(speechlike(1.0, 16000, seed=3))
    first = build_features({"type": "ctc_encoder", "model_path": str(model), "layer": 1})
    last = build_features({"type": "ctc_encoder", "model_path": str(model)})
    encoder, _, _ = load_encoder_checkpoint(model)
    mel = first.frontend(wav).unsqueeze(0)
    lengths = torch.tensor([mel.shape[1]])
    with torch.no_grad():
        full, _ = encoder(utterance_norm(mel, lengths), lengths)
    assert last(wav).shape == (24, 16)  # 101 mel frames, 4x subsampled
    assert torch.allclose(last(wav), full[0], atol=1e-5)
    assert not torch.allclose(first(wav), full[0], atol=1e-3)
    assert first(wav[:800]).shape == (0, 16)  # shorter than the subsampling's receptive field


def test_a_tokenizer_fitted_with_a_relative_model_path_loads_anywhere_and_hashes_the_model_not_its_path(
    corpus, tmp_path, monkeypatch
):
    import shutil

    tiny_ctc_encoder(tmp_path / "work" / "enc")
    monkeypatch.chdir(tmp_path / "work")
    meta = fit(CTC_KM, corpus, tmp_path / "tok", ["kmeans.k=8", "kmeans.features.model_path=enc"])
    saved = yaml.safe_load((tmp_path / "tok" / "recipe.yaml").read_text())
    assert saved["kmeans"]["features"]["model_path"] == str(tmp_path / "work" / "enc")
    monkeypatch.chdir(tmp_path)
    units, _ = load_tokenizer(tmp_path / "tok").encode(torch.from_numpy(speechlike(1.0, 16000, seed=8)))
    assert units
    # The same model bytes elsewhere: the same units, the same hash.
    shutil.copytree(tmp_path / "work" / "enc", tmp_path / "moved")
    again = fit(CTC_KM, corpus, tmp_path / "tok2", ["kmeans.k=8", f"kmeans.features.model_path={tmp_path / 'moved'}"])
    assert again.hash == meta.hash


def test_ctc_encoder_drop_blank_keeps_the_frames_the_ctc_head_calls_characters(tmp_path):
    from unified_lm.discretize.extractors import build_features
    from unified_lm.models import load_encoder_checkpoint, write_encoder_checkpoint
    from unified_lm.models.prefix.model import utterance_norm

    encoder, chars, mel_cfg = load_encoder_checkpoint(tiny_ctc_encoder(tmp_path / "enc"))
    wav = torch.from_numpy(speechlike(1.0, 16000, seed=3))
    every = build_features({"type": "ctc_encoder", "model_path": str(tmp_path / "enc")})
    mel = every.frontend(wav).unsqueeze(0)
    lengths = torch.tensor([mel.shape[1]])
    feats = utterance_norm(mel, lengths)
    with torch.no_grad():  # a blank bias that puts half of the frames on each side of the argmax
        logits = encoder.ctc_logits(encoder(feats, lengths)[0])[0]
        encoder.ctc_head.bias[0] += (logits[:, 1:].max(-1).values - logits[:, 0]).median()
        non_blank = encoder.ctc_logits(encoder(feats, lengths)[0])[0].argmax(-1) != 0
        block1, _ = encoder.layer_states(feats, lengths, 1)
        top, _ = encoder(feats, lengths)
    from unified_lm.recipes.configs import CTCEncoderConfig

    encoder_dir = tmp_path / "enc2"
    write_encoder_checkpoint(encoder_dir, encoder, chars, CTCEncoderConfig(encoder=encoder.cfg, mel=mel_cfg))
    kept = build_features({"type": "ctc_encoder", "model_path": str(encoder_dir), "drop_blank": True})
    lower = build_features({"type": "ctc_encoder", "model_path": str(encoder_dir), "layer": 1, "drop_blank": True})
    assert 0 < int(non_blank.sum()) < len(non_blank), "the test needs both blank and character frames"
    assert torch.allclose(kept(wav), top[0, non_blank], atol=1e-5)
    assert torch.allclose(lower(wav), block1[0, non_blank], atol=1e-5)  # block 1's states at the same frames


def test_ctc_encoder_errors_are_clear(tmp_path):
    from unified_lm.discretize.extractors import build_features

    with pytest.raises(ConfigError, match="need kmeans.features.model_path"):
        build_features({"type": "ctc_encoder"})
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        build_features({"type": "ctc_encoder", "model_path": str(tmp_path)})
    model = tiny_ctc_encoder(tmp_path / "enc")
    with pytest.raises(ConfigError, match="layer=3 is out of range.*2 layers"):
        build_features({"type": "ctc_encoder", "model_path": str(model), "layer": 3})


def test_fbank_context_splices_neighbours_with_repeated_edges():
    from unified_lm.discretize.extractors import _splice, build_features

    x = torch.arange(8.0).reshape(4, 2)
    spliced = _splice(x, 1)
    assert spliced.shape == (4, 6)
    assert spliced[0].tolist() == [0, 1, 0, 1, 2, 3]  # the first frame stands in for frame -1
    assert spliced[2].tolist() == [2, 3, 4, 5, 6, 7]
    assert spliced[3].tolist() == [4, 5, 6, 7, 6, 7]
    features = build_features({"type": "fbank", "num_mel_bins": 40, "context": 2})
    plain = build_features({"type": "fbank", "num_mel_bins": 40})
    wav = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    assert features.dim == 200 and features(wav).shape == (plain(wav).shape[0], 200)
    assert torch.equal(features(wav)[:, 80:120], plain(wav))  # the centre block is the frame itself
    with pytest.raises(ConfigError, match="context"):
        build_features({"type": "fbank", "context": -1})


def test_unit_readout_reads_each_unit_as_its_centroids_character(corpus, tmp_path):
    from unified_lm.bench.unit_readout import unit_characters, unit_readout
    from unified_lm.discretize import load_tokenizer
    from unified_lm.io import write_jsonl
    from unified_lm.models import load_encoder_checkpoint

    model = tiny_ctc_encoder(tmp_path / "enc")
    meta = fit(RECIPES / "ctc-posterior-km500.yaml", corpus, tmp_path / "tok",
               ["kmeans.k=8", f"kmeans.features.model_path={model}", "kmeans.features.drop_blank=false"])
    labels = unit_characters(load_tokenizer(tmp_path / "tok"), tmp_path / "tok")
    centroids = np.load(tmp_path / "tok" / "centroids.npy")
    assert labels == centroids.argmax(-1).tolist()  # a posterior centroid's largest entry
    _, chars, _ = load_encoder_checkpoint(model)
    units = [u for u in range(8) if labels[u] != 0][:2] * 2  # two character units, twice
    assert units
    spoken = chars.decode_ctc([labels[u] for u in units])
    rows = [{"id": "a", "text": spoken, "speaker": "s", "units": units, "tokenizer": meta.identity, "subset": "x"},
            {"id": "b", "text": spoken + spoken, "speaker": "s", "units": units, "tokenizer": meta.identity}]
    write_jsonl(tmp_path / "units.jsonl", rows)
    scores = unit_readout(tmp_path / "tok", tmp_path / "units.jsonl")
    assert scores["subsets"]["x"]["cer"] == 0.0 and scores["cer"] > 0  # b's text is twice what its units say
    fit(FBANK, corpus, tmp_path / "fb", SMALL_FBANK)
    with pytest.raises(ConfigError, match="needs k-means units of ctc_encoder features"):
        unit_characters(load_tokenizer(tmp_path / "fb"), tmp_path / "fb")


def test_the_ssl_features_bench_times_every_path_and_checks_them_against_the_whole_stack(corpus, tmp_path, capsys, monkeypatch):
    from unified_lm.bench.ssl_features import run_ssl_features_bench

    model = tiny_hubert(tmp_path / "hubert", layers=3)
    out = run_ssl_features_bench(corpus, tmp_path / "bench", model=model, layer=2, utterances=4)
    assert len(out["seconds"]) == 3 and all(s > 0 for s in out["seconds"].values())
    report = (tmp_path / "bench" / "ssl_features.md").read_text()
    assert "1 CPU thread" in report and report in capsys.readouterr().out
    diffs = [float(line.split("|")[-2]) for line in report.splitlines() if line.startswith("| layers")]
    assert len(diffs) == 2 and max(diffs) < 1e-3  # the cut stack and the padded batches give the whole stack's features
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_ssl_features_bench(corpus, tmp_path / "gpu", model=model, layer=2, utterances=1, device="cuda")
