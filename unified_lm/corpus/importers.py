"""Real corpora into the toolkit's audio manifests: one JSONL per split, nothing else changes.

    unified-lm corpus import librispeech /data/LibriSpeech --out data/librispeech
    unified-lm corpus import kaldi data/train --out data/swbd            # a Kaldi data dir
    unified-lm corpus import lhotse data/manifests --out data/mine       # lhotse's own manifests
    unified-lm corpus import hf /data/my_dataset --out data/mine         # a local HF dataset

lhotse reads the corpus layouts (its recipes are kept against the real corpora, and its
Kaldi reader knows segments, utt2spk and reco2dur); this module only maps its recordings
and supervisions to manifest lines. Utterances that are a stretch of a longer recording
(Kaldi ``segments``) keep ``offset``: the audio is read in place, never copied. A local
Hugging Face dataset (a hub snapshot's parquet files, or a ``save_to_disk`` folder) is read
with pyarrow; its embedded audio bytes are written out once, as the files they were.

Every manifest's ``subset`` is its split's name (``test-clean``, ``test-other``), so a test
manifest assembled from several splits is reported per split.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ConfigError, DataError
from ..io import atomic_open, write_jsonl
from ..registry import Registry
from .manifest import AudioRecord

logger = logging.getLogger("unified_lm.corpus")

SEGMENT_TOLERANCE_S = 0.01  # a supervision this close to its recording's length is the whole file


@dataclass(frozen=True)
class ImportOptions:
    parts: tuple[str, ...] = ()  # splits to import; empty: every one found
    lowercase: bool = False  # LibriSpeech's transcripts are upper case; GPT-2's BPE prefers lower
    sample_rate: int = 16000  # Kaldi data dirs do not record it
    jobs: int = 1


Split = tuple[str, list[AudioRecord]]  # (split name, its utterances, audio paths absolute)
IMPORTERS: Registry[Callable[[Path, Path, ImportOptions], Iterator[Split]]] = Registry("corpus format")


def import_corpus(fmt: str, source: str | Path, out_dir: str | Path, opts: ImportOptions = ImportOptions()) -> dict[str, int]:
    """Writes ``out_dir/<split>.jsonl`` for every split of ``source``; returns utterances per split."""
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise DataError(source, "not found")
    importer = IMPORTERS.get(fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, records in importer(source, out_dir, opts):
        if opts.parts and split not in opts.parts:
            continue
        if not records:
            raise DataError(source, f"split {split!r} has no utterance with a transcript")
        rows = [_manifest_row(r, split, out_dir, opts.lowercase) for r in records]
        write_jsonl(out_dir / f"{split}.jsonl", rows)
        counts[split] = len(rows)
    missing = sorted(set(opts.parts) - set(counts))
    if missing or not counts:
        raise DataError(source, f"no split named {missing} found" if missing else f"no {fmt} data found")
    return counts


def _manifest_row(rec: AudioRecord, split: str, out_dir: Path, lowercase: bool) -> dict[str, Any]:
    rec.audio = os.path.relpath(Path(rec.audio).resolve(), out_dir.resolve())
    rec.subset = split
    if lowercase:
        rec.text = rec.text.lower()
    return rec.to_json()


# ---- through lhotse ----------------------------------------------------------------------


def _lhotse():
    try:
        import lhotse
    except ImportError:
        raise ConfigError(
            "corpus import needs lhotse: pip install 'unified-lm[corpora]' (or pip install lhotse)"
        ) from None
    return lhotse


def records_from_lhotse(recordings, supervisions, source: Path) -> list[AudioRecord]:
    """Manifest records of lhotse supervisions (the utterances) over their recordings."""
    out, skipped = [], 0
    for sup in supervisions:
        text = (sup.text or "").strip()
        if not text:
            skipped += 1
            continue
        rec = recordings[sup.recording_id]
        if len(rec.sources) != 1 or rec.sources[0].type != "file":
            kind = "+".join(s.type for s in rec.sources)
            raise DataError(
                source, f"recording {rec.id!r} is a {kind!r} source; manifests point at audio files, so "
                "write it to a file first (e.g. a Kaldi wav.scp pipe through sox)"
            )
        whole = sup.start <= 0 and sup.duration >= rec.duration - SEGMENT_TOLERANCE_S
        out.append(
            AudioRecord(
                id=sup.id,
                audio=str(Path(rec.sources[0].source).resolve()),
                text=text,
                speaker=sup.speaker or rec.id,
                duration=round(rec.duration if whole else sup.duration, 4),
                sample_rate=rec.sampling_rate,
                offset=None if whole else round(sup.start, 4),
            )
        )
    if skipped:
        logger.warning("%s: %d utterance(s) without a transcript skipped", source, skipped)
    return out


@IMPORTERS.register("librispeech")
def import_librispeech(source: Path, out_dir: Path, opts: ImportOptions) -> Iterator[Split]:
    """A LibriSpeech tree (``<part>/<speaker>/<chapter>/*.trans.txt`` and FLACs); the same
    layout serves its relatives (LibriTTS's ``*.normalized.txt`` aside)."""
    _lhotse()
    from lhotse.recipes import prepare_librispeech

    missing = [p for p in opts.parts if not (source / p).is_dir()]
    if missing:  # lhotse would stop on a bare assertion
        raise DataError(source, f"no split named {missing} found")
    parts = list(opts.parts) if opts.parts else "auto"
    found = prepare_librispeech(source, dataset_parts=parts, num_jobs=opts.jobs)
    for part in sorted(found):
        m = found[part]
        yield part, records_from_lhotse(m["recordings"], m["supervisions"], source / part)


@IMPORTERS.register("kaldi")
def import_kaldi(source: Path, out_dir: Path, opts: ImportOptions) -> Iterator[Split]:
    """A Kaldi data directory (wav.scp, text, optional segments / utt2spk / reco2dur); the
    split is the directory's name."""
    _lhotse()
    from lhotse.kaldi import load_kaldi_data_dir

    for name in ("wav.scp", "text"):
        if not (source / name).is_file():
            raise DataError(source / name, "a Kaldi data directory needs this file")
    _check_wav_scp(source / "wav.scp")
    recordings, supervisions, _ = load_kaldi_data_dir(source, sampling_rate=opts.sample_rate, num_jobs=opts.jobs)
    yield source.name, records_from_lhotse(recordings, supervisions, source)


def _check_wav_scp(path: Path) -> None:
    """Manifests point at audio files: a pipe or an ark offset is refused up front, by line."""
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = raw.split(maxsplit=1)
        if len(fields) == 2 and (fields[1].rstrip().endswith("|") or re.search(r"\.ark:\d+$", fields[1].strip())):
            raise DataError(
                path, f"recording {fields[0]!r} is a command or an ark offset, not a file; write the audio "
                "out first (e.g. with sox, or Kaldi's wav-copy) and point wav.scp at the files", line
            )


_LHOTSE_NAME = re.compile(r"^(?:(?P<prefix>.+)_)?(?P<kind>recordings|supervisions|cuts)_(?P<split>[^.]+)\.jsonl(?:\.gz)?$")


@IMPORTERS.register("lhotse")
def import_lhotse(source: Path, out_dir: Path, opts: ImportOptions) -> Iterator[Split]:
    """lhotse manifests: a folder as ``lhotse prepare`` writes it (``*_recordings_<split>``
    with ``*_supervisions_<split>``, or ``*_cuts_<split>``), or one cuts file."""
    lhotse = _lhotse()
    files = [source] if source.is_file() else sorted(source.iterdir())
    by_split: dict[str, dict[str, Path]] = {}
    for f in files:
        if m := _LHOTSE_NAME.match(f.name):
            by_split.setdefault(m["split"], {})[m["kind"]] = f
        elif source.is_file():
            by_split.setdefault(f.name.split(".")[0], {})["cuts"] = f
    for split, kinds in sorted(by_split.items()):
        if "recordings" in kinds and "supervisions" in kinds:
            recordings, supervisions = (lhotse.load_manifest(kinds[k]) for k in ("recordings", "supervisions"))
        elif "cuts" in kinds:
            recordings, supervisions, _ = lhotse.load_manifest(kinds["cuts"]).decompose()
        else:
            raise DataError(next(iter(kinds.values())), f"split {split!r}: recordings and supervisions go together")
        yield split, records_from_lhotse(recordings, supervisions, kinds.get("cuts", source))


# ---- Hugging Face datasets, through pyarrow ----------------------------------------------

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id")
ID_COLUMNS = ("id", "utt_id", "audio_id", "segment_id")
_PARQUET_SHARD = re.compile(r"^(?P<split>[\w.]+?)-\d{5}-of-\d{5}\.parquet$")
_UNSAFE = re.compile(r"[^\w.-]")  # characters an id may not bring into a file name
_MAGIC = {b"RIFF": "wav", b"fLaC": "flac", b"OggS": "ogg", b"ID3": "mp3"}


@IMPORTERS.register("hf")
def import_hf(source: Path, out_dir: Path, opts: ImportOptions) -> Iterator[Split]:
    """A local Hugging Face audio dataset: the parquet files of a hub snapshot
    (``data/<split>-00000-of-00003.parquet`` or ``<split>/*.parquet``) or a
    ``save_to_disk`` folder (``<split>/data-*.arrow``). Embedded audio bytes are written
    to ``out_dir/audio/<split>/`` as the files they were (kept on a rerun); audio given as
    a path is used in place."""
    for split, tables in sorted(_hf_splits(source).items()):
        if not opts.parts or split in opts.parts:
            yield split, [r for t in tables for r in _hf_records(split, t, source, out_dir)]


def _hf_splits(source: Path) -> dict[str, list[Path]]:
    splits: dict[str, list[Path]] = {}
    for f in sorted(source.rglob("*.parquet")):
        m = _PARQUET_SHARD.match(f.name)
        splits.setdefault(m["split"] if m else f.parent.name, []).append(f)
    for f in sorted(source.rglob("data-*.arrow")):
        splits.setdefault(f.parent.name if f.parent != source else "train", []).append(f)
    if not splits:
        raise DataError(source, "no parquet or save_to_disk (data-*.arrow) files found")
    return splits


def _batches(path: Path) -> Iterator:
    """The table's record batches, read a few hundred rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=256)
        else:
            with pa.memory_map(str(path)) as f:
                yield from pa.ipc.open_stream(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(path, f"not a readable {path.suffix[1:]} table ({e})") from None


def _hf_records(split: str, table: Path, source: Path, out_dir: Path) -> Iterator[AudioRecord]:
    from ..audio import audio_info

    row_index, cols = 0, None
    for batch in _batches(table):
        cols = cols or _hf_columns(batch.schema, table)
        for row in batch.to_pylist():
            row_index += 1
            text = str(row[cols["text"]] or "").strip()
            if not text:
                continue
            uid = str(row[cols["id"]]) if cols["id"] else f"{split}-{table.stem}-{row_index - 1:07d}"
            audio = _hf_audio(row[cols["audio"]], uid, out_dir / "audio" / split, source, table)
            yield AudioRecord(
                id=uid,
                audio=str(audio),
                text=text,
                speaker=str(row[cols["speaker"]]) if cols["speaker"] else "unknown",
                duration=round(audio_info(audio).duration, 4),
            )


def _hf_columns(schema, table: Path) -> dict[str, str | None]:
    import pyarrow as pa

    names = schema.names
    audio = [n for n in names if pa.types.is_struct(t := schema.field(n).type) and {"bytes", "path"} <= {f.name for f in t}]
    text = [n for n in TEXT_COLUMNS if n in names]
    if not audio or not text:
        what = "audio column (a struct of bytes and path)" if not audio else f"transcript column (one of {list(TEXT_COLUMNS)})"
        raise DataError(table, f"no {what} among the columns {names}")
    speaker, uid = (next((n for n in candidates if n in names), None) for candidates in (SPEAKER_COLUMNS, ID_COLUMNS))
    return {"audio": audio[0], "text": text[0], "speaker": speaker, "id": uid}


def _hf_audio(cell: dict[str, Any], uid: str, audio_dir: Path, source: Path, table: Path) -> Path:
    data, name = cell.get("bytes"), cell.get("path")
    if data:
        ext = Path(name).suffix.lstrip(".") if name and Path(name).suffix else _sniff(data, table, uid)
        path = audio_dir / f"{_UNSAFE.sub('_', uid)}.{ext}"
        if not path.is_file():  # written once: a rerun keeps what it finds
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as f:
                f.write(data)
        return path
    if not name:
        raise DataError(table, f"utterance {uid!r}: its audio has neither bytes nor a path")
    path = Path(name) if Path(name).is_absolute() else source / name
    if not path.is_file():
        raise DataError(table, f"utterance {uid!r}: audio file not found: {path}")
    return path


def _sniff(data: bytes, table: Path, uid: str) -> str:
    for magic, ext in _MAGIC.items():
        if data.startswith(magic):
            return ext
    raise DataError(table, f"utterance {uid!r}: embedded audio of unknown format (first bytes {data[:4]!r})")
