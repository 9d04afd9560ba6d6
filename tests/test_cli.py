"""The command line reaches the library with the options the user gave."""

import pytest

import unified_lm.corpus.synth
import unified_lm.decode
from unified_lm.cli import main


@pytest.fixture
def calls(monkeypatch):
    seen = {}

    def fake_decode(checkpoint, units, out, **kwargs):
        seen["decode"] = {"checkpoint": checkpoint, "units": units, **kwargs}
        return {"num_utts": 0}

    def fake_synth(out, **kwargs):
        seen["synth"] = kwargs
        return {}

    monkeypatch.setattr(unified_lm.decode, "decode", fake_decode)
    monkeypatch.setattr(unified_lm.corpus.synth, "synthesize", fake_synth)
    return seen


def test_decode_passes_task_and_cache_switch(tmp_path, calls):
    args = ["decode", "--checkpoint", str(tmp_path), "--units", "u.jsonl", "--out", "h.jsonl"]
    assert main(args) == 0
    assert calls["decode"]["task"] == "asr" and calls["decode"]["use_cache"] is True
    assert main([*args, "--task", "tts", "--no-cache", "--beam", "3"]) == 0
    assert calls["decode"]["task"] == "tts"
    assert calls["decode"]["use_cache"] is False
    assert calls["decode"]["beam"] == 3


def test_decode_refuses_an_audio_manifest_for_a_discrete_checkpoint(tmp_path, calls, capsys):
    assert main(["decode", "--checkpoint", str(tmp_path), "--manifest", "a.jsonl", "--out", "h.jsonl"]) == 2
    assert "discretize apply" in capsys.readouterr().err
    assert "decode" not in calls


def test_synth_passes_the_heldout_voice(tmp_path, calls):
    assert main(["corpus", "synth", "--out", str(tmp_path), "--num-utts", "9", "--heldout-voice", "flite-rms"]) == 0
    assert calls["synth"]["heldout_voice"] == "flite-rms"
    assert calls["synth"]["num_utts"] == 9
