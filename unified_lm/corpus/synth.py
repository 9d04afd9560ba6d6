"""The synthetic multi-voice spoken corpus (``unified-lm corpus synth``).

No speech data can be downloaded, so the toolkit renders its own paired corpus: English
sentences (built-in grammar or a user's text file) spoken by the system TTS voices of
:mod:`unified_lm.corpus.voices`, each utterance at its own speaking rate and pitch.

Layout of ``out_dir``::

    wavs/<id>.wav                  16 kHz mono 16-bit PCM
    wavs/<id>.prompt.wav, .cont.wav  (continuation=True) the two halves of the sentence
    train.jsonl dev.jsonl test.jsonl audio manifests (AudioRecord lines)
    corpus.json                    summary: voices, counts, hours, distinct words, seed
    plan.json                      fingerprint of what this directory is being built to hold

Splits are by sentence: 90% / 5% / 5% of the sentences go to train / dev / test, spoken
by the training voices, so no dev or test sentence is ever heard in training. One voice
is held out of train and dev entirely: it re-speaks every test sentence, and those test
lines carry ``subset: "heldout_voice"`` (the others ``"seen_voice"``), so the two test
subsets compare the same sentences from a seen and an unseen speaker.

Everything is a function of the seed: the sentences, the split, the voice, rate and
pitch of every utterance. The engines are deterministic, so audio and manifests are
byte-identical from run to run. Rendering is resumable: each WAV appears atomically, and
a rerun renders only the utterances whose WAV is missing or invalid.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import soundfile as sf
from tqdm import tqdm

from ..errors import ConfigError
from ..io import atomic_write_text, sha256_json, write_jsonl
from .manifest import AudioRecord
from .sentences import generate_sentences, read_sentences, split_for_continuation, words
from .voices import (
    DEFAULT_HELDOUT_VOICE,
    SAMPLE_RATE,
    RenderJob,
    Voice,
    available_voices,
    get_voice,
    is_valid_wav,
    render,
)

DEV_FRACTION = 0.05
TEST_FRACTION = 0.05
RATE_RANGE = (0.85, 1.20)  # speaking-rate factors drawn per utterance
PITCH_RANGE = (0.88, 1.12)  # pitch factors drawn per utterance
# Renders handed to a worker at once: large enough to amortise festival's start-up,
# small enough to keep both the progress bar and the work balanced.
CHUNK_SIZE = 16


@dataclass(frozen=True)
class PlannedUtterance:
    id: str
    text: str
    voice: str
    rate: float
    pitch: float
    split: str  # train | dev | test
    subset: str | None  # test only: seen_voice | heldout_voice

    def wav(self, part: str = "") -> str:
        """Path relative to the corpus root; ``part`` is '', 'prompt' or 'cont'."""
        return f"wavs/{self.id}{'.' + part if part else ''}.wav"


def _split_sizes(n: int) -> dict[str, int]:
    if n < 3:
        raise ConfigError(f"a corpus needs at least 3 sentences (one each for train, dev, test); got {n}")
    n_dev = max(1, round(n * DEV_FRACTION))
    n_test = max(1, round(n * TEST_FRACTION))
    return {"train": n - n_dev - n_test, "dev": n_dev, "test": n_test}


def plan_corpus(
    sentences: Sequence[str], voices: Sequence[Voice], heldout_voice: str, seed: int
) -> list[PlannedUtterance]:
    """Assigns every sentence a split, a voice, a rate and a pitch, deterministically.

    Voices are dealt round-robin within each split, then shuffled, so every training voice
    speaks about the same amount in every split.
    """
    rng = random.Random(seed)
    order = list(sentences)
    rng.shuffle(order)
    seen_voices = [v.name for v in voices if v.name != heldout_voice]
    if not seen_voices:
        raise ConfigError("holding out the only voice leaves no voice for training")

    def draw(text: str, uid: str, voice: str, split: str, subset: str | None) -> PlannedUtterance:
        rate = round(rng.uniform(*RATE_RANGE), 2)
        pitch = round(rng.uniform(*PITCH_RANGE), 2)
        return PlannedUtterance(uid, text, voice, rate, pitch, split, subset)

    plan: list[PlannedUtterance] = []
    start = 0
    for split, size in _split_sizes(len(order)).items():
        texts = order[start : start + size]
        start += size
        speakers = [seen_voices[i % len(seen_voices)] for i in range(size)]
        rng.shuffle(speakers)
        subset = "seen_voice" if split == "test" else None
        plan += [draw(t, f"{split}-{i:05d}", v, split, subset) for i, (t, v) in enumerate(zip(texts, speakers))]
        if split == "test":
            plan += [
                draw(t, f"test-heldout-{i:05d}", heldout_voice, split, "heldout_voice") for i, t in enumerate(texts)
            ]
    return plan


def _render_jobs(plan: Sequence[PlannedUtterance], out_dir: Path, continuation: bool) -> list[tuple[str, RenderJob]]:
    """(voice name, job) for every WAV the corpus holds, in plan order."""
    jobs = []
    for utt in plan:
        parts = [("", utt.text)]
        if continuation and (halves := split_for_continuation(utt.text)):
            parts += list(zip(("prompt", "cont"), halves))
        jobs += [
            (utt.voice, RenderJob(text, utt.rate, utt.pitch, out_dir / utt.wav(part))) for part, text in parts
        ]
    return jobs


def _chunks(jobs: Sequence[tuple[str, RenderJob]]) -> list[tuple[str, list[RenderJob]]]:
    """Groups jobs by voice into CHUNK_SIZE batches, voices interleaved so that the slow
    voices (festival) are spread over the whole run rather than bunched at its end."""
    by_voice: dict[str, list[RenderJob]] = defaultdict(list)
    for voice, job in jobs:
        by_voice[voice].append(job)
    per_voice = [
        [(voice, batch[i : i + CHUNK_SIZE]) for i in range(0, len(batch), CHUNK_SIZE)]
        for voice, batch in by_voice.items()
    ]
    return [chunk for row in itertools.zip_longest(*per_voice) for chunk in row if chunk is not None]


def _render_chunk(voice_name: str, jobs: list[RenderJob]) -> int:
    render(get_voice(voice_name), jobs)
    return len(jobs)


def _render_all(chunks: list[tuple[str, list[RenderJob]]], jobs: int, progress: bool) -> None:
    total = sum(len(batch) for _, batch in chunks)
    with tqdm(total=total, unit="wav", desc="synthesizing", disable=not progress) as bar:
        if jobs == 1:
            for voice, batch in chunks:
                bar.update(_render_chunk(voice, batch))
            return
        # Spawned, not forked: a fork after torch has started its threads can deadlock the workers.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_render_chunk, voice, batch) for voice, batch in chunks]
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                # Drop the queued batches rather than finish them before failing (or
                # before honouring Ctrl-C); finished WAVs stay and a rerun resumes.
                pool.shutdown(cancel_futures=True)
                raise


def _check_plan(out_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuses to resume into a directory that was being built from a different plan:
    its WAVs would look valid but hold other sentences or voices."""
    path = out_dir / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("plan_sha256") != fingerprint["plan_sha256"]:
            raise ConfigError(
                f"{out_dir} holds a corpus built from another plan (seed {old.get('seed')}, "
                f"{old.get('sentences')} sentences from {old.get('text_source')}); "
                "use an empty output directory or delete this one"
            )
    atomic_write_text(path, json.dumps(fingerprint, indent=2) + "\n")


def _record(utt: PlannedUtterance, out_dir: Path, continuation: bool) -> AudioRecord:
    info = sf.info(str(out_dir / utt.wav()))
    extra: dict[str, Any] = {"rate": utt.rate, "pitch": utt.pitch}
    if continuation and (halves := split_for_continuation(utt.text)):
        extra.update(
            prompt_audio=utt.wav("prompt"), prompt_text=halves[0], cont_audio=utt.wav("cont"), cont_text=halves[1]
        )
    return AudioRecord(
        id=utt.id,
        audio=utt.wav(),
        text=utt.text,
        speaker=utt.voice,
        duration=round(info.frames / info.samplerate, 4),
        sample_rate=info.samplerate,
        subset=utt.subset,
        extra=extra,
    )


def _summary(records: dict[str, list[AudioRecord]], voices: Sequence[Voice], heldout: str, seed: int,
             text_source: str, continuation: bool) -> dict[str, Any]:
    every = [r for split in records.values() for r in split]
    per_voice = Counter(r.speaker for r in every)
    splits = {}
    for split, recs in records.items():
        splits[split] = {
            "utterances": len(recs),
            "hours": round(sum(r.duration for r in recs) / 3600, 4),
            "speakers": len({r.speaker for r in recs}),
        }
        if split == "test":
            splits[split].update(Counter(r.subset for r in recs))
    return {
        "seed": seed,
        "text_source": text_source,
        "sentences": len({r.text for r in every}),
        "distinct_words": len({w for text in {r.text for r in every} for w in words(text)}),
        "utterances": len(every),
        "hours": round(sum(r.duration for r in every) / 3600, 4),
        "sample_rate": SAMPLE_RATE,
        "splits": splits,
        "heldout_voice": heldout,
        "voices": {v.name: {**v.to_json(), "utterances": per_voice[v.name]} for v in voices},
        "rate_range": list(RATE_RANGE),
        "pitch_range": list(PITCH_RANGE),
        "continuation": continuation,
        "continuation_pairs": sum("prompt_audio" in r.extra for r in every),
    }


def synthesize(
    out_dir: str | Path,
    num_utts: int = 3000,
    seed: int = 0,
    text_file: str | Path | None = None,
    jobs: int | None = None,
    continuation: bool = False,
    heldout_voice: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Renders the synthetic spoken corpus into ``out_dir`` (see the module docstring).

    Args:
        num_utts: sentences to speak; they are split 90/5/5 into train/dev/test, and the
            held-out voice re-speaks the test ones, adding that many utterances. With
            ``text_file``, the first ``num_utts`` distinct lines of the file (all of them
            if it has fewer).
        seed: fixes the sentences, split, voices, rates and pitches.
        text_file: UTF-8 text, one sentence a line, instead of the built-in generator.
        jobs: worker processes (default: all CPUs).
        continuation: also render each sentence's two halves, for speech continuation.
        heldout_voice: the voice kept out of train and dev (default: DEFAULT_HELDOUT_VOICE).

    Returns the corpus summary written to ``corpus.json`` plus a ``build`` entry with this
    run's WAVs rendered and reused and its wall time (kept out of corpus.json so the file
    is the same for every build of the same corpus).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    heldout = get_voice(heldout_voice or DEFAULT_HELDOUT_VOICE).name
    if text_file is None:
        sentences, text_source = generate_sentences(num_utts, seed), "builtin"
    else:
        sentences, text_source = read_sentences(text_file)[:num_utts], str(text_file)
    voices = available_voices()
    plan = plan_corpus(sentences, voices, heldout, seed)
    _check_plan(out_dir, {
        "plan_sha256": sha256_json([asdict(u) for u in plan]),
        "seed": seed,
        "sentences": len(sentences),
        "text_source": text_source,
    })

    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for stale in wav_dir.glob(".*.tmp"):  # left by a killed worker mid-write
        stale.unlink()
    all_jobs = _render_jobs(plan, out_dir, continuation)
    todo = [(voice, job) for voice, job in all_jobs if not is_valid_wav(job.path)]
    _render_all(_chunks(todo), jobs or os.cpu_count() or 1, progress)

    records: dict[str, list[AudioRecord]] = {"train": [], "dev": [], "test": []}
    for utt in plan:
        records[utt.split].append(_record(utt, out_dir, continuation))
    for split, recs in records.items():
        write_jsonl(out_dir / f"{split}.jsonl", (r.to_json() for r in recs))
    summary = _summary(records, voices, heldout, seed, text_source, continuation)
    atomic_write_text(out_dir / "corpus.json", json.dumps(summary, indent=2) + "\n")
    build = {
        "out_dir": str(out_dir),
        "rendered": len(todo),
        "reused": len(all_jobs) - len(todo),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return {**summary, "build": build}
