"""HuBERT-style pre-training (recipe ``hubert``) and the unit-purity measure that picks its layer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _discretize_util import write_manifest
from _prefix_util import write_corpus

from unified_lm.bench.unit_purity import frame_characters, purity, run_unit_purity
from unified_lm.config import from_dict
from unified_lm.discretize import fit_tokenizer, load_tokenizer
from unified_lm.errors import ConfigError
from unified_lm.models.hubert import HubertPretrainModel, HubertSize, span_mask
from unified_lm.recipes.configs import HubertPretrainConfig
from unified_lm.recipes.hubert import crop_and_mask, masked_loss
from unified_lm.train import main as train_main

TINY_HUBERT = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "conv_dim": [8] * 7, "conv_pos": 8,
               "conv_pos_groups": 2, "proj_dim": 8}


def hubert_argv(tmp_path) -> list[str]:
    """A tiny corpus, MFCC k-means targets (K=8) and a config for a tiny HuBERT."""
    corpus = write_corpus(tmp_path / "data")
    fit_tokenizer("tokenizers/mfcc-km100.yaml", corpus["train"], tmp_path / "tok-mfcc", ["kmeans.k=8"], progress=False)
    config = tmp_path / "hubert.yaml"
    config.write_text(json.dumps({
        "data": {"train": str(corpus["train"]), "dev": str(corpus["dev"]), "targets": str(tmp_path / "tok-mfcc"),
                 "batch_size": 2},
        "model": TINY_HUBERT,
    }))
    return ["hubert", "--config", str(config)]


# ---- masking ----------------------------------------------------------------------------


def test_span_masks_cover_the_expected_share_in_whole_spans_and_repeat_with_the_seed():
    mask = span_mask(200, 500, prob=0.8, length=10, generator=torch.Generator().manual_seed(0))
    assert mask.float().mean().item() == pytest.approx(1 - math.exp(-0.8), abs=0.03)
    for row in mask[:20]:  # every masked run is at least one whole span long
        edges = torch.diff(torch.cat([torch.tensor([0]), row.int(), torch.tensor([0])]))
        starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
        assert starts.numel() > 0 and bool(((ends - starts) >= 10).all())
    again = span_mask(200, 500, prob=0.8, length=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    short = span_mask(3, 4, prob=0.1, length=10, generator=torch.Generator().manual_seed(1))
    assert bool(short.all())  # shorter than a span: the whole utterance is the one span


def num_frames(samples: int) -> int:
    return HubertSize().num_frames(samples)


def test_loss_counts_only_masked_frames():
    torch.manual_seed(0)
    model = HubertPretrainModel(from_dict(HubertSize, TINY_HUBERT, "model"), num_targets=8).eval()
    frames = num_frames(16000)
    mask = span_mask(2, frames, 0.5, 5, torch.Generator().manual_seed(0))
    targets = torch.randint(0, 8, (2, frames), generator=torch.Generator().manual_seed(1))
    batch = {"wavs": torch.randn(2, 16000), "targets": targets, "mask": mask}
    loss, _ = masked_loss(model, batch, torch.device("cpu"))
    unmasked_changed = {**batch, "targets": torch.where(mask, targets, (targets + 1) % 8)}
    masked_changed = {**batch, "targets": torch.where(mask, (targets + 1) % 8, targets)}
    assert masked_loss(model, unmasked_changed, torch.device("cpu"))[0].item() == pytest.approx(loss.item(), abs=1e-6)
    assert masked_loss(model, masked_changed, torch.device("cpu"))[0].item() != pytest.approx(loss.item(), abs=1e-3)


def test_a_batch_is_cropped_to_its_shortest_utterance_with_targets_at_the_model_rate():
    from unified_lm.recipes.hubert import Clip

    cfg = HubertPretrainConfig()
    clips = [Clip("a", torch.arange(32000).half(), torch.arange(200)), Clip("b", torch.zeros(16000).half(), torch.arange(100))]
    batch = crop_and_mask(clips, cfg, rate=100.0, gen=torch.Generator().manual_seed(0))
    assert batch["wavs"].shape == (2, 16000) and batch["targets"].shape == (2, num_frames(16000)) == batch["mask"].shape
    start = int(batch["wavs"][0, 0])  # clip a's samples count up: its crop's first sample is where it starts
    assert start % 320 == 0
    assert batch["targets"][0, :3].tolist() == [start // 160, start // 160 + 2, start // 160 + 4]  # 100 -> 50 frames/s
    assert batch["targets"][1, :3].tolist() == [0, 2, 4]


def test_config_needs_targets_and_checks_its_sections(tmp_path, capsys):
    with pytest.raises(ConfigError, match="model.conv_dim, conv_kernel and conv_stride: one entry per conv layer"):
        from_dict(HubertSize, {"conv_dim": [8, 8]}, "model")
    two_layers = from_dict(HubertSize, {"conv_dim": [8, 8], "conv_kernel": [400, 2], "conv_stride": [160, 2]}, "model")
    assert (two_layers.hop, two_layers.num_frames(16000)) == (320, 49)
    # The shortest input that makes a frame: utterances below it are left out of training.
    for size in (HubertSize(), two_layers):
        n = size.receptive_field
        assert size.num_frames(n) == 1 and size.num_frames(n - 1) == 0
    assert HubertSize().receptive_field == 400
    with pytest.raises(ConfigError, match="mask: prob in"):
        from_dict(HubertPretrainConfig, {"mask": {"prob": 0}}, "cfg")
    assert train_main(["hubert", "--config", "experiments/hubert.yaml", f"out_dir={tmp_path / 'run'}"]) != 0
    assert "data.targets: a fitted tokenizer directory" in capsys.readouterr().err


# ---- the recipe end to end --------------------------------------------------------------


def test_pretraining_writes_a_hubert_that_transformers_and_ssl_km_read(tmp_path, capsys):
    from transformers import HubertModel

    argv = hubert_argv(tmp_path)
    out = tmp_path / "run"
    assert train_main([*argv, "optim.max_steps=3", "optim.warmup_steps=1", "eval.every_steps=3",
                       "log_every_steps=1", f"out_dir={out}"]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "masked_ce" in m] == [1, 2, 3]
    assert any("dev_loss" in m and 0 <= m["dev_acc"] <= 1 for m in metrics)
    assert json.loads((out / "best" / "hubert_targets.json").read_text())["num_units"] == 8

    model, info = HubertModel.from_pretrained(out / "best", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_hidden_layers == 2
    # The existing ssl-km recipe reads it as it reads a downloaded HuBERT.
    tok = tmp_path / "tok-hubert"
    fit_tokenizer("tokenizers/ssl-km.yaml", tmp_path / "data" / "train.jsonl", tok,
                  [f"kmeans.features.model_path={out / 'best'}", "kmeans.features.layer=1", "kmeans.k=4",
                   "kmeans.features.normalize_waveform=false", "kmeans.backend=faiss", "post.subwords=null",
                   "post.subword_vocab_size=null"], progress=False)
    units = load_tokenizer(tok).encode(torch.zeros(16000).uniform_(-0.3, 0.3))[0]
    assert len(units) == num_frames(16000) == 49 and set(units) <= set(range(4))
    # Iteration 2: those units are the next model's targets, at their own 50 frames/s.
    assert train_main([*argv, "optim.max_steps=1", "optim.warmup_steps=1", f"data.targets={tok}",
                       f"out_dir={tmp_path / 'run2'}"]) == 0
    assert json.loads((tmp_path / "run2" / "best" / "hubert_targets.json").read_text())["frame_rate"] == 50.0


def test_targets_are_computed_once_and_cached(tmp_path, monkeypatch):
    import unified_lm.recipes.hubert as recipe

    argv = hubert_argv(tmp_path)
    out = tmp_path / "run"
    assert train_main([*argv, "optim.max_steps=1", "optim.warmup_steps=1", f"out_dir={out}"]) == 0
    assert (out / "targets" / "train.pt").is_file()
    calls = []
    real = recipe.SpeechTokenizer.assign
    monkeypatch.setattr(recipe.SpeechTokenizer, "assign", lambda self, f: calls.append(1) or real(self, f))
    assert train_main([*argv, "optim.max_steps=2", "optim.warmup_steps=1", f"out_dir={tmp_path / 'run-b'}"]) == 0
    assert calls  # a new out_dir computes its own
    calls.clear()
    assert train_main([*argv, "optim.max_steps=1", "optim.warmup_steps=1", f"out_dir={out}"]) == 0
    assert not calls  # the resumed run reads the cache


# ---- unit purity ------------------------------------------------------------------------


def test_frame_characters_fill_blanks_with_the_character_before_and_edges_with_silence():
    path = np.array([0, 0, 3, 0, 0, 5, 5, 0, 2, 0, 0])
    assert frame_characters(path).tolist() == [0, 0, 3, 3, 3, 5, 5, 5, 2, 0, 0]
    assert frame_characters(np.zeros(4, dtype=np.int64)).tolist() == [0, 0, 0, 0]


def test_purity_is_one_for_units_that_spell_the_characters_and_zero_for_one_unit():
    chars = [np.array([0, 1, 1, 2, 3, 3, 0]), np.array([2, 2, 1, 0])]
    at_50 = [np.repeat(c, 2) + 10 for c in chars]  # a relabelled copy at twice the rate
    perfect = purity(at_50, chars, rate=50.0)
    assert perfect["pnmi"] == pytest.approx(1.0) and perfect["char_purity"] == perfect["cluster_purity"] == 1.0
    constant = purity([np.zeros(len(c), dtype=np.int64) for c in chars], chars, rate=25.0)
    assert constant["pnmi"] == pytest.approx(0.0, abs=1e-12) and constant["units_used"] == 1


def test_unit_purity_bench_rows_for_a_tokenizer_and_every_hubert_layer(tmp_path, capsys):
    from test_discretize import tiny_ctc_encoder

    corpus = write_corpus(tmp_path / "data", {"train": 4})
    lines = [json.loads(x) for x in corpus["train"].read_text().splitlines()]
    dev = write_manifest(tmp_path / "data" / "short.jsonl", [{**x, "text": "abc de"} for x in lines])
    encoder = tiny_ctc_encoder(tmp_path / "enc")
    fit_tokenizer("tokenizers/mfcc-km100.yaml", dev, tmp_path / "tok", ["kmeans.k=8"], progress=False)
    from _discretize_util import tiny_hubert

    hubert = tiny_hubert(tmp_path / "hub" / "best", large_style=True)
    rows = run_unit_purity(encoder, dev, tmp_path / "out", tokenizers=[tmp_path / "tok"], hubert=hubert, k=4)
    assert [r["units"] for r in rows] == ["mfcc-km100 (tok)", *(f"hub layer {i}, k-means 4" for i in range(3))]
    assert all(0 <= r["pnmi"] <= 1 and r["frames"] > 0 for r in rows)
    assert "| mfcc-km100 (tok) | 100 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == rows


# ---- the filterbank front end -----------------------------------------------------------

TINY_FBANK = {**{k: v for k, v in TINY_HUBERT.items() if k != "conv_dim"}, "frontend": "fbank", "fbank_stack": 4}


def test_fbank_front_end_frames_match_its_declared_geometry():
    from unified_lm.audio import fbank
    from unified_lm.models.hubert import FbankFrontEnd

    size = from_dict(HubertSize, TINY_FBANK, "model")
    assert (size.hop, size.receptive_field) == (640, 880)  # 4 stacked 10 ms frames; 25 ms + 3 shifts
    wav = torch.zeros(2, 16000).uniform_(-0.3, 0.3)
    feats = FbankFrontEnd(4)(wav)
    assert feats.shape == (2, 320, size.num_frames(16000)) == (2, 320, 24)
    one = fbank(wav[0])
    one = one - one.mean(0)
    assert torch.allclose(feats[0, :80, 1], one[4], atol=1e-5) and torch.allclose(feats[0, 80:160, 1], one[5], atol=1e-5)
    assert size.num_frames(size.receptive_field) == 1 and size.num_frames(size.receptive_field - 1) == 0
    with pytest.raises(ConfigError, match="model.fbank_stack"):
        from_dict(HubertSize, {**TINY_FBANK, "fbank_stack": 0}, "model")


def test_fbank_hubert_saves_a_directory_the_ssl_features_read_with_its_filterbanks(tmp_path):
    from transformers import HubertModel

    from unified_lm.discretize.extractors import build_features
    from unified_lm.models.hubert import load_hf_hubert

    argv = hubert_argv(tmp_path)
    out = tmp_path / "run"
    assert train_main([*argv, *(f"model.{k}={v}" for k, v in TINY_FBANK.items() if k not in TINY_HUBERT),
                       "mask.length=2",
                       "optim.max_steps=2", "optim.warmup_steps=1", f"out_dir={out}"]) == 0
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["frontend"] == "fbank" and config["conv_stride"] == [160, 4]
    wav = torch.zeros(16000).uniform_(-0.3, 0.3)
    ours = load_hf_hubert(out / "best").eval()
    stock, info = HubertModel.from_pretrained(out / "best", output_loading_info=True)
    # Only the conv layers a stock HubertModel builds are missing: what was trained is all there.
    assert info["missing_keys"] and all(k.startswith("feature_extractor.") for k in info["missing_keys"])
    assert not info["unexpected_keys"]
    with torch.no_grad():
        states = ours(wav[None], output_hidden_states=True).hidden_states[1][0]
    feats = build_features({"type": "ssl", "model_path": str(out / "best"), "layer": 1})
    assert feats.frame_rate == 25.0 and feats.dim == 16
    assert torch.allclose(feats(wav), states, atol=1e-5) and states.shape[0] == 24
