"""Feature dumps: frame features computed once, then read by ``discretize fit`` and ``apply``.

fairseq's HuBERT recipe dumps a layer's features once (sharded, one GPU per shard) and both
its k-means fit and its label dump read them; ``dump_features`` is that step. A dump is a
directory::

    features.json              what was computed: the feature spec, its identity (spec and
                               the model files' hashes), dim, frame rate, the manifest's hash
    shard-I-of-N.f32           the shard's frames: float32 rows of ``dim``, utterance after utterance
    shard-I-of-N.index.jsonl   one row per utterance: manifest line, id, samples, frames

Frames are kept exactly (float32), so units from a dump equal units from the audio. A shard
is written to ``.partial`` files; a rerun after an interruption cuts a torn tail and goes on.
The index is renamed into place last: it marks the shard complete.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE
from ..corpus.manifest import iter_audio_manifest
from ..errors import ConfigError, DataError
from ..io import atomic_write_text, sha256_file, sha256_json
from .base import BATCH_SECONDS, extract_batch, run_on, single_threaded
from .extractors import build_features, model_files
from .source import count_lines, load_record_audio
from .tokenizer_recipe import TokenizerRecipe, absolute_model_paths, load_recipe

logger = logging.getLogger("unified_lm.discretize")

INFO_FILE = "features.json"
FLUSH_EVERY = 32  # utterances between fsyncs: at most this much work is redone after a crash
# Not part of what the features are: where they were computed and where the model lies
# (its files' bytes are hashed instead).
_PLACE_KEYS = ("device", "model_path")


def feature_identity(spec: dict[str, Any]) -> str:
    """The hash of what a feature spec computes: its options and its model's file contents."""
    files = model_files(Path(spec["model_path"])) if spec.get("model_path") else {}
    options = {k: v for k, v in spec.items() if k not in _PLACE_KEYS}
    return sha256_json({"features": options, "files": {n: sha256_file(p) for n, p in files.items()}})


def dump_features(
    recipe: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    shard: int = 0,
    nshards: int = 1,
    device: str | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict:
    """Computes the recipe's frame features for every line of ``manifest`` with
    ``line % nshards == shard`` (0-based) into ``out_dir``; returns a summary."""
    if not 0 <= shard < nshards:
        raise ConfigError(f"need 0 <= shard < nshards, got shard={shard} nshards={nshards}")
    rec = load_recipe(recipe, overrides)
    _only_kmeans(rec, recipe)
    manifest, out_dir = Path(manifest), Path(out_dir)
    if not manifest.is_file():
        raise DataError(manifest, "manifest not found")
    absolute_model_paths(rec)
    run_on(rec, device)
    spec = rec.kmeans.features
    extractor = build_features(spec)
    info = {
        "features": {k: v for k, v in spec.items() if k != "device"},
        "identity": feature_identity(spec),
        "dim": extractor.dim,
        "frame_rate": extractor.frame_rate,
        "manifest": str(manifest.resolve()),
        "manifest_sha256": sha256_file(manifest),
        "nshards": nshards,
    }
    _claim(out_dir, info)
    data, index = _shard_files(out_dir, shard, nshards)
    if index.is_file():
        logger.info("%s: shard %d of %d is already dumped", out_dir, shard, nshards)
        return {"out": str(out_dir), "shard": shard, "utterances": len(_read_index(index)), "new": 0}
    data_p, index_p = _partial(data), _partial(index)
    new = 0
    with open(index_p, "a", encoding="utf-8") as fi, single_threaded():
        try:  # before anything is cut back: another dump of this shard may be writing
            fcntl.flock(fi.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out_dir}: another dump is writing shard {shard} of {nshards}") from None
        done = _recover(data_p, index_p, extractor.dim)
        with open(data_p, "ab") as fd:
            for batch in _audio_batches(manifest, shard, nshards, done, skip_bad, progress):
                for (line, uid, wav), feats in zip(batch, extract_batch(extractor, [w for _, _, w in batch])):
                    fd.write(np.ascontiguousarray(feats.numpy(), np.float32).tobytes())
                    fi.write(json.dumps({"line": line, "id": uid, "samples": wav.numel(), "frames": len(feats)}) + "\n")
                    new += 1
                    if new % FLUSH_EVERY == 0:
                        _sync(fd, fi)
            _sync(fd, fi)
    os.rename(data_p, data)
    os.rename(index_p, index)  # last: a complete index means a complete shard
    return {"out": str(out_dir), "shard": shard, "utterances": len(done) + new, "new": new}


class FeatureDump:
    """A complete dump, read through memory maps: ``features(line)`` or all of it in line order."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        path = self.dir / INFO_FILE
        if not path.is_file():
            raise DataError(self.dir, f"not a feature dump ({INFO_FILE} missing); make one with `discretize dump`")
        self.info = json.loads(path.read_text())
        self.dim, n = self.info["dim"], self.info["nshards"]
        self._rows: dict[int, tuple[int, int, int, int]] = {}  # line -> (shard, first frame, frames, samples)
        self._data: list[np.ndarray] = []
        for shard in range(n):
            data, index = _shard_files(self.dir, shard, n)
            if not index.is_file():
                raise DataError(self.dir, f"shard {shard} of {n} is not dumped yet: run `discretize dump --shard {shard} --nshards {n}`")
            first = 0
            for row in _read_index(index):
                self._rows[row["line"]] = (shard, first, row["frames"], row["samples"])
                first += row["frames"]
            size = data.stat().st_size
            if size != first * self.dim * 4:
                raise DataError(data, f"holds {size} bytes, its index needs {first * self.dim * 4}; dump the shard again")
            self._data.append(np.memmap(data, np.float32, "r", shape=(first, self.dim)) if first else np.zeros((0, self.dim), np.float32))

    def check(self, spec: dict[str, Any], manifest: str | Path) -> None:
        """Fails unless the dump holds ``spec``'s features of exactly this manifest's lines."""
        if feature_identity(spec) != self.info["identity"]:
            raise ConfigError(
                f"{self.dir}: the dump holds other features ({self.info['features']}) than the tokenizer's "
                f"({ {k: v for k, v in spec.items() if k != 'device'} }); dump them again or drop --features"
            )
        if sha256_file(manifest) != self.info["manifest_sha256"]:
            raise ConfigError(f"{self.dir}: dumped from {self.info['manifest']}, whose content differs from {manifest}")

    def __contains__(self, line: int) -> bool:
        return line in self._rows

    def seconds(self, line: int) -> float:
        return self._rows[line][3] / SAMPLE_RATE

    def features(self, line: int) -> torch.Tensor:
        shard, first, frames, _ = self._rows[line]
        return torch.from_numpy(np.array(self._data[shard][first : first + frames]))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Every utterance's features, in manifest order."""
        return (self.features(line) for line in sorted(self._rows))

    def __len__(self) -> int:
        return len(self._rows)


def open_dump(directory: str | Path, rec: TokenizerRecipe, manifest: str | Path) -> FeatureDump:
    """The dump in ``directory``, checked to hold ``rec``'s features of ``manifest``."""
    _only_kmeans(rec, "--features")
    dump = FeatureDump(directory)
    dump.check(rec.kmeans.features, manifest)
    return dump


def _only_kmeans(rec: TokenizerRecipe, what: str | Path) -> None:
    if rec.kind != "kmeans":
        raise ConfigError(f"{what}: a {rec.kind} tokenizer reads the audio itself; only kmeans features are dumped")


def _claim(out_dir: Path, info: dict) -> None:
    """Writes ``features.json``, or checks that the one there describes the same dump."""
    path = out_dir / INFO_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        for key, what in (("identity", "features"), ("manifest_sha256", "manifest"), ("nshards", "number of shards")):
            if old[key] != info[key]:
                raise ConfigError(f"{out_dir}: holds a dump with another {what}; remove it or choose another directory")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: exists and is not a feature dump; remove it or choose another directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")


def _audio_batches(manifest: Path, shard: int, nshards: int, done: set[int], skip_bad: bool, progress: bool):
    """The shard's lines not yet done, as ``(line, id, wav)`` in batches of ``BATCH_SECONDS``."""
    batch: list[tuple[int, str, torch.Tensor]] = []
    lines = tqdm(iter_audio_manifest(manifest), total=count_lines(manifest), desc=f"dump {manifest.name}",
                 unit="utt", disable=not progress)  # fmt: skip
    for line, rec in lines:
        if (line - 1) % nshards != shard or line in done:
            continue
        try:
            if isinstance(rec, DataError):
                raise rec
            batch.append((line, rec.id, load_record_audio(rec, manifest, line)))
        except DataError as e:
            if not skip_bad:
                raise
            logger.warning("skipped: %s", e)
            continue
        if sum(w.numel() for _, _, w in batch) >= BATCH_SECONDS * SAMPLE_RATE:
            yield batch
            batch = []
    if batch:
        yield batch


def _recover(data: Path, index: Path, dim: int) -> set[int]:
    """The lines of an interrupted shard whose frames are all on disk; both partial files
    are cut back to exactly those (either may have been torn)."""
    have = data.stat().st_size if data.is_file() else 0
    done, frames, keep_bytes = set(), 0, 0
    with open(index, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            row = json.loads(raw)
            if (frames + row["frames"]) * dim * 4 > have:
                break
            done.add(row["line"])
            frames += row["frames"]
            keep_bytes += len(raw)
    with open(index, "r+b") as f:
        f.truncate(keep_bytes)
    with open(data, "ab") as f:
        f.truncate(frames * dim * 4)
    if done:
        logger.info("resuming the dump: %d utterances already done", len(done))
    return done


def _read_index(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(raw) for raw in f]


def _shard_files(out_dir: Path, shard: int, nshards: int) -> tuple[Path, Path]:
    stem = f"shard-{shard}-of-{nshards}"
    return out_dir / f"{stem}.f32", out_dir / f"{stem}.index.jsonl"


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _sync(*files) -> None:
    for f in files:  # the frames first: an index row must never point past them
        f.flush()
        os.fsync(f.fileno())
