"""The discretizer interface and registry.

A discretizer (registered under the recipe's ``kind``) turns a 16 kHz waveform into frame
units in two steps that the benchmark times separately: ``extract_features`` (the
expensive front end) and ``assign`` (quantisation to ints in ``[0, num_units)``).
Post-processing shared by every kind (dedup, BPE) lives in ``SpeechTokenizer``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

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
