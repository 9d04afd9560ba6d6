"""validate_manifest reports every bad line, each with the manifest path, line and reason."""

import numpy as np
import pytest

from _discretize_util import record, speechlike, write_manifest, write_wav
from unified_lm.corpus.validate import validate_manifest


@pytest.fixture
def manifest(tmp_path):
    write_wav(tmp_path / "ok.wav", speechlike(1.0, 16000, seed=0), 16000)
    write_wav(tmp_path / "ok22.wav", speechlike(1.0, 22050, seed=1), 22050)
    (tmp_path / "corrupt.wav").write_bytes(b"garbage" * 50)
    nan = speechlike(1.0, 16000, seed=2)
    nan[5] = np.nan
    write_wav(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    rows = [
        record("a", "ok.wav", 1.0, sample_rate=16000),  # 1 good
        '{"id": "b", "audio": "ok.wav"',  # 2 bad JSON
        b'{"id": "c\xff"}',  # 3 not UTF-8
        {"id": "d", "audio": "ok.wav", "text": "hi", "duration": 1.0},  # 4 no speaker
        record("e", "ok.wav", 1.0, text=" "),  # 5 empty text
        record("f", "gone.wav", 1.0),  # 6 missing file
        record("g", "corrupt.wav", 1.0),  # 7 unreadable audio
        record("h", "ok22.wav", 1.0, sample_rate=16000),  # 8 sample-rate mismatch
        record("a", "ok.wav", 1.0),  # 9 duplicate id
        record("i", "nan.wav", 1.0),  # 10 NaN samples
        record("j", "ok.wav", 2.5),  # 11 duration mismatch
        record("k", "ok22.wav", 1.0, sample_rate=22050),  # 12 good
        record("l", "ok.wav", 0.0),  # 13 non-positive duration
        "[1, 2]",  # 14 not an object
    ]
    return write_manifest(tmp_path / "m.jsonl", rows)


EXPECTED = {
    2: "not valid JSON",
    3: "not valid UTF-8",
    4: "missing field(s) ['speaker']",
    5: "'text' is empty",
    6: "audio file not found",
    7: "not a readable audio file",
    8: "manifest says sample_rate 16000 but",
    9: "duplicate id 'a' (first on line 1)",
    10: "NaN or inf",
    11: "manifest says duration 2.500 s",
    13: "duration must be positive",
    14: "must be a JSON object",
}


@pytest.mark.fault
def test_reports_every_bad_line(manifest):
    errors = validate_manifest(manifest, progress=False)
    assert [e.line for e in errors] == sorted(EXPECTED)
    for e in errors:
        assert e.path == str(manifest)
        assert EXPECTED[e.line] in e.reason, (e.line, e.reason)
        assert str(e).startswith(f"{manifest}:{e.line}: ")


def test_without_audio_checks_fields_and_files_only(manifest):
    lines = [e.line for e in validate_manifest(manifest, check_audio=False, progress=False)]
    assert lines == [2, 3, 4, 5, 6, 9, 13, 14]


def test_good_manifest_and_missing_manifest(tmp_path):
    write_wav(tmp_path / "ok.wav", speechlike(0.5, 16000, seed=3), 16000)
    good = write_manifest(tmp_path / "good.jsonl", [record("a", "ok.wav", 0.5), record("b", "ok.wav", 0.5)])
    assert validate_manifest(good, progress=False) == []
    missing = validate_manifest(tmp_path / "nope.jsonl", progress=False)
    assert len(missing) == 1 and "manifest not found" in str(missing[0])
