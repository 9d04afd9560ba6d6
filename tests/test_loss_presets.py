"""The loss-comparison presets: the CPU grid's plan, and one cell of the paper grid end to end.

The paper preset runs with tiny stand-ins given as overrides: random-init WavLM and HuBERT
models and a GPT-2 saved with ``transformers``, a few tone utterances; everything else
(speed perturbation, SSL k-means + unit BPE, the launcher path, decoding, the report) is
the preset's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _bench_util import REPO, make_audio_corpus
from _discretize_util import tiny_hubert
from _lm_util import make_tokenizer

from unified_lm.bench.losses import (
    LossGridConfig,
    PreparedTokenizer,
    _unset_checkpoint,
    check_grid,
    estimate,
    first_phase,
    run_loss_grid,
)
from unified_lm.config import load_config
from unified_lm.discretize import load_recipe
from unified_lm.errors import DataError
from unified_lm.io import read_jsonl

CPU = REPO / "experiments/loss_comparison.yaml"
PAPER = REPO / "experiments/loss_comparison_paper.yaml"
MID = REPO / "experiments/loss_comparison_mid.yaml"


def _fake_tokenizer(name: str, out: Path) -> PreparedTokenizer:
    """What ``prepare_data`` would return, without fitting (cells only need names and paths)."""
    units = {s: out / f"{s}.jsonl" for s in ("train", "dev", "test", "degraded")}
    return PreparedTokenizer(name, {"name": name}, out / "tok" / name, units)


def test_cpu_preset_plans_the_issue_grid(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the preset's paths are relative to the repository root
    cfg = load_config(LossGridConfig, CPU, [f"out_dir={tmp_path}"])
    base = check_grid(cfg)
    # Units the decoder reads: the CTC-posterior tokenizer, on the grid's own pre-trained encoder.
    recipes = [load_recipe(t.recipe, t.overrides) for t in cfg.tokenizers]
    assert [r.name for r in recipes] == ["ctc-posterior-km500"]
    assert _unset_checkpoint(recipes[0]) == ("kmeans.features.model_path", "ctc_encoder") and cfg.encoder.max_steps >= 1000
    # Every cell starts from the tokenizer's speech-and-text LM, trained on unpaired tasks only.
    assert set(cfg.speechlm.mixture) == {"speech_lm", "text_lm"} and cfg.speechlm.max_steps == cfg.train.max_steps
    assert [loss.key for loss in cfg.losses] == ["mask", "ce", "sld", "sld-released"] and len(cfg.seeds) >= 3
    paper, released = cfg.losses[2:]
    assert (paper.kl_target, paper.kl_reduction) == ("smoothed", "token_mean")
    assert (released.kl_target, released.kl_reduction) == ("softmax_of_smoothed", "batchmean")
    assert 0.008 in released.alpha_sweep  # the released code's alpha is one of the sweep's
    assert base.optim.max_steps == cfg.train.max_steps and cfg.decode.beam > 1
    toks = [_fake_tokenizer("ctc-posterior-km500", tmp_path)]
    phase1 = first_phase(cfg, base, toks, tmp_path)
    sweeps = len(paper.alpha_sweep) + len(released.alpha_sweep)
    assert len({c.dir for c in phase1}) == 2 * 3 + sweeps
    plan = estimate(cfg, base, toks, phase1, lambda key: True, jobs=2)
    trainings = 2 * 3 + sweeps + 2 * (3 - 1)  # each variant's chosen sweep cell is its seed-0 cell
    steps = cfg.train.max_steps
    minutes = -(-trainings // 2) * steps * cfg.estimate_step_seconds / 60
    assert f"= {trainings} trainings of {steps} steps; {trainings} to run here ({trainings * steps} steps)" in plan
    assert f"~{minutes:.0f} min of training in 2 job(s)" in plan and minutes < 120  # the issue's 2-hour budget


def test_mid_preset_is_the_cpu_grid_at_gpu_scale(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cpu = load_config(LossGridConfig, CPU)
    mid = load_config(LossGridConfig, MID, [f"out_dir={tmp_path}"])
    base = check_grid(mid)
    assert [x.key for x in mid.losses] == [x.key for x in cpu.losses] and len(mid.seeds) >= 5
    assert base.model.preset == "small" and base.precision == "bf16"
    assert mid.corpus.synth.num_utts > cpu.corpus.synth.num_utts and mid.encoder.max_steps > cpu.encoder.max_steps
    assert mid.speechlm.max_steps == mid.train.max_steps


# ---- the paper preset with tiny stand-ins ------------------------------------------------


def tiny_wavlm(path: Path) -> Path:
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(0)
    config = WavLMConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=8,
    )  # fmt: skip
    WavLMModel(config).save_pretrained(path)
    return path


def tiny_gpt2(path: Path, texts: list[str]) -> Path:
    """A random-init GPT-2 with a byte-level BPE of the corpus's words as its tokenizer.json."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from unified_lm.vocab import UnifiedVocab

    meta = make_tokenizer(path.parent / "gpt2-text-vocab")
    text_tokenizer = UnifiedVocab.train(texts, [meta], text_vocab_size=300).text_tokenizer
    torch.manual_seed(0)
    vocab_size = text_tokenizer.get_vocab_size(with_added_tokens=True)
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=256)).save_pretrained(path)
    text_tokenizer.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_preset")
    corpus = make_audio_corpus(root / "corpus")
    texts = [r["text"] for split in corpus.values() for r in read_jsonl(split)]
    return root, corpus, {
        "wavlm": tiny_wavlm(root / "wavlm"), "hubert": tiny_hubert(root / "hubert"), "gpt2": tiny_gpt2(root / "gpt2", texts)
    }  # fmt: skip


def test_paper_preset_asks_for_its_local_checkpoints(monkeypatch, paper_models):
    monkeypatch.chdir(REPO)
    with pytest.raises(DataError, match="gpt2-medium: train: model.init_from not found"):
        check_grid(load_config(LossGridConfig, PAPER))
    gpt2 = paper_models[2]["gpt2"]
    cfg = load_config(LossGridConfig, PAPER, [f"train.overrides={json.dumps(_paper_train_overrides(gpt2))}"])
    base = check_grid(cfg)
    assert (base.model.preset, base.model.init_from, base.time_mask) == ("gpt2-medium", str(gpt2), 0.3)
    assert cfg.corpus.speed_perturb == [0.9, 1.0, 1.1] and cfg.train.launch[:2] == ["accelerate", "launch"]
    recipes = [load_recipe(t.recipe, t.overrides) for t in cfg.tokenizers]
    assert [(r.kmeans.k, r.kmeans.features["type"], r.post.subwords, r.post.subword_vocab_size) for r in recipes] == [(2000, "ssl", "unigram", 6000)] * 2
    # Until their model paths are set, both SSL tokenizers would be skipped with a note.
    assert [_unset_checkpoint(r) for r in recipes] == [("kmeans.features.model_path", "ssl")] * 2


def _paper_preset() -> dict:
    return yaml.safe_load(PAPER.read_text())


def _paper_train_overrides(gpt2: Path, *more: str) -> list[str]:
    """The preset's training overrides with the GPT-2 medium checkpoint swapped for ``gpt2``."""
    kept = [o for o in _paper_preset()["train"]["overrides"] if not o.startswith("model.init_from=")]
    return [*kept, f"model.init_from={gpt2}", *more]


def test_paper_preset_runs_one_cell_end_to_end_with_tiny_stand_ins(monkeypatch, paper_models):
    root, corpus, models = paper_models
    monkeypatch.chdir(REPO)
    small_tokenizer = [
        "kmeans.features.layer=1", "kmeans.features.device=cpu", "kmeans.k=8",
        "kmeans.sample_fraction=1.0", "post.subword_vocab_size=12",
    ]  # fmt: skip
    tokenizers = [
        {"recipe": entry["recipe"], "overrides": [*entry["overrides"], f"kmeans.features.model_path={model}", *small_tokenizer]}
        for entry, model in zip(_paper_preset()["tokenizers"], (models["wavlm"], models["hubert"]))
    ]
    assert [t["overrides"][0] for t in tokenizers] == ["name=wavlm-large-l23-km2000-sp6000", "name=hubert-large-l23-km2000-sp6000"]
    train = _paper_train_overrides(
        models["gpt2"],
        "data.num_workers=0", "data.max_tokens=512", "optim.warmup_steps=1",
        "eval.every_steps=2", "eval.max_utts=2", "eval.max_new_tokens=4", "checkpoint.every_steps=2",
    )  # fmt: skip
    out = root / "grid"
    overrides = [
        *(f"corpus.{split}={path}" for split, path in corpus.items()),
        f"tokenizers={json.dumps(tokenizers)}",
        f"train.overrides={json.dumps(train)}",
        "train.max_steps=2",
        f"train.launch={json.dumps([sys.executable])}",  # the launcher path, one process instead of accelerate's
        "decode.max_new_tokens=4",
        "bootstrap.num_samples=20",
        "plots=false",
        f"out_dir={out}",
    ]
    # 2 tokenizers x (mask, ce x 3 seeds + 2 variants' 3 sweep cells): slice 0 of 100 is the first cell alone.
    summary = run_loss_grid(PAPER, overrides, cells="0/100", progress=False)
    key = "wavlm-large-l23-km2000-sp6000/mask/seed0"
    assert summary["cells"]["ran"] == [key] and summary["cells"]["failed"] == []
    assert summary["cells"]["done"] == 1 and summary["cells"]["total"] == 24

    cell = next(out.glob("cells/wavlm-large-l23-km2000-sp6000.mask.seed0.*"))
    result = json.loads((cell / "result.json").read_text())
    assert result["train"]["steps"] == 2
    assert {name: ev["num_utts"] for name, ev in result["evals"].items()} == {"dev": 2, "test": 4, "degraded": 4}
    assert set(result["evals"]["test"]["subsets"]) == {"seen_voice", "heldout_voice"}
    # The training ran through the launcher, with the preset's recipe and the tiny GPT-2 as its start.
    launched = yaml.safe_load((cell / "train_config.yaml").read_text())
    assert (launched["model"]["init_from"], launched["time_mask"], launched["tasks"]["max_speech_tokens"]) == (
        str(models["gpt2"]), 0.3, 870
    )
    assert (launched["loss"]["name"], launched["optim"]["schedule"], launched["optim"]["lr"]) == ("mask", "linear", 3e-4)
    model_config = json.loads((cell / "train" / "best" / "config.json").read_text())
    assert (model_config["model_type"], model_config["n_embd"]) == ("gpt2", 32)  # GPT-2 medium's shape was not built

    # Both SSL tokenizers were fitted (k-means then unit BPE) on the original audio, and the
    # training units hold every speed factor.
    for name in ("wavlm", "hubert"):
        tokdir = next(out.glob(f"shared/tok/{name}-large-l23-km2000-sp6000-*"))
        meta = json.loads((tokdir / "meta.json").read_text())
        assert (meta["num_units"], meta["frame_rate"]) == (12, 50.0)
        assert (tokdir / "unigram.model").is_file()
    units = read_jsonl(next(out.glob("shared/units/wavlm-large-l23-km2000-sp6000-*/train.jsonl")))
    ids = sorted(r["id"] for r in units)
    assert len(ids) == 3 * 6 and sum(i.endswith("-sp0.9") for i in ids) == sum(i.endswith("-sp1.1") for i in ids) == 6
    # Perturbed on load: the speed step wrote a manifest and no copy of the audio.
    assert [p.name for p in next(out.glob("shared/speed-*")).iterdir()] == ["train.jsonl"]
    lengths = {r["id"]: len(r["units"]) for r in units}
    assert all(lengths[i] != lengths[i[: -len("-sp0.9")]] for i in ids if i.endswith("-sp0.9"))
    md = (out / "results.md").read_text()
    assert "| wavlm-large-l23-km2000-sp6000 | mask | test | 4 | 1 |" in md
    assert "23 cell(s) pending" in md
