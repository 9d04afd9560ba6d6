"""`unified-lm corpus import`: LibriSpeech, Kaldi, lhotse and HF datasets folders built here,
read into manifests that validate and load; segments read in place."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from unified_lm.audio import load_audio, read_audio
from unified_lm.cli import main
from unified_lm.corpus.importers import ImportOptions, import_corpus
from unified_lm.corpus.manifest import read_audio_manifest
from unified_lm.corpus.validate import validate_manifest
from unified_lm.errors import DataError

SR = 16000


def _tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32")


def _librispeech(root: Path) -> Path:
    for part, spk, chapter in [("dev-clean", "84", "121123"), ("test-other", "1688", "142285")]:
        d = root / "LibriSpeech" / part / spk / chapter
        d.mkdir(parents=True)
        lines = []
        for i in range(2):
            uid = f"{spk}-{chapter}-{i:04d}"
            sf.write(d / f"{uid}.flac", _tone(1.0 + 0.25 * i), SR)
            lines.append(f"{uid} THE CAT SAT NUMBER {i}")
        (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root / "LibriSpeech"


def _kaldi(root: Path, wav_scp_line: str | None = None) -> Path:
    sf.write(root / "rec1.wav", np.concatenate([_tone(1.5, 220), _tone(1.5, 440)]), SR)
    d = root / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(wav_scp_line or f"rec1 {root / 'rec1.wav'}\n")
    (d / "segments").write_text("u1 rec1 0.00 1.50\nu2 rec1 1.50 3.00\n")
    (d / "text").write_text("u1 hello there\nu2 general kenobi\n")
    (d / "utt2spk").write_text("u1 spk1\nu2 spk2\n")
    return d


def test_librispeech_tree_becomes_one_manifest_per_part(tmp_path):
    src = _librispeech(tmp_path)
    counts = import_corpus("librispeech", src, tmp_path / "out", ImportOptions(lowercase=True))
    assert counts == {"dev-clean": 2, "test-other": 2}
    recs = read_audio_manifest(tmp_path / "out" / "test-other.jsonl")
    assert [r.id for r in recs] == ["1688-142285-0000", "1688-142285-0001"]
    assert recs[1].text == "the cat sat number 1" and recs[1].speaker == "1688"
    assert recs[1].duration == pytest.approx(1.25) and recs[1].subset == "test-other" and recs[1].offset is None
    assert not Path(recs[0].audio).is_absolute()  # relative to the manifest: the folder can move with its corpus
    for part in counts:
        assert validate_manifest(tmp_path / "out" / f"{part}.jsonl") == []


def test_parts_select_and_a_missing_part_is_named(tmp_path):
    src = _librispeech(tmp_path)
    assert import_corpus("librispeech", src, tmp_path / "a", ImportOptions(parts=("dev-clean",))) == {"dev-clean": 2}
    assert not (tmp_path / "a" / "test-other.jsonl").exists()
    with pytest.raises(DataError, match="no split named \\['train-clean-100'\\] found"):
        import_corpus("librispeech", src, tmp_path / "b", ImportOptions(parts=("train-clean-100",)))
    with pytest.raises(DataError, match="no parquet"):
        import_corpus("hf", src, tmp_path / "b")


def test_kaldi_segments_are_read_in_place(tmp_path):
    d = _kaldi(tmp_path)
    assert import_corpus("kaldi", d, tmp_path / "out") == {"train": 2}
    manifest = tmp_path / "out" / "train.jsonl"
    u1, u2 = read_audio_manifest(manifest)
    assert (u1.offset, u1.duration, u2.offset, u2.duration) == (0.0, 1.5, 1.5, 1.5)
    assert u2.speaker == "spk2" and u2.audio == "../rec1.wav"  # one recording, no copies
    assert validate_manifest(manifest) == []
    whole, _ = read_audio(tmp_path / "rec1.wav")
    second = load_audio(u2.audio_path(manifest), segment=u2.segment)
    assert torch.equal(second, whole[24000:48000])


def test_kaldi_pipe_and_missing_files_are_refused_with_the_reason(tmp_path):
    d = _kaldi(tmp_path, wav_scp_line=f"rec1 sox {tmp_path / 'rec1.wav'} -t wav - |\n")
    with pytest.raises(DataError, match="wav.scp:1: recording 'rec1' is a command or an ark offset"):
        import_corpus("kaldi", d, tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()
    (d / "text").unlink()
    with pytest.raises(DataError, match="text: a Kaldi data directory needs this file"):
        import_corpus("kaldi", d, tmp_path / "out")


def test_segment_past_the_end_is_a_clear_error(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(1.0), SR)
    with pytest.raises(DataError, match=r"a.wav: segment 0.800\+0.500 s lies outside the file \(it lasts 1.000 s\)"):
        read_audio(tmp_path / "a.wav", (0.8, 0.5))
    line = {"id": "x", "audio": "a.wav", "text": "hi", "speaker": "s", "duration": 0.5, "offset": 0.8}
    (tmp_path / "m.jsonl").write_text(json.dumps(line) + "\n")
    [err] = validate_manifest(tmp_path / "m.jsonl")
    assert "lies outside the file" in str(err) and "m.jsonl:1:" in str(err)
    (tmp_path / "m.jsonl").write_text(json.dumps({**line, "offset": "soon"}) + "\n")
    [err] = validate_manifest(tmp_path / "m.jsonl", check_audio=False)
    assert "'offset' must be a number of seconds" in str(err)


def test_lhotse_manifests_folder_and_cuts_file(tmp_path):
    from lhotse import CutSet
    from lhotse.kaldi import load_kaldi_data_dir

    recordings, supervisions, _ = load_kaldi_data_dir(_kaldi(tmp_path), sampling_rate=SR)
    folder = tmp_path / "manifests"
    folder.mkdir()
    recordings.to_file(folder / "mycorpus_recordings_dev.jsonl.gz")
    supervisions.to_file(folder / "mycorpus_supervisions_dev.jsonl.gz")
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions()
    cuts.to_file(folder / "mycorpus_cuts_test.jsonl.gz")
    assert import_corpus("lhotse", folder, tmp_path / "out") == {"dev": 2, "test": 2}
    dev = read_audio_manifest(tmp_path / "out" / "dev.jsonl")
    test = read_audio_manifest(tmp_path / "out" / "test.jsonl")
    assert [(r.id, r.offset, r.text) for r in dev] == [(r.id, r.offset, r.text) for r in test]
    assert dev[1].offset == 1.5
    (folder / "mycorpus_cuts_test.jsonl.gz").unlink()
    (folder / "mycorpus_supervisions_dev.jsonl.gz").unlink()
    with pytest.raises(DataError, match="recordings and supervisions go together"):
        import_corpus("lhotse", folder, tmp_path / "out2")


def _hf_table(n: int, with_id: bool = True):
    import pyarrow as pa

    audio = []
    for i in range(n):
        buf = io.BytesIO()
        sf.write(buf, _tone(0.5 + 0.25 * i), SR, format="WAV")
        audio.append({"bytes": buf.getvalue(), "path": None})
    cols = {
        "audio": pa.array(audio, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "sentence": [f"utterance number {i}" for i in range(n)],
        "speaker_id": [f"spk{i % 2}" for i in range(n)],
    }
    if with_id:
        cols["id"] = [f"u/{i}" for i in range(n)]
    return pa.table(cols)


def test_hf_parquet_snapshot_writes_embedded_audio_once(tmp_path):
    import pyarrow.parquet as pq

    src = tmp_path / "snapshot" / "data"
    src.mkdir(parents=True)
    pq.write_table(_hf_table(3), src / "train-00000-of-00001.parquet")
    pq.write_table(_hf_table(2, with_id=False), src / "test-00000-of-00001.parquet")
    out = tmp_path / "out"
    assert import_corpus("hf", tmp_path / "snapshot", out) == {"test": 2, "train": 3}
    train = read_audio_manifest(out / "train.jsonl")
    assert [r.id for r in train] == ["u/0", "u/1", "u/2"] and train[2].speaker == "spk0"
    assert train[2].audio == "audio/train/u_2.wav" and train[2].duration == pytest.approx(1.0)
    assert read_audio_manifest(out / "test.jsonl")[1].id == "test-test-00000-of-00001-0000001"
    assert validate_manifest(out / "train.jsonl") == []
    stamp = (out / "audio/train/u_2.wav").stat().st_mtime_ns
    import_corpus("hf", tmp_path / "snapshot", out)  # a rerun keeps the audio it wrote
    assert (out / "audio/train/u_2.wav").stat().st_mtime_ns == stamp


def test_hf_save_to_disk_folder_and_a_table_without_transcripts(tmp_path):
    import pyarrow as pa

    for split, n in [("train", 2), ("validation", 1)]:
        (tmp_path / "ds" / split).mkdir(parents=True)
        table = _hf_table(n)
        with pa.OSFile(str(tmp_path / "ds" / split / "data-00000-of-00001.arrow"), "wb") as f:
            with pa.ipc.new_stream(f, table.schema) as w:
                w.write_table(table)
    (tmp_path / "ds" / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
    assert import_corpus("hf", tmp_path / "ds", tmp_path / "out") == {"train": 2, "validation": 1}
    assert read_audio_manifest(tmp_path / "out" / "validation.jsonl")[0].text == "utterance number 0"
    bad = tmp_path / "bad"
    bad.mkdir()
    import pyarrow.parquet as pq

    pq.write_table(_hf_table(1).drop(["sentence"]), bad / "train-00000-of-00001.parquet")
    with pytest.raises(DataError, match="no transcript column"):
        import_corpus("hf", bad, tmp_path / "out2")


def test_cli_import_prints_each_manifest(tmp_path, capsys):
    src = _librispeech(tmp_path)
    assert main(["corpus", "import", "librispeech", str(src), "--out", str(tmp_path / "o"), "--parts", "dev-clean"]) == 0
    assert f"{tmp_path / 'o' / 'dev-clean.jsonl'}: 2 utterances" in capsys.readouterr().out
