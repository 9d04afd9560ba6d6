"""A classic recognizer on the same audio: CMU PocketSphinx 5 with the US-English acoustic
and language models that ship inside its wheel (nothing trained on our data, nothing
downloaded). Every WER table in the docs carries its row, so a reader can tell a model
that transcribes from one that does not.

    pip install -e '.[peer]'
    unified-lm bench peer --manifest data/synth/test.jsonl --out runs/peer/test.hyp.jsonl

Writes one row an utterance (``id, ref, hyp, subset, errors, ...``, as ``unified-lm
decode`` does) and ``*.scores.json`` beside it; hypotheses are scored with the toolkit's
own normalisation (``unified_lm.scoring``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

from ..corpus.manifest import AudioRecord, read_audio_manifest
from ..errors import ConfigError
from ..io import atomic_write_text, check_output_path, write_jsonl
from ..scoring import asr_rows


def peer_available() -> bool:
    return importlib.util.find_spec("pocketsphinx") is not None


def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise ConfigError("bench peer needs PocketSphinx: pip install -e '.[peer]' (or pip install pocketsphinx)") from None
    return Decoder(samprate=16000, loglevel="FATAL")


def _transcribe_chunk(manifest: str | Path, records: Sequence[AudioRecord]) -> list[str]:
    decoder, hyps = _decoder(), []
    for rec in records:
        pcm = (rec.load(manifest).clamp(-1, 1) * 32767).round().short().numpy().tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        hyps.append(hyp.hypstr if hyp is not None else "")
    return hyps


def transcribe_peer(records: Sequence[AudioRecord], manifest: str | Path, jobs: int = 1) -> list[str]:
    """PocketSphinx's transcript of each record's audio, in order, over ``jobs`` processes."""
    _decoder()  # fail here, with the install hint, rather than in a worker
    chunks = [records[i::jobs] for i in range(jobs)]
    # Spawned, not forked: a fork after torch has started its threads can deadlock the workers.
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(functools.partial(_transcribe_chunk, manifest), chunks))
    hyps = [""] * len(records)
    for i, part in enumerate(parts):
        hyps[i::jobs] = part
    return hyps


def run_peer(manifest: str | Path, out: str | Path, jobs: int = 1) -> dict[str, Any]:
    """Transcribes ``manifest`` with PocketSphinx, writes rows to ``out`` and scores beside it."""
    from ..decode import scores_path

    if jobs < 1:
        raise ConfigError(f"bench peer: --jobs must be >= 1, got {jobs}")
    check_output_path(out, manifest)
    records = read_audio_manifest(manifest)
    start = time.perf_counter()
    rows, scores = asr_rows(records, transcribe_peer(records, manifest, jobs))
    scores = {"recognizer": "pocketsphinx", "manifest": str(manifest), **scores,
              "seconds": round(time.perf_counter() - start, 3)}
    write_jsonl(out, rows)
    atomic_write_text(scores_path(out), json.dumps(scores, indent=2) + "\n")
    return scores
