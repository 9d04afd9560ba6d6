"""Audio and unit manifests: JSONL, one utterance a line (lhotse-style: open and read them).

Audio manifest fields: id, audio (path relative to the manifest), text, speaker, duration
(seconds), optional sample_rate, optional subset, optional offset (seconds into the audio
file where the utterance starts, for segments of longer recordings; ``duration`` is then
the segment's).
Unit manifest fields: id, text, speaker, units (list of ints), optional durations,
tokenizer {name, hash}, optional subset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import DataError
from ..io import all_or_first_error, iter_jsonl

if TYPE_CHECKING:
    import torch

AUDIO_FIELDS = ("id", "audio", "text", "speaker", "duration")


@dataclass
class AudioRecord:
    id: str
    audio: str
    text: str
    speaker: str
    duration: float
    sample_rate: int | None = None
    subset: str | None = None
    offset: float | None = None
    # Played this many times faster when read (speed perturbation without copies of the
    # audio); ``duration`` stays that of the audio as stored.
    speed: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def audio_path(self, manifest: str | Path) -> Path:
        p = Path(self.audio)
        return p if p.is_absolute() else Path(manifest).parent / p

    @property
    def segment(self) -> tuple[float, float] | None:
        """``(offset, duration)`` when the utterance is a stretch of its file, else None."""
        return None if self.offset is None else (self.offset, self.duration)

    def load(self, manifest: str | Path, sample_rate: int = 16000) -> "torch.Tensor":
        """The utterance as a mono waveform at ``sample_rate``: its segment, at its speed."""
        from ..audio import load_audio, speed_perturb

        return speed_perturb(load_audio(self.audio_path(manifest), sample_rate, self.segment), self.speed or 1.0, sample_rate)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        d.update(self.extra)
        return d


@dataclass
class UnitRecord:
    id: str
    text: str
    speaker: str
    units: list[int]
    tokenizer: dict[str, str]
    durations: list[int] | None = None
    subset: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_audio_record(obj: dict[str, Any], path: Path, line: int) -> AudioRecord:
    """Checks one manifest line's fields; raises DataError naming the line."""
    missing = [k for k in AUDIO_FIELDS if k not in obj]
    if missing:
        raise DataError(path, f"missing field(s) {missing}", line)
    if not isinstance(obj["id"], str) or not obj["id"]:
        raise DataError(path, "field 'id' must be a non-empty string", line)
    if not isinstance(obj["text"], str) or not obj["text"].strip():
        raise DataError(path, f"utterance {obj['id']!r}: field 'text' is empty", line)
    if not isinstance(obj["audio"], str) or not obj["audio"]:
        raise DataError(path, f"utterance {obj['id']!r}: field 'audio' must be a path", line)
    try:
        duration = float(obj["duration"])
    except (TypeError, ValueError):
        raise DataError(path, f"utterance {obj['id']!r}: 'duration' is not a number", line) from None
    sr = obj.get("sample_rate")
    if sr is not None and (not isinstance(sr, int) or sr <= 0):
        raise DataError(path, f"utterance {obj['id']!r}: 'sample_rate' must be a positive int", line)
    offset = obj.get("offset")
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, (int, float)) or offset < 0):
        raise DataError(path, f"utterance {obj['id']!r}: 'offset' must be a number of seconds >= 0", line)
    speed = obj.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0):
        raise DataError(path, f"utterance {obj['id']!r}: 'speed' must be a positive number (a speed factor)", line)
    known = set(AUDIO_FIELDS) | {"sample_rate", "subset", "offset", "speed"}
    return AudioRecord(
        id=obj["id"],
        audio=obj["audio"],
        text=obj["text"],
        speaker=str(obj["speaker"]),
        duration=duration,
        sample_rate=sr,
        subset=obj.get("subset"),
        offset=None if offset is None else float(offset),
        speed=None if speed is None else float(speed),
        extra={k: v for k, v in obj.items() if k not in known},
    )


def iter_audio_manifest(path: str | Path) -> Iterator[tuple[int, AudioRecord | DataError]]:
    """Yields (line, record or DataError) so callers decide whether to stop or skip."""
    path = Path(path)
    for line, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            yield line, obj
            continue
        try:
            yield line, parse_audio_record(obj, path, line)
        except DataError as e:
            yield line, e


def read_audio_manifest(path: str | Path) -> list[AudioRecord]:
    return all_or_first_error(iter_audio_manifest(path))


def iter_unit_manifest(path: str | Path) -> Iterator[UnitRecord]:
    """The manifest's records one at a time (a large manifest is never held as JSON objects);
    raises DataError naming the first bad line."""
    path = Path(path)
    for line, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            raise obj
        missing = [k for k in ("id", "text", "units", "tokenizer") if k not in obj]
        if missing:
            raise DataError(path, f"missing field(s) {missing}", line)
        units = obj["units"]
        if not isinstance(units, list) or not all(isinstance(u, int) for u in units):
            raise DataError(path, "field 'units' must be a list of ints", line)
        yield UnitRecord(
            id=obj["id"],
            text=obj["text"],
            speaker=str(obj.get("speaker", "")),
            units=units,
            tokenizer=obj["tokenizer"],
            durations=obj.get("durations"),
            subset=obj.get("subset"),
        )


def read_unit_manifest(path: str | Path) -> list[UnitRecord]:
    return list(iter_unit_manifest(path))
