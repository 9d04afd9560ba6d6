"""Turning an audio manifest into a unit manifest: resumable, shardable, byte-deterministic.

Work in progress goes to ``<target>.partial``, one ``<manifest line>\\t<json>`` row per
utterance, flushed and fsynced every few rows. A rerun after any interruption (even
``kill -9``) drops a torn last row, skips the lines already done and carries on. When
every line is done the rows are written, in manifest order, to the target in one atomic
rename, so a finished output is always whole and a failed run leaves none.

With ``shard=I, nshards=N`` only manifest lines ``i`` (0-based) with ``i % N == I`` are
processed, and the target is the shard file ``OUT.shard-I-of-N``, which keeps the line
numbers; ``merge_shards`` interleaves the shards back into ``OUT`` by line number, giving
exactly the bytes of an unsharded run.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE
from ..corpus.manifest import AudioRecord, UnitRecord, iter_audio_manifest
from ..errors import ConfigError, DataError
from ..io import atomic_open, check_output_path, dump_json_line, read_jsonl, write_jsonl
from .base import BATCH_SECONDS, single_threaded
from .dump import FeatureDump, open_dump
from .source import count_lines, load_record_audio
from .tokenizer import SpeechTokenizer, load_tokenizer

FLUSH_EVERY = 32  # rows between fsyncs: at most this much work is redone after a crash


class _Outcome(NamedTuple):
    line: int
    id: str | None  # None when the line was too broken to have one
    row: str | None  # the unit-manifest JSON line, or None if the line was rejected
    error: DataError | None


@dataclass
class _Totals:
    new: int = 0
    units: int = 0
    audio_seconds: float = 0.0


def shard_path(out: str | Path, shard: int, nshards: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.shard-{shard}-of-{nshards}")


def rejects_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f"{target.name}.rejects.jsonl")


def partial_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f"{target.name}.partial")


def apply_tokenizer(
    tokdir: str | Path,
    manifest: str | Path,
    out: str | Path,
    shard: int | None = None,
    nshards: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    device: str | None = None,
    features: str | Path | None = None,
) -> dict:
    """Discretizes every utterance of ``manifest`` into the unit manifest ``out`` (model
    features on ``device``: default, the tokenizer's own; see ``load_tokenizer``), or reads
    its features from ``features``, a ``discretize dump`` of the tokenizer's features on
    this manifest.

    Interrupted runs resume from ``<target>.partial``; a finished output is rebuilt from
    scratch by a rerun (atomically replaced), so it never goes stale against its manifest.
    Without ``skip_bad`` the first bad line raises a DataError naming the line and the
    reason, and no output is written (the partial file stays, so a rerun resumes). With
    it, bad lines are listed in ``<target>.rejects.jsonl`` (line, id, reason) and the run
    fails only if no line at all could be discretized. Returns a summary.
    """
    manifest, out = Path(manifest), Path(out)
    sharded = shard is not None or nshards is not None
    if sharded and (shard is None or nshards is None or nshards < 1 or not 0 <= shard < nshards):
        raise ConfigError(f"need 0 <= shard < nshards, got shard={shard} nshards={nshards}")
    shard, nshards = (shard, nshards) if sharded else (0, 1)
    target = shard_path(out, shard, nshards) if sharded else out
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    check_output_path(target, manifest)
    tok = load_tokenizer(tokdir, device)
    dump = None if features is None else open_dump(features, tok.recipe, manifest)
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    totals = _Totals()
    rejects: list[dict] = []
    with open(partial, "a", encoding="utf-8") as f, single_threaded():
        _lock(f, target)
        done = _recover_partial(partial, tok.meta.identity)
        for outcome in _discretize(tok, manifest, shard, nshards, done, totals, progress, dump):
            if outcome.error is not None:
                if not skip_bad:
                    raise outcome.error
                rejects.append({"line": outcome.line, "id": outcome.id, "reason": outcome.error.reason})
                continue
            f.write(f"{outcome.line}\t{outcome.row}")
            if totals.new % FLUSH_EVERY == 0:
                _sync(f)
        _sync(f)

    kept = len(done) + totals.new
    rejected_to = _write_rejects(target, rejects)
    if kept == 0 and (rejects or not sharded):
        partial.unlink()
        if rejects:
            raise DataError(manifest, f"no utterance could be discretized ({len(rejects)} rejected, see {rejected_to})")
        raise DataError(manifest, "no utterances")
    rows = sorted(_iter_rows(partial))  # a resumed run may have filled in earlier rejects
    with atomic_open(target) as f:
        for line, row in rows:
            f.write(f"{line}\t{row}" if sharded else row)
    partial.unlink()
    seconds = time.perf_counter() - start
    return {
        "out": str(target),
            "tokenizer": tok.meta.identity,
        "utterances": kept,
        "resumed": len(done),
        "rejected": len(rejects),
        "rejects": str(rejected_to) if rejected_to else None,
        "units": totals.units,
        "audio_seconds": round(totals.audio_seconds, 3),
        "seconds": round(seconds, 3),
        "x_realtime": round(totals.audio_seconds / seconds, 1) if seconds > 0 else None,
    }


def merge_shards(out: str | Path, nshards: int) -> Path:
    """Interleaves ``OUT.shard-I-of-N`` (I = 0..N-1) into ``OUT`` in manifest order, and their
    rejects into ``OUT.rejects.jsonl``; the shard files are removed once ``OUT`` is written."""
    out = Path(out)
    shards = [shard_path(out, i, nshards) for i in range(nshards)]
    missing = [s for s in shards if not s.is_file()]
    if len(missing) == nshards and out.is_file():
        return out  # merged by an earlier call
    if missing:
        shard = shards.index(missing[0])
        raise DataError(missing[0], f"shard missing: run apply with --shard {shard} --nshards {nshards} first")
    identities = {json.dumps(i, sort_keys=True) for s in shards if (i := _first_identity(s))}
    if len(identities) > 1:
        raise DataError(out, f"shards were made by different tokenizers: {sorted(identities)}")
    with atomic_open(out) as f:
        for _, row in heapq.merge(*(_iter_rows(s) for s in shards), key=lambda r: r[0]):
            f.write(row)
    shard_rejects = [rejects_path(s) for s in shards if rejects_path(s).is_file()]
    rejects = sorted((r for p in shard_rejects for r in read_jsonl(p)), key=lambda r: r["line"])
    _write_rejects(out, rejects)
    for path in shards + shard_rejects:
        path.unlink()
    return out


def _discretize(
    tok: SpeechTokenizer,
    manifest: Path,
    shard: int,
    nshards: int,
    done: dict[int, str],
    totals: _Totals,
    progress: bool,
    dump: FeatureDump | None = None,
) -> Iterator[_Outcome]:
    """One outcome per line of the shard not already done, in manifest order. Consecutive
    utterances are encoded together, up to ``BATCH_SECONDS`` of audio."""
    total = -(-count_lines(manifest) // nshards)
    bar = tqdm(total=total, desc=f"discretize {manifest.name}", unit="utt", disable=not progress)
    pending: list[_Pending] = []

    def flush() -> Iterator[_Outcome]:
        yield from _encode_pending(tok, manifest, pending, totals, dump is not None)
        pending.clear()

    with bar:
        for line, rec in iter_audio_manifest(manifest):
            if (line - 1) % nshards != shard:
                continue
            bar.update()
            if isinstance(rec, DataError):
                if line not in done:
                    yield from flush()
                    yield _Outcome(line, _readable_id(manifest, line), None, rec)
                continue
            if line in done:
                if rec.id != done[line]:
                    raise DataError(
                        manifest,
                        f"line holds {rec.id!r} but the interrupted run's output has {done[line]!r} there: "
                        "the manifest changed; delete the .partial output to start over",
                        line,
                    )
                continue
            try:
                pending.append(_load(rec, manifest, line, dump))
            except DataError as e:
                yield from flush()
                yield _Outcome(line, rec.id, None, e)
                continue
            if sum(p.seconds for p in pending) >= BATCH_SECONDS:
                yield from flush()
        yield from flush()


class _Pending(NamedTuple):
    line: int
    rec: AudioRecord
    x: torch.Tensor  # the 16 kHz waveform, or its dumped features
    seconds: float


def _load(rec: AudioRecord, manifest: Path, line: int, dump: FeatureDump | None) -> _Pending:
    if dump is None:
        wav = load_record_audio(rec, manifest, line)
        return _Pending(line, rec, wav, wav.numel() / SAMPLE_RATE)
    if line not in dump:
        raise DataError(manifest, f"utterance {rec.id!r} is not in the feature dump {dump.dir} (its audio failed there)", line)
    return _Pending(line, rec, dump.features(line), dump.seconds(line))


def _encode_pending(
    tok: SpeechTokenizer, manifest: Path, pending: list[_Pending], totals: _Totals, dumped: bool
) -> Iterator[_Outcome]:
    if not pending:
        return
    try:
        if dumped:
            encoded: list = [tok.postprocess(tok.assign(p.x)) for p in pending]
        else:
            encoded = tok.encode_batch([p.x for p in pending])
    except DataError:  # find the utterance it was, and keep the others
        encoded = []
        for p in pending:
            try:
                encoded.append(tok.postprocess(tok.assign(p.x)) if dumped else tok.encode(p.x))
            except DataError as e:
                encoded.append(e)
    for (line, rec, _, seconds), result in zip(pending, encoded):
        if isinstance(result, DataError):
            yield _Outcome(line, rec.id, None, result)
            continue
        units, durations = result
        if not units:
            reason = f"utterance {rec.id!r}: too short to discretize ({seconds:.3f} s)"
            yield _Outcome(line, rec.id, None, DataError(manifest, reason, line))
            continue
        record = UnitRecord(
            id=rec.id, text=rec.text, speaker=rec.speaker, units=units, tokenizer=tok.meta.identity,
            durations=durations, subset=rec.subset,
        ).to_json()
        # Extra manifest fields travel along (after the contract's own fields).
        record.update((k, v) for k, v in rec.extra.items() if k not in record)
        totals.new += 1
        totals.units += len(units)
        totals.audio_seconds += seconds
        yield _Outcome(line, rec.id, dump_json_line(record), None)


def _readable_id(manifest: Path, line: int) -> str | None:
    """The ``id`` of a manifest line that failed to parse as a record, if it has a readable one."""
    with open(manifest, "rb") as f:
        raw = next(itertools.islice(f, line - 1, None), b"")
    with contextlib.suppress(ValueError, AttributeError):
        uid = json.loads(raw).get("id")
        return uid if isinstance(uid, str) else None
    return None


def _lock(f, target: Path) -> None:
    """Holds ``f`` (the partial file) for this run alone: two runs writing one output would
    interleave their rows. Released when ``f`` is closed, or when the process dies."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"{target}: another `discretize apply` is writing this output; wait for it to finish") from None


def _recover_partial(partial: Path, identity: dict[str, str]) -> dict[int, str]:
    """``{line: id}`` of the complete rows of an interrupted run; a torn last row is cut off."""
    if not partial.is_file():
        return {}
    with open(partial, "rb") as f:
        data_end = f.seek(0, os.SEEK_END)
        f.seek(0)
        complete = 0
        for raw in f:
            if raw.endswith(b"\n"):
                complete += len(raw)
    if complete < data_end:
        with open(partial, "r+b") as f:
            f.truncate(complete)
    done: dict[int, str] = {}
    for line, row in _iter_rows(partial):
        try:
            rec = json.loads(row)
        except json.JSONDecodeError:
            raise DataError(partial, f"corrupt row for manifest line {line}; delete the file to start over") from None
        if rec.get("tokenizer") != identity:
            raise ConfigError(
                f"{partial}: partial output of another tokenizer ({rec.get('tokenizer')}); delete it to start over"
            )
        done[line] = rec["id"]
    return done


def _iter_rows(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            prefix, sep, row = text.partition("\t")
            if not sep or not prefix.isdigit():
                raise DataError(path, "not a row of a partial or shard output; delete the file to start over", n)
            yield int(prefix), row


def _write_rejects(target: Path, rejects: list[dict]) -> Path | None:
    path = rejects_path(target)
    if rejects:
        write_jsonl(path, rejects)
        return path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # stale, from an earlier run whose bad lines are now fixed
    return None


def _first_identity(shard: Path) -> dict | None:
    """The tokenizer identity on the first row of a shard (None if it is empty)."""
    with open(shard, encoding="utf-8") as f:
        first = f.readline()
    return json.loads(first.partition("\t")[2]).get("tokenizer") if first else None



def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())
