"""Audio-manifest validation that reports every bad line, not just the first.

Checks, per line: UTF-8, JSON, required fields present and non-empty, a positive duration,
ids unique across the manifest, the audio file present; and with ``check_audio`` the audio
decodes (not empty, truncated or corrupt, no NaN/inf samples), its rate matches the line's
``sample_rate`` field, and its length matches ``duration``.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..audio import read_audio
from ..errors import DataError
from .manifest import AudioRecord, iter_audio_manifest

# Manifests round durations; anything further off than this is a truncated or wrong file.
DURATION_TOLERANCE_S = 0.1


def validate_manifest(path: str | Path, check_audio: bool = True, progress: bool = True) -> list[DataError]:
    """Every problem found in the manifest at ``path``, each naming the line and the reason.

    An empty list means the manifest is usable. Without ``check_audio`` the audio files
    are only checked to exist, not opened.
    """
    path = Path(path)
    if not path.is_file():
        return [DataError(path, "manifest not found")]
    errors: list[DataError] = []
    first_line: dict[str, int] = {}
    for line, rec in tqdm(iter_audio_manifest(path), desc=f"validate {path.name}", unit="utt", disable=not progress):
        if isinstance(rec, DataError):
            errors.append(rec)
            continue
        if rec.id in first_line:
            errors.append(DataError(path, f"duplicate id {rec.id!r} (first on line {first_line[rec.id]})", line))
            continue
        first_line[rec.id] = line
        reason = _check_record(rec, path, check_audio)
        if reason:
            errors.append(DataError(path, f"utterance {rec.id!r}: {reason}", line))
    return errors


def _check_record(rec: AudioRecord, manifest: Path, check_audio: bool) -> str | None:
    if rec.duration <= 0:
        return f"duration must be positive, got {rec.duration}"
    audio = rec.audio_path(manifest)
    if not audio.is_file():
        return f"audio file not found: {audio}"
    if not check_audio:
        return None
    try:
        wav, sr = read_audio(audio, rec.segment)
    except DataError as e:
        return str(e)
    if rec.sample_rate is not None and rec.sample_rate != sr:
        return f"manifest says sample_rate {rec.sample_rate} but {audio} is {sr} Hz"
    actual = wav.numel() / sr
    if abs(actual - rec.duration) > DURATION_TOLERANCE_S:
        return f"manifest says duration {rec.duration:.3f} s but {audio} lasts {actual:.3f} s"
    return None
