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

``hierarchical_bootstrap`` also covers training noise: each resample first draws the seeds
(with replacement, the same seed positions for both systems, which were trained with the
same seeds), averages each system's errors over the drawn seeds, then draws the
utterances (the same for both). Seed-to-seed spread then widens the interval as it
should; with one seed per system it is ``paired_bootstrap``.
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


def _interval(
    rel: np.ndarray, better: np.ndarray, base: np.ndarray, sys_: np.ndarray, ref: np.ndarray, confidence: float
) -> PairedBootstrap:
    """The summary of resampled relative changes; ``base``/``sys_`` the seed-averaged errors."""
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
        num_samples=rel.size,
        num_utts=ref.size,
    )


def hierarchical_bootstrap(
    baseline_errors: ArrayLike,
    system_errors: ArrayLike,
    ref_words: ArrayLike,
    num_samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """Relative WER change with an interval over training seeds and test utterances.

    ``*_errors``: word errors ``[seeds, utts]`` (``[utts]`` is one seed); row ``k`` of both
    systems should be the same training seed. With equal seed counts the drawn seed
    positions are shared (paired); otherwise each system draws its own. Utterance ``i`` must
    be the same utterance everywhere.
    """
    base = np.atleast_2d(np.asarray(baseline_errors, dtype=np.float64))
    sys_ = np.atleast_2d(np.asarray(system_errors, dtype=np.float64))
    ref = np.asarray(ref_words, dtype=np.float64)
    if base.ndim != 2 or sys_.ndim != 2 or not base.shape[1] == sys_.shape[1] == ref.size:
        raise ValueError(f"utterance counts differ: baseline {base.shape}, system {sys_.shape}, refs {ref.shape}")
    n = ref.size
    if n == 0:
        raise ValueError("no utterances to resample")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    rel = np.empty(num_samples)
    better = np.empty(num_samples, dtype=bool)
    per_chunk = max(1, CHUNK_ELEMENTS // (n * max(len(base), len(sys_))))
    for start in range(0, num_samples, per_chunk):
        size = min(start + per_chunk, num_samples) - start
        seeds_b = rng.integers(0, len(base), size=(size, len(base)))
        seeds_s = seeds_b if len(sys_) == len(base) else rng.integers(0, len(sys_), size=(size, len(sys_)))
        idx = rng.integers(0, n, size=(size, n))
        # [size, seeds, utts] -> mean over the drawn seeds -> the drawn utterances, summed.
        e_base = np.take_along_axis(base[seeds_b].mean(axis=1), idx, axis=1).sum(axis=1)
        e_sys = np.take_along_axis(sys_[seeds_s].mean(axis=1), idx, axis=1).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel[start : start + size] = np.where(e_base > 0, e_sys / e_base - 1.0, np.nan)
        better[start : start + size] = e_sys < e_base
    return _interval(rel, better, base.mean(axis=0), sys_.mean(axis=0), ref, confidence)


def paired_bootstrap(
    baseline_errors: ArrayLike,
    system_errors: ArrayLike,
    ref_words: ArrayLike,
    num_samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrap:
    """Relative WER change of ``system`` against ``baseline`` with a paired percentile
    interval over the utterances only.

    ``*_errors`` are word errors per utterance, ``[utts]`` or ``[seeds, utts]`` (seeds are
    averaged first, so the interval ignores seed-to-seed noise; the two systems may have
    different numbers); ``ref_words`` the reference length of each utterance. It is
    ``hierarchical_bootstrap`` with one (averaged) seed per system.
    """
    base, sys_ = pool_runs(baseline_errors), pool_runs(system_errors)
    return hierarchical_bootstrap(base[None], sys_[None], ref_words, num_samples, confidence, seed)
