"""apply_tokenizer: determinism, bad input, resume after kill -9, shards merging to the same bytes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _discretize_util import ROOT, make_corpus, record, speechlike, write_manifest, write_wav
from unified_lm.discretize import apply_tokenizer, fit_tokenizer, merge_shards, shard_path
from unified_lm.errors import ConfigError, DataError
from unified_lm.io import read_jsonl

FBANK = ROOT / "tokenizers" / "fbank-km500.yaml"
SMALL = ["kmeans.k=8", "kmeans.sample_fraction=1.0", "post.dedup=true"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_utts=8, seconds=1.0)


@pytest.fixture(scope="module")
def tok(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "fbank"
    fit_tokenizer(FBANK, corpus, out, overrides=SMALL, progress=False)
    return out


@pytest.fixture(scope="module")
def bad_manifest(corpus):
    """Good lines interleaved with one line for every kind of bad input."""
    root = corpus.parent
    good = read_jsonl(corpus)
    (root / "corrupt.wav").write_bytes(b"not audio at all" * 20)
    (root / "empty.wav").write_bytes(b"")
    whole = (root / "u0.wav").read_bytes()
    (root / "trunc.wav").write_bytes(whole[: len(whole) // 3])
    nan = speechlike(0.5, 16000, seed=9)
    nan[100:200] = np.nan
    write_wav(root / "nan.wav", nan, 16000, subtype="FLOAT")
    write_wav(root / "short.wav", speechlike(0.01, 16000, seed=10), 16000)
    rows = [
        good[0],
        record("corrupt", "corrupt.wav", 1.0),  # line 2
        good[1],
        record("empty", "empty.wav", 1.0),  # line 4
        record("trunc", "trunc.wav", 1.0),  # line 5
        good[2],  # stereo: fine, downmixed
        record("nan", "nan.wav", 0.5),  # line 7
        {**good[3], "id": "rate", "sample_rate": 8000},  # line 8
        {**good[4], "id": "notext", "text": ""},  # line 9
        b'{"id": "latin1", "text": "caf\xe9"}',  # line 10: not UTF-8
        record("missing", "missing.wav", 1.0),  # line 11
        '{"id": "json", ',  # line 12: broken JSON
        record("short", "short.wav", 0.01),  # line 13: no frames
        good[5],
    ]
    return write_manifest(root / "bad.jsonl", rows)


BAD_LINES = {
    2: "not a readable audio file",
    4: "empty",
    5: "truncated WAV",
    7: "NaN or inf",
    8: "manifest says sample_rate 8000",
    9: "'text' is empty",
    10: "not valid UTF-8",
    11: "not found",
    12: "not valid JSON",
    13: "too short to discretize",
}


def test_apply_is_deterministic_and_keeps_manifest_order(tok, corpus, tmp_path):
    a = apply_tokenizer(tok, corpus, tmp_path / "a.jsonl", progress=False)
    apply_tokenizer(tok, corpus, tmp_path / "b.jsonl", progress=False)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a["utterances"] == 8 and a["rejected"] == 0 and a["audio_seconds"] == pytest.approx(8.0, abs=0.01)
    recs = read_jsonl(tmp_path / "a.jsonl")
    assert [r["id"] for r in recs] == [f"u{i}" for i in range(8)]
    meta = json.loads((tok / "meta.json").read_text())
    for r in recs:
        assert set(r) == {"id", "text", "speaker", "units", "durations", "tokenizer", "subset"}
        assert r["tokenizer"] == {"name": meta["name"], "hash": meta["hash"]}
        assert all(0 <= u < 8 for u in r["units"]) and sum(r["durations"]) == 98  # 1 s -> 98 frames
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.fault
def test_long_48k_audio_in_a_folder_with_spaces_from_another_directory(tok, tmp_path, monkeypatch):
    data = tmp_path / "my data" / "wavs here"
    data.mkdir(parents=True)
    write_wav(data / "long take.wav", speechlike(60.0, 48000, seed=4), 48000)
    write_manifest(tmp_path / "my data" / "m.jsonl", [record("long", "wavs here/long take.wav", 60.0)])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # audio paths resolve against the manifest, not the cwd
    summary = apply_tokenizer(tok, "../my data/m.jsonl", "../my data/units.jsonl", progress=False)
    [row] = read_jsonl(tmp_path / "my data" / "units.jsonl")
    assert summary["audio_seconds"] == pytest.approx(60.0, abs=0.01)
    assert sum(row["durations"]) == 5998  # 60 s at 100 frames/s, resampled from 48 kHz


@pytest.mark.fault
def test_bad_line_raises_naming_the_line_and_leaves_no_output(tok, bad_manifest, tmp_path):
    out = tmp_path / "units.jsonl"
    with pytest.raises(DataError, match=r"bad.jsonl:2: utterance 'corrupt': .*corrupt.wav: not a readable audio file"):
        apply_tokenizer(tok, bad_manifest, out, progress=False)
    assert not out.exists()


@pytest.mark.fault
def test_apply_never_overwrites_its_manifest_nor_writes_into_a_directory(tok, bad_manifest, tmp_path):
    before = bad_manifest.read_bytes()
    with pytest.raises(ConfigError, match="the output path is also an input"):
        apply_tokenizer(tok, bad_manifest, bad_manifest, progress=False)
    assert bad_manifest.read_bytes() == before
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        apply_tokenizer(tok, bad_manifest, tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").iterdir()) and not list(tmp_path.glob("*.partial"))


@pytest.mark.fault
def test_a_second_apply_to_the_same_output_is_refused_while_the_first_runs(tok, bad_manifest, tmp_path):
    import fcntl

    from unified_lm.discretize.apply import partial_path

    out = tmp_path / "units.jsonl"
    with open(partial_path(out), "a") as held:  # what a running apply holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another `discretize apply` is writing this output"):
            apply_tokenizer(tok, bad_manifest, out, skip_bad=True, progress=False)
        assert partial_path(out).read_text() == ""  # the refused run wrote nothing
    apply_tokenizer(tok, bad_manifest, out, skip_bad=True, progress=False)  # released: it runs
    assert out.is_file() and not partial_path(out).exists()


@pytest.mark.fault
def test_skip_bad_writes_rejects_with_line_and_reason(tok, bad_manifest, tmp_path):
    out = tmp_path / "units.jsonl"
    summary = apply_tokenizer(tok, bad_manifest, out, skip_bad=True, progress=False)
    assert [r["id"] for r in read_jsonl(out)] == ["u0", "u1", "u2", "u5"]
    rejects = read_jsonl(tmp_path / "units.jsonl.rejects.jsonl")
    assert [r["line"] for r in rejects] == sorted(BAD_LINES)
    for r in rejects:
        assert BAD_LINES[r["line"]] in r["reason"], r
    assert {r["line"]: r["id"] for r in rejects}[2] == "corrupt"
    assert {r["line"]: r["id"] for r in rejects}[9] == "notext"  # a record that fails its checks keeps its id
    assert {r["line"]: r["id"] for r in rejects}[12] is None  # broken JSON has no id
    assert summary["rejected"] == len(BAD_LINES) and summary["utterances"] == 4


def test_skip_bad_fails_when_nothing_is_left(tok, bad_manifest, tmp_path):
    only_bad = [line for i, line in enumerate(bad_manifest.read_bytes().splitlines(), 1) if i in BAD_LINES]
    manifest = write_manifest(bad_manifest.parent / "all_bad.jsonl", only_bad)
    out = tmp_path / "units.jsonl"
    with pytest.raises(DataError, match="no utterance could be discretized"):
        apply_tokenizer(tok, manifest, out, skip_bad=True, progress=False)
    assert not out.exists() and (tmp_path / "units.jsonl.rejects.jsonl").is_file()


def _partial_rows(out: Path, upto: int) -> bytes:
    rows = out.read_bytes().splitlines(keepends=True)
    return b"".join(f"{i}\t".encode() + row for i, row in enumerate(rows[:upto], start=1))


def test_resume_drops_a_torn_last_row(tok, corpus, tmp_path):
    reference = tmp_path / "ref.jsonl"
    apply_tokenizer(tok, corpus, reference, progress=False)
    out = tmp_path / "units.jsonl"
    torn = _partial_rows(reference, 4) + b'5\t{"id":"u4","text":"te'  # killed mid-write
    (tmp_path / "units.jsonl.partial").write_bytes(torn)
    summary = apply_tokenizer(tok, corpus, out, progress=False)
    assert summary["resumed"] == 4 and summary["utterances"] == 8
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "units.jsonl.partial").exists()


@pytest.mark.fault
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_resume_after_kill_9_or_ctrl_c_gives_the_same_bytes(tok, corpus, tmp_path, sig):
    rows = read_jsonl(corpus)
    many = write_manifest(corpus.parent / "many.jsonl", [{**rows[i % 8], "id": f"x{i}"} for i in range(80)])
    reference = tmp_path / "ref.jsonl"
    apply_tokenizer(tok, many, reference, progress=False)

    out = tmp_path / "units.jsonl"
    partial = tmp_path / "units.jsonl.partial"
    # The command line in a child that stops after its 40th utterance and waits for the
    # signal: it lands mid-run however slow the machine is.
    script = (
        "import signal, sys, time\n"
        # A shell that starts jobs in the background makes them ignore Ctrl-C; the user's terminal does not.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from unified_lm.discretize import apply as a, tokenizer as t\n"
        "a.BATCH_SECONDS = 0\n"  # one utterance a batch, so the hold lands after the 40th
        "encode, calls = t.SpeechTokenizer.encode_batch, [0]\n"
        "def held(self, wavs):\n"
        "    calls[0] += len(wavs)\n"
        "    if calls[0] > 40:\n"
        "        time.sleep(600)\n"
        "    return encode(self, wavs)\n"
        "t.SpeechTokenizer.encode_batch = held\n"
        "from unified_lm.cli import main\n"
        "sys.exit(main(['discretize', 'apply', '--tokenizer', sys.argv[1], '--manifest', sys.argv[2], '--out', sys.argv[3]]))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tok), str(many), str(out)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (partial.is_file() and partial.read_bytes().count(b"\n") >= 32):  # the first fsync
            assert child.poll() is None and time.monotonic() < deadline, "child ended before it could be stopped"
            time.sleep(0.02)
        os.kill(child.pid, sig)
    finally:
        try:
            err = child.communicate(timeout=120)[1].decode()
        except subprocess.TimeoutExpired:
            child.kill()
            raise
    assert not out.exists()
    if sig == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL
    else:  # one line, no traceback
        assert child.returncode == 130 and "Traceback" not in err
        assert err.rstrip().endswith("unified-lm: interrupted; rerun the same command to resume")

    summary = apply_tokenizer(tok, many, out, progress=False)
    assert 32 <= summary["resumed"] <= 40
    assert out.read_bytes() == reference.read_bytes()


def test_shards_merge_to_the_unsharded_bytes(tok, bad_manifest, tmp_path):
    whole = tmp_path / "whole" / "units.jsonl"
    apply_tokenizer(tok, bad_manifest, whole, skip_bad=True, progress=False)
    out = tmp_path / "sharded" / "units.jsonl"
    for i in range(3):
        apply_tokenizer(tok, bad_manifest, out, shard=i, nshards=3, skip_bad=True, progress=False)
        assert shard_path(out, i, 3).is_file()
    assert not out.exists()
    assert merge_shards(out, 3) == out
    assert out.read_bytes() == whole.read_bytes()
    rejects = "units.jsonl.rejects.jsonl"
    assert (out.parent / rejects).read_bytes() == (whole.parent / rejects).read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["units.jsonl", "units.jsonl.rejects.jsonl"]


def test_merge_needs_every_shard(tok, corpus, tmp_path):
    out = tmp_path / "units.jsonl"
    apply_tokenizer(tok, corpus, out, shard=0, nshards=2, progress=False)
    with pytest.raises(DataError, match="shard missing: run apply with --shard 1 --nshards 2"):
        merge_shards(out, 2)
    with pytest.raises(ConfigError, match="0 <= shard < nshards"):
        apply_tokenizer(tok, corpus, out, shard=2, nshards=2, progress=False)


def test_rerun_rebuilds_a_finished_output(tok, corpus, tmp_path):
    out = tmp_path / "units.jsonl"
    apply_tokenizer(tok, corpus, out, progress=False)
    before = out.read_bytes()
    assert apply_tokenizer(tok, corpus, out, progress=False)["resumed"] == 0
    assert out.read_bytes() == before
    other = tmp_path / "other"
    meta = fit_tokenizer(FBANK, corpus, other, overrides=SMALL + ["kmeans.seed=3"], progress=False)
    apply_tokenizer(other, corpus, out, progress=False)  # never left stale
    assert {r["tokenizer"]["hash"] for r in read_jsonl(out)} == {meta.hash}


def test_resume_refuses_a_partial_of_another_tokenizer(tok, corpus, tmp_path):
    reference = tmp_path / "ref.jsonl"
    apply_tokenizer(tok, corpus, reference, progress=False)
    (tmp_path / "units.jsonl.partial").write_bytes(_partial_rows(reference, 3))
    other = tmp_path / "other"
    fit_tokenizer(FBANK, corpus, other, overrides=SMALL + ["kmeans.seed=3"], progress=False)
    with pytest.raises(ConfigError, match="partial output of another tokenizer"):
        apply_tokenizer(other, corpus, tmp_path / "units.jsonl", progress=False)


def test_resume_refuses_a_changed_manifest(tok, corpus, tmp_path):
    reference = tmp_path / "ref.jsonl"
    apply_tokenizer(tok, corpus, reference, progress=False)
    (tmp_path / "units.jsonl.partial").write_bytes(_partial_rows(reference, 3))
    rows = read_jsonl(corpus)
    rows[1]["id"] = "renamed"
    rows = [{**r, "audio": str(corpus.parent / r["audio"])} for r in rows]  # the copy lives elsewhere
    changed = write_manifest(tmp_path / "changed.jsonl", rows)
    with pytest.raises(DataError, match="changed.jsonl:2: line holds 'renamed'.*the manifest changed"):
        apply_tokenizer(tok, changed, tmp_path / "units.jsonl", progress=False)


@pytest.mark.fault
def test_upsampled_audio_is_reported_once_per_manifest(tok, tmp_path, caplog):
    for i in range(2):
        write_wav(tmp_path / f"n{i}.wav", speechlike(1.0, 8000, seed=i), 8000)
    manifest = write_manifest(tmp_path / "narrow.jsonl", [record(f"n{i}", f"n{i}.wav", 1.0) for i in range(2)])
    with caplog.at_level("WARNING", logger="unified_lm.discretize"):
        apply_tokenizer(tok, manifest, tmp_path / "units.jsonl", progress=False)
    warned = [r.getMessage() for r in caplog.records if "upsampled" in r.getMessage()]
    assert len(warned) == 1 and "n0.wav is 8000 Hz, upsampled to 16000 Hz" in warned[0]
    assert len(read_jsonl(tmp_path / "units.jsonl")) == 2  # a warning, not an error


@pytest.mark.fault
def test_fit_skip_bad_leaves_out_the_bad_lines_and_says_which(bad_manifest, tmp_path, caplog):
    with pytest.raises(DataError, match=r"bad.jsonl:2: utterance 'corrupt'"):
        fit_tokenizer(FBANK, bad_manifest, tmp_path / "strict", overrides=SMALL, progress=False)
    assert not (tmp_path / "strict").exists()
    with caplog.at_level("WARNING", logger="unified_lm.discretize"):
        meta = fit_tokenizer(FBANK, bad_manifest, tmp_path / "tok", overrides=SMALL, progress=False, skip_bad=True)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped:")]
    assert meta.num_units == 8 and len(skipped) == len(BAD_LINES) - 1  # line 13 reads fine; only apply finds no frames
    assert any("bad.jsonl:2: utterance 'corrupt'" in m for m in skipped)


def test_a_speed_field_perturbs_on_load_as_a_copy_of_the_perturbed_audio_would(tok, corpus, tmp_path):
    import soundfile as sf
    import torch

    from unified_lm.audio import load_audio, speed_perturb

    first = read_jsonl(corpus)[0]
    wav = speed_perturb(load_audio(corpus.parent / first["audio"]), 1.1)
    write_wav(tmp_path / "copy.wav", wav.numpy(), 16000, subtype="FLOAT")  # exact: no 16-bit rounding
    copy = write_manifest(tmp_path / "copy.jsonl", [record("u0", "copy.wav", round(wav.numel() / 16000, 4))])
    fly = write_manifest(tmp_path / "fly.jsonl", [{**first, "audio": str(corpus.parent / first["audio"]), "speed": 1.1}])
    apply_tokenizer(tok, copy, tmp_path / "copy-units.jsonl", progress=False)
    apply_tokenizer(tok, fly, tmp_path / "fly-units.jsonl", progress=False)
    (a,), (b,) = read_jsonl(tmp_path / "copy-units.jsonl"), read_jsonl(tmp_path / "fly-units.jsonl")
    assert a["units"] == b["units"] and a["durations"] == b["durations"]
    assert sf.info(str(corpus.parent / first["audio"])).frames > wav.numel()  # it did play faster
    assert "speed" not in b  # the units are of the perturbed audio: the factor is not a unit-manifest field
    assert torch.equal(read_audio_record(fly), wav)
    bad = write_manifest(tmp_path / "bad.jsonl", [{**first, "speed": 0}])
    with pytest.raises(DataError, match="'speed' must be a positive number"):
        apply_tokenizer(tok, bad, tmp_path / "bad-units.jsonl", progress=False)


def read_audio_record(manifest):
    from unified_lm.corpus.manifest import read_audio_manifest

    (rec,) = read_audio_manifest(manifest)
    return rec.load(manifest)
