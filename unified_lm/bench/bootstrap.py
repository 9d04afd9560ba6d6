"""Paired bootstrap confidence intervals for a relative change in corpus WER.

Two systems decoded the same test utterances. Resampling the utterances with replacement
(Bisani & Ney, "Bootstrap estimates for confidence intervals in ASR performance
evaluation", ICASSP 2004) and recomputing both corpus WERs on the *same* resample keeps
the pairing: an utterance that is hard for one system is usually hard for the other, so
the interval of their difference is much narrower than the two separate intervals.

Corpus WER is pooled, ``sum(errors) / sum(reference words)``, so on one resample the
relative change ``(WER_sys - WER_base) / WER_base`` reduces to
``sum(errors_sys) / sum(errors_base) - 1``. Several training seeds of a system are pooled
by averaging each utterance's errors over them before resampling: the interval then
covers test-set sampling of the seed-averaged system.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# Resample indices drawn at once: bounds memory at about 8 bytes x this many.
CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class PairedBootstrap:
    baseline_wer: float
    system_wer: float
    rel_change: float  # (system - baseline) / baseline on the full test set; nan if the baseline has no errors
    ci_low: float  # percentile interval of rel_change over the resamples
    ci_high: float
    p_better: float  # share of resamples on which the system's WER is below the baseline's
    confidence: float
    num_samples: int
    num_utts: int


def pool_runs(errors: ArrayLike) -> np.ndarray:
    """Per-utterance errors ``[utts]``, or ``[runs, utts]`` averaged over runs (seeds)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim == 2:
        return errors.mean(axis=0)
    if errors.ndim != 1:
        raise ValueError(f"errors must be [utts] or [runs, utts], got shape {errors.shape}")
    return errors


def paired_bootstrap(
    baseline_errors: ArrayLike,
    system_errors: ArrayLike,
    ref_words: ArrayLike,
    num_samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """Relative WER change of ``system`` against ``baseline`` with a paired percentile interval.

    ``*_errors`` are word errors per utterance, ``[utts]`` or ``[seeds, utts]`` (seeds are
    averaged; the two systems may have different numbers); ``ref_words`` the reference
    length of each utterance. Utterance ``i`` must be the same utterance in all three.
    """
    base, sys_, ref = pool_runs(baseline_errors), pool_runs(system_errors), np.asarray(ref_words, dtype=np.float64)
    if not base.shape == sys_.shape == ref.shape:
        raise ValueError(f"utterance counts differ: baseline {base.shape}, system {sys_.shape}, refs {ref.shape}")
    if base.size == 0:
        raise ValueError("no utterances to resample")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")

    n = base.size
    rng = np.random.default_rng(seed)
    rel = np.empty(num_samples)
    better = np.empty(num_samples, dtype=bool)
    per_chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, num_samples, per_chunk):
        stop = min(start + per_chunk, num_samples)
        idx = rng.integers(0, n, size=(stop - start, n))
        e_base, e_sys = base[idx].sum(axis=1), sys_[idx].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel[start:stop] = np.where(e_base > 0, e_sys / e_base - 1.0, np.nan)
        better[start:stop] = e_sys < e_base

    total_ref = max(ref.sum(), 1.0)
    tail = (1.0 - confidence) / 2.0
    finite = rel[np.isfinite(rel)]
    low, high = np.quantile(finite, [tail, 1.0 - tail]) if finite.size else (math.nan, math.nan)
    return PairedBootstrap(
        baseline_wer=float(base.sum() / total_ref),
        system_wer=float(sys_.sum() / total_ref),
        rel_change=float(sys_.sum() / base.sum() - 1.0) if base.sum() > 0 else math.nan,
        ci_low=float(low),
        ci_high=float(high),
        p_better=float(better.mean()),
        confidence=confidence,
        num_samples=num_samples,
        num_utts=n,
    )
