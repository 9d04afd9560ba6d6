"""`unified-lm demo` end to end at toy scale: its shape (CTC encoder -> ctc-posterior-km500
units -> decoder -> PocketSphinx beside it), and a rerun that skips every finished step."""

import dataclasses
import json

from unified_lm.demo import FULL, QUICK, DemoScale, run_demo

TOY = DemoScale(
    num_utts=24,
    max_steps=2,
    eval_every=2,
    tokenizer=FULL.tokenizer,
    tokenizer_overrides=("kmeans.k=8",),
    ctc_steps=2,
    ctc_overrides=("optim.lr=4e-3",),
    train_overrides=("model.preset=tiny", "data.text_vocab_size=300", "eval.max_utts=4", "data.max_tokens=512"),
)


def test_full_spends_more_steps_on_the_same_pipeline():
    assert QUICK.tokenizer == FULL.tokenizer == "ctc-posterior-km500.yaml"
    assert FULL.ctc_steps > QUICK.ctc_steps > 0 and FULL.max_steps > QUICK.max_steps


def test_full_shape_runs_end_to_end_then_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "demo"
    first = run_demo(out, TOY, peer=True)
    log = capsys.readouterr().out
    assert "== 2/6 pre-train the CTC encoder (2 steps)" in log and "== 6/6 decode test" in log

    meta = json.loads((out / "tok" / "meta.json").read_text())
    assert meta["num_units"] == 8 and meta["frame_rate"] == 25.0
    assert (out / "ctc-encoder" / "best").is_dir()
    assert "lr: 0.004" in (out / "ctc-encoder" / "config.yaml").read_text()  # the scale's encoder settings
    scores = first["scores"]
    assert scores["num_utts"] == len((out / "corpus" / "test.jsonl").read_text().splitlines())
    assert set(scores["subsets"]) == {"seen_voice", "heldout_voice"}
    assert (out / "asr_sld" / "test.hyp.jsonl").is_file()

    assert "PocketSphinx on the same audio" in log
    assert first["peer"]["num_utts"] == scores["num_utts"]  # the same test audio

    again = run_demo(out, TOY)  # no --peer: its scores are read back, not recomputed
    log = capsys.readouterr().out
    assert again["peer"] == first["peer"] and "PocketSphinx on the same audio" in log
    assert log.count("(done, skipped)") == 5  # all but decoding, which always reruns
    assert again["scores"]["wer"] == scores["wer"]
    assert again["timings"]["train"] < 5.0


def test_the_corpus_size_is_a_command_line_knob_at_the_same_steps(monkeypatch, tmp_path):
    import unified_lm.demo as demo
    from unified_lm.cli import main

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda out, scale, **kw: seen.append((out, scale)))
    assert main(["demo", "--num-utts", "30000", "--out", str(tmp_path / "d")]) == 0
    (out, scale), = seen
    assert scale == dataclasses.replace(QUICK, num_utts=30000) and out == tmp_path / "d"
    assert main(["demo", "--num-utts", "3"]) == 2
