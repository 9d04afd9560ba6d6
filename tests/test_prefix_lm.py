"""End to end on a tiny tone corpus: CTC and text-LM pre-training -> prefix-LM training ->
continuation (WAV + PNG) -> prefix ASR; the ablation bench; errors on bad input."""

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from _prefix_util import TINY_DECODER, TINY_ENCODER, TINY_RUN, TINY_SPECTROGRAM, write_corpus

from unified_lm import cli
from unified_lm.config import from_dict, to_dict
from unified_lm.errors import ConfigError, DataError
from unified_lm.models import load_prefix_checkpoint
from unified_lm.prefix_lm.inference import continue_speech, decode_prefix_asr
from unified_lm.recipes.configs import CTCEncoderConfig, PrefixLMConfig, TextLMConfig
from unified_lm.train import train


def prefix_config(corpus, out, **model):
    return from_dict(
        PrefixLMConfig,
        {
            "data": {"train": str(corpus["train"]), "dev": str(corpus["dev"]), "text_vocab_size": 280, "batch_size": 4},
            "model": {"encoder": TINY_ENCODER, "decoder": TINY_DECODER, "spectrogram": TINY_SPECTROGRAM, **model},
            **TINY_RUN,
            "out_dir": str(out),
        },
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    data = {"train": str(corpus["train"]), "dev": str(corpus["dev"]), "batch_size": 4}
    ctc = train(from_dict(CTCEncoderConfig, {"data": data, "encoder": TINY_ENCODER, **TINY_RUN, "out_dir": str(out / "ctc")}))
    lm = train(
        from_dict(TextLMConfig, {"data": {**data, "text_vocab_size": 280}, "model": TINY_DECODER, **TINY_RUN, "out_dir": str(out / "lm")})
    )
    return out / "ctc" / "best", out / "lm" / "best", ctc, lm


@pytest.fixture(scope="module")
def trained(corpus, pretrained, tmp_path_factory):
    encoder, decoder, _, _ = pretrained
    out = tmp_path_factory.mktemp("prefix")
    cfg = prefix_config(corpus, out, encoder_init=str(encoder))
    cfg.model.decoder.init_from = str(decoder)
    cfg.loss.w_ctc = 0.3
    return out, train(cfg)


def test_pretraining_writes_loadable_checkpoints(pretrained):
    encoder, decoder, ctc, lm = pretrained
    assert (encoder / "encoder.safetensors").is_file() and (encoder / "chars.json").is_file()
    assert (decoder / "model.safetensors").is_file() and (decoder / "unified_vocab.json").is_file()
    assert ctc["steps"] == lm["steps"] == 3
    assert set(ctc["best_dev"]) == {"dev_loss", "dev_cer", "dev_wer"} and lm["best_dev"]["dev_ppl"] > 1


def test_training_from_pretrained_parts(trained, pretrained):
    out, summary = trained
    assert summary["steps"] == 3 and summary["train_utts"] == 12  # 6 continuation + 6 whole-utterance ASR
    assert set(summary["best_dev"]) == {"dev_loss", "dev_text_ce", "dev_cont_logppl", "dev_spec_l1"}
    train_log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"ce_text", "recon", "deriv", "post_recon", "stop", "ctc"} <= set(train_log[0])
    model, vocab, chars, cfg = load_prefix_checkpoint(out / "best")
    # The text LM's vocabulary and the CTC encoder's characters came along.
    assert len(vocab) == model.decoder.get_input_embeddings().num_embeddings
    assert chars.chars == json.loads((pretrained[0] / "chars.json").read_text())
    assert cfg["model"]["encoder_init"]  # where training started; the weights came from the checkpoint


def test_continue_speech_writes_wav_png_and_texts(trained, corpus, tmp_path):
    out, _ = trained
    line = json.loads(corpus["test"].read_text().splitlines()[0])
    root = corpus["test"].parent
    result = continue_speech(
        out / "best", root / line["prompt_audio"], tmp_path / "cont", max_frames=12, reference=root / line["cont_audio"]
    )
    wave, sr = sf.read(tmp_path / "cont" / "continuation.wav")
    assert sr == 16000 and len(wave) > 0
    assert (tmp_path / "cont" / "continuation.png").read_bytes()[:4] == b"\x89PNG"
    assert 1 <= result["frames"] <= 12
    assert isinstance(result["transcript"], str) and isinstance(result["continuation"], str)
    assert json.loads((tmp_path / "cont" / "result.json").read_text())["frames"] == result["frames"]


def test_decode_prefix_asr_scores_every_utterance(trained, corpus, tmp_path):
    out, _ = trained
    scores = decode_prefix_asr(out / "best", corpus["test"], tmp_path / "test.hyp.jsonl", max_new_tokens=8)
    rows = [json.loads(x) for x in (tmp_path / "test.hyp.jsonl").read_text().splitlines()]
    assert scores["num_utts"] == len(rows) == 2
    # The conv bridge's two stride-2 layers after the encoder's 4x subsampling: 100 / 16 a second.
    assert 4 < scores["prefix_per_s"] <= 100 / 16
    assert {"id", "ref", "hyp", "errors", "ref_words"} <= set(rows[0])
    assert json.loads((tmp_path / "test.hyp.scores.json").read_text())["wer"] == scores["wer"]


def test_prefix_asr_fuses_the_text_lm_it_started_from(trained, pretrained, corpus, tmp_path):
    from unified_lm.decode import generate
    from unified_lm.fusion import TextLM
    from unified_lm.models import load_checkpoint

    out, _ = trained
    lm_dir = pretrained[1]  # the prefix decoder's init: the same text tokenizer
    args = (out / "best", corpus["test"])
    plain = decode_prefix_asr(*args, tmp_path / "plain.jsonl", max_new_tokens=8, beam=2)
    zero = decode_prefix_asr(*args, tmp_path / "zero.jsonl", max_new_tokens=8, beam=2, lm=lm_dir, lm_weight=0.0)
    assert zero["lm"] == str(lm_dir) and zero["wer"] == plain["wer"]
    hyps = lambda name: [json.loads(x)["hyp"] for x in (tmp_path / name).read_text().splitlines()]  # noqa: E731
    assert hyps("zero.jsonl") == hyps("plain.jsonl")
    # Weighted 1000 times the model, the LM writes its own sentence, ended by <cont>.
    decode_prefix_asr(*args, tmp_path / "heavy.jsonl", max_new_tokens=8, lm=lm_dir, lm_weight=1000.0)
    lm, vocab, _ = load_checkpoint(lm_dir)
    start = TextLM.load(lm_dir, vocab, 1.0).start_id
    own = generate(lm, [[start]], stop_id=vocab.text_end_id, pad_id=vocab.pad_id,
                   allowed=[*range(vocab.text_size), vocab.text_end_id], vocab_size=len(vocab), max_new_tokens=8)[0]
    assert hyps("heavy.jsonl") == [vocab.decode_text(own)] * 2


def test_ablation_bench_writes_a_table(corpus, judge_model, tmp_path, capsys):
    from unified_lm.bench.prefix_ablation import AblationConfig, estimate_seconds, run_prefix_ablation
    from unified_lm.config import load_config

    tiny = {"encoder": TINY_ENCODER, "data": {"batch_size": 4}, **TINY_RUN}
    config = {
        "data": {"train": str(corpus["train"]), "dev": str(corpus["dev"]), "test": str(corpus["test"]), "lm_sentences": 30},
        "ctc": tiny,
        "textlm": {"model": TINY_DECODER, **TINY_RUN, "data": {"text_vocab_size": 280, "batch_size": 4}},
        "prefix": {"model": {"encoder": TINY_ENCODER, "decoder": TINY_DECODER, "spectrogram": TINY_SPECTROGRAM}, **TINY_RUN,
                   "data": {"batch_size": 4}},
        "variants": ["full", "full@1", "no_deriv"],
        "judge": {"checkpoint": str(judge_model[0]), "tokenizer": str(judge_model[1]), "max_utts": 2, "max_frames": 12},
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    results = run_prefix_ablation(path, tmp_path / "bench")
    assert list(results["variants"]) == ["full", "full@1", "no_deriv"]
    # full@1 is the full variant with another seed: another model, the same recipe.
    seeds = {v: yaml.safe_load((tmp_path / "bench" / "runs" / v / "config.yaml").read_text())["seed"] for v in ("full", "full@1")}
    assert seeds == {"full": 0, "full@1": 1}
    assert results["variants"]["full"]["text_ce"] != results["variants"]["full@1"]["text_ce"]
    assert "full over 2 seeds: cont_logppl" in (tmp_path / "bench" / "results.md").read_text()
    for row in results["variants"].values():
        assert {"cont_logppl", "spec_l1", "prompt_wer"} <= set(row)
    assert "| no_deriv |" in (tmp_path / "bench" / "results.md").read_text()
    # Every variant is judged, and the judge once on the vocoded references, the line to read them by.
    assert all("judge_wer_ref" in row for row in results["variants"].values())
    control = results["judge_control"]
    assert control["utts"] == 2 and f"{100 * control['judge_wer_ref']:.1f}% WER" in (tmp_path / "bench" / "results.md").read_text()
    # The text LM also read 30 generated sentences.
    assert len((tmp_path / "bench" / "lm_text.txt").read_text().splitlines()) == 30
    assert json.loads((tmp_path / "bench" / "pretrain_textlm" / "summary.json").read_text())["train_texts"] == 36
    b = results["bridges"]
    assert b["conv"] == pytest.approx(b["none"] // 4, abs=1) and 1 <= b["ctc"] <= b["none"]
    # A rerun reuses every finished step; nothing is left to estimate.
    assert run_prefix_ablation(path, tmp_path / "bench")["variants"] == results["variants"]
    assert sum(estimate_seconds(load_config(AblationConfig, path), tmp_path / "bench").values()) == 0
    # The command resumes the same bench and prints its table.
    capsys.readouterr()
    assert cli.main(["bench", "prefix-ablation", "--config", str(path), "--out", str(tmp_path / "bench")]) == 0
    printed = capsys.readouterr()
    assert "| no_deriv |" in printed.out and "Prefix length per test prompt" in printed.out
    assert "nothing left" in printed.err


def test_time_estimate_counts_the_work_left(tmp_path):
    from unified_lm.bench.prefix_ablation import AblationConfig, estimate_seconds

    cfg = from_dict(AblationConfig, {
        "data": {"synth_utts": 100, "max_test_utts": 10},
        "ctc": {"optim": {"max_steps": 10}},
        "textlm": {"optim": {"max_steps": 20}},
        "prefix": {"optim": {"max_steps": 30}},
        "variants": ["full", "no_deriv"],
        "cost": {"synth_utt_s": 1, "ctc_step_s": 2, "textlm_step_s": 3, "prefix_step_s": 4, "test_utt_s": 5},
    })
    assert estimate_seconds(cfg, tmp_path) == {
        "synthesize": 100, "pretrain_ctc": 20, "pretrain_textlm": 60, "full": 170, "no_deriv": 170,
    }
    # Finished stages cost nothing: a trained but unscored variant costs its scoring only.
    for done in ("corpus/test.jsonl", "pretrain_ctc/summary.json", "runs/full/summary.json"):
        (tmp_path / done).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / done).write_text("{}")
    left = estimate_seconds(cfg, tmp_path)
    assert (left["synthesize"], left["pretrain_ctc"], left["full"], left["no_deriv"]) == (0, 0, 50, 170)


def test_manifest_without_continuation_fields_names_the_line(corpus, tmp_path):
    lines = corpus["train"].read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["cont_audio"]
    manifest = corpus["train"].parent / "bad.jsonl"
    manifest.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*cont_audio.*--continuation"):
        train(prefix_config({"train": manifest, "dev": corpus["dev"]}, tmp_path / "run"))


def test_ctc_bridge_needs_a_trained_ctc_head(corpus, tmp_path):
    with pytest.raises(ConfigError, match="w_ctc"):
        prefix_config(corpus, tmp_path / "run", bridge={"name": "ctc"})


@pytest.fixture(scope="module")
def judge_model(corpus, tmp_path_factory):
    """A discrete ASR model and its speech tokenizer, trained for two steps on the tone corpus."""
    from unified_lm.config import load_config
    from unified_lm.discretize import apply_tokenizer, fit_tokenizer
    from unified_lm.recipes.configs import LMConfig

    root = tmp_path_factory.mktemp("judge_model")
    repo = Path(__file__).resolve().parents[1]
    tok = root / "tok"
    fit_tokenizer(repo / "tokenizers" / "mfcc-km100.yaml", corpus["train"], tok, overrides=["kmeans.k=8"], progress=False)
    apply_tokenizer(tok, corpus["train"], root / "units.jsonl", progress=False)
    asr = load_config(LMConfig, repo / "experiments" / "tiny_test.yaml", [
        f"data.train={root / 'units.jsonl'}", f"data.dev={root / 'units.jsonl'}", f"data.tokenizer={tok}",
        f"out_dir={root / 'asr'}", "optim.max_steps=2", "eval.every_steps=2", "data.text_vocab_size=280",
    ])
    train(asr)
    return root / "asr" / "best", tok


def test_judge_transcribes_the_vocoded_continuations(trained, corpus, judge_model, tmp_path):
    from unified_lm.bench.prefix_ablation import JudgeConfig, judge_wer
    from unified_lm.scoring import score_corpus

    out, _ = trained
    judge = JudgeConfig(checkpoint=str(judge_model[0]), tokenizer=str(judge_model[1]), max_utts=2, max_frames=12)
    scores = judge_wer(out / "best", str(corpus["test"]), judge, tmp_path / "judge")
    assert set(scores) == {"judge_wer_self", "judge_wer_ref", "judge_too_short"}
    assert len(list((tmp_path / "judge" / "wav").glob("*.wav"))) == 2
    refs = [json.loads(x)["text"] for x in (tmp_path / "judge" / "vocoded_ref.jsonl").read_text().splitlines()]
    assert refs == [json.loads(x)["cont_text"] for x in corpus["test"].read_text().splitlines()]
    # One set of hypotheses, scored against both references.
    rows = [json.loads(x) for x in (tmp_path / "judge" / "judge.jsonl").read_text().splitlines()]
    hyps = [r["hyp"] for r in rows]
    assert scores["judge_wer_ref"] == score_corpus(refs, hyps)["wer"]
    assert scores["judge_wer_self"] == score_corpus([r["written"] for r in rows], hyps)["wer"]
    assert scores["judge_too_short"] == sum(r["too_short"] for r in rows)


def test_judge_scores_too_short_continuations_as_silence(trained, corpus, judge_model, tmp_path):
    from unified_lm.bench.prefix_ablation import JudgeConfig, judge_wer

    out, _ = trained
    # One decoder step of r=2 frames: 20 ms of audio, too short for the judge's MFCC tokenizer.
    judge = JudgeConfig(checkpoint=str(judge_model[0]), tokenizer=str(judge_model[1]), max_utts=2, max_frames=2)
    scores = judge_wer(out / "best", str(corpus["test"]), judge, tmp_path / "judge")
    assert scores["judge_too_short"] == 2
    assert scores["judge_wer_ref"] == 1.0  # every reference word deleted
    for wav in (tmp_path / "judge" / "wav").glob("*.wav"):
        wave, sr = sf.read(wav)
        assert sr == 16000 and len(wave) == 2 * 160
    rows = [json.loads(x) for x in (tmp_path / "judge" / "judge.jsonl").read_text().splitlines()]
    assert [r["hyp"] for r in rows] == ["", ""] and all(r["too_short"] for r in rows)


@pytest.mark.parametrize("frames", [0, 1, 2, 3, 40])
def test_griffin_lim_inverts_any_number_of_frames(frames):
    import torch

    from unified_lm.audio.mel import MelConfig, MelFrontend

    frontend = MelFrontend(MelConfig(griffin_lim_iters=2))
    wave = frontend.to_wave(torch.randn(frames, 80))
    # At most the frames' own duration, and never longer: silence padding is cut off.
    assert wave.dim() == 1 and 0 <= wave.numel() <= frames * 160
    assert (wave.numel() > 0) == (frames > 0) and torch.isfinite(wave).all()


def test_cli_continue_writes_wav_png_and_prints_the_texts(trained, corpus, tmp_path, capsys):
    out, _ = trained
    line = json.loads(corpus["test"].read_text().splitlines()[1])
    root = corpus["test"].parent
    argv = ["continue", "--checkpoint", str(out / "best"), "--audio", str(root / line["prompt_audio"]),
            "--out", str(tmp_path / "c"), "--max-frames", "8", "--reference", str(root / line["cont_audio"])]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"transcript", "continuation", "frames", "wav", "png"} <= set(printed) and 1 <= printed["frames"] <= 8
    assert sf.read(tmp_path / "c" / "continuation.wav")[0].size > 0
    assert (tmp_path / "c" / "continuation.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_continue_refuses_bad_input_with_one_line(trained, judge_model, corpus, tmp_path, capsys):
    out, _ = trained
    prompt = corpus["test"].parent / json.loads(corpus["test"].read_text().splitlines()[0])["prompt_audio"]
    sf.write(tmp_path / "short.wav", [0.0] * 400, 16000)  # 25 ms: fewer frames than the encoder needs
    cases = [
        (["--checkpoint", str(judge_model[0]), "--audio", str(prompt)], "discrete-token decoder checkpoint"),
        (["--checkpoint", str(out / "best"), "--audio", str(tmp_path / "short.wav")], "short.wav: too short a prompt"),
        (["--checkpoint", str(out / "best"), "--audio", str(tmp_path / "missing.wav")], "missing.wav"),
        (["--checkpoint", str(out / "best"), "--audio", str(prompt), "--max-frames", "0"], "max_frames must be >= 1"),
    ]
    for args, message in cases:
        assert cli.main(["continue", *args, "--out", str(tmp_path / "c")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cli_decode_scores_prefix_asr_from_the_audio_manifest(trained, corpus, tmp_path, capsys):
    out, _ = trained
    hyp = tmp_path / "test.hyp.jsonl"
    argv = ["decode", "--checkpoint", str(out / "best"), "--manifest", str(corpus["test"]), "--out", str(hyp),
            "--beam", "2", "--max-new-tokens", "6"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "prefix_asr" and printed["beam"] == 2 and printed["num_utts"] == 2
    assert [json.loads(x)["id"] for x in hyp.read_text().splitlines()] == ["test0", "test1"]
    assert json.loads((tmp_path / "test.hyp.scores.json").read_text())["wer"] == printed["wer"]


def test_cli_decode_names_the_manifest_each_checkpoint_kind_needs(trained, judge_model, corpus, tmp_path, capsys):
    out, _ = trained
    units = tmp_path / "units.jsonl"
    units.write_text(json.dumps({"id": "u0", "text": "a cat", "speaker": "s0", "units": [1, 2, 3]}) + "\n")
    cases = [
        # A prefix LM hears audio: --units is refused before anything loads.
        (out / "best", ["--units", str(units)], "give the audio manifest with --manifest"),
        # ...and so is a unit manifest passed as --manifest, naming its first line.
        (out / "best", ["--manifest", str(units)], "units.jsonl:1: a unit manifest"),
        # A discrete-token decoder reads units.
        (judge_model[0], ["--manifest", str(corpus["test"])], "`unified-lm discretize apply`"),
    ]
    for checkpoint, args, message in cases:
        assert cli.main(["decode", "--checkpoint", str(checkpoint), *args, "--out", str(tmp_path / "h.jsonl")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "h.jsonl").exists()


def test_cli_decode_scores_a_ctc_encoder_by_greedy_ctc(pretrained, corpus, tmp_path, capsys):
    encoder = pretrained[0]
    out = tmp_path / "ctc.hyp.jsonl"
    assert cli.main(["decode", "--checkpoint", str(encoder), "--manifest", str(corpus["test"]), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    scores = json.loads((tmp_path / "ctc.hyp.scores.json").read_text())
    assert [r["id"] for r in rows] == [json.loads(line)["id"] for line in corpus["test"].read_text().splitlines()]
    assert scores["task"] == "ctc_asr" and scores["num_utts"] == len(rows) and 0 <= scores["cer"]
    # Its hypotheses are the greedy CTC read-out the ctc recipe scores on dev.
    from unified_lm.audio.mel import MelFrontend
    from unified_lm.models import load_encoder_checkpoint
    from unified_lm.prefix_lm.inference import transcribe_ctc
    from unified_lm.prefix_lm.utterances import load_utterances

    enc, chars, mel = load_encoder_checkpoint(encoder)
    utts = load_utterances(corpus["test"], MelFrontend(mel), mode="asr")
    assert [r["hyp"] for r in rows] == transcribe_ctc(enc, chars, [u.feats for u in utts], batch_size=1)
    assert cli.main(["decode", "--checkpoint", str(encoder), "--units", str(corpus["test"]), "--out", str(out)]) == 2
    assert "a CTC encoder transcribes audio" in capsys.readouterr().err


def test_ctc_pretraining_with_speed_perturbation(corpus, tmp_path):
    from unified_lm.audio.mel import MelConfig, MelFrontend
    from unified_lm.prefix_lm.utterances import load_utterances

    data = {"train": str(corpus["train"]), "dev": str(corpus["dev"]), "speed_perturb": [1.1, 1.0, 0.9], "batch_size": 4}
    summary = train(from_dict(CTCEncoderConfig, {"data": data, "encoder": TINY_ENCODER, **TINY_RUN, "out_dir": str(tmp_path / "ctc")}))
    plain = load_utterances(corpus["train"], MelFrontend(MelConfig()), mode="asr")
    assert summary["train_utts"] == 3 * len(plain)
    fast = load_utterances(corpus["train"], MelFrontend(MelConfig()), mode="asr", speed=1.1)
    assert [u.text for u in fast] == [u.text for u in plain]
    for f, p in zip(fast, plain):  # 1.1x faster: about 1/1.1 of the frames
        assert abs(f.feats.shape[0] - p.feats.shape[0] / 1.1) <= 2
    with pytest.raises(ConfigError, match="speed_perturb"):
        from_dict(CTCEncoderConfig, {"data": {**data, "speed_perturb": [0.0]}})


def test_asr_only_training_of_the_bridge_alone_keeps_both_pretrained_halves(corpus, pretrained, tmp_path):
    """Hono et al. / SLAM-LLM: only the join between the two pre-trained halves learns first."""
    from safetensors.torch import load_file

    from unified_lm.models import load_encoder_checkpoint

    encoder_dir, decoder_dir, _, _ = pretrained
    cfg = to_dict(prefix_config(corpus, tmp_path / "run", encoder_init=str(encoder_dir)))
    cfg["model"]["decoder"]["init_from"] = str(decoder_dir)
    cfg["data"]["continuation"] = False
    cfg["phases"] = [{"train": ["bridge", "projector"]}]
    summary = train(from_dict(PrefixLMConfig, cfg))
    assert summary["train_utts"] == 6  # whole utterances only: no continuation examples
    assert set(summary["best_dev"]) == {"dev_loss", "dev_text_ce"}

    model, _, _, _ = load_prefix_checkpoint(tmp_path / "run" / "best")
    encoder, _, _ = load_encoder_checkpoint(encoder_dir)
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], value, rtol=0, atol=0, msg=name)
    lm = load_file(decoder_dir / "model.safetensors")
    assert lm and all(torch.equal(model.decoder.state_dict()[k], v) for k, v in lm.items())


def test_a_prefix_model_needs_something_to_train_on(corpus, tmp_path):
    with pytest.raises(ConfigError, match="nothing to train on"):
        from_dict(PrefixLMConfig, {"data": {"continuation": False, "full_utterance_asr": False}})


@pytest.mark.parametrize("name", ["prefix_asr", "prefix_spectron"])
def test_the_shipped_prefix_configs_load(name):
    from unified_lm.config import load_config

    cfg = load_config(PrefixLMConfig, Path(__file__).resolve().parents[1] / "experiments" / f"{name}.yaml")
    phases = cfg.resolved_phases()
    assert phases[-1].end == cfg.optim.max_steps
    if name == "prefix_asr":
        assert not cfg.data.continuation and phases[0].train == ("bridge", "projector", "decoder")


def test_the_ablation_can_freeze_the_pretrained_encoder_only(tmp_path):
    from unified_lm.bench.prefix_ablation import AblationConfig, variant_config

    cfg = from_dict(AblationConfig, {"freeze_pretrained_encoder": True,
                                     "prefix": {"phases": [{"steps": 10, "train": ["bridge"]}, {}]}})
    data = {"train": "t.jsonl", "dev": "d.jsonl"}
    full = variant_config(cfg, "full@2", data, tmp_path / "enc", tmp_path / "dec", tmp_path)
    assert [(p.steps, p.train, p.freeze) for p in full.phases] == [(10, ["bridge"], ["encoder"]), (None, ["all"], ["encoder"])]
    assert full.seed == 2 and full.out_dir == str(tmp_path / "runs" / "full@2")
    scratch = variant_config(cfg, "encoder_random", data, tmp_path / "enc", tmp_path / "dec", tmp_path)
    assert all(not p.freeze for p in scratch.phases) and scratch.model.encoder_init is None
    with pytest.raises(ConfigError, match="unknown variant 'full@x'"):
        variant_config(cfg, "full@x", data, tmp_path / "enc", tmp_path / "dec", tmp_path)


def test_judge_control_hears_the_references_own_log_mel(corpus, judge_model, tmp_path):
    from unified_lm.audio.mel import MelConfig
    from unified_lm.bench.prefix_ablation import JudgeConfig, judge_control
    from unified_lm.scoring import score_corpus

    judge = JudgeConfig(checkpoint=str(judge_model[0]), tokenizer=str(judge_model[1]), max_utts=2)
    scores = judge_control(str(corpus["test"]), judge, MelConfig(), tmp_path / "control")
    rows = [json.loads(x) for x in corpus["test"].read_text().splitlines()][:2]
    assert scores["utts"] == 2
    # Each WAV is its reference continuation's log-mel through Griffin-Lim: as long as the recording.
    for row in rows:
        vocoded, recorded = (sf.info(p) for p in (tmp_path / "control" / "wav" / f"{row['id']}.wav",
                                                  corpus["test"].parent / row["cont_audio"]))
        assert vocoded.samplerate == 16000 and abs(vocoded.duration - recorded.duration) <= 0.02
    heard = {json.loads(x)["id"]: json.loads(x)["hyp"] for x in (tmp_path / "control" / "judge.hyp.jsonl").read_text().splitlines()}
    assert scores["judge_wer_ref"] == score_corpus([r["cont_text"] for r in rows], [heard.get(r["id"], "") for r in rows])["wer"]
    assert scores["judge_too_short"] == 2 - len(heard)
