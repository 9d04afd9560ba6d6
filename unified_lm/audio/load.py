"""Reading audio files into checked mono float32 waveforms.

Decoding goes through ``soundfile`` (libsndfile). fairseq2's ``AudioDecoder`` wraps the
same libsndfile, but it reports every failure as "cannot be decoded, see nested
exception" and exposes no header, while ``soundfile`` gives libsndfile's own reason
("Malformed 'fmt ' chunk") and its header log, which is how a truncated WAV (a header
that promises more data than the file holds) is told apart from a short one; the same
header read lets validation check sample rates without decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from ..errors import ConfigError, DataError

SAMPLE_RATE = 16000  # the toolkit's canonical rate: every discretizer consumes 16 kHz

Segment = tuple[float, float]  # (offset, duration) in seconds: a stretch of a longer recording
SEGMENT_SLACK_S = 0.02

# Below 4 kHz nothing speech-like is left to resample; above 384 kHz the header is
# corrupt rather than the recording exotic.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000

# libsndfile's header log prints "data : 32000 (should be 9956)" when a WAV's data chunk
# declares more bytes than the file holds.
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Writers that stream to a pipe cannot know the length and leave 0 or a huge placeholder.
_STREAMING_SIZE = 0x7FFFF000


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    channels: int
    format: str

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Reads only the header; raises DataError for missing, unreadable or truncated files."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a directory, not an audio file")
    if not path.is_file():
        raise DataError(path, "audio file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "audio file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except RuntimeError as e:  # soundfile.LibsndfileError
        raise DataError(path, f"not a readable audio file ({_sf_reason(e)})") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise DataError(
            path, f"invalid sample rate {info.samplerate} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})"
        )
    if info.format == "WAV" and (short := _WAV_SHORT_DATA.search(info.extra_info)):
        declared, actual = int(short.group(1)), int(short.group(2))
        if actual < declared and 0 < declared < _STREAMING_SIZE:
            raise DataError(path, f"truncated WAV: header declares {declared} data bytes, file holds {actual}")
    return AudioInfo(info.samplerate, info.frames, info.channels, info.format)


def read_audio(path: str | Path, segment: Segment | None = None) -> tuple[torch.Tensor, int]:
    """Decodes a file at its own rate: ``(waveform [samples] float32 mono, sample_rate)``;
    with ``segment`` = (offset, duration) in seconds, only that stretch (a Kaldi segment, a
    lhotse supervision), read without decoding the rest.

    Channels are averaged. Raises DataError naming the file for anything a model should
    never see: a missing, empty, corrupt or truncated file, zero samples, NaN or inf, a
    segment past the file's end.
    """
    path = Path(path)
    info = audio_info(path)
    start, frames = _segment_frames(path, info, segment)
    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except RuntimeError as e:  # soundfile.LibsndfileError
        raise DataError(path, f"audio data cannot be decoded ({_sf_reason(e)})") from None
    if data.shape[0] == 0:
        raise DataError(path, "audio has zero samples")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise DataError(path, f"{bad} of {data.size} samples are NaN or inf")
    wav = torch.from_numpy(data.mean(axis=1) if info.channels > 1 else data[:, 0])
    return wav.contiguous(), sr


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, segment: Segment | None = None) -> torch.Tensor:
    """A file (or its ``segment``) as a 1-D float32 mono waveform at ``sample_rate``."""
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"target sample rate must be a positive int, got {sample_rate!r}")
    wav, sr = read_audio(path, segment)
    return resample(wav, sr, sample_rate)


def _segment_frames(path: Path, info: AudioInfo, segment: Segment | None) -> tuple[int, int]:
    """``(start, frames)`` for soundfile: the whole file (frames -1) or the segment's samples."""
    if segment is None:
        return 0, -1
    offset, duration = segment
    start, frames = round(offset * info.sample_rate), round(duration * info.sample_rate)
    # A segment may end up to the rounding of its times past the last sample (Kaldi writes
    # two decimals); any further is a wrong segment, not a short file.
    if offset < 0 or duration <= 0 or start + frames > info.num_frames + round(SEGMENT_SLACK_S * info.sample_rate):
        raise DataError(
            path, f"segment {offset:.3f}+{duration:.3f} s lies outside the file (it lasts {info.duration:.3f} s)"
        )
    return start, min(frames, info.num_frames - start)


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, orig_rate, new_rate)


def _sf_reason(e: Exception) -> str:
    # libsndfile prefixes its message with "Error opening '<path>': "; the path is already
    # in our error, so keep only the reason.
    msg = str(e)
    return msg.split("': ", 1)[1] if "': " in msg else msg
