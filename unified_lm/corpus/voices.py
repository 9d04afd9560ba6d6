"""Synthetic speakers: the system TTS engines and the voices the synthetic corpus uses.

A :class:`Voice` is one speaker id: an engine plus the arguments that pick its voice
(espeak-ng accents and variants, flite's built-in voices, festival's diphone and HTS
voices). Each utterance gets its own speaking rate and pitch; every engine takes the
rate natively, and pitch natively where it can. Voices that ignore pitch controls
(flite's rms, festival's voices) are pitch-shifted afterwards by resampling, which also
shifts formants (like a smaller or larger speaker), and they are asked for a
compensating rate so the final duration still matches the requested rate.

Engines write whatever rate they like (8, 16, 22.05, 32 kHz); sox converts it to the
corpus format (16 kHz mono 16-bit PCM) without dither, so a render is bit-exact across
runs. Only voices checked to render distinct audio on the reference machine (Debian
espeak-ng 1.51, flite 2.2, festival 2.5 with festvox-kallpc16k and festvox-us-slt-hts)
are listed; ``en-gb+<variant>`` is absent because espeak-ng silently drops the variant
there (``en+<variant>`` is the British voice that takes one), and the mbrola voices
need a binary Debian does not ship with espeak-ng.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import soundfile as sf

from ..errors import ConfigError, UnifiedLMError
from ..registry import Registry

SAMPLE_RATE = 16_000
SOX = ("sox", "sox")  # (binary, Debian package)


class SynthesisError(UnifiedLMError):
    """A TTS engine is missing or failed to render an utterance."""


@dataclass(frozen=True)
class Voice:
    name: str  # the speaker id in manifests
    engine: str  # a key of ENGINES
    args: tuple[str, ...]  # engine-specific voice selection
    native_pitch: bool = True  # False: the engine ignores pitch, shift it by resampling

    def to_json(self) -> dict:
        return {"engine": self.engine, "args": list(self.args)}


@dataclass(frozen=True)
class RenderJob:
    text: str
    rate: float  # speaking-rate factor: 1.2 is 20% faster than the voice's default
    pitch: float  # pitch factor: 1.1 is 10% higher
    path: Path


class Engine(Protocol):
    binary: str
    package: str

    @staticmethod
    def synthesize(voice: Voice, jobs: Sequence[RenderJob], workdir: Path) -> None:
        """Writes each job's text to ``job.path`` as a WAV at the engine's own rate."""


ENGINES: Registry[type[Engine]] = Registry("TTS engine")


def _run(cmd: list[str], voice: Voice, stdin: str | None = None) -> None:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise SynthesisError(f"voice {voice.name}: program {cmd[0]!r} not found on PATH") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-500:]
        raise SynthesisError(f"voice {voice.name}: {cmd[0]} exited with {proc.returncode}: {detail}")


@ENGINES.register("espeak-ng")
class ESpeakNG:
    binary = "espeak-ng"
    package = "espeak-ng"
    DEFAULT_WPM = 175
    DEFAULT_PITCH = 50  # espeak's 0..99 scale; one step is about 1% of f0 around 50

    @staticmethod
    def synthesize(voice: Voice, jobs: Sequence[RenderJob], workdir: Path) -> None:
        for job in jobs:
            wpm = round(ESpeakNG.DEFAULT_WPM * job.rate)
            pitch = min(99, max(0, round(ESpeakNG.DEFAULT_PITCH * job.pitch)))
            # Text goes through stdin so that a sentence starting with '-' is not an option.
            cmd = ["espeak-ng", *voice.args, "-s", str(wpm), "-p", str(pitch), "-w", str(job.path), "--stdin"]
            _run(cmd, voice, stdin=job.text)


@ENGINES.register("flite")
class Flite:
    binary = "flite"
    package = "flite"

    @staticmethod
    def synthesize(voice: Voice, jobs: Sequence[RenderJob], workdir: Path) -> None:
        for i, job in enumerate(jobs):
            text_file = workdir / f"flite-{i}.txt"
            text_file.write_text(job.text + "\n", encoding="utf-8")
            cmd = ["flite", *voice.args, "--setf", f"duration_stretch={1.0 / job.rate:.4f}"]
            if voice.native_pitch:
                cmd += ["--setf", f"f0_shift={job.pitch:.4f}"]
            _run(cmd + ["-f", str(text_file), "-o", str(job.path)], voice)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@ENGINES.register("festival")
class Festival:
    binary = "festival"
    package = "festival"
    # Diphone voices read Duration_Stretch; HTS voices ignore it and take the HTS
    # engine's "-r" speed option instead. Setting both serves either kind of voice.
    SAY = """
(defvar hts_engine_params nil)
(set! unified_lm::hts_params hts_engine_params)
(define (unified_lm::say text rate path)
  (Parameter.set 'Duration_Stretch (/ 1.0 rate))
  (set! hts_engine_params (cons (list "-r" rate) unified_lm::hts_params))
  (utt.save.wave (SynthText text) path 'riff))
"""

    @staticmethod
    def synthesize(voice: Voice, jobs: Sequence[RenderJob], workdir: Path) -> None:
        # One festival process renders the whole batch: its start-up (~0.3 s, loading
        # the voice) costs more than synthesising a sentence.
        lines = [f"({fn})" for fn in voice.args] + [Festival.SAY]
        lines += [
            f"(unified_lm::say {_scheme_string(j.text)} {j.rate:.4f} {_scheme_string(str(j.path))})" for j in jobs
        ]
        script = workdir / "festival.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        _run(["festival", "--batch", str(script)], voice)


VOICES: tuple[Voice, ...] = (
    Voice("espeak-en-us-m3", "espeak-ng", ("-v", "en-us+m3")),
    Voice("espeak-en-us-f2", "espeak-ng", ("-v", "en-us+f2")),
    Voice("espeak-en-us-nyc-m1", "espeak-ng", ("-v", "en-us-nyc+m1")),
    Voice("espeak-en-us-klatt2", "espeak-ng", ("-v", "en-us+klatt2")),
    Voice("espeak-en-gb-m7", "espeak-ng", ("-v", "en+m7")),
    Voice("espeak-en-gb-f3", "espeak-ng", ("-v", "en+f3")),
    Voice("espeak-en-gb-scotland-m2", "espeak-ng", ("-v", "en-gb-scotland+m2")),
    Voice("espeak-en-gb-x-rp-f4", "espeak-ng", ("-v", "en-gb-x-rp+f4")),
    Voice("espeak-en-gb-x-gbclan-m4", "espeak-ng", ("-v", "en-gb-x-gbclan+m4")),
    Voice("espeak-en-gb-x-gbcwmd-klatt", "espeak-ng", ("-v", "en-gb-x-gbcwmd+klatt")),
    Voice("espeak-en-029-f5", "espeak-ng", ("-v", "en-029+f5")),
    # kal16 is flite's 16 kHz build of the kal diphone voice (plain "kal" is 8 kHz).
    Voice("flite-kal", "flite", ("-voice", "kal16")),
    Voice("flite-awb", "flite", ("-voice", "awb")),
    Voice("flite-rms", "flite", ("-voice", "rms"), native_pitch=False),
    Voice("flite-slt", "flite", ("-voice", "slt")),
    Voice("festival-kal", "festival", ("voice_kal_diphone",), native_pitch=False),
    Voice("festival-slt-hts", "festival", ("voice_cmu_us_slt_arctic_hts",), native_pitch=False),
)

# Unseen in training by default: a natural-sounding speaker from an engine that train
# still covers with other voices, so "held-out voice" tests speaker, not engine, transfer.
DEFAULT_HELDOUT_VOICE = "flite-awb"


def get_voice(name: str) -> Voice:
    for voice in VOICES:
        if voice.name == name:
            return voice
    raise ConfigError(f"unknown voice {name!r}; known: {', '.join(v.name for v in VOICES)}")


def is_valid_wav(path: Path) -> bool:
    """True for a readable, non-empty corpus-format WAV (what a finished render leaves)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):  # soundfile raises LibsndfileError, a RuntimeError
        return False
    return (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16") and info.frames > 0


def _convert(src: Path, dst: Path, speed: float, voice: Voice) -> None:
    """Engine output -> 16 kHz mono 16-bit WAV at ``dst``, written atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    # -D: no dither, so that the output is bit-exact from run to run.
    cmd = ["sox", "-D", "-V1", str(src), "-t", "wav", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
           "-e", "signed-integer", str(tmp)]
    if speed != 1.0:
        cmd += ["speed", f"{speed:.4f}"]
    try:
        _run(cmd, voice)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def render(voice: Voice, jobs: Sequence[RenderJob]) -> None:
    """Renders each job to ``job.path`` as a corpus-format WAV (16 kHz mono 16-bit).

    The batch shares one engine call where the engine allows it (festival). Each output
    appears atomically, so an interrupted batch leaves only complete files behind.
    """
    engine = ENGINES.get(voice.engine)
    with tempfile.TemporaryDirectory(prefix="unified-lm-tts-") as tmp:
        workdir = Path(tmp)
        # Post-hoc pitch shifting speeds the audio up by `pitch`; ask the engine for a
        # rate that much slower so the final rate is still the one requested.
        speeds = [1.0 if voice.native_pitch else job.pitch for job in jobs]
        native = [
            RenderJob(job.text, job.rate / speed, job.pitch if voice.native_pitch else 1.0, workdir / f"{i}.wav")
            for i, (job, speed) in enumerate(zip(jobs, speeds))
        ]
        engine.synthesize(voice, native, workdir)
        for src, job, speed in zip(native, jobs, speeds):
            if not src.path.is_file():
                raise SynthesisError(f"voice {voice.name}: {voice.engine} wrote no audio for {job.text!r}")
            job.path.parent.mkdir(parents=True, exist_ok=True)
            _convert(src.path, job.path, speed, voice)


def check_engines(voices: Sequence[Voice] = VOICES) -> None:
    """Raises SynthesisError naming every missing program and the package that has it."""
    needed = {ENGINES.get(v.engine).binary: ENGINES.get(v.engine).package for v in voices}
    needed[SOX[0]] = SOX[1]
    missing = [f"{binary} (Debian/Ubuntu package {package})" for binary, package in needed.items()
               if shutil.which(binary) is None]
    if missing:
        raise SynthesisError(f"TTS programs not found on PATH: {', '.join(missing)}")


@functools.cache
def _verified_voices() -> tuple[Voice, ...]:
    check_engines()
    with tempfile.TemporaryDirectory(prefix="unified-lm-probe-") as tmp:
        for voice in VOICES:
            path = Path(tmp) / f"{voice.name}.wav"
            render(voice, [RenderJob("Hello there.", 1.0, 1.0, path)])
            if not is_valid_wav(path):
                raise SynthesisError(f"voice {voice.name}: the test render is not a valid 16 kHz WAV")
    return VOICES


def available_voices() -> list[Voice]:
    """The registered voices, after checking once per process that each one renders here.

    Raises SynthesisError (naming the program and its package, or the voice and the
    engine's message) rather than silently using fewer voices: the corpus a seed gives
    must be the same on every machine.
    """
    return list(_verified_voices())
