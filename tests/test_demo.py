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
    text_lm_steps=2,
    text_sentences=40,
)


def test_full_spends_more_steps_on_the_same_pipeline():
    assert QUICK.tokenizer == FULL.tokenizer == "ctc-posterior-km500.yaml"
    assert FULL.ctc_steps > QUICK.ctc_steps > 0 and FULL.max_steps > QUICK.max_steps
    assert FULL.text_lm_steps > QUICK.text_lm_steps > 0


def test_full_shape_runs_end_to_end_then_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "demo"
    first = run_demo(out, TOY, peer=True)
    log = capsys.readouterr().out
    assert "== 2/7 pre-train the CTC encoder (2 steps)" in log and "== 7/7 decode test (beam 1, with the text LM)" in log
    assert "== 6/7 pre-train a text LM on 40 sentences (2 steps)" in log

    meta = json.loads((out / "tok" / "meta.json").read_text())
    assert meta["num_units"] == 8 and meta["frame_rate"] == 25.0
    assert (out / "ctc-encoder" / "best").is_dir()
    assert "lr: 0.004" in (out / "ctc-encoder" / "config.yaml").read_text()  # the scale's encoder settings
    scores = first["scores"]
    assert scores["num_utts"] == len((out / "corpus" / "test.jsonl").read_text().splitlines())
    assert set(scores["subsets"]) == {"seen_voice", "heldout_voice"}
    assert (out / "asr_sld" / "test.hyp.jsonl").is_file()
    # The LM shares the decoder's text tokenizer and never saw a dev or test transcript.
    assert scores["lm"] == str(out / "text-lm" / "best") and scores["lm_weight"] == TOY.lm_weight
    assert (out / "text-lm" / "best" / "text_tokenizer.json").read_text() == (
        out / "asr_sld" / "best" / "text_tokenizer.json").read_text()
    held_out = {json.loads(line)["text"] for s in ("dev", "test") for line in (out / "corpus" / f"{s}.jsonl").open()}
    sentences = (out / "text" / "sentences-40.txt").read_text().splitlines()
    assert len(sentences) == 40 and not held_out & set(sentences)
    assert "without the text LM (beam 1)" in log and "with the text LM (weight 0.3)" in log
    assert (out / "asr_sld" / "test.no-lm.hyp.jsonl").is_file()

    assert "PocketSphinx on the same audio" in log
    assert first["peer"]["num_utts"] == scores["num_utts"]  # the same test audio

    again = run_demo(out, TOY)  # no --peer: its scores are read back, not recomputed
    log = capsys.readouterr().out
    assert again["peer"] == first["peer"] and "PocketSphinx on the same audio" in log
    assert log.count("(done, skipped)") == 6  # all but decoding, which always reruns
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
