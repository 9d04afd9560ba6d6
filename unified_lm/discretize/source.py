"""Waveforms of audio-manifest lines, with errors that name the manifest line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE, read_audio, resample, speed_perturb
from ..corpus.manifest import AudioRecord, iter_audio_manifest
from ..errors import DataError

logger = logging.getLogger("unified_lm.discretize")


def load_record_audio(rec: AudioRecord, manifest: Path, line: int) -> torch.Tensor:
    """The utterance at 16 kHz; a bad file or a wrong ``sample_rate`` field is a DataError
    on the manifest line."""
    path = rec.audio_path(manifest)
    try:
        wav, sr = read_audio(path, rec.segment)
    except DataError as e:
        raise DataError(manifest, f"utterance {rec.id!r}: {e}", line) from None
    if rec.sample_rate is not None and rec.sample_rate != sr:
        raise DataError(
            manifest, f"utterance {rec.id!r}: manifest says sample_rate {rec.sample_rate} but {path} is {sr} Hz", line
        )
    if sr < SAMPLE_RATE and manifest not in _warned_upsampled:
        _warned_upsampled.add(manifest)
        logger.warning(
            "%s: %s is %d Hz, upsampled to %d Hz; units of upsampled audio differ from those of native "
            "%d kHz recordings (further files of this manifest are not reported)",
            manifest, path, sr, SAMPLE_RATE, SAMPLE_RATE // 1000,
        )
    return speed_perturb(resample(wav, sr, SAMPLE_RATE), rec.speed or 1.0)


_warned_upsampled: set[Path] = set()


def count_lines(manifest: Path) -> int:
    """Non-blank lines: a progress-bar total, cheap next to decoding the audio."""
    with open(manifest, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def iter_waveforms(
    manifest: str | Path, progress: bool = True, desc: str = "audio", skip_bad: bool = False
) -> Iterator[tuple[int, AudioRecord, torch.Tensor]]:
    """Yields ``(line, record, wav_16k)``; raises on the first bad line, or with ``skip_bad``
    logs it and goes on (and raises only if no line was usable)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    total = count_lines(manifest)
    if not total:
        raise DataError(manifest, "the manifest is empty")
    used = 0
    for line, rec in tqdm(iter_audio_manifest(manifest), total=total, desc=desc, unit="utt", disable=not progress):
        try:
            if isinstance(rec, DataError):
                raise rec
            wav = load_record_audio(rec, manifest, line)
        except DataError as e:
            if not skip_bad:
                raise
            logger.warning("skipped: %s", e)
            continue
        used += 1
        yield line, rec, wav
    if not used:
        raise DataError(manifest, "no usable utterance: every line was skipped")
