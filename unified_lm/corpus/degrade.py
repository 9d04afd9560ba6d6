"""The degraded test condition: reverberation through a synthetic room, then additive noise.

    cfg = DegradeConfig(snr_db=10.0, rt60=0.4)
    degrade_manifest("data/test.jsonl", "runs/degraded", cfg)   # -> runs/degraded/test.jsonl

The room impulse response follows Polack's statistical model: a unit direct-path impulse,
then white Gaussian noise under an exponential envelope that falls by 60 dB in ``rt60``
seconds, scaled so the direct-to-reverberant energy ratio is ``drr_db``. Reverberation is
applied first and noise second, the order a room and then a microphone apply them, so the
SNR is that of the noise against the reverberant speech (``torchaudio.functional.add_noise``).

Every random draw of an utterance comes from a generator seeded by ``(seed, utterance id)``
(first the impulse response, then the noise), so an utterance is degraded identically
whatever the manifest order, and a rerun rewrites byte-identical audio.

``transform_manifest`` is the manifest-to-manifest writer underneath: any waveform
transform (speed perturbation too) applied to every utterance, each WAV written
atomically and kept by a rerun, the manifest written last.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm import tqdm

from ..audio.load import SAMPLE_RATE
from ..errors import ConfigError, DataError
from ..io import atomic_open, atomic_write_text, write_jsonl
from ..registry import Registry
from .manifest import AudioRecord, iter_audio_manifest

# 60 dB of energy decay: the envelope exp(-DECAY * t / rt60) has fallen by 10^-3 in amplitude.
DECAY = 3.0 * math.log(10.0)
PEAK = 0.99  # degraded audio is scaled down below this peak rather than clipped

NoiseFn = Callable[[int, torch.Generator], torch.Tensor]
NOISES: Registry[NoiseFn] = Registry("noise type")


@NOISES.register("white")
def white_noise(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(num_samples, generator=generator)


@NOISES.register("pink")
def pink_noise(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """1/f power spectrum: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spectrum = torch.fft.rfft(torch.randn(num_samples, generator=generator))
    freqs = torch.arange(spectrum.numel(), dtype=torch.float32)
    freqs[0] = freqs[1] if freqs.numel() > 1 else 1.0  # no infinite DC gain
    return torch.fft.irfft(spectrum / freqs.sqrt(), n=num_samples)


@dataclass
class DegradeConfig:
    snr_db: float = 10.0  # noise against the (reverberant) speech
    rt60: float = 0.4  # seconds for the reverberation to decay by 60 dB; 0 disables reverberation
    drr_db: float = 0.0  # direct-to-reverberant energy ratio of the impulse response
    noise: str = "white"  # a NOISES name: white | pink
    seed: int = 0

    def check(self) -> None:
        NOISES.get(self.noise)
        if not math.isfinite(self.snr_db):
            raise ConfigError(f"degraded.snr_db must be finite, got {self.snr_db}")
        if not (math.isfinite(self.rt60) and self.rt60 >= 0):
            raise ConfigError(f"degraded.rt60 must be >= 0 seconds, got {self.rt60}")
        if not math.isfinite(self.drr_db):
            raise ConfigError(f"degraded.drr_db must be finite, got {self.drr_db}")


def utterance_generator(seed: int, utt_id: str) -> torch.Generator:
    """A generator that depends only on ``(seed, utt_id)`` (str seeding of random.Random is stable)."""
    return torch.Generator().manual_seed(random.Random(f"{seed}/{utt_id}").getrandbits(63))


def room_impulse_response(
    rt60: float, drr_db: float, sample_rate: int, generator: torch.Generator
) -> torch.Tensor:
    """``[1 + rt60 * sample_rate]`` samples: the direct impulse (1.0), then the decaying tail."""
    n = max(1, round(rt60 * sample_rate))
    t = torch.arange(1, n + 1, dtype=torch.float32) / sample_rate
    tail = torch.randn(n, generator=generator) * torch.exp(-DECAY * t / rt60)
    # Direct energy is 1, so the tail's energy is 10^(-DRR/10).
    tail = tail * math.sqrt(10.0 ** (-drr_db / 10.0) / tail.square().sum().item())
    return torch.cat([torch.ones(1), tail])


def rms(wav: torch.Tensor) -> float:
    return wav.square().mean().sqrt().item()


def reverberate(wav: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """``wav`` through ``rir``, cut to its own length and brought back to its own RMS."""
    out = AF.fftconvolve(wav, rir)[: wav.numel()]
    level = rms(out)
    return out * (rms(wav) / level) if level > 0 else out


def add_noise_at_snr(wav: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``wav + g * noise`` with ``g`` set so that 10 log10(P(wav) / P(g * noise)) = ``snr_db``."""
    snr = torch.tensor([snr_db], dtype=wav.dtype)
    return AF.add_noise(wav.reshape(1, -1), noise.reshape(1, -1).to(wav.dtype), snr).reshape(-1)


def degrade(wav: torch.Tensor, cfg: DegradeConfig, generator: torch.Generator, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Reverberation (if ``rt60 > 0``), then noise at ``snr_db``, then a peak limit by scaling."""
    if cfg.rt60 > 0:
        wav = reverberate(wav, room_impulse_response(cfg.rt60, cfg.drr_db, sample_rate, generator))
    wav = add_noise_at_snr(wav, NOISES.get(cfg.noise)(wav.numel(), generator), cfg.snr_db)
    # A uniform gain keeps the SNR; clipping would add distortion the condition does not name.
    peak = wav.abs().max().item()
    return wav * (PEAK / peak) if peak > PEAK else wav


def transform_manifest(
    manifest: str | Path,
    out_manifest: str | Path,
    transform: Callable[[AudioRecord, torch.Tensor], torch.Tensor],
    *,
    id_suffix: str = "",
    subset: str | None = None,
    desc: str = "audio",
    progress: bool = True,
) -> dict[str, Any]:
    """Writes ``transform(record, wav_16k)`` of every utterance of ``manifest`` to
    ``<out dir>/wavs/<id><id_suffix>.wav`` (16 kHz, 16-bit) and the audio manifest
    ``out_manifest`` listing them.

    Records keep their fields; ``id`` gets ``id_suffix``, ``duration`` is re-measured, and
    ``subset`` (when given) replaces the original one, which is kept as ``source_subset``.
    A WAV that exists is kept (each is written atomically), so an interrupted run resumes.
    Returns ``{manifest, utterances, written, reused}``.
    """
    manifest, out_manifest = Path(manifest), Path(out_manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    wav_dir = out_manifest.parent / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    records, written = [], 0
    for line, rec in tqdm(list(iter_audio_manifest(manifest)), desc=desc, unit="utt", disable=not progress):
        if isinstance(rec, DataError):
            raise rec
        new_id = rec.id + id_suffix
        path = wav_dir / f"{new_id}.wav"
        if path.is_file():
            num_samples = sf.info(str(path)).frames
        else:
            try:
                wav = rec.load(manifest)
            except DataError as e:
                raise DataError(manifest, f"utterance {rec.id!r}: {e}", line) from None
            out = transform(rec, wav)
            with atomic_open(path, "wb") as f:
                sf.write(f, out.numpy(), SAMPLE_RATE, format="WAV", subtype="PCM_16")
            num_samples, written = out.numel(), written + 1
        extra = dict(rec.extra)
        if subset is not None and rec.subset is not None:
            extra["source_subset"] = rec.subset
        records.append(
            AudioRecord(
                id=new_id,
                audio=f"wavs/{path.name}",
                text=rec.text,
                speaker=rec.speaker,
                duration=round(num_samples / SAMPLE_RATE, 4),
                sample_rate=SAMPLE_RATE,
                subset=subset if subset is not None else rec.subset,
                extra=extra,
            ).to_json()
        )
    write_jsonl(out_manifest, records)
    return {"manifest": str(out_manifest), "utterances": len(records), "written": written, "reused": len(records) - written}


def degrade_manifest(
    manifest: str | Path, out_dir: str | Path, cfg: DegradeConfig, subset: str = "degraded", progress: bool = True
) -> dict[str, Any]:
    """A degraded copy of an audio manifest: ``out_dir/<manifest name>`` with ``subset``
    set on every line, WAVs under ``out_dir/wavs/`` and the settings in ``out_dir/degrade.json``.
    Ids are kept, so each degraded utterance pairs with its clean original."""
    cfg.check()
    manifest, out_dir = Path(manifest), Path(out_dir)
    settings = out_dir / "degrade.json"
    wanted = {"source": str(manifest), **asdict(cfg)}
    if settings.is_file() and json.loads(settings.read_text()) != wanted:
        raise ConfigError(f"{out_dir}: holds audio degraded with other settings ({settings}); choose another directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(settings, json.dumps(wanted, indent=2) + "\n")

    def apply(rec: AudioRecord, wav: torch.Tensor) -> torch.Tensor:
        return degrade(wav, cfg, utterance_generator(cfg.seed, rec.id))

    summary = transform_manifest(
        manifest, out_dir / manifest.name, apply, subset=subset, desc=f"degrade {manifest.name}", progress=progress
    )
    return {**summary, "settings": wanted}
