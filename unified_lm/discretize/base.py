"""The discretizer interface and registry.

A discretizer (registered under the recipe's ``kind``) turns a 16 kHz waveform into frame
units in two steps that the benchmark times separately: ``extract_features`` (the
expensive front end) and ``assign`` (quantisation to ints in ``[0, num_units)``).
Post-processing shared by every kind (dedup, BPE) lives in ``SpeechTokenizer``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from ..errors import ConfigError
from ..registry import Registry
from .tokenizer_recipe import TokenizerRecipe


class Quantizer(Protocol):
    num_units: int
    frame_rate: float
    codebooks: int
    codebook_size: int

    @classmethod
    def fit(cls, recipe: TokenizerRecipe, waveforms: Iterable[torch.Tensor], workdir: Path) -> "Quantizer":
        """Learns whatever state the kind needs from ``waveforms`` (16 kHz) and saves it in ``workdir``."""
        ...

    @classmethod
    def load(cls, recipe: TokenizerRecipe, tokdir: Path) -> "Quantizer": ...

    def extract_features(self, wav: torch.Tensor) -> torch.Tensor:
        """16 kHz mono waveform -> ``[frames, dim]``."""
        ...

    def assign(self, feats: torch.Tensor) -> np.ndarray:
        """``[frames, dim]`` -> int64 units, one per frame (``codebooks`` per frame for codecs)."""
        ...

    def state_files(self, tokdir: Path) -> dict[str, Path]:
        """Every file whose content defines the units (for the tokenizer's content hash)."""
        ...


DISCRETIZERS: Registry[type] = Registry("discretizer")

logger = logging.getLogger("unified_lm.discretize")


def resolve_device(device: str, explicit: bool = False) -> str:
    """``device`` where this machine has it. "cuda" (no index) means this process's GPU:
    ``cuda:$LOCAL_RANK`` under a launcher, so shards run one per GPU. A tokenizer fitted on
    a GPU falls back to the CPU here (with a warning) unless the GPU was asked for."""
    if not device.startswith("cuda"):
        return device
    if not torch.cuda.is_available():
        if explicit:
            raise ConfigError(f"device {device!r} asked for, but this machine has no CUDA device")
        logger.warning("the tokenizer was fitted on %s; this machine has no CUDA device: using the CPU", device)
        return "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return device


def run_on(rec: TokenizerRecipe, device: str | None) -> None:
    """Sets where the recipe's model features run: ``device`` (an explicit choice: an error
    where this machine lacks it), else the recipe's own (see ``resolve_device``)."""
    if rec.kind == "kmeans" and "device" in rec.kmeans.features:
        rec.kmeans.features["device"] = resolve_device(device or rec.kmeans.features["device"], explicit=device is not None)
    elif rec.kind == "encodec":
        rec.encodec.device = resolve_device(device or rec.encodec.device, explicit=device is not None)


BATCH_SECONDS = 60.0  # audio per forward pass, where a feature extractor batches (``batch``)


def in_batches(waveforms: Iterable[torch.Tensor], seconds: float = BATCH_SECONDS) -> Iterator[list[torch.Tensor]]:
    """Consecutive waveforms (16 kHz) grouped up to ``seconds`` of audio (at least one each)."""
    batch: list[torch.Tensor] = []
    for wav in waveforms:
        batch.append(wav)
        if sum(w.numel() for w in batch) >= seconds * SAMPLE_RATE:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_batch(extract, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``extract.batch(wavs)`` where the extractor has one (one padded pass), else one by one."""
    batch = getattr(extract, "batch", None)
    return batch(wavs) if batch is not None else [extract(w) for w in wavs]


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Runs torch and faiss on one thread inside the block.

    Discretization works one utterance at a time: each op is too small to split across
    threads, and when cores are shared, OpenMP threads spin-waiting for each other make
    it 10-40x slower (measured on 2 shared cores: MFCC of one utterance 0.4 s with two
    threads, 0.01 s with one). Parallelism comes from shards, one process per core.
    """
    import faiss

    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)
