import json
import os
import subprocess
import sys

import pytest
from _lm_util import REPO, TINY_RECIPE, make_corpus, make_records, make_tokenizer, tiny_config, trained_run  # noqa: F401
from transformers import AutoModelForCausalLM

import unified_lm.train as train_module
import unified_lm.training.loop as loop_module
from unified_lm.bench.speed import run_speed_bench
from unified_lm.config import load_config
from unified_lm.io import read_jsonl, write_jsonl
from unified_lm.recipes.configs import LMConfig
from unified_lm.train import main, train
from unified_lm.vocab import UnifiedVocab


def test_tiny_run_learns_and_writes_its_outputs(trained_run):  # noqa: F811
    corpus, run, summary = trained_run
    records = read_jsonl(run / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.2 * losses[0]
    assert {"ce_text", "ce_speech", "kl_speech", "lr", "tokens_per_s"} <= set(records[0])
    dev = [r for r in records if "dev_wer" in r]
    assert [r["step"] for r in dev] == [30, 60]
    assert summary["best_dev_wer"] < 0.2
    assert {"dev_wer_seen_voice", "dev_wer_heldout_voice"} <= set(dev[-1])
    for name in ("config.yaml", "summary.json", "vocab/unified_vocab.json", "best/model.safetensors",
                 "last/optimizer.pt", "last/trainer_state.json", "last/rng_state_0.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert AutoModelForCausalLM.from_pretrained(run / "best").config.vocab_size == summary["vocab_size"]


def _comparable(path):
    # Wall-clock throughput is the only thing allowed to differ between two runs.
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_jsonl(path)]


@pytest.mark.fault
def test_crashed_run_resumes_exactly(tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path)
    overrides = [
        "optim.max_steps=12", "optim.grad_accum=2", "data.max_tokens=64", "time_mask=0.2",
        "checkpoint.every_steps=4", "eval.every_steps=6", "log_every_steps=1",
        "loss.ctc_weight=0.5",  # the auxiliary CTC resumes exactly too
    ]
    train(tiny_config(tmp_path / "a", corpus, *overrides))
    assert all("ctc_speech" in r for r in read_jsonl(tmp_path / "a/run/metrics.jsonl") if "loss" in r)

    real_step = loop_module._train_step

    def crash_at_step_10(*args, **kwargs):
        state = args[6]
        if state.step == 9:  # last checkpoint at step 8; step 9 is logged, then the "kill"
            raise RuntimeError("simulated crash")
        return real_step(*args, **kwargs)

    crashed = tiny_config(tmp_path / "b", corpus, *overrides)
    monkeypatch.setattr(loop_module, "_train_step", crash_at_step_10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashed)
    assert json.loads((tmp_path / "b/run/last/trainer_state.json").read_text())["step"] == 8
    assert max(r["step"] for r in read_jsonl(tmp_path / "b/run/metrics.jsonl")) == 9
    monkeypatch.setattr(loop_module, "_train_step", real_step)
    train(crashed)

    a, b = _comparable(tmp_path / "a/run/metrics.jsonl"), _comparable(tmp_path / "b/run/metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], abs=1e-5), (ra["step"], key)

    # Rerunning a finished run changes nothing.
    before = (tmp_path / "b/run/metrics.jsonl").read_text()
    assert train(crashed)["steps"] == 12
    assert (tmp_path / "b/run/metrics.jsonl").read_text() == before


@pytest.mark.parametrize("phases", [[], ["phases=[{steps: 3, train: [model.layers]}, {}]"]], ids=["one-phase", "two-phases"])
def test_torchrun_two_cpu_processes(tmp_path, phases):
    corpus = make_corpus(tmp_path)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "unified_lm.train", "--config", str(TINY_RECIPE),
        f"data.train={corpus['train']}", f"data.dev={corpus['dev']}", f"data.tokenizer={corpus['tok']}",
        f"out_dir={tmp_path / 'run'}", "optim.max_steps=6", "data.max_tokens=64", "eval.every_steps=3",
        "log_every_steps=1", *phases,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert {p.name for p in (tmp_path / "run/last").glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    assert (tmp_path / "run/best/model.safetensors").is_file()
    if phases:  # the second phase re-wraps the model for DDP with the parameters it trains
        assert [r["phase"] for r in read_jsonl(tmp_path / "run/metrics.jsonl") if "lr" in r] == [1, 1, 1, 2, 2, 2]


def _run_main(tmp_path, capsys, *overrides):
    corpus = make_corpus(tmp_path)
    argv = ["--config", str(TINY_RECIPE), f"data.train={corpus['train']}", f"data.dev={corpus['dev']}",
            f"data.tokenizer={corpus['tok']}", f"out_dir={tmp_path / 'run'}", *overrides]
    status = main(argv)
    return status, capsys.readouterr().err


@pytest.mark.fault
@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.name=focal", "unknown loss 'focal'; known: ce, mask, sld"),
        ("optim.learning_rate=1e-3", "unknown key(s) ['learning_rate']"),
        ("model.preset=huge", "unknown preset 'huge'"),
        ("optim.schedule=exp", "optim.schedule: must be one of ['linear', 'cosine', 'constant'], got 'exp'"),
        ("optim.lr=-1e-3", "optim.lr must be > 0"),
        ("data.tokenizer=/nonexistent/tok", "/nonexistent/tok/meta.json: not a tokenizer directory"),
    ],
)
def test_bad_config_fails_fast(tmp_path, capsys, override, message):
    status, err = _run_main(tmp_path, capsys, override)
    assert status == 2 and message in err
    assert not (tmp_path / "run").exists()


def test_sentences_without_speech_train_beside_the_utterances(tmp_path):
    corpus = make_corpus(tmp_path)
    (tmp_path / "more.txt").write_text("a new sentence here\nanother one\n\na new sentence here\n")
    steps = ("optim.max_steps=4", "eval.every_steps=4", "eval.max_utts=2")
    summary = train(tiny_config(tmp_path, corpus, *steps, f"data.text_files=[{tmp_path / 'more.txt'}]"))
    assert summary["text_sentences"] == 2  # blank lines and repeats dropped
    assert summary["steps"] == 4 and summary["last_train"]["loss"] > 0
    with pytest.raises(Exception, match="missing.txt: data.text_files: text file not found"):
        train(tiny_config(tmp_path / "b", corpus, *steps, f"data.text_files=[{tmp_path / 'missing.txt'}]"))


def test_missing_manifest_fails_fast(tmp_path, capsys):
    status, err = _run_main(tmp_path, capsys, f"data.train={tmp_path / 'nope.jsonl'}")
    assert status == 2 and "nope.jsonl" in err and "not found" in err


@pytest.mark.fault
def test_tokenizer_mismatch_fails_with_both_hashes(tmp_path, capsys):
    other = make_tokenizer(tmp_path / "other", hash_="0" * 16)
    write_jsonl(tmp_path / "other.jsonl", make_records(other, ["the cat sat"]))
    status, err = _run_main(tmp_path, capsys, f"data.train={tmp_path / 'other.jsonl'}")
    assert status == 2
    assert "other.jsonl" in err and "0" * 16 in err and "f" * 16 in err
    assert not (tmp_path / "run").exists()  # no vocab/ from the wrong tokenizer for a later start to reuse


@pytest.mark.fault
def test_a_failed_start_leaves_nothing_and_the_next_start_builds_its_own_vocab(tmp_path, capsys):
    status, err = _run_main(tmp_path, capsys, "data.max_tokens=4")  # below one utterance
    assert status == 2 and "max_tokens" in err and not (tmp_path / "run").exists()
    stale = tmp_path / "run" / "vocab"  # as an older version's failed start left it
    UnifiedVocab.train(["a b c"], [], 260).save(stale)  # 258 text tokens; the recipe's BPE has 300
    status, _ = _run_main(tmp_path, capsys, "optim.max_steps=2", "eval.every_steps=2")
    assert status == 0
    assert UnifiedVocab.load(stale).text_size == UnifiedVocab.load(tmp_path / "run" / "best").text_size == 300


@pytest.mark.fault
def test_a_trained_run_does_not_resume_with_another_loss(tmp_path, capsys):
    assert _run_main(tmp_path, capsys, "optim.max_steps=2", "eval.every_steps=2")[0] == 0
    before = (tmp_path / "run" / "config.yaml").read_text()
    status, err = _run_main(tmp_path, capsys, "optim.max_steps=2", "eval.every_steps=2", "loss.name=ce")
    assert status == 2 and "trained with another config (loss.name: 'sld' -> 'ce')" in err
    assert (tmp_path / "run" / "config.yaml").read_text() == before
    # What is evaluated or logged may change on resume; config.yaml keeps what was trained.
    assert _run_main(tmp_path, capsys, "optim.max_steps=2", "eval.every_steps=1", "log_every_steps=2")[0] == 0
    assert (tmp_path / "run" / "config.yaml").read_text() == before


@pytest.mark.parametrize("name, loss", [("asr_sld", "sld"), ("asr_mask", "mask"), ("asr_ce", "ce"), ("tiny_test", "sld")])
def test_recipes_load(name, loss):
    cfg = load_config(LMConfig, REPO / "experiments" / f"{name}.yaml")
    assert cfg.loss.name == loss
    assert cfg.model.preset == ("tiny" if name == "tiny_test" else "small")
    assert cfg.data.train.startswith("runs/") and cfg.data.tokenizer.startswith("runs/")


def test_speed_bench_writes_its_tables(tmp_path):
    corpus = make_corpus(tmp_path)
    results = run_speed_bench(
        corpus["train"], corpus["tok"], tmp_path / "bench", preset="tiny", steps=1, max_tokens=512,
        block_size=256, decode_utts=4, decode_batch_size=2, max_new_tokens=3, isolate=False,
    )
    bucketed, padded, cached, uncached = results["rows"]
    assert padded["padding_fraction"] > 0.8 > bucketed["padding_fraction"]
    assert cached["utts"] == uncached["utts"] == 4 and cached["mean_new_tokens"] <= 3
    assert results["train_speedup"] > 0 and results["decode_speedup"] > 0
    # The padded arm does the same matrix work on 4x the tokens: counted FLOPs follow the tokens.
    per_token = [r["achieved_gflops"] / r["padded_tokens_per_s"] for r in (bucketed, padded)]
    assert 0 < per_token[0] < per_token[1] * 1.5 and padded["matmul_peak_gflops"] > 0
    assert "of fp32 matmul peak" in (tmp_path / "bench/speed.md").read_text()
    assert "Speed-up in real tokens/s" in (tmp_path / "bench/speed.md").read_text()
    assert json.loads((tmp_path / "bench/speed.json").read_text())["rows"] == results["rows"]
    assert (tmp_path / "bench/speed.csv").read_text().startswith("phase,setting,metric,value\n")


def test_asr_starts_from_a_text_lm_checkpoint(tmp_path):
    """The pipeline's first pretraining stage: a text LM's BPE becomes the text part of the
    unified vocabulary, its trained rows and layers are where ASR training starts, and only
    the speech rows are new."""
    import torch

    from unified_lm.errors import ConfigError
    from unified_lm.models import build_model
    from unified_lm.recipes.configs import TextLMConfig
    from unified_lm.recipes.lm import build_vocab
    from unified_lm.vocab import UnifiedVocab

    corpus = make_corpus(tmp_path)
    transcripts = tmp_path / "audio.jsonl"
    write_jsonl(transcripts, [{"id": f"a{i}", "audio": "a.wav", "text": t, "speaker": "s", "duration": 1.0}
                              for i, t in enumerate(r["text"] for r in read_jsonl(corpus["train"]))])
    more_text = tmp_path / "text.txt"
    more_text.write_text("the dog sat\nbirds read books\nthe rain is cold\n")
    lm_dir = tmp_path / "lm"
    train(load_config(TextLMConfig, None, [
        f"data.train={transcripts}", "data.dev=null", f"data.text_files=[{more_text}]", "data.text_vocab_size=280",
        "model.preset=tiny", "optim.max_steps=3", "eval.every_steps=3", "data.batch_size=4",
        f"out_dir={lm_dir}",
    ]))
    cfg = tiny_config(tmp_path, corpus, f"model.init_from={lm_dir / 'best'}", "optim.max_steps=4", "eval.every_steps=4")
    vocab, lm_vocab = build_vocab(cfg), UnifiedVocab.load(lm_dir / "best")
    assert vocab.text_size == lm_vocab.text_size and vocab.special_ids == lm_vocab.special_ids
    assert vocab.encode_text("the dog sat") == lm_vocab.encode_text("the dog sat")
    assert len(vocab) == len(lm_vocab) + 48  # the fake tokenizer's units are the only new rows

    model, lm = build_model(cfg.model, vocab), AutoModelForCausalLM.from_pretrained(lm_dir / "best")
    rows = len(lm_vocab)
    assert torch.equal(model.get_input_embeddings().weight[:rows], lm.get_input_embeddings().weight)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    summary = train(cfg)
    assert summary["steps"] == 4 and (tmp_path / "run" / "best" / "model.safetensors").is_file()

    other_tasks = UnifiedVocab(vocab.text_tokenizer, vocab.tokenizers, tasks=("asr",))
    with pytest.raises(ConfigError, match="special tokens .* would change ids"):
        build_model(cfg.model, other_tasks)


@pytest.mark.fault
def test_ctrl_c_in_python_m_train_prints_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(recipe, cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "fit", interrupted)
    assert main(["--config", str(TINY_RECIPE)]) == 130
    assert capsys.readouterr().err.strip() == "python -m unified_lm.train: interrupted; rerun the same command to resume"


@pytest.mark.parametrize("recipe, key", [("lm", "data.max_tokens: 4096"), ("ctc", "data.speed_perturb: [1.0]"),
                                         ("textlm", "model.preset: tiny"), ("prefix", "loss.w_deriv: 1.0"),
                                         ("hubert", "mask.length: 10")])
def test_train_help_lists_the_recipes_keys_and_defaults(recipe, key, capsys):
    from unified_lm import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["train", recipe, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "usage: unified-lm train [{lm,ctc,textlm,prefix,hubert}] --config CONFIG" in out
    assert key in out and "optim.lr:" in out and "out_dir:" in out


def test_an_unknown_recipe_is_one_error_line(capsys):
    assert main(["ctcc", "--config", str(TINY_RECIPE)]) == 2
    assert capsys.readouterr().err.strip() == (
        "python -m unified_lm.train: error: unknown recipe 'ctcc'; known: lm, ctc, textlm, prefix, hubert"
    )
