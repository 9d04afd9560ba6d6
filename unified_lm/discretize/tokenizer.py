"""Fitting, saving and loading speech tokenizers.

A tokenizer directory is self-describing::

    recipe.yaml     the recipe it was fitted from, overrides applied, every option spelled out
    centroids.npy   fitted state of a k-means kind (an EnCodec kind points to its checkpoint)
    unigram.model   the unit subwords, when the recipe asks for them (bpe.json for a BPE)
    meta.json       TokenizerMeta: name, content hash, kind, num_units, frame rate, codebooks

It is built in a temporary directory beside ``out_dir`` and renamed into place, so a killed
fit never leaves a half-written tokenizer behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE
from ..config import save_config, to_dict
from ..errors import ConfigError, DataError
from ..io import sha256_file, sha256_json
from ..tokenizer_meta import TokenizerMeta
from .base import DISCRETIZERS, Quantizer, run_on, single_threaded
from .dump import FeatureDump, open_dump
from .postprocess import SUBWORDS, UnitSubwords, dedup
from .source import iter_waveforms
from .tokenizer_recipe import TokenizerRecipe, absolute_model_paths, load_recipe

RECIPE_FILE = "recipe.yaml"


class SpeechTokenizer:
    """16 kHz waveform -> units in ``[0, meta.num_units)`` (and run lengths when deduped)."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self, meta: TokenizerMeta, recipe: TokenizerRecipe, quantizer: Quantizer, subwords: UnitSubwords | None = None
    ):
        self.meta = meta
        self.recipe = recipe
        self.quantizer = quantizer
        self.subwords = subwords

    def extract_features(self, wav: torch.Tensor) -> torch.Tensor:
        """``[frames, dim]`` features of a 16 kHz mono waveform."""
        return self.quantizer.extract_features(wav)

    def assign(self, feats: torch.Tensor) -> np.ndarray:
        """Frame-level units of ``feats``, before dedup and subwords."""
        return self.quantizer.assign(feats)

    def frame_units(self, wav: torch.Tensor) -> np.ndarray:
        """Frame-level units of a 16 kHz mono waveform, before dedup and subwords."""
        return self.assign(self.extract_features(wav))

    def postprocess(self, units: np.ndarray) -> tuple[list[int], list[int] | None]:
        """Dedup then subwords, as the recipe says; durations are frames per output unit."""
        durations = None
        if self.recipe.post.dedup:
            units, durations = dedup(units)
        if self.subwords is not None:
            units, durations = self.subwords.encode(units, durations)
        return units.tolist(), None if durations is None else durations.tolist()

    def encode(self, wav: torch.Tensor) -> tuple[list[int], list[int] | None]:
        """``(units, durations)``; ``durations`` is None unless the recipe dedups."""
        return self.postprocess(self.frame_units(wav))

    def encode_batch(self, wavs: list[torch.Tensor]) -> list[tuple[list[int], list[int] | None]]:
        """``encode`` of each waveform, the features in one padded pass where the extractor allows."""
        batch = getattr(self.quantizer, "extract_features_batch", None)
        feats = batch(wavs) if batch is not None else [self.extract_features(w) for w in wavs]
        return [self.postprocess(self.assign(f)) for f in feats]


def fit_tokenizer(
    recipe: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    skip_bad: bool = False,
    features: str | Path | None = None,
) -> TokenizerMeta:
    """Fits the recipe on the manifest's audio and writes the tokenizer directory ``out_dir``;
    ``skip_bad`` leaves out (and logs) the lines that cannot be read instead of failing.
    ``features``: a ``discretize dump`` of the recipe's features on this manifest, read
    instead of the audio (by the k-means and by the subword pass)."""
    rec = load_recipe(recipe, overrides)
    absolute_model_paths(rec)
    quantizer_cls = DISCRETIZERS.get(rec.kind)
    manifest, out_dir = Path(manifest), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: already exists; remove it or choose another output directory")
    dump = None if features is None else open_dump(features, rec, manifest)
    with _staging_dir(out_dir) as work, single_threaded():
        if dump is None:
            waveforms = (wav for _, _, wav in iter_waveforms(manifest, progress, f"{rec.name}: features", skip_bad))
            quantizer = quantizer_cls.fit(rec, waveforms, work)
        else:
            dumped = tqdm(dump, desc=f"{rec.name}: dumped features", disable=not progress)
            quantizer = quantizer_cls.fit(rec, None, work, dumped=dumped)
        if rec.post.dedup and quantizer.codebooks > 1:
            raise ConfigError(
                f"{recipe}: post.dedup needs one unit per frame, but {rec.name} interleaves "
                f"{quantizer.codebooks} codebooks; set encodec.keep_codebooks=1 or drop dedup"
            )
        files = quantizer.state_files(work)
        subwords = None
        if rec.post.subwords:
            model = SUBWORDS[rec.post.subwords]
            seqs = _frame_units(quantizer, rec.post.dedup, manifest, progress, f"{rec.name}: subword units", skip_bad, dump)
            subwords = model.train(seqs, quantizer.num_units, rec.post.subword_vocab_size, rec.post.max_piece_units)
            subwords.save(work / model.FILE)
            files[model.FILE] = work / model.FILE
        save_config(rec, work / RECIPE_FILE)
        meta = TokenizerMeta(
            name=rec.name,
            hash=_content_hash(rec, files),
            kind=rec.kind,
            num_units=subwords.vocab_size if subwords else quantizer.num_units,
            frame_rate=quantizer.frame_rate,
            # Pieces mix codebooks: after them there is one range of vocab_size pieces.
            codebooks=1 if subwords else quantizer.codebooks,
            codebook_size=subwords.vocab_size if subwords else quantizer.codebook_size,
        )
        meta.save(work)
    return meta


def load_tokenizer(tokdir: str | Path, device: str | None = None) -> SpeechTokenizer:
    """A fitted tokenizer directory, ready to ``encode`` on ``device`` (default: where it was
    fitted, or the CPU when that was a GPU this machine lacks). The device is not part of a
    tokenizer's identity: the units are the same wherever they are computed."""
    tokdir = Path(tokdir)
    meta = TokenizerMeta.load(tokdir)
    rec = load_recipe(tokdir / RECIPE_FILE)
    run_on(rec, device)
    quantizer = DISCRETIZERS.get(rec.kind).load(rec, tokdir)
    model = SUBWORDS[rec.post.subwords] if rec.post.subwords else None
    subwords = model.load(tokdir / model.FILE) if model else None
    num_units = subwords.vocab_size if subwords else quantizer.num_units
    if num_units != meta.num_units:
        raise DataError(tokdir / "meta.json", f"records {meta.num_units} units but the fitted state has {num_units}")
    return SpeechTokenizer(meta, rec, quantizer, subwords)


def _frame_units(
    quantizer: Quantizer, dedup_runs: bool, manifest: Path, progress: bool, desc: str, skip_bad: bool,
    dump: FeatureDump | None = None,
) -> Iterator[np.ndarray]:
    if dump is None:  # the features again: without a dump, fitting reads the audio twice
        feats = (quantizer.extract_features(wav) for _, _, wav in iter_waveforms(manifest, progress, desc, skip_bad))
    else:
        feats = tqdm(dump, desc=desc, disable=not progress)
    for f in feats:
        units = quantizer.assign(f)
        yield dedup(units)[0] if dedup_runs else units


def _content_hash(rec: TokenizerRecipe, files: dict[str, Path]) -> str:
    # The recipe plus the bytes of every file that defines the units: two fits that would
    # produce different units never share a hash. Where they were computed is left out, and
    # so is where the model lies: its files' bytes are among `files`.
    recipe = to_dict(rec)
    section = recipe["kmeans"]["features"] if rec.kind == "kmeans" else recipe["encodec"]
    for key in ("device", "model_path", "checkpoint"):
        section.pop(key, None)
    return sha256_json({"recipe": recipe, "files": {name: sha256_file(p) for name, p in sorted(files.items())}})


@contextlib.contextmanager
def _staging_dir(out_dir: Path) -> Iterator[Path]:
    """A directory beside ``out_dir`` to fit into, renamed into place on success. Its name
    carries this process's id, so a later fit can tell the leftover of a killed one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_staging(out_dir)
    work = out_dir.parent / f".{out_dir.name}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    try:
        yield work
        if out_dir.is_dir():
            out_dir.rmdir()  # checked empty by the caller
        os.rename(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _remove_orphaned_staging(out_dir: Path) -> None:
    """Removes staging directories of ``out_dir`` whose fitting process is gone (``kill -9``)."""
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*.tmp"):
        pid = path.name[len(out_dir.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
